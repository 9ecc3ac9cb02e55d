//! The secrets API over real HTTP on loopback: values go in and never come
//! out; trigger-owned names are refused; a step reads what was put, and its
//! history shows it redacted.

use reqwest::{Client, StatusCode};
use serde_json::{json, Value};
use taskforge_core::secret::MasterKey;
use taskforge_core::{Engine, StepDefinition, StepError, StepRegistry, WorkflowDefinition};
use taskforge_http::{bootstrap, router, Bootstrap, HttpOptions};
use taskforge_store_memory::MemoryStore;

#[tokio::test]
async fn secrets_go_in_and_never_come_out() {
    let mut registry = StepRegistry::new();
    registry
        .step_without_input("call", |ctx| async move {
            let token = ctx.secret("PAGER_TOKEN")?;
            Ok::<_, StepError>(json!({ "sent_with": token }))
        })
        .expect("register");
    let engine = Engine::builder(MemoryStore::new(), registry)
        .master_key(MasterKey::generate())
        .build();
    engine.start();
    let Bootstrap::Created(admin) = bootstrap(engine.store(), None, chrono::Utc::now())
        .await
        .expect("bootstrap")
    else {
        panic!("a new store has no tokens");
    };
    let app = router(engine.clone(), HttpOptions::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("address"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    let client = Client::new();
    let url = |path: &str| format!("{base}{path}");

    for (value, version) in [("pg-9f1c7e2a", 1), ("pg-rotated-44d0b1", 2)] {
        let put: Value = client
            .put(url("/api/v1/secrets/PAGER_TOKEN"))
            .bearer_auth(admin.expose())
            .json(&json!({ "value": value }))
            .send()
            .await
            .expect("put")
            .json()
            .await
            .expect("json");
        assert_eq!(put, json!({ "name": "PAGER_TOKEN", "version": version }));
    }
    let listing = client
        .get(url("/api/v1/secrets"))
        .bearer_auth(admin.expose())
        .send()
        .await
        .expect("list")
        .text()
        .await
        .expect("text");
    assert!(listing.contains("\"PAGER_TOKEN\"") && listing.contains("\"version\":2"));
    assert!(!listing.contains("pg-9f1c7e2a") && !listing.contains("pg-rotated"));

    // Invalid names and values, and names that belong to triggers.
    for (path, body, status) in [
        (
            "/api/v1/secrets/bad%20name",
            json!({ "value": "x" }),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "/api/v1/secrets/EMPTY",
            json!({ "value": "" }),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "/api/v1/secrets/trigger/abc/signature/0",
            json!({ "value": "x" }),
            StatusCode::CONFLICT,
        ),
    ] {
        let answer = client
            .put(url(path))
            .bearer_auth(admin.expose())
            .json(&body)
            .send()
            .await
            .expect("put");
        assert_eq!(answer.status(), status, "{path}");
    }

    // A step reads the latest version; its history shows it redacted.
    let workflow = engine.ensure_workflow("pager").await.expect("workflow");
    engine
        .publish(
            workflow.id,
            WorkflowDefinition::new(vec![
                StepDefinition::new("call", "call").secrets(["PAGER_TOKEN"])
            ]),
        )
        .await
        .expect("publish");
    let run = engine
        .start_run(workflow.id, Value::Null)
        .await
        .expect("start");
    engine.wait_for_run(run.id).await.expect("finish");
    let shown = client
        .get(url(&format!("/api/v1/runs/{}", run.id)))
        .bearer_auth(admin.expose())
        .send()
        .await
        .expect("run")
        .text()
        .await
        .expect("text");
    assert!(shown.contains("[redacted:PAGER_TOKEN]"), "{shown}");
    assert!(!shown.contains("pg-rotated-44d0b1"));

    let deleted = client
        .delete(url("/api/v1/secrets/PAGER_TOKEN"))
        .bearer_auth(admin.expose())
        .send()
        .await
        .expect("delete");
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    let again = client
        .delete(url("/api/v1/secrets/PAGER_TOKEN"))
        .bearer_auth(admin.expose())
        .send()
        .await
        .expect("delete");
    assert_eq!(again.status(), StatusCode::NOT_FOUND);
}
