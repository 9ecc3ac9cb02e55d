//! A webhook trigger for GitHub `release` deliveries: signature
//! verification with the trigger's secret, dedup on `X-GitHub-Delivery`, and
//! a filter on `action == "published"`. Fed a real GitHub release payload,
//! it prints what came of each delivery, the stored event, and the run with
//! its step logs and artifacts.
//!
//! Secrets are sealed with a master key (`TASKFORGE_MASTER_KEY`, or
//! `master.key` in the data directory, made on first run): the webhook's
//! signing secret and the deploy step's `DEPLOY_TOKEN` live in the secret
//! store, and the token the deploy step logs shows as `[redacted:...]` in
//! its history.
//!
//! ```text
//! cargo run -p taskforge-examples --bin github_release [DATA_DIR]
//! ```
//!
//! An HTTP server would hand `deliver_webhook` the path, headers and raw
//! body of each request and answer with `Delivery::http_status`.

use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};
use taskforge::artifact::FsArtifactStore;
use taskforge::sled::SledStore;
use taskforge::webhook::{
    github_signature, DedupSource, Filter, Headers, SignatureScheme, WebhookRequest,
};
use taskforge::{
    Delivery, Engine, LogLevel, StepContext, StepDefinition, StepError, StepRegistry, TriggerKind,
    WebhookConfig, WorkflowDefinition,
};
use taskforge_examples::{master_key, print_history};

/// The body of a GitHub `release` delivery with `action: published`.
const RELEASE: &[u8] =
    include_bytes!("../../../taskforge-core/tests/fixtures/release-published.json");

const PATH: &str = "github/releases";

fn registry() -> Result<StepRegistry, taskforge::error::RegistryError> {
    let mut registry = StepRegistry::new();
    registry
        .step("build", |_ctx: StepContext, delivery: Value| async move {
            let repo = delivery["repository"]["full_name"].as_str().unwrap_or("?");
            let tag = delivery["release"]["tag_name"].as_str().unwrap_or("?");
            Ok::<_, StepError>(json!({ "image": format!("registry.local/{repo}:{tag}") }))
        })?
        .step(
            "migrate",
            |_ctx: StepContext, _delivery: Value| async move {
                Ok::<_, StepError>(json!({ "schema_version": 7 }))
            },
        )?
        .step("deploy", |ctx: StepContext, delivery: Value| async move {
            let image = ctx.output("build").map(|b| b["image"].clone());
            let token = ctx.secret("DEPLOY_TOKEN")?;
            ctx.log(
                LogLevel::Info,
                format!("deploying {}", image.clone().unwrap_or_default()),
            );
            // A careless line: the token is redacted before it is stored.
            ctx.log(LogLevel::Debug, format!("authenticating with {token}"));
            tracing::info!(replicas = 3, "rolled out");
            let manifest = json!({
                "image": image,
                "release": delivery["release"]["tag_name"],
                "replicas": 3,
            });
            let stored = ctx
                .put_artifact(
                    "deploy-manifest.json",
                    serde_json::to_vec_pretty(&manifest)?,
                )
                .await?;
            Ok::<_, StepError>(json!({
                "deployed": image,
                "release": delivery["release"]["html_url"],
                "manifest_sha256": stored.sha256,
            }))
        })?;
    Ok(registry)
}

