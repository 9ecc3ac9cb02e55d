//! Triggers: listing, creation, enabling and disabling, secret rotation.
//! Secrets are write-only: answers show that a secret is set, never what.

use crate::json::Json;
use axum::extract::State;
use axum::http::StatusCode;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use taskforge_core::store::Scope;
use taskforge_core::webhook::SignatureScheme;
use taskforge_core::{
    StepExecutor, Store, Trigger, TriggerId, TriggerKind, WebhookConfig, WorkflowId,
};
use utoipa::{IntoParams, ToSchema};

use super::workflows::{parse_cursor, reachable};
use super::{Body, Ids, Page, Params};
use crate::auth::Caller;
use crate::options::Ctx;
use crate::secret::TokenSecret;
use crate::Problem;

const REDACTED: &str = "<redacted>";

/// Which triggers to list.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub(crate) struct TriggerFilter {
    /// Only this workflow's triggers (required for tokens limited to workflows).
    #[param(value_type = Option<String>, format = Uuid)]
    workflow_id: Option<WorkflowId>,
    /// The `next` of the previous page.
    after: Option<String>,
    /// Page size, 1 to 1000 (default 100).
    #[serde(default)]
    limit: usize,
}

/// A trigger as answered: its secrets replaced by `<redacted>`.
#[derive(Debug, Serialize)]
#[serde(transparent)]
pub(crate) struct TriggerView(Value);

impl TriggerView {
    pub(crate) fn of(trigger: &Trigger) -> Self {
        let mut value = serde_json::to_value(trigger).unwrap_or(Value::Null);
        if let Some(kind) = value.get_mut("kind").and_then(Value::as_object_mut) {
            if kind.contains_key("auth") {
                kind.insert("auth".into(), REDACTED.into());
            }
            if let Some(signature) = kind.get_mut("signature").and_then(Value::as_object_mut) {
                if signature.contains_key("secret") {
                    signature.insert("secret".into(), REDACTED.into());
                }
                if let Some(Value::Array(secrets)) = signature.get_mut("secrets") {
                    secrets.iter_mut().for_each(|s| *s = REDACTED.into());
                }
            }
        }
        Self(value)
    }
}

/// A new trigger.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewTrigger {
    /// The workflow it starts.
    #[schema(value_type = String, format = Uuid)]
    workflow_id: WorkflowId,
    /// `{"kind": "manual"}`, `{"kind": "webhook", "path": …, "signature": …}`
    /// or `{"kind": "cron", "expression": …}`, as `TriggerKind` serializes.
    #[schema(value_type = Object)]
    config: TriggerKind,
}

async fn reachable_trigger<S: Store, X: StepExecutor>(
    ctx: &Ctx<S, X>,
    caller: &Caller,
    scope: Scope,
    id: TriggerId,
) -> Result<Trigger, Problem> {
    caller.require(scope)?;
    let trigger = ctx.engine.store().get_trigger(id).await?;
    if caller.restricted() {
        reachable(ctx, caller, scope, trigger.workflow_id).await?;
    }
    Ok(trigger)
}

