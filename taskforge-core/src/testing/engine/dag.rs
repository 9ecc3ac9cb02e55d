//! Scenarios of definitions with dependencies: a fan-out whose branches
//! run at once and a fan-in that sees them all, the per-run parallel
//! limit, conditions and what follows a skipped step, a failing branch,
//! cancellation and the run timeout with several steps in flight, and
//! recovery of every branch a crashed engine left running.
//!
//! Overlap is proven with barriers (a step that waits for its siblings to
//! be running too), never with wall-clock timing.

use std::sync::atomic::{AtomicU32, Ordering};

use parking_lot::Mutex;
use serde_json::json;
use tokio::sync::{Barrier, Semaphore};

use crate::{Filter, RunStatus, StepDefinition, StepRun, StepStatus};

use super::*;

/// a -> {b, c, d} -> e
fn fan_out(branch: &str) -> WorkflowDefinition {
    WorkflowDefinition::new(vec![
        StepDefinition::new("a", "root"),
        StepDefinition::new("b", branch).depends_on(["a"]),
        StepDefinition::new("c", branch).depends_on(["a"]),
        StepDefinition::new("d", branch).depends_on(["a"]),
        StepDefinition::new("e", "join").depends_on(["b", "c", "d"]),
    ])
}

/// The handlers of [`fan_out`]: `root` answers its key, `join` the keys
/// and outputs it sees.
fn fan_registry() -> StepRegistry {
    let mut registry = StepRegistry::new();
    registry
        .step("root", |ctx: StepContext, _input: Value| async move {
            ok(json!({ "from": ctx.step_key() }))
        })
        .expect("register")
        .step("join", |ctx: StepContext, _input: Value| async move {
            let seen: Vec<&str> = ctx.outputs().iter().map(|(k, _)| k.as_str()).collect();
            let from = |key: &str| ctx.output(key).map(|o| o["from"].clone());
            ok(json!({
                "seen": seen,
                "b": from("b"), "c": from("c"), "d": from("d"),
            }))
        })
        .expect("register");
    registry
}

/// The attempts of `steps` as `(key, attempt, status)`, by step then attempt.
fn attempts(steps: &[StepRun]) -> Vec<(String, u32, StepStatus)> {
    let mut attempts: Vec<_> = steps
        .iter()
        .map(|s| (s.step_key.clone(), s.attempt, s.status))
        .collect();
    attempts.sort();
    attempts
}

/// A fan-out runs its branches at the same time (each waits at a barrier
/// that opens only when all three are running), and the fan-in sees every
/// branch's output; the run's output is the fan-in's.
pub async fn fan_out_branches_overlap_and_fan_in_sees_them<S: Store>(store: S) {
    let barrier = Arc::new(Barrier::new(3));
    let mut registry = fan_registry();
    {
        let barrier = Arc::clone(&barrier);
        registry
            .step("branch", move |ctx: StepContext, _input: Value| {
                let barrier = Arc::clone(&barrier);
                async move {
                    // Opens only when b, c and d are all running.
                    barrier.wait().await;
                    let seen: Vec<String> = ctx.outputs().iter().map(|(k, _)| k.clone()).collect();
                    ok(json!({ "from": ctx.step_key(), "seen": seen }))
                }
            })
            .expect("register");
    }
    let engine = engine(store, registry);
    engine.start();
    let wf = published(&engine, "fan-out", fan_out("branch")).await;
    let run = engine.start_run(wf.id, json!({})).await.expect("start");
    let done = wait(&engine, run.id).await;
    assert_eq!(done.status, RunStatus::Succeeded, "{done:?}");
    assert_eq!(
        done.output,
        Some(json!({ "seen": ["a", "b", "c", "d"], "b": "b", "c": "c", "d": "d" }))
    );
    let steps = engine.run(run.id).await.expect("details").steps;
    let expected: Vec<_> = ["a", "b", "c", "d", "e"]
        .iter()
        .map(|k| ((*k).to_owned(), 1, StepStatus::Succeeded))
        .collect();
    assert_eq!(attempts(&steps), expected);
    // A branch sees its ancestors' outputs only, not its siblings'.
    for step in steps
        .iter()
        .filter(|s| ["b", "c", "d"].contains(&s.step_key.as_str()))
    {
        assert_eq!(
            step.output.as_ref().map(|o| &o["seen"]),
            Some(&json!(["a"]))
        );
    }
    // The join started after every branch ended.
    let join = steps.iter().find(|s| s.step_key == "e").expect("e");
    for branch in steps
        .iter()
        .filter(|s| ["b", "c", "d"].contains(&s.step_key.as_str()))
    {
        assert!(branch.finished_at.is_some_and(|end| end <= join.started_at));
    }
}

