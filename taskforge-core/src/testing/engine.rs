//! Engine-level scenarios, run on every backend: each case drives a real
//! [`Engine`] over the store it is given and checks what users rely on.
//!
//! Cases take a store that is `Clone` (clones share one database), so a
//! case can start a second engine on the same data, as a restarted or
//! second process would.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use serde_json::{json, Value};
use tokio::sync::Notify;

use crate::{Engine, EngineError, RetryPolicy, RunId, RunOptions, RunStatus, RunUpdate, StepContext, StepDefinition, StepError, StepRegistry, StepStatus, Store, WorkflowDefinition, WorkflowRun};

/// How long a case waits for a run before it fails.
const PATIENCE: Duration = Duration::from_secs(60);

fn engine<S: Store>(store: S, registry: StepRegistry) -> Engine<S, StepRegistry> {
    Engine::builder(store, registry)
        .lease_ttl(Duration::from_millis(500))
        .poll_interval(Duration::from_millis(20))
        .build()
}

async fn wait<S: Store>(engine: &Engine<S, StepRegistry>, id: RunId) -> WorkflowRun {
    tokio::time::timeout(PATIENCE, engine.wait_for_run(id))
        .await
        .unwrap_or_else(|_| panic!("run {id} did not finish within {PATIENCE:?}"))
        .expect("wait for run")
}

/// Creates the workflow `name` and publishes `definition` as its first version.
async fn published<S: Store, X: crate::StepExecutor>(
    engine: &Engine<S, X>,
    name: &str,
    definition: WorkflowDefinition,
) -> crate::Workflow {
    let workflow = engine.create_workflow(name).await.expect("create");
    engine
        .publish(workflow.id, definition)
        .await
        .expect("publish");
    workflow
}

fn ok(value: Value) -> Result<Value, StepError> {
    Ok(value)
}

/// Steps run in order; each sees the run input, its config and earlier
/// outputs; the run's output is the last step's output.
pub async fn linear_run_passes_data<S: Store>(store: S) {
    let mut registry = StepRegistry::new();
    registry
        .step("build", |ctx: StepContext, input: Value| async move {
            let tag = input["tag"].as_str().unwrap_or_default().to_owned();
            let flavour = ctx.config()["flavour"].clone();
            ok(json!({ "artifact": format!("api-{tag}"), "flavour": flavour }))
        })
        .expect("register")
        .step("deploy", |ctx: StepContext, _input: Value| async move {
            let artifact = ctx.output("build").expect("build output")["artifact"].clone();
            ok(json!({ "deployed": artifact, "key": ctx.idempotency_key() }))
        })
        .expect("register");
    let engine = engine(store, registry);
    engine.start();
    let wf = engine.create_workflow("release").await.expect("create");
    let version = engine
        .publish(
            wf.id,
            WorkflowDefinition::new(vec![
                StepDefinition::new("build", "build").config(json!({ "flavour": "release" })),
                StepDefinition::new("deploy", "deploy"),
            ]),
        )
        .await
        .expect("publish");
    assert_eq!(version.number, 1);
    let run = engine
        .start_run(wf.id, json!({ "tag": "v1.2.0" }))
        .await
        .expect("start");
    assert_eq!(run.status, RunStatus::Queued);
    let done = wait(&engine, run.id).await;
    assert_eq!(done.status, RunStatus::Succeeded, "{done:?}");
    assert_eq!(
        done.output,
        Some(json!({ "deployed": "api-v1.2.0", "key": format!("{}/deploy", run.id) }))
    );
    assert!(done.started_at.is_some() && done.finished_at.is_some());
    assert!(done.lease.is_none(), "a finished run holds no lease");
    let details = engine.run(run.id).await.expect("details");
    let steps: Vec<_> = details
        .steps
        .iter()
        .map(|s| (s.step_key.as_str(), s.attempt, s.status))
        .collect();
    assert_eq!(
        steps,
        [
            ("build", 1, StepStatus::Succeeded),
            ("deploy", 1, StepStatus::Succeeded)
        ]
    );
    assert_eq!(
        details.steps[0].output,
        Some(json!({ "artifact": "api-v1.2.0", "flavour": "release" }))
    );
}

