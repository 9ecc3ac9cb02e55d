//! The self-hosted Taskforge server: the quickstart's deploy workflow, a
//! GitHub release webhook and a nightly cron report, on the sled store or
//! on PostgreSQL, served over HTTP by `taskforge-http`.
//!
//! ```text
//! cargo run -p taskforge-examples --bin server -- [--addr 127.0.0.1:8080] [--data ./taskforge-data]
//! cargo run -p taskforge-examples --bin server -- --postgres postgres://user@host:5432/db
//! ```
//!
//! The address and data directory also come from `TASKFORGE_ADDR` and
//! `TASKFORGE_DATA`. With `--postgres <url>` (or `TASKFORGE_POSTGRES_URL`)
//! the store is PostgreSQL instead of sled, in schema `taskforge` (or
//! `--postgres-schema` / `TASKFORGE_POSTGRES_SCHEMA`): start as many copies
//! as you like on one database, and they share the work (a delivery to
//! any of them may run on any of them; each cron slot fires once).
//! `TASKFORGE_MAX_CONCURRENT_RUNS` caps the runs one copy executes at once
//! (256), `TASKFORGE_REPORT_CRON` sets the report's schedule (`0 3 * * *`).
//! On the first start of an empty store it prints an
//! admin API token, once (or stores `TASKFORGE_ADMIN_TOKEN` instead, for
//! provisioning). The GitHub webhook secret is `GITHUB_WEBHOOK_SECRET`
//! (default `example-secret-change-me`); it is sealed into the secret
//! store with the master key (`TASKFORGE_MASTER_KEY`, or the file
//! `--master-key-file`, or `master.key` in the data directory, made on
//! first start), never stored in plaintext. Steps' artifacts are kept in
//! `artifacts/` of the data directory. SIGTERM or Ctrl-C shut it down
//! gracefully: new deliveries get 503, requests in flight are answered,
//! and running steps get 10 seconds to finish. `GET /metrics` serves the
//! engine's metrics to a Prometheus scraper. Built with `--features otel`,
//! it exports its spans over OTLP/HTTP (`OTEL_EXPORTER_OTLP_ENDPOINT`), a
//! webhook's `traceparent` joining the run and its steps to the caller's
//! trace.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use taskforge::artifact::FsArtifactStore;
use taskforge::postgres::{PostgresConfig, PostgresStore};
use taskforge::secret::MasterKey;
use taskforge::sled::SledStore;
use taskforge::store::TokenStore;
use taskforge::webhook::{DedupSource, Filter, SignatureScheme};
use taskforge::{
    CronConfig, Engine, RetryPolicy, StepContext, StepDefinition, StepError, StepRegistry, Store,
    TriggerKind, WebhookConfig, WorkflowDefinition,
};
use taskforge_http::{bootstrap, router, Bootstrap, HttpOptions};
use tokio_util::sync::CancellationToken;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

#[cfg(feature = "otel")]
#[path = "../otel.rs"]
mod otel;

fn registry() -> Result<StepRegistry, taskforge::error::RegistryError> {
    let mut registry = StepRegistry::new();
    registry
        .step("build", |_ctx: StepContext, input: Value| async move {
            // A manual run names `repository` and `tag`; a GitHub delivery
            // carries them inside `repository` and `release`.
            let repo = input["repository"]["full_name"]
                .as_str()
                .or(input["repository"].as_str())
                .unwrap_or("acme/api")
                .to_owned();
            let tag = input["release"]["tag_name"]
                .as_str()
                .or(input["tag"].as_str())
                .unwrap_or("latest")
                .to_owned();
            Ok::<_, StepError>(json!({ "image": format!("registry.local/{repo}:{tag}") }))
        })?
        .step("migrate", |ctx: StepContext, _input: Value| async move {
            let target = ctx.config()["target_schema"].as_u64().unwrap_or(1);
            Ok::<_, StepError>(json!({ "schema_version": target }))
        })?
        .step("deploy", |ctx: StepContext, _input: Value| async move {
            let image = ctx.output("build").map(|b| b["image"].clone());
            Ok::<_, StepError>(json!({ "deployed": image }))
        })?
        .step("smoke-test", |ctx: StepContext, _input: Value| async move {
            let deployed = ctx.output("deploy").map(|d| d["deployed"].clone());
            Ok::<_, StepError>(json!({ "checked": deployed, "status": 200 }))
        })?
        .step("report", |ctx: StepContext, input: Value| async move {
            Ok::<_, StepError>(json!({ "report": "nightly", "run": ctx.run_id(), "tick": input }))
        })?;
    Ok(registry)
}