/// With `max_parallel_steps = 2`, six independent steps run two at a time:
/// never three (counted as they run), and two at once (each waits at a
/// barrier of two).
pub async fn max_parallel_steps_bounds_a_run<S: Store>(store: S) {
    #[derive(Default)]
    struct Count {
        now: AtomicU32,
        most: AtomicU32,
    }
    let count = Arc::new(Count::default());
    let barrier = Arc::new(Barrier::new(2));
    let mut registry = StepRegistry::new();
    {
        let (count, barrier) = (Arc::clone(&count), Arc::clone(&barrier));
        registry
            .step("pair", move |_ctx: StepContext, _input: Value| {
                let (count, barrier) = (Arc::clone(&count), Arc::clone(&barrier));
                async move {
                    let now = count.now.fetch_add(1, Ordering::SeqCst) + 1;
                    count.most.fetch_max(now, Ordering::SeqCst);
                    barrier.wait().await;
                    tokio::task::yield_now().await;
                    count.now.fetch_sub(1, Ordering::SeqCst);
                    ok(Value::Null)
                }
            })
            .expect("register");
    }
    let engine = engine(store, registry);
    engine.start();
    let steps = (0..6)
        .map(|i| StepDefinition::new(format!("s{i}"), "pair").depends_on(Vec::<String>::new()))
        .collect();
    let wf = published(
        &engine,
        "two-at-a-time",
        WorkflowDefinition::new(steps).max_parallel_steps(2),
    )
    .await;
    let run = engine.start_run(wf.id, json!({})).await.expect("start");
    let done = wait(&engine, run.id).await;
    assert_eq!(done.status, RunStatus::Succeeded, "{done:?}");
    assert_eq!(count.most.load(Ordering::SeqCst), 2);
    let keys: serde_json::Map<String, Value> =
        (0..6).map(|i| (format!("s{i}"), Value::Null)).collect();
    assert_eq!(done.output, Some(Value::Object(keys)), "six sinks");
}

/// A false condition skips its step; a step whose dependencies were all
/// skipped is skipped; a step with one that succeeded runs. Conditions
/// read the input and earlier outputs.
pub async fn a_false_condition_skips_a_branch_and_its_dependants<S: Store>(store: S) {
    let calls = Arc::new(Mutex::new(Vec::<String>::new()));
    let mut registry = StepRegistry::new();
    {
        let calls = Arc::clone(&calls);
        registry
            .step("track", move |ctx: StepContext, _input: Value| {
                let calls = Arc::clone(&calls);
                async move {
                    calls.lock().push(ctx.step_key().to_owned());
                    let seen: Vec<String> = ctx.outputs().iter().map(|(k, _)| k.clone()).collect();
                    ok(json!({ "ok": true, "seen": seen }))
                }
            })
            .expect("register");
    }
    let engine = engine(store, registry);
    engine.start();
    // a -> b (if /input/deploy) -> c -> f ; a -> d ; {c, d} -> e ;
    // a -> g (if a's output says ok)
    let wf = published(
        &engine,
        "conditional",
        WorkflowDefinition::new(vec![
            StepDefinition::new("a", "track"),
            StepDefinition::new("b", "track")
                .depends_on(["a"])
                .condition(Filter::equals("/input/deploy", true)),
            StepDefinition::new("c", "track").depends_on(["b"]),
            StepDefinition::new("d", "track").depends_on(["a"]),
            StepDefinition::new("e", "track").depends_on(["c", "d"]),
            StepDefinition::new("f", "track").depends_on(["c"]),
            StepDefinition::new("g", "track")
                .depends_on(["a"])
                .condition(Filter::equals("/steps/a/ok", true)),
        ]),
    )
    .await;

    let run = engine
        .start_run(wf.id, json!({ "deploy": false }))
        .await
        .expect("start");
    let done = wait(&engine, run.id).await;
    assert_eq!(done.status, RunStatus::Succeeded, "{done:?}");
    let mut called = calls.lock().clone();
    called.sort();
    assert_eq!(called, ["a", "d", "e", "g"]);
    let steps = engine.run(run.id).await.expect("details").steps;
    let status = |key: &str| {
        let attempts: Vec<_> = steps.iter().filter(|s| s.step_key == key).collect();
        assert_eq!(attempts.len(), 1, "{key}: {attempts:?}");
        attempts[0].clone()
    };
    for key in ["b", "c", "f"] {
        let step = status(key);
        assert_eq!(step.status, StepStatus::Skipped, "{key}");
        assert!(step.output.is_none());
    }
    let b = status("b").error.expect("a reason").message;
    assert!(
        b.contains("condition") && b.contains("/input/deploy"),
        "{b}"
    );
    let c = status("c").error.expect("a reason").message;
    assert!(c.contains("every step it depends on was skipped"), "{c}");
    // e ran on d alone, and saw only what succeeded upstream of it.
    assert_eq!(
        status("e").output,
        Some(json!({ "ok": true, "seen": ["a", "d"] }))
    );
    assert_eq!(status("g").status, StepStatus::Succeeded);
    // Sinks: e, f (skipped, left out) and g.
    assert_eq!(
        done.output,
        Some(json!({
            "e": { "ok": true, "seen": ["a", "d"] },
            "g": { "ok": true, "seen": ["a"] },
        }))
    );

    calls.lock().clear();
    let run = engine
        .start_run(wf.id, json!({ "deploy": true }))
        .await
        .expect("start");
    assert_eq!(wait(&engine, run.id).await.status, RunStatus::Succeeded);
    assert_eq!(calls.lock().len(), 7, "every step ran");
}

