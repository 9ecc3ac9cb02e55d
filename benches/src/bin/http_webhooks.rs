//! Webhook deliveries per second over HTTP on loopback, beside the same
//! engine called in-process, on the memory store and on durable sled: the
//! HTTP cost as a measured ratio, with p50/p99 latency.
//!
//! ```text
//! cargo run --release -p taskforge-benches --bin http_webhooks -- [--deliveries 20000] [--concurrency 64]
//! ```
//!
//! The load generator is in this process: `--concurrency` tasks sharing one
//! reqwest client (keep-alive connections), each sending unique deliveries
//! (a fresh `x-delivery` dedup header, a ~200-byte JSON body) back to back.
//! The engine is not started, so the figures are of admission (verify,
//! store the event and its queued run, answer), not of running the runs.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use taskforge_benches::{definition, noop_registry, payload, percentile, NOOP};
use taskforge_core::webhook::{DedupSource, Headers, WebhookRequest};
use taskforge_core::{Delivery, Engine, StepRegistry, Store, TriggerKind, WebhookConfig};
use taskforge_http::{router, HttpOptions};

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Figures {
    rate: f64,
    p50_ms: f64,
    p99_ms: f64,
}

async fn engine<S: Store>(store: S) -> Result<Engine<S, StepRegistry>, Box<dyn std::error::Error>> {
    let engine = Engine::builder(store, noop_registry()?).build();
    let workflow = engine.ensure_workflow("bench").await?;
    engine.publish(workflow.id, definition(1, NOOP)).await?;
    let config = WebhookConfig::new("bench").with_dedup(DedupSource::Header("x-delivery".into()));
    engine
        .create_trigger(workflow.id, TriggerKind::Webhook(config))
        .await?;
    Ok(engine)
}

/// Runs `deliveries` calls of `call(i)` over `concurrency` tasks.
async fn drive<F, Fut>(deliveries: u64, concurrency: usize, call: F) -> Figures
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let call = Arc::new(call);
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| {
            let (call, next) = (Arc::clone(&call), Arc::clone(&next));
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= deliveries {
                        return latencies;
                    }
                    let t = Instant::now();
                    assert!(call(i).await, "delivery {i} was not accepted");
                    latencies.push(t.elapsed().as_secs_f64() * 1000.0);
                }
            })
        })
        .collect();
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await.unwrap_or_default());
    }
    let elapsed = started.elapsed().as_secs_f64();
    Figures {
        rate: latencies.len() as f64 / elapsed,
        p50_ms: percentile(&latencies, 50.0),
        p99_ms: percentile(&latencies, 99.0),
    }
}

async fn measure<S: Store>(
    label: &str,
    make: impl Fn() -> S,
    deliveries: u64,
    concurrency: usize,
) -> Result<(), Box<dyn std::error::Error>> {
    let body: Arc<Vec<u8>> = Arc::new(serde_json::to_vec(&payload(0))?);

    let direct = engine(make()).await?;
    let in_process = {
        let (engine, body) = (direct.clone(), Arc::clone(&body));
        drive(deliveries, concurrency, move |i| {
            let (engine, body) = (engine.clone(), Arc::clone(&body));
            async move {
                let mut headers = Headers::new();
                headers.append("content-type", "application/json");
                headers.append("x-delivery", format!("d-{i}"));
                let request = WebhookRequest::new(headers, body.as_slice());
                matches!(
                    engine.deliver_webhook("bench", &request).await,
                    Ok(Delivery::Accepted { .. })
                )
            }
        })
        .await
    };
    drop(direct);

    let served = engine(make()).await?;
    let app = router(served, HttpOptions::default().max_concurrent_requests(4096));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/hooks/bench", listener.local_addr()?);
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .build()?;
    let over_http = drive(deliveries, concurrency, move |i| {
        let (client, url, body) = (client.clone(), url.clone(), Arc::clone(&body));
        async move {
            client
                .post(&url)
                .header("content-type", "application/json")
                .header("x-delivery", format!("d-{i}"))
                .body(body.as_ref().clone())
                .send()
                .await
                .is_ok_and(|r| r.status() == reqwest::StatusCode::ACCEPTED)
        }
    })
    .await;
    server.abort();

    for (how, f) in [("in-process", &in_process), ("http", &over_http)] {
        println!(
            "{label:<12} {how:<11} {:>9.0} deliveries/s   p50 {:>7.3} ms   p99 {:>7.3} ms",
            f.rate, f.p50_ms, f.p99_ms
        );
    }
    println!(
        "{label:<12} http cost   {:>9.2}x the in-process time per delivery\n",
        in_process.rate / over_http.rate
    );
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let deliveries = arg("--deliveries", 20_000) as u64;
    let concurrency = arg("--concurrency", 64);
    println!("{deliveries} unique deliveries, {concurrency} concurrent senders\n");
    measure(
        "memory",
        taskforge_store_memory::MemoryStore::new,
        deliveries,
        concurrency,
    )
    .await?;
    let dirs = Arc::new(parking_dirs());
    measure(
        "sled durable",
        {
            let dirs = Arc::clone(&dirs);
            move || {
                let dir = dirs.path().join(uuid_like());
                taskforge_store_sled::SledStore::open(dir).unwrap_or_else(|e| {
                    eprintln!("cannot open sled: {e}");
                    std::process::exit(1)
                })
            }
        },
        deliveries,
        concurrency,
    )
    .await?;
    Ok(())
}

fn parking_dirs() -> tempfile::TempDir {
    tempfile::tempdir().unwrap_or_else(|e| {
        eprintln!("cannot make a temporary directory: {e}");
        std::process::exit(1)
    })
}

fn uuid_like() -> String {
    taskforge_core::EventId::new().to_string()
}
