//! API tokens: making, listing, revoking. A secret is shown once, in the
//! answer that made it.

use std::collections::BTreeSet;

use crate::json::Json;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use taskforge_core::store::{ApiToken, Scope, TokenId};
use taskforge_core::{StepExecutor, Store};
use utoipa::ToSchema;

use super::{Body, Ids};
use crate::auth::{issue_token, Caller, NewToken, TokenError};
use crate::options::Ctx;
use crate::Problem;

/// A token as listed: everything but its digest.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct TokenView {
    #[schema(value_type = String, format = Uuid)]
    id: TokenId,
    name: String,
    /// `tf_` and the first 8 characters of the secret.
    prefix: String,
    #[schema(value_type = Vec<String>)]
    scopes: BTreeSet<Scope>,
    #[serde(skip_serializing_if = "Option::is_none")]
    workflows: Option<BTreeSet<String>>,
    created_at: DateTime<Utc>,
    expires_at: Option<DateTime<Utc>>,
    last_used_at: Option<DateTime<Utc>>,
    revoked_at: Option<DateTime<Utc>>,
}

impl From<ApiToken> for TokenView {
    fn from(t: ApiToken) -> Self {
        Self {
            id: t.id,
            name: t.name,
            prefix: t.prefix,
            scopes: t.scopes,
            workflows: t.workflows,
            created_at: t.created_at,
            expires_at: t.expires_at,
            last_used_at: t.last_used_at,
            revoked_at: t.revoked_at,
        }
    }
}

/// A token to make.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateToken {
    /// A label, 1 to 100 characters.
    name: String,
    /// Some of `read`, `run`, `manage`, `tokens`; no more than the caller holds.
    #[schema(value_type = Vec<String>)]
    scopes: BTreeSet<Scope>,
    /// If set, the only workflows it reaches, by name.
    workflows: Option<BTreeSet<String>>,
    /// Seconds until it expires; never if absent.
    expires_in_secs: Option<u64>,
}

/// A new token, with its secret: shown this once.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct CreatedToken {
    token: TokenView,
    /// The secret, `tf_…`: store it now, it cannot be shown again.
    secret: String,
}

/// Lists tokens, revoked ones included.
#[utoipa::path(get, path = "/api/v1/tokens", tag = "tokens", security(("token" = ["tokens"])),
    responses((status = 200, body = Vec<TokenView>), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn list<S: Store, X: StepExecutor>(
    State(ctx): State<Ctx<S, X>>,
    caller: Caller,
) -> Result<Json<Vec<TokenView>>, Problem> {
    caller.require(Scope::Tokens)?;
    let tokens = ctx.engine.store().list_tokens().await?;
    Ok(Json(tokens.into_iter().map(Into::into).collect()))
}

/// Makes a token.
#[utoipa::path(post, path = "/api/v1/tokens", tag = "tokens", request_body = CreateToken,
    security(("token" = ["tokens"])),
    responses((status = 201, body = CreatedToken), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn create<S: Store, X: StepExecutor>(
    State(ctx): State<Ctx<S, X>>,
    caller: Caller,
    Body(new): Body<CreateToken>,
) -> Result<(StatusCode, Json<CreatedToken>), Problem> {
    caller.require(Scope::Tokens)?;
    if new.name.trim().is_empty() || new.name.chars().count() > 100 {
        return Err(Problem::bad_request("name must be 1 to 100 characters"));
    }
    if new.scopes.is_empty() {
        return Err(Problem::bad_request("a token needs at least one scope"));
    }
    // No escalation: a token can only hand out what it holds itself.
    if let Some(scope) = new.scopes.iter().find(|s| !caller.token.allows(**s)) {
        return Err(Problem::forbidden(format!(
            "cannot grant the {scope} scope this token lacks"
        )));
    }
    let workflows = match (&caller.token.workflows, new.workflows) {
        (None, wanted) => wanted,
        (Some(own), None) => Some(own.clone()),
        (Some(own), Some(wanted)) if wanted.is_subset(own) => Some(wanted),
        (Some(_), Some(_)) => {
            return Err(Problem::forbidden(
                "cannot reach workflows this token does not reach",
            ))
        }
    };
    let now = ctx.now();
    let expires_at = new
        .expires_in_secs
        .map(|secs| {
            i64::try_from(secs)
                .ok()
                .and_then(TimeDelta::try_seconds)
                .and_then(|d| now.checked_add_signed(d))
                .ok_or_else(|| Problem::bad_request("expires_in_secs is too large"))
        })
        .transpose()?;
    let mut spec = NewToken::new(new.name, new.scopes);
    spec.workflows = workflows;
    spec.expires_at = expires_at;
    let (token, secret) =
        issue_token(ctx.engine.store(), spec, now)
            .await
            .map_err(|e| match e {
                TokenError::Store(e) => Problem::from(e),
                other => Problem::internal(&other),
            })?;
    tracing::info!(token = %token.prefix, by = %caller.token.prefix, "token created");
    Ok((
        StatusCode::CREATED,
        Json(CreatedToken {
            token: token.into(),
            secret: secret.expose().to_owned(),
        }),
    ))
}

/// A token.
#[utoipa::path(get, path = "/api/v1/tokens/{id}", tag = "tokens",
    params(("id" = String, Path, format = Uuid)), security(("token" = ["tokens"])),
    responses((status = 200, body = TokenView), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn get_one<S: Store, X: StepExecutor>(
    State(ctx): State<Ctx<S, X>>,
    caller: Caller,
    Ids(id): Ids<TokenId>,
) -> Result<Json<TokenView>, Problem> {
    caller.require(Scope::Tokens)?;
    Ok(Json(ctx.engine.store().get_token(id).await?.into()))
}

/// Revokes a token: from the next request on, it is refused.
#[utoipa::path(post, path = "/api/v1/tokens/{id}/revoke", tag = "tokens",
    params(("id" = String, Path, format = Uuid)), security(("token" = ["tokens"])),
    responses((status = 200, body = TokenView), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn revoke<S: Store, X: StepExecutor>(
    State(ctx): State<Ctx<S, X>>,
    caller: Caller,
    Ids(id): Ids<TokenId>,
) -> Result<Json<TokenView>, Problem> {
    caller.require(Scope::Tokens)?;
    let token = ctx.engine.store().revoke_token(id, ctx.now()).await?;
    tracing::info!(token = %token.prefix, by = %caller.token.prefix, "token revoked");
    Ok(Json(token.into()))
}
