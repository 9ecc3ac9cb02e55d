//! Prometheus metrics: a recorder for the [`metrics`] facade the engine
//! emits through, and a router that serves it on `GET /metrics` for a
//! scraper, in the Prometheus text format.
//!
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let handle = taskforge_http::metrics::install()?;
//! let app = axum::Router::new()
//!     // .merge(taskforge_http::router(engine, options))
//!     .merge(taskforge_http::metrics::router(handle));
//! # Ok(())
//! # }
//! ```
//!
//! What the engine counts and measures is listed in
//! [`taskforge_core::telemetry`]: runs started, resumed and finished by
//! workflow and status, run and step attempt durations (histograms, in
//! seconds), the dispatcher's queue depth and active runs, webhook
//! deliveries by outcome and reason, and store write latency.
//!
//! `/metrics` asks for no token, as scrapers usually do not send one:
//! mount it on an address only the scraper reaches, or behind the host's
//! own authentication. Its labels carry workflow names and step keys,
//! never payloads, ids or secrets.

use std::sync::OnceLock;
use std::time::Duration;

use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
use taskforge_core::telemetry::METRICS;

pub use metrics_exporter_prometheus::PrometheusHandle;

/// The bucket bounds, in seconds, of every `_seconds` histogram: from a
/// millisecond (a store write) to five minutes (a long step).
pub const SECONDS_BUCKETS: [f64; 16] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];

/// How often histogram samples are folded into their buckets when nobody
/// scrapes, so memory stays bounded.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// Why the recorder could not be installed.
#[derive(Debug, thiserror::Error)]
#[error("cannot install the Prometheus recorder: {0}")]
pub struct MetricsError(String);

/// A Prometheus recorder builder set up for the engine's metrics
/// (`_seconds` histograms with [`SECONDS_BUCKETS`]), for a host that
/// installs or combines recorders itself. Most hosts call [`install`].
#[must_use]
pub fn builder() -> PrometheusBuilder {
    PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".to_owned()), &SECONDS_BUCKETS)
        .expect("the bucket list is not empty")
}

/// Installs a Prometheus recorder as the process's `metrics` recorder (once:
/// later calls return the same handle) and describes the engine's
/// metrics. Fails if another recorder was installed first.
pub fn install() -> Result<PrometheusHandle, MetricsError> {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    if let Some(handle) = HANDLE.get() {
        return Ok(handle.clone());
    }
    let recorder = builder().build_recorder();
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder).map_err(|e| MetricsError(e.to_string()))?;
    let handle = HANDLE.get_or_init(|| handle).clone();
    describe();
    let upkeep = handle.clone();
    std::thread::Builder::new()
        .name("taskforge-metrics-upkeep".to_owned())
        .spawn(move || loop {
            std::thread::sleep(UPKEEP_EVERY);
            upkeep.run_upkeep();
        })
        .map_err(|e| MetricsError(e.to_string()))?;
    Ok(handle)
}

/// Gives every engine metric its `# HELP` line (and histograms their unit).
fn describe() {
    for (name, kind, help) in METRICS {
        match kind {
            "counter" => metrics::describe_counter!(name, help),
            "gauge" => metrics::describe_gauge!(name, help),
            _ => metrics::describe_histogram!(name, metrics::Unit::Seconds, help),
        }
    }
}

/// `GET /metrics`: what `handle` recorded, in the Prometheus text format.
/// Merge it into the host's router, or `nest` it under a prefix.
pub fn router(handle: PrometheusHandle) -> Router {
    Router::new().route(
        "/metrics",
        get(move || {
            let handle = handle.clone();
            async move {
                (
                    [(
                        header::CONTENT_TYPE,
                        "text/plain; version=0.0.4; charset=utf-8",
                    )],
                    handle.render(),
                )
                    .into_response()
            }
        }),
    )
}
