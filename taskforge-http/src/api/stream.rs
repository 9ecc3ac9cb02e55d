//! `GET /api/v1/stream`: run updates as server-sent events, for all runs,
//! one workflow's or one run's.
//!
//! Each event is named after the update (`run_queued`, `run_started`,
//! `step_started`, `step_succeeded`, `step_failed`, `step_skipped`,
//! `step_progress`, `step_log`, `run_waiting`, `run_finished`) and carries
//! it as JSON. Asked for one run, the stream opens with a `snapshot` of
//! the run's stored status, so a client that subscribes late still knows
//! where the run is. Updates are live only:
//! a client that missed some reads the history from `/api/v1/runs/{id}`
//! (the engine keeps no replayable log, so `Last-Event-ID` is not honoured).

use std::collections::HashMap;
use std::convert::Infallible;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::stream::{self, Stream, StreamExt};
use serde::Deserialize;
use serde_json::{json, Value};
use taskforge_core::store::Scope;
use taskforge_core::{RunId, RunUpdate, StepExecutor, Store, WorkflowId};
use tokio::sync::broadcast::error::RecvError;
use utoipa::IntoParams;

use super::workflows::reachable;
use super::Params;
use crate::auth::Caller;
use crate::options::Ctx;
use crate::Problem;

/// Which updates to stream.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub(crate) struct StreamFilter {
    /// Only this workflow's runs (required for tokens limited to workflows,
    /// unless `run_id` is given).
    #[param(value_type = Option<String>, format = Uuid)]
    workflow_id: Option<WorkflowId>,
    /// Only this run.
    #[param(value_type = Option<String>, format = Uuid)]
    run_id: Option<RunId>,
}

