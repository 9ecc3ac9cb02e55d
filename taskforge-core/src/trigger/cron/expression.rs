//! Cron expressions as users write them, brought into the `cron` crate's
//! form: standard 5-field expressions with Vixie cron's meaning, and the
//! crate's own 6- and 7-field forms passed through.

use super::{ScheduleError, MAX_EXPRESSION_LEN};

/// The `cron` crate expressions whose slots, together, are the slots of
/// `expression`: one, or two when a 5-field expression restricts both day
/// fields.
///
/// The `cron` crate fires on a day only when it matches both day fields;
/// Vixie cron fires when either matches if both are restricted. Such an
/// expression becomes one schedule with only the day of month restricted
/// and one with only the day of week, and its slots are their union.
pub(super) fn normalize(expression: &str) -> Result<Vec<String>, ScheduleError> {
    if expression.len() > MAX_EXPRESSION_LEN {
        return Err(ScheduleError::TooLong {
            len: expression.len(),
            max: MAX_EXPRESSION_LEN,
        });
    }
    if !expression.is_ascii() {
        return Err(ScheduleError::NonAscii);
    }
    let fields: Vec<&str> = expression.split_ascii_whitespace().collect();
    match fields.as_slice() {
        [] => Err(ScheduleError::Empty),
        [shorthand] if shorthand.starts_with('@') => Ok(vec![(*shorthand).to_owned()]),
        [minute, hour, day, month, weekday] => {
            let weekdays = standard_weekdays(weekday).map_err(|reason| ScheduleError::Invalid {
                expression: expression.to_owned(),
                reason,
            })?;
            if restricted(day) && restricted(weekday) {
                Ok(vec![
                    format!("0 {minute} {hour} {day} {month} *"),
                    format!("0 {minute} {hour} * {month} {weekdays}"),
                ])
            } else {
                Ok(vec![format!("0 {minute} {hour} {day} {month} {weekdays}")])
            }
        }
        [_, _, _, _, _, _] | [_, _, _, _, _, _, _] => Ok(vec![fields.join(" ")]),
        _ => Err(ScheduleError::FieldCount(fields.len())),
    }
}

/// Whether a day field restricts the day. As in Vixie cron and cronie, a
/// field that starts with `*` does not, even with a step (`*/2`).
fn restricted(field: &str) -> bool {
    !(field.starts_with('*') || field.starts_with('?'))
}

/// Translates a standard day-of-week field (0–7, Sunday 0 or 7) into the
/// cron crate's numbering (1–7, Sunday 1).
fn standard_weekdays(field: &str) -> Result<String, String> {
    if field == "*" || field == "?" {
        return Ok(field.to_owned());
    }
    let mut days = [false; 7];
    for item in field.split(',') {
        let (base, step) = match item.split_once('/') {
            Some((base, step)) => {
                let step: usize = step
                    .parse()
                    .map_err(|_| format!("day-of-week step {step:?} is not a number"))?;
                if !(1..=7).contains(&step) {
                    return Err(format!("day-of-week step {step} is not between 1 and 7"));
                }
                (base, Some(step))
            }
            None => (item, None),
        };
        // Ranges run over 0–7, as in Vixie cron, so `1/2` includes Sunday
        // as 7 and `*/2` stops at 6.
        let (first, last) = match base.split_once('-') {
            _ if base == "*" || base == "?" => (0, 7),
            Some((first, last)) => {
                let (first, last) = (weekday(first)?, weekday(last)?);
                // `fri-sun`: a range that ends on Sunday ends on day 7.
                (first, if last == 0 && first > 0 { 7 } else { last })
            }
            None if step.is_some() => (weekday(base)?, 7),
            None => {
                let day = weekday(base)?;
                (day, day)
            }
        };
        if first > last {
            return Err(format!("day-of-week range {base:?} runs backwards"));
        }
        for day in (first..=last).step_by(step.unwrap_or(1)) {
            days[day % 7] = true;
        }
    }
    let list: Vec<String> = (0..7)
        .filter(|&day| days[day])
        .map(|day| (day + 1).to_string())
        .collect();
    Ok(list.join(","))
}

fn weekday(text: &str) -> Result<usize, String> {
    const NAMES: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];
    if let Ok(day) = text.parse::<usize>() {
        return if day <= 7 {
            Ok(day)
        } else {
            Err(format!("day of week {day} is not between 0 and 7"))
        };
    }
    NAMES
        .iter()
        .position(|name| name.eq_ignore_ascii_case(text))
        .ok_or_else(|| format!("{text:?} is not a day of the week"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weekday_translation() {
        assert_eq!(standard_weekdays("1-5").as_deref(), Ok("2,3,4,5,6"));
        assert_eq!(standard_weekdays("0").as_deref(), Ok("1"));
        assert_eq!(standard_weekdays("7").as_deref(), Ok("1"));
        assert_eq!(standard_weekdays("5-7").as_deref(), Ok("1,6,7"));
        assert_eq!(standard_weekdays("fri-sun").as_deref(), Ok("1,6,7"));
        assert_eq!(standard_weekdays("MON-fri").as_deref(), Ok("2,3,4,5,6"));
        assert_eq!(standard_weekdays("*/2").as_deref(), Ok("1,3,5,7"));
        assert_eq!(standard_weekdays("*/7").as_deref(), Ok("1"));
        assert_eq!(standard_weekdays("1/2").as_deref(), Ok("1,2,4,6"));
        assert!(standard_weekdays("8").is_err());
        assert!(standard_weekdays("*/0").is_err());
        assert!(standard_weekdays("5-1").is_err());
        assert!(standard_weekdays("").is_err());
    }

    #[test]
    fn both_day_fields_restricted_split_in_two() {
        assert_eq!(
            normalize("0 0 1 * 1").as_deref(),
            Ok(&["0 0 0 1 * *".to_owned(), "0 0 0 * * 2".to_owned()][..])
        );
        for one in [
            "0 0 * * 1",
            "0 0 1 * *",
            "0 0 */2 * 1",
            "0 0 1 * */2",
            "0 0 0 1 * 2",
        ] {
            assert_eq!(normalize(one).map(|n| n.len()), Ok(1), "{one}");
        }
    }
}
