//! [`RunStore`]: runs, claims, fenced commits and step attempts.

use std::collections::HashMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use taskforge_core::store::rules::{self, RunState, StepState};
use taskforge_core::store::{Fence, Page, RunQuery, RunStore, StoreError, WorkSignal};
use taskforge_core::{EventId, RunId, RunStatus, StepRun, VersionId, WorkflowId, WorkflowRun};
use tokio_postgres::types::ToSql;
use uuid::Uuid;

use crate::codec::{self, big, doc, lease_columns, nanos, status_name, to_doc};
use crate::error::backend;
use crate::events::{self, Filter};
use crate::schema::RUN_COLUMNS;
use crate::PostgresStore;

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
        let mut client = self.client().await?;
        // One statement; the transaction only gives `insert_run` the
        // shape it shares with a host's transaction.
        let tx = client.transaction().await.map_err(backend)?;
        events::insert_run(&tx, &self.inner.sql, run).await?;
        tx.commit().await.map_err(backend)
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
        let statement = client
            .prepare_cached(&self.inner.sql.list_claimable)
            .await
            .map_err(backend)?;
        let rows = client
            .query(&statement, &[&nanos(now), &big(limit)?])
            .await
            .map_err(backend)?;
        rows.iter()
            .map(|row| {
                row.try_get::<_, Uuid>(0)
                    .map(RunId::from_uuid)
                    .map_err(backend)
            })
            .collect()
    }

    async fn claim_run(
        &self,
        id: RunId,
        owner: &str,
        now: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    ) -> Result<WorkflowRun, StoreError> {
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
        // was refused either way).
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
        let id = fence.run_id;
        let sql = &self.inner.sql;
        // What can be checked without the database is checked first.
        rules::check_commit_request(fence, run, steps)?;
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

        let merged;
        let run = match run {
            Some(run) if rules::needs_merge(&state, &RunState::from(run)) => {
                let mut copy = run.clone();
                rules::merge_committed(&state, &mut copy);
                merged = copy;
                Some(&merged)
            }
            other => other,
        };
        let mut wake = false;
        if let Some(run) = run {
            let update = tx.prepare_cached(&sql.update_run).await.map_err(backend)?;
            let lease = lease_columns(run.lease.as_ref())?;
            let params: [&(dyn ToSql + Sync); 8] = [
                id.as_uuid(),
                &status_name(run.status),
                &nanos(run.created_at),
                &lease.owner,
                &lease.expires,
                &lease.expires_ns,
                &run.cancel_requested,
                &to_doc(run)?,
            ];
            tx.execute(&update, &params).await.map_err(backend)?;
            // A run given back unfinished and unleased is work for any engine.
            wake = run.lease.is_none() && !run.status.is_terminal();
        }
        if wake {
            let notify = tx.prepare_cached(&sql.notify).await.map_err(backend)?;
            tx.execute(&notify, &[&sql.channel])
                .await
                .map_err(backend)?;
        }
        tx.commit().await.map_err(backend)
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