fn flaky_registry(failures: u32, calls: Arc<AtomicU32>, terminal: bool) -> StepRegistry {
    let mut registry = StepRegistry::new();
    registry
        .step("flaky", move |ctx: StepContext, _input: Value| {
            let calls = Arc::clone(&calls);
            async move {
                let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
                assert_eq!(ctx.attempt(), n, "attempts are numbered from 1");
                if n <= failures {
                    let message = format!("failure {n}");
                    return Err(if terminal {
                        StepError::terminal(message)
                    } else {
                        StepError::retryable(message)
                    });
                }
                ok(json!({ "succeeded_on": n }))
            }
        })
        .expect("register");
    registry
}

async fn run_flaky<S: Store>(
    store: S,
    failures: u32,
    terminal: bool,
    max_attempts: u32,
) -> (WorkflowRun, Vec<crate::StepRun>, u32) {
    let calls = Arc::new(AtomicU32::new(0));
    let engine = engine(
        store,
        flaky_registry(failures, Arc::clone(&calls), terminal),
    );
    engine.start();
    let wf = published(
        &engine,
        "flaky",
        WorkflowDefinition::new(vec![StepDefinition::new("flaky", "flaky")])
            .retry(RetryPolicy::fixed(max_attempts, Duration::from_millis(5))),
    )
    .await;
    let run = engine.start_run(wf.id, json!({})).await.expect("start");
    let done = wait(&engine, run.id).await;
    let steps = engine.run(run.id).await.expect("details").steps;
    (done, steps, calls.load(Ordering::SeqCst))
}

/// A step that fails twice then succeeds leaves three attempts in history.
pub async fn failing_step_is_retried<S: Store>(store: S) {
    let (run, steps, calls) = run_flaky(store, 2, false, 5).await;
    assert_eq!(run.status, RunStatus::Succeeded, "{run:?}");
    assert_eq!(calls, 3);
    let history: Vec<_> = steps.iter().map(|s| (s.attempt, s.status)).collect();
    assert_eq!(
        history,
        [
            (1, StepStatus::Failed),
            (2, StepStatus::Failed),
            (3, StepStatus::Succeeded)
        ]
    );
    assert_eq!(
        steps[0].error.as_ref().map(|e| e.message.as_str()),
        Some("failure 1")
    );
    assert!(steps[0].retry_at.is_some() && steps[1].retry_at.is_some());
    assert!(steps[2].retry_at.is_none());
    assert_eq!(run.output, Some(json!({ "succeeded_on": 3 })));
}

/// Once the attempts run out, the run fails with the last error.
pub async fn exhausted_retries_fail_the_run<S: Store>(store: S) {
    let (run, steps, calls) = run_flaky(store, u32::MAX, false, 3).await;
    assert_eq!(run.status, RunStatus::Failed);
    assert_eq!(calls, 3);
    assert_eq!(steps.len(), 3);
    assert!(steps.iter().all(|s| s.status == StepStatus::Failed));
    assert!(
        steps[2].retry_at.is_none(),
        "the last attempt schedules none"
    );
    let error = run.error.expect("run error");
    assert_eq!(error.message, "failure 3");
    assert_eq!(error.step.as_deref(), Some("flaky"));
}

/// A terminal error is not retried, whatever the policy.
pub async fn terminal_errors_are_not_retried<S: Store>(store: S) {
    let (run, steps, calls) = run_flaky(store, u32::MAX, true, 5).await;
    assert_eq!(run.status, RunStatus::Failed);
    assert_eq!(calls, 1);
    assert_eq!(steps.len(), 1);
    assert!(steps[0].error.as_ref().is_some_and(|e| e.terminal));
}

fn hanging_registry(started: Arc<Notify>) -> StepRegistry {
    let mut registry = StepRegistry::new();
    registry
        .step("hang", move |_ctx: StepContext, _input: Value| {
            let started = Arc::clone(&started);
            async move {
                started.notify_one();
                std::future::pending::<()>().await;
                ok(Value::Null)
            }
        })
        .expect("register")
        .step("never", |_ctx: StepContext, _input: Value| async move {
            Err::<Value, _>(StepError::terminal(
                "a step after a cancelled or timed-out one must not run",
            ))
        })
        .expect("register");
    registry
}

