//! [`RunStore`]: runs, claims, fenced commits and step attempts.

use std::collections::{HashMap, HashSet};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use taskforge_core::store::rules::{self, ClaimablePicker, RunState, SlotState, StepState};
use taskforge_core::store::{Fence, Page, RunQuery, RunStore, StoreError, WorkSignal};
use taskforge_core::{
    EventId, LimitPolicy, RateLimit, RunId, RunLimits, RunStatus, Signal, StepRun, VersionId,
    WorkflowId, WorkflowRun,
};
use tokio_postgres::types::ToSql;
use uuid::Uuid;

use crate::batch::Failure;
use crate::codec::{self, big, doc, lease_columns, nanos, status_name, to_doc};
use crate::error::backend;
use crate::events::{self, Filter};
use crate::notify::Notifier;
use crate::schema::{Sql, RUN_COLUMNS};
use crate::PostgresStore;

/// Whether writing `run` finishes a run that holds a slot of its key: the
/// key's next run may be claimed then, by any process.
fn frees_slot(run: &WorkflowRun) -> bool {
    run.status.is_terminal() && run.limits.as_deref().is_some_and(|l| l.holds_slot)
}

fn run_conflict(id: RunId, reason: impl Into<String>) -> StoreError {
    StoreError::conflict("run", id, reason)
}

/// What the contract's commit rules read of a locked run row.
fn run_state(row: &tokio_postgres::Row) -> Result<RunState, StoreError> {
    let status: String = row.try_get(3).map_err(backend)?;
    let status: RunStatus = serde_json::from_value(serde_json::Value::String(status))
        .map_err(|e| backend(format!("unknown run status in the database: {e}")))?;
    let epoch: i64 = row.try_get(4).map_err(backend)?;
    Ok(RunState {
        status,
        lease_epoch: u64::try_from(epoch).map_err(backend)?,
        cancel_requested: row.try_get(5).map_err(backend)?,
        workflow_id: WorkflowId::from_uuid(row.try_get(0).map_err(backend)?),
        version_id: VersionId::from_uuid(row.try_get(1).map_err(backend)?),
        event_id: row
            .try_get::<_, Option<Uuid>>(2)
            .map_err(backend)?
            .map(EventId::from_uuid),
    })
}

impl PostgresStore {
    /// `error`, unless the commit it refuses is stored already (a retry
    /// after a lost reply), which then succeeds. Rolls back either way.
    async fn unless_applied(
        &self,
        tx: &deadpool_postgres::Transaction<'_>,
        error: StoreError,
        fence: Fence,
        run: Option<&WorkflowRun>,
        steps: &[StepRun],
        states: &[StepState],
    ) -> Result<(), StoreError> {
        if !error.is_conflict() {
            return Err(error);
        }
        let sql = &self.inner.sql;
        let get = tx.prepare_cached(&sql.get_run).await.map_err(backend)?;
        let Some(row) = tx
            .query_opt(&get, &[fence.run_id.as_uuid()])
            .await
            .map_err(backend)?
        else {
            return Err(error);
        };
        let stored = codec::run(&row)?;
        let list = tx
            .prepare_cached(&sql.list_step_runs)
            .await
            .map_err(backend)?;
        let stored_steps: Vec<StepRun> = tx
            .query(&list, &[fence.run_id.as_uuid()])
            .await
            .map_err(backend)?
            .iter()
            .map(doc)
            .collect::<Result<_, _>>()?;
        let applied = rules::is_applied(fence, &stored, run, states, |i| {
            let step = &steps[i];
            stored_steps.iter().any(|s| s == step)
        });
        if applied {
            Ok(())
        } else {
            Err(error)
        }
    }
}

#[async_trait]
impl RunStore for PostgresStore {
    fn work_signal(&self) -> Option<WorkSignal> {
        Some(self.notifications().into_signal())
    }

    async fn insert_run(&self, run: &WorkflowRun) -> Result<(), StoreError> {
        // One statement, its own transaction: one round trip.
        let client = self.client().await?;
        events::insert_run(&*client, &self.inner.sql, run).await
    }

