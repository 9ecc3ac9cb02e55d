//! Workflows and their versions.

use crate::json::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use taskforge_core::store::Scope;
use taskforge_core::{
    StepDefinition, StepExecutor, Store, Workflow, WorkflowDefinition, WorkflowId, WorkflowVersion,
};
use utoipa::{IntoParams, ToSchema};

use super::{Body, Ids, Page, Params};
use crate::auth::Caller;
use crate::options::Ctx;
use crate::Problem;

/// Paging of a listing that the store returns whole.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub(crate) struct Paging {
    /// The `next` of the previous page.
    after: Option<String>,
    /// Page size, 1 to 1000 (default 100).
    #[serde(default)]
    limit: usize,
}

/// A new workflow.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewWorkflow {
    /// Its unique name.
    name: String,
}

/// The workflow `id`, if the caller may see it with `scope`.
pub(crate) async fn reachable<S: Store, X: StepExecutor>(
    ctx: &Ctx<S, X>,
    caller: &Caller,
    scope: Scope,
    id: WorkflowId,
) -> Result<Workflow, Problem> {
    caller.require(scope)?;
    let workflow = ctx.engine.workflow(id).await?;
    caller.require_for(scope, &workflow)?;
    Ok(workflow)
}

/// Lists workflows.
#[utoipa::path(get, path = "/api/v1/workflows", tag = "workflows", params(Paging),
    security(("token" = ["read"])),
    responses((status = 200, body = Object), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn list<S: Store, X: StepExecutor>(
    State(ctx): State<Ctx<S, X>>,
    caller: Caller,
    Params(paging): Params<Paging>,
) -> Result<Json<Page<Workflow>>, Problem> {
    caller.require(Scope::Read)?;
    let after = parse_cursor::<WorkflowId>(paging.after.as_deref())?;
    let workflows: Vec<Workflow> = ctx
        .engine
        .store()
        .list_workflows()
        .await?
        .into_iter()
        .filter(|w| caller.token.reaches(&w.name))
        .collect();
    Ok(Json(Page::slice(workflows, |w| w.id, after, paging.limit)))
}

/// Creates a workflow.
#[utoipa::path(post, path = "/api/v1/workflows", tag = "workflows", request_body = NewWorkflow,
    security(("token" = ["manage"])),
    responses((status = 201, body = Object), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn create<S: Store, X: StepExecutor>(
    State(ctx): State<Ctx<S, X>>,
    caller: Caller,
    Body(new): Body<NewWorkflow>,
) -> Result<(StatusCode, Json<Workflow>), Problem> {
    caller.require(Scope::Manage)?;
    if !caller.token.reaches(&new.name) {
        return Err(Problem::forbidden(format!(
            "this token does not reach workflow {}",
            new.name
        )));
    }
    let workflow = ctx.engine.create_workflow(&new.name).await?;
    Ok((StatusCode::CREATED, Json(workflow)))
}

/// A workflow.
#[utoipa::path(get, path = "/api/v1/workflows/{id}", tag = "workflows",
    params(("id" = String, Path, format = Uuid)), security(("token" = ["read"])),
    responses((status = 200, body = Object), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn get_one<S: Store, X: StepExecutor>(
    State(ctx): State<Ctx<S, X>>,
    caller: Caller,
    Ids(id): Ids<WorkflowId>,
) -> Result<Json<Workflow>, Problem> {
    Ok(Json(reachable(&ctx, &caller, Scope::Read, id).await?))
}

/// Makes a workflow take new runs.
#[utoipa::path(post, path = "/api/v1/workflows/{id}/activate", tag = "workflows",
    params(("id" = String, Path, format = Uuid)), security(("token" = ["manage"])),
    responses((status = 200, body = Object), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn activate<S: Store, X: StepExecutor>(
    State(ctx): State<Ctx<S, X>>,
    caller: Caller,
    Ids(id): Ids<WorkflowId>,
) -> Result<Json<Workflow>, Problem> {
    reachable(&ctx, &caller, Scope::Manage, id).await?;
    Ok(Json(ctx.engine.set_workflow_active(id, true).await?))
}

/// Makes a workflow refuse new runs; runs in flight finish.
#[utoipa::path(post, path = "/api/v1/workflows/{id}/deactivate", tag = "workflows",
    params(("id" = String, Path, format = Uuid)), security(("token" = ["manage"])),
    responses((status = 200, body = Object), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn deactivate<S: Store, X: StepExecutor>(
    State(ctx): State<Ctx<S, X>>,
    caller: Caller,
    Ids(id): Ids<WorkflowId>,
) -> Result<Json<Workflow>, Problem> {
    reachable(&ctx, &caller, Scope::Manage, id).await?;
    Ok(Json(ctx.engine.set_workflow_active(id, false).await?))
}

/// Lists a workflow's versions, by number.
#[utoipa::path(get, path = "/api/v1/workflows/{id}/versions", tag = "versions",
    params(("id" = String, Path, format = Uuid), Paging), security(("token" = ["read"])),
    responses((status = 200, body = Object), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn versions<S: Store, X: StepExecutor>(
    State(ctx): State<Ctx<S, X>>,
    caller: Caller,
    Ids(id): Ids<WorkflowId>,
    Params(paging): Params<Paging>,
) -> Result<Json<Page<WorkflowVersion>>, Problem> {
    reachable(&ctx, &caller, Scope::Read, id).await?;
    let after = parse_cursor::<u32>(paging.after.as_deref())?;
    let versions = ctx.engine.versions(id).await?;
    Ok(Json(Page::slice(
        versions,
        |v| v.number,
        after,
        paging.limit,
    )))
}

/// Publishes a definition as the workflow's next version (or returns the
/// latest, if it is equal).
#[utoipa::path(post, path = "/api/v1/workflows/{id}/versions", tag = "versions",
    params(("id" = String, Path, format = Uuid)), request_body = Object,
    security(("token" = ["manage"])),
    responses((status = 201, body = Object), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn publish<S: Store, X: StepExecutor>(
    State(ctx): State<Ctx<S, X>>,
    caller: Caller,
    Ids(id): Ids<WorkflowId>,
    Body(definition): Body<WorkflowDefinition>,
) -> Result<(StatusCode, Json<WorkflowVersion>), Problem> {
    reachable(&ctx, &caller, Scope::Manage, id).await?;
    let version = ctx.engine.publish(id, definition).await?;
    Ok((StatusCode::CREATED, Json(version)))
}

/// One version.
#[utoipa::path(get, path = "/api/v1/workflows/{id}/versions/{number}", tag = "versions",
    params(("id" = String, Path, format = Uuid), ("number" = u32, Path)),
    security(("token" = ["read"])),
    responses((status = 200, body = Object), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn version<S: Store, X: StepExecutor>(
    State(ctx): State<Ctx<S, X>>,
    caller: Caller,
    Ids((id, number)): Ids<(WorkflowId, u32)>,
) -> Result<Json<WorkflowVersion>, Problem> {
    reachable(&ctx, &caller, Scope::Read, id).await?;
    Ok(Json(
        ctx.engine.store().get_version_by_number(id, number).await?,
    ))
}

/// Which version to compare with.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub(crate) struct Against {
    /// The other version's number (default: the one before).
    against: Option<u32>,
}

/// What changed from one version to another.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Diff {
    /// The older version's number.
    from: u32,
    /// The newer version's number.
    to: u32,
    /// Keys of steps only in the newer version.
    added: Vec<String>,
    /// Keys of steps only in the older version.
    removed: Vec<String>,
    /// Steps in both whose definition differs.
    #[schema(value_type = Vec<Object>)]
    changed: Vec<Value>,
    /// Whether the step order differs.
    reordered: bool,
    /// Whether the workflow-wide settings differ: retry policy, timeout,
    /// parallel limit or declared output.
    settings_changed: bool,
}

/// Compares two versions of a workflow, step by step.
#[utoipa::path(get, path = "/api/v1/workflows/{id}/versions/{number}/diff", tag = "versions",
    params(("id" = String, Path, format = Uuid), ("number" = u32, Path), Against),
    security(("token" = ["read"])),
    responses((status = 200, body = Diff), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn diff<S: Store, X: StepExecutor>(
    State(ctx): State<Ctx<S, X>>,
    caller: Caller,
    Ids((id, number)): Ids<(WorkflowId, u32)>,
    Params(against): Params<Against>,
) -> Result<Json<Diff>, Problem> {
    reachable(&ctx, &caller, Scope::Read, id).await?;
    let other = match against.against {
        Some(n) => n,
        None => number
            .checked_sub(1)
            .filter(|n| *n > 0)
            .ok_or_else(|| Problem::bad_request("version 1 has no predecessor; pass `against`"))?,
    };
    let store = ctx.engine.store();
    let (a, b) = (
        store.get_version_by_number(id, number.min(other)).await?,
        store.get_version_by_number(id, number.max(other)).await?,
    );
    Ok(Json(compare(&a, &b)))
}

fn compare(old: &WorkflowVersion, new: &WorkflowVersion) -> Diff {
    let find = |steps: &[StepDefinition], key: &str| steps.iter().position(|s| s.key == key);
    let (before, after) = (&old.definition.steps, &new.definition.steps);
    let added = after
        .iter()
        .filter(|s| find(before, &s.key).is_none())
        .map(|s| s.key.clone())
        .collect();
    let removed = before
        .iter()
        .filter(|s| find(after, &s.key).is_none())
        .map(|s| s.key.clone())
        .collect();
    let changed = after
        .iter()
        .filter_map(|s| {
            let previous = &before[find(before, &s.key)?];
            (previous != s)
                .then(|| serde_json::json!({ "key": s.key, "before": previous, "after": s }))
        })
        .collect();
    let common = |a: &[StepDefinition], b: &[StepDefinition]| -> Vec<String> {
        a.iter()
            .filter(|s| find(b, &s.key).is_some())
            .map(|s| s.key.clone())
            .collect()
    };
    Diff {
        from: old.number,
        to: new.number,
        added,
        removed,
        changed,
        reordered: common(before, after) != common(after, before),
        settings_changed: old.definition.retry != new.definition.retry
            || old.definition.timeout != new.definition.timeout
            || old.definition.max_parallel_steps != new.definition.max_parallel_steps
            || old.definition.output != new.definition.output,
    }
}

/// A cursor, as the previous page gave it: 400 if it is not one.
pub(crate) fn parse_cursor<C: std::str::FromStr>(text: Option<&str>) -> Result<Option<C>, Problem> {
    text.map(|t| {
        t.parse().map_err(|_| {
            Problem::new(StatusCode::BAD_REQUEST, "invalid-cursor", "Invalid cursor")
                .detail("`after` must be the `next` of a previous page")
        })
    })
    .transpose()
}
