//! Quickstart: the "Deploy API on GitHub Release" workflow, with steps
//! written as Rust closures, kept durably in an embedded sled database.
//!
//! Publishes v1 (build, migrate, deploy), runs it, publishes v2 (adds a
//! smoke test), runs that, and prints each run with its step attempts.
//! Run it twice: the second time also lists the first time's runs, read
//! back from disk.
//!
//! ```text
//! cargo run -p taskforge-examples --bin quickstart [DATA_DIR]
//! ```
//!
//! The data directory is the first argument, else `$TASKFORGE_DATA`, else
//! `./taskforge-data`.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::json;
use taskforge::sled::SledStore;
use taskforge::{
    Engine, RetryPolicy, RunQuery, StepContext, StepDefinition, StepError, StepRegistry, Store,
    WorkflowDefinition,
};
use taskforge_examples::print_run;

/// The part of a release the steps need.
#[derive(Debug, Deserialize)]
struct Release {
    repository: String,
    tag: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct Build {
    image: String,
    digest: String,
}

fn registry() -> Result<StepRegistry, taskforge::error::RegistryError> {
    let mut registry = StepRegistry::new();
    registry
        .step("build", |_ctx: StepContext, release: Release| async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            let image = format!("registry.local/{}:{}", release.repository, release.tag);
            let digest = format!("sha256:{:016x}", fxhash(&image));
            Ok::<_, StepError>(Build { image, digest })
        })?
        .step(
            "migrate",
            |ctx: StepContext, _release: Release| async move {
                // The first attempt meets a lock, as real migrations sometimes
                // do; the retry policy takes care of it.
                if ctx.attempt() == 1 {
                    return Err(StepError::retryable(
                        "database lock held by another migration",
                    ));
                }
                let target: u32 = ctx.config()["target_schema"].as_u64().unwrap_or(1) as u32;
                Ok(json!({ "schema_version": target, "idempotency_key": ctx.idempotency_key() }))
            },
        )?
        .step("deploy", |ctx: StepContext, release: Release| async move {
            let build: Build = ctx.output_as("build")?;
            tokio::time::sleep(Duration::from_millis(10)).await;
            Ok::<_, StepError>(json!({
                "url": format!("https://api.example.com/{}", release.tag),
                "image": build.image,
            }))
        })?
        .step(
            "smoke-test",
            |ctx: StepContext, _release: Release| async move {
                let url = ctx
                    .output("deploy")
                    .and_then(|d| d["url"].as_str())
                    .unwrap_or_default()
                    .to_owned();
                Ok::<_, StepError>(json!({ "checked": format!("{url}/health"), "status": 200 }))
            },
        )?;
    Ok(registry)
}

/// A tiny stable hash, so the example's output is reproducible.
fn fxhash(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

fn definition(smoke_test: bool) -> WorkflowDefinition {
    let mut steps = vec![
        StepDefinition::new("build", "build").timeout(Duration::from_secs(60)),
        StepDefinition::new("migrate", "migrate")
            .config(json!({ "target_schema": 7 }))
            .retry(RetryPolicy::fixed(3, Duration::from_millis(50))),
        StepDefinition::new("deploy", "deploy"),
    ];
    if smoke_test {
        steps.push(StepDefinition::new("smoke-test", "smoke-test"));
    }
    WorkflowDefinition::new(steps).timeout(Duration::from_secs(300))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let dir = std::env::args()
        .nth(1)
        .or_else(|| std::env::var("TASKFORGE_DATA").ok())
        .unwrap_or_else(|| "taskforge-data".to_owned());
    let store = SledStore::open(&dir)?;
    println!("taskforge quickstart: data in {dir}\n");

    let engine = Engine::builder(store, registry()?).build();
    engine.start();
    let workflow = engine.ensure_workflow("deploy-api-on-release").await?;
    let input = json!({ "repository": "acme/api", "tag": "v2.4.0" });

    for smoke_test in [false, true] {
        // Versions are immutable: a second launch finds v1 and v2 stored
        // and reuses them instead of publishing copies.
        let definition = definition(smoke_test);
        let stored = engine.versions(workflow.id).await?;
        let version = match stored
            .into_iter()
            .find(|v| v.content_hash == definition.content_hash())
        {
            Some(version) => version,
            None => engine.publish(workflow.id, definition).await?,
        };
        let run = engine
            .start_run_with(
                workflow.id,
                input.clone(),
                taskforge::RunOptions::new().version(version.number),
            )
            .await?;
        engine.wait_for_run(run.id).await?;
        print_run(&engine.run(run.id).await?);
    }

    print_history(&engine, workflow.id).await?;
    engine.shutdown(Duration::from_secs(5)).await;
    Ok(())
}

async fn print_history<S: Store, X: taskforge::StepExecutor>(
    engine: &Engine<S, X>,
    workflow_id: taskforge::WorkflowId,
) -> Result<(), taskforge::EngineError> {
    let page = engine
        .list_runs(&RunQuery {
            workflow_id: Some(workflow_id),
            order: taskforge::Order::NewestFirst,
            limit: 20,
            ..Default::default()
        })
        .await?;
    println!("history of deploy-api-on-release (newest first, up to 20):");
    println!("  {:<38} {:>7} {:<10} created", "run", "version", "status");
    for run in &page.items {
        println!(
            "  {:<38} {:>7} {:<10} {}",
            run.id.to_string(),
            format!("v{}", run.version),
            run.status.to_string(),
            run.created_at.format("%Y-%m-%d %H:%M:%S%.3f")
        );
    }
    Ok(())
}
