//! [`RunStore`] over sled: runs, leases and fenced commits.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sled::transaction::UnabortableTransactionError;
use sled::IVec;
use taskforge_core::store::rules::{self, page_limit, RunState, StepState};
use taskforge_core::store::{Fence, RunStore};
use taskforge_core::{
    Event, EventId, Page, RunId, RunQuery, RunStatus, Signal, StepRun, StoreError, WorkflowId,
    WorkflowRun,
};

use crate::active::ActiveRun;
use crate::error::backend;
use crate::keys::{self, tag, StepHead};
use crate::record;
use crate::scan::{page, PageRequest, Source};
use crate::store::{decode, encode, load, tx_reindex, Inner, SledStore};
use crate::writer::{Op, OpResult, Outcome, Tx};

impl SledStore {
    /// Rewrites one run in the writer's next batch: `change` gets the
    /// stored run and returns the run to store, or `None` to store nothing.
    /// Returns the run as stored afterwards; with `durable`, once it is
    /// as durable as configured.
    ///
    /// An unfinished run is changed in memory; the change is written to
    /// sled only with `durable` or when the status changes: claims and
    /// renewals (same status, need not be durable) are written by the
    /// run's next write to sled.
    async fn update_run(
        &self,
        id: RunId,
        durable: bool,
        change: impl Fn(&WorkflowRun) -> Result<Option<WorkflowRun>, StoreError> + Send + 'static,
    ) -> Result<WorkflowRun, StoreError> {
        let key = id.to_bytes();
        let op: Op = Box::new(move |tx: &Tx<'_>| {
            if let Some(mut active) = tx.active.get(&key) {
                let updated = match change(&active.run) {
                    Ok(Some(updated)) => updated,
                    Ok(None) => return Ok(Ok(Outcome::Run(Box::new((*active.run).clone())))),
                    Err(e) => return Ok(Err(e)),
                };
                if durable || updated.status != active.run.status {
                    active.run_bytes = match encode("run", &updated) {
                        Ok(bytes) => bytes,
                        Err(e) => return Ok(Err(e)),
                    };
                    tx.runs.insert(&key, active.record())?;
                    tx_reindex(
                        &tx.idx,
                        &keys::run_index(&active.run),
                        &keys::run_index(&updated),
                    )?;
                    active.unsaved = false;
                } else {
                    active.unsaved = true;
                }
                let reply = Box::new(updated.clone());
                active.run = Arc::new(updated);
                tx.active.set(key, Some(active));
                return Ok(Ok(Outcome::Run(reply)));
            }
            // A finished run, or none: read from sled.
            let Some(record) = tx.runs.get(key)? else {
                return Ok(Err(StoreError::not_found("run", id)));
            };
            let stored: WorkflowRun = match decode("run", &record) {
                Ok(stored) => stored,
                Err(e) => return Ok(Err(e)),
            };
            let updated = match change(&stored) {
                Ok(Some(updated)) => updated,
                Ok(None) => return Ok(Ok(Outcome::Run(Box::new(stored)))),
                Err(e) => return Ok(Err(e)),
            };
            let bytes = match encode("run", &updated) {
                Ok(bytes) => bytes,
                Err(e) => return Ok(Err(e)),
            };
            // The attempts in the record stay.
            let attempts = match record::attempts(&record) {
                Ok(attempts) => attempts,
                Err(e) => return Ok(Err(backend(format!("corrupt run record: {e}")))),
            };
            let attempts: Vec<(u32, u32, IVec)> = attempts
                .into_iter()
                .map(|(index, attempt, json)| (index, attempt, IVec::from(json)))
                .collect();
            let kept = attempts.iter().map(|(i, a, json)| (*i, *a, json));
            tx.runs.insert(&key, record::compose(&bytes, kept))?;
            tx_reindex(
                &tx.idx,
                &keys::run_index(&stored),
                &keys::run_index(&updated),
            )?;
            // (Unfinished runs are all in memory: this one is finished,
            // and no rule changes a finished run.)
            Ok(Ok(Outcome::Run(Box::new(updated))))
        });
        let outcome = if durable {
            self.write_durable(op).await?
        } else {
            self.write(op).await?
        };
        match outcome {
            Outcome::Run(run) => Ok(*run),
            other => Err(backend(format!("unexpected write outcome {other:?}"))),
        }
    }

    /// A claim that may need a slot of the run's key and a start of its
    /// workflow's rate limit ([`rules::claim_with_slot`]): decided in the
    /// writer, on the unfinished runs as its batch left them, so it is
    /// ordered with every other claim; the workflow's start times are
    /// rewritten in the same transaction. Like any claim, it writes the
    /// run to sled only with its next write.
    async fn claim_limited(
        &self,
        id: RunId,
        owner: &str,
        now: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    ) -> Result<WorkflowRun, StoreError> {
        let owner = owner.to_owned();
        let key = id.to_bytes();
        let op: Op = Box::new(move |tx: &Tx<'_>| {
            let Some(mut active) = tx.active.get(&key) else {
                // Finished since it was read, or never stored.
                return Ok(Err(match tx.runs.get(key)? {
                    Some(_) => StoreError::conflict("run", id, "the run is finished"),
                    None => StoreError::not_found("run", id),
                }));
            };
            let stored = &active.run;
            let mut slot = None;
            if rules::needs_slot(stored) {
                let mut state = tx.active.slot_state(stored, now);
                if stored.limits.as_deref().is_some_and(|l| l.rate.is_some()) {
                    state.starts = match tx.idx.get(keys::rate(stored.workflow_id))? {
                        Some(bytes) => match decode("rate starts", &bytes) {
                            Ok(starts) => starts,
                            Err(e) => return Ok(Err(e)),
                        },
                        None => Vec::new(),
                    };
                }
                slot = Some(state);
            }
            let rules::Claimed {
                run: claimed,
                starts,
            } = match rules::claim_with_slot(stored, &owner, now, expires_at, slot.as_ref()) {
                Ok(claimed) => claimed,
                Err(e) => return Ok(Err(e)),
            };
            if let Some(starts) = starts {
                let bytes = match encode("rate starts", &starts) {
                    Ok(bytes) => bytes,
                    Err(e) => return Ok(Err(e)),
                };
                tx.idx.insert(&keys::rate(claimed.workflow_id), bytes)?;
            }
            // A claim keeps the status: it is written with the run's next
            // write, as in `update_run`.
            active.unsaved = true;
            let reply = Box::new(claimed.clone());
            active.run = Arc::new(claimed);
            tx.active.set(key, Some(active));
            Ok(Ok(Outcome::Run(reply)))
        });
        match self.write(op).await? {
            Outcome::Run(run) => Ok(*run),
            other => Err(backend(format!("unexpected write outcome {other:?}"))),
        }
    }

    /// The recorded start times of a rate-limited workflow, from sled.
    pub(crate) fn rate_starts(&self, workflow: WorkflowId) -> Vec<DateTime<Utc>> {
        load(&self.inner.idx, "rate starts", &keys::rate(workflow))
            .ok()
            .flatten()
            .unwrap_or_default()
    }

    /// The unfinished run `id` from memory, if it is one.
    fn active_run(&self, id: &[u8; keys::ID]) -> Option<WorkflowRun> {
        self.inner
            .active
            .read()
            .get(id)
            .map(|active| (*active.run).clone())
    }
}

