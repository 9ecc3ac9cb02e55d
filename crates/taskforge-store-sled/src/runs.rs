//! [`RunStore`] over sled: runs, leases and fenced commits.

use std::collections::BTreeSet;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sled::Transactional;
use taskforge_core::{
    page_limit, Fence, Lease, Page, RunId, RunQuery, RunStatus, RunStore, StepRun, StoreError,
    WorkflowRun,
};

use crate::error::{abort, backend, tx_error};
use crate::keys::{self, tag, RunHead, StepHead};
use crate::scan::{page, PageRequest, Source};
use crate::store::{decode, encode, load, tx_load, tx_reindex, SledStore};

/// Whether a claim at `now` may take the run: it is queued or running,
/// and holds no lease or one that lapsed at or before `now`. A queued run
/// that was just claimed is not claimable again until its lease lapses,
/// so of concurrent claims exactly one wins.
fn claimable(run: &WorkflowRun, now: DateTime<Utc>) -> bool {
    matches!(run.status, RunStatus::Queued | RunStatus::Running)
        && run.lease.as_ref().is_none_or(|l| l.expires_at <= now)
}

impl SledStore {
    /// Rewrites one run in a transaction: `change` gets the stored run and
    /// returns the run to store, or `None` to store nothing. Returns the
    /// run as stored afterwards.
    fn update_run(
        &self,
        id: RunId,
        change: impl Fn(&WorkflowRun) -> Result<Option<WorkflowRun>, StoreError>,
    ) -> Result<(WorkflowRun, bool), StoreError> {
        let key = id.to_bytes();
        let inner = &self.inner;
        (&inner.runs, &inner.idx)
            .transaction(|(runs, idx)| {
                let Some(stored) = tx_load::<WorkflowRun>(runs, "run", &key)? else {
                    return abort(StoreError::not_found("run", id));
                };
                let updated = match change(&stored) {
                    Ok(Some(updated)) => updated,
                    Ok(None) => return Ok((stored, false)),
                    Err(e) => return abort(e),
                };
                let bytes = encode("run", &updated)
                    .map_err(sled::transaction::ConflictableTransactionError::Abort)?;
                runs.insert(&key, bytes)?;
                tx_reindex(idx, &keys::run_index(&stored), &keys::run_index(&updated))?;
                Ok((updated, true))
            })
            .map_err(tx_error)
    }
}

#[async_trait]
impl RunStore for SledStore {
    async fn insert_run(&self, run: &WorkflowRun) -> Result<(), StoreError> {
        let bytes = encode("run", run)?;
        let key = run.id.to_bytes();
        let index = keys::run_index(run);
        let inner = &self.inner;
        (&inner.runs, &inner.idx)
            .transaction(|(runs, idx)| {
                if runs.get(key)?.is_some() {
                    return abort(StoreError::already_exists("run", run.id));
                }
                runs.insert(&key, bytes.clone())?;
                for k in &index {
                    idx.insert(k.as_slice(), &[])?;
                }
                Ok(())
            })
            .map_err(tx_error)?;
        self.durable().await
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
            let keep = |r: &WorkflowRun| {
                query.workflow_id.is_none_or(|w| r.workflow_id == w)
                    && query.status.is_none_or(|s| r.status == s)
                    && query.event_id.is_none_or(|e| r.event_id == Some(e))
                    && query.created_from.is_none_or(|t| r.created_at >= t)
                    && query.created_until.is_none_or(|t| r.created_at < t)
            };
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
            let next = if more {
                items.last().map(|r| r.id)
            } else {
                None
            };
            Ok(Page { items, next })
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
        let (run, _) = self.update_run(id, |stored| {
            if !claimable(stored, now) {
                let reason = match &stored.lease {
                    Some(lease) if !stored.status.is_terminal() => {
                        format!("leased by {:?} until {}", lease.owner, lease.expires_at)
                    }
                    _ => format!("the run is {}", stored.status),
                };
                return Err(StoreError::conflict("run", id, reason));
            }
            let mut claimed = stored.clone();
            claimed.lease = Some(Lease {
                owner: owner.to_owned(),
                expires_at,
            });
            claimed.lease_epoch = stored
                .lease_epoch
                .checked_add(1)
                .ok_or_else(|| StoreError::conflict("run", id, "lease epoch exhausted"))?;
            Ok(Some(claimed))
        })?;
        self.durable().await?;
        Ok(run)
    }

