//! Records to and from rows: whole records as serde JSON text, and the
//! columns queries use.

use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde::Serialize;
use taskforge_core::store::OutcomeKind;
use taskforge_core::store::{Lease, StoreError};
use taskforge_core::{RunStatus, Signal, WorkflowRun};
use tokio_postgres::Row;

use crate::error::backend;

/// `value` as JSON text. Serializing the domain types cannot fail unless a
/// map has non-string keys, which they do not have; it is still an error,
/// not a panic.
pub(crate) fn to_doc<T: Serialize>(value: &T) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(backend)
}

/// A record from its JSON text.
pub(crate) fn from_doc<T: DeserializeOwned>(doc: &str) -> Result<T, StoreError> {
    serde_json::from_str(doc).map_err(backend)
}

/// Reads column 0 of `row` as a record.
pub(crate) fn doc<T: DeserializeOwned>(row: &Row) -> Result<T, StoreError> {
    let text: &str = row.try_get(0).map_err(backend)?;
    from_doc(text)
}

/// Nanoseconds since the Unix epoch, saturated outside the ±292 years
/// that fit an `i64`, so the order of times is kept (ties only at the
/// extremes).
pub(crate) fn nanos(time: DateTime<Utc>) -> i64 {
    time.timestamp_nanos_opt()
        .unwrap_or(if time.timestamp() < 0 {
            i64::MIN
        } else {
            i64::MAX
        })
}

/// A `u32` or `u64` as the `bigint` PostgreSQL stores.
pub(crate) fn big(value: impl TryInto<i64>) -> Result<i64, StoreError> {
    value
        .try_into()
        .map_err(|_| StoreError::Invalid("number out of the range of a bigint".to_owned()))
}

/// The `status` column's value: the status's stored name.
pub(crate) fn status_name(status: RunStatus) -> &'static str {
    status.as_str()
}

/// The `outcome` column's value.
pub(crate) fn outcome_name(kind: OutcomeKind) -> Result<String, StoreError> {
    match serde_json::to_value(kind).map_err(backend)? {
        serde_json::Value::String(name) => Ok(name),
        other => Err(backend(format!("outcome kind serialized as {other}"))),
    }
}

/// The lease columns of a run, all `None` without a lease.
pub(crate) struct LeaseColumns<'a> {
    pub(crate) owner: Option<&'a str>,
    /// The expiry as JSON, read back exactly.
    pub(crate) expires: Option<String>,
    /// The expiry in nanoseconds, compared by claims.
    pub(crate) expires_ns: Option<i64>,
}

pub(crate) fn lease_columns(lease: Option<&Lease>) -> Result<LeaseColumns<'_>, StoreError> {
    Ok(match lease {
        None => LeaseColumns {
            owner: None,
            expires: None,
            expires_ns: None,
        },
        Some(lease) => LeaseColumns {
            owner: Some(lease.owner.as_str()),
            expires: Some(to_doc(&lease.expires_at)?),
            expires_ns: Some(nanos(lease.expires_at)),
        },
    })
}

/// The columns of a run's limits (migration 6): what claims and
/// `list_claimable` compare, NULL or false for a run without limits.
pub(crate) struct LimitColumns {
    /// The concurrency key, for a run that takes part in one
    /// (`RunLimits::slot_key`).
    pub(crate) slot_key: Option<String>,
    /// The key's most runs holding a slot.
    pub(crate) slot_max: Option<i64>,
    /// Whether a claim gave the run a slot.
    pub(crate) slot_held: bool,
    /// Whether the key is debounced.
    pub(crate) debounce: bool,
    /// The end of its debounce window.
    pub(crate) not_before_ns: Option<i64>,
    /// Its workflow's rate limit: runs per window...
    pub(crate) rate_runs: Option<i64>,
    /// ... and the window, in nanoseconds.
    pub(crate) rate_per_ns: Option<i64>,
}

