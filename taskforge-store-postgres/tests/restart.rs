//! The server goes away while an engine runs (as in a restart: every
//! connection drops, new ones are refused for a while) and comes back:
//! the engine reconnects, nothing it acknowledged is lost, and every run
//! finishes, no succeeded step running again.
//!
//! A TCP proxy between the store and the server stands in for the
//! restart, so the shared cluster keeps running for other tests. Built
//! only when `TASKFORGE_PG_URL` is set (see `build.rs`).

#![cfg(taskforge_pg)]

mod common;

use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use taskforge_core::store::RunStore;
use taskforge_core::{
    Engine, RunId, RunStatus, StepContext, StepDefinition, StepError, StepRegistry, StepStatus,
    WorkflowDefinition,
};
use taskforge_store_postgres::{PostgresConfig, PostgresStore};
use tokio::io::copy_bidirectional;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use common::{fresh_schema, url, DropSchema};

/// A TCP proxy to `upstream` that can be cut (every connection dropped,
/// new ones refused) and restored.
struct Proxy {
    port: u16,
    up: Arc<AtomicBool>,
    cuts: watch::Sender<u64>,
}

impl Proxy {
    async fn start(upstream: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let up = Arc::new(AtomicBool::new(true));
        let (cuts, _) = watch::channel(0u64);
        let (accepting, cut) = (Arc::clone(&up), cuts.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut client, _)) = listener.accept().await else {
                    return;
                };
                if !accepting.load(Ordering::SeqCst) {
                    // Refused, as by a server that is down.
                    drop(client);
                    continue;
                }
                let upstream = upstream.clone();
                let mut cut = cut.subscribe();
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(&upstream).await else {
                        return;
                    };
                    tokio::select! {
                        _ = copy_bidirectional(&mut client, &mut server) => {}
                        _ = cut.changed() => {}
                    }
                });
            }
        });
        Self { port, up, cuts }
    }

    fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        self.cuts.send_modify(|n| *n += 1);
    }

    fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

fn registry() -> StepRegistry {
    let mut registry = StepRegistry::new();
    registry
        .step("work", |_ctx: StepContext, input: Value| async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            Ok::<_, StepError>(input)
        })
        .expect("register");
    registry
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_restart_is_survived() {
    let schema = fresh_schema("tf_restart");
    let _drop = DropSchema(schema.clone());
    let direct_config = tokio_postgres::Config::from_str(&url()).expect("url");
    let host = match direct_config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(host)) => host.clone(),
        _ => "127.0.0.1".to_owned(),
    };
    let port = direct_config.get_ports().first().copied().unwrap_or(5432);
    let proxy = Proxy::start(format!("{host}:{port}")).await;
    // The same server, through the proxy.
    let proxied_url = format!(
        "host=127.0.0.1 port={} user={} dbname={} connect_timeout=2",
        proxy.port,
        direct_config.get_user().unwrap_or("postgres"),
        direct_config.get_dbname().unwrap_or("postgres"),
    );
    let password = direct_config
        .get_password()
        .map(|p| format!(" password={}", String::from_utf8_lossy(p)))
        .unwrap_or_default();
    let store = PostgresStore::connect_with(
        PostgresConfig::new(format!("{proxied_url}{password}"))
            .schema(&schema)
            .pool_size(8),
    )
    .await
    .expect("open through the proxy");
    // Reads that check the outcome go straight to the server.
    let direct = PostgresStore::connect_with(PostgresConfig::new(url()).schema(&schema))
        .await
        .expect("open directly");

    let engine = Engine::builder(store, registry())
        .lease_ttl(Duration::from_secs(2))
        .poll_interval(Duration::from_millis(200))
        .build();
    engine.start();
    let workflow = engine.ensure_workflow("restart").await.expect("workflow");
    engine
        .publish(
            workflow.id,
            WorkflowDefinition::new(vec![
                StepDefinition::new("one", "work"),
                StepDefinition::new("two", "work"),
                StepDefinition::new("three", "work"),
            ]),
        )
        .await
        .expect("publish");

    // Runs are started before, during and after the outage; those whose
    // start was acknowledged must finish.
    let mut acknowledged: Vec<RunId> = Vec::new();
    let mut refused = 0;
    let started = Instant::now();
    let mut cut_at = None;
    let mut restored = false;
    let mut i = 0u64;
    while started.elapsed() < Duration::from_secs(5) {
        let elapsed = started.elapsed();
        if cut_at.is_none() && elapsed > Duration::from_secs(1) {
            proxy.cut();
            cut_at = Some(elapsed);
        }
        if !restored && elapsed > Duration::from_secs(3) {
            proxy.restore();
            restored = true;
        }
        match engine.start_run(workflow.id, json!({ "i": i })).await {
            Ok(run) => acknowledged.push(run.id),
            Err(_) => refused += 1,
        }
        i += 1;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(refused > 0, "the outage was not felt");
    let before = acknowledged.len();

    // Every acknowledged run finishes.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut unfinished = 0;
        for id in &acknowledged {
            let run = direct
                .get_run(*id)
                .await
                .expect("an acknowledged run exists");
            if !run.status.is_terminal() {
                unfinished += 1;
            }
        }
        if unfinished == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{unfinished} of {before} acknowledged runs did not finish"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for id in &acknowledged {
        let run = direct.get_run(*id).await.expect("run");
        assert_eq!(run.status, RunStatus::Succeeded, "{id}: {:?}", run.error);
        // No step succeeded twice.
        let mut succeeded = BTreeMap::new();
        for step in direct.list_step_runs(*id).await.expect("steps") {
            if step.status == StepStatus::Succeeded {
                *succeeded.entry(step.step_index).or_insert(0) += 1;
            }
        }
        assert_eq!(succeeded.len(), 3, "{id}: {succeeded:?}");
        assert!(succeeded.values().all(|&n| n == 1), "{id}: {succeeded:?}");
    }
    // And the engine works as before.
    let run = engine
        .start_run(workflow.id, json!({ "after": true }))
        .await
        .expect("start after the restart");
    let run = tokio::time::timeout(Duration::from_secs(30), engine.wait_for_run(run.id))
        .await
        .expect("in time")
        .expect("wait");
    assert_eq!(run.status, RunStatus::Succeeded);
    println!("{before} runs acknowledged, {refused} starts refused during the outage");
    engine.shutdown(Duration::from_secs(10)).await;
}
