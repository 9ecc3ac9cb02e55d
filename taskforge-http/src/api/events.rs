//! Events: listing, details, the runs an event caused, replay.

use crate::json::Json;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use taskforge_core::store::OutcomeKind;
use taskforge_core::store::Scope;
use taskforge_core::{
    Event, EventId, EventQuery, ReplayOptions, ReplayVersion, StepExecutor, Store, TriggerId,
    WorkflowId, WorkflowRun,
};
use utoipa::IntoParams;

use super::runs::{order, OrderParam};
use super::workflows::{parse_cursor, reachable};
use super::{Ids, Page, Params};
use crate::auth::Caller;
use crate::options::Ctx;
use crate::Problem;

/// Which events to list.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub(crate) struct EventFilter {
    /// Only this workflow's events (required for tokens limited to workflows).
    #[param(value_type = Option<String>, format = Uuid)]
    workflow_id: Option<WorkflowId>,
    /// Only events of this trigger.
    #[param(value_type = Option<String>, format = Uuid)]
    trigger_id: Option<TriggerId>,
    /// Only events with this outcome: run_started, filtered,
    /// workflow_inactive, trigger_disabled, skipped, rejected, limited.
    #[param(value_type = Option<String>)]
    outcome: Option<OutcomeKind>,
    /// Only events received at or after this time (RFC 3339).
    received_from: Option<DateTime<Utc>>,
    /// Only events received before this time (RFC 3339).
    received_until: Option<DateTime<Utc>>,
    /// `oldest_first` (default) or `newest_first`.
    #[param(value_type = Option<String>)]
    order: Option<OrderParam>,
    /// The `next` of the previous page.
    after: Option<String>,
    /// Page size, 1 to 1000 (default 100).
    #[serde(default)]
    limit: usize,
}

async fn reachable_event<S: Store, X: StepExecutor>(
    ctx: &Ctx<S, X>,
    caller: &Caller,
    scope: Scope,
    id: EventId,
) -> Result<Event, Problem> {
    caller.require(scope)?;
    let event = ctx.engine.event(id).await?;
    if caller.restricted() {
        reachable(ctx, caller, scope, event.workflow_id).await?;
    }
    Ok(event)
}

/// Lists events by workflow, trigger, outcome and time.
#[utoipa::path(get, path = "/api/v1/events", tag = "events", params(EventFilter),
    security(("token" = ["read"])),
    responses((status = 200, body = Object), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn list<S: Store, X: StepExecutor>(
    State(ctx): State<Ctx<S, X>>,
    caller: Caller,
    Params(filter): Params<EventFilter>,
) -> Result<Json<Page<Event>>, Problem> {
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
    let query = EventQuery {
        workflow_id: filter.workflow_id,
        trigger_id: filter.trigger_id,
        outcome: filter.outcome,
        received_from: filter.received_from,
        received_until: filter.received_until,
        order: order(filter.order),
        after: parse_cursor(filter.after.as_deref())?,
        limit: filter.limit,
    };
    let page = ctx.engine.list_events(&query).await?;
    Ok(Json(Page::from_store(page, |event| event)))
}

/// An event.
#[utoipa::path(get, path = "/api/v1/events/{id}", tag = "events",
    params(("id" = String, Path, format = Uuid)), security(("token" = ["read"])),
    responses((status = 200, body = Object), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn get_one<S: Store, X: StepExecutor>(
    State(ctx): State<Ctx<S, X>>,
    caller: Caller,
    Ids(id): Ids<EventId>,
) -> Result<Json<Event>, Problem> {
    Ok(Json(reachable_event(&ctx, &caller, Scope::Read, id).await?))
}

/// Every run an event caused: the one it started, and its replays.
#[utoipa::path(get, path = "/api/v1/events/{id}/runs", tag = "events",
    params(("id" = String, Path, format = Uuid)), security(("token" = ["read"])),
    responses((status = 200, body = Vec<Object>), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn runs<S: Store, X: StepExecutor>(
    State(ctx): State<Ctx<S, X>>,
    caller: Caller,
    Ids(id): Ids<EventId>,
) -> Result<Json<Vec<WorkflowRun>>, Problem> {
    reachable_event(&ctx, &caller, Scope::Read, id).await?;
    Ok(Json(ctx.engine.runs_of_event(id).await?))
}

/// Which version a replay runs on.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub(crate) struct ReplayParams {
    /// `latest` (the default: the workflow's latest version) or
    /// `original` (the version the event's first run was pinned to).
    #[param(value_type = Option<String>)]
    version: Option<ReplayVersion>,
}

/// Starts a new run from a stored event's payload, on the latest version
/// or (`?version=original`) on the one its first run was pinned to.
#[utoipa::path(post, path = "/api/v1/events/{id}/replay", tag = "events",
    params(("id" = String, Path, format = Uuid), ReplayParams), security(("token" = ["run"])),
    responses((status = 201, body = Object), (status = "4XX", body = Problem, content_type = "application/problem+json"),
        (status = 503, body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn replay<S: Store, X: StepExecutor>(
    State(ctx): State<Ctx<S, X>>,
    caller: Caller,
    Ids(id): Ids<EventId>,
    Params(params): Params<ReplayParams>,
) -> Result<(StatusCode, Json<WorkflowRun>), Problem> {
    reachable_event(&ctx, &caller, Scope::Run, id).await?;
    ctx.refuse_if_draining()?;
    let options = ReplayOptions::new()
        .version(params.version.unwrap_or_default())
        .requested_by(format!("token:{}", caller.token.id));
    let run = ctx.engine.replay_event_with(id, options).await?;
    tracing::Span::current().record("run_id", tracing::field::display(run.id));
    Ok((StatusCode::CREATED, Json(run)))
}