fn deploy_definition() -> WorkflowDefinition {
    WorkflowDefinition::new(vec![
        StepDefinition::new("build", "build").timeout(Duration::from_secs(60)),
        StepDefinition::new("migrate", "migrate")
            .config(json!({ "target_schema": 7 }))
            .retry(RetryPolicy::fixed(3, Duration::from_millis(50))),
        StepDefinition::new("deploy", "deploy"),
        StepDefinition::new("smoke-test", "smoke-test"),
    ])
    .timeout(Duration::from_secs(300))
}

/// `--name value` from the arguments, else the environment variable.
fn setting(args: &[String], flag: &str, env: &str, default: &str) -> String {
    optional_setting(args, flag, env).unwrap_or_else(|| default.to_owned())
}

/// `--name value` from the arguments, else the environment variable, if set.
fn optional_setting(args: &[String], flag: &str, env: &str) -> Option<String> {
    args.iter()
        .position(|a| a == flag)
        .and_then(|i| args.get(i + 1).cloned())
        .or_else(|| std::env::var(env).ok())
        .filter(|value| !value.is_empty())
}

/// The master key that seals secrets (the webhook's signing secret among
/// them): `TASKFORGE_MASTER_KEY`, else the file `--master-key-file` /
/// `TASKFORGE_MASTER_KEY_FILE`, else `master.key` in `home`, made on first
/// start. Every copy of the server on one database needs the same key.
fn master_key(args: &[String], home: &Path) -> Result<MasterKey, Box<dyn std::error::Error>> {
    let path = optional_setting(args, "--master-key-file", "TASKFORGE_MASTER_KEY_FILE")
        .map_or_else(|| home.join("master.key"), PathBuf::from);
    taskforge_examples::master_key(&path)
}

