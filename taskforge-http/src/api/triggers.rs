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
            redact_credentials(kind);
            // The credentials a rotation replaced are secrets too.
            if let Some(retired) = kind.get_mut("retired").and_then(Value::as_object_mut) {
                redact_credentials(retired);
            }
        }
        Self(value)
    }
}

/// Replaces a bearer token's hash and a signature's secrets by `<redacted>`.
fn redact_credentials(credentials: &mut serde_json::Map<String, Value>) {
    if credentials.contains_key("auth") {
        credentials.insert("auth".into(), REDACTED.into());
    }
    if let Some(signature) = credentials
        .get_mut("signature")
        .and_then(Value::as_object_mut)
    {
        if signature.contains_key("secret") {
            signature.insert("secret".into(), REDACTED.into());
        }
        if let Some(Value::Array(secrets)) = signature.get_mut("secrets") {
            secrets.iter_mut().for_each(|s| *s = REDACTED.into());
        }
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

/// A trigger's new name or configuration.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct TriggerChange {
    /// Its new name, unique within its workflow.
    name: Option<String>,
    /// Its new configuration, as in [`NewTrigger`]. A webhook configuration
    /// given without credentials keeps the stored ones (answers never show
    /// them, so a client cannot send them back).
    #[schema(value_type = Object)]
    config: Option<TriggerKind>,
    /// Whether it starts runs.
    enabled: Option<bool>,
}

/// The declared form of a trigger, for `PUT .../triggers/{name}`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct DeclaredTrigger {
    /// Its configuration, as in [`NewTrigger`].
    #[schema(value_type = Object)]
    config: TriggerKind,
}