    async fn get_run(&self, id: RunId) -> Result<WorkflowRun, StoreError> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached(&self.inner.sql.get_run)
            .await
            .map_err(backend)?;
        let row = client
            .query_opt(&statement, &[id.as_uuid()])
            .await
            .map_err(backend)?
            .ok_or_else(|| StoreError::not_found("run", id))?;
        codec::run(&row)
    }

    async fn list_runs(&self, q: &RunQuery) -> Result<Page<WorkflowRun, RunId>, StoreError> {
        let mut filter = Filter::default();
        if let Some(id) = q.workflow_id {
            filter.push("workflow_id =", Box::new(*id.as_uuid()));
        }
        if let Some(status) = q.status {
            filter.push("status =", Box::new(status_name(status)));
        }
        if let Some(id) = q.event_id {
            filter.push("event_id =", Box::new(*id.as_uuid()));
        }
        if let Some(key) = &q.concurrency_key {
            // The key's unfinished runs, holding a slot or waiting
            // (rules::slot_use), from the partial index on keys.
            filter.push(
                "status NOT IN ('succeeded', 'failed', 'cancelled', 'timed_out')
                 AND (slot_held OR lease_epoch = 0) AND slot_key =",
                Box::new(key.clone()),
            );
        }
        if let Some(t) = q.created_from {
            filter.push("created_ns >=", Box::new(nanos(t)));
        }
        if let Some(t) = q.created_until {
            filter.push("created_ns <", Box::new(nanos(t)));
        }
        let after = q.after.map(|id| *id.as_uuid());
        let (rows, more) = self
            .page(
                &self.inner.sql.runs_table,
                RUN_COLUMNS,
                filter,
                q.order,
                after,
                q.limit,
            )
            .await?;
        let runs = rows.iter().map(codec::run).collect::<Result<Vec<_>, _>>()?;
        Ok(Page::new(runs, more, |r| r.id))
    }

    async fn list_claimable(
        &self,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<RunId>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let client = self.client().await?;
        let sql = &self.inner.sql;
        let statement = client
            .prepare_cached(&sql.list_claimable)
            .await
            .map_err(backend)?;
        // Pages of claimable runs, oldest first, through the limits'
        // picker, until `limit` are found: runs a claim would refuse for
        // their limits are left out, so a page may yield fewer.
        let page = limit.max(64);
        let mut picker = ClaimablePicker::new();
        let mut found = Vec::with_capacity(limit.min(1_024));
        let mut after = Uuid::nil();
        loop {
            let rows = client
                .query(&statement, &[&nanos(now), &big(page)?, &after])
                .await
                .map_err(backend)?;
            let candidates = rows
                .iter()
                .map(Candidate::from_row)
                .collect::<Result<Vec<_>, _>>()?;
            let books = self.books(&client, &candidates).await?;
            for candidate in &candidates {
                let limits = candidate.limits.as_ref();
                let key = limits.map(|l| l.key.as_str()).unwrap_or_default();
                let picked = picker.pick_limits(
                    candidate.workflow_id,
                    limits,
                    now,
                    || {
                        books
                            .newest_waiting
                            .get(key)
                            .is_some_and(|newest| *newest > candidate.id)
                    },
                    |key| books.holding.get(key).copied().unwrap_or(0),
                    |workflow| books.starts.get(&workflow).cloned().unwrap_or_default(),
                );
                if picked {
                    found.push(RunId::from_uuid(candidate.id));
                    if found.len() == limit {
                        return Ok(found);
                    }
                }
            }
            match candidates.last() {
                Some(last) if rows.len() == page => after = last.id,
                _ => return Ok(found),
            }
        }
    }

    async fn claim_run(
        &self,
        id: RunId,
        owner: &str,
        now: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    ) -> Result<WorkflowRun, StoreError> {
        let request = ClaimRequest {
            id: *id.as_uuid(),
            owner: owner.to_owned(),
            expires: to_doc(&expires_at)?,
            expires_ns: nanos(expires_at),
            now_ns: nanos(now),
        };
        match self.inner.batches.claims.call(request).await {
            Some(Ok(Some(run))) => return Ok(run),
            // Refused in the batch: claimed again alone, which says why.
            Some(Ok(None)) => {}
            Some(Err(error)) => return Err(error),
            None => return Err(backend("the claim batcher stopped")),
        }
        let client = self.client().await?;
        let statement = client
            .prepare_cached(&self.inner.sql.claim_run)
            .await
            .map_err(backend)?;
        let params: [&(dyn ToSql + Sync); 5] = [
            id.as_uuid(),
            &owner,
            &to_doc(&expires_at)?,
            &nanos(expires_at),
            &nanos(now),
        ];
        if let Some(row) = client
            .query_opt(&statement, &params)
            .await
            .map_err(backend)?
        {
            return codec::run(&row);
        }
        // Say why, from a fresh read (the answer may be stale; the claim
        // was refused either way), unless it is a first claim under limits,
        // which is made apart.
        let state = client
            .prepare_cached(&self.inner.sql.lease_state)
            .await
            .map_err(backend)?;
        let row = client
            .query_opt(&state, &[id.as_uuid()])
            .await
            .map_err(backend)?
            .ok_or_else(|| StoreError::not_found("run", id))?;
        if row.try_get::<_, bool>(4).map_err(backend)? {
            drop(client);
            return self.claim_with_slot(id, owner, now, expires_at).await;
        }
        let status: String = row.try_get(0).map_err(backend)?;
        let owner: Option<String> = row.try_get(1).map_err(backend)?;
        let expires: Option<String> = row.try_get(2).map_err(backend)?;
        Err(run_conflict(
            id,
            match (owner, expires) {
                (Some(owner), Some(expires)) if matches!(status.as_str(), "queued" | "running") => {
                    format!("leased by {owner:?} until {expires}")
                }
                _ => format!("run is {status}"),
            },
        ))
    }

    async fn renew_lease(
        &self,
        id: RunId,
        epoch: u64,
        expires_at: DateTime<Utc>,
    ) -> Result<WorkflowRun, StoreError> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached(&self.inner.sql.renew_lease)
            .await
            .map_err(backend)?;
        let params: [&(dyn ToSql + Sync); 4] = [
            id.as_uuid(),
            &big(epoch)?,
            &to_doc(&expires_at)?,
            &nanos(expires_at),
        ];
        if let Some(row) = client
            .query_opt(&statement, &params)
            .await
            .map_err(backend)?
        {
            return codec::run(&row);
        }
        let state = client
            .prepare_cached(&self.inner.sql.lease_state)
            .await
            .map_err(backend)?;
        let row = client
            .query_opt(&state, &[id.as_uuid()])
            .await
            .map_err(backend)?
            .ok_or_else(|| StoreError::not_found("run", id))?;
        let status: String = row.try_get(0).map_err(backend)?;
        let owner: Option<String> = row.try_get(1).map_err(backend)?;
        let stored: i64 = row.try_get(3).map_err(backend)?;
        Err(run_conflict(
            id,
            if stored != big(epoch)? {
                format!("lease epoch is {stored}, not {epoch}")
            } else if owner.is_none() {
                "run holds no lease".to_owned()
            } else {
                format!("run is finished ({status})")
            },
        ))
    }

    async fn commit(
        &self,
        fence: Fence,
        run: Option<&WorkflowRun>,
        steps: &[StepRun],
    ) -> Result<(), StoreError> {
        // What can be checked without the database is checked first.
        rules::check_commit_request(fence, run, steps)?;
        let batch = StepBatch::new(fence.run_id, steps)?;
        // A fence naming a finished run never lets a commit through: the
        // rules say so, alone. A commit that parks the run is settled
        // alone too: it reads the stored signals and writes the due time.
        let parks = run.is_some_and(|run| run.status == RunStatus::Waiting);
        if !fence.status.is_terminal() && !parks {
            let request = CommitRequest::new(fence, run, batch)?;
            match self.inner.batches.commits.call(request).await {
                Some(Ok(true)) => return Ok(()),
                // Refused in the batch (or the batch failed before it
                // wrote): settled alone, by the contract's rules.
                Some(Ok(false)) => {}
                Some(Err(error)) => return Err(error),
                None => return Err(backend("the commit batcher stopped")),
            }
        }
        self.commit_alone(fence, run, steps).await
    }

    async fn signal_run(&self, id: RunId, signal: &Signal) -> Result<WorkflowRun, StoreError> {
        let sql = &self.inner.sql;
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(backend)?;
        // The row lock orders this signal with commits and other signals.
        let lock = tx
            .prepare_cached(&sql.lock_run_record)
            .await
            .map_err(backend)?;
        let row = tx
            .query_opt(&lock, &[id.as_uuid()])
            .await
            .map_err(backend)?
            .ok_or_else(|| StoreError::not_found("run", id))?;
        let stored = codec::run(&row)?;
        let signalled = rules::signal(&stored, signal)?;
        let update = tx.prepare_cached(&sql.signal_run).await.map_err(backend)?;
        let wake_ns = signalled
            .wake_at
            .filter(|_| signalled.status == RunStatus::Waiting)
            .map(nanos);
        tx.execute(
            &update,
            &[
                id.as_uuid(),
                &codec::signals_column(&signalled.signals)?,
                &wake_ns,
            ],
        )
        .await
        .map_err(backend)?;
        if signalled.status == RunStatus::Waiting && signalled.lease.is_none() {
            // The parked run is due now: work for any engine.
            let notify = tx.prepare_cached(&sql.notify).await.map_err(backend)?;
            tx.execute(&notify, &[&sql.channel])
                .await
                .map_err(backend)?;
        }
        tx.commit().await.map_err(backend)?;
        Ok(signalled)
    }

    async fn request_cancel(&self, id: RunId) -> Result<WorkflowRun, StoreError> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached(&self.inner.sql.request_cancel)
            .await
            .map_err(backend)?;
        let row = client
            .query_opt(&statement, &[id.as_uuid()])
            .await
            .map_err(backend)?
            .ok_or_else(|| StoreError::not_found("run", id))?;
        codec::run(&row)
    }

    async fn list_step_runs(&self, run_id: RunId) -> Result<Vec<StepRun>, StoreError> {
        self.fetch_all(&self.inner.sql.list_step_runs, &[run_id.as_uuid()])
            .await
    }
}