/// The store: PostgreSQL if a URL is given (several copies of the server
/// can share it), else sled in the data directory. Also says where it is.
async fn open_store(
    args: &[String],
) -> Result<(Arc<dyn Store>, String), Box<dyn std::error::Error>> {
    if let Some(url) = optional_setting(args, "--postgres", "TASKFORGE_POSTGRES_URL") {
        let schema = setting(
            args,
            "--postgres-schema",
            "TASKFORGE_POSTGRES_SCHEMA",
            "taskforge",
        );
        let store = PostgresStore::connect_with(PostgresConfig::new(url).schema(&schema)).await?;
        let place = format!("PostgreSQL at {}, schema {schema}", store.address());
        return Ok((Arc::new(store), place));
    }
    let data = setting(args, "--data", "TASKFORGE_DATA", "taskforge-data");
    let store = SledStore::open(&data)?;
    Ok((Arc::new(store), format!("data in {data}")))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| "info,sled=warn".into());
    let logs = tracing_subscriber::registry()
        .with(filter)
        .with(tracing_subscriber::fmt::layer());
    #[cfg(feature = "otel")]
    let provider = otel::provider()?;
    #[cfg(feature = "otel")]
    let logs = logs.with(otel::layer(&provider));
    logs.init();
    // Before the engine, so everything it does is counted.
    let metrics = taskforge_http::metrics::install()?;
    let args: Vec<String> = std::env::args().collect();
    let addr = setting(&args, "--addr", "TASKFORGE_ADDR", "127.0.0.1:8080");
    let secret = std::env::var("GITHUB_WEBHOOK_SECRET")
        .unwrap_or_else(|_| "example-secret-change-me".to_owned());
    let max_runs: usize = setting(
        &args,
        "--max-concurrent-runs",
        "TASKFORGE_MAX_CONCURRENT_RUNS",
        "256",
    )
    .parse()?;
    let report_cron = setting(&args, "--report-cron", "TASKFORGE_REPORT_CRON", "0 3 * * *");

    let (store, place) = open_store(&args).await?;
    // The key and the artifacts live beside the sled data, or in the
    // working directory beside a PostgreSQL server.
    let home = PathBuf::from(setting(&args, "--data", "TASKFORGE_DATA", "taskforge-data"));
    let artifacts = FsArtifactStore::open(home.join("artifacts"))?;
    let engine = Engine::builder(store, registry()?)
        .max_concurrent_runs(max_runs)
        .master_key(master_key(&args, &home)?)
        .artifacts(artifacts)
        .build();
    // A wrong master key stops the server here, not at the first delivery.
    engine.check_secrets().await?;
    engine.start();

    // The quickstart's workflow, run by hand through the API.
    let deploy = engine.ensure_workflow("deploy-api-on-release").await?;
    engine.publish(deploy.id, deploy_definition()).await?;
    // The same steps, started by GitHub release deliveries.
    let github = engine
        .ensure_workflow("deploy-api-on-github-release")
        .await?;
    engine.publish(github.id, deploy_definition()).await?;
    // Triggers are declared by name, so copies of the server starting at
    // once on one database declare each one once.
    let config = WebhookConfig::new("github/releases")
        .with_signature(SignatureScheme::github(secret))
        .with_dedup(DedupSource::Header("X-GitHub-Delivery".into()))
        .with_filter(Filter::equals("/action", "published"))
        .keep_header("X-GitHub-Event");
    let webhook = TriggerKind::Webhook(config);
    engine
        .ensure_trigger(github.id, &webhook.default_name(), webhook)
        .await?;
    // A report every night at 03:00 UTC.
    let nightly = engine.ensure_workflow("nightly-report").await?;
    engine
        .publish(
            nightly.id,
            WorkflowDefinition::new(vec![StepDefinition::new("report", "report")]),
        )
        .await?;
    // Named after the default schedule, which earlier releases of this
    // server created it with, whatever `TASKFORGE_REPORT_CRON` says now.
    let name = TriggerKind::Cron(CronConfig::new("0 3 * * *", "UTC")).default_name();
    engine
        .ensure_trigger(
            nightly.id,
            &name,
            TriggerKind::Cron(CronConfig::new(report_cron, "UTC")),
        )
        .await?;

    let provided = std::env::var("TASKFORGE_ADMIN_TOKEN").ok();
    match bootstrap(engine.store(), provided.as_deref(), chrono::Utc::now()).await {
        Ok(Bootstrap::Created(token)) => {
            println!("admin token (shown once, keep it): {}", token.expose());
        }
        Ok(Bootstrap::Provisioned) => println!("admin token taken from TASKFORGE_ADMIN_TOKEN"),
        Ok(_) => {}
        // Another copy of the server on the same database made the first
        // token at the same moment.
        Err(_) if !engine.store().list_tokens().await?.is_empty() => {}
        Err(error) => return Err(error.into()),
    }

    let shutdown = CancellationToken::new();
    let app = router(
        engine.clone(),
        HttpOptions::default()
            .shutdown(shutdown.clone())
            // The inspector web UI: sign in with an API token at /ui.
            .ui("/ui"),
    );
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!(
        "taskforge server on http://{} ({place})",
        listener.local_addr()?
    );
    println!("inspector on http://{}/ui", listener.local_addr()?);
    let signal = shutdown.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutting down: refusing new work, draining");
        signal.cancel();
    });
    let app = app.merge(taskforge_http::metrics::router(metrics));
    #[cfg(feature = "otel")]
    let app = app.layer(axum::middleware::from_fn(otel::propagate));
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await?;
    engine.shutdown(Duration::from_secs(10)).await;
    #[cfg(feature = "otel")]
    provider.shutdown()?;
    println!("taskforge server stopped");
    Ok(())
}

async fn wait_for_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                term.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}