/// An attempt that outlives its timeout is dropped; the step and the run
/// are recorded as timed out.
pub async fn step_timeout_times_out_the_run<S: Store>(store: S) {
    let engine = engine(store, hanging_registry(Arc::new(Notify::new())));
    engine.start();
    let wf = published(
        &engine,
        "slow",
        WorkflowDefinition::new(vec![
            StepDefinition::new("hang", "hang").timeout(Duration::from_millis(50)),
            StepDefinition::new("never", "never"),
        ]),
    )
    .await;
    let run = engine.start_run(wf.id, json!({})).await.expect("start");
    let done = wait(&engine, run.id).await;
    assert_eq!(done.status, RunStatus::TimedOut);
    let steps = engine.run(run.id).await.expect("details").steps;
    assert_eq!(steps.len(), 1);
    assert_eq!(steps[0].status, StepStatus::TimedOut);
}

/// The run timeout ends a run whose step would never finish.
pub async fn run_timeout_times_out_the_run<S: Store>(store: S) {
    let engine = engine(store, hanging_registry(Arc::new(Notify::new())));
    engine.start();
    let wf = published(
        &engine,
        "slow",
        WorkflowDefinition::new(vec![StepDefinition::new("hang", "hang")])
            .timeout(Duration::from_millis(100)),
    )
    .await;
    let run = engine.start_run(wf.id, json!({})).await.expect("start");
    let done = wait(&engine, run.id).await;
    assert_eq!(done.status, RunStatus::TimedOut);
    assert!(done.deadline.is_some());
    let steps = engine.run(run.id).await.expect("details").steps;
    assert_eq!(steps[0].status, StepStatus::TimedOut);
}

/// Cancelling a running run stops its step and starts no later one.
pub async fn cancel_stops_a_running_run<S: Store>(store: S) {
    let started = Arc::new(Notify::new());
    let engine = engine(store, hanging_registry(Arc::clone(&started)));
    engine.start();
    let wf = published(
        &engine,
        "cancel-me",
        WorkflowDefinition::new(vec![
            StepDefinition::new("hang", "hang"),
            StepDefinition::new("never", "never"),
        ]),
    )
    .await;
    let run = engine.start_run(wf.id, json!({})).await.expect("start");
    tokio::time::timeout(PATIENCE, started.notified())
        .await
        .expect("step started");
    engine.cancel_run(run.id).await.expect("cancel");
    let done = wait(&engine, run.id).await;
    assert_eq!(done.status, RunStatus::Cancelled);
    let steps = engine.run(run.id).await.expect("details").steps;
    assert_eq!(steps.len(), 1);
    assert_eq!(steps[0].status, StepStatus::Cancelled);
    assert!(matches!(
        engine.cancel_run(run.id).await,
        Err(EngineError::RunFinished {
            status: RunStatus::Cancelled,
            ..
        })
    ));
}

/// A handler sees cancellation through its context and may clean up.
pub async fn handlers_see_cancellation<S: Store>(store: S) {
    let saw = Arc::new(AtomicU32::new(0));
    let started = Arc::new(Notify::new());
    let mut registry = StepRegistry::new();
    {
        let (saw, started) = (Arc::clone(&saw), Arc::clone(&started));
        registry
            .step("watch", move |ctx: StepContext, _input: Value| {
                let (saw, started) = (Arc::clone(&saw), Arc::clone(&started));
                async move {
                    started.notify_one();
                    ctx.cancelled().await;
                    saw.fetch_add(1, Ordering::SeqCst);
                    Err::<Value, _>(StepError::terminal("stopped on cancellation"))
                }
            })
            .expect("register");
    }
    let engine = engine(store, registry);
    engine.start();
    let wf = published(
        &engine,
        "watcher",
        WorkflowDefinition::new(vec![StepDefinition::new("watch", "watch")]),
    )
    .await;
    let run = engine.start_run(wf.id, json!({})).await.expect("start");
    tokio::time::timeout(PATIENCE, started.notified())
        .await
        .expect("step started");
    engine.cancel_run(run.id).await.expect("cancel");
    let done = wait(&engine, run.id).await;
    assert_eq!(done.status, RunStatus::Cancelled, "{done:?}");
    assert_eq!(saw.load(Ordering::SeqCst), 1);
}