/// A commit to a run that is not unfinished: read from sled. Its checks
/// fail (a finished run is never rewritten) unless it repeats a commit that
/// was applied, whose reply was lost; then it succeeds and writes nothing.
fn commit_to_stored(
    tx: &Tx<'_>,
    fence: Fence,
    written: Option<&WorkflowRun>,
    steps: &[(StepKey, StepState, IVec)],
    states: &[StepState],
) -> Result<OpResult, UnabortableTransactionError> {
    let id = fence.run_id;
    let key = id.to_bytes();
    let Some(record) = tx.runs.get(key)? else {
        return Ok(Err(StoreError::not_found("run", id)));
    };
    let stored: WorkflowRun = match decode("run", &record) {
        Ok(stored) => stored,
        Err(e) => return Ok(Err(e)),
    };
    let in_record = match record::attempts(&record) {
        Ok(attempts) => attempts,
        Err(e) => return Ok(Err(backend(format!("corrupt run record: {e}")))),
    };
    // Each attempt from the record, or the steps tree of earlier formats.
    let mut stored_steps = Vec::with_capacity(steps.len());
    for (step_key, state, _) in steps {
        let kept = in_record
            .iter()
            .find(|(index, attempt, _)| (*index, *attempt) == (state.index, state.attempt));
        stored_steps.push(match kept {
            Some((_, _, json)) => Some(IVec::from(*json)),
            None => tx.steps.get(step_key)?,
        });
    }
    let state = RunState::from(&stored);
    let head = written.map(RunState::from);
    let checked = rules::check_fence(fence, &state, head.as_ref()).and_then(|()| {
        rules::check_steps(id, states, |index, attempt| {
            let i = states
                .iter()
                .position(|s| (s.index, s.attempt) == (index, attempt));
            match i.and_then(|i| stored_steps[i].as_ref()) {
                Some(old) => decode::<StepHead>("step run", old).map(|old| Some(old.status)),
                None => Ok(None),
            }
        })
        .and_then(|checked| checked)
    });
    let error = match checked {
        Err(error) => error,
        // Every unfinished run is in memory, so a stored run that passes
        // the fence is not one this store wrote.
        Ok(()) => {
            return Ok(Err(backend(format!(
                "run {id} is unfinished on disk but not among the unfinished runs in memory"
            ))))
        }
    };
    if !error.is_conflict() {
        return Ok(Err(error));
    }
    let applied = rules::is_applied(fence, &stored, written, states, |i| {
        stored_steps[i].as_deref() == Some(&steps[i].2[..])
    });
    Ok(if applied {
        Ok(Outcome::Done)
    } else {
        Err(error)
    })
}

