//! An in-memory store for Taskforge: every record lives in the process and
//! is gone when it ends.
//!
//! [`MemoryStore`] implements [`WorkflowStore`], [`EventStore`] and
//! [`RunStore`], and passes the conformance suite of `taskforge-core`. Use
//! it in tests, in examples, and in hosts whose runs need not survive a
//! restart. Clones share one store, so hand a clone to each task or engine.
//!
//! ```
//! use chrono::Utc;
//! use serde_json::json;
//! use taskforge_core::store::{RunStore, WorkflowStore};
//! use taskforge_core::{StepDefinition, Workflow, WorkflowDefinition, WorkflowRun, WorkflowVersion};
//! use taskforge_store_memory::MemoryStore;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let store = MemoryStore::new();
//! let now = Utc::now();
//!
//! let workflow = Workflow::new("deploy", now)?;
//! store.insert_workflow(&workflow).await?;
//! let definition = WorkflowDefinition::new(vec![StepDefinition::new("build", "cargo")]);
//! let version = WorkflowVersion::new(workflow.id, 1, definition, now);
//! store.insert_version(&version).await?;
//!
//! let run = WorkflowRun::new(&version, json!({"branch": "main"}), now);
//! store.insert_run(&run).await?;
//! assert_eq!(store.clone().get_run(run.id).await?, run);
//! # Ok(())
//! # }
//! ```
//!
//! # Design
//!
//! Two locks: one over workflows, versions and triggers (read-mostly), one
//! over events and runs (written together when an event starts a run). Each
//! call takes one lock once, does a few map operations and releases it; a
//! record passed in is cloned before the lock is taken, so lock hold times
//! do not grow with payload size. Secondary indexes are ordered sets of
//! `(key, id)` tuples, so listings walk only matching records: runs by
//! workflow, status, workflow and status, and event; events by workflow and
//! trigger; `list_claimable` walks the queued and running runs only.
//!
//! # Rules
//!
//! Claims, renewals, the checks of a commit (fence, pinned version,
//! finished attempts), the cancel merge, query filters and page sizes are
//! core's [`rules`](taskforge_core::store::rules), applied under the data
//! lock; this crate only keeps the records and their indexes. So are the
//! [limits](taskforge_core::concurrency): the data lock also holds, per
//! concurrency key, the unfinished runs holding a slot and those waiting,
//! and per rate-limited workflow its recent start times, so a claim reads
//! them and takes its slot in one step. Where the contract leaves a choice:
//!
//! - `insert_event` checks the dedup key before the ids: inserting the very
//!   same event twice gives `Duplicate`, not `AlreadyExists`.
//! - `insert_version` checks the id before the number, for the same reason.
//! - `list_claimable` takes `limit` as given: 0 returns nothing. Oldest
//!   first means by id, which is creation order.
//! - Listings give `next` only when another matching item exists when the
//!   page is read, so the last page always has `next: None`.
//!
//! [`WorkflowStore`]: taskforge_core::store::WorkflowStore
//! [`EventStore`]: taskforge_core::store::EventStore
//! [`RunStore`]: taskforge_core::store::RunStore

#![warn(missing_docs)]

mod catalog;
mod data;
mod logs;
mod page;
mod secrets;
mod tokens;

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use parking_lot::{Mutex, RwLock};
use taskforge_core::store::{EventInsert, EventStore, Fence, RunStore, WorkflowStore};
use taskforge_core::{
    Event, EventId, EventQuery, Page, RunId, RunQuery, Signal, StepRun, StoreError, Trigger,
    TriggerId, VersionId, Workflow, WorkflowId, WorkflowRun, WorkflowVersion,
};

use crate::catalog::Catalog;
use crate::data::Data;

/// A store that keeps everything in memory. Clones share the same records.
///
/// Safe to use from many tasks and threads at once: every method is atomic,
/// and the compare-and-set methods let exactly one of concurrent callers win.
#[derive(Clone, Default)]
pub struct MemoryStore {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    catalog: RwLock<Catalog>,
    data: Mutex<Data>,
    tokens: Mutex<tokens::Tokens>,
    secrets: Mutex<secrets::Secrets>,
    logs: Mutex<logs::Logs>,
}

impl MemoryStore {
    /// An empty store.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }
}

impl fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (workflows, versions, triggers) = self.inner.catalog.read().counts();
        let (events, runs) = self.inner.data.lock().counts();
        f.debug_struct("MemoryStore")
            .field("workflows", &workflows)
            .field("versions", &versions)
            .field("triggers", &triggers)
            .field("events", &events)
            .field("runs", &runs)
            .finish()
    }
}

#[async_trait]
impl WorkflowStore for MemoryStore {
    async fn insert_workflow(&self, workflow: &Workflow) -> Result<(), StoreError> {
        let workflow = workflow.clone();
        self.inner.catalog.write().insert_workflow(workflow)
    }

    async fn update_workflow(&self, workflow: &Workflow) -> Result<(), StoreError> {
        let workflow = workflow.clone();
        self.inner.catalog.write().update_workflow(workflow)
    }

    async fn get_workflow(&self, id: WorkflowId) -> Result<Workflow, StoreError> {
        self.inner.catalog.read().workflow(id).cloned()
    }

    async fn find_workflow(&self, name: &str) -> Result<Option<Workflow>, StoreError> {
        Ok(self.inner.catalog.read().find_workflow(name).cloned())
    }