/// A queued run is cancelled at once and never executes.
pub async fn cancel_a_queued_run<S: Store>(store: S) {
    let engine = engine(store, hanging_registry(Arc::new(Notify::new())));
    let wf = published(
        &engine,
        "queued",
        WorkflowDefinition::new(vec![StepDefinition::new("never", "never")]),
    )
    .await;
    let run = engine.start_run(wf.id, json!({})).await.expect("start");
    let cancelled = engine.cancel_run(run.id).await.expect("cancel");
    assert_eq!(cancelled.status, RunStatus::Cancelled);
    engine.start();
    let done = wait(&engine, run.id).await;
    assert_eq!(done.status, RunStatus::Cancelled);
    assert!(engine.run(run.id).await.expect("details").steps.is_empty());
}

/// A run finishes on the version it started with, even when a newer one is
/// published mid-run.
pub async fn runs_stay_on_their_version<S: Store>(store: S) {
    let gate = Arc::new(Notify::new());
    let entered = Arc::new(Notify::new());
    let mut registry = StepRegistry::new();
    {
        let (gate, entered) = (Arc::clone(&gate), Arc::clone(&entered));
        registry
            .step("gate", move |_ctx: StepContext, _input: Value| {
                let (gate, entered) = (Arc::clone(&gate), Arc::clone(&entered));
                async move {
                    entered.notify_one();
                    gate.notified().await;
                    ok(json!("gate"))
                }
            })
            .expect("register")
            .step("v1", |_ctx: StepContext, _input: Value| async {
                ok(json!("v1"))
            })
            .expect("register")
            .step("v2", |_ctx: StepContext, _input: Value| async {
                ok(json!("v2"))
            })
            .expect("register");
    }
    let engine = engine(store, registry);
    engine.start();
    let wf = engine.create_workflow("pinned").await.expect("create");
    let definition = |last: &str| {
        WorkflowDefinition::new(vec![
            StepDefinition::new("gate", "gate"),
            StepDefinition::new("last", last),
        ])
    };
    engine.publish(wf.id, definition("v1")).await.expect("v1");
    let run = engine.start_run(wf.id, json!({})).await.expect("start");
    tokio::time::timeout(PATIENCE, entered.notified())
        .await
        .expect("gate entered");
    let v2 = engine.publish(wf.id, definition("v2")).await.expect("v2");
    assert_eq!(v2.number, 2);
    gate.notify_one();
    let done = wait(&engine, run.id).await;
    assert_eq!(done.status, RunStatus::Succeeded);
    assert_eq!(done.version, 1);
    assert_eq!(done.output, Some(json!("v1")));

    let next = engine.start_run(wf.id, json!({})).await.expect("start v2");
    assert_eq!(next.version, 2);
    gate.notify_one();
    assert_eq!(wait(&engine, next.id).await.output, Some(json!("v2")));
}

/// An inactive workflow refuses new runs; a run in flight finishes.
pub async fn inactive_workflows_refuse_runs<S: Store>(store: S) {
    let gate = Arc::new(Notify::new());
    let entered = Arc::new(Notify::new());
    let mut registry = StepRegistry::new();
    {
        let (gate, entered) = (Arc::clone(&gate), Arc::clone(&entered));
        registry
            .step("gate", move |_ctx: StepContext, _input: Value| {
                let (gate, entered) = (Arc::clone(&gate), Arc::clone(&entered));
                async move {
                    entered.notify_one();
                    gate.notified().await;
                    ok(json!("done"))
                }
            })
            .expect("register");
    }
    let engine = engine(store, registry);
    engine.start();
    let wf = published(
        &engine,
        "pausable",
        WorkflowDefinition::new(vec![StepDefinition::new("gate", "gate")]),
    )
    .await;
    let run = engine.start_run(wf.id, json!({})).await.expect("start");
    tokio::time::timeout(PATIENCE, entered.notified())
        .await
        .expect("entered");
    engine
        .set_workflow_active(wf.id, false)
        .await
        .expect("deactivate");
    assert!(matches!(
        engine.start_run(wf.id, json!({})).await,
        Err(EngineError::WorkflowInactive(name)) if name == "pausable"
    ));
    gate.notify_one();
    assert_eq!(wait(&engine, run.id).await.status, RunStatus::Succeeded);
}

