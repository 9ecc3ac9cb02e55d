//! `POST /hooks/{path}`: webhook deliveries, handed to the engine exactly as
//! received (raw body bytes, every header), and its [`Delivery`] mapped to
//! an HTTP answer.

use std::time::Duration;

use crate::json::Json;
use axum::body::Body;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use taskforge_core::webhook::{Headers, WebhookRequest};
use taskforge_core::{Delivery, EventId, EventOutcome, RunId, RunStatus, StepExecutor, Store};
use utoipa::{IntoParams, ToSchema};

use crate::options::Ctx;
use crate::Problem;

/// The longest webhook path a trigger can have.
const MAX_PATH_LEN: usize = 256;

/// The header a 204 (filtered) answer names its stored event in.
pub const EVENT_ID_HEADER: &str = "taskforge-event-id";

/// The query of a delivery.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub(crate) struct HookQuery {
    /// Hold the answer until the run finishes, for at most this many
    /// milliseconds (capped by the server), and answer with its output.
    wait: Option<u64>,
}

/// The answer to an accepted, recorded or duplicate delivery.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct DeliveryAnswer {
    /// `accepted`, `recorded` or `duplicate`.
    status: &'static str,
    /// The stored event (for a duplicate, the original).
    #[schema(value_type = String, format = Uuid)]
    event_id: EventId,
    /// The run it started, if any.
    #[schema(value_type = Option<String>, format = Uuid)]
    #[serde(skip_serializing_if = "Option::is_none")]
    run_id: Option<RunId>,
    /// Why no run started (recorded deliveries).
    #[schema(value_type = Option<Object>)]
    #[serde(skip_serializing_if = "Option::is_none")]
    outcome: Option<EventOutcome>,
    /// With `wait`: the run's status when the answer was sent.
    #[schema(value_type = Option<String>)]
    #[serde(skip_serializing_if = "Option::is_none")]
    run_status: Option<RunStatus>,
    /// With `wait`, once the run succeeded: its output.
    #[schema(value_type = Option<Object>)]
    #[serde(skip_serializing_if = "Option::is_none")]
    output: Option<Value>,
    /// With `wait`, once the run failed: its error.
    #[schema(value_type = Option<Object>)]
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<Value>,
}

