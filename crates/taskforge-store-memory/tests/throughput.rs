//! A rough throughput check of the memory store on the store calls of a
//! three-step run. Ignored by default; run it in release:
//! `cargo test --release -p taskforge-store-memory --test throughput -- --ignored --nocapture`.

use std::time::Instant;

use chrono::{TimeDelta, Utc};
use serde_json::json;
use taskforge_core::{
    RunStore, RunTransition, StepDefinition, StepRun, StepTransition, Workflow, WorkflowDefinition,
    WorkflowRun, WorkflowStore, WorkflowVersion,
};
use taskforge_store_memory::MemoryStore;

const TASKS: usize = 8;
const RUNS_PER_TASK: usize = 25_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "a throughput measurement, not a check"]
async fn three_step_runs_per_second() {
    let store = MemoryStore::new();
    let now = Utc::now();
    let workflow = Workflow::new("bench", now).expect("a valid name");
    store.insert_workflow(&workflow).await.expect("insert");
    let steps = ["a", "b", "c"].map(|k| StepDefinition::new(k, "noop"));
    let version =
        WorkflowVersion::new(workflow.id, 1, WorkflowDefinition::new(steps.to_vec()), now);
    store.insert_version(&version).await.expect("publish");

    let started = Instant::now();
    let tasks: Vec<_> = (0..TASKS)
        .map(|t| {
            let store = store.clone();
            let version = version.clone();
            tokio::spawn(async move {
                let owner = format!("worker-{t}");
                for _ in 0..RUNS_PER_TASK {
                    let run = WorkflowRun::new(&version, json!({"n": 1}), now);
                    store.insert_run(&run).await.expect("insert");
                    let mut run = store
                        .claim_run(run.id, &owner, now, now + TimeDelta::seconds(30))
                        .await
                        .expect("claim");
                    let fence = run.fence();
                    run.transition(RunTransition::Start, now).expect("start");
                    store.commit(fence, Some(&run), &[]).await.expect("commit");
                    for (index, key) in (0_u32..).zip(["a", "b", "c"]) {
                        let mut step = StepRun::start(run.id, key, index, 1, now);
                        store
                            .commit(run.fence(), None, std::slice::from_ref(&step))
                            .await
                            .expect("commit");
                        step.output = Some(json!({"ok": true}));
                        step.transition(StepTransition::Succeed, now)
                            .expect("succeed");
                        store
                            .commit(run.fence(), None, std::slice::from_ref(&step))
                            .await
                            .expect("commit");
                    }
                    let fence = run.fence();
                    run.transition(RunTransition::Succeed, now)
                        .expect("succeed");
                    store.commit(fence, Some(&run), &[]).await.expect("commit");
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("a task panicked");
    }
    let elapsed = started.elapsed();
    let runs = TASKS * RUNS_PER_TASK;
    println!(
        "{runs} three-step runs in {elapsed:?}: {:.0} runs/s",
        runs as f64 / elapsed.as_secs_f64()
    );
}
