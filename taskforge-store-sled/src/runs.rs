//! [`RunStore`] over sled: runs, leases and fenced commits.

use std::collections::BTreeSet;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use taskforge_core::store::rules::{self, page_limit, RunState, StepState};
use taskforge_core::store::{Fence, RunStore};
use taskforge_core::{Page, RunId, RunQuery, RunStatus, StepRun, StoreError, WorkflowRun};

use crate::error::backend;
use crate::keys::{self, tag, RunHead, StepHead};
use crate::scan::{page, PageRequest, Source};
use crate::store::{decode, encode, load, op_load, tx_reindex, SledStore};
use crate::writer::{Op, Outcome, Tx};

fn claimable(run: &WorkflowRun, now: DateTime<Utc>) -> bool {
    rules::is_claimable(run.status, run.lease.as_ref(), now)
}

impl SledStore {
    /// Rewrites one run in the writer's next batch: `change` gets the
    /// stored run and returns the run to store, or `None` to store nothing.
    /// Returns the run as stored afterwards; with `durable`, once it is
    /// as durable as configured.
    async fn update_run(
        &self,
        id: RunId,
        durable: bool,
        change: impl Fn(&WorkflowRun) -> Result<Option<WorkflowRun>, StoreError> + Send + 'static,
    ) -> Result<WorkflowRun, StoreError> {
        let key = id.to_bytes();
        let op: Op = Box::new(move |tx: &Tx<'_>| {
            let stored = match op_load::<WorkflowRun>(&tx.runs, "run", &key)? {
                Ok(Some(stored)) => stored,
                Ok(None) => return Ok(Err(StoreError::not_found("run", id))),
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
            tx.runs.insert(&key, bytes)?;
            tx_reindex(
                &tx.idx,
                &keys::run_index(&stored),
                &keys::run_index(&updated),
            )?;
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
}

#[async_trait]
impl RunStore for SledStore {
    async fn insert_run(&self, run: &WorkflowRun) -> Result<(), StoreError> {
        let bytes = encode("run", run)?;
        let id = run.id;
        let index = keys::run_index(run);
        let op: Op = Box::new(move |tx: &Tx<'_>| {
            if tx.runs.get(id.to_bytes())?.is_some() {
                return Ok(Err(StoreError::already_exists("run", id)));
            }
            tx.runs.insert(&id.to_bytes(), bytes.clone())?;
            for key in &index {
                tx.idx.insert(key.as_slice(), &[])?;
            }
            Ok(Ok(Outcome::Done))
        });
        self.write_durable(op).await.map(drop)
    }

    async fn get_run(&self, id: RunId) -> Result<WorkflowRun, StoreError> {
        load(&self.inner.runs, "run", &id.to_bytes())?
            .ok_or_else(|| StoreError::not_found("run", id))
    }

    async fn list_runs(&self, query: &RunQuery) -> Result<Page<WorkflowRun, RunId>, StoreError> {
        let query = query.clone();
        self.blocking(move |inner| {
            // The narrowest index the query allows; the rest is filtered.
            let status = query.status.map(|s| [keys::status(s)]);
            let source = match (query.event_id, query.workflow_id, status) {
                (Some(event), _, _) => {
                    Source::Index(keys::key(tag::RUN_BY_EVENT, &[&event.to_bytes()]))
                }
                (None, Some(wf), Some(st)) => Source::Index(keys::key(
                    tag::RUN_BY_WORKFLOW_STATUS,
                    &[&wf.to_bytes(), &st],
                )),
                (None, Some(wf), None) => {
                    Source::Index(keys::key(tag::RUN_BY_WORKFLOW, &[&wf.to_bytes()]))
                }
                (None, None, Some(st)) => Source::Index(keys::key(tag::RUN_BY_STATUS, &[&st])),
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
        self.blocking(move |inner| {
            let mut ids = BTreeSet::new();
            // The oldest queued runs (skipping the few just claimed)...
            let queued = keys::key(tag::RUN_BY_STATUS, &[&[keys::status(RunStatus::Queued)]]);
            let mut found = 0;
            for entry in inner.idx.scan_prefix(queued).keys() {
                if found == limit {
                    break;
                }
                let key = entry.map_err(backend)?;
                let Some(id) = keys::trailing_id(&key) else {
                    continue;
                };
                let run = load::<WorkflowRun>(&inner.runs, "run", &id)?;
                if run.is_some_and(|r| claimable(&r, now)) {
                    ids.insert(id);
                    found += 1;
                }
            }
            // ...and every running run whose lease lapsed at or before
            // `now`: the lease index is ordered by expiry, not by id, so
            // the lapsed ones are all read (keys only) to find the oldest.
            let lo = keys::key(tag::LEASE, &[&keys::TIME_MIN]);
            let hi = keys::key(tag::LEASE, &[&keys::time(now), &[0xff; keys::ID]]);
            for entry in inner.idx.range(lo..=hi).keys() {
                let key = entry.map_err(backend)?;
                ids.extend(keys::trailing_id(&key));
            }
            let mut found_runs = Vec::with_capacity(limit.min(ids.len()));
            for id in ids {
                if found_runs.len() == limit {
                    break;
                }
                // Check the record: the lease index is kept to the
                // microsecond, and `now` may fall inside one.
                let Some(run) = load::<WorkflowRun>(&inner.runs, "run", &id)? else {
                    continue;
                };
                if claimable(&run, now) {
                    found_runs.push(run.id);
                }
            }
            Ok(found_runs)
        })
        .await
    }

    async fn claim_run(
        &self,
        id: RunId,
        owner: &str,
        now: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    ) -> Result<WorkflowRun, StoreError> {
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
            Some(run) => Some((RunHead::from(run), run.clone(), encode("run", run)?)),
            None => None,
        };
        let steps = steps
            .iter()
            .map(|s| Ok((keys::step(s), StepState::from(s), encode("step run", s)?)))
            .collect::<Result<Vec<_>, StoreError>>()?;
        let key = id.to_bytes();
        let op: Op = Box::new(move |tx: &Tx<'_>| {
            // Checks first: a commit that fails leaves nothing behind.
            let stored = match op_load::<RunHead>(&tx.runs, "run", &key)? {
                Ok(Some(stored)) => stored,
                Ok(None) => return Ok(Err(StoreError::not_found("run", id))),
                Err(e) => return Ok(Err(e)),
            };
            let state = RunState::from(&stored);
            let head = run.as_ref().map(|(head, _, _)| RunState::from(head));
            let states: Vec<StepState> = steps.iter().map(|(_, state, _)| *state).collect();
            let mut stored_steps = Vec::with_capacity(steps.len());
            for (step_key, _, _) in &steps {
                stored_steps.push(tx.steps.get(step_key)?);
            }
            let checked = rules::check_fence(fence, &state, head.as_ref()).and_then(|()| {
                rules::check_steps(id, &states, |index, attempt| {
                    let i = states
                        .iter()
                        .position(|s| (s.index, s.attempt) == (index, attempt));
                    match i.and_then(|i| stored_steps[i].as_ref()) {
                        Some(old) => {
                            decode::<StepHead>("step run", old).map(|old| Some(old.status))
                        }
                        None => Ok(None),
                    }
                })
                .and_then(|checked| checked)
            });
            if let Err(error) = checked {
                if !error.is_conflict() {
                    return Ok(Err(error));
                }
                // A retry of a commit whose reply was lost succeeds.
                let full = match op_load::<WorkflowRun>(&tx.runs, "run", &key)? {
                    Ok(Some(full)) => full,
                    Ok(None) => return Ok(Err(StoreError::not_found("run", id))),
                    Err(e) => return Ok(Err(e)),
                };
                let written = run.as_ref().map(|(_, run, _)| run);
                let applied = rules::is_applied(fence, &full, written, &states, |i| {
                    stored_steps[i].as_deref() == Some(&steps[i].2[..])
                });
                return Ok(if applied {
                    Ok(Outcome::Done)
                } else {
                    Err(error)
                });
            }
            for (step_key, _, bytes) in &steps {
                tx.steps.insert(step_key, bytes.clone())?;
            }
            if let Some((head, run, bytes)) = &run {
                // The flag is set by any engine at any time, and the
                // owner's copy may predate it; the epoch belongs to claims
                // alone. Re-serialized only in those rare cases.
                let (bytes, index) = if rules::needs_merge(&state, &RunState::from(head)) {
                    let mut kept = run.clone();
                    rules::merge_committed(&state, &mut kept);
                    match encode("run", &kept) {
                        Ok(bytes) => (bytes, keys::run_index(&kept)),
                        Err(e) => return Ok(Err(e)),
                    }
                } else {
                    (bytes.clone(), keys::run_head_index(head))
                };
                tx.runs.insert(&key, bytes)?;
                tx_reindex(&tx.idx, &keys::run_head_index(&stored), &index)?;
            }
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

    async fn list_step_runs(&self, run_id: RunId) -> Result<Vec<StepRun>, StoreError> {
        self.blocking(move |inner| {
            inner
                .steps
                .scan_prefix(run_id.to_bytes())
                .values()
                .map(|v| decode("step run", &v.map_err(backend)?))
                .collect()
        })
        .await
    }
}
