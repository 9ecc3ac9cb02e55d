//! The engine: the facade a host application calls, and the dispatcher that
//! claims runs and hands them to workers.
//!
//! # Guarantees
//!
//! - **Exactly one terminal state per run.** Every write of a run's
//!   progress is fenced by the lease its worker claimed, and stores refuse
//!   to rewrite a finished run, so of two workers that both believe they
//!   own a run, at most one can finish it.
//! - **At-least-once per step.** A step attempt is recorded as running
//!   before its handler is called, and its output is stored before the next
//!   step starts. A step whose worker crashed is run again as a new attempt
//!   with the same [idempotency key](crate::StepContext::idempotency_key);
//!   a step whose output was stored is never run again.
//! - **Determinism.** A run executes the version it was created with,
//!   whatever is published later.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use parking_lot::Mutex;
use serde_json::Value;
use tokio::sync::{broadcast, Notify, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::clock::{Clock, SystemClock};
use crate::error::{EngineError, StoreError};
use crate::event::{Event, EventOutcome, EventSource};
use crate::id::{RunId, VersionId, WorkflowId};
use crate::run::{RunStatus, RunTransition, StepRun, WorkflowRun};
use crate::step::StepExecutor;
use crate::store::{EventInsert, Page, RunQuery, Store};
use crate::workflow::{Workflow, WorkflowDefinition, WorkflowVersion};

/// What happened in a run, as it happens. Delivered to
/// [`Engine::subscribe`]rs; the store keeps the durable history.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum RunUpdate {
    /// A run was queued.
    RunQueued {
        /// The run.
        run_id: RunId,
        /// Its workflow.
        workflow_id: WorkflowId,
    },
    /// A worker started (or, after a crash, resumed) a run.
    RunStarted {
        /// The run.
        run_id: RunId,
        /// Whether it was resumed from an earlier worker.
        resumed: bool,
    },
    /// A step attempt started.
    StepStarted {
        /// The run.
        run_id: RunId,
        /// The step.
        step_key: String,
        /// The attempt, from 1.
        attempt: u32,
    },
    /// A step attempt succeeded.
    StepSucceeded {
        /// The run.
        run_id: RunId,
        /// The step.
        step_key: String,
        /// The attempt, from 1.
        attempt: u32,
    },
    /// A step attempt failed; `retry_at` says when the next one starts,
    /// `None` if none will.
    StepFailed {
        /// The run.
        run_id: RunId,
        /// The step.
        step_key: String,
        /// The attempt, from 1.
        attempt: u32,
        /// What went wrong.
        error: String,
        /// When the next attempt is due.
        retry_at: Option<DateTime<Utc>>,
    },
    /// A handler reported progress.
    StepProgress {
        /// The run.
        run_id: RunId,
        /// The step.
        step_key: String,
        /// What it reported.
        progress: Value,
    },
    /// A run reached a terminal status.
    RunFinished {
        /// The run.
        run_id: RunId,
        /// Its terminal status.
        status: RunStatus,
    },
}

/// Options of [`Engine::start_run_with`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[must_use]
pub struct RunOptions {
    /// Run this version number instead of the latest.
    pub version: Option<u32>,
    /// Starting twice with the same key gives the same run.
    pub idempotency_key: Option<String>,
}

/// A run with every attempt of every step.
#[derive(Debug, Clone, PartialEq)]
pub struct RunDetails {
    /// The run.
    pub run: WorkflowRun,
    /// Its step attempts, by step then attempt.
    pub steps: Vec<StepRun>,
}

/// Engine settings.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// The name this engine claims runs under; unique per engine instance.
    pub owner: String,
    /// The most runs this engine executes at once.
    pub max_concurrent_runs: usize,
    /// How long a claim lasts unless renewed. A crashed engine's runs are
    /// picked up this long after its last renewal.
    pub lease_ttl: Duration,
    /// How often the dispatcher looks for queued runs and lapsed leases
    /// that it was not told about (other engines' runs, crash recovery).
    pub poll_interval: Duration,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            owner: format!("engine-{}", uuid::Uuid::now_v7()),
            max_concurrent_runs: 256,
            lease_ttl: Duration::from_secs(30),
            poll_interval: Duration::from_secs(1),
        }
    }
}