/// A delivery as GitHub sends it, signed with `secret`.
fn delivery(body: &[u8], secret: &str, delivery_id: &str) -> WebhookRequest {
    let headers: Headers = [
        ("Content-Type", "application/json".to_owned()),
        ("User-Agent", "GitHub-Hookshot/044aadd".to_owned()),
        ("X-GitHub-Event", "release".to_owned()),
        ("X-GitHub-Delivery", delivery_id.to_owned()),
        ("X-Hub-Signature-256", github_signature(secret, body)),
    ]
    .into_iter()
    .collect();
    WebhookRequest::new(headers, body)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::args()
        .nth(1)
        .or_else(|| std::env::var("TASKFORGE_DATA").ok())
        .unwrap_or_else(|| "taskforge-data".to_owned());
    let secret = std::env::var("GITHUB_WEBHOOK_SECRET")
        .unwrap_or_else(|_| "example-secret-change-me".to_owned());
    let data = Path::new(&dir);
    let engine = Engine::builder(SledStore::open(data)?, registry()?)
        .master_key(master_key(&data.join("master.key"))?)
        .artifacts(FsArtifactStore::open(data.join("artifacts"))?)
        .build();
    // A wrong master key stops here, before anything is delivered.
    engine.check_secrets().await?;
    engine.start();
    let token = std::env::var("DEPLOY_TOKEN").unwrap_or_else(|_| "tok-example-7c1d".to_owned());
    engine.put_secret("DEPLOY_TOKEN", &token).await?;

    let workflow = engine
        .ensure_workflow("deploy-api-on-github-release")
        .await?;
    engine
        .publish(
            workflow.id,
            WorkflowDefinition::new(vec![
                StepDefinition::new("build", "build"),
                StepDefinition::new("migrate", "migrate"),
                StepDefinition::new("deploy", "deploy").secrets(["DEPLOY_TOKEN"]),
            ])
            .timeout(Duration::from_secs(600)),
        )
        .await?;
    let existing = engine.triggers(workflow.id).await?;
    let trigger = match existing.into_iter().next() {
        Some(trigger) => trigger,
        None => {
            let config = WebhookConfig::new(PATH)
                .with_signature(SignatureScheme::github(secret.clone()))
                .with_dedup(DedupSource::Header("X-GitHub-Delivery".into()))
                .with_filter(Filter::equals("/action", "published"))
                .keep_header("X-GitHub-Event")
                .keep_header("User-Agent");
            engine
                .create_trigger(workflow.id, TriggerKind::Webhook(config))
                .await?
        }
    };
    println!("webhook trigger {} at /{PATH}\n", trigger.id);

    let delivery_id = uuid_like();
    let mut created: Value = serde_json::from_slice(RELEASE)?;
    created["action"] = json!("created");
    let created = serde_json::to_vec(&created)?;
    let mut forged = delivery(RELEASE, "not-the-secret", &uuid_like());
    forged.headers.append("X-Forwarded-For", "203.0.113.7");
    let attempts = [
        (
            "release published",
            delivery(RELEASE, &secret, &delivery_id),
        ),
        (
            "same delivery again",
            delivery(RELEASE, &secret, &delivery_id),
        ),
        ("release created", delivery(&created, &secret, &uuid_like())),
        ("forged signature", forged),
    ];
    let mut started = None;
    for (what, request) in &attempts {
        let outcome = engine.deliver_webhook(PATH, request).await?;
        println!(
            "{what:<20} -> HTTP {}  {}",
            outcome.http_status(),
            describe(&outcome)
        );
        if let Delivery::Accepted { event_id, run_id } = outcome {
            started = Some((event_id, run_id));
        }
    }
    println!(
        "rejected deliveries (counted, not stored): {}\n",
        engine.rejected_deliveries(trigger.id)
    );

    if let Some((event_id, run_id)) = started {
        let event = engine.event(event_id).await?;
        println!("event {}", event.id);
        println!("  {:<14} {}", "received", event.received_at);
        println!(
            "  {:<14} {}",
            "dedup key",
            event.dedup_key.as_deref().unwrap_or("-")
        );
        for (name, value) in &event.metadata {
            println!("  {name:<14} {value}");
        }
        println!(
            "  {:<14} release {} of {}\n",
            "payload",
            event.payload["release"]["tag_name"],
            event.payload["repository"]["full_name"]
        );
        engine.wait_for_run(run_id).await?;
        print_history(&engine, run_id).await?;
    }
    engine.shutdown(Duration::from_secs(5)).await;
    Ok(())
}

fn describe(outcome: &Delivery) -> String {
    match outcome {
        Delivery::Accepted { run_id, .. } => format!("accepted, run {run_id} started"),
        Delivery::Duplicate { event_id, .. } => format!("duplicate of event {event_id}"),
        Delivery::Filtered { reason, .. } => format!("stored, filtered: {reason}"),
        Delivery::Rejected(why) => format!("rejected: {why}"),
        other => format!("{other:?}"),
    }
}

/// A fresh delivery id, shaped like GitHub's.
fn uuid_like() -> String {
    taskforge::EventId::new().to_string()
}