pub(crate) fn limit_columns(run: &WorkflowRun) -> LimitColumns {
    let limits = run.limits.as_deref();
    let rate = limits.and_then(|l| l.rate.as_ref());
    LimitColumns {
        slot_key: limits.and_then(|l| l.slot_key()).map(str::to_owned),
        slot_max: limits.and_then(|l| l.max).map(i64::from),
        slot_held: limits.is_some_and(|l| l.holds_slot),
        debounce: limits.is_some_and(|l| l.debounce),
        not_before_ns: limits.and_then(|l| l.not_before).map(nanos),
        rate_runs: rate.map(|r| i64::from(r.runs)),
        rate_per_ns: rate.map(|r| r.window().num_nanoseconds().unwrap_or(i64::MAX)),
    }
}

/// A run from the columns [`RUN_COLUMNS`](crate::schema::RUN_COLUMNS): the
/// record, with the lease, epoch and cancel flag from their own columns
/// (claims, renewals and cancel requests change only those), and, when the
/// row has them, the signals and a parked run's due time (signals change
/// only those).
pub(crate) fn run(row: &Row) -> Result<WorkflowRun, StoreError> {
    let mut run = run_without_waits(row)?;
    let has = |name: &str| row.columns().iter().any(|c| c.name() == name);
    if has("signals") {
        let column: Option<&str> = row.try_get("signals").map_err(backend)?;
        run.signals = signals(column)?;
    }
    if has("wake_ns") && run.status == RunStatus::Waiting {
        let wake: Option<i64> = row.try_get("wake_ns").map_err(backend)?;
        run.wake_at = wake.map(from_nanos);
    }
    Ok(run)
}

/// The `signals` column's value: `None` for none.
pub(crate) fn signals_column(signals: &[Signal]) -> Result<Option<String>, StoreError> {
    if signals.is_empty() {
        return Ok(None);
    }
    to_doc(&signals).map(Some)
}

/// The signals of a `signals` column.
pub(crate) fn signals(column: Option<&str>) -> Result<Vec<Signal>, StoreError> {
    column.map_or_else(|| Ok(Vec::new()), from_doc)
}

/// A time from nanoseconds since the Unix epoch (the inverse of [`nanos`]
/// within its range).
pub(crate) fn from_nanos(ns: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_nanos(ns)
}

/// [`run`] without the signals and due time of the `signals` and
/// `wake_ns` columns.
fn run_without_waits(row: &Row) -> Result<WorkflowRun, StoreError> {
    let mut run: WorkflowRun = doc(row)?;
    let owner: Option<String> = row.try_get(1).map_err(backend)?;
    let expires: Option<&str> = row.try_get(2).map_err(backend)?;
    run.lease = match (owner, expires) {
        (Some(owner), Some(expires)) => Some(Lease {
            owner,
            expires_at: from_doc(expires)?,
        }),
        _ => None,
    };
    let epoch: i64 = row.try_get(3).map_err(backend)?;
    run.lease_epoch = u64::try_from(epoch).map_err(backend)?;
    run.cancel_requested = row.try_get(4).map_err(backend)?;
    Ok(run)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nanos_keep_order_and_saturate() {
        let early = DateTime::<Utc>::MIN_UTC;
        let late = DateTime::<Utc>::MAX_UTC;
        let now = Utc::now();
        assert_eq!(nanos(early), i64::MIN);
        assert_eq!(nanos(late), i64::MAX);
        assert!(nanos(early) < nanos(now) && nanos(now) < nanos(late));
        assert_eq!(nanos(DateTime::<Utc>::UNIX_EPOCH), 0);
    }

    #[test]
    fn status_names_are_the_serde_names() {
        for status in [
            RunStatus::Queued,
            RunStatus::Running,
            RunStatus::Succeeded,
            RunStatus::Failed,
            RunStatus::Cancelled,
            RunStatus::TimedOut,
        ] {
            let serde = serde_json::to_value(status).ok();
            assert_eq!(serde, Some(serde_json::Value::from(status_name(status))));
        }
    }
}
