//! One scenario at run time: the engines (started, crashed, restarted),
//! the clients that start runs and deliver webhooks, the manual clock in
//! step with Tokio's, and the settling once the faults stop.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::{TimeDelta, TimeZone, Utc};
use parking_lot::Mutex;
use serde_json::json;
use tokio::sync::broadcast;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::plan::{self, Ack, ArrivalKind, Plan};
use super::{check, Report, CLIENT_TRIES, LINGER_LIMIT, SETTLE_LIMIT, TICK};
use crate::clock::{Clock, ManualClock};
use crate::store::{RunStore, RunStoreExt, Store, WorkflowStore};
use crate::testing::faults::{FaultConfig, FaultyStore};
use crate::webhook::{DedupSource, Headers, WebhookRequest};
use crate::{
    Delivery, Engine, EngineBuilder, RunOptions, RunQuery, RunUpdate, StepContext, StepRegistry,
    TriggerKind, WebhookConfig, WorkflowId,
};

/// A live engine, and the token its clients watch to see it crash.
struct Live<S> {
    engine: Engine<FaultyStore<S>, StepRegistry>,
    crashed: CancellationToken,
}

/// One scenario.
pub(super) struct World<S> {
    pub(super) plan: Plan,
    /// The start of the scenario's workflow names and webhook paths.
    namespace: String,
    store: S,
    /// The store without faults, completing inline: what checks read.
    oracle: FaultyStore<S>,
    clock: ManualClock,
    monitor: Arc<check::Monitor>,
    engines: Mutex<Vec<Option<Live<S>>>>,
    incarnations: Mutex<Vec<u32>>,
    /// Every faulty store made, to switch them all off.
    stores: Mutex<Vec<FaultyStore<S>>>,
    faults_on: AtomicBool,
    rng: Mutex<fastrand::Rng>,
    workflows: Mutex<Vec<WorkflowId>>,
    acks: Mutex<Vec<Ack>>,
    report: Mutex<Report>,
}

impl<S: Store + Clone> World<S> {
    pub(super) fn new(plan: Plan, store: S, namespace: String) -> Arc<Self> {
        let oracle = FaultyStore::new(store.clone(), FaultConfig::none(), 0).with_inline_calls();
        let start = Utc
            .with_ymd_and_hms(2026, 1, 1, 0, 0, 0)
            .single()
            .expect("a valid start time");
        let monitor = Arc::new(check::Monitor::new(
            Arc::new(oracle.clone()),
            plan.handlers.clone(),
            plan.seed,
        ));
        Arc::new(Self {
            rng: Mutex::new(fastrand::Rng::with_seed(plan.seed ^ 0x5eed_5eed)),
            engines: Mutex::new((0..plan.engines).map(|_| None).collect()),
            incarnations: Mutex::new(vec![0; plan.engines]),
            plan,
            namespace,
            store,
            oracle,
            clock: ManualClock::new(start),
            monitor,
            stores: Mutex::new(Vec::new()),
            faults_on: AtomicBool::new(true),
            workflows: Mutex::new(Vec::new()),
            acks: Mutex::new(Vec::new()),
            report: Mutex::new(Report::default()),
        })
    }