/// Publishing validates against the registered handlers, and republishing
/// the latest definition returns it instead of a copy.
pub async fn publishing_validates_and_numbers_versions<S: Store>(store: S) {
    let mut registry = StepRegistry::new();
    registry
        .step("known", |_ctx: StepContext, _input: Value| async {
            ok(Value::Null)
        })
        .expect("register");
    let engine = engine(store, registry);
    let wf = engine.create_workflow("versions").await.expect("create");
    let err = engine
        .publish(
            wf.id,
            WorkflowDefinition::new(vec![StepDefinition::new("a", "unknown")]),
        )
        .await
        .expect_err("unknown handler");
    assert!(
        err.to_string().contains("unknown handler \"unknown\""),
        "{err}"
    );
    assert!(matches!(
        engine.start_run(wf.id, json!({})).await,
        Err(EngineError::NoVersion(_))
    ));
    let one = WorkflowDefinition::new(vec![StepDefinition::new("a", "known")]);
    let two = WorkflowDefinition::new(vec![StepDefinition::new("b", "known")]);
    let v1 = engine.publish(wf.id, one.clone()).await.expect("v1");
    let again = engine.publish(wf.id, one).await.expect("v1 again");
    let v2 = engine.publish(wf.id, two).await.expect("v2");
    assert_eq!((v1.number, again.id, v2.number), (1, v1.id, 2));
    assert_eq!(engine.versions(wf.id).await.expect("versions").len(), 2);
    assert!(matches!(
        engine.create_workflow("versions").await,
        Err(EngineError::Store(crate::StoreError::AlreadyExists { .. }))
    ));
    assert!(matches!(
        engine.create_workflow("no spaces").await,
        Err(EngineError::InvalidName { .. })
    ));
}

/// Starting twice with one idempotency key gives one run.
pub async fn idempotency_keys_start_one_run<S: Store>(store: S) {
    let mut registry = StepRegistry::new();
    registry
        .step("noop", |_ctx: StepContext, _input: Value| async {
            ok(Value::Null)
        })
        .expect("register");
    let engine = engine(store, registry);
    engine.start();
    let wf = published(
        &engine,
        "once",
        WorkflowDefinition::new(vec![StepDefinition::new("noop", "noop")]),
    )
    .await;
    let options = RunOptions {
        idempotency_key: Some("order-42".into()),
        ..RunOptions::default()
    };
    let first = engine
        .start_run_with(wf.id, json!({ "n": 1 }), options.clone())
        .await
        .expect("first");
    let second = engine
        .start_run_with(wf.id, json!({ "n": 2 }), options)
        .await
        .expect("second");
    assert_eq!(first.id, second.id);
    assert_eq!(*second.input, json!({ "n": 1 }));
    assert!(first.event_id.is_some());
    wait(&engine, first.id).await;
    let runs = engine
        .list_runs(&crate::RunQuery {
            workflow_id: Some(wf.id),
            ..Default::default()
        })
        .await
        .expect("list");
    assert_eq!(runs.items.len(), 1);
}

/// Subscribers see a run's life in order.
pub async fn subscribers_see_every_transition<S: Store>(store: S) {
    let mut registry = StepRegistry::new();
    registry
        .step("noop", |ctx: StepContext, _input: Value| async move {
            ctx.progress(json!({ "half": true }));
            ok(Value::Null)
        })
        .expect("register");
    let engine = engine(store, registry);
    let mut updates = engine.subscribe();
    engine.start();
    let wf = published(
        &engine,
        "watched",
        WorkflowDefinition::new(vec![
            StepDefinition::new("one", "noop"),
            StepDefinition::new("two", "noop"),
        ]),
    )
    .await;
    let run = engine.start_run(wf.id, json!({})).await.expect("start");
    let mut seen = Vec::new();
    loop {
        let update = tokio::time::timeout(PATIENCE, updates.recv())
            .await
            .expect("an update in time")
            .expect("no lag");
        let finished = matches!(update, RunUpdate::RunFinished { .. });
        seen.push(update);
        if finished {
            break;
        }
    }
    let kinds: Vec<String> = seen
        .iter()
        .map(|u| {
            format!("{u:?}")
                .split([' ', '{'])
                .next()
                .unwrap_or("")
                .to_owned()
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "RunQueued",
            "RunStarted",
            "StepStarted",
            "StepProgress",
            "StepSucceeded",
            "StepStarted",
            "StepProgress",
            "StepSucceeded",
            "RunFinished"
        ]
    );
    assert!(matches!(
        seen.last(),
        Some(RunUpdate::RunFinished { run_id, status: RunStatus::Succeeded }) if *run_id == run.id
    ));
}

