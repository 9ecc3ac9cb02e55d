//! The runtime. [`Engine`] is the facade a host application calls; below it,
//! imports run one way:
//!
//! - `cron` (the cron loop) and `intake` (webhook deliveries) turn what
//!   happens outside into admissions;
//! - `admit` is the one way into the engine: it stores an event and its run
//!   atomically, applies the dedup window and wakes the dispatcher;
//! - `cancel` cancels a run from any engine;
//! - `dispatch` claims runs and spawns a `worker` task for each;
//! - `shared` is the state every task holds (`Arc<Shared>`, never the
//!   engine itself), and `update` the live stream they feed.
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

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::sync::broadcast;
use tracing::Instrument;

use crate::artifact::{ArtifactLimits, ArtifactStore};
use crate::clock::{Clock, SystemClock};
use crate::error::{EngineError, StoreError};
use crate::event::{Event, EventOutcome, EventSource};
use crate::id::{EventId, RunId, TriggerId, WorkflowId};
use crate::run::{StepRun, WorkflowRun};
use crate::secret::SecretVault;
use crate::step::{ArtifactAccess, LogLine, StepExecutor};
use crate::store::{EventQuery, LogQuery, Page, RunQuery, RunStoreExt, Store};
use crate::trigger::auth::SignatureScheme;
use crate::trigger::request::WebhookRequest;
use crate::trigger::{InvalidTrigger, Trigger, TriggerKind, WebhookConfig};
use crate::workflow::{InvalidDefinition, Workflow, WorkflowDefinition, WorkflowVersion};
use chrono::{DateTime, Utc};

mod admit;
mod artifacts;
mod cancel;
mod config;
mod credentials;
pub(crate) mod cron;
mod delivery;
mod dispatch;
mod intake;
mod limits;
mod logs;
mod resume;
mod secrets;
mod shared;
mod signal;
pub(crate) mod telemetry;
mod update;
mod worker;

use self::admit::{Admission, Admitted};
use self::cron::CronFiring;
use self::shared::Shared;

pub use self::config::{
    EngineConfig, ReplayOptions, ReplayVersion, RunOptions, DEFAULT_PARK_AFTER,
    DEFAULT_STEP_TIMEOUT,
};
pub use self::delivery::Delivery;
pub use self::update::RunUpdate;

/// The metadata of a manual event: who asked, if known.
fn requester_metadata(who: Option<&str>) -> std::collections::BTreeMap<String, String> {
    who.map(|who| ("requested_by".to_owned(), who.chars().take(200).collect()))
        .into_iter()
        .collect()
}

/// A run with every attempt of every step.
#[derive(Debug, Clone, PartialEq)]
pub struct RunDetails {
    /// The run.
    pub run: WorkflowRun,
    /// Its step attempts, by step then attempt.
    pub steps: Vec<StepRun>,
}

/// Builds an [`Engine`]; start with [`Engine::builder`].
#[must_use]
pub struct EngineBuilder<S, X> {
    store: S,
    executor: X,
    config: EngineConfig,
    clock: Arc<dyn Clock>,
    /// The secret vault, once a master key is given.
    vault: Option<SecretVault<S>>,
    /// Where steps keep artifacts.
    artifacts: Option<Arc<dyn ArtifactStore>>,
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