/// Delivers a webhook.
#[utoipa::path(
    post,
    path = "/hooks/{path}",
    tag = "webhooks",
    params(("path" = String, Path, description = "The trigger's webhook path"), HookQuery),
    request_body(content = Object, description = "The raw delivery; signatures are checked over these bytes"),
    responses(
        (status = 202, description = "Stored; a run started (or the workflow or trigger is off)", body = DeliveryAnswer),
        (status = 200, description = "A duplicate of a stored delivery, or (with wait) the finished run", body = DeliveryAnswer),
        (status = 204, description = "Stored, but filtered out: no run"),
        (status = 400, description = "Malformed", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Token or signature missing or wrong", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No trigger at this path", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body too large", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "JSON, but not an object, or without its dedup key", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Shutting down or saturated", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn deliver<S: Store, X: StepExecutor>(
    State(ctx): State<Ctx<S, X>>,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<HookQuery>, QueryRejection>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Problem> {
    let Path(path) = path?;
    let Query(query) = query?;
    check_path(&path)?;
    ctx.refuse_if_draining()?;
    let body = read_body(body, ctx.options.max_body_bytes).await?;
    let request = WebhookRequest::new(convert(&headers), body);
    let delivery = ctx.engine.deliver_webhook(&path, &request).await?;
    let wait = query
        .wait
        .map(|ms| Duration::from_millis(ms).min(ctx.options.max_wait));
    let span = tracing::Span::current();
    let answer = |status: &'static str, event_id, run_id, outcome| DeliveryAnswer {
        status,
        event_id,
        run_id,
        outcome,
        run_status: None,
        output: None,
        error: None,
    };
    match delivery {
        Delivery::Accepted { event_id, run_id } => {
            span.record("event_id", tracing::field::display(event_id));
            span.record("run_id", tracing::field::display(run_id));
            let answer = answer("accepted", event_id, Some(run_id), None);
            Ok(waited(&ctx, answer, StatusCode::ACCEPTED, wait).await)
        }
        Delivery::Duplicate { event_id, run_id } => {
            span.record("event_id", tracing::field::display(event_id));
            let answer = answer("duplicate", event_id, run_id, None);
            Ok(waited(&ctx, answer, StatusCode::OK, wait).await)
        }
        Delivery::Recorded { event_id, outcome } => {
            span.record("event_id", tracing::field::display(event_id));
            // A run recorded cancelled by its limit policy is named.
            let run_id = outcome.run_id();
            let answer = answer("recorded", event_id, run_id, Some(outcome));
            Ok((StatusCode::ACCEPTED, Json(answer)).into_response())
        }
        Delivery::Filtered { event_id, .. } => {
            span.record("event_id", tracing::field::display(event_id));
            let mut response = StatusCode::NO_CONTENT.into_response();
            if let Ok(value) = HeaderValue::from_str(&event_id.to_string()) {
                response.headers_mut().insert(EVENT_ID_HEADER, value);
            }
            Ok(response)
        }
        Delivery::Rejected(rejection) => Err(Problem::rejection(&rejection)),
        Delivery::UnknownPath => Err(unknown_path()),
        other => Err(Problem::internal(&format!(
            "unexpected delivery outcome {other:?}"
        ))),
    }
}

/// With `wait`, holds the answer until the run finishes (or the wait ends)
/// and adds its status and output.
async fn waited<S: Store, X: StepExecutor>(
    ctx: &Ctx<S, X>,
    mut answer: DeliveryAnswer,
    status: StatusCode,
    wait: Option<Duration>,
) -> Response {
    let (Some(wait), Some(run_id)) = (wait, answer.run_id) else {
        return (status, Json(answer)).into_response();
    };
    let status = match tokio::time::timeout(wait, ctx.engine.wait_for_run(run_id)).await {
        Ok(Ok(run)) => {
            answer.run_status = Some(run.status);
            answer.output = run.output;
            answer.error = run.error.and_then(|e| serde_json::to_value(e).ok());
            StatusCode::OK
        }
        Ok(Err(error)) => {
            tracing::warn!(%error, %run_id, "waiting for a webhook's run failed");
            status
        }
        Err(_) => {
            answer.run_status = ctx
                .engine
                .store()
                .get_run(run_id)
                .await
                .ok()
                .map(|r| r.status);
            status
        }
    };
    (status, Json(answer)).into_response()
}

fn unknown_path() -> Problem {
    Problem::new(
        StatusCode::NOT_FOUND,
        "webhook-unknown-path",
        "No webhook trigger at this path",
    )
}

/// Refuses paths no trigger can have, before any lookup: too long (404, as
/// for any unknown path), or with empty, `.` or `..` segments or control
/// characters (400).
fn check_path(path: &str) -> Result<(), Problem> {
    if path.is_empty() || path.len() > MAX_PATH_LEN {
        return Err(unknown_path());
    }
    let odd = path
        .chars()
        .any(|c| c.is_control() || c.is_whitespace() || c == '\\')
        || path
            .split('/')
            .any(|segment| segment.is_empty() || segment == "." || segment == "..");
    if odd {
        return Err(Problem::new(
            StatusCode::BAD_REQUEST,
            "webhook-invalid-path",
            "Invalid webhook path",
        )
        .detail("webhook paths have no empty, `.` or `..` segments and no control characters"));
    }
    Ok(())
}

/// Every header, as text. A value that is not UTF-8 is converted lossily
/// rather than dropped, so that a signature check sees that it is there.
fn convert(headers: &HeaderMap) -> Headers {
    headers
        .iter()
        .map(|(name, value)| {
            (
                name.as_str().to_owned(),
                String::from_utf8_lossy(value.as_bytes()).into_owned(),
            )
        })
        .collect()
}

/// The body, up to `limit` bytes: 413 beyond.
pub(crate) async fn read_body(body: Body, limit: usize) -> Result<Vec<u8>, Problem> {
    match axum::body::to_bytes(body, limit).await {
        Ok(bytes) => Ok(bytes.to_vec()),
        Err(error) => {
            let inner = error.into_inner();
            let too_large =
                std::iter::successors(Some(&*inner as &dyn std::error::Error), |e| e.source())
                    .any(|e| e.is::<http_body_util::LengthLimitError>());
            if too_large {
                Err(Problem::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "too-large",
                    "Request body too large",
                )
                .detail(format!("the body exceeds {limit} bytes")))
            } else {
                Err(Problem::bad_request(format!(
                    "could not read the body: {inner}"
                )))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn odd_paths_are_refused() {
        assert!(check_path("github/releases").is_ok());
        for bad in ["", "a//b", "../etc/passwd", "a/./b", "a/..", "a\nb", "a\\b"] {
            assert!(check_path(bad).is_err(), "{bad:?}");
        }
        assert_eq!(check_path(&"a".repeat(300)).map_err(|p| p.status), Err(404));
    }
}