/// An engine dropped mid-step loses nothing: a new engine on the same store
/// completes the run, completed steps are not invoked again, and the
/// interrupted step is invoked again with the same idempotency key.
pub async fn a_new_engine_recovers_an_interrupted_run<S: Store + Clone>(store: S) {
    #[derive(Default)]
    struct Seen {
        first: AtomicU32,
        second: AtomicU32,
        keys: Mutex<Vec<String>>,
    }
    let seen = Arc::new(Seen::default());
    let entered = Arc::new(Notify::new());
    let registry = |seen: Arc<Seen>, entered: Arc<Notify>| {
        let mut registry = StepRegistry::new();
        let first = Arc::clone(&seen);
        registry
            .step("first", move |_ctx: StepContext, _input: Value| {
                let seen = Arc::clone(&first);
                async move {
                    seen.first.fetch_add(1, Ordering::SeqCst);
                    ok(json!("first done"))
                }
            })
            .expect("register")
            .step("second", move |ctx: StepContext, _input: Value| {
                let (seen, entered) = (Arc::clone(&seen), Arc::clone(&entered));
                async move {
                    let call = seen.second.fetch_add(1, Ordering::SeqCst) + 1;
                    seen.keys.lock().push(ctx.idempotency_key());
                    if call == 1 {
                        // The first engine dies while this attempt runs.
                        entered.notify_one();
                        std::future::pending::<()>().await;
                    }
                    ok(json!({ "first": ctx.output("first").cloned() }))
                }
            })
            .expect("register");
        registry
    };
    let first_engine = engine(
        store.clone(),
        registry(Arc::clone(&seen), Arc::clone(&entered)),
    );
    first_engine.start();
    let wf = first_engine
        .create_workflow("crashy")
        .await
        .expect("create");
    first_engine
        .publish(
            wf.id,
            WorkflowDefinition::new(vec![
                StepDefinition::new("first", "first"),
                StepDefinition::new("second", "second"),
            ]),
        )
        .await
        .expect("publish");
    let run = first_engine
        .start_run(wf.id, json!({}))
        .await
        .expect("start");
    tokio::time::timeout(PATIENCE, entered.notified())
        .await
        .expect("second step entered");
    drop(first_engine);

    let second_engine = engine(store, registry(Arc::clone(&seen), Arc::new(Notify::new())));
    second_engine.start();
    let done = wait(&second_engine, run.id).await;
    assert_eq!(done.status, RunStatus::Succeeded, "{done:?}");
    assert_eq!(done.output, Some(json!({ "first": "first done" })));
    assert_eq!(
        seen.first.load(Ordering::SeqCst),
        1,
        "completed steps never rerun"
    );
    assert_eq!(seen.second.load(Ordering::SeqCst), 2);
    let keys = seen.keys.lock().clone();
    assert_eq!(keys[0], keys[1], "one idempotency key across attempts");
    let history: Vec<_> = second_engine
        .run(run.id)
        .await
        .expect("details")
        .steps
        .iter()
        .map(|s| (s.step_key.clone(), s.attempt, s.status))
        .collect();
    assert_eq!(
        history,
        [
            ("first".to_owned(), 1, StepStatus::Succeeded),
            ("second".to_owned(), 1, StepStatus::Interrupted),
            ("second".to_owned(), 2, StepStatus::Succeeded),
        ]
    );
}