    /// The timeout of step attempts whose definition sets none (default
    /// one hour; `None`: unbounded).
    pub fn default_step_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.config.default_step_timeout = timeout;
        self
    }

    /// How often a running run's owner checks for a cancellation asked for
    /// by another engine (default 1 s): the bound on how long such a cancel
    /// takes to stop the step.
    pub fn cancel_check_interval(mut self, interval: Duration) -> Self {
        self.config.cancel_check_interval = interval.max(Duration::from_millis(10));
        self
    }

    /// The caps of each step attempt's log: lines (default 10,000) and
    /// bytes of messages (default 1 MiB). Past either, lines are dropped
    /// and one marker line at the end says how many.
    pub fn log_limits(mut self, max_lines: u32, max_bytes: usize) -> Self {
        self.config.max_log_lines = max_lines;
        self.config.max_log_bytes = max_bytes;
        self
    }

    /// The least level of `tracing` events a step's log captures (default
    /// `Info`).
    pub fn log_capture_level(mut self, level: crate::LogLevel) -> Self {
        self.config.log_capture_level = level;
        self
    }

    /// Where steps keep artifacts
    /// ([`StepContext::put_artifact`](crate::StepContext::put_artifact)):
    /// [`FsArtifactStore`](crate::artifact::FsArtifactStore) on a local
    /// directory, `taskforge-artifacts-object-store` for S3, GCS or Azure.
    /// Without one, steps that store artifacts fail.
    ///
    /// ```
    /// use taskforge_core::artifact::FsArtifactStore;
    /// use taskforge_core::{Engine, StepRegistry};
    /// use taskforge_store_memory::MemoryStore;
    ///
    /// # fn main() -> std::io::Result<()> {
    /// # let dir = tempfile::tempdir()?;
    /// let artifacts = FsArtifactStore::open(dir.path().join("artifacts"))?;
    /// let engine = Engine::builder(MemoryStore::new(), StepRegistry::new())
    ///     .artifacts(artifacts)
    ///     .build();
    /// # drop(engine);
    /// # Ok(())
    /// # }
    /// ```
    pub fn artifacts(mut self, store: impl ArtifactStore) -> Self {
        self.artifacts = Some(Arc::new(store));
        self
    }

    /// The size limits of artifacts: per artifact and per run (default
    /// 64 MiB and 256 MiB).
    pub fn artifact_limits(mut self, limits: ArtifactLimits) -> Self {
        self.config.artifact_limits = limits;
        self
    }

    /// How far off a run's next wait must be for its worker to park it
    /// rather than sleep (default 1 s; see [`EngineConfig::park_after`]).
    /// Zero parks every wait; tests with a
    /// [`ManualClock`](crate::clock::ManualClock) use it, since a parked
    /// run wakes by the engine's clock.
    pub fn park_after(mut self, threshold: Duration) -> Self {
        self.config.park_after = threshold;
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
        let mut shared = Shared::new(self.store, self.executor, self.config, self.clock);
        shared.vault = self.vault;
        shared.artifacts = self.artifacts.map(|store| {
            Arc::new(ArtifactAccess {
                store,
                limits: shared.config.artifact_limits,
                clock: Arc::clone(&shared.clock),
            })
        });
        Engine {
            handle: Arc::new(Handle {
                shared: Arc::new(shared),
            }),
        }
    }
}

/// What engine clones share; dropping the last one stops the engine.
struct Handle<S, X> {
    shared: Arc<Shared<S, X>>,
}

impl<S, X> Drop for Handle<S, X> {
    fn drop(&mut self) {
        // Background tasks hold `Shared`, not the handle: dropping the last
        // handle stops them as a crash would, leaving runs to recovery.
        self.shared.kill.cancel();
    }
}

/// The workflow engine: a cheap handle, clone it freely. Dropping the last
/// clone stops every run it executes at its next await point, as a crash
/// would; another engine on the same store picks them up once their leases
/// lapse. Use [`Engine::shutdown`] to stop gracefully.
///
/// ```
/// use serde_json::{json, Value};
/// use taskforge_core::{Engine, StepContext, StepDefinition, StepError, StepRegistry, WorkflowDefinition};
/// use taskforge_store_memory::MemoryStore;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let mut registry = StepRegistry::new();
/// registry.step("greet", |_ctx: StepContext, input: Value| async move {
///     Ok::<_, StepError>(json!({ "greeting": format!("hello, {}", input["name"].as_str().unwrap_or("you")) }))
/// })?;
/// let engine = Engine::builder(MemoryStore::new(), registry).build();
/// engine.start();
///
/// let workflow = engine.ensure_workflow("greeter").await?;
/// let definition = WorkflowDefinition::new(vec![StepDefinition::new("greet", "greet")]);
/// engine.publish(workflow.id, definition).await?;
/// let run = engine.start_run(workflow.id, json!({ "name": "world" })).await?;
/// let finished = engine.wait_for_run(run.id).await?;
/// assert_eq!(finished.output, Some(json!({ "greeting": "hello, world" })));
/// # Ok(())
/// # }
/// ```
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
            .field("config", &self.shared().config)
            .finish_non_exhaustive()
    }
}

impl<S, X> Engine<S, X> {
    fn shared(&self) -> &Arc<Shared<S, X>> {
        &self.handle.shared
    }
}

impl<S: Store, X: StepExecutor> Engine<S, X> {
    /// Starts building an engine over `store` that runs steps with
    /// `executor` (usually a [`StepRegistry`](crate::StepRegistry)). The
    /// store may be a concrete backend or an `Arc<dyn Store>` chosen at run
    /// time.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use std::time::Duration;
    /// use taskforge_core::{Engine, Store, StepRegistry};
    /// use taskforge_store_memory::MemoryStore;
    ///
    /// let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    /// let engine = Engine::builder(store, StepRegistry::new())
    ///     .max_concurrent_runs(64)
    ///     .lease_ttl(Duration::from_secs(10))
    ///     .owner("worker-1")
    ///     .build();
    /// assert_eq!(engine.config().owner, "worker-1");
    /// ```
    pub fn builder(store: S, executor: X) -> EngineBuilder<S, X> {
        EngineBuilder {
            store,
            executor,
            config: EngineConfig::default(),
            clock: Arc::new(SystemClock),
            vault: None,
            artifacts: None,
        }
    }

