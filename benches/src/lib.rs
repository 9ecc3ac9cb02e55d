//! Benchmarks of the Taskforge workflow engine.
//!
//! This crate holds the fixtures shared by the criterion micro-benchmarks
//! (`cargo bench -p taskforge-benches`) and the headline binary
//! (`cargo run --release -p taskforge-benches --bin headline`): no-op step
//! registries, workflow definitions, payloads of a known size, stores
//! pre-filled with finished runs, webhook-like events, and the small
//! statistics the headline table prints. See `benches/README.md` for what
//! each figure means and the latest results.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use serde_json::{json, Value};
use taskforge_core::store::{Fence, StepTransition};
use taskforge_core::{
    Engine, EngineError, Event, EventId, EventOutcome, EventSource, RunQuery, RunStatus,
    StepContext, StepDefinition, StepError, StepRegistry, StepRun, Store, StoreError, TriggerId,
    Workflow, WorkflowDefinition, WorkflowId, WorkflowRun, WorkflowVersion,
};
use tokio::sync::{Notify, Semaphore};

/// The handler name of the no-op step every benchmark workflow uses.
pub const NOOP: &str = "noop";

/// The handler name of the no-op step that also reports a finished run to
/// a [`Completion`]; used as the last step of closed-loop workloads.
pub const NOOP_LAST: &str = "noop-last";

/// The target size of a run input, in bytes of JSON.
pub const PAYLOAD_BYTES: usize = 200;

/// A registry with the [`NOOP`] handler only.
///
/// # Errors
/// Never in practice: the name is valid and registered once.
pub fn noop_registry() -> Result<StepRegistry, taskforge_core::error::RegistryError> {
    let mut registry = StepRegistry::new();
    registry.step(NOOP, |_ctx: StepContext, _input: Value| async {
        Ok::<_, StepError>(())
    })?;
    Ok(registry)
}

/// A registry with [`NOOP`], and [`NOOP_LAST`] reporting to `completion`.
///
/// # Errors
/// Never in practice: the names are valid and registered once.
pub fn closed_loop_registry(
    completion: &Arc<Completion>,
) -> Result<StepRegistry, taskforge_core::error::RegistryError> {
    let mut registry = noop_registry()?;
    let completion = Arc::clone(completion);
    registry.step(NOOP_LAST, move |_ctx: StepContext, _input: Value| {
        completion.finished();
        async { Ok::<_, StepError>(()) }
    })?;
    Ok(registry)
}

/// A definition of `steps` no-op steps (`s0`, `s1`, ...); the last one
/// runs `last_handler`.
#[must_use]
pub fn definition(steps: usize, last_handler: &str) -> WorkflowDefinition {
    WorkflowDefinition::new(
        (0..steps)
            .map(|i| {
                let handler = if i + 1 == steps { last_handler } else { NOOP };
                StepDefinition::new(format!("s{i}"), handler)
            })
            .collect(),
    )
}

/// A run input of about [`PAYLOAD_BYTES`] bytes of JSON, unique per `i`.
#[must_use]
pub fn payload(i: u64) -> Value {
    json!({
        "action": "published",
        "release": { "tag": format!("v1.{i}.0"), "id": i, "draft": false },
        "repository": "example/taskforge",
        "sender": "release-bot",
        "note": "x".repeat(80),
    })
}

/// A workflow named `name` with `definition` as version 1, stored through
/// the store traits (no engine needed).
///
/// # Errors
/// What the store returns.
pub async fn catalog<S: taskforge_core::Store>(
    store: &S,
    name: &str,
    definition: WorkflowDefinition,
) -> Result<(Workflow, WorkflowVersion), StoreError> {
    let now = Utc::now();
    let workflow = Workflow::new(name, now).map_err(|e| StoreError::Invalid(e.to_string()))?;
    store.insert_workflow(&workflow).await?;
    let version = WorkflowVersion::new(workflow.id, 1, definition, now);
    store.insert_version(&version).await?;
    Ok((workflow, version))
}

/// Stores `count` finished runs of `version` (which should have three
/// steps), each with its succeeded step attempts and the webhook event
/// that started it: the history a store holds after `count` runs.
///
/// # Errors
/// What the store returns.
pub async fn prefill<S: taskforge_core::Store>(
    store: &S,
    version: &WorkflowVersion,
    count: usize,
) -> Result<(), StoreError> {
    use futures::{StreamExt, TryStreamExt};

    let trigger = TriggerId::new();
    // Several at a time, so that a store that batches its writes (sled's
    // writer thread) fills in a fraction of the time one at a time takes.
    futures::stream::iter(0..count as u64)
        .map(|i| prefill_one(store, version, trigger, i))
        .buffer_unordered(PREFILL_IN_FLIGHT)
        .try_collect::<()>()
        .await
}

/// How many runs [`prefill`] stores at once.
const PREFILL_IN_FLIGHT: usize = 64;