/// Two engines on one store never run the same step at the same time, and
/// between them run every step exactly once.
pub async fn two_engines_never_run_one_step_twice<S: Store + Clone>(store: S) {
    #[derive(Default)]
    struct Tracker {
        running: Mutex<HashSet<(crate::RunId, String)>>,
        done: Mutex<HashSet<(crate::RunId, String)>>,
        overlaps: AtomicU32,
        repeats: AtomicU32,
    }
    let tracker = Arc::new(Tracker::default());
    let registry = |tracker: Arc<Tracker>| {
        let mut registry = StepRegistry::new();
        registry
            .step("tracked", move |ctx: StepContext, _input: Value| {
                let tracker = Arc::clone(&tracker);
                async move {
                    let key = (ctx.run_id(), ctx.step_key().to_owned());
                    if !tracker.running.lock().insert(key.clone()) {
                        tracker.overlaps.fetch_add(1, Ordering::SeqCst);
                    }
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    tracker.running.lock().remove(&key);
                    if !tracker.done.lock().insert(key) {
                        tracker.repeats.fetch_add(1, Ordering::SeqCst);
                    }
                    ok(Value::Null)
                }
            })
            .expect("register");
        registry
    };
    // Leases long enough that no load spike lets one lapse: this case is
    // about claims, not about recovery (which runs steps again by design).
    let engine = |store: S, registry: StepRegistry| {
        Engine::builder(store, registry)
            .lease_ttl(Duration::from_secs(30))
            .poll_interval(Duration::from_millis(20))
            .build()
    };
    let a = engine(store.clone(), registry(Arc::clone(&tracker)));
    let b = engine(store, registry(Arc::clone(&tracker)));
    let wf = a.create_workflow("shared").await.expect("create");
    a.publish(
        wf.id,
        WorkflowDefinition::new(vec![
            StepDefinition::new("one", "tracked"),
            StepDefinition::new("two", "tracked"),
            StepDefinition::new("three", "tracked"),
        ]),
    )
    .await
    .expect("publish");
    let mut ids = Vec::new();
    for i in 0..100 {
        ids.push(
            a.start_run(wf.id, json!({ "i": i }))
                .await
                .expect("start")
                .id,
        );
    }
    a.start();
    b.start();
    for id in ids {
        assert_eq!(wait(&a, id).await.status, RunStatus::Succeeded);
    }
    assert_eq!(tracker.overlaps.load(Ordering::SeqCst), 0);
    assert_eq!(tracker.repeats.load(Ordering::SeqCst), 0);
    assert_eq!(tracker.done.lock().len(), 300);
}

/// A thousand concurrent runs all reach a terminal state.
pub async fn a_thousand_concurrent_runs_finish<S: Store>(store: S) {
    let mut registry = StepRegistry::new();
    registry
        .step("noop", |_ctx: StepContext, input: Value| async move {
            ok(input)
        })
        .expect("register");
    let engine = Engine::builder(store, registry)
        .max_concurrent_runs(256)
        .build();
    engine.start();
    let wf = published(
        &engine,
        "many",
        WorkflowDefinition::new(vec![
            StepDefinition::new("a", "noop"),
            StepDefinition::new("b", "noop"),
            StepDefinition::new("c", "noop"),
        ]),
    )
    .await;
    let starts = (0..1000).map(|i| {
        let engine = engine.clone();
        async move { engine.start_run(wf.id, json!({ "i": i })).await }
    });
    let runs = futures::future::try_join_all(starts).await.expect("start");
    for run in &runs {
        let done = wait(&engine, run.id).await;
        assert_eq!(done.status, RunStatus::Succeeded);
        assert_eq!(done.output, Some((*run.input).clone()));
    }
}