    async fn list_workflows(&self) -> Result<Vec<Workflow>, StoreError> {
        Ok(self.inner.catalog.read().workflows().cloned().collect())
    }

    async fn insert_version(&self, version: &WorkflowVersion) -> Result<(), StoreError> {
        let version = version.clone();
        self.inner.catalog.write().insert_version(version)
    }

    async fn get_version(&self, id: VersionId) -> Result<WorkflowVersion, StoreError> {
        self.inner.catalog.read().version(id).cloned()
    }

    async fn get_version_by_number(
        &self,
        workflow_id: WorkflowId,
        number: u32,
    ) -> Result<WorkflowVersion, StoreError> {
        self.inner
            .catalog
            .read()
            .version_by_number(workflow_id, number)
            .cloned()
    }

    async fn latest_version(
        &self,
        workflow_id: WorkflowId,
    ) -> Result<Option<WorkflowVersion>, StoreError> {
        Ok(self
            .inner
            .catalog
            .read()
            .latest_version(workflow_id)
            .cloned())
    }

    async fn list_versions(
        &self,
        workflow_id: WorkflowId,
    ) -> Result<Vec<WorkflowVersion>, StoreError> {
        Ok(self
            .inner
            .catalog
            .read()
            .versions(workflow_id)
            .cloned()
            .collect())
    }

    async fn insert_trigger(&self, trigger: &Trigger) -> Result<(), StoreError> {
        let trigger = trigger.clone();
        self.inner.catalog.write().insert_trigger(trigger)
    }

    async fn update_trigger(&self, trigger: &Trigger) -> Result<(), StoreError> {
        let trigger = trigger.clone();
        self.inner.catalog.write().update_trigger(trigger)
    }

    async fn delete_trigger(&self, id: TriggerId) -> Result<(), StoreError> {
        self.inner.catalog.write().delete_trigger(id)
    }

    async fn get_trigger(&self, id: TriggerId) -> Result<Trigger, StoreError> {
        self.inner.catalog.read().trigger(id).cloned()
    }

    async fn list_triggers(
        &self,
        workflow_id: Option<WorkflowId>,
    ) -> Result<Vec<Trigger>, StoreError> {
        Ok(self.inner.catalog.read().triggers(workflow_id))
    }
}

#[async_trait]
impl EventStore for MemoryStore {
    async fn insert_event(
        &self,
        event: &Event,
        run: Option<&WorkflowRun>,
    ) -> Result<EventInsert, StoreError> {
        let event = event.clone();
        let run = run.cloned();
        self.inner.data.lock().insert_event(event, run)
    }

    async fn get_event(&self, id: EventId) -> Result<Event, StoreError> {
        self.inner.data.lock().event(id).cloned()
    }

    async fn find_event_by_dedup_key(
        &self,
        workflow_id: WorkflowId,
        dedup_key: &str,
    ) -> Result<Option<Event>, StoreError> {
        Ok(self
            .inner
            .data
            .lock()
            .event_by_dedup_key(workflow_id, dedup_key)
            .cloned())
    }

    async fn list_events(&self, query: &EventQuery) -> Result<Page<Event, EventId>, StoreError> {
        Ok(self.inner.data.lock().list_events(query))
    }
}

#[async_trait]
impl RunStore for MemoryStore {
    async fn insert_run(&self, run: &WorkflowRun) -> Result<(), StoreError> {
        let run = run.clone();
        self.inner.data.lock().insert_run(run)
    }

    async fn get_run(&self, id: RunId) -> Result<WorkflowRun, StoreError> {
        self.inner.data.lock().run(id).cloned()
    }

    async fn list_runs(&self, query: &RunQuery) -> Result<Page<WorkflowRun, RunId>, StoreError> {
        Ok(self.inner.data.lock().list_runs(query))
    }

    async fn list_claimable(
        &self,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<RunId>, StoreError> {
        Ok(self.inner.data.lock().list_claimable(now, limit))
    }

    async fn claim_run(
        &self,
        id: RunId,
        owner: &str,
        now: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    ) -> Result<WorkflowRun, StoreError> {
        self.inner
            .data
            .lock()
            .claim_run(id, owner, now, expires_at)
            .cloned()
    }

    async fn renew_lease(
        &self,
        id: RunId,
        epoch: u64,
        expires_at: DateTime<Utc>,
    ) -> Result<WorkflowRun, StoreError> {
        self.inner
            .data
            .lock()
            .renew_lease(id, epoch, expires_at)
            .cloned()
    }

    async fn commit(
        &self,
        fence: Fence,
        run: Option<&WorkflowRun>,
        steps: &[StepRun],
    ) -> Result<(), StoreError> {
        let run = run.cloned();
        let steps = steps.to_vec();
        self.inner.data.lock().commit(fence, run, steps)
    }

    async fn request_cancel(&self, id: RunId) -> Result<WorkflowRun, StoreError> {
        self.inner.data.lock().request_cancel(id).cloned()
    }

    async fn signal_run(&self, id: RunId, signal: &Signal) -> Result<WorkflowRun, StoreError> {
        self.inner.data.lock().signal_run(id, signal).cloned()
    }

    async fn list_step_runs(&self, run_id: RunId) -> Result<Vec<StepRun>, StoreError> {
        Ok(self.inner.data.lock().step_runs(run_id).to_vec())
    }
}