    async fn renew_lease(
        &self,
        id: RunId,
        epoch: u64,
        expires_at: DateTime<Utc>,
    ) -> Result<WorkflowRun, StoreError> {
        // Not waited for: a renewal lost in a crash only shortens the lease.
        let (run, _) = self.update_run(id, |stored| {
            if stored.status.is_terminal() {
                return Err(StoreError::conflict("run", id, "the run is finished"));
            }
            if stored.lease_epoch != epoch {
                return Err(StoreError::conflict(
                    "run",
                    id,
                    format!(
                        "lease epoch {epoch} is stale; the run was claimed again (epoch {})",
                        stored.lease_epoch
                    ),
                ));
            }
            let Some(lease) = &stored.lease else {
                return Err(StoreError::conflict("run", id, "the run holds no lease"));
            };
            let mut renewed = stored.clone();
            renewed.lease = Some(Lease {
                owner: lease.owner.clone(),
                expires_at,
            });
            Ok(Some(renewed))
        })?;
        Ok(run)
    }

    async fn commit(
        &self,
        fence: Fence,
        run: Option<&WorkflowRun>,
        steps: &[StepRun],
    ) -> Result<(), StoreError> {
        let id = fence.run_id;
        if let Some(run) = run {
            if run.id != id {
                return Err(StoreError::Invalid(format!(
                    "commit fenced on run {id} writes run {}",
                    run.id
                )));
            }
        }
        if let Some(step) = steps.iter().find(|s| s.run_id != id) {
            return Err(StoreError::Invalid(format!(
                "commit fenced on run {id} writes a step of run {}",
                step.run_id
            )));
        }
        // Serialized once; the transaction only copies bytes.
        let run = match run {
            Some(run) => Some((run, encode("run", run)?)),
            None => None,
        };
        let steps = steps
            .iter()
            .map(|s| Ok((s, keys::step(s), encode("step run", s)?)))
            .collect::<Result<Vec<_>, StoreError>>()?;
        let key = id.to_bytes();
        let inner = &self.inner;
        (&inner.runs, &inner.steps, &inner.idx)
            .transaction(|(runs, step_tree, idx)| {
                let Some(stored) = tx_load::<RunHead>(runs, "run", &key)? else {
                    return abort(StoreError::not_found("run", id));
                };
                if fence.status.is_terminal() {
                    return abort(StoreError::conflict(
                        "run",
                        id,
                        format!("a finished run ({}) is never rewritten", fence.status),
                    ));
                }
                if stored.lease_epoch != fence.epoch || stored.status != fence.status {
                    return abort(StoreError::conflict(
                        "run",
                        id,
                        format!(
                            "fence expects epoch {} and status {}, stored are epoch {} and status {}",
                            fence.epoch, fence.status, stored.lease_epoch, stored.status
                        ),
                    ));
                }
                if let Some((run, _)) = &run {
                    if run.workflow_id != stored.workflow_id || run.event_id != stored.event_id {
                        return abort(StoreError::Invalid(format!(
                            "commit changes the workflow or event of run {id}"
                        )));
                    }
                }
                for (step, step_key, bytes) in &steps {
                    if let Some(old) = step_tree.get(step_key)? {
                        let old: StepHead = decode("step run", &old)
                            .map_err(sled::transaction::ConflictableTransactionError::Abort)?;
                        if old.status.is_terminal() {
                            return abort(StoreError::conflict(
                                "step",
                                format!("{id}/{}/{}", step.step_index, step.attempt),
                                format!("the attempt is finished ({})", old.status),
                            ));
                        }
                    }
                    step_tree.insert(step_key, bytes.clone())?;
                }
                if let Some((run, bytes)) = &run {
                    // The flag is set by any engine at any time, and the
                    // owner's copy may predate it; the epoch belongs to
                    // claims alone. Re-serialized only in those rare cases.
                    let bytes = if (stored.cancel_requested && !run.cancel_requested)
                        || stored.lease_epoch != run.lease_epoch
                    {
                        let mut kept = (*run).clone();
                        kept.cancel_requested |= stored.cancel_requested;
                        kept.lease_epoch = stored.lease_epoch;
                        encode("run", &kept)
                            .map_err(sled::transaction::ConflictableTransactionError::Abort)?
                    } else {
                        bytes.clone()
                    };
                    runs.insert(&key, bytes)?;
                    tx_reindex(idx, &keys::run_head_index(&stored), &keys::run_index(run))?;
                }
                Ok(())
            })
            .map_err(tx_error)?;
        self.durable().await
    }

    async fn request_cancel(&self, id: RunId) -> Result<WorkflowRun, StoreError> {
        let (run, _) = self.update_run(id, |stored| {
            if stored.status.is_terminal() || stored.cancel_requested {
                return Ok(None);
            }
            let mut cancelled = stored.clone();
            cancelled.cancel_requested = true;
            Ok(Some(cancelled))
        })?;
        // Also when the flag was set already: its writer may still be
        // waiting for the flush.
        if !run.status.is_terminal() {
            self.durable().await?;
        }
        Ok(run)
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
