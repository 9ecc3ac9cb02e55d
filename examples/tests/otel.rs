//! The server's OpenTelemetry layer (feature `otel`): a run started with a
//! W3C `traceparent` becomes a child of the caller's span, and its steps
//! children of the run, all in the caller's trace.
//!
//! ```text
//! cargo test -p taskforge-examples --features otel --test otel
//! ```

#![cfg(feature = "otel")]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{SdkTracerProvider, SpanData, SpanExporter};
use serde_json::{json, Value};
use taskforge::memory::MemoryStore;
use taskforge::{
    Engine, RunOptions, StepContext, StepDefinition, StepError, StepRegistry, WorkflowDefinition,
};
use tracing_subscriber::layer::SubscriberExt;

#[path = "../src/otel.rs"]
#[allow(dead_code)] // the exporter and the middleware are the server's
mod otel;

const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

/// Keeps every finished span.
#[derive(Debug, Clone, Default)]
struct Finished(Arc<Mutex<Vec<SpanData>>>);

impl SpanExporter for Finished {
    fn export(
        &self,
        batch: Vec<SpanData>,
    ) -> impl std::future::Future<Output = OTelSdkResult> + Send {
        self.0.lock().unwrap().extend(batch);
        std::future::ready(Ok(()))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_and_its_steps_join_the_callers_trace() {
    let finished = Finished::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(finished.clone())
        .build();
    tracing::subscriber::set_global_default(
        tracing_subscriber::registry().with(otel::layer(&provider)),
    )
    .expect("one subscriber");

    let mut registry = StepRegistry::new();
    registry
        .step("echo", |_ctx: StepContext, input: Value| async move {
            Ok::<_, StepError>(input)
        })
        .expect("echo");
    let engine = Engine::builder(MemoryStore::new(), registry).build();
    engine.start();
    let workflow = engine.ensure_workflow("traced").await.expect("workflow");
    engine
        .publish(
            workflow.id,
            WorkflowDefinition::new(vec![
                StepDefinition::new("first", "echo"),
                StepDefinition::new("second", "echo"),
            ]),
        )
        .await
        .expect("publish");
    let run = engine
        .start_run_with(
            workflow.id,
            json!({}),
            RunOptions::new().trace_parent(TRACEPARENT),
        )
        .await
        .expect("start");
    engine.wait_for_run(run.id).await.expect("wait");

    // The run's span is exported when its task ends, just after the run.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let spans = loop {
        let spans = finished.0.lock().unwrap().clone();
        if spans.iter().any(|s| s.name == "run") {
            break spans;
        }
        assert!(tokio::time::Instant::now() < deadline, "the run span ends");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let run_span = spans.iter().find(|s| s.name == "run").expect("a run span");
    let context = &run_span.span_context;
    assert_eq!(
        context.trace_id().to_string(),
        "4bf92f3577b34da6a3ce929d0e0e4736"
    );
    assert_eq!(run_span.parent_span_id.to_string(), "00f067aa0ba902b7");
    assert!(run_span.parent_span_is_remote);
    let steps: Vec<&SpanData> = spans.iter().filter(|s| s.name == "step").collect();
    assert_eq!(steps.len(), 2, "{spans:#?}");
    for step in steps {
        assert_eq!(step.span_context.trace_id(), context.trace_id());
        assert_eq!(step.parent_span_id, context.span_id());
    }
    provider.shutdown().expect("shutdown");
}