/// A claimable run as `list_claimable` reads it: its limits from their
/// columns, for a run that needs a slot (`rules::needs_slot`).
struct Candidate {
    id: Uuid,
    workflow_id: WorkflowId,
    limits: Option<RunLimits>,
}

impl Candidate {
    fn from_row(row: &tokio_postgres::Row) -> Result<Self, StoreError> {
        let id: Uuid = row.try_get(0).map_err(backend)?;
        let workflow_id = WorkflowId::from_uuid(row.try_get(1).map_err(backend)?);
        let epoch: i64 = row.try_get(2).map_err(backend)?;
        let cancel: bool = row.try_get(3).map_err(backend)?;
        let status: &str = row.try_get(4).map_err(backend)?;
        let slot_key: Option<String> = row.try_get(5).map_err(backend)?;
        let rate_runs: Option<i64> = row.try_get(10).map_err(backend)?;
        let needs_slot = epoch == 0
            && !cancel
            && status == "queued"
            && (slot_key.is_some() || rate_runs.is_some());
        if !needs_slot {
            return Ok(Self {
                id,
                workflow_id,
                limits: None,
            });
        }
        let max: Option<i64> = row.try_get(6).map_err(backend)?;
        let not_before: Option<i64> = row.try_get(9).map_err(backend)?;
        let per: Option<i64> = row.try_get(11).map_err(backend)?;
        let rate = match (rate_runs, per) {
            (Some(runs), Some(per)) => Some(RateLimit::new(
                u32::try_from(runs).map_err(backend)?,
                std::time::Duration::from_nanos(u64::try_from(per).unwrap_or(0)),
            )),
            _ => None,
        };
        let limits = RunLimits {
            key: slot_key.unwrap_or_else(|| workflow_id.to_string()),
            max: max.map(|m| u32::try_from(m).unwrap_or(u32::MAX)),
            policy: LimitPolicy::Queue,
            debounce: row.try_get(8).map_err(backend)?,
            not_before: not_before.map(DateTime::from_timestamp_nanos),
            rate,
            holds_slot: row.try_get(7).map_err(backend)?,
        };
        Ok(Self {
            id,
            workflow_id,
            limits: Some(limits),
        })
    }
}