/// Stores finished run `i` of `version` with its webhook event.
async fn prefill_one<S: taskforge_core::Store>(
    store: &S,
    version: &WorkflowVersion,
    trigger: TriggerId,
    i: u64,
) -> Result<(), StoreError> {
    let now = Utc::now();
    let mut run = WorkflowRun::new(version, payload(i), now);
    let event = webhook_event(version.workflow_id, trigger, format!("prefill-{i}"), &run);
    run.event_id = Some(event.id);
    run.status = RunStatus::Running;
    run.started_at = Some(now);
    store.insert_event(&event, Some(&run)).await?;
    let fence = Fence {
        run_id: run.id,
        epoch: run.lease_epoch,
        status: RunStatus::Running,
    };
    let mut steps = Vec::new();
    for (index, step) in version.definition.steps.iter().enumerate() {
        let mut attempt = StepRun::start(run.id, &step.key, index as u32, 1, now);
        attempt
            .transition(StepTransition::Succeed, now)
            .map_err(|e| StoreError::Invalid(e.to_string()))?;
        attempt.output = Some(Value::Null);
        steps.push(attempt);
    }
    run.transition(taskforge_core::store::RunTransition::Succeed, now)
        .map_err(|e| StoreError::Invalid(e.to_string()))?;
    run.output = Some(Value::Null);
    store.commit(fence, Some(&run), &steps).await
}

/// Stores a "history" workflow (three no-op steps) and `stored` finished
/// runs of it: see [`prefill`].
///
/// # Errors
/// What the store returns.
pub async fn prefill_history<S: Store>(store: &S, stored: usize) -> Result<(), StoreError> {
    let (_, version) = catalog(store, "history", definition(3, NOOP)).await?;
    prefill(store, &version, stored).await
}

/// Why a closed-loop workload failed.
#[derive(Debug)]
pub enum LoadError {
    /// The engine refused a call.
    Engine(EngineError),
    /// A producer task panicked or was cancelled.
    Producer(tokio::task::JoinError),
}

impl std::fmt::Display for LoadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Engine(e) => write!(f, "engine: {e}"),
            Self::Producer(e) => write!(f, "producer: {e}"),
        }
    }
}

impl std::error::Error for LoadError {}

impl From<EngineError> for LoadError {
    fn from(e: EngineError) -> Self {
        Self::Engine(e)
    }
}

impl From<StoreError> for LoadError {
    fn from(e: StoreError) -> Self {
        Self::Engine(e.into())
    }
}

impl From<tokio::task::JoinError> for LoadError {
    fn from(e: tokio::task::JoinError) -> Self {
        Self::Producer(e)
    }
}

/// Runs `runs` runs of a `steps`-step no-op workflow through an engine on
/// `store`, keeping `in_flight` of them going (a closed loop: a new run
/// starts when one reaches its last step), and returns runs per second,
/// from the first start to the last run's final commit. The engine may
/// execute `in_flight` runs at once.
///
/// # Errors
/// The first engine or producer failure.
pub async fn runs_per_s<S: Store + Clone>(
    store: S,
    steps: usize,
    runs: usize,
    in_flight: usize,
) -> Result<f64, LoadError> {
    let completion = Completion::new(in_flight);
    let registry = closed_loop_registry(&completion)
        .map_err(|e| LoadError::Engine(EngineError::InvalidInput(e.to_string())))?;
    let engine = Engine::builder(store.clone(), registry)
        .max_concurrent_runs(in_flight)
        .build();
    engine.start();
    let workflow = engine.ensure_workflow(&format!("bench-{steps}")).await?;
    engine
        .publish(workflow.id, definition(steps, NOOP_LAST))
        .await?;

    let start = Instant::now();
    // The producer is a task of the runtime too: driving it from the
    // thread that called `block_on` would add a thread hand-off per run.
    let producer = tokio::spawn({
        let (engine, completion) = (engine.clone(), Arc::clone(&completion));
        let body = payload(0);
        async move {
            let mut starts = tokio::task::JoinSet::new();
            for _ in 0..runs {
                completion.take_slot().await;
                let (engine, input) = (engine.clone(), body.clone());
                // Spawned, so that starts waiting for a durable write share it.
                starts.spawn(async move { engine.start_run(workflow.id, input).await.map(drop) });
                while let Some(done) = starts.try_join_next() {
                    done??;
                }
            }
            while let Some(done) = starts.join_next().await {
                done??;
            }
            Ok::<(), LoadError>(())
        }
    });
    completion.wait_for(runs).await;
    settle(&store).await?;
    let elapsed = start.elapsed();
    producer.await??;
    engine.shutdown(Duration::from_secs(30)).await;
    Ok(runs as f64 / elapsed.as_secs_f64())
}

