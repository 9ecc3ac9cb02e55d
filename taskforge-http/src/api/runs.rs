//! Runs: listing, details with every step attempt, start, cancel, signal,
//! wait.

use std::time::Duration;

use crate::json::Json;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::Response;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use taskforge_core::artifact::Artifact;
use taskforge_core::store::{LogQuery, Scope};
use taskforge_core::{
    EventId, LogLine, Order, RunDetails, RunId, RunOptions, RunQuery, RunStatus, StepExecutor,
    StepRun, StepRunId, Store, WorkflowId, WorkflowRun,
};
use utoipa::{IntoParams, ToSchema};

use super::workflows::{parse_cursor, reachable};
use super::{Body, Ids, Page, Params};
use crate::auth::Caller;
use crate::options::Ctx;
use crate::Problem;

/// Which runs to list.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub(crate) struct RunFilter {
    /// Only this workflow's runs (required for tokens limited to workflows).
    #[param(value_type = Option<String>, format = Uuid)]
    workflow_id: Option<WorkflowId>,
    /// Only runs in this status: queued, running, waiting, succeeded,
    /// failed, cancelled, timed_out.
    #[param(value_type = Option<String>)]
    status: Option<RunStatus>,
    /// Only runs of this event.
    #[param(value_type = Option<String>, format = Uuid)]
    event_id: Option<EventId>,
    /// Only runs created at or after this time (RFC 3339).
    created_from: Option<DateTime<Utc>>,
    /// Only runs created before this time (RFC 3339).
    created_until: Option<DateTime<Utc>>,
    /// `oldest_first` (default) or `newest_first`.
    order: Option<OrderParam>,
    /// The `next` of the previous page.
    after: Option<String>,
    /// Page size, 1 to 1000 (default 100).
    #[serde(default)]
    limit: usize,
}

/// The order of a listing.
#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum OrderParam {
    /// Oldest first.
    OldestFirst,
    /// Newest first.
    NewestFirst,
}

/// The store's order for an `order` parameter.
pub(crate) fn order(order: Option<OrderParam>) -> Order {
    match order {
        Some(OrderParam::NewestFirst) => Order::NewestFirst,
        _ => Order::OldestFirst,
    }
}

/// A run with every step attempt.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct RunView {
    /// The run.
    #[schema(value_type = Object)]
    run: WorkflowRun,
    /// Every attempt of every step, by step then attempt.
    #[schema(value_type = Vec<Object>)]
    steps: Vec<StepRun>,
}

impl From<RunDetails> for RunView {
    fn from(details: RunDetails) -> Self {
        Self {
            run: details.run,
            steps: details.steps,
        }
    }
}

/// The run `id`, if the caller may see it with `scope`.
async fn reachable_run<S: Store, X: StepExecutor>(
    ctx: &Ctx<S, X>,
    caller: &Caller,
    scope: Scope,
    id: RunId,
) -> Result<RunDetails, Problem> {
    caller.require(scope)?;
    let details = ctx.engine.run(id).await?;
    if caller.restricted() {
        reachable(ctx, caller, scope, details.run.workflow_id).await?;
    }
    Ok(details)
}