/// Streams run updates as server-sent events.
#[utoipa::path(get, path = "/api/v1/stream", tag = "runs", params(StreamFilter),
    security(("token" = ["read"])),
    responses((status = 200, description = "A `text/event-stream` of run updates", content_type = "text/event-stream", body = String),
        (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn stream<S: Store, X: StepExecutor>(
    State(ctx): State<Ctx<S, X>>,
    caller: Caller,
    Params(filter): Params<StreamFilter>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, Problem> {
    caller.require(Scope::Read)?;
    // Subscribe before reading the snapshot, so nothing falls in between.
    let updates = ctx.engine.subscribe();
    let mut snapshot = None;
    let mut workflow = filter.workflow_id;
    if let Some(id) = filter.workflow_id {
        reachable(&ctx, &caller, Scope::Read, id).await?;
    }
    if let Some(run_id) = filter.run_id {
        let run = ctx.engine.store().get_run(run_id).await?;
        if caller.restricted() {
            reachable(&ctx, &caller, Scope::Read, run.workflow_id).await?;
        }
        workflow = workflow.or(Some(run.workflow_id));
        snapshot = Some(
            Event::default().event("snapshot").data(
                json!({ "run_id": run.id, "workflow_id": run.workflow_id, "status": run.status })
                    .to_string(),
            ),
        );
    } else if caller.restricted() && filter.workflow_id.is_none() {
        return Err(Problem::forbidden(
            "a token limited to workflows must filter by workflow_id or run_id",
        ));
    }
    let state = Follow {
        ctx: ctx.clone(),
        updates,
        workflow,
        run: filter.run_id,
        owners: HashMap::new(),
    };
    let live = stream::unfold(state, |mut state| async move {
        loop {
            let update = tokio::select! {
                update = state.updates.recv() => update,
                () = state.ctx.options.shutdown.cancelled() => return None,
            };
            let update = match update {
                Ok(update) => update,
                Err(RecvError::Lagged(missed)) => {
                    let event = Event::default()
                        .event("lagged")
                        .data(json!({ "missed": missed }).to_string());
                    return Some((Ok(event), state));
                }
                Err(RecvError::Closed) => return None,
            };
            if let Some(event) = state.judge(&update).await {
                return Some((Ok(event), state));
            }
        }
    });
    let stream = stream::iter(snapshot.map(Ok)).chain(live);
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

struct Follow<S, X> {
    ctx: Ctx<S, X>,
    updates: tokio::sync::broadcast::Receiver<RunUpdate>,
    workflow: Option<WorkflowId>,
    run: Option<RunId>,
    /// Which workflow each run seen belongs to.
    owners: HashMap<RunId, WorkflowId>,
}

impl<S: Store, X: StepExecutor> Follow<S, X> {
    /// The event for `update`, if the filter lets it through.
    async fn judge(&mut self, update: &RunUpdate) -> Option<Event> {
        let (name, run_id, data) = describe(update)?;
        if self.run.is_some_and(|id| id != run_id) {
            return None;
        }
        if let Some(workflow) = self.workflow {
            if let RunUpdate::RunQueued { workflow_id, .. } = update {
                self.owners.insert(run_id, *workflow_id);
            }
            let owner = match self.owners.get(&run_id) {
                Some(owner) => *owner,
                None => {
                    let owner = self
                        .ctx
                        .engine
                        .store()
                        .get_run(run_id)
                        .await
                        .ok()?
                        .workflow_id;
                    if self.owners.len() > 10_000 {
                        self.owners.clear();
                    }
                    self.owners.insert(run_id, owner);
                    owner
                }
            };
            if owner != workflow {
                return None;
            }
        }
        Some(Event::default().event(name).data(data.to_string()))
    }
}

fn describe(update: &RunUpdate) -> Option<(&'static str, RunId, Value)> {
    Some(match update {
        RunUpdate::RunQueued {
            run_id,
            workflow_id,
        } => (
            "run_queued",
            *run_id,
            json!({ "run_id": run_id, "workflow_id": workflow_id, "status": "queued" }),
        ),
        RunUpdate::RunStarted { run_id, resumed } => (
            "run_started",
            *run_id,
            json!({ "run_id": run_id, "resumed": resumed, "status": "running" }),
        ),
        RunUpdate::StepStarted {
            run_id,
            step_key,
            attempt,
        } => (
            "step_started",
            *run_id,
            json!({ "run_id": run_id, "step_key": step_key, "attempt": attempt }),
        ),
        RunUpdate::StepSucceeded {
            run_id,
            step_key,
            attempt,
        } => (
            "step_succeeded",
            *run_id,
            json!({ "run_id": run_id, "step_key": step_key, "attempt": attempt }),
        ),
        RunUpdate::StepFailed {
            run_id,
            step_key,
            attempt,
            error,
            retry_at,
        } => (
            "step_failed",
            *run_id,
            json!({ "run_id": run_id, "step_key": step_key, "attempt": attempt,
                    "error": error, "retry_at": retry_at }),
        ),
        RunUpdate::StepSkipped {
            run_id,
            step_key,
            reason,
        } => (
            "step_skipped",
            *run_id,
            json!({ "run_id": run_id, "step_key": step_key, "reason": reason }),
        ),
        RunUpdate::StepProgress {
            run_id,
            step_key,
            progress,
        } => (
            "step_progress",
            *run_id,
            json!({ "run_id": run_id, "step_key": step_key, "progress": progress }),
        ),
        RunUpdate::StepLog {
            step_key,
            attempt,
            line,
        } => (
            "step_log",
            line.run_id,
            json!({ "run_id": line.run_id, "step_key": step_key, "attempt": attempt,
                    "step_run_id": line.step_run_id, "seq": line.seq, "at": line.at,
                    "level": line.level, "message": line.message }),
        ),
        RunUpdate::RunWaiting { run_id, wake_at } => (
            "run_waiting",
            *run_id,
            json!({ "run_id": run_id, "status": "waiting", "wake_at": wake_at }),
        ),
        RunUpdate::RunFinished { run_id, status } => (
            "run_finished",
            *run_id,
            json!({ "run_id": run_id, "status": status }),
        ),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_skipped_step_is_an_event_of_its_own() {
        let run_id = RunId::new();
        let update = RunUpdate::StepSkipped {
            run_id,
            step_key: "deploy".into(),
            reason: "skipped: its condition is false".into(),
        };
        let (name, id, data) = describe(&update).expect("described");
        assert_eq!((name, id), ("step_skipped", run_id));
        assert_eq!(
            data,
            json!({ "run_id": run_id, "step_key": "deploy", "reason": "skipped: its condition is false" })
        );
    }
}
