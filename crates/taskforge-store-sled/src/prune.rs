//! Retention: removing old finished runs and the events nothing needs.

use chrono::{DateTime, Utc};
use sled::Transactional;
use taskforge_core::{Event, StoreError, WorkflowRun};

use crate::error::{backend, tx_error};
use crate::keys::{self, tag};
use crate::store::{tx_load, Inner, SledStore};

/// What [`SledStore::prune`] removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PruneReport {
    /// Finished runs removed.
    pub runs: u64,
    /// Step attempts of those runs removed.
    pub step_runs: u64,
    /// Events removed.
    pub events: u64,
}

impl SledStore {
    /// Removes history older than `cutoff`:
    ///
    /// - every run that finished before `cutoff`, with its step attempts
    ///   and index entries;
    /// - every event received before `cutoff` that no stored run refers to
    ///   any more (neither as the run it started nor as a run's `event_id`).
    ///   So the event of an unfinished run is always kept, and so is the
    ///   event of a run kept because it finished after `cutoff`.
    ///
    /// Each run and each event is removed in its own transaction, so a
    /// prune can run beside the engine and a crash mid-prune leaves every
    /// record whole. Once an event is removed its dedup key is free again:
    /// a redelivery after the retention window starts a new run. Workflows,
    /// versions and triggers are never removed. The removals are durable
    /// when this returns (with [`Durability::Durable`](crate::Durability)).
    ///
    /// # Errors
    /// [`StoreError::Backend`] if sled fails; what was removed before the
    /// failure stays removed.
    pub async fn prune(&self, cutoff: DateTime<Utc>) -> Result<PruneReport, StoreError> {
        let report = self.blocking(move |inner| prune(inner, cutoff)).await?;
        self.durable().await?;
        Ok(report)
    }
}

fn prune(inner: &Inner, cutoff: DateTime<Utc>) -> Result<PruneReport, StoreError> {
    let mut report = PruneReport::default();
    // Finished runs, oldest finish first. The index is kept to the
    // microsecond, so the last microsecond is checked on the record.
    let lo = keys::key(tag::FINISHED, &[&keys::TIME_MIN]);
    let hi = keys::key(tag::FINISHED, &[&keys::time(cutoff), &[0xff; keys::ID]]);
    let finished: Vec<[u8; keys::ID]> = inner
        .idx
        .range(lo..=hi)
        .keys()
        .map(|k| {
            let key = k.map_err(backend)?;
            keys::trailing_id(&key).ok_or_else(|| backend("malformed finished-run index key"))
        })
        .collect::<Result<_, _>>()?;
    for id in finished {
        // Attempts of a finished run never change (commits to it are
        // refused), so listing them before the transaction is safe.
        let step_keys: Vec<sled::IVec> = inner
            .steps
            .scan_prefix(id)
            .keys()
            .collect::<Result<_, _>>()
            .map_err(backend)?;
        let removed = (&inner.runs, &inner.steps, &inner.idx)
            .transaction(|(runs, steps, idx)| {
                let Some(run) = tx_load::<WorkflowRun>(runs, "run", &id)? else {
                    return Ok(false);
                };
                let finished_before =
                    run.status.is_terminal() && run.finished_at.unwrap_or(run.created_at) < cutoff;
                if !finished_before {
                    return Ok(false);
                }
                runs.remove(&id)?;
                for key in &step_keys {
                    steps.remove(key)?;
                }
                for key in keys::run_index(&run) {
                    idx.remove(key)?;
                }
                Ok(true)
            })
            .map_err(tx_error)?;
        if removed {
            report.runs += 1;
            report.step_runs += step_keys.len() as u64;
        }
    }

    // Events received before the cutoff that no stored run refers to.
    let lo = keys::key(tag::EVENT_BY_TIME, &[&keys::TIME_MIN]);
    let hi = keys::key(
        tag::EVENT_BY_TIME,
        &[&keys::time(cutoff), &[0xff; keys::ID]],
    );
    let old_events: Vec<[u8; keys::ID]> = inner
        .idx
        .range(lo..=hi)
        .keys()
        .map(|k| {
            let key = k.map_err(backend)?;
            keys::trailing_id(&key).ok_or_else(|| backend("malformed event index key"))
        })
        .collect::<Result<_, _>>()?;
    for id in old_events {
        let by_event = keys::key(tag::RUN_BY_EVENT, &[&id]);
        if inner.idx.scan_prefix(by_event).next().is_some() {
            continue;
        }
        let removed = (&inner.events, &inner.runs, &inner.idx)
            .transaction(|(events, runs, idx)| {
                let Some(event) = tx_load::<Event>(events, "event", &id)? else {
                    return Ok(false);
                };
                if event.received_at >= cutoff {
                    return Ok(false);
                }
                if let Some(run_id) = event.outcome.run_id() {
                    if runs.get(run_id.to_bytes())?.is_some() {
                        return Ok(false);
                    }
                }
                events.remove(&id)?;
                for key in keys::event_index(&event) {
                    idx.remove(key)?;
                }
                if let Some(dedup_key) = &event.dedup_key {
                    let dedup = keys::dedup(event.workflow_id, dedup_key);
                    if idx.get(dedup.as_slice())?.as_deref() == Some(&id[..]) {
                        idx.remove(dedup)?;
                    }
                }
                Ok(true)
            })
            .map_err(tx_error)?;
        if removed {
            report.events += 1;
        }
    }
    Ok(report)
}