/// A branch that fails for good fails the run: a sibling still running
/// is cancelled (its error says a sibling failed), and nothing after them
/// starts.
pub async fn a_failing_branch_fails_the_run_and_cancels_its_sibling<S: Store>(store: S) {
    let started = Arc::new(Semaphore::new(0));
    let mut registry = hanging_registry(Arc::new(Notify::new()));
    {
        let started = Arc::clone(&started);
        registry
            .step("wait", move |_ctx: StepContext, _input: Value| {
                let started = Arc::clone(&started);
                async move {
                    started.add_permits(1);
                    std::future::pending::<()>().await;
                    ok(Value::Null)
                }
            })
            .expect("register");
    }
    {
        let started = Arc::clone(&started);
        registry
            .step("fail", move |_ctx: StepContext, _input: Value| {
                let started = Arc::clone(&started);
                async move {
                    // Fails only once its sibling is surely running.
                    started.acquire().await.expect("open").forget();
                    Err::<Value, _>(StepError::terminal("the tests failed"))
                }
            })
            .expect("register");
    }
    let engine = engine(store, registry);
    engine.start();
    let wf = published(
        &engine,
        "one-branch-fails",
        WorkflowDefinition::new(vec![
            StepDefinition::new("slow", "wait").depends_on(Vec::<String>::new()),
            StepDefinition::new("tests", "fail").depends_on(Vec::<String>::new()),
            StepDefinition::new("after", "never").depends_on(["slow", "tests"]),
        ]),
    )
    .await;
    let run = engine.start_run(wf.id, json!({})).await.expect("start");
    let done = wait(&engine, run.id).await;
    assert_eq!(done.status, RunStatus::Failed, "{done:?}");
    let error = done.error.expect("an error");
    assert_eq!(
        (error.message.as_str(), error.step.as_deref()),
        ("the tests failed", Some("tests"))
    );
    let steps = engine.run(run.id).await.expect("details").steps;
    assert_eq!(
        attempts(&steps),
        [
            ("slow".to_owned(), 1, StepStatus::Cancelled),
            ("tests".to_owned(), 1, StepStatus::Failed),
        ]
    );
    let slow = steps.iter().find(|s| s.step_key == "slow").expect("slow");
    let why = slow.error.as_ref().expect("a reason").message.clone();
    assert!(why.contains("\"tests\" failed"), "{why}");
}

