//! [`CronSchedule`]: an expression in a timezone, its next slot, and the
//! slots due after a pause, with DST gaps and overlaps resolved.

use std::str::FromStr;

use chrono::{
    DateTime, Datelike, LocalResult, NaiveDate, NaiveDateTime, Offset, TimeDelta, TimeZone, Utc,
};
use chrono_tz::Tz;

use super::{expression, MissedRunPolicy, ScheduleError, MAX_CATCH_UP, SKIP_GRACE};

// Bounds the slots examined in one search. Only the repeated hour of a
// fall-back or a gap can make a search skip slots, at most one per second
// of it, so this is never reached by a real timezone.
const SEARCH_LIMIT: usize = 100_000;

// The cron crate knows years 1970 to 2100; staying inside keeps its date
// arithmetic far from chrono's limits.
const LAST_YEAR: i32 = 2100;

/// A validated cron expression in a timezone.
///
/// # Expressions
///
/// [`CronSchedule::parse`] accepts:
/// - standard 5-field expressions (`minute hour day-of-month month
///   day-of-week`), meaning what they mean to POSIX and Vixie cron:
///   - day-of-week is `0`–`7`, `0` and `7` both Sunday, or names
///     (`mon-fri`, `fri-sun`);
///   - when both day-of-month and day-of-week are restricted, a day that
///     matches *either* fires: `0 0 1 * mon` fires on the 1st of each month
///     and on every Monday. As in Vixie cron and cronie, a day field that
///     starts with `*` is unrestricted even with a step, so `0 0 */2 * mon`
///     fires on Mondays that fall on odd days;
///   - slots are on whole minutes (a seconds field `0` is implied);
/// - the `cron` crate's 6-field form, with a leading seconds field
///   (`second minute hour day-of-month month day-of-week`), and its 7-field
///   form with a trailing year (1970–2100). These differ from the 5-field
///   form: day-of-week `1` is *Sunday* and `7` Saturday (names mean the
///   same in both), and a day must match *both* day fields;
/// - the shorthands `@yearly`, `@monthly`, `@weekly`, `@daily`, `@hourly`.
///
/// Slots exist from 1970 to 2100. An expression that matches no time at
/// all (`0 0 30 2 *`, February 30th) is refused with
/// [`ScheduleError::NeverFires`].
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
/// event whose dedup key is the trigger and the slot, so two engines firing
/// one slot store it once.
///
/// Every instant chrono can represent is a valid argument: the search
/// never panics and never overflows, at either end of the calendar.
#[derive(Debug, Clone)]
pub struct CronSchedule {
    expression: String,
    timezone: Tz,
    // Evaluated in UTC as a stand-in for naive local time, so the cron crate
    // never meets a DST gap or overlap; `resolve` maps slots to instants.
    // The slots are the union of these: one schedule, or two for a 5-field
    // expression that restricts both day fields (see `expression`).
    schedules: Vec<cron::Schedule>,
}

