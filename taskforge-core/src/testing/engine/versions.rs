//! Scenarios of workflows, their versions and starting runs: runs stay on
//! their version, inactive workflows refuse runs, publishing validates and
//! numbers versions, idempotency keys start one run.

use serde_json::json;

use crate::{EngineError, RunOptions, RunStatus, StepDefinition};

use super::*;

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
