//! Durable waits: wait steps for a time or a signal, and retry backoffs,
//! park their run (no worker, lease or engine slot) until it is due, on
//! the engine's [`ManualClock`], and any engine goes on with it.

use std::sync::atomic::{AtomicU32, Ordering};

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use serde_json::json;

use crate::clock::ManualClock;
use crate::{
    ConcurrencyLimit, EngineError, OnTimeout, RetryPolicy, RunStatus, StepDefinition, StepRun,
    StepStatus, Wait,
};

use super::*;

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 2, 9, 0, 0)
        .single()
        .expect("a valid time")
}

/// An engine on `clock` that parks every wait at once.
fn waiting_engine<S: Store>(
    store: S,
    registry: StepRegistry,
    clock: &ManualClock,
) -> Engine<S, StepRegistry> {
    Engine::builder(store, registry)
        .clock(clock.clone())
        .park_after(Duration::ZERO)
        .lease_ttl(Duration::from_millis(500))
        .poll_interval(Duration::from_millis(20))
        .build()
}

/// `echo` returns its input; `seen` returns the outputs it sees by key.
fn registry() -> StepRegistry {
    let mut registry = StepRegistry::new();
    registry
        .step("echo", |_ctx: StepContext, input: Value| async move {
            ok(input)
        })
        .expect("register")
        .step("seen", |ctx: StepContext, _input: Value| async move {
            let seen: serde_json::Map<String, Value> = ctx.outputs().iter().cloned().collect();
            ok(Value::Object(seen))
        })
        .expect("register");
    registry
}

/// Polls the stored run until `check` holds.
async fn until<S: Store>(
    engine: &Engine<S, StepRegistry>,
    id: RunId,
    what: &str,
    check: impl Fn(&WorkflowRun) -> bool,
) -> WorkflowRun {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let run = engine.store().get_run(id).await.expect("get run");
        if check(&run) {
            return run;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "run {id} was not {what} within {PATIENCE:?}: {run:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Waits until run `id` is parked, and checks it holds no lease.
async fn parked<S: Store>(engine: &Engine<S, StepRegistry>, id: RunId) -> WorkflowRun {
    let run = until(engine, id, "parked", |r| r.status == RunStatus::Waiting).await;
    assert_eq!(run.lease, None, "a parked run holds no lease");
    run
}

fn step<'a>(steps: &'a [StepRun], key: &str) -> &'a StepRun {
    steps
        .iter()
        .filter(|s| s.step_key == key)
        .max_by_key(|s| s.attempt)
        .unwrap_or_else(|| panic!("no attempt of {key}: {steps:?}"))
}

/// A sleep step parks its run, without a lease, until the clock passes
/// its end; then the run goes on and finishes. Nothing after the sleep
/// runs before.
pub async fn a_sleep_parks_the_run_until_the_clock_passes_it<S: Store>(store: S) {
    let clock = ManualClock::new(t0());
    let engine = waiting_engine(store, registry(), &clock);
    engine.start();
    let wf = published(
        &engine,
        "sleeper",
        WorkflowDefinition::new(vec![
            StepDefinition::new("first", "echo"),
            StepDefinition::sleep("nap", Duration::from_secs(600)),
            StepDefinition::new("after", "seen"),
        ]),
    )
    .await;
    let run = engine
        .start_run(wf.id, json!({ "n": 1 }))
        .await
        .expect("start");
    let waiting = parked(&engine, run.id).await;
    assert_eq!(waiting.wake_at, Some(t0() + TimeDelta::seconds(600)));
    let steps = engine.run(run.id).await.expect("details").steps;
    assert_eq!(step(&steps, "nap").status, StepStatus::Running);
    assert!(steps.iter().all(|s| s.step_key != "after"), "{steps:?}");

    // Not due a second early, even after a few polls.
    clock.advance(TimeDelta::seconds(599));
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        engine.store().get_run(run.id).await.expect("get").status,
        RunStatus::Waiting
    );
    clock.advance(TimeDelta::seconds(1));
    let done = wait(&engine, run.id).await;
    assert_eq!(done.status, RunStatus::Succeeded, "{done:?}");
    assert_eq!(done.wake_at, None);
    let steps = engine.run(run.id).await.expect("details").steps;
    let nap = step(&steps, "nap");
    assert_eq!((nap.status, nap.attempt), (StepStatus::Succeeded, 1));
    // `null` (a store may keep it as no output at all).
    assert_eq!(nap.output.clone().unwrap_or(Value::Null), Value::Null);
    assert_eq!(nap.finished_at, Some(t0() + TimeDelta::seconds(600)));
    assert_eq!(
        done.output,
        Some(json!({ "first": { "n": 1 }, "nap": null }))
    );
}

