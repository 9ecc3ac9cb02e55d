//! Cron schedules: parsing an expression in a timezone, finding its next
//! slot, and deciding which slots to fire after a pause. See
//! [`CronSchedule`] for the expressions accepted and the DST behaviour.

use std::str::FromStr;
use std::time::Duration;

use chrono::{
    DateTime, Datelike, LocalResult, NaiveDate, NaiveDateTime, Offset, SecondsFormat, TimeDelta,
    TimeZone, Utc,
};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

use crate::id::TriggerId;

/// The longest cron expression accepted, in bytes.
pub const MAX_EXPRESSION_LEN: usize = 256;

/// How late a slot may be reached and still count as on time rather than
/// missed.
pub const SKIP_GRACE: Duration = Duration::from_secs(60);

/// The most slots [`MissedRunPolicy::CatchUp`] fires at once, whatever its
/// `max` says.
pub const MAX_CATCH_UP: u32 = 1_000;

// Bounds the slots examined in one search. Only the repeated hour of a
// fall-back or a gap can make a search skip slots, at most one per second
// of it, so this is never reached by a real timezone.
const SEARCH_LIMIT: usize = 100_000;

// The cron crate knows years 1970 to 2100; staying inside keeps its date
// arithmetic far from chrono's limits.
const LAST_YEAR: i32 = 2100;

/// When a cron trigger fires, and what it does about missed slots and
/// overlapping runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct CronConfig {
    /// The cron expression; see [`CronSchedule`] for the forms
    /// accepted.
    pub expression: String,
    /// The IANA timezone the expression is read in (`Europe/Berlin`, `UTC`).
    pub timezone: String,
    /// What happens to slots missed while no engine was running.
    #[serde(default)]
    pub missed: MissedRunPolicy,
    /// What happens when a slot comes while the previous run is not finished.
    #[serde(default)]
    pub overlap: OverlapPolicy,
}

impl CronConfig {
    /// A schedule with the default policies ([`MissedRunPolicy::Skip`],
    /// [`OverlapPolicy::Allow`]). Not validated: see [`CronConfig::schedule`].
    #[must_use]
    pub fn new(expression: impl Into<String>, timezone: impl Into<String>) -> Self {
        Self {
            expression: expression.into(),
            timezone: timezone.into(),
            missed: MissedRunPolicy::default(),
            overlap: OverlapPolicy::default(),
        }
    }

    /// With this missed-run policy.
    #[must_use]
    pub fn with_missed(mut self, missed: MissedRunPolicy) -> Self {
        self.missed = missed;
        self
    }

    /// With this overlap policy.
    #[must_use]
    pub fn with_overlap(mut self, overlap: OverlapPolicy) -> Self {
        self.overlap = overlap;
        self
    }

    /// The parsed schedule, or why the expression or timezone is invalid.
    pub fn schedule(&self) -> Result<CronSchedule, ScheduleError> {
        CronSchedule::parse(&self.expression, &self.timezone)
    }
}

/// What happens to slots that passed while no engine fired them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(tag = "policy", rename_all = "snake_case")]
#[non_exhaustive]
pub enum MissedRunPolicy {
    /// Missed slots are dropped; only a slot reached within [`SKIP_GRACE`]
    /// fires.
    #[default]
    Skip,
    /// The most recent missed slot fires once, however late; older ones are
    /// dropped.
    RunOnce,
    /// Up to `max` of the most recent missed slots fire, oldest first.
    CatchUp {
        /// How many at most; read as at least 1 and at most [`MAX_CATCH_UP`].
        max: u32,
    },
}

/// What happens when a slot fires while the trigger's previous run is
/// still going.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum OverlapPolicy {
    /// Start another run alongside.
    #[default]
    Allow,
    /// Do not start one; the tick is recorded as skipped.
    Skip,
    /// Start one when the previous run finishes; at most one waits, further
    /// ticks are skipped.
    QueueOne,
    /// Cancel the previous run, then start one.
    CancelPrevious,
}