/// Builds an [`Engine`].
#[must_use]
pub struct EngineBuilder<S, X> {
    store: S,
    executor: X,
    config: EngineConfig,
    clock: Arc<dyn Clock>,
}

impl<S: fmt::Debug, X: fmt::Debug> fmt::Debug for EngineBuilder<S, X> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EngineBuilder")
            .field("store", &self.store)
            .field("executor", &self.executor)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl<S: Store, X: StepExecutor> EngineBuilder<S, X> {
    /// The most runs executed at once (default 256).
    pub fn max_concurrent_runs(mut self, n: usize) -> Self {
        self.config.max_concurrent_runs = n.max(1);
        self
    }

    /// How long a claim lasts unless renewed (default 30 s).
    pub fn lease_ttl(mut self, ttl: Duration) -> Self {
        self.config.lease_ttl = ttl.max(Duration::from_millis(10));
        self
    }

    /// How often to look for work nobody announced (default 1 s).
    pub fn poll_interval(mut self, interval: Duration) -> Self {
        self.config.poll_interval = interval.max(Duration::from_millis(1));
        self
    }

    /// The name runs are claimed under (default: a fresh unique one).
    pub fn owner(mut self, owner: impl Into<String>) -> Self {
        self.config.owner = owner.into();
        self
    }

    /// The clock for timestamps and leases (default: the system clock).
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// The engine. Call [`Engine::start`] to begin executing runs.
    pub fn build(self) -> Engine<S, X> {
        let (updates, _) = broadcast::channel(4096);
        let inner = Arc::new(Inner {
            permits: Arc::new(Semaphore::new(self.config.max_concurrent_runs)),
            store: self.store,
            executor: self.executor,
            config: self.config,
            clock: self.clock,
            updates,
            wake: Notify::new(),
            local: Mutex::new(HashMap::new()),
            versions: Mutex::new(HashMap::new()),
            stop_claiming: CancellationToken::new(),
            kill: CancellationToken::new(),
            tracker: TaskTracker::new(),
            started: std::sync::atomic::AtomicBool::new(false),
            webhooks: crate::ingest::WebhookIndex::default(),
        });
        Engine {
            handle: Arc::new(Handle { inner }),
        }
    }
}

pub(crate) struct Inner<S, X> {
    pub(crate) store: S,
    pub(crate) executor: X,
    pub(crate) config: EngineConfig,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) updates: broadcast::Sender<RunUpdate>,
    pub(crate) permits: Arc<Semaphore>,
    /// Wakes the dispatcher early: a run was queued or a slot freed up.
    pub(crate) wake: Notify,
    /// Runs executing on this engine, with the token that cancels them.
    pub(crate) local: Mutex<HashMap<RunId, CancellationToken>>,
    /// Versions are immutable, so caching them is always correct.
    pub(crate) versions: Mutex<HashMap<VersionId, Arc<WorkflowVersion>>>,
    /// Set by shutdown: claim nothing new.
    pub(crate) stop_claiming: CancellationToken,
    /// Set when the last handle is dropped or on shutdown's deadline: every
    /// task stops at its next await, writing nothing more, as in a crash.
    pub(crate) kill: CancellationToken,
    pub(crate) tracker: TaskTracker,
    pub(crate) started: std::sync::atomic::AtomicBool,
    pub(crate) webhooks: crate::ingest::WebhookIndex,
}

impl<S, X> Inner<S, X> {
    pub(crate) fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    pub(crate) fn emit(&self, update: impl FnOnce() -> RunUpdate) {
        // Building an update costs allocations; skip it when nobody listens.
        if self.updates.receiver_count() > 0 {
            let _ = self.updates.send(update());
        }
    }

    pub(crate) fn lease_until(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        now + TimeDelta::from_std(self.config.lease_ttl).unwrap_or(TimeDelta::MAX)
    }
}

struct Handle<S, X> {
    inner: Arc<Inner<S, X>>,
}

impl<S, X> Drop for Handle<S, X> {
    fn drop(&mut self) {
        // Background tasks hold `Inner`, not the handle: dropping the last
        // handle stops them as a crash would, leaving runs to recovery.
        self.inner.kill.cancel();
    }
}