/// What the picker reads of the keys and workflows of a page of candidates.
#[derive(Default)]
struct Books {
    /// Runs holding a slot, per key.
    holding: HashMap<String, usize>,
    /// The newest waiting run with no cancellation asked for, per key.
    newest_waiting: HashMap<String, Uuid>,
    /// Recorded start times, per rate-limited workflow.
    starts: HashMap<WorkflowId, Vec<DateTime<Utc>>>,
}

/// Start times as stored (nanoseconds since the Unix epoch).
fn starts_from(ns: &[i64]) -> Vec<DateTime<Utc>> {
    ns.iter()
        .copied()
        .map(DateTime::from_timestamp_nanos)
        .collect()
}

impl PostgresStore {
    /// The books of the keys and workflows that `candidates` needing a
    /// slot name: two queries, only when there are such candidates.
    async fn books(
        &self,
        client: &deadpool_postgres::Client,
        candidates: &[Candidate],
    ) -> Result<Books, StoreError> {
        let mut books = Books::default();
        let limited = candidates.iter().filter_map(|c| c.limits.as_ref());
        let keys: Vec<&str> = limited
            .clone()
            .filter_map(|l| l.slot_key())
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        let workflows: Vec<Uuid> = candidates
            .iter()
            .filter(|c| c.limits.as_ref().is_some_and(|l| l.rate.is_some()))
            .map(|c| *c.workflow_id.as_uuid())
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        let sql = &self.inner.sql;
        if !keys.is_empty() {
            let statement = client
                .prepare_cached(&sql.key_books)
                .await
                .map_err(backend)?;
            for row in client.query(&statement, &[&keys]).await.map_err(backend)? {
                let key: String = row.try_get(0).map_err(backend)?;
                let holding: i64 = row.try_get(1).map_err(backend)?;
                let newest: Option<Uuid> = row.try_get(2).map_err(backend)?;
                books
                    .holding
                    .insert(key.clone(), usize::try_from(holding).unwrap_or(0));
                if let Some(newest) = newest {
                    books.newest_waiting.insert(key, newest);
                }
            }
        }
        if !workflows.is_empty() {
            let statement = client
                .prepare_cached(&sql.rate_starts_of)
                .await
                .map_err(backend)?;
            for row in client
                .query(&statement, &[&workflows])
                .await
                .map_err(backend)?
            {
                let workflow = WorkflowId::from_uuid(row.try_get(0).map_err(backend)?);
                let starts: Vec<i64> = row.try_get(1).map_err(backend)?;
                books.starts.insert(workflow, starts_from(&starts));
            }
        }
        Ok(books)
    }