/// What the engine does with a tick, by [`OverlapPolicy::decide`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum OverlapAction {
    /// Start a run now.
    Start,
    /// Start no run; record the tick as skipped.
    Skip,
    /// Keep the tick and start its run when the previous one finishes.
    Queue,
    /// Cancel the previous run, then start a run now.
    CancelPreviousAndStart,
}

impl OverlapPolicy {
    /// What to do with a tick, given whether a run of the trigger is still
    /// going. A queued tick is the slot left due, so at most one waits.
    #[must_use]
    pub fn decide(self, previous_running: bool) -> OverlapAction {
        match self {
            _ if !previous_running => OverlapAction::Start,
            Self::Allow => OverlapAction::Start,
            Self::Skip => OverlapAction::Skip,
            Self::QueueOne => OverlapAction::Queue,
            Self::CancelPrevious => OverlapAction::CancelPreviousAndStart,
        }
    }
}

/// Why a cron expression or timezone was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ScheduleError {
    /// The expression is empty or blank.
    #[error("cron expression is empty")]
    Empty,
    /// The expression is longer than [`MAX_EXPRESSION_LEN`].
    #[error("cron expression is {len} bytes, longer than {max}")]
    TooLong {
        /// Its length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The expression has characters outside ASCII.
    #[error("cron expression contains non-ascii characters")]
    NonAscii,
    /// The expression has the wrong number of fields.
    #[error("cron expression has {0} fields, expected 5, 6 or 7")]
    FieldCount(usize),
    /// A field is invalid.
    #[error("invalid cron expression {expression:?}: {reason}")]
    Invalid {
        /// The expression given.
        expression: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The timezone is not an IANA timezone name.
    #[error("unknown timezone {0:?}")]
    UnknownTimezone(String),
}

/// A validated cron expression in a timezone.
///
/// # Expressions
///
/// [`CronSchedule::parse`] accepts:
/// - standard 5-field expressions (`minute hour day-of-month month
///   day-of-week`), with day-of-week `0`–`7` (`0` and `7` are Sunday) or
///   names (`mon-fri`); a seconds field `0` is prepended;
/// - the `cron` crate's 6-field (leading seconds) and 7-field (trailing
///   years, 1970–2100) forms, where day-of-week `1` is *Sunday* and `7`
///   Saturday;
/// - the shorthands `@yearly`, `@monthly`, `@weekly`, `@daily`, `@hourly`.
///
/// When both day-of-month and day-of-week are restricted, a day must match
/// both (unlike Vixie cron, which fires when either matches).
///
/// # Slots, timezones and DST
///
/// A *slot* is a local wall-clock time that matches the expression, read in
/// the schedule's IANA timezone, and fires at one UTC instant:
/// - a wall-clock time that does not exist (it falls in a spring-forward
///   gap) fires at the end of the gap: a daily 02:30 in `America/New_York`
///   fires at 03:00 EDT on 2026-03-08, once. Several slots in one gap fire
///   once, together;
/// - a wall-clock time that happens twice (fall-back) fires at its first
///   occurrence only: a daily 01:30 fires at 01:30 EDT on 2026-11-01, once.
///   An hourly job therefore skips the repeated hour's second pass.
///
/// So a daily job fires exactly once per local calendar day, whatever DST
/// does, and slot instants only ever increase.
///
/// # Missed runs
///
/// The engine keeps the last slot it fired and, when it wakes (ideally at
/// [`CronSchedule::next_after`] of that slot), asks
/// [`CronSchedule::due_slots`] which slots to fire now. A slot the engine
/// reaches more than [`SKIP_GRACE`] late counts as missed; what happens to
/// missed slots is the [`MissedRunPolicy`]. Each fired slot becomes a cron
/// event with [`tick_dedup_key`], so two engines firing one slot store it once.
#[derive(Debug, Clone)]
pub struct CronSchedule {
    expression: String,
    timezone: Tz,
    // Evaluated in UTC as a stand-in for naive local time, so the cron crate
    // never meets a DST gap or overlap; `resolve` maps slots to instants.
    schedule: cron::Schedule,
}

impl CronSchedule {
    /// Parses `expression` (see [`CronSchedule`] for the forms) in the IANA
    /// `timezone`. Never panics, whatever the input.
    pub fn parse(expression: &str, timezone: &str) -> Result<Self, ScheduleError> {
        let normalized = normalize(expression)?;
        let tz = parse_timezone(timezone)?;
        let invalid = |reason: String| ScheduleError::Invalid {
            expression: expression.to_owned(),
            reason,
        };
        // The length and ASCII checks keep known parser panics out; this
        // catches any that remain, so a bad expression is only ever an error.
        let parsed = std::panic::catch_unwind(|| cron::Schedule::from_str(&normalized))
            .map_err(|_| invalid("the cron parser failed on it".to_owned()))?
            .map_err(|e| invalid(e.to_string()))?;
        Ok(Self {
            expression: expression.to_owned(),
            timezone: tz,
            schedule: parsed,
        })
    }

    /// The expression, as given.
    #[must_use]
    pub fn expression(&self) -> &str {
        &self.expression
    }

    /// The timezone.
    #[must_use]
    pub fn timezone(&self) -> Tz {
        self.timezone
    }

    /// The first slot strictly after `t`; `None` if the schedule never
    /// fires again (the cron crate knows years up to 2100).
    #[must_use]
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        // Slots at or before the local time of `t` resolve to instants at or
        // before `t`, so the search can start there; later wall-clock times
        // may still resolve before `t` when `t` is in a fall-back's second
        // pass, hence the loop.
        let mut local = t.with_timezone(&self.timezone).naive_local();
        for _ in 0..SEARCH_LIMIT {
            local = self.next_local(local)?;
            match self.resolve(local) {
                Some(slot) if slot > t => return Some(slot),
                _ => {}
            }
        }
        None
    }

    /// The slots to fire at `now`, oldest first, given the last slot fired
    /// (`None` if none was) and the missed-run policy.
    ///
    /// Candidates are the slots after `last_fired` and at or before `now`.
    /// - [`MissedRunPolicy::Skip`]: the most recent candidate, if it is at
    ///   most [`SKIP_GRACE`] old; otherwise none.
    /// - [`MissedRunPolicy::RunOnce`]: the most recent candidate.
    /// - [`MissedRunPolicy::CatchUp`]: the `max` most recent candidates.
    ///
    /// Without a `last_fired`, nothing counts as missed: the result is as
    /// for `Skip`, so a new trigger does not fire for its past. (An engine
    /// that wants slots since the trigger's creation passes `created_at`.)
    #[must_use]
    pub fn due_slots(
        &self,
        last_fired: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
        policy: MissedRunPolicy,
    ) -> Vec<DateTime<Utc>> {
        let grace = TimeDelta::from_std(SKIP_GRACE).unwrap_or(TimeDelta::MAX);
        match (policy, last_fired) {
            (MissedRunPolicy::RunOnce, Some(_)) => self.recent_slots(last_fired, now, 1),
            (MissedRunPolicy::CatchUp { max }, Some(_)) => {
                let max = max.clamp(1, MAX_CATCH_UP);
                let mut slots = self.recent_slots(last_fired, now, max as usize);
                slots.reverse();
                slots
            }
            _ => {
                let mut slots = self.recent_slots(last_fired, now, 1);
                slots.retain(|&slot| now - slot <= grace);
                slots
            }
        }
    }

    /// Up to `max` slots in `(after, now]`, newest first.
    fn recent_slots(
        &self,
        after: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
        max: usize,
    ) -> Vec<DateTime<Utc>> {
        let mut slots: Vec<DateTime<Utc>> = Vec::new();
        let mut local = self.high_water(now);
        for _ in 0..SEARCH_LIMIT {
            if slots.len() >= max {
                break;
            }
            let Some(candidate) = self.prev_local(local) else {
                break;
            };
            let Some(before) = candidate.checked_sub_signed(TimeDelta::seconds(1)) else {
                break;
            };
            local = before;
            let Some(slot) = self.resolve(candidate) else {
                continue;
            };
            if slot > now {
                continue;
            }
            // Instants never increase as wall-clock slots go back, so
            // everything further back was fired already.
            if after.is_some_and(|after| slot <= after) {
                break;
            }
            // Several wall-clock slots in one DST gap share an instant.
            if slots.last() != Some(&slot) {
                slots.push(slot);
            }
        }
        slots
    }

    /// The first wall-clock slot strictly after `local`.
    fn next_local(&self, local: NaiveDateTime) -> Option<NaiveDateTime> {
        if local.year() > LAST_YEAR {
            return None;
        }
        let local = local.max(first_local());
        let slot = self.schedule.after(&Utc.from_utc_datetime(&local)).next()?;
        Some(slot.naive_utc())
    }

    /// The last wall-clock slot at or before `local`.
    fn prev_local(&self, local: NaiveDateTime) -> Option<NaiveDateTime> {
        if local < first_local() {
            return None;
        }
        let last = NaiveDate::from_ymd_opt(LAST_YEAR + 1, 1, 1)?.and_hms_opt(0, 0, 0)?;
        let second = local.min(last).with_nanosecond_zero();
        // The cron crate looks strictly before a whole second, but at or
        // before one with a fraction: a nanosecond includes `second` itself.
        let start = second.checked_add_signed(TimeDelta::nanoseconds(1))?;
        let mut slots = self.schedule.after(&Utc.from_utc_datetime(&start));
        Some(slots.next_back()?.naive_utc())
    }

    /// The instant a wall-clock slot fires at; see the type docs for gaps
    /// and overlaps.
    fn resolve(&self, local: NaiveDateTime) -> Option<DateTime<Utc>> {
        match self.timezone.from_local_datetime(&local) {
            LocalResult::Single(t) => Some(t.with_timezone(&Utc)),
            LocalResult::Ambiguous(first, _) => Some(first.with_timezone(&Utc)),
            LocalResult::None => self.gap_end(local),
        }
    }

    /// The instant a DST gap containing `local` ends.
    fn gap_end(&self, local: NaiveDateTime) -> Option<DateTime<Utc>> {
        let exists =
            |n: NaiveDateTime| !matches!(self.timezone.from_local_datetime(&n), LocalResult::None);
        let mut missing = local;
        let mut present = None;
        for hours in 1..=48 {
            let probe = local.checked_add_signed(TimeDelta::hours(hours))?;
            if exists(probe) {
                present = Some(probe);
                break;
            }
            missing = probe;
        }
        let mut present = present?;
        while (present - missing).num_seconds() > 1 {
            let mid = missing + TimeDelta::seconds((present - missing).num_seconds() / 2);
            if exists(mid) {
                present = mid;
            } else {
                missing = mid;
            }
        }
        let first = self.timezone.from_local_datetime(&present).earliest()?;
        Some(first.with_timezone(&Utc))
    }

    /// The latest wall-clock time shown at or before `now`. It is later than
    /// `now`'s own local time during a fall-back's second pass.
    fn high_water(&self, now: DateTime<Utc>) -> NaiveDateTime {
        let tz = self.timezone;
        let local_now = now.with_timezone(&tz).naive_local();
        let offset = |t: DateTime<Utc>| {
            tz.offset_from_utc_datetime(&t.naive_utc())
                .fix()
                .local_minus_utc()
        };
        // Whole seconds, because transitions happen on whole seconds.
        let Some(now_s) = DateTime::from_timestamp(now.timestamp(), 0) else {
            return local_now;
        };
        // No real fall-back repeats more than a few hours.
        let Some(back) = now_s.checked_sub_signed(TimeDelta::hours(6)) else {
            return local_now;
        };
        let current = offset(now_s);
        if offset(back) <= current {
            return local_now;
        }
        let (mut old, mut new) = (back, now_s);
        while (new - old).num_seconds() > 1 {
            let mid = old + TimeDelta::seconds((new - old).num_seconds() / 2);
            if offset(mid) == current {
                new = mid;
            } else {
                old = mid;
            }
        }
        // `old` is the last whole second before the offset dropped.
        local_now.max(old.with_timezone(&tz).naive_local())
    }
}

