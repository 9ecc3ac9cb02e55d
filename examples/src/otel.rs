//! OpenTelemetry for the server example (cargo feature `otel`): spans
//! exported over OTLP/HTTP to `OTEL_EXPORTER_OTLP_ENDPOINT` (default
//! `http://localhost:4318`), with W3C trace context joined up:
//!
//! - a request's `traceparent` header makes its span a child of the caller's;
//! - a run's `trace_parent` span field (the traceparent the engine keeps
//!   with the run's event) makes the run's span, and so its step spans, a
//!   child of it, on whichever engine executes or resumes the run.
//!
//! So a webhook delivery, the run it starts and every step attempt share
//! one trace id.

use std::collections::HashMap;

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use tracing::field::{Field, Visit};
use tracing::span::{Id, Record};
use tracing::{Instrument, Subscriber};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

/// The tracer provider: a batch exporter over OTLP/HTTP. Shut it down
/// before exiting, so the last spans are sent.
pub(crate) fn provider() -> Result<SdkTracerProvider, Box<dyn std::error::Error>> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .build()?;
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(
            Resource::builder()
                .with_service_name("taskforge-server")
                .build(),
        )
        .build())
}

/// The layer that turns `tracing` spans into OpenTelemetry spans, with
/// parents taken from `trace_parent` fields.
pub(crate) fn layer<S>(provider: &SdkTracerProvider) -> impl Layer<S>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("taskforge"))
        // Spans start when they end or get a child, not when first
        // entered: the engine records a run's `trace_parent` just after
        // entering its span, and the parent can still be set then.
        .with_context_activation(false)
        .and_then(TraceParent)
}

/// The OpenTelemetry context of a W3C `traceparent` value.
fn remote(traceparent: &str) -> Option<opentelemetry::Context> {
    let carrier: HashMap<String, String> =
        HashMap::from([("traceparent".to_owned(), traceparent.to_owned())]);
    let cx = TraceContextPropagator::new().extract(&carrier);
    cx.span().span_context().is_valid().then_some(cx)
}

/// Sets a span's parent when a valid `trace_parent` is recorded on it.
struct TraceParent;

struct Find(Option<String>);

impl Visit for Find {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "trace_parent" {
            self.0 = Some(value.to_owned());
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "trace_parent" {
            self.0 = Some(format!("{value:?}").trim_matches('"').to_owned());
        }
    }
}

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for TraceParent {
    fn on_record(&self, id: &Id, values: &Record<'_>, _ctx: Context<'_, S>) {
        let mut find = Find(None);
        values.record(&mut find);
        let Some(cx) = find.0.as_deref().and_then(remote) else {
            return;
        };
        // The engine records the field from inside the span.
        let current = tracing::Span::current();
        if current.id().as_ref() == Some(id) {
            if let Err(error) = current.set_parent(cx) {
                tracing::debug!(%error, "a run span's trace context came too late");
            }
        }
    }
}

/// Middleware: each request's span is a child of its `traceparent`.
pub(crate) async fn propagate(request: Request, next: Next) -> Response {
    let span = tracing::info_span!(
        "request",
        method = %request.method(),
        path = %request.uri().path(),
    );
    let parent = request
        .headers()
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .and_then(remote);
    if let Some(cx) = parent {
        let _ = span.set_parent(cx);
    }
    next.run(request).instrument(span).await
}