/// Cancelling a run, or its timeout passing, stops every step it has in
/// flight: each attempt is recorded cancelled (or timed out), and the run
/// with it.
pub async fn cancel_and_timeout_stop_every_branch<S: Store>(store: S) {
    let started = Arc::new(Semaphore::new(0));
    let mut registry = StepRegistry::new();
    {
        let started = Arc::clone(&started);
        registry
            .step("wait", move |_ctx: StepContext, _input: Value| {
                let started = Arc::clone(&started);
                async move {
                    started.add_permits(1);
                    std::future::pending::<()>().await;
                    ok(Value::Null)
                }
            })
            .expect("register");
    }
    let engine = engine(store, registry);
    engine.start();
    let branches = |timeout: Option<Duration>| {
        let definition = WorkflowDefinition::new(vec![
            StepDefinition::new("left", "wait").depends_on(Vec::<String>::new()),
            StepDefinition::new("right", "wait").depends_on(Vec::<String>::new()),
        ]);
        match timeout {
            Some(t) => definition.timeout(t),
            None => definition,
        }
    };
    let wf = published(&engine, "cancel-branches", branches(None)).await;
    let run = engine.start_run(wf.id, json!({})).await.expect("start");
    tokio::time::timeout(PATIENCE, started.acquire_many(2))
        .await
        .expect("both branches started")
        .expect("open")
        .forget();
    engine.cancel_run(run.id).await.expect("cancel");
    let done = wait(&engine, run.id).await;
    assert_eq!(done.status, RunStatus::Cancelled, "{done:?}");
    let steps = engine.run(run.id).await.expect("details").steps;
    assert_eq!(
        attempts(&steps),
        [
            ("left".to_owned(), 1, StepStatus::Cancelled),
            ("right".to_owned(), 1, StepStatus::Cancelled),
        ]
    );

    let wf = published(
        &engine,
        "time-out-branches",
        branches(Some(Duration::from_millis(200))),
    )
    .await;
    let run = engine.start_run(wf.id, json!({})).await.expect("start");
    let done = wait(&engine, run.id).await;
    assert_eq!(done.status, RunStatus::TimedOut, "{done:?}");
    let steps = engine.run(run.id).await.expect("details").steps;
    assert_eq!(
        attempts(&steps),
        [
            ("left".to_owned(), 1, StepStatus::TimedOut),
            ("right".to_owned(), 1, StepStatus::TimedOut),
        ]
    );
}