    /// Runs the scenario: its violations, or what it did.
    pub(super) async fn run(self: &Arc<Self>) -> Result<Report, Vec<String>> {
        // The engine's jitter draws from the thread's generator: seed it,
        // so the scenario replays.
        fastrand::seed(self.plan.seed);
        let start = Instant::now();
        let base = self.clock.now();
        let clock = self.clock.clone();
        let ticker = tokio::spawn(async move {
            loop {
                tokio::time::sleep(TICK).await;
                clock.set(base + TimeDelta::from_std(start.elapsed()).unwrap_or_default());
            }
        });
        let result = self.simulate(start).await;
        ticker.abort();
        let mut report = self.report.lock().clone();
        report.simulated_ms = u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX);
        for store in self.stores.lock().iter() {
            report.faults += store.counts();
        }
        report.handler_calls = self.monitor.calls();
        let violations = result?;
        if violations.is_empty() {
            Ok(report)
        } else {
            Err(violations)
        }
    }

    fn builder(
        self: &Arc<Self>,
        store: FaultyStore<S>,
        owner: &str,
    ) -> EngineBuilder<FaultyStore<S>, StepRegistry> {
        let mut registry = StepRegistry::new();
        let monitor = Arc::clone(&self.monitor);
        let engine = owner.to_owned();
        registry
            .step_without_input("sim", move |ctx: StepContext| {
                Arc::clone(&monitor).handle(ctx, engine.clone())
            })
            .expect("register the simulated handler");
        let plan = &self.plan;
        Engine::builder(store, registry)
            .clock(self.clock.clone())
            .owner(owner)
            .lease_ttl(plan.lease_ttl)
            .poll_interval(plan.poll_interval)
            .cancel_check_interval(plan.cancel_check_interval)
            .default_step_timeout(Some(plan.step_timeout))
            .max_concurrent_runs(plan.max_concurrent_runs)
    }

    /// Creates the workflows and their webhook triggers, without faults.
    async fn setup(self: &Arc<Self>) -> Result<(), String> {
        let engine = self.builder(self.oracle.clone(), "setup").build();
        for (i, definition) in self.plan.workflows.iter().enumerate() {
            let setup = async {
                let name = format!("{}-{i}", self.namespace);
                let workflow = engine.create_workflow(&name).await?;
                engine.publish(workflow.id, definition.clone()).await?;
                let hook = WebhookConfig::new(name)
                    .with_dedup(DedupSource::Header("x-delivery-id".into()));
                engine
                    .create_trigger(workflow.id, TriggerKind::Webhook(hook))
                    .await?;
                Ok::<_, crate::EngineError>(workflow.id)
            };
            let id = setup.await.map_err(|e| format!("setup failed: {e}"))?;
            self.workflows.lock().push(id);
        }
        Ok(())
    }

    fn start_engine(self: &Arc<Self>, index: usize) {
        let incarnation = {
            let mut incarnations = self.incarnations.lock();
            incarnations[index] += 1;
            incarnations[index]
        };
        if incarnation > 1 {
            self.report.lock().restarts += 1;
        }
        let owner = format!("engine-{index}.{incarnation}");
        let seed = self.rng.lock().u64(..);
        let store = FaultyStore::new(self.store.clone(), self.plan.faults.clone(), seed)
            .with_inline_calls();
        store.set_enabled(self.faults_on.load(Ordering::SeqCst));
        self.stores.lock().push(store.clone());
        let engine = self.builder(store, &owner).build();
        tokio::spawn(watch_updates(
            engine.subscribe(),
            Arc::clone(&self.monitor),
            owner,
        ));
        engine.start();
        self.engines.lock()[index] = Some(Live {
            engine,
            crashed: CancellationToken::new(),
        });
    }

    /// Drops engine `index`, which stops its tasks as a crash would.
    fn crash_engine(&self, index: usize) -> bool {
        let live = self.engines.lock()[index].take();
        let Some(live) = live else {
            return false;
        };
        // Clients holding a clone let go of it, so the engine dies now.
        live.crashed.cancel();
        drop(live);
        true
    }

    /// A live engine picked at random, if any.
    fn pick(&self) -> Option<(Engine<FaultyStore<S>, StepRegistry>, CancellationToken)> {
        let engines = self.engines.lock();
        let live: Vec<&Live<S>> = engines.iter().flatten().collect();
        if live.is_empty() {
            return None;
        }
        let chosen = live[self.rng.lock().usize(..live.len())];
        Some((chosen.engine.clone(), chosen.crashed.clone()))
    }

    async fn simulate(self: &Arc<Self>, start: Instant) -> Result<Vec<String>, Vec<String>> {
        self.setup().await.map_err(|e| vec![e])?;
        for index in 0..self.plan.engines {
            self.start_engine(index);
        }
        let mut clients = Vec::new();
        for (at, action) in self.plan.timeline() {
            tokio::time::sleep_until(start + at).await;
            match action {
                plan::Action::Arrive(arrival) => {
                    clients.push(tokio::spawn(client(Arc::clone(self), arrival)));
                }
                plan::Action::Crash(index) => {
                    if self.crash_engine(index) {
                        self.report.lock().crashes += 1;
                    }
                }
                plan::Action::Restart(index) => {
                    let down = self.engines.lock()[index].is_none();
                    if down {
                        self.start_engine(index);
                    }
                }
                plan::Action::Cancel(arrival) => {
                    clients.push(tokio::spawn(cancel(Arc::clone(self), arrival)));
                }
            }
        }
        tokio::time::sleep_until(start + self.plan.horizon).await;

        // The faults stop, every engine comes back, everything settles.
        self.faults_on.store(false, Ordering::SeqCst);
        for store in self.stores.lock().iter() {
            store.set_enabled(false);
        }
        for index in 0..self.plan.engines {
            let down = self.engines.lock()[index].is_none();
            if down {
                self.start_engine(index);
            }
        }
        for client in clients {
            client
                .await
                .map_err(|e| vec![format!("a client task failed: {e}")])?;
        }
        let runs = self.settle().await?;
        let mut violations = Vec::new();
        // An engine that stalled may hold a handler it no longer owns
        // until the stall ends and it finds its lease lost: give it time.
        let deadline = Instant::now() + LINGER_LIMIT;
        while !self.monitor.executing().is_empty() && Instant::now() < deadline {
            tokio::time::sleep(TICK).await;
        }
        for call in self.monitor.executing() {
            violations.push(format!(
                "{call} is still executing {LINGER_LIMIT:?} after every run finished"
            ));
        }
        // Stop every engine; let the update watchers take the last updates.
        for index in 0..self.plan.engines {
            self.crash_engine(index);
        }
        tokio::time::sleep(TICK).await;

        let acks = self.acks.lock().clone();
        {
            let mut report = self.report.lock();
            for run in &runs {
                *report.runs.entry(run.status).or_default() += 1;
            }
            report.acknowledged = acks.len() as u64;
        }
        violations.extend(self.monitor.take_violations());
        let workflows = self.workflows.lock().clone();
        let stored = check::Stored {
            store: &self.oracle,
            plan: &self.plan,
            workflows: &workflows,
            runs: &runs,
            acks: &acks,
            monitor: &self.monitor,
        };
        violations.extend(stored.check().await);
        if let Err(e) = self.clean_up().await {
            violations.push(format!("deleting the triggers failed: {e}"));
        }
        Ok(violations)
    }

    /// Every run of the scenario's workflows.
    async fn runs(&self) -> Result<Vec<crate::WorkflowRun>, crate::StoreError> {
        let mut runs = Vec::new();
        let workflows = self.workflows.lock().clone();
        for workflow_id in workflows {
            let query = RunQuery {
                workflow_id: Some(workflow_id),
                ..RunQuery::default()
            };
            runs.extend(self.oracle.list_all_runs(&query).await?);
        }
        Ok(runs)
    }

    /// Deletes the scenario's triggers, so that engines of later
    /// scenarios on the same store do not read them on every poll.
    async fn clean_up(&self) -> Result<(), crate::StoreError> {
        let workflows = self.workflows.lock().clone();
        for workflow_id in workflows {
            for trigger in self.oracle.list_triggers(Some(workflow_id)).await? {
                self.oracle.delete_trigger(trigger.id).await?;
            }
        }
        Ok(())
    }

    /// Waits until every run has finished; every run, or why not.
    async fn settle(self: &Arc<Self>) -> Result<Vec<crate::WorkflowRun>, Vec<String>> {
        let deadline = Instant::now() + SETTLE_LIMIT;
        loop {
            let runs = self
                .runs()
                .await
                .map_err(|e| vec![format!("listing runs failed: {e}")])?;
            if runs.iter().all(|run| run.status.is_terminal()) {
                return Ok(runs);
            }
            if Instant::now() >= deadline {
                let mut stuck = Vec::new();
                for run in runs.iter().filter(|run| !run.status.is_terminal()) {
                    let steps = self.oracle.list_step_runs(run.id).await.unwrap_or_default();
                    stuck.push(format!(
                        "run {} is still {} {SETTLE_LIMIT:?} after the faults stopped \
                         (lease {:?}, epoch {}, cancel requested {}, attempts {})",
                        run.id,
                        run.status,
                        run.lease,
                        run.lease_epoch,
                        run.cancel_requested,
                        check::brief(&steps)
                    ));
                }
                stuck.extend(self.monitor.take_violations());
                return Err(stuck);
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

/// Records what an engine announces: the runs it saw finish.
async fn watch_updates(
    mut updates: broadcast::Receiver<RunUpdate>,
    monitor: Arc<check::Monitor>,
    engine: String,
) {
    loop {
        match updates.recv().await {
            Ok(RunUpdate::RunFinished { run_id, status }) => {
                monitor.finished(run_id, status, &engine);
            }
            Ok(_) => {}
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                monitor.violation(format!("{engine}: the update watcher missed {missed}"));
            }
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

/// A client: starts a run or delivers a webhook through a live engine,
/// and tries again (with the same key or delivery id) when that is safe.
async fn client<S: Store + Clone>(world: Arc<World<S>>, index: usize) {
    let arrival = world.plan.arrivals[index].clone();
    let workflow_id = world.workflows.lock()[arrival.workflow];
    let key = arrival.key(index);
    for _ in 0..CLIENT_TRIES {
        let Some((engine, crashed)) = world.pick() else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        let body = json!({ "arrival": index, "key": key });
        let call = async {
            match &arrival.kind {
                ArrivalKind::Manual { key: idempotency } => {
                    let mut options = RunOptions::new();
                    if let Some(k) = idempotency {
                        options = options.idempotency_key(k.clone());
                    }
                    engine
                        .start_run_with(workflow_id, body, options)
                        .await
                        .map(|run| Some((run.id, run.event_id)))
                }
                ArrivalKind::Webhook { delivery } => {
                    let headers: Headers = [
                        ("content-type", "application/json"),
                        ("x-delivery-id", delivery.as_str()),
                    ]
                    .into_iter()
                    .collect();
                    let request = WebhookRequest::new(headers, body.to_string());
                    let path = format!("{}-{}", world.namespace, arrival.workflow);
                    let delivered = engine.deliver_webhook(&path, &request).await;
                    delivered.map(|delivery_answer| match delivery_answer {
                        Delivery::Accepted { event_id, run_id }
                        | Delivery::Duplicate {
                            event_id,
                            run_id: Some(run_id),
                        } => Some((run_id, Some(event_id))),
                        other => {
                            world.monitor.violation(format!(
                                "delivery {delivery} (arrival {index}) was answered {other:?}"
                            ));
                            None
                        }
                    })
                }
            }
        };
        let result = tokio::select! {
            biased;
            () = crashed.cancelled() => Ok(None),
            result = call => result,
        };
        drop(engine);
        match result {
            Ok(Some((run_id, event_id))) => {
                world.acks.lock().push(Ack {
                    arrival: index,
                    key,
                    run_id,
                    event_id,
                });
                return;
            }
            Ok(None) if !crashed.is_cancelled() => return,
            Ok(None) | Err(_) => world.report.lock().client_errors += 1,
        }
        // Without an idempotency key, a retry could start a second run.
        if !arrival.retries() {
            return;
        }
        let pause = Duration::from_millis(world.rng.lock().u64(50..=400));
        tokio::time::sleep(pause).await;
    }
}

/// Cancels the run of an acknowledged arrival, if it has one by now.
async fn cancel<S: Store + Clone>(world: Arc<World<S>>, arrival: usize) {
    let run_id = world
        .acks
        .lock()
        .iter()
        .find(|ack| ack.arrival == arrival)
        .map(|ack| ack.run_id);
    let (Some(run_id), Some((engine, crashed))) = (run_id, world.pick()) else {
        return;
    };
    world.report.lock().cancels += 1;
    tokio::select! {
        biased;
        () = crashed.cancelled() => {}
        _ = engine.cancel_run(run_id) => {}
    }
}
