//! Headline figures of the PostgreSQL store, one engine process, each
//! workload on a fresh schema of the database at `TASKFORGE_PG_URL`:
//! one-step jobs/s and three-step runs/s (256 in flight, closed loop), and
//! the sequential three-step latency p50/p99.
//!
//! ```sh
//! TASKFORGE_PG_URL=postgres://postgres@127.0.0.1:5432/test \
//!     cargo run --release -p taskforge-benches --bin postgres -- --runs 5000
//! ```

use std::time::{Duration, Instant};

use taskforge_benches::{definition, noop_registry, payload, percentile, runs_per_s, NOOP};
use taskforge_core::{Engine, RunStatus};
use taskforge_store_postgres::{PostgresConfig, PostgresStore};

const IN_FLIGHT: usize = 256;

async fn fresh(url: &str, name: &str) -> PostgresStore {
    let schema = format!("tf_bench_{name}_{}", std::process::id());
    let store = PostgresStore::connect_with(PostgresConfig::new(url).schema(schema).pool_size(32))
        .await
        .expect("open the PostgreSQL store");
    store.drop_schema().await.expect("drop a leftover schema");
    PostgresStore::connect_with(
        PostgresConfig::new(url)
            .schema(store.schema())
            .pool_size(32),
    )
    .await
    .expect("reopen the PostgreSQL store")
}

async fn sequential_latency(store: PostgresStore, samples: usize) -> (f64, f64) {
    let engine = Engine::builder(store, noop_registry().expect("registry")).build();
    engine.start();
    let workflow = engine.ensure_workflow("latency").await.expect("workflow");
    engine
        .publish(workflow.id, definition(3, NOOP))
        .await
        .expect("publish");
    let mut latencies = Vec::with_capacity(samples);
    for i in 0..samples as u64 + 5 {
        let start = Instant::now();
        let run = engine
            .start_run(workflow.id, payload(i))
            .await
            .expect("start run");
        let run = engine.wait_for_run(run.id).await.expect("wait");
        assert_eq!(run.status, RunStatus::Succeeded);
        if i >= 5 {
            latencies.push(start.elapsed().as_secs_f64() * 1e3);
        }
    }
    engine.shutdown(Duration::from_secs(30)).await;
    (percentile(&latencies, 50.0), percentile(&latencies, 99.0))
}

fn main() {
    let Ok(url) = std::env::var("TASKFORGE_PG_URL") else {
        eprintln!("set TASKFORGE_PG_URL (e.g. postgres://postgres@127.0.0.1:5432/test)");
        return;
    };
    let mut args = std::env::args().skip(1);
    let mut runs = 5_000;
    while let Some(arg) = args.next() {
        if arg == "--runs" {
            runs = args.next().and_then(|n| n.parse().ok()).unwrap_or(runs);
        }
    }
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let store = fresh(&url, "one").await;
        let one = runs_per_s(store.clone(), 1, runs, IN_FLIGHT)
            .await
            .expect("one-step");
        store.drop_schema().await.expect("drop");
        let store = fresh(&url, "three").await;
        let three = runs_per_s(store.clone(), 3, runs, IN_FLIGHT)
            .await
            .expect("three-step");
        store.drop_schema().await.expect("drop");
        let store = fresh(&url, "seq").await;
        let (p50, p99) = sequential_latency(store.clone(), 500).await;
        store.drop_schema().await.expect("drop");
        println!("postgres, one engine process, {runs} runs per workload");
        println!("one-step jobs/s (256 in flight)      {one:>10.0}");
        println!("three-step runs/s (256 in flight)    {three:>10.0}");
        println!("sequential three-step p50 / p99 (ms) {p50:>7.2} / {p99:.2}");
    });
}