    /// The store.
    pub fn store(&self) -> &S {
        &self.shared().store
    }

    /// The settings.
    pub fn config(&self) -> &EngineConfig {
        &self.shared().config
    }

    /// Begins executing runs: recovers runs whose workers were lost, then
    /// claims queued runs as they come, and fires cron triggers. Must be
    /// called within a Tokio runtime; calling it again does nothing.
    pub fn start(&self) {
        let shared = self.shared();
        if !shared.mark_started() {
            return;
        }
        let span = tracing::info_span!("dispatcher", owner = %shared.config.owner);
        shared
            .tracker
            .spawn(dispatch::dispatch(Arc::clone(shared)).instrument(span));
        let span = tracing::info_span!("cron", owner = %shared.config.owner);
        shared
            .tracker
            .spawn(cron::cron_loop(Arc::clone(shared)).instrument(span));
    }

    /// Stops claiming runs, lets running ones finish for up to `grace`,
    /// then stops the rest where they are, leaving them to recovery.
    pub async fn shutdown(&self, grace: Duration) {
        let shared = self.shared();
        shared.stop_claiming.cancel();
        shared.tracker.close();
        if tokio::time::timeout(grace, shared.tracker.wait())
            .await
            .is_err()
        {
            shared.kill.cancel();
            shared.tracker.wait().await;
        }
    }

    /// A live stream of what happens in this engine's runs. A slow
    /// subscriber may miss updates (`RecvError::Lagged`); the store has
    /// the full history.
    pub fn subscribe(&self) -> broadcast::Receiver<RunUpdate> {
        self.shared().updates.subscribe()
    }

    /// Creates an active workflow named `name`.
    pub async fn create_workflow(&self, name: &str) -> Result<Workflow, EngineError> {
        let workflow = Workflow::new(name, self.shared().now())?;
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
        workflow.updated_at = self.shared().now();
        self.store().update_workflow(&workflow).await?;
        Ok(workflow)
    }