/// A wait step for a signal parks the run; the signal wakes it, and the
/// next step receives the signal's payload as the wait step's output.
pub async fn a_signal_wakes_a_waiting_run_with_its_payload<S: Store>(store: S) {
    let clock = ManualClock::new(t0());
    let engine = waiting_engine(store, registry(), &clock);
    engine.start();
    let wf = published(
        &engine,
        "approval",
        WorkflowDefinition::new(vec![
            StepDefinition::wait_for_signal("approval", "approved", None, OnTimeout::Fail),
            StepDefinition::new("deploy", "seen"),
        ]),
    )
    .await;
    let run = engine.start_run(wf.id, json!({})).await.expect("start");
    let waiting = parked(&engine, run.id).await;
    assert_eq!(waiting.wake_at, None, "it waits for a signal alone");

    // A signal of another name wakes nothing for good.
    engine
        .signal_run(run.id, "rejected", json!({ "by": "bob" }))
        .await
        .expect("signal");
    let again = until(&engine, run.id, "parked again", |r| {
        r.status == RunStatus::Waiting && r.lease.is_none() && r.wake_at.is_none()
    })
    .await;
    assert_eq!(again.signals.len(), 1);

    let signalled = engine
        .signal_run(run.id, "approved", json!({ "by": "ada" }))
        .await
        .expect("signal");
    assert_eq!(signalled.signals.len(), 2);
    assert_eq!(signalled.signals[1].received_at, t0());
    let done = wait(&engine, run.id).await;
    assert_eq!(done.status, RunStatus::Succeeded, "{done:?}");
    assert_eq!(done.output, Some(json!({ "approval": { "by": "ada" } })));
    let steps = engine.run(run.id).await.expect("details").steps;
    let approval = step(&steps, "approval");
    assert_eq!(approval.status, StepStatus::Succeeded);
    assert_eq!(approval.signal, Some(1), "the second signal, by number");
    assert_eq!(approval.output, Some(json!({ "by": "ada" })));

    // A finished run takes no signal.
    assert!(matches!(
        engine.signal_run(run.id, "approved", json!(null)).await,
        Err(EngineError::RunFinished {
            status: RunStatus::Succeeded,
            ..
        })
    ));
    assert!(matches!(
        engine.signal_run(run.id, "not a name", json!(null)).await,
        Err(EngineError::InvalidInput(_))
    ));
}

/// Signals sent before the run reaches its wait steps are kept: one sent
/// while the run is queued, one while it sleeps; two wait steps for one
/// name receive them oldest first, each once.
pub async fn signals_sent_early_are_received_in_order<S: Store>(store: S) {
    let clock = ManualClock::new(t0());
    let engine = waiting_engine(store, registry(), &clock);
    let wf = published(
        &engine,
        "early",
        WorkflowDefinition::new(vec![
            StepDefinition::wait_for_signal("first", "go", None, OnTimeout::Fail),
            StepDefinition::sleep("nap", Duration::from_secs(3_600)),
            StepDefinition::wait_for_signal("second", "go", None, OnTimeout::Fail),
            StepDefinition::new("end", "seen"),
        ]),
    )
    .await;
    let run = engine.start_run(wf.id, json!({})).await.expect("start");
    engine
        .signal_run(run.id, "go", json!(1))
        .await
        .expect("signal while queued");
    engine.start();
    // The first wait receives it at once; the sleep parks the run.
    let sleeping = until(&engine, run.id, "sleeping", |r| {
        r.status == RunStatus::Waiting && r.wake_at == Some(t0() + TimeDelta::hours(1))
    })
    .await;
    assert_eq!(sleeping.lease, None);
    engine
        .signal_run(run.id, "go", json!(2))
        .await
        .expect("signal while sleeping");
    // The signal wakes it, but the sleep is not over: parked again.
    until(&engine, run.id, "parked again until the sleep ends", |r| {
        r.status == RunStatus::Waiting
            && r.lease.is_none()
            && r.wake_at == Some(t0() + TimeDelta::hours(1))
    })
    .await;
    let steps = engine.run(run.id).await.expect("details").steps;
    assert!(steps.iter().all(|s| s.step_key != "second"), "{steps:?}");
    clock.advance(TimeDelta::hours(1));
    let done = wait(&engine, run.id).await;
    assert_eq!(done.status, RunStatus::Succeeded, "{done:?}");
    assert_eq!(
        done.output,
        Some(json!({ "first": 1, "nap": null, "second": 2 }))
    );
    let steps = engine.run(run.id).await.expect("details").steps;
    assert_eq!(step(&steps, "first").signal, Some(0));
    assert_eq!(step(&steps, "second").signal, Some(1));
}