    /// A first claim under limits, in a transaction: the run's row lock,
    /// an advisory lock on its key (and one on its workflow, for a rate
    /// limit) so that the first claims of a key are decided one at a time
    /// by every process, then what `rules::check_slot` reads, the rule
    /// itself (`rules::claim_with_slot`), and the writes: the claim (with
    /// the slot it records) and the workflow's new start times.
    async fn claim_with_slot(
        &self,
        id: RunId,
        owner: &str,
        now: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    ) -> Result<WorkflowRun, StoreError> {
        let sql = &self.inner.sql;
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(backend)?;
        let lock = tx
            .prepare_cached(&sql.lock_run_record)
            .await
            .map_err(backend)?;
        let row = tx
            .query_opt(&lock, &[id.as_uuid()])
            .await
            .map_err(backend)?
            .ok_or_else(|| StoreError::not_found("run", id))?;
        let stored = codec::run(&row)?;
        let mut slot = None;
        if let Some(limits) = stored
            .limits
            .as_deref()
            .filter(|_| rules::needs_slot(&stored))
        {
            let limit_lock = tx.prepare_cached(&sql.limit_lock).await.map_err(backend)?;
            let mut state = SlotState::default();
            if let Some(key) = limits.slot_key() {
                tx.execute(&limit_lock, &[&format!("taskforge-slot:{key}")])
                    .await
                    .map_err(backend)?;
                let statement = tx.prepare_cached(&sql.slot_state).await.map_err(backend)?;
                let max = i64::from(limits.max.unwrap_or(0));
                let row = tx
                    .query_one(&statement, &[&key, id.as_uuid(), &nanos(now), &max])
                    .await
                    .map_err(backend)?;
                let holding: i64 = row.try_get(0).map_err(backend)?;
                let ahead: i64 = row.try_get(1).map_err(backend)?;
                state.holding = usize::try_from(holding).unwrap_or(0);
                state.ahead = usize::try_from(ahead).unwrap_or(0);
                state.behind = row.try_get(2).map_err(backend)?;
            }
            if limits.rate.is_some() {
                let workflow = format!("taskforge-rate:{}", stored.workflow_id);
                tx.execute(&limit_lock, &[&workflow])
                    .await
                    .map_err(backend)?;
                let statement = tx.prepare_cached(&sql.rate_starts).await.map_err(backend)?;
                if let Some(row) = tx
                    .query_opt(&statement, &[stored.workflow_id.as_uuid()])
                    .await
                    .map_err(backend)?
                {
                    let starts: Vec<i64> = row.try_get(0).map_err(backend)?;
                    state.starts = starts_from(&starts);
                }
            }
            slot = Some(state);
        }
        // A refusal rolls the transaction back as it is dropped.
        let rules::Claimed {
            run: claimed,
            starts,
        } = rules::claim_with_slot(&stored, owner, now, expires_at, slot.as_ref())?;
        let lease = lease_columns(claimed.lease.as_ref())?;
        let update = tx
            .prepare_cached(&sql.claim_with_slot)
            .await
            .map_err(backend)?;
        let held = claimed.limits.as_deref().is_some_and(|l| l.holds_slot);
        let params: [&(dyn ToSql + Sync); 8] = [
            id.as_uuid(),
            &lease.owner,
            &lease.expires,
            &lease.expires_ns,
            &big(claimed.lease_epoch)?,
            &claimed.cancel_requested,
            &held,
            &to_doc(&claimed)?,
        ];
        tx.execute(&update, &params).await.map_err(backend)?;
        if let Some(starts) = starts {
            let put = tx
                .prepare_cached(&sql.put_rate_starts)
                .await
                .map_err(backend)?;
            let starts: Vec<i64> = starts.into_iter().map(nanos).collect();
            tx.execute(&put, &[claimed.workflow_id.as_uuid(), &starts])
                .await
                .map_err(backend)?;
        }
        tx.commit().await.map_err(backend)?;
        Ok(claimed)
    }