impl CronSchedule {
    /// Parses `expression` (see [`CronSchedule`] for the forms) in the IANA
    /// `timezone`. Never panics, whatever the input.
    pub fn parse(expression: &str, timezone: &str) -> Result<Self, ScheduleError> {
        let normalized = expression::normalize(expression)?;
        let tz = parse_timezone(timezone)?;
        let invalid = |reason: String| ScheduleError::Invalid {
            expression: expression.to_owned(),
            reason,
        };
        let mut schedules = Vec::with_capacity(normalized.len());
        for part in &normalized {
            // The length and ASCII checks keep known parser panics out; this
            // catches any that remain, so a bad expression is only ever an
            // error.
            let parsed = std::panic::catch_unwind(|| cron::Schedule::from_str(part))
                .map_err(|_| invalid("the cron parser failed on it".to_owned()))?
                .map_err(|e| invalid(e.to_string()))?;
            // A part without slots (the 30th of February, beside Mondays)
            // adds nothing, and would cost a search to the last year on
            // every call.
            if has_slots(&parsed) {
                schedules.push(parsed);
            }
        }
        if schedules.is_empty() {
            return Err(ScheduleError::NeverFires {
                expression: expression.to_owned(),
            });
        }
        Ok(Self {
            expression: expression.to_owned(),
            timezone: tz,
            schedules,
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
        // Outside the years the cron crate knows there is nothing to find,
        // and computing a local time might overflow chrono's range.
        if t >= search_end() {
            return None;
        }
        // Slots at or before the local time of `t` resolve to instants at or
        // before `t`, so the search can start there; later wall-clock times
        // may still resolve before `t` when `t` is in a fall-back's second
        // pass, hence the loop.
        let mut local = self.local_time(t.max(search_start()))?;
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
                // Both are valid instants, so their distance fits a
                // `TimeDelta`: no overflow.
                slots.retain(|&slot| now.signed_duration_since(slot) <= grace);
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
        // Past the last year the cron crate knows, its last slot is the
        // newest; before the first, there is none.
        if now < search_start() {
            return slots;
        }
        let Some(mut local) = self.high_water(now.min(search_end())) else {
            return slots;
        };
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

    /// The wall-clock time `t` shows in the timezone, if chrono can
    /// represent it.
    fn local_time(&self, t: DateTime<Utc>) -> Option<NaiveDateTime> {
        let offset = self.timezone.offset_from_utc_datetime(&t.naive_utc()).fix();
        t.naive_utc().checked_add_offset(offset)
    }

    /// The first wall-clock slot strictly after `local`.
    fn next_local(&self, local: NaiveDateTime) -> Option<NaiveDateTime> {
        if local.year() > LAST_YEAR {
            return None;
        }
        // Just before the first instant the cron crate knows, so that a
        // slot at that instant is found.
        let start = first_local().checked_sub_signed(TimeDelta::seconds(1))?;
        let from = Utc.from_utc_datetime(&local.max(start));
        self.schedules
            .iter()
            .filter_map(|schedule| schedule.after(&from).next())
            .min()
            .map(|slot| slot.naive_utc())
    }

    /// The last wall-clock slot at or before `local`.
    fn prev_local(&self, local: NaiveDateTime) -> Option<NaiveDateTime> {
        if local < first_local() {
            return None;
        }
        let second = local.min(last_local()?).with_nanosecond_zero();
        // The cron crate looks strictly before a whole second, but at or
        // before one with a fraction: a nanosecond includes `second` itself.
        let start = second.checked_add_signed(TimeDelta::nanoseconds(1))?;
        let from = Utc.from_utc_datetime(&start);
        self.schedules
            .iter()
            .filter_map(|schedule| schedule.after(&from).next_back())
            .max()
            .map(|slot| slot.naive_utc())
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
        loop {
            let gap = present.signed_duration_since(missing).num_seconds();
            if gap <= 1 {
                break;
            }
            let mid = missing.checked_add_signed(TimeDelta::seconds(gap / 2))?;
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
    fn high_water(&self, now: DateTime<Utc>) -> Option<NaiveDateTime> {
        let tz = self.timezone;
        let local_now = self.local_time(now)?;
        let offset = |t: DateTime<Utc>| {
            tz.offset_from_utc_datetime(&t.naive_utc())
                .fix()
                .local_minus_utc()
        };
        // Whole seconds, because transitions happen on whole seconds.
        let Some(now_s) = DateTime::from_timestamp(now.timestamp(), 0) else {
            return Some(local_now);
        };
        // No real fall-back repeats more than a few hours.
        let Some(back) = now_s.checked_sub_signed(TimeDelta::hours(6)) else {
            return Some(local_now);
        };
        let current = offset(now_s);
        if offset(back) <= current {
            return Some(local_now);
        }
        let (mut old, mut new) = (back, now_s);
        loop {
            let gap = new.signed_duration_since(old).num_seconds();
            if gap <= 1 {
                break;
            }
            let Some(mid) = old.checked_add_signed(TimeDelta::seconds(gap / 2)) else {
                return Some(local_now);
            };
            if offset(mid) == current {
                new = mid;
            } else {
                old = mid;
            }
        }
        // `old` is the last whole second before the offset dropped.
        Some(match self.local_time(old) {
            Some(before_drop) => local_now.max(before_drop),
            None => local_now,
        })
    }
}

/// Whether a cron crate schedule has any slot at all.
fn has_slots(schedule: &cron::Schedule) -> bool {
    let Some(last) = last_local() else {
        return false;
    };
    schedule
        .after(&Utc.from_utc_datetime(&last))
        .next_back()
        .is_some()
}

fn first_local() -> NaiveDateTime {
    DateTime::<Utc>::UNIX_EPOCH.naive_utc()
}

/// The start of the year after the last one the cron crate knows.
fn last_local() -> Option<NaiveDateTime> {
    NaiveDate::from_ymd_opt(LAST_YEAR + 1, 1, 1)?.and_hms_opt(0, 0, 0)
}

/// Before any slot in any timezone: a day before the first local time.
fn search_start() -> DateTime<Utc> {
    let epoch = DateTime::<Utc>::UNIX_EPOCH;
    epoch
        .checked_sub_signed(TimeDelta::days(2))
        .unwrap_or(epoch)
}

/// After every slot in any timezone: a day after the last local time.
fn search_end() -> DateTime<Utc> {
    let end = last_local().map_or(DateTime::<Utc>::MAX_UTC, |last| last.and_utc());
    end.checked_add_signed(TimeDelta::days(2)).unwrap_or(end)
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