/// A wait for a signal with a timeout: with `on_timeout` fail, the step and
/// the run fail when it passes; with continue, the step succeeds with
/// `null` and the run goes on; a signal after the timeout does not count.
/// A run timeout ends a run that waits for a signal without one.
pub async fn signal_timeouts_fail_or_continue<S: Store>(store: S) {
    let clock = ManualClock::new(t0());
    let engine = waiting_engine(store, registry(), &clock);
    engine.start();
    let five = Some(Duration::from_secs(300));
    let strict = published(
        &engine,
        "strict",
        WorkflowDefinition::new(vec![
            StepDefinition::wait_for_signal("ack", "ack", five, OnTimeout::Fail),
            StepDefinition::new("never", "echo"),
        ]),
    )
    .await;
    let lenient = published(
        &engine,
        "lenient",
        WorkflowDefinition::new(vec![
            StepDefinition::wait_for_signal("ack", "ack", five, OnTimeout::Continue),
            StepDefinition::new("after", "seen"),
        ]),
    )
    .await;
    let bounded = published(
        &engine,
        "bounded",
        WorkflowDefinition::new(vec![StepDefinition::wait("forever", Wait::signal("ack"))])
            .timeout(Duration::from_secs(600)),
    )
    .await;
    let strict_run = engine.start_run(strict.id, json!({})).await.expect("start");
    let lenient_run = engine
        .start_run(lenient.id, json!({}))
        .await
        .expect("start");
    let bounded_run = engine
        .start_run(bounded.id, json!({}))
        .await
        .expect("start");
    for id in [strict_run.id, lenient_run.id] {
        let waiting = parked(&engine, id).await;
        assert_eq!(waiting.wake_at, Some(t0() + TimeDelta::seconds(300)));
    }
    let waiting = parked(&engine, bounded_run.id).await;
    assert_eq!(
        waiting.wake_at,
        Some(t0() + TimeDelta::seconds(600)),
        "parked until its deadline"
    );

    clock.advance(TimeDelta::seconds(301));
    // Too late for the lenient run's wait: it is over when it looks.
    engine
        .signal_run(lenient_run.id, "ack", json!("late"))
        .await
        .ok();
    let failed = wait(&engine, strict_run.id).await;
    assert_eq!(failed.status, RunStatus::Failed, "{failed:?}");
    let error = failed.error.expect("an error");
    assert_eq!(error.step.as_deref(), Some("ack"));
    assert!(error.message.contains("ack"), "{}", error.message);
    let steps = engine.run(strict_run.id).await.expect("details").steps;
    assert_eq!(step(&steps, "ack").status, StepStatus::Failed);
    assert!(steps.iter().all(|s| s.step_key != "never"));

    let lenient_done = wait(&engine, lenient_run.id).await;
    assert_eq!(lenient_done.status, RunStatus::Succeeded);
    assert_eq!(lenient_done.output, Some(json!({ "ack": null })));
    let steps = engine.run(lenient_run.id).await.expect("details").steps;
    assert_eq!(step(&steps, "ack").signal, None);

    clock.advance(TimeDelta::seconds(300));
    let timed_out = wait(&engine, bounded_run.id).await;
    assert_eq!(timed_out.status, RunStatus::TimedOut, "{timed_out:?}");
    let steps = engine.run(bounded_run.id).await.expect("details").steps;
    assert_eq!(step(&steps, "forever").status, StepStatus::TimedOut);
}

