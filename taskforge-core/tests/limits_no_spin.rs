//! A full key does not make the dispatcher spin: while one run holds a
//! key's only slot, the runs waiting for it are neither listed as
//! claimable nor claimed again and again; the engine only polls. Counted
//! through a `FaultyStore` that injects nothing.

#![cfg(feature = "testing")]

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use taskforge_core::testing::faults::{FaultConfig, FaultyStore};
use taskforge_core::{
    ConcurrencyLimit, Engine, RunStatus, StepContext, StepDefinition, StepError, StepRegistry,
    WorkflowDefinition,
};
use taskforge_store_memory::MemoryStore;
use tokio::sync::Notify;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_runs_of_a_full_key_are_not_tried_again_and_again() {
    let store = FaultyStore::new(MemoryStore::new(), FaultConfig::none(), 1);
    let entered = Arc::new(Notify::new());
    let release = Arc::new(Notify::new());
    let mut registry = StepRegistry::new();
    {
        let (entered, release) = (Arc::clone(&entered), Arc::clone(&release));
        registry
            .step("work", move |_ctx: StepContext, input: Value| {
                let (entered, release) = (Arc::clone(&entered), Arc::clone(&release));
                async move {
                    if input["hold"] == json!(true) {
                        entered.notify_one();
                        release.notified().await;
                    }
                    Ok::<_, StepError>(Value::Null)
                }
            })
            .expect("register");
    }
    let poll = Duration::from_millis(20);
    let engine = Engine::builder(store.clone(), registry)
        .poll_interval(poll)
        .lease_ttl(Duration::from_secs(30))
        .build();
    engine.start();
    let workflow = engine.ensure_workflow("no-spin").await.expect("workflow");
    engine
        .publish(
            workflow.id,
            WorkflowDefinition::new(vec![StepDefinition::new("work", "work")])
                .concurrency(ConcurrencyLimit::new(1)),
        )
        .await
        .expect("publish");
    let holder = engine
        .start_run(workflow.id, json!({"hold": true}))
        .await
        .expect("start");
    tokio::time::timeout(Duration::from_secs(30), entered.notified())
        .await
        .expect("the holder started");
    let mut waiting = Vec::new();
    for _ in 0..50 {
        waiting.push(
            engine
                .start_run(workflow.id, json!({}))
                .await
                .expect("start"),
        );
    }
    // Whatever the admissions set off settles; then a quiet window.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = store.counts();
    let window = Duration::from_millis(500);
    tokio::time::sleep(window).await;
    let after = store.counts();
    let (reads, writes) = (after.reads - before.reads, after.writes - before.writes);
    // One look per poll (25 in the window), the holder's lease renewals
    // and cancel checks: a spinning dispatcher would make thousands.
    assert!(
        reads < 200 && writes < 40,
        "{reads} reads and {writes} writes in {window:?} while the key was full"
    );
    for run in &waiting {
        let run = engine.run(run.id).await.expect("run").run;
        assert_eq!((run.status, run.lease_epoch), (RunStatus::Queued, 0));
    }

    release.notify_one();
    for run in std::iter::once(&holder).chain(&waiting) {
        let done = tokio::time::timeout(Duration::from_secs(60), engine.wait_for_run(run.id))
            .await
            .expect("in time")
            .expect("wait");
        assert_eq!(done.status, RunStatus::Succeeded);
    }
}