/// Shutdown stops claiming, lets a step that finishes within the grace
/// period complete its run, and leaves a step that does not to recovery,
/// which another engine completes.
pub async fn shutdown_finishes_or_leaves_runs_to_recovery<S: Store + Clone>(store: S) {
    let entered = Arc::new(Notify::new());
    let calls = Arc::new(AtomicU32::new(0));
    let registry = |entered: Arc<Notify>, calls: Arc<AtomicU32>| {
        let mut registry = StepRegistry::new();
        registry
            .step("quick", move |_ctx: StepContext, _input: Value| {
                let entered = Arc::clone(&entered);
                async move {
                    entered.notify_one();
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    ok(json!("quick"))
                }
            })
            .expect("register")
            .step("slow", move |ctx: StepContext, _input: Value| {
                let calls = Arc::clone(&calls);
                async move {
                    if calls.fetch_add(1, Ordering::SeqCst) == 0 {
                        std::future::pending::<()>().await;
                    }
                    ok(json!({ "attempt": ctx.attempt() }))
                }
            })
            .expect("register");
        registry
    };
    let first = engine(
        store.clone(),
        registry(Arc::clone(&entered), Arc::clone(&calls)),
    );
    first.start();
    let wf = published(
        &first,
        "draining",
        WorkflowDefinition::new(vec![
            StepDefinition::new("quick", "quick"),
            StepDefinition::new("slow", "slow"),
        ]),
    )
    .await;
    let run = first.start_run(wf.id, json!({})).await.expect("start");
    tokio::time::timeout(PATIENCE, entered.notified())
        .await
        .expect("quick step entered");
    first.shutdown(Duration::from_millis(300)).await;
    let after = first.run(run.id).await.expect("details");
    assert_eq!(after.run.status, RunStatus::Running, "left for recovery");
    assert_eq!(
        after.steps[0].status,
        StepStatus::Succeeded,
        "quick step finished"
    );
    let queued = first.start_run(wf.id, json!({})).await.expect("queue");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        first.store().get_run(queued.id).await.expect("get").status,
        RunStatus::Queued,
        "a stopped engine claims nothing"
    );
    drop(first);

    let second = engine(store, registry(Arc::new(Notify::new()), Arc::clone(&calls)));
    second.start();
    let done = wait(&second, run.id).await;
    assert_eq!(done.status, RunStatus::Succeeded);
    assert_eq!(done.output, Some(json!({ "attempt": 2 })));
    assert_eq!(wait(&second, queued.id).await.status, RunStatus::Succeeded);
}

/// Expands to one `#[tokio::test]` per engine-level scenario (the cases of
/// [`engine`](crate::testing::engine) and
/// [`triggers`](crate::testing::triggers)), each on a fresh store from the
/// factory; the factory is the one
/// [`store_conformance!`](crate::store_conformance) takes.
///
/// ```ignore
/// taskforge_core::engine_conformance!(|| async { MemoryStore::new() });
/// ```
#[macro_export]
macro_rules! engine_conformance {
    (@cases $factory:expr; $($module:ident :: $case:ident),* $(,)?) => {
        $(
            #[::tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $case() {
                $crate::testing::run_case($factory, $crate::testing::$module::$case).await;
            }
        )*
    };
    ($factory:expr $(,)?) => {
        $crate::engine_conformance!(@cases $factory;
            engine::linear_run_passes_data,
            engine::failing_step_is_retried,
            engine::exhausted_retries_fail_the_run,
            engine::terminal_errors_are_not_retried,
            engine::step_timeout_times_out_the_run,
            engine::run_timeout_times_out_the_run,
            engine::cancel_stops_a_running_run,
            engine::handlers_see_cancellation,
            engine::cancel_a_queued_run,
            engine::runs_stay_on_their_version,
            engine::inactive_workflows_refuse_runs,
            engine::publishing_validates_and_numbers_versions,
            engine::idempotency_keys_start_one_run,
            engine::subscribers_see_every_transition,
            engine::a_new_engine_recovers_an_interrupted_run,
            engine::two_engines_never_run_one_step_twice,
            engine::a_thousand_concurrent_runs_finish,
            engine::shutdown_finishes_or_leaves_runs_to_recovery,
            triggers::concurrent_webhook_deliveries_start_one_run,
            triggers::rejected_webhook_deliveries_store_nothing,
            triggers::filtered_and_disabled_deliveries_are_recorded,
            triggers::dedup_window_expires,
            triggers::replay_links_runs_to_their_event,
            triggers::bad_cron_triggers_are_refused,
            triggers::daily_cron_fires_once_a_day_across_dst,
            triggers::missed_ticks_follow_the_policy,
            triggers::two_engines_fire_each_slot_once,
            triggers::overlapping_ticks_follow_the_policy,
        );
    };
}
