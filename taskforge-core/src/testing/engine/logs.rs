//! Step logs: what a handler logs, with `ctx.log` or `tracing`, is kept
//! with the attempt that wrote it, capped, and announced as it happens.

use std::sync::atomic::{AtomicU32, Ordering};

use serde_json::json;

use crate::store::LogQuery;
use crate::{LogLevel, LogLine, RetryPolicy, RunStatus, RunUpdate, StepDefinition, StepRun};

use super::*;

async fn lines_of<S: Store>(engine: &Engine<S, StepRegistry>, attempt: &StepRun) -> Vec<LogLine> {
    engine
        .step_logs(&LogQuery::new(attempt.run_id, attempt.id))
        .await
        .expect("step logs")
        .items
}

/// Each attempt keeps its own log: the lines of `ctx.log` and the `tracing`
/// events of the handler, in order, with their levels; subscribers see
/// every line as it is written.
pub async fn each_attempt_keeps_its_log<S: Store>(store: S) {
    let calls = Arc::new(AtomicU32::new(0));
    let mut registry = StepRegistry::new();
    let counter = Arc::clone(&calls);
    registry
        .step("deploy", move |ctx: StepContext, input: Value| {
            let counter = Arc::clone(&counter);
            async move {
                let attempt = counter.fetch_add(1, Ordering::SeqCst) + 1;
                ctx.log(LogLevel::Info, format!("deploying {}", input["tag"]));
                tracing::warn!(attempt, "the registry is slow");
                tracing::debug!("below the capture level");
                if attempt == 1 {
                    ctx.log(LogLevel::Error, "upload failed");
                    return Err(StepError::retryable("upload failed"));
                }
                ok(json!("deployed"))
            }
        })
        .expect("register");
    let engine = engine(store, registry);
    let mut updates = engine.subscribe();
    engine.start();
    let definition = WorkflowDefinition::new(vec![StepDefinition::new("deploy", "deploy")
        .retry(RetryPolicy::fixed(2, Duration::from_millis(5)))]);
    let workflow = published(&engine, "logged", definition).await;
    let run = engine
        .start_run(workflow.id, json!({ "tag": "v1" }))
        .await
        .expect("start");
    let done = wait(&engine, run.id).await;
    assert_eq!(done.status, RunStatus::Succeeded, "{done:?}");

    let details = engine.run(run.id).await.expect("details");
    let first = lines_of(&engine, &details.steps[0]).await;
    let texts: Vec<(LogLevel, &str)> = first
        .iter()
        .map(|l| (l.level, l.message.as_str()))
        .collect();
    assert_eq!(
        texts,
        [
            (LogLevel::Info, "deploying \"v1\""),
            (LogLevel::Warn, "the registry is slow attempt=1"),
            (LogLevel::Error, "upload failed"),
        ]
    );
    assert!(first.iter().enumerate().all(|(i, l)| l.seq == i as u32));
    assert!(first.iter().all(|l| l.step_run_id == details.steps[0].id));
    let second = lines_of(&engine, &details.steps[1]).await;
    assert_eq!(second.len(), 2, "{second:?}");
    assert_eq!(second[1].message, "the registry is slow attempt=2");

    let mut streamed = Vec::new();
    while let Ok(update) = updates.try_recv() {
        if let RunUpdate::StepLog { attempt, line, .. } = update {
            streamed.push((attempt, line.message));
        }
    }
    assert_eq!(streamed.len(), 5, "{streamed:?}");
    assert_eq!(streamed[0], (1, "deploying \"v1\"".to_owned()));
    assert_eq!(streamed[4].0, 2);
}

/// Past the engine's cap the first lines are kept and one marker line
/// says how many were dropped; the run is not affected.
pub async fn step_logs_are_capped_with_a_marker<S: Store>(store: S) {
    let mut registry = StepRegistry::new();
    registry
        .step_without_input("chatty", |ctx| async move {
            for i in 0..50 {
                ctx.log(LogLevel::Debug, format!("line {i}"));
            }
            ok(json!(50))
        })
        .expect("register");
    let engine = Engine::builder(store, registry)
        .lease_ttl(Duration::from_millis(500))
        .poll_interval(Duration::from_millis(20))
        .log_limits(10, 1 << 20)
        .build();
    engine.start();
    let definition = WorkflowDefinition::new(vec![StepDefinition::new("chatty", "chatty")]);
    let workflow = published(&engine, "capped", definition).await;
    let run = engine
        .start_run(workflow.id, Value::Null)
        .await
        .expect("start");
    assert_eq!(wait(&engine, run.id).await.status, RunStatus::Succeeded);
    let details = engine.run(run.id).await.expect("details");
    let lines = lines_of(&engine, &details.steps[0]).await;
    assert_eq!(lines.len(), 10);
    assert_eq!(lines[8].message, "line 8");
    assert_eq!(lines[9].level, LogLevel::Warn);
    assert!(
        lines[9].message.contains("41 more lines"),
        "{}",
        lines[9].message
    );
}

/// Lines a handler flushed are stored while it still runs, so they survive
/// a crash of its process (here: the engine is dropped mid-step, as in a
/// crash, and the lines are read from the store).
pub async fn flushed_logs_survive_a_crash<S: Store + Clone>(store: S) {
    let flushed = Arc::new(Notify::new());
    let mut registry = StepRegistry::new();
    let signal = Arc::clone(&flushed);
    registry
        .step_without_input("long", move |ctx| {
            let signal = Arc::clone(&signal);
            async move {
                ctx.log(LogLevel::Info, "phase 1 done");
                ctx.flush_logs().await.expect("flush");
                signal.notify_one();
                ctx.log(LogLevel::Info, "phase 2, never flushed");
                std::future::pending::<()>().await;
                ok(Value::Null)
            }
        })
        .expect("register");
    let engine = engine(store.clone(), registry);
    engine.start();
    let definition = WorkflowDefinition::new(vec![StepDefinition::new("long", "long")]);
    let workflow = published(&engine, "crashy", definition).await;
    let run = engine
        .start_run(workflow.id, Value::Null)
        .await
        .expect("start");
    tokio::time::timeout(PATIENCE, flushed.notified())
        .await
        .expect("the step flushed its log");
    drop(engine);

    let steps = store.list_step_runs(run.id).await.expect("attempts");
    let attempt = steps.first().expect("the running attempt is stored");
    let lines = store
        .list_logs(&LogQuery::new(run.id, attempt.id))
        .await
        .expect("logs");
    let messages: Vec<&str> = lines.items.iter().map(|l| l.message.as_str()).collect();
    assert_eq!(messages, ["phase 1 done"]);
}
