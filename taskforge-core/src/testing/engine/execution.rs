//! Scenarios of a run's life: steps in order passing data, retries,
//! step and run timeouts, and the updates subscribers see.

use std::sync::atomic::{AtomicU32, Ordering};

use serde_json::json;

use crate::{RetryPolicy, RunStatus, RunUpdate, StepDefinition, StepStatus};

use super::*;

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