/// Lists triggers.
#[utoipa::path(get, path = "/api/v1/triggers", tag = "triggers", params(TriggerFilter),
    security(("token" = ["read"])),
    responses((status = 200, body = Object), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn list<S: Store, X: StepExecutor>(
    State(ctx): State<Ctx<S, X>>,
    caller: Caller,
    Params(filter): Params<TriggerFilter>,
) -> Result<Json<Page<TriggerView>>, Problem> {
    caller.require(Scope::Read)?;
    match filter.workflow_id {
        Some(id) => {
            reachable(&ctx, &caller, Scope::Read, id).await?;
        }
        None if caller.restricted() => {
            return Err(Problem::forbidden(
                "a token limited to workflows must filter by workflow_id",
            ))
        }
        None => {}
    }
    let after = parse_cursor::<TriggerId>(filter.after.as_deref())?;
    let triggers = ctx.engine.store().list_triggers(filter.workflow_id).await?;
    let page = Page::slice(triggers, |t| t.id, after, filter.limit);
    Ok(Json(Page {
        items: page.items.iter().map(TriggerView::of).collect(),
        next: page.next,
    }))
}

/// Creates a trigger, after checking its configuration.
#[utoipa::path(post, path = "/api/v1/triggers", tag = "triggers", request_body = NewTrigger,
    security(("token" = ["manage"])),
    responses((status = 201, body = Object), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn create<S: Store, X: StepExecutor>(
    State(ctx): State<Ctx<S, X>>,
    caller: Caller,
    Body(new): Body<NewTrigger>,
) -> Result<(StatusCode, Json<TriggerView>), Problem> {
    reachable(&ctx, &caller, Scope::Manage, new.workflow_id).await?;
    let trigger = ctx
        .engine
        .create_trigger(new.workflow_id, new.config)
        .await?;
    Ok((StatusCode::CREATED, Json(TriggerView::of(&trigger))))
}

/// A trigger.
#[utoipa::path(get, path = "/api/v1/triggers/{id}", tag = "triggers",
    params(("id" = String, Path, format = Uuid)), security(("token" = ["read"])),
    responses((status = 200, body = Object), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn get_one<S: Store, X: StepExecutor>(
    State(ctx): State<Ctx<S, X>>,
    caller: Caller,
    Ids(id): Ids<TriggerId>,
) -> Result<Json<TriggerView>, Problem> {
    let trigger = reachable_trigger(&ctx, &caller, Scope::Read, id).await?;
    Ok(Json(TriggerView::of(&trigger)))
}

/// Enables a trigger.
#[utoipa::path(post, path = "/api/v1/triggers/{id}/enable", tag = "triggers",
    params(("id" = String, Path, format = Uuid)), security(("token" = ["manage"])),
    responses((status = 200, body = Object), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn enable<S: Store, X: StepExecutor>(
    State(ctx): State<Ctx<S, X>>,
    caller: Caller,
    Ids(id): Ids<TriggerId>,
) -> Result<Json<TriggerView>, Problem> {
    reachable_trigger(&ctx, &caller, Scope::Manage, id).await?;
    let trigger = ctx.engine.set_trigger_enabled(id, true).await?;
    Ok(Json(TriggerView::of(&trigger)))
}

/// Disables a trigger: it still records what it receives, but starts nothing.
#[utoipa::path(post, path = "/api/v1/triggers/{id}/disable", tag = "triggers",
    params(("id" = String, Path, format = Uuid)), security(("token" = ["manage"])),
    responses((status = 200, body = Object), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn disable<S: Store, X: StepExecutor>(
    State(ctx): State<Ctx<S, X>>,
    caller: Caller,
    Ids(id): Ids<TriggerId>,
) -> Result<Json<TriggerView>, Problem> {
    reachable_trigger(&ctx, &caller, Scope::Manage, id).await?;
    let trigger = ctx.engine.set_trigger_enabled(id, false).await?;
    Ok(Json(TriggerView::of(&trigger)))
}

/// A rotated secret: shown once.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Rotated {
    /// The trigger, redacted.
    #[schema(value_type = Object)]
    trigger: TriggerView,
    /// The new secret: a GitHub webhook secret, a Standard Webhooks key
    /// (`whsec_…`; the previous key keeps working until the next rotation),
    /// or a bearer token.
    secret: String,
}

/// Replaces a webhook trigger's signing secret (or, without a signature,
/// its bearer token) with a fresh random one, returned once.
#[utoipa::path(post, path = "/api/v1/triggers/{id}/rotate-secret", tag = "triggers",
    params(("id" = String, Path, format = Uuid)), security(("token" = ["manage"])),
    responses((status = 200, body = Rotated), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn rotate<S: Store, X: StepExecutor>(
    State(ctx): State<Ctx<S, X>>,
    caller: Caller,
    Ids(id): Ids<TriggerId>,
) -> Result<Json<Rotated>, Problem> {
    let mut trigger = reachable_trigger(&ctx, &caller, Scope::Manage, id).await?;
    let TriggerKind::Webhook(config) = &mut trigger.kind else {
        return Err(no_secret());
    };
    let mut random = [0u8; 32];
    getrandom::fill(&mut random).map_err(|e| Problem::internal(&e))?;
    let secret = rotate_config(config, &random)?;
    trigger
        .kind
        .validate()
        .map_err(taskforge_core::EngineError::from)?;
    trigger.updated_at = ctx.now();
    // Deliveries read their trigger fresh from the store, so the new
    // secret applies from the next delivery.
    ctx.engine.store().update_trigger(&trigger).await?;
    Ok(Json(Rotated {
        trigger: TriggerView::of(&trigger),
        secret,
    }))
}

fn rotate_config(config: &mut WebhookConfig, random: &[u8; 32]) -> Result<String, Problem> {
    match &mut config.signature {
        Some(SignatureScheme::GitHub { secret }) => {
            *secret = hex(random);
            Ok(secret.clone())
        }
        Some(SignatureScheme::StandardWebhooks { secrets, .. }) => {
            let key = format!(
                "whsec_{}",
                base64::engine::general_purpose::STANDARD.encode(random)
            );
            secrets.truncate(1);
            secrets.insert(0, key.clone());
            Ok(key)
        }
        Some(_) => Err(no_secret()),
        None if config.auth.is_some() => {
            let token = TokenSecret::generate().map_err(|e| Problem::internal(&e))?;
            *config = config
                .clone()
                .with_token(token.expose())
                .map_err(|e| Problem::internal(&e))?;
            Ok(token.expose().to_owned())
        }
        None => Err(no_secret()),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn no_secret() -> Problem {
    Problem::new(
        StatusCode::CONFLICT,
        "no-secret",
        "Trigger has no secret to rotate",
    )
    .detail("only webhook triggers with a signature or a bearer token have a secret")
}