/// An [`Engine`] handle for background tasks, which must not keep the
/// engine alive once its user dropped it.
pub(crate) struct WeakEngine<S, X>(std::sync::Weak<Handle<S, X>>);

impl<S, X> WeakEngine<S, X> {
    pub(crate) fn upgrade(&self) -> Option<Engine<S, X>> {
        self.0.upgrade().map(|handle| Engine { handle })
    }
}

/// The workflow engine: a cheap handle, clone it freely. Dropping the last
/// clone stops every run it executes at its next await point, as a crash
/// would; another engine on the same store picks them up once their leases
/// lapse. Use [`Engine::shutdown`] to stop gracefully.
pub struct Engine<S, X> {
    handle: Arc<Handle<S, X>>,
}

impl<S, X> Clone for Engine<S, X> {
    fn clone(&self) -> Self {
        Self {
            handle: Arc::clone(&self.handle),
        }
    }
}

impl<S, X> fmt::Debug for Engine<S, X> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Engine")
            .field("config", &self.handle.inner.config)
            .finish_non_exhaustive()
    }
}

impl<S: Store, X: StepExecutor> Engine<S, X> {
    /// Starts building an engine over `store` that runs steps with `executor`.
    pub fn builder(store: S, executor: X) -> EngineBuilder<S, X> {
        EngineBuilder {
            store,
            executor,
            config: EngineConfig::default(),
            clock: Arc::new(SystemClock),
        }
    }

    /// A handle that does not keep the engine alive.
    pub(crate) fn downgrade(&self) -> WeakEngine<S, X> {
        WeakEngine(Arc::downgrade(&self.handle))
    }

    pub(crate) fn inner(&self) -> &Arc<Inner<S, X>> {
        &self.handle.inner
    }

    /// The store.
    pub fn store(&self) -> &S {
        &self.inner().store
    }

    /// The settings.
    pub fn config(&self) -> &EngineConfig {
        &self.inner().config
    }

    /// Begins executing runs: recovers runs whose workers were lost, then
    /// claims queued runs as they come. Must be called within a Tokio
    /// runtime; calling it again does nothing.
    pub fn start(&self) {
        use std::sync::atomic::Ordering;
        if self.inner().started.swap(true, Ordering::SeqCst) {
            return;
        }
        let inner = Arc::clone(self.inner());
        let span = tracing::info_span!("dispatcher", owner = %inner.config.owner);
        self.inner()
            .tracker
            .spawn(crate::worker::dispatch(Arc::clone(&inner)).instrument(span));
        let span = tracing::info_span!("cron", owner = %inner.config.owner);
        self.inner()
            .tracker
            .spawn(crate::scheduler::cron_loop(inner, self.downgrade()).instrument(span));
    }

    /// Stops claiming runs, lets running ones finish for up to `grace`,
    /// then stops the rest where they are, leaving them to recovery.
    pub async fn shutdown(&self, grace: Duration) {
        let inner = self.inner();
        inner.stop_claiming.cancel();
        inner.tracker.close();
        if tokio::time::timeout(grace, inner.tracker.wait())
            .await
            .is_err()
        {
            inner.kill.cancel();
            inner.tracker.wait().await;
        }
    }

    /// A live stream of what happens in this engine's runs. A slow
    /// subscriber may miss updates (`RecvError::Lagged`); the store has
    /// the full history.
    pub fn subscribe(&self) -> broadcast::Receiver<RunUpdate> {
        self.inner().updates.subscribe()
    }

    /// Creates an active workflow named `name`.
    pub async fn create_workflow(&self, name: &str) -> Result<Workflow, EngineError> {
        let workflow =
            Workflow::new(name, self.inner().now()).map_err(|e| EngineError::InvalidName {
                name: e.name,
                reason: e.reason,
            })?;
        self.store().insert_workflow(&workflow).await?;
        Ok(workflow)
    }

    /// The workflow named `name`, created if it does not exist yet.
    pub async fn ensure_workflow(&self, name: &str) -> Result<Workflow, EngineError> {
        if let Some(workflow) = self.store().find_workflow(name).await? {
            return Ok(workflow);
        }
        match self.create_workflow(name).await {
            Err(EngineError::Store(StoreError::AlreadyExists { .. })) => self
                .store()
                .find_workflow(name)
                .await?
                .ok_or_else(|| StoreError::not_found("workflow", name).into()),
            other => other,
        }
    }