/// Lists runs by workflow, status, event and creation time.
#[utoipa::path(get, path = "/api/v1/runs", tag = "runs", params(RunFilter),
    security(("token" = ["read"])),
    responses((status = 200, body = Object), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn list<S: Store, X: StepExecutor>(
    State(ctx): State<Ctx<S, X>>,
    caller: Caller,
    Params(filter): Params<RunFilter>,
) -> Result<Json<Page<WorkflowRun>>, Problem> {
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
    let query = RunQuery {
        workflow_id: filter.workflow_id,
        status: filter.status,
        event_id: filter.event_id,
        concurrency_key: None,
        created_from: filter.created_from,
        created_until: filter.created_until,
        order: order(filter.order),
        after: parse_cursor(filter.after.as_deref())?,
        limit: filter.limit,
    };
    let page = ctx.engine.list_runs(&query).await?;
    Ok(Json(Page::from_store(page, |run| run)))
}

/// A run with every step attempt.
#[utoipa::path(get, path = "/api/v1/runs/{id}", tag = "runs",
    params(("id" = String, Path, format = Uuid)), security(("token" = ["read"])),
    responses((status = 200, body = RunView), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn get_one<S: Store, X: StepExecutor>(
    State(ctx): State<Ctx<S, X>>,
    caller: Caller,
    Ids(id): Ids<RunId>,
) -> Result<Json<RunView>, Problem> {
    Ok(Json(
        reachable_run(&ctx, &caller, Scope::Read, id).await?.into(),
    ))
}

/// Which page of an attempt's log.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub(crate) struct LogPage {
    /// The `next` of the previous page (a line's seq).
    after: Option<u32>,
    /// Page size, 1 to 1000 (default 100).
    #[serde(default)]
    limit: usize,
}

/// A page of one step attempt's log, oldest line first. Lines still being
/// written arrive live on the stream as `step_log` events.
#[utoipa::path(get, path = "/api/v1/runs/{id}/steps/{step_run_id}/logs", tag = "runs",
    params(("id" = String, Path, format = Uuid), ("step_run_id" = String, Path, format = Uuid), LogPage),
    security(("token" = ["read"])),
    responses((status = 200, body = Object), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn logs<S: Store, X: StepExecutor>(
    State(ctx): State<Ctx<S, X>>,
    caller: Caller,
    Ids((id, step_run_id)): Ids<(RunId, StepRunId)>,
    Params(page): Params<LogPage>,
) -> Result<Json<Page<LogLine>>, Problem> {
    let details = reachable_run(&ctx, &caller, Scope::Read, id).await?;
    if !details.steps.iter().any(|step| step.id == step_run_id) {
        return Err(Problem::not_found(format!(
            "run {id} has no step attempt {step_run_id}"
        )));
    }
    let query = LogQuery {
        run_id: id,
        step_run_id,
        after: page.after,
        limit: page.limit,
    };
    let lines = ctx.engine.step_logs(&query).await?;
    Ok(Json(Page::from_store(lines, |line| line)))
}

/// The artifacts a run's steps stored, by name, with size and SHA-256.
#[utoipa::path(get, path = "/api/v1/runs/{id}/artifacts", tag = "runs",
    params(("id" = String, Path, format = Uuid)), security(("token" = ["read"])),
    responses((status = 200, body = Object), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn artifacts<S: Store, X: StepExecutor>(
    State(ctx): State<Ctx<S, X>>,
    caller: Caller,
    Ids(id): Ids<RunId>,
) -> Result<Json<Vec<Artifact>>, Problem> {
    reachable_run(&ctx, &caller, Scope::Read, id).await?;
    Ok(Json(ctx.engine.run_artifacts(id).await?))
}

/// One artifact's content, streamed, with its SHA-256 as the `ETag` and
/// in `x-taskforge-sha256`.
#[utoipa::path(get, path = "/api/v1/runs/{id}/artifacts/{name}", tag = "runs",
    params(("id" = String, Path, format = Uuid), ("name" = String, Path)),
    security(("token" = ["read"])),
    responses((status = 200, content_type = "application/octet-stream", body = Vec<u8>),
        (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn artifact<S: Store, X: StepExecutor>(
    State(ctx): State<Ctx<S, X>>,
    caller: Caller,
    Ids((id, name)): Ids<(RunId, String)>,
) -> Result<Response, Problem> {
    reachable_run(&ctx, &caller, Scope::Read, id).await?;
    let (record, stream) = ctx.engine.open_artifact(id, &name).await?;
    let disposition = format!(
        "attachment; filename=\"{}\"",
        record.name.replace(['"', '\\'], "_")
    );
    Response::builder()
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .header(header::CONTENT_LENGTH, record.size)
        .header(header::ETAG, format!("\"{}\"", record.sha256))
        .header("x-taskforge-sha256", &record.sha256)
        .header(header::CONTENT_DISPOSITION, disposition)
        .body(axum::body::Body::from_stream(stream))
        .map_err(|e| Problem::internal(&e))
}

/// A run to start.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct StartRun {
    /// The run's input (default `{}`).
    #[serde(default)]
    #[schema(value_type = Object)]
    input: Option<Value>,
    /// Starting twice with one key gives one run.
    idempotency_key: Option<String>,
    /// Run this version number instead of the latest.
    version: Option<u32>,
}

/// Starts a run of a workflow.
#[utoipa::path(post, path = "/api/v1/workflows/{id}/runs", tag = "runs",
    params(("id" = String, Path, format = Uuid)), request_body = StartRun,
    security(("token" = ["run"])),
    responses((status = 201, body = Object), (status = "4XX", body = Problem, content_type = "application/problem+json"),
        (status = 503, body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn start<S: Store, X: StepExecutor>(
    State(ctx): State<Ctx<S, X>>,
    caller: Caller,
    Ids(id): Ids<WorkflowId>,
    headers: axum::http::HeaderMap,
    Body(start): Body<StartRun>,
) -> Result<(StatusCode, Json<WorkflowRun>), Problem> {
    reachable(&ctx, &caller, Scope::Run, id).await?;
    ctx.refuse_if_draining()?;
    if start
        .idempotency_key
        .as_ref()
        .is_some_and(|k| k.is_empty() || k.len() > 200)
    {
        return Err(Problem::bad_request(
            "idempotency_key must be 1 to 200 bytes",
        ));
    }
    let mut options = RunOptions::new().requested_by(format!("token:{}", caller.token.id));
    if let Some(version) = start.version {
        options = options.version(version);
    }
    if let Some(key) = start.idempotency_key {
        options = options.idempotency_key(key);
    }
    // The caller's W3C trace context follows the run (the engine keeps it
    // only if it is well formed).
    if let Some(parent) = headers.get("traceparent").and_then(|v| v.to_str().ok()) {
        options = options.trace_parent(parent);
    }
    let input = start
        .input
        .unwrap_or_else(|| Value::Object(Default::default()));
    let run = ctx.engine.start_run_with(id, input, options).await?;
    tracing::Span::current().record("run_id", tracing::field::display(run.id));
    Ok((StatusCode::CREATED, Json(run)))
}

/// Asks a run to stop.
#[utoipa::path(post, path = "/api/v1/runs/{id}/cancel", tag = "runs",
    params(("id" = String, Path, format = Uuid)), security(("token" = ["run"])),
    responses((status = 200, body = Object), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn cancel<S: Store, X: StepExecutor>(
    State(ctx): State<Ctx<S, X>>,
    caller: Caller,
    Ids(id): Ids<RunId>,
) -> Result<Json<WorkflowRun>, Problem> {
    reachable_run(&ctx, &caller, Scope::Run, id).await?;
    Ok(Json(ctx.engine.cancel_run(id).await?))
}

/// Resumes a failed, timed-out or cancelled run from the steps that did not
/// succeed: a new run on the same pinned version whose history carries the
/// succeeded steps (`carried_from`), named by `resumed_from`. `409
/// not-resumable` for a run that is not finished or succeeded.
#[utoipa::path(post, path = "/api/v1/runs/{id}/resume", tag = "runs",
    params(("id" = String, Path, format = Uuid)), security(("token" = ["run"])),
    responses((status = 201, body = Object), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn resume<S: Store, X: StepExecutor>(
    State(ctx): State<Ctx<S, X>>,
    caller: Caller,
    Ids(id): Ids<RunId>,
) -> Result<(StatusCode, Json<WorkflowRun>), Problem> {
    reachable_run(&ctx, &caller, Scope::Run, id).await?;
    ctx.refuse_if_draining()?;
    let who = format!("token:{}", caller.token.id);
    let run = ctx.engine.resume_run_as(id, Some(&who)).await?;
    Ok((StatusCode::CREATED, Json(run)))
}

/// Sends the signal `name` to a run, with the request body (any JSON value)
/// as its payload: the wait step waiting for `name` receives it as its
/// output (see `StepDefinition::wait_for_signal`). The signal is kept with
/// the run, so one sent before the run reaches its wait step is received
/// when it gets there; a parked run wakes at once. Answers the run as
/// stored after the signal. `409 run-finished` for a finished run,
/// `422 invalid-input` for a name outside `[A-Za-z0-9_.-]` or a payload
/// over 64 KiB.
#[utoipa::path(post, path = "/api/v1/runs/{id}/signals/{name}", tag = "runs",
    params(("id" = String, Path, format = Uuid), ("name" = String, Path)),
    request_body(content = Object, description = "The signal's payload: any JSON value."),
    security(("token" = ["run"])),
    responses((status = 200, body = Object), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn signal<S: Store, X: StepExecutor>(
    State(ctx): State<Ctx<S, X>>,
    caller: Caller,
    Ids((id, name)): Ids<(RunId, String)>,
    Body(payload): Body<Value>,
) -> Result<Json<WorkflowRun>, Problem> {
    reachable_run(&ctx, &caller, Scope::Run, id).await?;
    Ok(Json(ctx.engine.signal_run(id, &name, payload).await?))
}

/// How long to wait.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub(crate) struct WaitParams {
    /// At most this many milliseconds (capped by the server; default its cap).
    timeout_ms: Option<u64>,
}

/// Waits for a run to finish: 200 with the finished run, or 202 with the
/// run as it is when the wait ran out.
#[utoipa::path(get, path = "/api/v1/runs/{id}/wait", tag = "runs",
    params(("id" = String, Path, format = Uuid), WaitParams), security(("token" = ["read"])),
    responses((status = 200, body = RunView), (status = 202, body = RunView),
        (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn wait<S: Store, X: StepExecutor>(
    State(ctx): State<Ctx<S, X>>,
    caller: Caller,
    Ids(id): Ids<RunId>,
    Params(params): Params<WaitParams>,
) -> Result<(StatusCode, Json<RunView>), Problem> {
    reachable_run(&ctx, &caller, Scope::Read, id).await?;
    let limit = params
        .timeout_ms
        .map_or(ctx.options.max_wait, Duration::from_millis)
        .min(ctx.options.max_wait);
    let status = match tokio::time::timeout(limit, ctx.engine.wait_for_run(id)).await {
        Ok(result) => {
            result?;
            StatusCode::OK
        }
        Err(_) => StatusCode::ACCEPTED,
    };
    Ok((status, Json(ctx.engine.run(id).await?.into())))
}
