//! Production layers: request ids, a `tracing` span per request, a
//! concurrency limit that sheds load with 503 and `Retry-After`, a request
//! timeout, and a body limit.

use std::time::Duration;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderName, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::Router;
use taskforge_core::{StepExecutor, Store};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

use crate::options::Ctx;
use crate::Problem;

/// The header a request id travels in, both ways.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// Wraps `router` in the layers, outermost first: request id, trace span,
/// request id on the answer, load shedding, timeout, body limit.
pub(crate) fn apply<S: Store, X: StepExecutor>(
    router: Router<Ctx<S, X>>,
    ctx: &Ctx<S, X>,
) -> Router<Ctx<S, X>> {
    let header = HeaderName::from_static(REQUEST_ID_HEADER);
    router
        .layer(DefaultBodyLimit::max(ctx.options.max_body_bytes))
        .layer(middleware::from_fn_with_state(ctx.clone(), timeout::<S, X>))
        .layer(middleware::from_fn_with_state(ctx.clone(), shed::<S, X>))
        .layer(PropagateRequestIdLayer::new(header.clone()))
        .layer(TraceLayer::new_for_http().make_span_with(span))
        .layer(SetRequestIdLayer::new(header, MakeRequestUuid))
}

/// The span of a request: method, path and request id, and the event and
/// run ids once a handler knows them. Headers (tokens, signatures) and
/// bodies are never recorded.
fn span(request: &Request) -> tracing::Span {
    let id = request
        .headers()
        .get(REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-");
    tracing::info_span!(
        "http",
        method = %request.method(),
        path = %request.uri().path(),
        request_id = %id,
        event_id = tracing::field::Empty,
        run_id = tracing::field::Empty,
    )
}

/// Refuses a request at once, with 503 and `Retry-After`, when as many as
/// allowed are being served: a saturated server answers fast instead of
/// queueing work it cannot finish in time.
async fn shed<S: Store, X: StepExecutor>(
    State(ctx): State<Ctx<S, X>>,
    request: Request,
    next: Next,
) -> Response {
    let Ok(_permit) = ctx.permits.clone().try_acquire_owned() else {
        return Problem::unavailable(
            "too many requests in flight; retry shortly",
            ctx.options.retry_after,
        )
        .into_response();
    };
    next.run(request).await
}

/// Answers 503 when a request takes longer than the configured timeout.
/// The handler's future is dropped, as a disconnect would drop it.
async fn timeout<S: Store, X: StepExecutor>(
    State(ctx): State<Ctx<S, X>>,
    request: Request,
    next: Next,
) -> Response {
    let limit: Duration = ctx.options.request_timeout;
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "timeout",
            "Request timed out",
        )
        .detail(format!("no answer within {} ms", limit.as_millis()))
        .retry_after(ctx.options.retry_after)
        .into_response(),
    }
}
