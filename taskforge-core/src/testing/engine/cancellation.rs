//! Cancellation scenarios: of a running run, seen by its handler, and of a
//! queued run.

use std::sync::atomic::{AtomicU32, Ordering};

use serde_json::json;

use crate::{EngineError, RunStatus, StepDefinition, StepStatus};

use super::*;

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