    /// A commit on its own transaction: the row lock, then the contract's
    /// rules in Rust on what it read, then the writes. Every commit that a
    /// batch did not apply ends here, so refusals (and retries that were
    /// applied already) are decided by the rules themselves.
    async fn commit_alone(
        &self,
        fence: Fence,
        run: Option<&WorkflowRun>,
        steps: &[StepRun],
    ) -> Result<(), StoreError> {
        let id = fence.run_id;
        let sql = &self.inner.sql;
        let states: Vec<StepState> = steps.iter().map(StepState::from).collect();
        let batch = StepBatch::new(id, steps)?;

        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(backend)?;
        // The row lock, held to the end of the transaction, orders this
        // commit with claims and other commits of the run: the fence read
        // here is the one the writes below are applied under.
        let lock = tx.prepare_cached(&sql.lock_run).await.map_err(backend)?;
        let stored = tx
            .query_opt(&lock, &[id.as_uuid()])
            .await
            .map_err(backend)?
            .ok_or_else(|| StoreError::not_found("run", id))?;
        let state = run_state(&stored)?;
        if let Err(error) = rules::check_fence(fence, &state, run.map(RunState::from).as_ref()) {
            return self
                .unless_applied(&tx, error, fence, run, steps, &states)
                .await;
        }

        if !batch.is_empty() {
            let upsert = tx
                .prepare_cached(&sql.upsert_steps)
                .await
                .map_err(backend)?;
            let written = tx
                .execute(
                    &upsert,
                    &[
                        id.as_uuid(),
                        &batch.indexes,
                        &batch.attempts,
                        &batch.terminal,
                        &batch.docs,
                    ],
                )
                .await
                .map_err(backend)?;
            if usize::try_from(written).ok() != Some(batch.len()) {
                // Some attempt is stored as finished: the rule refuses the
                // commit, unless it is a retry of one applied already.
                let error =
                    StoreError::conflict("step", id, "a finished step attempt is never rewritten");
                return self
                    .unless_applied(&tx, error, fence, run, steps, &states)
                    .await;
            }
        }

        // A run parked now is due at once if a signal came that its
        // writer did not see (the signals column is the stored truth).
        let stored_signals = match run {
            Some(run) if run.status == RunStatus::Waiting => {
                let read = tx.prepare_cached(&sql.run_signals).await.map_err(backend)?;
                let row = tx
                    .query_one(&read, &[id.as_uuid()])
                    .await
                    .map_err(backend)?;
                let column: Option<&str> = row.try_get(0).map_err(backend)?;
                Some(codec::signals(column)?)
            }
            _ => None,
        };
        let signalled_meanwhile = match (run, &stored_signals) {
            (Some(run), Some(stored)) => rules::needs_signal_merge(stored, run),
            _ => false,
        };
        let merged;
        let run = match run {
            Some(run)
                if rules::needs_merge(&state, &RunState::from(run)) || signalled_meanwhile =>
            {
                let mut copy = run.clone();
                rules::merge_committed(&state, &mut copy);
                if let Some(stored) = &stored_signals {
                    rules::merge_signals(stored, &mut copy);
                }
                merged = copy;
                Some(&merged)
            }
            other => other,
        };
        let mut wake = false;
        if let Some(run) = run {
            let update = tx.prepare_cached(&sql.update_run).await.map_err(backend)?;
            let lease = lease_columns(run.lease.as_ref())?;
            let wake_ns = run
                .wake_at
                .filter(|_| run.status == RunStatus::Waiting)
                .map(nanos);
            let params: [&(dyn ToSql + Sync); 9] = [
                id.as_uuid(),
                &status_name(run.status),
                &nanos(run.created_at),
                &lease.owner,
                &lease.expires,
                &lease.expires_ns,
                &run.cancel_requested,
                &to_doc(run)?,
                &wake_ns,
            ];
            tx.execute(&update, &params).await.map_err(backend)?;
            // A run given back unfinished and unleased is work for any
            // engine (a parked one only if a signal made it due already),
            // and so is the next run of a key whose slot a run gives back
            // by finishing.
            let parked = run.status == RunStatus::Waiting && !signalled_meanwhile;
            wake = (run.lease.is_none() && !run.status.is_terminal() && !parked) || frees_slot(run);
        }
        if wake {
            let notify = tx.prepare_cached(&sql.notify).await.map_err(backend)?;
            tx.execute(&notify, &[&sql.channel])
                .await
                .map_err(backend)?;
        }
        tx.commit().await.map_err(backend)
    }
}

/// The step attempts of one commit as column arrays, one entry per
/// `(step_index, attempt)`: the last write of an attempt wins, unless an
/// earlier write of it in the same commit is terminal.
struct StepBatch {
    indexes: Vec<i64>,
    attempts: Vec<i64>,
    terminal: Vec<bool>,
    docs: Vec<String>,
}

impl StepBatch {
    fn new(run_id: RunId, steps: &[StepRun]) -> Result<Self, StoreError> {
        let mut batch = Self {
            indexes: Vec::with_capacity(steps.len()),
            attempts: Vec::with_capacity(steps.len()),
            terminal: Vec::with_capacity(steps.len()),
            docs: Vec::with_capacity(steps.len()),
        };
        let mut positions: HashMap<(u32, u32), usize> = HashMap::new();
        for step in steps {
            if step.run_id != run_id {
                return Err(StoreError::Invalid(format!(
                    "commit fenced on run {run_id} writes a step of run {}",
                    step.run_id
                )));
            }
            let key = (step.step_index, step.attempt);
            let terminal = step.status.is_terminal();
            let doc = to_doc(step)?;
            match positions.get(&key) {
                Some(&at) => {
                    if batch.terminal[at] {
                        return Err(StoreError::conflict(
                            "step",
                            format!("{run_id}/{}/{}", step.step_index, step.attempt),
                            "a finished step attempt is never rewritten",
                        ));
                    }
                    batch.terminal[at] = terminal;
                    batch.docs[at] = doc;
                }
                None => {
                    positions.insert(key, batch.indexes.len());
                    batch.indexes.push(i64::from(step.step_index));
                    batch.attempts.push(i64::from(step.attempt));
                    batch.terminal.push(terminal);
                    batch.docs.push(doc);
                }
            }
        }
        Ok(batch)
    }

    fn len(&self) -> usize {
        self.indexes.len()
    }

    fn is_empty(&self) -> bool {
        self.indexes.is_empty()
    }
}

/// A claim, as the batch statement takes it.
pub(crate) struct ClaimRequest {
    id: Uuid,
    owner: String,
    expires: String,
    expires_ns: i64,
    now_ns: i64,
}

/// What a batched claim answers: the run claimed, `None` if the batch did
/// not claim it (the store then claims it alone, which says why).
pub(crate) type ClaimAnswer = Result<Option<WorkflowRun>, StoreError>;