/// A waiting run survives its engine: a second engine on the store goes on
/// with it when its signal comes, and finishes it.
pub async fn a_second_engine_resumes_a_waiting_run<S: Store + Clone>(store: S) {
    let clock = ManualClock::new(t0());
    let first = waiting_engine(store.clone(), registry(), &clock);
    first.start();
    let wf = published(
        &first,
        "handover",
        WorkflowDefinition::new(vec![
            StepDefinition::new("before", "echo"),
            StepDefinition::wait_for_signal("gate", "open", None, OnTimeout::Fail),
            StepDefinition::sleep("nap", Duration::from_secs(60)),
            StepDefinition::new("after", "seen"),
        ]),
    )
    .await;
    let run = first
        .start_run(wf.id, json!({ "k": "v" }))
        .await
        .expect("start");
    parked(&first, run.id).await;
    drop(first);

    let second = waiting_engine(store, registry(), &clock);
    second.start();
    second
        .signal_run(run.id, "open", json!("now"))
        .await
        .expect("signal");
    until(&second, run.id, "sleeping", |r| {
        r.status == RunStatus::Waiting && r.wake_at == Some(t0() + TimeDelta::seconds(60))
    })
    .await;
    clock.advance(TimeDelta::seconds(60));
    let done = wait(&second, run.id).await;
    assert_eq!(done.status, RunStatus::Succeeded, "{done:?}");
    assert_eq!(
        done.output,
        Some(json!({ "before": { "k": "v" }, "gate": "now", "nap": null }))
    );
    let steps = second.run(run.id).await.expect("details").steps;
    // Every step ran once: nothing was interrupted or run again.
    assert_eq!(steps.len(), 4, "{steps:?}");
    assert!(steps.iter().all(|s| s.status == StepStatus::Succeeded));
}

/// A retry's backoff parks the run instead of holding its worker: it is
/// waiting, without a lease, until the retry is due, then the step runs
/// again and succeeds.
pub async fn a_retry_backoff_parks_the_run<S: Store>(store: S) {
    let clock = ManualClock::new(t0());
    let tries = Arc::new(AtomicU32::new(0));
    let mut registry = registry();
    {
        let tries = Arc::clone(&tries);
        registry
            .step("flaky", move |_ctx: StepContext, _input: Value| {
                let tries = Arc::clone(&tries);
                async move {
                    match tries.fetch_add(1, Ordering::SeqCst) {
                        0 => Err(StepError::retryable("not yet")),
                        _ => ok(json!("done")),
                    }
                }
            })
            .expect("register");
    }
    let engine = waiting_engine(store, registry, &clock);
    engine.start();
    let wf = published(
        &engine,
        "backoff",
        WorkflowDefinition::new(vec![StepDefinition::new("flaky", "flaky")
            .retry(RetryPolicy::fixed(3, Duration::from_secs(600)))]),
    )
    .await;
    let run = engine.start_run(wf.id, json!({})).await.expect("start");
    let waiting = parked(&engine, run.id).await;
    assert_eq!(waiting.wake_at, Some(t0() + TimeDelta::seconds(600)));
    let steps = engine.run(run.id).await.expect("details").steps;
    assert_eq!(steps.len(), 1);
    assert_eq!(steps[0].retry_at, waiting.wake_at);
    assert_eq!(tries.load(Ordering::SeqCst), 1);

    clock.advance(TimeDelta::seconds(600));
    let done = wait(&engine, run.id).await;
    assert_eq!(done.status, RunStatus::Succeeded, "{done:?}");
    assert_eq!(done.output, Some(json!("done")));
    let steps = engine.run(run.id).await.expect("details").steps;
    assert_eq!(steps.len(), 2);
    assert_eq!(tries.load(Ordering::SeqCst), 2);
}

/// Waiting runs hold no slot: with `max_concurrent_runs = 1`, a run
/// waiting for a signal does not stop another run from executing.
pub async fn a_waiting_run_holds_no_engine_slot<S: Store>(store: S) {
    let clock = ManualClock::new(t0());
    let engine = Engine::builder(store, registry())
        .clock(clock.clone())
        .park_after(Duration::ZERO)
        .max_concurrent_runs(1)
        .lease_ttl(Duration::from_millis(500))
        .poll_interval(Duration::from_millis(20))
        .build();
    engine.start();
    let waiter = published(
        &engine,
        "waiter",
        WorkflowDefinition::new(vec![StepDefinition::wait_for_signal(
            "gate",
            "open",
            None,
            OnTimeout::Fail,
        )]),
    )
    .await;
    let worker = published(
        &engine,
        "worker",
        WorkflowDefinition::new(vec![StepDefinition::new("work", "echo")]),
    )
    .await;
    let waiting = engine.start_run(waiter.id, json!({})).await.expect("start");
    parked(&engine, waiting.id).await;
    let working = engine
        .start_run(worker.id, json!({ "busy": true }))
        .await
        .expect("start");
    let done = wait(&engine, working.id).await;
    assert_eq!(done.status, RunStatus::Succeeded);
    assert_eq!(
        engine
            .store()
            .get_run(waiting.id)
            .await
            .expect("get")
            .status,
        RunStatus::Waiting,
        "the waiting run is still waiting"
    );
    engine
        .signal_run(waiting.id, "open", json!(true))
        .await
        .expect("signal");
    let opened = wait(&engine, waiting.id).await;
    assert_eq!(opened.status, RunStatus::Succeeded);
    assert_eq!(opened.output, Some(json!(true)));
}

