//! A step's logs and artifacts over real HTTP on loopback: the API pages
//! the log and serves each artifact with its hash, and the run page shows
//! both.

use reqwest::{Client, StatusCode};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use taskforge_core::artifact::FsArtifactStore;
use taskforge_core::{
    Engine, LogLevel, StepDefinition, StepError, StepRegistry, WorkflowDefinition,
};
use taskforge_http::{bootstrap, router, Bootstrap, HttpOptions};
use taskforge_store_memory::MemoryStore;

#[tokio::test]
async fn logs_and_artifacts_are_served_and_shown() {
    let mut registry = StepRegistry::new();
    registry
        .step_without_input("package", |ctx| async move {
            for i in 0..150 {
                ctx.log(LogLevel::Info, format!("packed file {i}"));
            }
            tracing::warn!("one file was empty");
            ctx.put_artifact("app-1.4.2.tar.gz", vec![42u8; 3000])
                .await?;
            Ok::<_, StepError>(json!("packaged"))
        })
        .expect("register");
    let dir = tempfile::tempdir().expect("a temporary directory");
    let engine = Engine::builder(MemoryStore::new(), registry)
        .artifacts(FsArtifactStore::open(dir.path()).expect("artifacts"))
        .build();
    engine.start();
    let Bootstrap::Created(admin) = bootstrap(engine.store(), None, chrono::Utc::now())
        .await
        .expect("bootstrap")
    else {
        panic!("a new store has no tokens");
    };
    let workflow = engine.ensure_workflow("release").await.expect("workflow");
    engine
        .publish(
            workflow.id,
            WorkflowDefinition::new(vec![StepDefinition::new("package", "package")]),
        )
        .await
        .expect("publish");
    let run = engine
        .start_run(workflow.id, Value::Null)
        .await
        .expect("start");
    engine.wait_for_run(run.id).await.expect("finish");

    let app = router(engine, HttpOptions::default().ui("/ui"));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("address"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    let client = Client::new();
    let get = |path: String| {
        client
            .get(format!("{base}{path}"))
            .bearer_auth(admin.expose())
            .send()
    };

    let details: Value = get(format!("/api/v1/runs/{}", run.id))
        .await
        .expect("run")
        .json()
        .await
        .expect("json");
    let attempt = details["steps"][0]["id"].as_str().expect("an attempt id");

    // The log, page by page.
    let logs = format!("/api/v1/runs/{}/steps/{attempt}/logs", run.id);
    let first: Value = get(format!("{logs}?limit=100"))
        .await
        .expect("logs")
        .json()
        .await
        .expect("json");
    assert_eq!(first["items"].as_array().expect("items").len(), 100);
    assert_eq!(first["items"][0]["message"], "packed file 0");
    assert_eq!(first["next"], "99");
    let rest: Value = get(format!("{logs}?after=99"))
        .await
        .expect("logs")
        .json()
        .await
        .expect("json");
    let rest = rest["items"].as_array().expect("items");
    assert_eq!(rest.len(), 51);
    assert_eq!(rest[50]["level"], "warn");
    assert_eq!(rest[50]["message"], "one file was empty");
    let elsewhere = get(format!(
        "/api/v1/runs/{}/steps/{}/logs",
        run.id,
        uuid::Uuid::now_v7()
    ))
    .await
    .expect("logs");
    assert_eq!(elsewhere.status(), StatusCode::NOT_FOUND);

    // The artifacts: listed, and served with their hash.
    let listed: Value = get(format!("/api/v1/runs/{}/artifacts", run.id))
        .await
        .expect("artifacts")
        .json()
        .await
        .expect("json");
    let digest = hex::encode(Sha256::digest(vec![42u8; 3000]));
    assert_eq!(listed[0]["name"], "app-1.4.2.tar.gz");
    assert_eq!(listed[0]["size"], 3000);
    assert_eq!(listed[0]["sha256"], digest.as_str());
    let download = get(format!(
        "/api/v1/runs/{}/artifacts/app-1.4.2.tar.gz",
        run.id
    ))
    .await
    .expect("download");
    assert_eq!(download.status(), StatusCode::OK);
    assert_eq!(download.headers()["x-taskforge-sha256"], digest.as_str());
    assert_eq!(
        download.bytes().await.expect("bytes").as_ref(),
        &[42u8; 3000][..]
    );
    let missing = get(format!("/api/v1/runs/{}/artifacts/nope.bin", run.id))
        .await
        .expect("download");
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);

    // The run page shows the log and links the artifact.
    let page = get(format!("/ui/runs/{}", run.id))
        .await
        .expect("page")
        .text()
        .await
        .expect("text");
    assert!(page.contains("packed file 149"), "the log is on the page");
    assert!(page.contains("one file was empty"));
    assert!(page.contains(&format!("/ui/runs/{}/artifacts/app-1.4.2.tar.gz", run.id)));
    assert!(page.contains(&digest[..12]));
}

/// `POST /api/v1/runs/{id}/resume`: a failed run resumes from its failed
/// step (the succeeded one is carried, not run again); a succeeded run
/// cannot be resumed.
#[tokio::test]
async fn a_failed_run_resumes_over_http() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    let broken = Arc::new(AtomicBool::new(true));
    let flag = Arc::clone(&broken);
    let mut registry = StepRegistry::new();
    registry
        .step_without_input("build", |_ctx| async { Ok::<_, StepError>(json!("image")) })
        .expect("register")
        .step_without_input("deploy", move |_ctx| {
            let broken = flag.load(Ordering::SeqCst);
            async move {
                if broken {
                    return Err(StepError::terminal("the cluster is down"));
                }
                Ok(json!("deployed"))
            }
        })
        .expect("register");
    let engine = Engine::builder(MemoryStore::new(), registry).build();
    engine.start();
    let Bootstrap::Created(admin) = bootstrap(engine.store(), None, chrono::Utc::now())
        .await
        .expect("bootstrap")
    else {
        panic!("a new store has no tokens");
    };
    let workflow = engine.ensure_workflow("ship").await.expect("workflow");
    engine
        .publish(
            workflow.id,
            WorkflowDefinition::new(vec![
                StepDefinition::new("build", "build"),
                StepDefinition::new("deploy", "deploy"),
            ]),
        )
        .await
        .expect("publish");
    let run = engine
        .start_run(workflow.id, Value::Null)
        .await
        .expect("start");
    engine.wait_for_run(run.id).await.expect("finish");
    broken.store(false, Ordering::SeqCst);

    let app = router(engine.clone(), HttpOptions::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("address"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    let client = Client::new();
    let resume = |id: String| {
        client
            .post(format!("{base}/api/v1/runs/{id}/resume"))
            .bearer_auth(admin.expose())
            .send()
    };
    let answer = resume(run.id.to_string()).await.expect("resume");
    assert_eq!(answer.status(), StatusCode::CREATED);
    let resumed: Value = answer.json().await.expect("json");
    assert_eq!(resumed["resumed_from"], json!(run.id));
    let id: taskforge_core::RunId =
        serde_json::from_value(resumed["id"].clone()).expect("a run id");
    let done = engine.wait_for_run(id).await.expect("finish");
    assert_eq!(done.output, Some(json!("deployed")));
    let again = resume(id.to_string()).await.expect("resume");
    assert_eq!(again.status(), StatusCode::CONFLICT);
    let problem: Value = again.json().await.expect("json");
    assert!(
        problem["type"]
            .as_str()
            .unwrap_or("")
            .ends_with("not-resumable"),
        "{problem}"
    );
}