/// Runs a batch of claims as one statement (`taskforge_claim`): one round
/// trip, one transaction.
pub(crate) async fn run_claims(
    pool: &deadpool_postgres::Pool,
    sql: &Sql,
    _notifier: &Notifier,
    requests: Vec<ClaimRequest>,
) -> Vec<ClaimAnswer> {
    let n = requests.len();
    // A run asked for twice goes out once; the repeat is claimed alone,
    // after this batch, and finds the run leased.
    let mut seen = HashSet::with_capacity(n);
    let first: Vec<bool> = requests.iter().map(|r| seen.insert(r.id)).collect();
    let mut ids = Vec::with_capacity(n);
    let mut owners = Vec::with_capacity(n);
    let mut expires = Vec::with_capacity(n);
    let mut expires_ns = Vec::with_capacity(n);
    let mut now_ns = Vec::with_capacity(n);
    let mut positions = Vec::with_capacity(n);
    for (i, request) in requests.iter().enumerate() {
        if first[i] {
            ids.push(request.id);
            owners.push(request.owner.as_str());
            expires.push(request.expires.as_str());
            expires_ns.push(request.expires_ns);
            now_ns.push(request.now_ns);
            positions.push(i);
        }
    }
    let rows = async {
        let client = pool.get().await.map_err(|e| Failure::Lost(Box::new(e)))?;
        let statement = client
            .prepare_cached(&sql.claim_batch)
            .await
            .map_err(Failure::from)?;
        client
            .query(&statement, &[&ids, &owners, &expires, &expires_ns, &now_ns])
            .await
            .map_err(Failure::from)
    }
    .await;
    let mut answers: Vec<ClaimAnswer> = (0..n).map(|_| Ok(None)).collect();
    match rows {
        Ok(rows) => {
            for row in rows {
                let pos: Result<i64, _> = row.try_get(5);
                let at = pos
                    .ok()
                    .and_then(|p| usize::try_from(p - 1).ok())
                    .and_then(|p| positions.get(p).copied());
                if let Some(at) = at {
                    answers[at] = codec::run(&row).map(Some);
                }
            }
        }
        // Nothing was written: each is claimed alone.
        Err(Failure::Refused) => {}
        Err(Failure::Lost(error)) => {
            let message = error.to_string();
            for answer in &mut answers {
                *answer = Err(backend(message.clone()));
            }
        }
    }
    answers
}

/// A commit, as the batch statement takes it.
pub(crate) struct CommitRequest {
    id: Uuid,
    epoch: i64,
    status: &'static str,
    run: Option<RunWrite>,
    wake: bool,
    steps: StepBatch,
}

/// The run a commit writes.
struct RunWrite {
    workflow: Uuid,
    version: Uuid,
    event: Option<Uuid>,
    epoch: i64,
    status: &'static str,
    created_ns: i64,
    owner: Option<String>,
    expires: Option<String>,
    expires_ns: Option<i64>,
    cancel: bool,
    doc: String,
}

impl CommitRequest {
    fn new(fence: Fence, run: Option<&WorkflowRun>, steps: StepBatch) -> Result<Self, StoreError> {
        let write = match run {
            None => None,
            Some(run) => {
                let lease = lease_columns(run.lease.as_ref())?;
                Some(RunWrite {
                    workflow: *run.workflow_id.as_uuid(),
                    version: *run.version_id.as_uuid(),
                    event: run.event_id.map(|id| *id.as_uuid()),
                    epoch: big(run.lease_epoch)?,
                    status: status_name(run.status),
                    created_ns: nanos(run.created_at),
                    owner: lease.owner.map(str::to_owned),
                    expires: lease.expires,
                    expires_ns: lease.expires_ns,
                    cancel: run.cancel_requested,
                    doc: to_doc(run)?,
                })
            }
        };
        Ok(Self {
            id: *fence.run_id.as_uuid(),
            epoch: big(fence.epoch)?,
            status: status_name(fence.status),
            // A run given back unfinished and unleased is work for any
            // engine, and so is the next run of a key whose slot it frees.
            wake: run.is_some_and(|run| {
                (run.lease.is_none() && !run.status.is_terminal()) || frees_slot(run)
            }),
            run: write,
            steps,
        })
    }
}

/// What a batched commit answers: `true` if applied, `false` if the batch
/// did not apply it (the store then settles it alone).
pub(crate) type CommitAnswer = Result<bool, StoreError>;