/// The ids of the runs an event caused, in id order: the run it started
/// (named by its outcome, and checked by the caller's filter) and the
/// others, from the index.
fn runs_of_event(inner: &Inner, event: EventId) -> Result<Vec<[u8; keys::ID]>, StoreError> {
    let mut ids = std::collections::BTreeSet::new();
    for entry in inner
        .idx
        .scan_prefix(keys::key(tag::RUN_BY_EVENT, &[&event.to_bytes()]))
        .keys()
    {
        ids.extend(keys::trailing_id(&entry.map_err(backend)?));
    }
    if let Some(stored) = load::<Event>(&inner.events, "event", &event.to_bytes())? {
        ids.extend(stored.outcome.run_id().map(|id| id.to_bytes()));
    }
    Ok(ids.into_iter().collect())
}

/// The key of a step attempt.
type StepKey = [u8; keys::ID + 8];

#[async_trait]
impl RunStore for SledStore {
    async fn insert_run(&self, run: &WorkflowRun) -> Result<(), StoreError> {
        let bytes = encode("run", run)?;
        let id = run.id;
        let mut index = keys::run_index(run);
        index.extend(keys::run_by_event(run));
        let run = Arc::new(run.clone());
        let op: Op = Box::new(move |tx: &Tx<'_>| {
            if tx.runs.get(id.to_bytes())?.is_some() {
                return Ok(Err(StoreError::already_exists("run", id)));
            }
            tx.runs.insert(&id.to_bytes(), bytes.clone())?;
            for key in &index {
                tx.idx.insert(key.as_slice(), &[])?;
            }
            tx.active.set(
                id.to_bytes(),
                Some(ActiveRun::new(Arc::clone(&run), bytes.clone())),
            );
            Ok(Ok(Outcome::Done))
        });
        self.write_durable(op).await.map(drop)
    }

    async fn get_run(&self, id: RunId) -> Result<WorkflowRun, StoreError> {
        let key = id.to_bytes();
        if let Some(run) = self.active_run(&key) {
            return Ok(run);
        }
        load(&self.inner.runs, "run", &key)?.ok_or_else(|| StoreError::not_found("run", id))
    }

    async fn list_runs(&self, query: &RunQuery) -> Result<Page<WorkflowRun, RunId>, StoreError> {
        let query = query.clone();
        self.blocking(move |inner| {
            // The narrowest index the query allows; the rest is filtered.
            // Unfinished statuses are indexed in memory, finished ones on
            // disk.
            let unfinished = query.status.filter(|s| keys::is_active(*s));
            let status = query.status.map(|s| [keys::status(s)]);
            let keyed = query
                .concurrency_key
                .as_deref()
                .map(|key| inner.active.read().key_ids(key));
            let source = match (query.event_id, query.workflow_id, status) {
                // A key's runs are all unfinished, so all in memory.
                _ if keyed.is_some() => Source::Ids(keyed.unwrap_or_default()),
                (Some(event), _, _) => Source::Ids(runs_of_event(inner, event)?),
                (None, workflow, Some(_)) if unfinished.is_some() => Source::Ids(
                    inner
                        .active
                        .read()
                        .ids(unfinished.unwrap_or(RunStatus::Queued), workflow),
                ),
                (None, Some(wf), Some(st)) => Source::Index(keys::key(
                    tag::RUN_BY_WORKFLOW_STATUS,
                    &[&wf.to_bytes(), &st],
                )),
                (None, Some(wf), None) => {
                    Source::Index(keys::key(tag::RUN_BY_WORKFLOW, &[&wf.to_bytes()]))
                }
                // Each workflow's runs in the status, merged: workflows are
                // few, and a finished run writes one status key, not two.
                (None, None, Some(st)) => Source::Merged(
                    inner
                        .workflows
                        .iter()
                        .keys()
                        .map(|id| Ok(keys::key(tag::RUN_BY_WORKFLOW_STATUS, &[&id?, &st])))
                        .collect::<Result<_, sled::Error>>()
                        .map_err(backend)?,
                ),
                (None, None, None)
                    if query.created_from.is_some() || query.created_until.is_some() =>
                {
                    Source::TimeRange {
                        tag: tag::RUN_BY_TIME,
                        from: query.created_from,
                        until: query.created_until,
                    }
                }
                (None, None, None) => Source::Primary,
            };
            let keep = |r: &WorkflowRun| rules::run_matches(r, &query);
            let limit = page_limit(query.limit);
            let after = query.after.map(|id| id.to_bytes());
            let fresh = |id: &[u8; keys::ID]| {
                inner
                    .active
                    .read()
                    .get(id)
                    .map(|active| (*active.run).clone())
            };
            let (items, more) = page(
                &inner.runs,
                &inner.idx,
                "run",
                PageRequest {
                    source,
                    order: query.order,
                    after,
                    limit,
                },
                keep,
                fresh,
            )?;
            Ok(Page::new(items, more, |r| r.id))
        })
        .await
    }

    async fn list_claimable(
        &self,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<RunId>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        // Unfinished runs are in memory, with their leases and keys: only
        // a rate-limited workflow's start times are read.
        Ok(self
            .inner
            .active
            .read()
            .claimable(now, limit, |workflow| self.rate_starts(workflow)))
    }

    async fn claim_run(
        &self,
        id: RunId,
        owner: &str,
        now: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    ) -> Result<WorkflowRun, StoreError> {
        // Whether a run needs a slot changes only one way (a claim or a
        // cancel request ends it), so a run that needs none now never will.
        let needs_slot = self
            .inner
            .active
            .read()
            .get(&id.to_bytes())
            .is_some_and(|active| rules::needs_slot(&active.run));
        if needs_slot {
            return self.claim_limited(id, owner, now, expires_at).await;
        }
        let owner = owner.to_owned();
        let run = self
            .update_run(id, false, move |stored| {
                rules::claim(stored, &owner, now, expires_at).map(Some)
            })
            .await?;
        // Not waited for: a claim lost in a crash is lost with its claimer,
        // and the claimer's first commit, which is durable, flushes it.
        Ok(run)
    }

    async fn renew_lease(
        &self,
        id: RunId,
        epoch: u64,
        expires_at: DateTime<Utc>,
    ) -> Result<WorkflowRun, StoreError> {
        // Not waited for: a renewal lost in a crash only shortens the lease.
        let run = self
            .update_run(id, false, move |stored| {
                rules::renew(stored, epoch, expires_at).map(Some)
            })
            .await?;
        Ok(run)
    }

    async fn commit(
        &self,
        fence: Fence,
        run: Option<&WorkflowRun>,
        steps: &[StepRun],
    ) -> Result<(), StoreError> {
        let id = fence.run_id;
        rules::check_commit_request(fence, run, steps)?;
        // Serialized once; the write only copies bytes.
        let run = match run {
            Some(run) => Some((Arc::new(run.clone()), encode("run", run)?)),
            None => None,
        };
        let steps = steps
            .iter()
            .map(|s| Ok((keys::step(s), StepState::from(s), encode("step run", s)?)))
            .collect::<Result<Vec<_>, StoreError>>()?;
        let key = id.to_bytes();
        let op: Op = Box::new(move |tx: &Tx<'_>| {
            let states: Vec<StepState> = steps.iter().map(|(_, state, _)| *state).collect();
            let written = run.as_ref().map(|(run, _)| &**run);
            let Some(mut active) = tx.active.get(&key) else {
                // Not an unfinished run: the checks fail or it is a retry.
                return commit_to_stored(tx, fence, written, &steps, &states);
            };
            // Checks first, on the copy in memory: a commit that fails
            // leaves nothing behind.
            let state = RunState::from(&*active.run);
            let head = written.map(RunState::from);
            let checked = rules::check_fence(fence, &state, head.as_ref()).and_then(|()| {
                let stored = |index, attempt| {
                    Ok::<_, Infallible>(active.step(index, attempt).map(|s| s.status))
                };
                match rules::check_steps(id, &states, stored) {
                    Ok(checked) => checked,
                    Err(never) => match never {},
                }
            });
            if let Err(error) = checked {
                if !error.is_conflict() {
                    return Ok(Err(error));
                }
                // A retry of a commit whose reply was lost succeeds.
                let applied = rules::is_applied(fence, &active.run, written, &states, |i| {
                    let (_, state, bytes) = &steps[i];
                    active
                        .step(state.index, state.attempt)
                        .is_some_and(|s| s.bytes == *bytes)
                });
                return Ok(if applied {
                    Ok(Outcome::Done)
                } else {
                    Err(error)
                });
            }
            // The attempts go into the run's record: one key for all.
            let mut changed = !steps.is_empty();
            for (_, state, bytes) in &steps {
                active.set_step(state.index, state.attempt, state.status, bytes.clone());
            }
            match &run {
                Some((new, bytes)) => {
                    // The flag and the signals are set by any engine at any
                    // time, and the owner's copy may predate them; the
                    // epoch belongs to claims alone. Re-serialized only in
                    // those rare cases.
                    let stale = rules::needs_merge(&state, &RunState::from(&**new))
                        || rules::needs_signal_merge(&active.run.signals, new);
                    let (new, bytes) = if stale {
                        let mut kept = (**new).clone();
                        rules::merge_committed(&state, &mut kept);
                        rules::merge_signals(&active.run.signals, &mut kept);
                        match encode("run", &kept) {
                            Ok(bytes) => (Arc::new(kept), bytes),
                            Err(e) => return Ok(Err(e)),
                        }
                    } else {
                        (Arc::clone(new), bytes.clone())
                    };
                    active.run_bytes = bytes;
                    changed = true;
                    let old = &active.run;
                    let reindex = (old.status, old.created_at, old.finished_at)
                        != (new.status, new.created_at, new.finished_at);
                    if reindex {
                        tx_reindex(&tx.idx, &keys::run_index(old), &keys::run_index(&new))?;
                    }
                    active.run = new;
                    active.unsaved = false;
                }
                // A claim or renewal held in memory is written with the
                // claimer's first write.
                None if active.unsaved => {
                    active.run_bytes = match encode("run", &*active.run) {
                        Ok(bytes) => bytes,
                        Err(e) => return Ok(Err(e)),
                    };
                    active.unsaved = false;
                    changed = true;
                }
                None => {}
            }
            if changed {
                tx.runs.insert(&key, active.record())?;
            }
            // A finished run leaves the in-memory set.
            tx.active.set(key, Some(active));
            Ok(Ok(Outcome::Done))
        });
        self.write_durable(op).await.map(drop)
    }

    async fn request_cancel(&self, id: RunId) -> Result<WorkflowRun, StoreError> {
        // Waited for also when the flag was set already (its writer may
        // still be waiting for the flush) or the run is finished.
        self.update_run(id, true, |stored| Ok(rules::request_cancel(stored)))
            .await
    }

    async fn signal_run(&self, id: RunId, signal: &Signal) -> Result<WorkflowRun, StoreError> {
        let signal = signal.clone();
        self.update_run(id, true, move |stored| {
            rules::signal(stored, &signal).map(Some)
        })
        .await
    }

    async fn list_step_runs(&self, run_id: RunId) -> Result<Vec<StepRun>, StoreError> {
        self.blocking(move |inner| {
            let key = run_id.to_bytes();
            let mut found = BTreeMap::new();
            // Attempts written by earlier formats...
            for entry in inner.steps.scan_prefix(key) {
                let (_, value) = entry.map_err(backend)?;
                let step: StepRun = decode("step run", &value)?;
                found.insert((step.step_index, step.attempt), step);
            }
            // ...and those in the run's record, which supersede them.
            if let Some(record) = inner.runs.get(key).map_err(backend)? {
                let attempts = record::attempts(&record)
                    .map_err(|e| backend(format!("corrupt run record: {e}")))?;
                for (index, attempt, json) in attempts {
                    found.insert((index, attempt), decode("step run", json)?);
                }
            }
            Ok(found.into_values().collect())
        })
        .await
    }
}
