//! Retention: removing old finished runs and the events nothing needs.

use chrono::{DateTime, Utc};
use sled::IVec;
use taskforge_core::{Event, Order, StoreError, WorkflowRun};

use crate::error::backend;
use crate::keys::{self, tag};
use crate::scan::time_range;
use crate::space::Space;
use crate::store::{decode, op_load, Inner, SledStore};
use crate::writer::{Op, Outcome, PruneReport, Tx};

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
    /// Runs and events are removed in chunks, each chunk one atomic batch
    /// queued with the engine's writes, so a prune can run beside the
    /// engine and a crash mid-prune leaves every record whole (a run goes
    /// with all its step attempts and index entries, or not at all). Once an event is removed its dedup key is free again:
    /// a redelivery after the retention window starts a new run. Workflows,
    /// versions and triggers are never removed. The removals are durable
    /// when this returns (with [`Durability::Durable`](crate::Durability)).
    ///
    /// # Errors
    /// [`StoreError::Backend`] if sled fails; what was removed before the
    /// failure stays removed.
    pub async fn prune(&self, cutoff: DateTime<Utc>) -> Result<PruneReport, StoreError> {
        let mut report = PruneReport::default();
        // Events are removed: the cache of recent ones forgets them (and
        // refuses entries read before this), before and after.
        self.inner.recent.clear();
        // Finished runs, in chunks: each chunk is one queued write. A run
        // finishes after it is created, so the runs created up to the
        // cutoff are the candidates; each is checked in the write.
        let finished = self
            .blocking(move |inner| old_ids(inner, &inner.runs, tag::RUN_BY_TIME, cutoff))
            .await?;
        for chunk in finished.chunks(CHUNK) {
            let chunk = chunk.to_vec();
            let chunk_ids = chunk.clone();
            let targets = self
                .blocking(move |inner| {
                    // Attempts of a finished run never change (commits to
                    // it are refused), so listing them first is safe.
                    chunk
                        .into_iter()
                        .map(|id| {
                            let steps = inner
                                .steps
                                .scan_prefix(id)
                                .map(|entry| entry.map(|(key, _)| key))
                                .collect::<Result<Vec<IVec>, _>>()
                                .map_err(backend)?;
                            Ok((id, steps))
                        })
                        .collect::<Result<Vec<_>, StoreError>>()
                })
                .await?;
            let op: Op = Box::new(move |tx: &Tx<'_>| {
                let mut pruned = PruneReport::default();
                for (id, steps) in &targets {
                    let Some(record) = tx.runs.get(id)? else {
                        continue;
                    };
                    let run: WorkflowRun = match decode("run", &record) {
                        Ok(run) => run,
                        Err(e) => return Ok(Err(e)),
                    };
                    // Attempts kept in the record go with it.
                    let kept = crate::record::attempts(&record).map_or(0, |a| a.len());
                    let finished_before = run.status.is_terminal()
                        && run.finished_at.unwrap_or(run.created_at) < cutoff;
                    if !finished_before {
                        continue;
                    }
                    tx.runs.remove(id)?;
                    for key in steps {
                        tx.steps.remove(key)?;
                    }
                    for key in keys::run_index(&run)
                        .into_iter()
                        .chain(keys::legacy_run_index(&run))
                    {
                        tx.idx.remove(key)?;
                    }
                    pruned.runs += 1;
                    pruned.step_runs += (steps.len() + kept) as u64;
                }
                Ok(Ok(Outcome::Pruned(pruned)))
            });
            if let Outcome::Pruned(pruned) = self.write(op).await? {
                report.runs += pruned.runs;
                report.step_runs += pruned.step_runs;
            }
            // The logs of the runs that went: they are only ever read
            // through their run, so removing them after it is safe.
            let ids: Vec<[u8; 16]> = chunk_ids;
            self.blocking(move |inner| {
                for id in ids {
                    if inner.runs.get(id).map_err(backend)?.is_none() {
                        SledStore::remove_logs(&inner.db, &id)?;
                    }
                }
                Ok(())
            })
            .await?;
        }

        // Events received before the cutoff that no stored run refers to
        // (through its `event_id`: the index says; or as the run the event
        // started: checked in the write).
        let old_events = self
            .blocking(move |inner| {
                let ids = old_ids(inner, &inner.events, tag::EVENT_BY_TIME, cutoff)?;
                let mut unreferenced = Vec::with_capacity(ids.len());
                for id in ids {
                    let by_event = keys::key(tag::RUN_BY_EVENT, &[&id]);
                    if inner.idx.scan_prefix(by_event).next().is_none() {
                        unreferenced.push(id);
                    }
                }
                Ok(unreferenced)
            })
            .await?;
        for chunk in old_events.chunks(CHUNK) {
            let chunk = chunk.to_vec();
            let op: Op = Box::new(move |tx: &Tx<'_>| {
                let mut pruned = PruneReport::default();
                for id in &chunk {
                    let event = match op_load::<Event>(&tx.events, "event", id)? {
                        Ok(Some(event)) => event,
                        Ok(None) => continue,
                        Err(e) => return Ok(Err(e)),
                    };
                    if event.received_at >= cutoff {
                        continue;
                    }
                    if let Some(run_id) = event.outcome.run_id() {
                        if tx.runs.get(run_id.to_bytes())?.is_some() {
                            continue;
                        }
                    }
                    tx.events.remove(id)?;
                    // With the time key earlier formats wrote for every event.
                    for key in keys::event_index(&event)
                        .into_iter()
                        .chain([keys::event_time(&event)])
                    {
                        tx.idx.remove(key)?;
                    }
                    if let Some(dedup_key) = &event.dedup_key {
                        let dedup = keys::dedup(event.workflow_id, dedup_key);
                        if tx.idx.get(dedup.as_slice())?.as_deref() == Some(&id[..]) {
                            tx.idx.remove(dedup)?;
                        }
                    }
                    pruned.events += 1;
                }
                Ok(Ok(Outcome::Pruned(pruned)))
            });
            if let Outcome::Pruned(pruned) = self.write(op).await? {
                report.events += pruned.events;
            }
        }
        self.inner.recent.clear();
        self.durable().await?;
        Ok(report)
    }
}

/// How many runs or events one queued prune write removes at most.
const CHUNK: usize = 256;

/// The ids of the records of `space` made up to `cutoff` (to the
/// microsecond in the time index, to the millisecond for records dated by
/// their ids; each candidate is checked on its record later), oldest
/// first.
fn old_ids(
    inner: &Inner,
    space: &Space,
    tag: u8,
    cutoff: DateTime<Utc>,
) -> Result<Vec<[u8; keys::ID]>, StoreError> {
    time_range(
        space,
        &inner.idx,
        tag,
        None,
        Some(cutoff),
        Order::OldestFirst,
        None,
    )
}