    /// Publishes `definition` as the next version of a workflow, after
    /// validating it and checking that every handler it names is
    /// registered. Publishing a definition equal to the latest version's
    /// returns that version instead of a copy.
    ///
    /// ```
    /// use std::time::Duration;
    /// use serde_json::Value;
    /// use taskforge_core::{Engine, RetryPolicy, StepContext, StepDefinition, StepError, StepRegistry, WorkflowDefinition};
    /// use taskforge_store_memory::MemoryStore;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let mut registry = StepRegistry::new();
    /// registry.step("build", |_ctx: StepContext, input: Value| async move { Ok::<_, StepError>(input) })?;
    /// let engine = Engine::builder(MemoryStore::new(), registry).build();
    /// let workflow = engine.ensure_workflow("deploy").await?;
    ///
    /// let v1 = engine
    ///     .publish(workflow.id, WorkflowDefinition::new(vec![
    ///         StepDefinition::new("build", "build")
    ///             .retry(RetryPolicy::fixed(3, Duration::from_secs(1))),
    ///     ]))
    ///     .await?;
    /// assert_eq!(v1.number, 1);
    ///
    /// // A step naming a handler nobody registered is refused at publish time.
    /// let unknown = WorkflowDefinition::new(vec![StepDefinition::new("ship", "ship")]);
    /// assert!(engine.publish(workflow.id, unknown).await.is_err());
    /// # Ok(())
    /// # }
    /// ```
    pub async fn publish(
        &self,
        workflow_id: WorkflowId,
        definition: WorkflowDefinition,
    ) -> Result<WorkflowVersion, EngineError> {
        let executor = &self.shared().executor;
        let mut problems = match definition.validate_with(|name| executor.has_handler(name)) {
            Ok(()) => Vec::new(),
            Err(invalid) => invalid.problems,
        };
        problems.extend(secrets::secret_problems(self.shared(), &definition).await?);
        if !problems.is_empty() {
            return Err(InvalidDefinition { problems }.into());
        }
        let hash = definition.content_hash();
        loop {
            let latest = self.store().latest_version(workflow_id).await?;
            if let Some(latest) = latest.as_ref().filter(|v| v.content_hash == hash) {
                return Ok(latest.clone());
            }
            let number = latest.map_or(1, |v| v.number + 1);
            let version =
                WorkflowVersion::new(workflow_id, number, definition.clone(), self.shared().now());
            match self.store().insert_version(&version).await {
                Ok(()) => return Ok(version),
                // Another publisher took this number: read again and retry.
                Err(StoreError::Conflict { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Every version of a workflow, by number.
    pub async fn versions(
        &self,
        workflow_id: WorkflowId,
    ) -> Result<Vec<WorkflowVersion>, EngineError> {
        Ok(self.store().list_versions(workflow_id).await?)
    }

    /// Starts a run of the workflow's latest version with `input`.
    ///
    /// ```
    /// use serde_json::{json, Value};
    /// use taskforge_core::{Engine, RunStatus, StepContext, StepDefinition, StepError, StepRegistry, WorkflowDefinition};
    /// use taskforge_store_memory::MemoryStore;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let mut registry = StepRegistry::new();
    /// registry.step("echo", |_ctx: StepContext, input: Value| async move { Ok::<_, StepError>(input) })?;
    /// let engine = Engine::builder(MemoryStore::new(), registry).build();
    /// let workflow = engine.ensure_workflow("echo").await?;
    /// engine.publish(workflow.id, WorkflowDefinition::new(vec![StepDefinition::new("echo", "echo")])).await?;
    ///
    /// // Queued until the engine is started (here, or by any engine on the store).
    /// let run = engine.start_run(workflow.id, json!({ "n": 1 })).await?;
    /// assert_eq!(run.status, RunStatus::Queued);
    /// engine.start();
    /// assert_eq!(engine.wait_for_run(run.id).await?.output, Some(json!({ "n": 1 })));
    /// # Ok(())
    /// # }
    /// ```
    pub async fn start_run(
        &self,
        workflow_id: WorkflowId,
        input: Value,
    ) -> Result<WorkflowRun, EngineError> {
        self.start_run_with(workflow_id, input, RunOptions::default())
            .await
    }

    /// Starts a run with options: a chosen version, an idempotency key.
    /// The request is recorded as a manual [`Event`] stored with the run;
    /// with a key, starting again with the same key returns the first run.
    /// Under the version's [concurrency limit](crate::concurrency), a full
    /// key's policy may refuse the run ([`EngineError::Limited`], the
    /// request recorded with the outcome [`EventOutcome::Limited`]) or
    /// return it cancelled.
    pub async fn start_run_with(
        &self,
        workflow_id: WorkflowId,
        input: Value,
        options: RunOptions,
    ) -> Result<WorkflowRun, EngineError> {
        let shared = self.shared();
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
            None => admit::latest_version(shared, &workflow).await?,
        };
        let now = shared.now();
        let mut run = WorkflowRun::new(&version, input, now);
        limits::attach(&mut run, &version, None, now);
        // Every run traces to an event: a manual start is one too, and
        // with an idempotency key it is deduplicated by it.
        let event = Event {
            id: EventId::new(),
            workflow_id,
            trigger_id: None,
            source: EventSource::Manual,
            received_at: now,
            dedup_key: options
                .idempotency_key
                .as_ref()
                .map(|key| format!("manual:{key}")),
            payload: Arc::clone(&run.input),
            metadata: telemetry::with_trace_parent(
                requester_metadata(options.requested_by.as_deref()),
                options.trace_parent.as_deref(),
            ),
            outcome: EventOutcome::RunStarted { run_id: run.id },
        };
        run.event_id = Some(event.id);
        let admission = Admission {
            event,
            run: Some(run),
            dedup_window: None,
        };
        match admit::admit(shared, admission).await? {
            Admitted::Stored { run: Some(run), .. } => Ok(run),
            Admitted::Stored { run: None, event } => Err(limited(event)),
            Admitted::Duplicate(original) => {
                let key = options.idempotency_key.unwrap_or_default();
                admit::original_run(shared, &original, &key).await
            }
        }
    }

    /// A run with every step attempt.
    pub async fn run(&self, id: RunId) -> Result<RunDetails, EngineError> {
        let (run, steps) = self.store().get_run_with_steps(id).await?;
        Ok(RunDetails { run, steps })
    }

    /// A page of one step attempt's log, in the order it was written.
    ///
    /// ```
    /// # use serde_json::Value;
    /// # use taskforge_core::{Engine, LogLevel, StepDefinition, StepError, StepRegistry, WorkflowDefinition};
    /// # use taskforge_core::store::LogQuery;
    /// # use taskforge_store_memory::MemoryStore;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let mut registry = StepRegistry::new();
    /// registry.step_without_input("build", |ctx| async move {
    ///     ctx.log(LogLevel::Info, "compiling");
    ///     Ok::<_, StepError>(Value::Null)
    /// })?;
    /// let engine = Engine::builder(MemoryStore::new(), registry).build();
    /// engine.start();
    /// let workflow = engine.ensure_workflow("ci").await?;
    /// engine.publish(workflow.id, WorkflowDefinition::new(vec![StepDefinition::new("build", "build")])).await?;
    /// let run = engine.start_run(workflow.id, Value::Null).await?;
    /// engine.wait_for_run(run.id).await?;
    ///
    /// let attempt = &engine.run(run.id).await?.steps[0];
    /// let page = engine.step_logs(&LogQuery::new(run.id, attempt.id)).await?;
    /// assert_eq!(page.items[0].message, "compiling");
    /// # Ok(())
    /// # }
    /// ```
    pub async fn step_logs(&self, query: &LogQuery) -> Result<Page<LogLine, u32>, EngineError> {
        Ok(self.store().list_logs(query).await?)
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
    /// later step starts: at once when this engine runs it, and within
    /// [`EngineConfig::cancel_check_interval`] (1 s by default, whatever the
    /// lease length) when another engine does. Returns the run as it is
    /// after the request.
    pub async fn cancel_run(&self, id: RunId) -> Result<WorkflowRun, EngineError> {
        cancel::cancel_run(self.shared(), id).await
    }

    /// Sends the signal `name` with `payload` to a run, for the
    /// [wait step](crate::StepDefinition::wait_for_signal) that waits for
    /// it, whose output the payload becomes. The signal is stored with the
    /// run (durably, by any engine, without a lease), so it is received
    /// whenever the run gets to a wait step for `name`, also if it is sent
    /// before; each signal is received by one wait step at most, oldest
    /// first. A parked run is woken at once: this engine's dispatcher, and
    /// other engines through the store's work signal or their next poll,
    /// go on with it. Returns the run as stored after the signal.
    ///
    /// `RunFinished` if the run is finished (the signal is not kept);
    /// `InvalidInput` for a name that is not an identifier
    /// (`[A-Za-z0-9_.-]`, at most [`MAX_NAME_LEN`](crate::limits::MAX_NAME_LEN)
    /// bytes) or a payload over
    /// [`MAX_SIGNAL_PAYLOAD_BYTES`](crate::limits::MAX_SIGNAL_PAYLOAD_BYTES);
    /// `NotFound` for an unknown run.
    ///
    /// ```
    /// use std::time::Duration;
    /// use serde_json::json;
    /// use taskforge_core::{
    ///     Engine, EngineError, OnTimeout, RunStatus, StepDefinition, StepRegistry,
    ///     WorkflowDefinition,
    /// };
    /// use taskforge_store_memory::MemoryStore;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let engine = Engine::builder(MemoryStore::new(), StepRegistry::new())
    ///     // Park every wait at once (the default parks waits over 1 s).
    ///     .park_after(Duration::ZERO)
    ///     .build();
    /// engine.start();
    /// let workflow = engine.ensure_workflow("approval").await?;
    /// engine
    ///     .publish(workflow.id, WorkflowDefinition::new(vec![StepDefinition::wait_for_signal(
    ///         "decision",
    ///         "decided",
    ///         None,
    ///         OnTimeout::Fail,
    ///     )]))
    ///     .await?;
    /// let run = engine.start_run(workflow.id, json!({})).await?;
    ///
    /// // Parked: no worker, lease or slot is held while it waits.
    /// while engine.run(run.id).await?.run.status != RunStatus::Waiting {
    ///     tokio::time::sleep(Duration::from_millis(5)).await;
    /// }
    /// engine.signal_run(run.id, "decided", json!({ "approved": true })).await?;
    /// let finished = engine.wait_for_run(run.id).await?;
    /// assert_eq!(finished.output, Some(json!({ "approved": true })));
    ///
    /// // A finished run takes no signal.
    /// let late = engine.signal_run(run.id, "decided", json!(null)).await;
    /// assert!(matches!(late, Err(EngineError::RunFinished { .. })));
    /// # Ok(())
    /// # }
    /// ```
    pub async fn signal_run(
        &self,
        id: RunId,
        name: &str,
        payload: Value,
    ) -> Result<WorkflowRun, EngineError> {
        signal::signal_run(self.shared(), id, name, payload).await
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

    /// Creates an enabled trigger for a workflow, named after its kind (see
    /// [`TriggerKind::default_name`]), after checking its configuration (a
    /// cron expression that parses, a webhook path that is free, ...).
    /// `AlreadyExists` if the workflow has a trigger of that name, or
    /// another trigger has the webhook path; a host that declares its
    /// triggers at every start-up wants [`ensure_trigger`](Self::ensure_trigger).
    pub async fn create_trigger(
        &self,
        workflow_id: WorkflowId,
        kind: TriggerKind,
    ) -> Result<Trigger, EngineError> {
        let trigger = Trigger::new(workflow_id, kind, self.shared().now());
        intake::create_trigger(self.shared(), trigger).await
    }

    /// The trigger of `workflow_id` named `name`, created (enabled) with
    /// `kind` if it does not exist, or updated to `kind` if it differs; its
    /// enabled flag is kept, so a trigger an operator disabled stays
    /// disabled when the host restarts.
    /// Run it at every start-up: a host launched N times keeps one trigger
    /// of each name, so each cron slot fires once.
    ///
    /// ```
    /// use taskforge_core::{CronConfig, Engine, StepRegistry, TriggerKind};
    /// use taskforge_store_memory::MemoryStore;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let engine = Engine::builder(MemoryStore::new(), StepRegistry::new()).build();
    /// let workflow = engine.ensure_workflow("nightly").await?;
    /// let hourly = TriggerKind::Cron(CronConfig::new("0 * * * *", "UTC"));
    /// let first = engine.ensure_trigger(workflow.id, "hourly", hourly.clone()).await?;
    /// let again = engine.ensure_trigger(workflow.id, "hourly", hourly).await?;
    /// assert_eq!(first.id, again.id);
    /// assert_eq!(engine.triggers(workflow.id).await?.len(), 1);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn ensure_trigger(
        &self,
        workflow_id: WorkflowId,
        name: &str,
        kind: TriggerKind,
    ) -> Result<Trigger, EngineError> {
        intake::ensure_trigger(self.shared(), workflow_id, name, kind).await
    }

    /// Rewrites a trigger's name, configuration or enabled flag (its id and
    /// workflow stay), after the same checks as at creation.
    pub async fn update_trigger(&self, trigger: Trigger) -> Result<Trigger, EngineError> {
        intake::update_trigger(self.shared(), trigger).await
    }

    /// Deletes a trigger, freeing its name and webhook path. The events it
    /// received stay, and so do the runs they started.
    pub async fn delete_trigger(&self, id: TriggerId) -> Result<(), EngineError> {
        intake::delete_trigger(self.shared(), id).await
    }

    /// Rotates a webhook trigger's bearer token to `token`; the old
    /// credentials stay accepted for `overlap`, so senders can switch
    /// without losing deliveries. `InvalidTrigger` for a weak token or a
    /// trigger that is not a webhook.
    pub async fn rotate_webhook_token(
        &self,
        id: TriggerId,
        token: &str,
        overlap: Duration,
    ) -> Result<Trigger, EngineError> {
        let new = WebhookConfig::new("")
            .with_token(token)
            .map_err(InvalidTrigger::Webhook)?;
        self.rotate_webhook(id, &new, overlap).await
    }

    /// Rotates a webhook trigger's signature scheme (its secrets) to
    /// `scheme`; the old credentials stay accepted for `overlap`.
    pub async fn rotate_webhook_signature(
        &self,
        id: TriggerId,
        scheme: SignatureScheme,
        overlap: Duration,
    ) -> Result<Trigger, EngineError> {
        let mut new = WebhookConfig::new("").with_signature(scheme);
        let trigger = self.store().get_trigger(id).await?;
        if let TriggerKind::Webhook(config) = &trigger.kind {
            // The token, if any, stays as it is.
            new.auth.clone_from(&config.auth);
        }
        self.rotate_webhook(id, &new, overlap).await
    }

    async fn rotate_webhook(
        &self,
        id: TriggerId,
        new: &WebhookConfig,
        overlap: Duration,
    ) -> Result<Trigger, EngineError> {
        let mut trigger = self.store().get_trigger(id).await?;
        let TriggerKind::Webhook(config) = &trigger.kind else {
            return Err(InvalidTrigger::NotAWebhook(id).into());
        };
        let now = self.shared().now();
        let overlap = chrono::TimeDelta::from_std(overlap.min(crate::workflow::MAX_DURATION))
            .unwrap_or(chrono::TimeDelta::MAX);
        let until = now
            .checked_add_signed(overlap)
            .unwrap_or(DateTime::<Utc>::MAX_UTC);
        trigger.kind = TriggerKind::Webhook(config.clone().rotated(new, until));
        intake::update_trigger(self.shared(), trigger).await
    }

    /// The trigger with this id.
    pub async fn trigger(&self, id: TriggerId) -> Result<Trigger, EngineError> {
        Ok(self.store().get_trigger(id).await?)
    }

    /// Enables or disables a trigger. A disabled trigger still records what
    /// it receives, with the outcome [`EventOutcome::TriggerDisabled`].
    pub async fn set_trigger_enabled(
        &self,
        id: TriggerId,
        enabled: bool,
    ) -> Result<Trigger, EngineError> {
        let mut trigger = self.store().get_trigger(id).await?;
        trigger.enabled = enabled;
        intake::update_trigger(self.shared(), trigger).await
    }

    /// The triggers of a workflow.
    pub async fn triggers(&self, workflow_id: WorkflowId) -> Result<Vec<Trigger>, EngineError> {
        Ok(self.store().list_triggers(Some(workflow_id)).await?)
    }

    /// Takes a webhook delivery for the trigger at `path`: verifies it
    /// (size, token, signature, JSON), stores it as an event, and starts a
    /// run unless it is a duplicate, filtered out, or its workflow or
    /// trigger is off. Bad input is a [`Delivery::Rejected`], never an
    /// error; errors are the store's.
    ///
    /// ```
    /// use serde_json::{json, Value};
    /// use taskforge_core::webhook::{Headers, WebhookRequest};
    /// use taskforge_core::{Delivery, Engine, StepContext, StepDefinition, StepError, StepRegistry, TriggerKind, WebhookConfig, WorkflowDefinition};
    /// use taskforge_store_memory::MemoryStore;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let mut registry = StepRegistry::new();
    /// registry.step("echo", |_ctx: StepContext, input: Value| async move { Ok::<_, StepError>(input) })?;
    /// let engine = Engine::builder(MemoryStore::new(), registry).build();
    /// let workflow = engine.ensure_workflow("on-push").await?;
    /// engine.publish(workflow.id, WorkflowDefinition::new(vec![StepDefinition::new("echo", "echo")])).await?;
    /// engine
    ///     .create_trigger(workflow.id, TriggerKind::Webhook(WebhookConfig::new("push").with_token("push-s3cret-0123456789")?))
    ///     .await?;
    ///
    /// let headers: Headers = [("content-type", "application/json"), ("authorization", "Bearer push-s3cret-0123456789")]
    ///     .into_iter()
    ///     .collect();
    /// let request = WebhookRequest::new(headers, br#"{"ref":"main"}"#.to_vec());
    /// let delivery = engine.deliver_webhook("push", &request).await?;
    /// assert!(matches!(delivery, Delivery::Accepted { .. }));
    /// assert_eq!(delivery.http_status(), 202);
    ///
    /// // The same body again is a duplicate: nothing new is stored.
    /// let again = engine.deliver_webhook("push", &request).await?;
    /// assert!(matches!(again, Delivery::Duplicate { .. }));
    /// # Ok(())
    /// # }
    /// ```
    pub async fn deliver_webhook(
        &self,
        path: &str,
        request: &WebhookRequest,
    ) -> Result<Delivery, EngineError> {
        let delivery = intake::deliver(self.shared(), path, request).await?;
        telemetry::delivery(&delivery);
        Ok(delivery)
    }

    /// How many deliveries to a trigger were rejected since this engine
    /// started. Each is also stored as an event with the outcome
    /// [`EventOutcome::Rejected`] (without its body), which survives a
    /// restart; this count does not.
    #[must_use]
    pub fn rejected_deliveries(&self, trigger_id: TriggerId) -> u64 {
        intake::rejected_deliveries(self.shared(), trigger_id)
    }

    /// Fires every slot of every enabled cron trigger that is due at the
    /// engine clock's `now`, as each trigger's missed-run and overlap
    /// policies say. The engine calls this on every poll once started;
    /// tests with a [`ManualClock`](crate::clock::ManualClock) call it
    /// directly.
    pub async fn fire_due_cron(&self) -> Result<Vec<CronFiring>, EngineError> {
        cron::fire_due(self.shared()).await
    }

    /// The event with this id.
    pub async fn event(&self, id: EventId) -> Result<Event, EngineError> {
        Ok(self.store().get_event(id).await?)
    }

    /// A page of events: by workflow, trigger, outcome and time.
    pub async fn list_events(
        &self,
        query: &EventQuery,
    ) -> Result<Page<Event, EventId>, EngineError> {
        Ok(self.store().list_events(query).await?)
    }

    /// The event that caused a run, if any.
    pub async fn event_of_run(&self, run_id: RunId) -> Result<Option<Event>, EngineError> {
        let run = self.store().get_run(run_id).await?;
        match run.event_id {
            Some(id) => Ok(Some(self.store().get_event(id).await?)),
            None => Ok(None),
        }
    }

    /// Every run an event caused: the one it started, and its replays.
    pub async fn runs_of_event(&self, event_id: EventId) -> Result<Vec<WorkflowRun>, EngineError> {
        Ok(self
            .store()
            .list_all_runs(&RunQuery {
                event_id: Some(event_id),
                ..RunQuery::default()
            })
            .await?)
    }

    /// Starts a new run from a stored event's payload, on the workflow's
    /// latest version, linked to the same event and marked as a replay of
    /// the run the event first started (if any). The request is recorded
    /// as a manual event of its own (metadata `replay_of`), stored with the
    /// run.
    pub async fn replay_event(&self, event_id: EventId) -> Result<WorkflowRun, EngineError> {
        self.replay_event_as(event_id, None).await
    }

    /// [`replay_event`](Self::replay_event), recording who asked (an API
    /// token's id, a user name, ...) on the replay's event under
    /// `requested_by`.
    pub async fn replay_event_as(
        &self,
        event_id: EventId,
        requested_by: Option<&str>,
    ) -> Result<WorkflowRun, EngineError> {
        let mut options = ReplayOptions::new();
        options.requested_by = requested_by.map(str::to_owned);
        self.replay_event_with(event_id, options).await
    }

    /// [`replay_event`](Self::replay_event) with a choice of version: the
    /// latest (the default, as for a new delivery), or the version the
    /// event's original run was pinned to (to reproduce exactly what
    /// happened). `InvalidInput` for [`ReplayVersion::Original`] when the
    /// event started no run.
    ///
    /// ```
    /// # use serde_json::json;
    /// # use taskforge_core::{Engine, ReplayOptions, ReplayVersion, StepDefinition, StepError, StepRegistry, WorkflowDefinition};
    /// # use taskforge_store_memory::MemoryStore;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let mut registry = StepRegistry::new();
    /// # registry.step_without_input("a", |_ctx| async { Ok::<_, StepError>(1) })?;
    /// # registry.step_without_input("b", |_ctx| async { Ok::<_, StepError>(2) })?;
    /// let engine = Engine::builder(MemoryStore::new(), registry).build();
    /// engine.start();
    /// let workflow = engine.ensure_workflow("sync").await?;
    /// engine.publish(workflow.id, WorkflowDefinition::new(vec![StepDefinition::new("a", "a")])).await?;
    /// let first = engine.start_run(workflow.id, json!({})).await?;
    /// engine.publish(workflow.id, WorkflowDefinition::new(vec![StepDefinition::new("b", "b")])).await?;
    ///
    /// let event = first.event_id.expect("a manual start records an event");
    /// let again = engine
    ///     .replay_event_with(event, ReplayOptions::new().version(ReplayVersion::Original))
    ///     .await?;
    /// assert_eq!(again.version, 1);
    /// assert_eq!(engine.replay_event(event).await?.version, 2);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn replay_event_with(
        &self,
        event_id: EventId,
        options: ReplayOptions,
    ) -> Result<WorkflowRun, EngineError> {
        let shared = self.shared();
        let requested_by = options.requested_by.as_deref();
        let event = self.store().get_event(event_id).await?;
        let workflow = self.store().get_workflow(event.workflow_id).await?;
        if !workflow.active {
            return Err(EngineError::WorkflowInactive(workflow.name));
        }
        let version = match options.version {
            ReplayVersion::Latest => admit::latest_version(shared, &workflow).await?,
            ReplayVersion::Original => {
                let Some(original) = event.outcome.run_id() else {
                    return Err(EngineError::InvalidInput(format!(
                        "event {event_id} started no run, so it has no original version"
                    )));
                };
                let original = self.store().get_run(original).await?;
                WorkflowVersion::clone(&*shared.version_of(&original).await?)
            }
        };
        let mut run = WorkflowRun::new(&version, event.payload, shared.now());
        let created_at = run.created_at;
        limits::attach(&mut run, &version, None, created_at);
        run.event_id = Some(event.id);
        run.replay_of = event.outcome.run_id();
        let mut metadata = requester_metadata(requested_by);
        metadata.insert("replay_of".to_owned(), event.id.to_string());
        admit_requested(shared, run, metadata).await
    }
}

/// Admits `run`, started by a request (a replay, a resumption) that is
/// recorded as a manual event of its own with `metadata`; the run as
/// stored, or [`EngineError::Limited`] if its limit policy refused it.
async fn admit_requested<S: Store, X: StepExecutor>(
    shared: &Arc<Shared<S, X>>,
    run: WorkflowRun,
    metadata: std::collections::BTreeMap<String, String>,
) -> Result<WorkflowRun, EngineError> {
    let request = Event {
        id: EventId::new(),
        workflow_id: run.workflow_id,
        trigger_id: None,
        source: EventSource::Manual,
        received_at: shared.now(),
        dedup_key: None,
        payload: Arc::clone(&run.input),
        metadata,
        outcome: EventOutcome::RunStarted { run_id: run.id },
    };
    let admission = Admission {
        event: request,
        run: Some(run),
        dedup_window: None,
    };
    match admit::admit(shared, admission).await? {
        Admitted::Stored { run: Some(run), .. } => Ok(run),
        Admitted::Stored { run: None, event } => Err(limited(event)),
        Admitted::Duplicate(_) => {
            Err(StoreError::Invalid("a request without a dedup key was a duplicate".into()).into())
        }
    }
}

/// The error of a request its run's limit policy refused: the event
/// stored with outcome [`EventOutcome::Limited`].
fn limited(event: Event) -> EngineError {
    match event.outcome {
        EventOutcome::Limited { key, .. } => EngineError::Limited {
            key,
            event_id: event.id,
        },
        _ => StoreError::Invalid("an admitted start stored no run".into()).into(),
    }
}
