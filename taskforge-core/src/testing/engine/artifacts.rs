//! Artifacts: steps store named binary content on the run and read what
//! earlier steps stored; limits refuse with nothing stored.

use serde_json::json;

use crate::artifact::{sha256_hex, ArtifactError, ArtifactLimits, FsArtifactStore};
use crate::{RetryPolicy, RunStatus, StepDefinition};

use super::*;

fn with_artifacts<S: Store>(
    store: S,
    registry: StepRegistry,
    dir: &std::path::Path,
    limits: ArtifactLimits,
) -> Engine<S, StepRegistry> {
    Engine::builder(store, registry)
        .lease_ttl(Duration::from_millis(500))
        .poll_interval(Duration::from_millis(20))
        .artifacts(FsArtifactStore::open(dir).expect("open the artifact directory"))
        .artifact_limits(limits)
        .build()
}

/// A step stores an artifact, a later step reads it back whole; the run
/// lists it with its size and SHA-256.
pub async fn artifacts_pass_between_steps<S: Store>(store: S) {
    let content: Vec<u8> = (0..50_000u32).flat_map(u32::to_le_bytes).collect();
    let expected = sha256_hex(&content);
    let mut registry = StepRegistry::new();
    let body = content.clone();
    registry
        .step_without_input("build", move |ctx| {
            let body = body.clone();
            async move {
                let stored = ctx.put_artifact("app.bin", body).await?;
                ctx.put_artifact("notes.txt", "built on the first try").await?;
                ok(json!(stored.sha256))
            }
        })
        .expect("register")
        .step_without_input("deploy", |ctx| async move {
            let (record, bytes) = ctx.artifact("app.bin").await?;
            let names: Vec<String> = ctx.artifacts().await?.into_iter().map(|a| a.name).collect();
            ok(json!({ "size": bytes.len(), "sha": sha256_hex(&bytes), "record": record.sha256, "names": names }))
        })
        .expect("register");
    let dir = tempfile::tempdir().expect("a temporary directory");
    let engine = with_artifacts(store, registry, dir.path(), ArtifactLimits::default());
    engine.start();
    let definition = WorkflowDefinition::new(vec![
        StepDefinition::new("build", "build"),
        StepDefinition::new("deploy", "deploy"),
    ]);
    let workflow = published(&engine, "shipping", definition).await;
    let run = engine
        .start_run(workflow.id, Value::Null)
        .await
        .expect("start");
    let done = wait(&engine, run.id).await;
    assert_eq!(done.status, RunStatus::Succeeded, "{done:?}");
    assert_eq!(
        done.output,
        Some(
            json!({ "size": content.len(), "sha": expected, "record": expected, "names": ["app.bin", "notes.txt"] })
        )
    );
    let listed = engine.run_artifacts(run.id).await.expect("list");
    let summary: Vec<(&str, &str, u64)> = listed
        .iter()
        .map(|a| (a.name.as_str(), a.step_key.as_str(), a.size))
        .collect();
    assert_eq!(
        summary,
        [
            ("app.bin", "build", content.len() as u64),
            ("notes.txt", "build", 22)
        ]
    );
    assert_eq!(listed[0].sha256, expected);
}

/// An artifact over the limit fails its step at once (terminal: a retry
/// would be refused again) and leaves nothing stored.
pub async fn oversized_artifacts_are_refused<S: Store>(store: S) {
    let mut registry = StepRegistry::new();
    registry
        .step_without_input("dump", |ctx| async move {
            ctx.put_artifact("core.dump", vec![7u8; 4096]).await?;
            ok(Value::Null)
        })
        .expect("register");
    let dir = tempfile::tempdir().expect("a temporary directory");
    let limits = ArtifactLimits {
        max_artifact_bytes: 1024,
        ..ArtifactLimits::default()
    };
    let engine = with_artifacts(store, registry, dir.path(), limits);
    engine.start();
    let definition =
        WorkflowDefinition::new(vec![StepDefinition::new("dump", "dump")
            .retry(RetryPolicy::fixed(3, Duration::from_millis(5)))]);
    let workflow = published(&engine, "dumping", definition).await;
    let run = engine
        .start_run(workflow.id, Value::Null)
        .await
        .expect("start");
    let done = wait(&engine, run.id).await;
    assert_eq!(done.status, RunStatus::Failed);
    let message = done.error.expect("an error").message;
    assert!(
        message.contains("larger than its limit of 1024 bytes"),
        "{message}"
    );
    let details = engine.run(run.id).await.expect("details");
    assert_eq!(details.steps.len(), 1, "a refused artifact is not retried");
    assert!(engine.run_artifacts(run.id).await.expect("list").is_empty());
    assert!(matches!(
        engine.open_artifact(run.id, "core.dump").await,
        Err(crate::EngineError::Artifact(ArtifactError::NotFound { .. }))
    ));
}