/// Waits until no run is queued or running: once the last steps' handlers
/// have returned, this waits for their runs' final commits.
///
/// # Errors
/// What the store returns.
pub async fn settle<S: Store>(store: &S) -> Result<(), StoreError> {
    let mut spins = 0u32;
    loop {
        let mut busy = false;
        for status in [RunStatus::Running, RunStatus::Queued] {
            let query = RunQuery {
                status: Some(status),
                limit: 1,
                ..RunQuery::default()
            };
            busy |= !store.list_runs(&query).await?.items.is_empty();
        }
        if !busy {
            return Ok(());
        }
        spins += 1;
        if spins < 1_000 {
            tokio::task::yield_now().await;
        } else {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
}

/// A webhook delivery of `run`'s input, with dedup key `key`, that starts
/// `run`.
#[must_use]
pub fn webhook_event(
    workflow_id: WorkflowId,
    trigger_id: TriggerId,
    key: String,
    run: &WorkflowRun,
) -> Event {
    let mut metadata = BTreeMap::new();
    metadata.insert("x-github-event".to_owned(), "release".to_owned());
    Event {
        id: EventId::new(),
        workflow_id,
        trigger_id: Some(trigger_id),
        source: EventSource::Webhook,
        received_at: Utc::now(),
        dedup_key: Some(key),
        payload: run.input.clone(),
        metadata,
        outcome: EventOutcome::RunStarted { run_id: run.id },
    }
}

/// Counts finished runs of a closed-loop workload and holds its in-flight
/// slots: a producer takes a slot before starting a run, and the run's
/// last step gives it back.
#[derive(Debug)]
pub struct Completion {
    finished: AtomicUsize,
    target: AtomicUsize,
    reached: Notify,
    slots: Arc<Semaphore>,
}

impl Completion {
    /// A completion with `in_flight` slots.
    #[must_use]
    pub fn new(in_flight: usize) -> Arc<Self> {
        Arc::new(Self {
            finished: AtomicUsize::new(0),
            target: AtomicUsize::new(usize::MAX),
            reached: Notify::new(),
            slots: Arc::new(Semaphore::new(in_flight)),
        })
    }

    /// Called by the last step of a run: counts it and frees its slot.
    pub fn finished(&self) {
        let count = self.finished.fetch_add(1, Ordering::AcqRel) + 1;
        self.slots.add_permits(1);
        if count >= self.target.load(Ordering::Acquire) {
            self.reached.notify_one();
        }
    }

    /// Waits until `target` runs reached their last step.
    pub async fn wait_for(&self, target: usize) {
        self.target.store(target, Ordering::Release);
        while self.count() < target {
            // Bounded, so a notification lost to the race above costs a
            // millisecond, not a hang.
            let _ = tokio::time::timeout(Duration::from_millis(1), self.reached.notified()).await;
        }
    }

    /// How many runs reached their last step.
    #[must_use]
    pub fn count(&self) -> usize {
        self.finished.load(Ordering::Acquire)
    }

    /// Waits for a free slot and takes it.
    pub async fn take_slot(&self) {
        if let Ok(permit) = self.slots.acquire().await {
            permit.forget();
        }
    }
}

/// The median of `values` (0 if empty).
#[must_use]
pub fn median(mut values: Vec<f64>) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// The `p`-th percentile (0..=100) of `values`, nearest rank (0 if empty).
#[must_use]
pub fn percentile(values: &[f64], p: f64) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// The rate of a single writer appending 128-byte records to a file in
/// `dir`, each followed by `fdatasync`, over about `duration`: the floor
/// every durable write pays on this disk.
///
/// # Errors
/// What the file system returns.
pub fn fdatasync_rate(dir: &Path, duration: Duration) -> std::io::Result<f64> {
    let mut file = std::fs::File::create(dir.join("fdatasync-baseline.log"))?;
    let record = [0x5au8; 128];
    let start = Instant::now();
    let mut writes = 0u64;
    while writes < 10 || start.elapsed() < duration {
        file.write_all(&record)?;
        file.sync_data()?;
        writes += 1;
    }
    Ok(writes as f64 / start.elapsed().as_secs_f64())
}

/// Copies the directory tree `from` into `to` (created).
///
/// # Errors
/// What the file system returns.
pub fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), target)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_are_about_the_advertised_size() {
        let len = serde_json::to_vec(&payload(12_345))
            .expect("serializes")
            .len();
        assert!((150..=260).contains(&len), "{len}");
    }

    #[test]
    fn percentiles_use_nearest_rank() {
        let values: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&values, 50.0), 50.0);
        assert_eq!(percentile(&values, 99.0), 99.0);
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
    }

    #[test]
    fn definitions_end_with_the_last_handler() {
        let def = definition(3, NOOP_LAST);
        assert_eq!(def.steps.len(), 3);
        assert_eq!(def.steps[2].handler, NOOP_LAST);
        assert!(def.validate().is_ok());
    }

    #[tokio::test]
    async fn prefill_leaves_finished_runs() {
        use taskforge_core::store::RunStore;
        use taskforge_core::RunQuery;
        let store = taskforge_store_memory::MemoryStore::new();
        let (_, version) = catalog(&store, "prefill", definition(3, NOOP))
            .await
            .expect("catalog");
        prefill(&store, &version, 5).await.expect("prefill");
        let page = store
            .list_runs(&RunQuery {
                status: Some(RunStatus::Succeeded),
                ..RunQuery::default()
            })
            .await
            .expect("list");
        assert_eq!(page.items.len(), 5);
    }
}