/// An engine dropped mid-fan-out loses nothing: a second engine on the
/// same store resumes every branch that was in flight (each interrupted,
/// then run again), never runs a succeeded step again, and joins them.
pub async fn a_new_engine_resumes_every_branch_in_flight<S: Store + Clone>(store: S) {
    #[derive(Default)]
    struct Calls {
        by_step: Mutex<Vec<(String, u32)>>,
    }
    let calls = Arc::new(Calls::default());
    let started = Arc::new(Semaphore::new(0));
    let registry = |calls: Arc<Calls>, started: Arc<Semaphore>, hang: bool| {
        let mut registry = fan_registry();
        let (root_calls, quick_calls) = (Arc::clone(&calls), Arc::clone(&calls));
        registry
            .step("count-root", move |ctx: StepContext, _input: Value| {
                let calls = Arc::clone(&root_calls);
                async move {
                    calls
                        .by_step
                        .lock()
                        .push((ctx.step_key().to_owned(), ctx.attempt()));
                    ok(json!({ "from": "a" }))
                }
            })
            .expect("register")
            .step("quick", move |ctx: StepContext, _input: Value| {
                let calls = Arc::clone(&quick_calls);
                async move {
                    calls
                        .by_step
                        .lock()
                        .push((ctx.step_key().to_owned(), ctx.attempt()));
                    ok(json!({ "from": ctx.step_key() }))
                }
            })
            .expect("register")
            .step("slow", move |ctx: StepContext, _input: Value| {
                let (calls, started) = (Arc::clone(&calls), Arc::clone(&started));
                async move {
                    calls
                        .by_step
                        .lock()
                        .push((ctx.step_key().to_owned(), ctx.attempt()));
                    if hang {
                        // The first engine dies while this attempt runs.
                        started.add_permits(1);
                        std::future::pending::<()>().await;
                    }
                    ok(json!({ "from": ctx.step_key() }))
                }
            })
            .expect("register");
        registry
    };
    let first = engine(
        store.clone(),
        registry(Arc::clone(&calls), Arc::clone(&started), true),
    );
    first.start();
    let wf = published(
        &first,
        "crash-mid-fan-out",
        WorkflowDefinition::new(vec![
            StepDefinition::new("a", "count-root"),
            StepDefinition::new("b", "quick").depends_on(["a"]),
            StepDefinition::new("c", "slow").depends_on(["a"]),
            StepDefinition::new("d", "slow").depends_on(["a"]),
            StepDefinition::new("e", "join").depends_on(["b", "c", "d"]),
        ]),
    )
    .await;
    let run = first.start_run(wf.id, json!({})).await.expect("start");
    tokio::time::timeout(PATIENCE, started.acquire_many(2))
        .await
        .expect("c and d started")
        .expect("open")
        .forget();
    // b's success is stored on its own, c and d still running.
    let stored = tokio::time::timeout(PATIENCE, async {
        loop {
            let steps = first.store().list_step_runs(run.id).await.expect("list");
            if steps
                .iter()
                .any(|s| s.step_key == "b" && s.status == StepStatus::Succeeded)
            {
                return steps;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("b's success is stored");
    assert_eq!(
        stored
            .iter()
            .filter(|s| s.status == StepStatus::Running)
            .count(),
        2
    );
    drop(first);

    let second = engine(
        store,
        registry(Arc::clone(&calls), Arc::new(Semaphore::new(0)), false),
    );
    second.start();
    let done = wait(&second, run.id).await;
    assert_eq!(done.status, RunStatus::Succeeded, "{done:?}");
    assert_eq!(
        done.output,
        Some(json!({ "seen": ["a", "b", "c", "d"], "b": "b", "c": "c", "d": "d" }))
    );
    let mut called = calls.by_step.lock().clone();
    called.sort();
    assert_eq!(
        called,
        [
            ("a".to_owned(), 1),
            ("b".to_owned(), 1),
            ("c".to_owned(), 1),
            ("c".to_owned(), 2),
            ("d".to_owned(), 1),
            ("d".to_owned(), 2),
        ],
        "succeeded steps never run again"
    );
    let steps = second.run(run.id).await.expect("details").steps;
    assert_eq!(
        attempts(&steps),
        [
            ("a".to_owned(), 1, StepStatus::Succeeded),
            ("b".to_owned(), 1, StepStatus::Succeeded),
            ("c".to_owned(), 1, StepStatus::Interrupted),
            ("c".to_owned(), 2, StepStatus::Succeeded),
            ("d".to_owned(), 1, StepStatus::Interrupted),
            ("d".to_owned(), 2, StepStatus::Succeeded),
            ("e".to_owned(), 1, StepStatus::Succeeded),
        ]
    );
}

/// A definition without dependencies still runs one step at a time, in
/// order, even with a parallel limit: the second step starts only after
/// the first ended.
pub async fn a_linear_definition_stays_sequential<S: Store>(store: S) {
    let running = Arc::new(AtomicU32::new(0));
    let most = Arc::new(AtomicU32::new(0));
    let mut registry = StepRegistry::new();
    {
        let (running, most) = (Arc::clone(&running), Arc::clone(&most));
        registry
            .step("one", move |_ctx: StepContext, _input: Value| {
                let (running, most) = (Arc::clone(&running), Arc::clone(&most));
                async move {
                    most.fetch_max(running.fetch_add(1, Ordering::SeqCst) + 1, Ordering::SeqCst);
                    tokio::task::yield_now().await;
                    running.fetch_sub(1, Ordering::SeqCst);
                    ok(json!(1))
                }
            })
            .expect("register");
    }
    let engine = engine(store, registry);
    engine.start();
    let wf = published(
        &engine,
        "still-linear",
        WorkflowDefinition::new(vec![
            StepDefinition::new("s0", "one"),
            StepDefinition::new("s1", "one"),
            StepDefinition::new("s2", "one"),
        ])
        .max_parallel_steps(8),
    )
    .await;
    let run = engine.start_run(wf.id, json!({})).await.expect("start");
    let done = wait(&engine, run.id).await;
    assert_eq!(done.status, RunStatus::Succeeded);
    assert_eq!(done.output, Some(json!(1)));
    assert_eq!(most.load(Ordering::SeqCst), 1);
    let steps = engine.run(run.id).await.expect("details").steps;
    for pair in steps.windows(2) {
        assert!(pair[0]
            .finished_at
            .is_some_and(|end| end <= pair[1].started_at));
    }
}
