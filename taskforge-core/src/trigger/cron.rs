//! Cron schedules: parsing an expression in a timezone, finding its next
//! slot, and deciding which slots to fire after a pause. See
//! [`CronSchedule`] for the expressions accepted and the DST behaviour, and
//! [`CronConfig`] for the input a cron run receives.

use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::concurrency::ConcurrencyLimit;
use crate::id::TriggerId;

mod expression;
mod schedule;

pub use self::schedule::CronSchedule;

/// The longest cron expression accepted, in bytes.
pub const MAX_EXPRESSION_LEN: usize = 256;

/// How late a slot may be reached and still count as on time rather than
/// missed.
pub const SKIP_GRACE: Duration = Duration::from_secs(60);

/// The most slots [`MissedRunPolicy::CatchUp`] fires at once, whatever its
/// `max` says.
pub const MAX_CATCH_UP: u32 = 1_000;

/// The keys the engine sets in a cron run's input.
const ENGINE_KEYS: [&str; 2] = ["trigger_id", "scheduled_at"];

/// When a cron trigger fires, what it does about missed slots and
/// overlapping runs, and the input its runs receive.
///
/// # The run's input
///
/// Each slot starts a run whose input (and cron event payload) is a JSON
/// object with
/// - `trigger_id`: the trigger's id, a UUID string;
/// - `scheduled_at`: the slot, an RFC 3339 UTC timestamp
///   (`"2026-03-08T07:00:00Z"`), not the time the engine got to it;
/// - every field of the trigger's static [`input`](CronConfig::input), if it
///   has one ([`CronConfig::with_input`]).
///
/// So a handler can take the input a manual start would give, with the
/// slot beside it:
///
/// ```
/// use serde::Deserialize;
/// use serde_json::json;
/// use taskforge_core::CronConfig;
///
/// #[derive(Deserialize)]
/// struct Report {
///     region: String,
///     scheduled_at: chrono::DateTime<chrono::Utc>,
/// }
///
/// let nightly = CronConfig::new("0 2 * * *", "Europe/Berlin")
///     .with_input(json!({ "region": "eu" }));
/// assert!(nightly.schedule().is_ok());
/// // A run of the 02:00 slot of 2026-03-08 in Berlin receives:
/// let input = json!({
///     "region": "eu",
///     "trigger_id": "0196b4a5-7c1e-7d2a-9e4f-2b8c3d4e5f60",
///     "scheduled_at": "2026-03-08T01:00:00Z",
/// });
/// let report: Report = serde_json::from_value(input)?;
/// assert_eq!(report.region, "eu");
/// # Ok::<(), serde_json::Error>(())
/// ```
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
    /// Fields every run of the trigger receives in its input, beside
    /// `trigger_id` and `scheduled_at`: a JSON object, or `null` for none.
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub input: Value,
    /// The concurrency limit of the runs this trigger starts, in place of
    /// the workflow version's (whose debounce window and rate limit still
    /// apply). See [`concurrency`](crate::concurrency).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<ConcurrencyLimit>,
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
            input: Value::Null,
            concurrency: None,
        }
    }

    /// With this concurrency limit for the runs it starts, in place of the
    /// version's.
    #[must_use]
    pub fn with_concurrency(mut self, limit: ConcurrencyLimit) -> Self {
        self.concurrency = Some(limit);
        self
    }

    /// With this static input: a JSON object whose fields every run
    /// receives, beside `trigger_id` and `scheduled_at` (see the type's
    /// docs). Anything but an object, or an object that sets
    /// `trigger_id` or `scheduled_at`, is refused when the trigger is
    /// created.
    #[must_use]
    pub fn with_input(mut self, input: Value) -> Self {
        self.input = input;
        self
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

    /// The parsed schedule, or why the configuration is invalid: the
    /// expression, the timezone, or the static input.
    pub fn schedule(&self) -> Result<CronSchedule, ScheduleError> {
        check_input(&self.input)?;
        CronSchedule::parse(&self.expression, &self.timezone)
    }
}

fn check_input(input: &Value) -> Result<(), ScheduleError> {
    let object = match input {
        Value::Null => return Ok(()),
        Value::Object(object) => object,
        Value::Array(_) => return Err(ScheduleError::InvalidInput("an array".into())),
        Value::String(_) => return Err(ScheduleError::InvalidInput("a string".into())),
        Value::Number(_) => return Err(ScheduleError::InvalidInput("a number".into())),
        Value::Bool(_) => return Err(ScheduleError::InvalidInput("a boolean".into())),
    };
    match ENGINE_KEYS.iter().find(|key| object.contains_key(**key)) {
        Some(key) => Err(ScheduleError::InvalidInput(format!(
            "an object that sets {key:?}, which the engine sets"
        ))),
        None => Ok(()),
    }
}

/// The input of the run a cron slot starts: see [`CronConfig`].
#[must_use]
pub(crate) fn run_input(
    input: Option<&Value>,
    trigger_id: TriggerId,
    slot: DateTime<Utc>,
) -> Value {
    let mut fields = match input {
        Some(Value::Object(fields)) => fields.clone(),
        _ => serde_json::Map::new(),
    };
    fields.insert("trigger_id".into(), Value::String(trigger_id.to_string()));
    fields.insert(
        "scheduled_at".into(),
        Value::String(slot.to_rfc3339_opts(SecondsFormat::AutoSi, true)),
    );
    Value::Object(fields)
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

/// Why a cron trigger's expression, timezone or input was refused.
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
    /// The expression is valid but matches no time at all, like
    /// `0 0 30 2 *` (February 30th).
    #[error("cron expression {expression:?} never fires")]
    NeverFires {
        /// The expression given.
        expression: String,
    },
    /// The timezone is not an IANA timezone name.
    #[error("unknown timezone {0:?}")]
    UnknownTimezone(String),
    /// The static input is not a JSON object, or sets a key the engine
    /// sets (`trigger_id`, `scheduled_at`).
    #[error(
        "cron trigger input must be a json object without trigger_id or scheduled_at, not {0}"
    )]
    InvalidInput(String),
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

#[cfg(test)]
mod tests {
    use chrono::{TimeDelta, TimeZone};

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
    fn run_input_merges_the_static_input_with_the_slot() {
        let trigger = TriggerId::new();
        let slot = utc(2026, 3, 8, 7, 0, 0);
        // Without an input: the payload cron runs have always had.
        let plain = run_input(None, trigger, slot);
        assert_eq!(
            plain,
            serde_json::json!({ "trigger_id": trigger, "scheduled_at": slot })
        );
        assert_eq!(plain["scheduled_at"], "2026-03-08T07:00:00Z");
        assert_eq!(run_input(Some(&Value::Null), trigger, slot), plain);
        let input = serde_json::json!({ "region": "eu" });
        assert_eq!(
            run_input(Some(&input), trigger, slot),
            serde_json::json!({
                "region": "eu",
                "trigger_id": trigger,
                "scheduled_at": slot,
            })
        );
        // A fraction of a second is kept, as chrono writes it.
        let odd = slot + TimeDelta::milliseconds(250);
        assert_eq!(
            run_input(None, trigger, odd)["scheduled_at"],
            serde_json::json!(odd)
        );
    }
}
