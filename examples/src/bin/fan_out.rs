//! A release pipeline as a graph: `build` fans out to three checks that
//! run in parallel (`lint` only when the input asks for it; the flaky
//! `integration` tests are retried), they fan back in to `package`, and
//! `deploy` waits for a person's approval (a signal) before it runs. At
//! most one run per repository holds a slot at a time: a second release
//! of the same repository queues behind the first, another repository's
//! runs at once.
//!
//! ```text
//! cargo run -p taskforge-examples --bin fan_out [DATA_DIR]
//! ```
//!
//! It prints each run's history: every branch's attempts, with their
//! timing, and the step skipped by its condition.

use std::time::Duration;

use serde_json::{json, Value};
use taskforge::sled::SledStore;
use taskforge::webhook::Filter;
use taskforge::{
    ConcurrencyLimit, Engine, OnTimeout, RetryPolicy, RunStatus, StepContext, StepDefinition,
    StepError, StepRegistry, WorkflowDefinition,
};
use taskforge_examples::print_history;

fn registry() -> Result<StepRegistry, taskforge::error::RegistryError> {
    let mut registry = StepRegistry::new();
    registry
        .step("build", |_ctx: StepContext, input: Value| async move {
            tokio::time::sleep(Duration::from_millis(30)).await;
            Ok::<_, StepError>(json!({
                "image": format!("registry.local/{}:{}", input["repository"].as_str().unwrap_or("?"), input["tag"].as_str().unwrap_or("?")),
            }))
        })?
        .step("unit", |ctx: StepContext, _input: Value| async move {
            tokio::time::sleep(Duration::from_millis(60)).await;
            let image = ctx.output("build").map(|b| b["image"].clone());
            Ok::<_, StepError>(json!({ "passed": 412, "image": image }))
        })?
        .step("integration", |ctx: StepContext, _input: Value| async move {
            tokio::time::sleep(Duration::from_millis(80)).await;
            // The first attempt fails, as a flaky test environment does.
            if ctx.attempt() == 1 {
                return Err(StepError::retryable("test database not ready"));
            }
            Ok::<_, StepError>(json!({ "passed": 57 }))
        })?
        .step("lint", |_ctx: StepContext, _input: Value| async move {
            tokio::time::sleep(Duration::from_millis(40)).await;
            Ok::<_, StepError>(json!({ "warnings": 0 }))
        })?
        .step("package", |ctx: StepContext, _input: Value| async move {
            // Fan-in: every check that ran, by key.
            let checks: Vec<&str> = ctx.outputs().iter().map(|(key, _)| key.as_str()).collect();
            Ok::<_, StepError>(json!({ "checked_by": checks }))
        })?
        .step("deploy", |ctx: StepContext, input: Value| async move {
            let image = ctx.output("build").map(|b| b["image"].clone());
            // The approval's payload: who approved.
            let approver = ctx.output("approval").map(|a| a["by"].clone());
            Ok::<_, StepError>(json!({ "deployed": image, "tag": input["tag"], "approved_by": approver }))
        })?;
    Ok(registry)
}

fn definition() -> WorkflowDefinition {
    let retry = RetryPolicy::fixed(3, Duration::from_millis(50));
    WorkflowDefinition::new(vec![
        StepDefinition::new("build", "build"),
        StepDefinition::new("unit", "unit").depends_on(["build"]),
        StepDefinition::new("integration", "integration")
            .depends_on(["build"])
            .retry(retry),
        StepDefinition::new("lint", "lint")
            .depends_on(["build"])
            .condition(Filter::equals("/input/lint", true)),
        StepDefinition::new("package", "package").depends_on(["unit", "integration", "lint"]),
        // A person approves with a signal; the run is parked (no worker,
        // lease or slot) until it comes, and fails if none comes in a day.
        StepDefinition::wait_for_signal(
            "approval",
            "approved",
            Some(Duration::from_secs(24 * 60 * 60)),
            OnTimeout::Fail,
        )
        .depends_on(["package"]),
        StepDefinition::new("deploy", "deploy").depends_on(["approval"]),
    ])
    .max_parallel_steps(3)
    .concurrency(ConcurrencyLimit::per_key("/repository", 1))
    .timeout(Duration::from_secs(600))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::args()
        .nth(1)
        .or_else(|| std::env::var("TASKFORGE_DATA").ok())
        .unwrap_or_else(|| "taskforge-data".to_owned());
    let engine = Engine::builder(SledStore::open(&dir)?, registry()?).build();
    engine.start();
    let workflow = engine.ensure_workflow("release-pipeline").await?;
    let version = engine.publish(workflow.id, definition()).await?;
    println!("release-pipeline v{}\n", version.number);

    // Two releases of one repository (the second queues behind the first)
    // and one of another (it runs beside them).
    let inputs = [
        json!({ "repository": "acme/api", "tag": "v2.4.0", "lint": true }),
        json!({ "repository": "acme/api", "tag": "v2.4.1", "lint": false }),
        json!({ "repository": "acme/web", "tag": "v9.0.0", "lint": true }),
    ];
    let mut runs = Vec::new();
    for input in inputs {
        runs.push(engine.start_run(workflow.id, input).await?);
    }
    // Approve each release: a signal sent before the run reaches its wait
    // step is kept with the run and received when it gets there; one sent
    // to a parked run wakes it on whichever engine claims it.
    for run in &runs {
        engine
            .signal_run(run.id, "approved", json!({ "by": "release-manager" }))
            .await?;
    }
    for run in &runs {
        let finished = engine.wait_for_run(run.id).await?;
        assert_eq!(finished.status, RunStatus::Succeeded, "{finished:?}");
    }
    for run in &runs {
        print_history(&engine, run.id).await?;
    }
    // The queued release started only once the first had finished.
    let first = engine.run(runs[0].id).await?.run;
    let second = engine.run(runs[1].id).await?.run;
    if let (Some(end), Some(start)) = (first.finished_at, second.started_at) {
        println!(
            "acme/api v2.4.1 started {} ms after v2.4.0 finished (one slot per repository)",
            (start - end).num_milliseconds()
        );
    }
    engine.shutdown(Duration::from_secs(5)).await;
    Ok(())
}