/// Runs a batch of commits as one call of `taskforge_commit`: one round
/// trip, one transaction, one WAL flush; then wakes other processes'
/// engines if a commit gave a run back.
pub(crate) async fn run_commits(
    pool: &deadpool_postgres::Pool,
    sql: &Sql,
    notifier: &Notifier,
    requests: Vec<CommitRequest>,
) -> Vec<CommitAnswer> {
    let n = requests.len();
    // Two commits of one run never share a batch: the repeat is settled
    // alone, after this batch.
    let mut seen = HashSet::with_capacity(n);
    let positions: Vec<usize> = (0..n).filter(|&i| seen.insert(requests[i].id)).collect();
    let m = positions.len();
    let mut c = CommitColumns::with_capacity(m);
    for (k, &i) in positions.iter().enumerate() {
        c.push(&requests[i], i32::try_from(k + 1).unwrap_or(i32::MAX));
    }
    let applied = async {
        let client = pool.get().await.map_err(|e| Failure::Lost(Box::new(e)))?;
        let statement = client
            .prepare_cached(&sql.commit_batch)
            .await
            .map_err(Failure::from)?;
        let row = client
            .query_one(
                &statement,
                &[
                    &c.id,
                    &c.epoch,
                    &c.status,
                    &c.has_run,
                    &c.workflow,
                    &c.version,
                    &c.event,
                    &c.run_epoch,
                    &c.new_status,
                    &c.created_ns,
                    &c.owner,
                    &c.expires,
                    &c.expires_ns,
                    &c.cancel,
                    &c.doc,
                    &c.s_commit,
                    &c.s_index,
                    &c.s_attempt,
                    &c.s_terminal,
                    &c.s_doc,
                ],
            )
            .await
            .map_err(Failure::from)?;
        row.try_get::<_, Vec<Option<bool>>>(0)
            .map_err(|e| Failure::Lost(Box::new(e)))
    }
    .await;
    let mut answers: Vec<CommitAnswer> = (0..n).map(|_| Ok(false)).collect();
    match applied {
        Ok(applied) => {
            let mut wake = false;
            for (k, &i) in positions.iter().enumerate() {
                let done = applied.get(k).copied().flatten().unwrap_or(false);
                wake |= done && requests[i].wake;
                answers[i] = Ok(done);
            }
            if wake {
                notifier.wake_others();
            }
        }
        Err(Failure::Refused) => {}
        Err(Failure::Lost(error)) => {
            let message = error.to_string();
            for answer in &mut answers {
                *answer = Err(backend(message.clone()));
            }
        }
    }
    answers
}

/// The arguments of `taskforge_commit`, one array per column.
#[derive(Default)]
struct CommitColumns<'a> {
    id: Vec<Uuid>,
    epoch: Vec<i64>,
    status: Vec<&'static str>,
    has_run: Vec<bool>,
    workflow: Vec<Option<Uuid>>,
    version: Vec<Option<Uuid>>,
    event: Vec<Option<Uuid>>,
    run_epoch: Vec<Option<i64>>,
    new_status: Vec<Option<&'static str>>,
    created_ns: Vec<Option<i64>>,
    owner: Vec<Option<&'a str>>,
    expires: Vec<Option<&'a str>>,
    expires_ns: Vec<Option<i64>>,
    cancel: Vec<bool>,
    doc: Vec<Option<&'a str>>,
    s_commit: Vec<i32>,
    s_index: Vec<i64>,
    s_attempt: Vec<i64>,
    s_terminal: Vec<bool>,
    s_doc: Vec<&'a str>,
}

impl<'a> CommitColumns<'a> {
    fn with_capacity(n: usize) -> Self {
        Self {
            id: Vec::with_capacity(n),
            epoch: Vec::with_capacity(n),
            status: Vec::with_capacity(n),
            has_run: Vec::with_capacity(n),
            workflow: Vec::with_capacity(n),
            version: Vec::with_capacity(n),
            event: Vec::with_capacity(n),
            run_epoch: Vec::with_capacity(n),
            new_status: Vec::with_capacity(n),
            created_ns: Vec::with_capacity(n),
            owner: Vec::with_capacity(n),
            expires: Vec::with_capacity(n),
            expires_ns: Vec::with_capacity(n),
            cancel: Vec::with_capacity(n),
            doc: Vec::with_capacity(n),
            ..Self::default()
        }
    }

    /// Adds `request` as commit number `k` (from 1).
    fn push(&mut self, request: &'a CommitRequest, k: i32) {
        self.id.push(request.id);
        self.epoch.push(request.epoch);
        self.status.push(request.status);
        self.has_run.push(request.run.is_some());
        let run = request.run.as_ref();
        self.workflow.push(run.map(|r| r.workflow));
        self.version.push(run.map(|r| r.version));
        self.event.push(run.and_then(|r| r.event));
        self.run_epoch.push(run.map(|r| r.epoch));
        self.new_status.push(run.map(|r| r.status));
        self.created_ns.push(run.map(|r| r.created_ns));
        self.owner.push(run.and_then(|r| r.owner.as_deref()));
        self.expires.push(run.and_then(|r| r.expires.as_deref()));
        self.expires_ns.push(run.and_then(|r| r.expires_ns));
        self.cancel.push(run.is_some_and(|r| r.cancel));
        self.doc.push(run.map(|r| r.doc.as_str()));
        let steps = &request.steps;
        for j in 0..steps.len() {
            self.s_commit.push(k);
            self.s_index.push(steps.indexes[j]);
            self.s_attempt.push(steps.attempts[j]);
            self.s_terminal.push(steps.terminal[j]);
            self.s_doc.push(&steps.docs[j]);
        }
    }
}