    /// The workflow with this id.
    pub async fn workflow(&self, id: WorkflowId) -> Result<Workflow, EngineError> {
        Ok(self.store().get_workflow(id).await?)
    }

    /// Makes a workflow take new runs, or refuse them. Runs in flight finish.
    pub async fn set_workflow_active(
        &self,
        id: WorkflowId,
        active: bool,
    ) -> Result<Workflow, EngineError> {
        let mut workflow = self.store().get_workflow(id).await?;
        workflow.active = active;
        workflow.updated_at = self.inner().now();
        self.store().update_workflow(&workflow).await?;
        Ok(workflow)
    }

    /// Publishes `definition` as the next version of a workflow, after
    /// validating it and checking that every handler it names is
    /// registered. Publishing a definition equal to the latest version's
    /// returns that version instead of a copy.
    pub async fn publish(
        &self,
        workflow_id: WorkflowId,
        definition: WorkflowDefinition,
    ) -> Result<WorkflowVersion, EngineError> {
        let executor = &self.inner().executor;
        definition.validate_with(|name| executor.has_handler(name))?;
        let hash = definition.content_hash();
        loop {
            let latest = self.store().latest_version(workflow_id).await?;
            if let Some(latest) = latest.as_ref().filter(|v| v.content_hash == hash) {
                return Ok(latest.clone());
            }
            let number = latest.map_or(1, |v| v.number + 1);
            let version =
                WorkflowVersion::new(workflow_id, number, definition.clone(), self.inner().now());
            match self.store().insert_version(&version).await {
                Ok(()) => return Ok(version),
                // Another publisher took this number: read again and retry.
                Err(StoreError::Conflict { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// The workflow's latest version; `NoVersion` if it has none.
    pub(crate) async fn latest_version_of(
        &self,
        workflow: &Workflow,
    ) -> Result<WorkflowVersion, EngineError> {
        self.store()
            .latest_version(workflow.id)
            .await?
            .ok_or_else(|| EngineError::NoVersion(workflow.name.clone()))
    }

    /// Every version of a workflow, by number.
    pub async fn versions(
        &self,
        workflow_id: WorkflowId,
    ) -> Result<Vec<WorkflowVersion>, EngineError> {
        Ok(self.store().list_versions(workflow_id).await?)
    }

    /// Starts a run of the workflow's latest version with `input`.
    pub async fn start_run(
        &self,
        workflow_id: WorkflowId,
        input: Value,
    ) -> Result<WorkflowRun, EngineError> {
        self.start_run_with(workflow_id, input, RunOptions::default())
            .await
    }

    /// Starts a run with options: a chosen version, an idempotency key.
    /// With a key, the request is recorded as a manual [`Event`]; starting
    /// again with the same key returns the first run.
    pub async fn start_run_with(
        &self,
        workflow_id: WorkflowId,
        input: Value,
        options: RunOptions,
    ) -> Result<WorkflowRun, EngineError> {
        let workflow = self.store().get_workflow(workflow_id).await?;
        if !workflow.active {
            return Err(EngineError::WorkflowInactive(workflow.name));
        }
        let version = match options.version {
            Some(number) => {
                self.store()
                    .get_version_by_number(workflow_id, number)
                    .await?
            }
            None => self.latest_version_of(&workflow).await?,
        };
        let now = self.inner().now();
        let mut run = WorkflowRun::new(&version, input, now);
        match options.idempotency_key {
            None => self.store().insert_run(&run).await?,
            Some(key) => {
                let event = Event {
                    id: crate::id::EventId::new(),
                    workflow_id,
                    trigger_id: None,
                    source: EventSource::Manual,
                    received_at: now,
                    dedup_key: Some(format!("manual:{key}")),
                    payload: Arc::clone(&run.input),
                    metadata: Default::default(),
                    outcome: EventOutcome::RunStarted { run_id: run.id },
                };
                run.event_id = Some(event.id);
                if let EventInsert::Duplicate(original) =
                    self.store().insert_event(&event, Some(&run)).await?
                {
                    let run_id = original.outcome.run_id().ok_or_else(|| {
                        EngineError::InvalidInput(format!(
                            "idempotency key {key:?} was used by an event that started no run"
                        ))
                    })?;
                    return Ok(self.store().get_run(run_id).await?);
                }
            }
        }
        self.enqueued(&run);
        Ok(run)
    }

    /// Announces a freshly stored run: subscribers hear of it, and the
    /// dispatcher claims it without waiting for its next poll.
    pub(crate) fn enqueued(&self, run: &WorkflowRun) {
        let inner = self.inner();
        inner.emit(|| RunUpdate::RunQueued {
            run_id: run.id,
            workflow_id: run.workflow_id,
        });
        // Take it straight away when a slot is free: no dispatcher round
        // trip, and no store query to find it again.
        let started = inner.started.load(std::sync::atomic::Ordering::Acquire);
        if !started || inner.stop_claiming.is_cancelled() {
            return;
        }
        match crate::worker::try_spawn(inner, run.id) {
            crate::worker::Spawn::NoCapacity => inner.wake.notify_one(),
            crate::worker::Spawn::Spawned | crate::worker::Spawn::AlreadyLocal => {}
        }
    }

    /// A run with every step attempt.
    pub async fn run(&self, id: RunId) -> Result<RunDetails, EngineError> {
        let run = self.store().get_run(id).await?;
        let steps = self.store().list_step_runs(id).await?;
        Ok(RunDetails { run, steps })
    }

    /// A page of runs.
    pub async fn list_runs(
        &self,
        query: &RunQuery,
    ) -> Result<Page<WorkflowRun, RunId>, EngineError> {
        Ok(self.store().list_runs(query).await?)
    }

    /// Cancels a queued or running run. A queued run is cancelled at once;
    /// a running one stops at its next await point (its handler sees
    /// [`StepContext::cancelled`](crate::StepContext::cancelled)), and no
    /// later step starts. Returns the run as it is after the request.
    pub async fn cancel_run(&self, id: RunId) -> Result<WorkflowRun, EngineError> {
        let inner = self.inner();
        let run = inner.store.request_cancel(id).await?;
        if run.status.is_terminal() {
            return Err(EngineError::RunFinished {
                run: id,
                status: run.status,
            });
        }
        if let Some(token) = inner.local.lock().get(&id) {
            token.cancel();
            return Ok(run);
        }
        if run.status == RunStatus::Queued {
            // Claim it to cancel it now; if a worker beat us to the claim,
            // it sees the flag before running anything.
            let now = inner.now();
            if let Ok(mut claimed) = inner
                .store
                .claim_run(id, &inner.config.owner, now, inner.lease_until(now))
                .await
            {
                let fence = claimed.fence();
                claimed.transition(RunTransition::Cancel, now)?;
                claimed.error = Some(crate::run::RunError {
                    message: "cancelled before it started".into(),
                    step: None,
                    detail: None,
                });
                inner.store.commit(fence, Some(&claimed), &[]).await?;
                inner.emit(|| RunUpdate::RunFinished {
                    run_id: id,
                    status: RunStatus::Cancelled,
                });
                return Ok(claimed);
            }
        }
        Ok(inner.store.get_run(id).await?)
    }

    /// Waits until a run reaches a terminal status and returns it. Works for
    /// runs executed by any engine on the store.
    pub async fn wait_for_run(&self, id: RunId) -> Result<WorkflowRun, EngineError> {
        let mut updates = self.subscribe();
        let mut poll = tokio::time::interval(Duration::from_millis(250));
        loop {
            let run = self.store().get_run(id).await?;
            if run.status.is_terminal() {
                return Ok(run);
            }
            // Wait for this run's finish, or poll: other engines' runs send
            // no updates here, and a lagging receiver may miss one.
            loop {
                tokio::select! {
                    update = updates.recv() => match update {
                        Ok(RunUpdate::RunFinished { run_id, .. }) if run_id == id => break,
                        Ok(_) => continue,
                        Err(_) => break,
                    },
                    _ = poll.tick() => break,
                }
            }
        }
    }
}
