//! `/healthz` (the process answers) and `/readyz` (the store answers and
//! the server is not shutting down). Neither needs a token.

use crate::json::Json;
use axum::extract::State;
use serde_json::{json, Value};
use taskforge_core::store::TokenDigest;
use taskforge_core::{StepExecutor, Store};

use crate::options::Ctx;
use crate::Problem;

/// Liveness: the process is serving requests.
#[utoipa::path(get, path = "/healthz", tag = "health",
    responses((status = 200, description = "Serving", body = Object)))]
pub(crate) async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// Readiness: the store answers a point read, and the server is not
/// shutting down.
#[utoipa::path(get, path = "/readyz", tag = "health",
    responses((status = 200, description = "Ready", body = Object),
        (status = 503, description = "Shutting down or the store fails", body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn readyz<S: Store, X: StepExecutor>(
    State(ctx): State<Ctx<S, X>>,
) -> Result<Json<Value>, Problem> {
    ctx.refuse_if_draining()?;
    ctx.engine
        .store()
        .find_token(&TokenDigest::from_bytes([0; 32]))
        .await
        .map_err(|error| {
            tracing::warn!(%error, "readiness check: the store failed");
            Problem::unavailable("the store is not answering", ctx.options.retry_after)
        })?;
    Ok(Json(json!({ "status": "ready" })))
}