/// On the system clock, a run parked by an engine wakes when it is due,
/// not at the engine's next poll (here a minute away).
pub async fn a_parked_run_wakes_on_time_between_polls<S: Store>(store: S) {
    let engine = Engine::builder(store, registry())
        .park_after(Duration::ZERO)
        .poll_interval(Duration::from_secs(60))
        .build();
    engine.start();
    let wf = published(
        &engine,
        "punctual",
        WorkflowDefinition::new(vec![
            StepDefinition::sleep("nap", Duration::from_millis(200)),
            StepDefinition::new("after", "echo"),
        ]),
    )
    .await;
    let began = tokio::time::Instant::now();
    let run = engine.start_run(wf.id, json!(1)).await.expect("start");
    let done = tokio::time::timeout(Duration::from_secs(20), engine.wait_for_run(run.id))
        .await
        .expect("woken before the next poll")
        .expect("wait");
    assert_eq!(done.status, RunStatus::Succeeded, "{done:?}");
    assert!(began.elapsed() >= Duration::from_millis(200));
    let steps = engine.run(run.id).await.expect("details").steps;
    let nap = step(&steps, "nap");
    let (from, to) = (nap.started_at, nap.finished_at.expect("finished"));
    assert!(to - from >= TimeDelta::milliseconds(200), "{nap:?}");
}

/// A parked run keeps the slot of its concurrency key: with one run per
/// key, a second run of the key waits until the first, parked for a
/// signal, has finished; a run of another key is not held up.
pub async fn a_waiting_run_keeps_its_key_slot<S: Store>(store: S) {
    let clock = ManualClock::new(t0());
    let engine = waiting_engine(store, registry(), &clock);
    engine.start();
    let wf = published(
        &engine,
        "one-per-repo",
        WorkflowDefinition::new(vec![
            StepDefinition::wait_for_signal("approval", "approved", None, OnTimeout::Fail),
            StepDefinition::new("deploy", "echo"),
        ])
        .concurrency(ConcurrencyLimit::per_key("/repo", 1)),
    )
    .await;
    let first = engine
        .start_run(wf.id, json!({ "repo": "a" }))
        .await
        .expect("start");
    parked(&engine, first.id).await;
    let second = engine
        .start_run(wf.id, json!({ "repo": "a" }))
        .await
        .expect("start");
    let other = engine
        .start_run(wf.id, json!({ "repo": "b" }))
        .await
        .expect("start");
    parked(&engine, other.id).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        engine.store().get_run(second.id).await.expect("get").status,
        RunStatus::Queued,
        "the key's one slot is the parked run's"
    );
    engine
        .signal_run(first.id, "approved", json!(1))
        .await
        .expect("signal");
    assert_eq!(wait(&engine, first.id).await.status, RunStatus::Succeeded);
    parked(&engine, second.id).await;
    for id in [second.id, other.id] {
        engine
            .signal_run(id, "approved", json!(2))
            .await
            .expect("signal");
        assert_eq!(wait(&engine, id).await.status, RunStatus::Succeeded);
    }
}

/// Cancelling a waiting run cancels it at once, with its waiting step.
pub async fn cancel_a_waiting_run<S: Store>(store: S) {
    let clock = ManualClock::new(t0());
    let engine = waiting_engine(store, registry(), &clock);
    engine.start();
    let wf = published(
        &engine,
        "cancel-waiting",
        WorkflowDefinition::new(vec![
            StepDefinition::wait_for_signal("gate", "open", None, OnTimeout::Fail),
            StepDefinition::new("never", "echo"),
        ]),
    )
    .await;
    let run = engine.start_run(wf.id, json!({})).await.expect("start");
    parked(&engine, run.id).await;
    let cancelled = engine.cancel_run(run.id).await.expect("cancel");
    assert_eq!(cancelled.status, RunStatus::Cancelled);
    let done = wait(&engine, run.id).await;
    assert_eq!(done.status, RunStatus::Cancelled);
    let steps = engine.run(run.id).await.expect("details").steps;
    assert_eq!(steps.len(), 1, "{steps:?}");
    assert_eq!(steps[0].status, StepStatus::Cancelled);
    assert!(matches!(
        engine.signal_run(run.id, "open", json!(null)).await,
        Err(EngineError::RunFinished { .. })
    ));
}