/// Changes a trigger's name, configuration or enabled flag.
#[utoipa::path(put, path = "/api/v1/triggers/{id}", tag = "triggers", request_body = TriggerChange,
    params(("id" = String, Path, format = Uuid)), security(("token" = ["manage"])),
    responses((status = 200, body = Object), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn update<S: Store, X: StepExecutor>(
    State(ctx): State<Ctx<S, X>>,
    caller: Caller,
    Ids(id): Ids<TriggerId>,
    Body(change): Body<TriggerChange>,
) -> Result<Json<TriggerView>, Problem> {
    let mut trigger = reachable_trigger(&ctx, &caller, Scope::Manage, id).await?;
    if let Some(name) = change.name {
        trigger.name = name;
    }
    if let Some(config) = change.config {
        trigger.kind = keep_credentials(&trigger.kind, config);
    }
    if let Some(enabled) = change.enabled {
        trigger.enabled = enabled;
    }
    let trigger = ctx.engine.update_trigger(trigger).await?;
    Ok(Json(TriggerView::of(&trigger)))
}

/// A new configuration, with the stored credentials where it gives none.
fn keep_credentials(stored: &TriggerKind, new: TriggerKind) -> TriggerKind {
    match (stored, new) {
        (TriggerKind::Webhook(old), TriggerKind::Webhook(mut new)) => {
            if new.auth.is_none() && new.signature.is_none() {
                new.auth.clone_from(&old.auth);
                new.signature.clone_from(&old.signature);
                new.retired.clone_from(&old.retired);
            }
            TriggerKind::Webhook(new)
        }
        (_, new) => new,
    }
}

/// Deletes a trigger; the events it received stay.
#[utoipa::path(delete, path = "/api/v1/triggers/{id}", tag = "triggers",
    params(("id" = String, Path, format = Uuid)), security(("token" = ["manage"])),
    responses((status = 204), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn delete<S: Store, X: StepExecutor>(
    State(ctx): State<Ctx<S, X>>,
    caller: Caller,
    Ids(id): Ids<TriggerId>,
) -> Result<StatusCode, Problem> {
    reachable_trigger(&ctx, &caller, Scope::Manage, id).await?;
    ctx.engine.delete_trigger(id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Declares the trigger of a workflow named `name`: created if absent,
/// brought to this configuration if it differs, left alone if it matches.
/// What a deployment runs at every start.
#[utoipa::path(put, path = "/api/v1/workflows/{id}/triggers/{name}", tag = "triggers",
    request_body = DeclaredTrigger,
    params(("id" = String, Path, format = Uuid), ("name" = String, Path)),
    security(("token" = ["manage"])),
    responses((status = 200, body = Object), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn ensure<S: Store, X: StepExecutor>(
    State(ctx): State<Ctx<S, X>>,
    caller: Caller,
    Ids((workflow_id, name)): Ids<(WorkflowId, String)>,
    Body(declared): Body<DeclaredTrigger>,
) -> Result<Json<TriggerView>, Problem> {
    reachable(&ctx, &caller, Scope::Manage, workflow_id).await?;
    // Answers never show credentials, so a declaration without them keeps
    // the stored ones rather than dropping them.
    let stored = ctx.engine.triggers(workflow_id).await?;
    let config = match stored.iter().find(|t| t.name == name) {
        Some(stored) => keep_credentials(&stored.kind, declared.config),
        None => declared.config,
    };
    let trigger = ctx
        .engine
        .ensure_trigger(workflow_id, &name, config)
        .await?;
    Ok(Json(TriggerView::of(&trigger)))
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

/// How long the replaced secret keeps working.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub(crate) struct RotateParams {
    /// Seconds during which the old secret is still accepted beside the
    /// new one (default 0: the old one stops at once, as after a leak).
    overlap_seconds: Option<u64>,
}

/// Replaces a webhook trigger's signing secret (or, without a signature,
/// its bearer token) with a fresh random one, returned once; with
/// `overlap_seconds`, the old one keeps working that long.
#[utoipa::path(post, path = "/api/v1/triggers/{id}/rotate-secret", tag = "triggers",
    params(("id" = String, Path, format = Uuid), RotateParams), security(("token" = ["manage"])),
    responses((status = 200, body = Rotated), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn rotate<S: Store, X: StepExecutor>(
    State(ctx): State<Ctx<S, X>>,
    caller: Caller,
    Ids(id): Ids<TriggerId>,
    Params(params): Params<RotateParams>,
) -> Result<Json<Rotated>, Problem> {
    let mut trigger = reachable_trigger(&ctx, &caller, Scope::Manage, id).await?;
    let TriggerKind::Webhook(config) = &mut trigger.kind else {
        return Err(no_secret());
    };
    let mut random = [0u8; 32];
    getrandom::fill(&mut random).map_err(|e| Problem::internal(&e))?;
    let mut new = config.clone();
    let secret = rotate_config(&mut new, &random)?;
    let overlap = chrono::TimeDelta::seconds(
        i64::try_from(params.overlap_seconds.unwrap_or(0).min(366 * 86_400)).unwrap_or(0),
    );
    let until = ctx.now().checked_add_signed(overlap).unwrap_or(ctx.now());
    *config = config.clone().rotated(&new, until);
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

#[cfg(test)]
mod tests {
    use chrono::Utc;
    use taskforge_core::webhook::SignatureScheme;
    use taskforge_core::{Trigger, TriggerKind, WebhookConfig, WorkflowId};

    use super::TriggerView;

    #[test]
    fn answers_show_no_secret_current_or_retired() {
        let old = WebhookConfig::new("gh").with_signature(SignatureScheme::github("old-plaintext"));
        let new = WebhookConfig::new("gh")
            .with_signature(SignatureScheme::github("new-plaintext"))
            .with_token("token-plaintext-0123456789")
            .expect("token");
        let rotated = old.rotated(&new, Utc::now());
        let trigger = Trigger::new(WorkflowId::new(), TriggerKind::Webhook(rotated), Utc::now());
        let shown = serde_json::to_string(&TriggerView::of(&trigger)).expect("json");
        for secret in ["old-plaintext", "new-plaintext"] {
            assert!(!shown.contains(secret), "{shown}");
        }
        let stored = serde_json::to_string(&trigger).expect("json");
        assert!(
            stored.contains("old-plaintext"),
            "the test would prove nothing"
        );
        assert!(shown.contains("retired"), "{shown}");
    }
}
