//! Scenarios of engines that stop or share a store: recovery of a run
//! interrupted by a crash, two engines on one store, a thousand concurrent
//! runs, and shutdown.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU32, Ordering};

use parking_lot::Mutex;
use serde_json::json;

use crate::{RunStatus, StepDefinition, StepStatus};

use super::*;

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
