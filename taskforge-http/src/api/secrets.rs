//! Secrets: listing (names, versions, dates; never a value), putting a new
//! version, deleting. The operator's credentials stay write-only over the
//! API: no call returns a value. Names under `trigger/` belong to webhook
//! triggers and are managed through them.

use crate::json::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use taskforge_core::secret::SecretSummary;
use taskforge_core::store::Scope;
use taskforge_core::{StepExecutor, Store};
use utoipa::ToSchema;

use super::Body;
use crate::auth::Caller;
use crate::options::Ctx;
use crate::Problem;

/// A new version of a secret.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct PutSecret {
    /// The value, as text.
    value: String,
}

impl std::fmt::Debug for PutSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PutSecret { value: <redacted> }")
    }
}

/// The version a put stored.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct PutAnswer {
    name: String,
    version: u32,
}

/// A secret as listed: never its value.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct SecretView {
    name: String,
    version: u32,
    created_at: chrono::DateTime<chrono::Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    rotated_at: Option<chrono::DateTime<chrono::Utc>>,
    /// The master keys its versions are sealed with.
    key_ids: Vec<String>,
}

impl From<SecretSummary> for SecretView {
    fn from(s: SecretSummary) -> Self {
        Self {
            name: s.name,
            version: s.version,
            created_at: s.created_at,
            rotated_at: s.rotated_at,
            key_ids: s.key_ids.into_iter().collect(),
        }
    }
}

/// Names under this prefix belong to triggers.
const TRIGGER_OWNED: &str = "trigger/";

fn writable(name: &str) -> Result<(), Problem> {
    if name.starts_with(TRIGGER_OWNED) {
        return Err(Problem::new(
            StatusCode::CONFLICT,
            "trigger-owned-secret",
            "The secret belongs to a trigger",
        )
        .detail("secrets under trigger/ change with their trigger (rotate-secret)"));
    }
    Ok(())
}

/// Lists the secrets: names, versions and dates, never values.
#[utoipa::path(get, path = "/api/v1/secrets", tag = "secrets", security(("token" = ["manage"])),
    responses((status = 200, body = Vec<SecretView>), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn list<S: Store, X: StepExecutor>(
    State(ctx): State<Ctx<S, X>>,
    caller: Caller,
) -> Result<Json<Vec<SecretView>>, Problem> {
    caller.require(Scope::Manage)?;
    let secrets = ctx.engine.secrets().await?;
    Ok(Json(secrets.into_iter().map(Into::into).collect()))
}

/// Stores a new version of a secret (version 1 for a new name), sealed
/// with the server's master key; steps that declare it read it from their
/// next attempt on.
#[utoipa::path(put, path = "/api/v1/secrets/{name}", tag = "secrets",
    params(("name" = String, Path)), request_body = PutSecret, security(("token" = ["manage"])),
    responses((status = 200, body = PutAnswer), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn put<S: Store, X: StepExecutor>(
    State(ctx): State<Ctx<S, X>>,
    caller: Caller,
    Path(name): Path<String>,
    Body(new): Body<PutSecret>,
) -> Result<Json<PutAnswer>, Problem> {
    caller.require(Scope::Manage)?;
    writable(&name)?;
    let version = ctx
        .engine
        .put_secret(&name, new.value.as_bytes())
        .await
        .map_err(secret_problem)?;
    Ok(Json(PutAnswer { name, version }))
}

/// Deletes every version of a secret.
#[utoipa::path(delete, path = "/api/v1/secrets/{name}", tag = "secrets",
    params(("name" = String, Path)), security(("token" = ["manage"])),
    responses((status = 204), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn delete<S: Store, X: StepExecutor>(
    State(ctx): State<Ctx<S, X>>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<StatusCode, Problem> {
    caller.require(Scope::Manage)?;
    writable(&name)?;
    ctx.engine
        .delete_secret(&name)
        .await
        .map_err(secret_problem)?;
    Ok(StatusCode::NO_CONTENT)
}

/// Invalid names and values are the caller's problem, not the server's.
fn secret_problem(error: taskforge_core::EngineError) -> Problem {
    use taskforge_core::secret::SecretError;
    match &error {
        taskforge_core::EngineError::Secret(
            SecretError::InvalidName(_)
            | SecretError::EmptyValue { .. }
            | SecretError::TooLarge { .. },
        ) => Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-secret",
            "Invalid secret",
        )
        .detail(error.to_string()),
        _ => error.into(),
    }
}