/// The dedup key of a cron tick: the same for every engine that fires
/// `slot` of `trigger_id`, so the store keeps one event per slot.
#[must_use]
pub(crate) fn tick_dedup_key(trigger_id: TriggerId, slot: DateTime<Utc>) -> String {
    format!(
        "cron:{trigger_id}:{}",
        slot.to_rfc3339_opts(SecondsFormat::Secs, true)
    )
}

fn first_local() -> NaiveDateTime {
    DateTime::<Utc>::UNIX_EPOCH.naive_utc()
}

trait WithNanosecondZero {
    fn with_nanosecond_zero(self) -> Self;
}

impl WithNanosecondZero for NaiveDateTime {
    fn with_nanosecond_zero(self) -> Self {
        chrono::Timelike::with_nanosecond(&self, 0).unwrap_or(self)
    }
}

fn parse_timezone(timezone: &str) -> Result<Tz, ScheduleError> {
    let unknown = || ScheduleError::UnknownTimezone(timezone.chars().take(64).collect());
    if timezone.is_empty() || timezone.len() > 64 || !timezone.is_ascii() {
        return Err(unknown());
    }
    Tz::from_str(timezone).map_err(|_| unknown())
}

/// Brings an accepted expression into the cron crate's 6/7-field form.
fn normalize(expression: &str) -> Result<String, ScheduleError> {
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
        [shorthand] if shorthand.starts_with('@') => Ok((*shorthand).to_owned()),
        [minute, hour, day, month, weekday] => {
            let weekday = standard_weekdays(weekday).map_err(|reason| ScheduleError::Invalid {
                expression: expression.to_owned(),
                reason,
            })?;
            Ok(format!("0 {minute} {hour} {day} {month} {weekday}"))
        }
        [_, _, _, _, _, _] | [_, _, _, _, _, _, _] => Ok(fields.join(" ")),
        _ => Err(ScheduleError::FieldCount(fields.len())),
    }
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
        let (first, last) = match base.split_once('-') {
            _ if base == "*" || base == "?" => (0, 6),
            Some((first, last)) => (weekday(first)?, weekday(last)?),
            None if step.is_some() => (weekday(base)?, 6),
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

    fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, s)
            .single()
            .expect("valid utc time")
    }

    #[test]
    fn tick_dedup_keys_collide_for_one_slot_only() {
        let trigger = TriggerId::new();
        let slot = utc(2026, 3, 8, 7, 0, 0);
        assert_eq!(tick_dedup_key(trigger, slot), tick_dedup_key(trigger, slot));
        assert_ne!(
            tick_dedup_key(trigger, slot),
            tick_dedup_key(trigger, slot + TimeDelta::seconds(1))
        );
        assert_ne!(
            tick_dedup_key(trigger, slot),
            tick_dedup_key(TriggerId::new(), slot)
        );
        assert!(tick_dedup_key(trigger, slot).ends_with(":2026-03-08T07:00:00Z"));
    }

    #[test]
    fn weekday_translation() {
        assert_eq!(standard_weekdays("1-5").as_deref(), Ok("2,3,4,5,6"));
        assert_eq!(standard_weekdays("0").as_deref(), Ok("1"));
        assert_eq!(standard_weekdays("7").as_deref(), Ok("1"));
        assert_eq!(standard_weekdays("5-7").as_deref(), Ok("1,6,7"));
        assert_eq!(standard_weekdays("MON-fri").as_deref(), Ok("2,3,4,5,6"));
        assert_eq!(standard_weekdays("*/2").as_deref(), Ok("1,3,5,7"));
        assert!(standard_weekdays("8").is_err());
        assert!(standard_weekdays("*/0").is_err());
        assert!(standard_weekdays("5-1").is_err());
        assert!(standard_weekdays("").is_err());
    }
}
