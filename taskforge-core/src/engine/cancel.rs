//! Cancelling a run, from any engine on the store.

use super::shared::Shared;
use super::update::RunUpdate;
use crate::error::EngineError;
use crate::id::RunId;
use crate::run::{
    RunError, RunStatus, RunTransition, StepFailure, StepStatus, StepTransition, WorkflowRun,
};
use crate::store::Store;

/// Asks for run `id` to be cancelled. A run executing on this engine is
/// stopped at its next await point; a queued or parked (waiting) one is
/// claimed and cancelled at once (a parked run's waiting steps with it); a running one on another engine stops when its owner next
/// checks the store (every `cancel_check_interval`). Returns the run as it
/// is after the request.
pub(crate) async fn cancel_run<S: Store, X>(
    shared: &Shared<S, X>,
    id: RunId,
) -> Result<WorkflowRun, EngineError> {
    let run = shared.store.request_cancel(id).await?;
    if run.status.is_terminal() {
        return Err(EngineError::RunFinished {
            run: id,
            status: run.status,
        });
    }
    // A run stored as waiting is parked: its worker's last write parked
    // it, and the worker may still be on its way out of the local set. It
    // is claimed and cancelled below rather than left to that worker.
    if run.status != RunStatus::Waiting {
        if let Some(token) = shared.local.lock().get(&id) {
            token.cancel();
            return Ok(run);
        }
    }
    if matches!(run.status, RunStatus::Queued | RunStatus::Waiting) {
        // Claim it to cancel it now (the flag makes a parked run due); if a
        // worker beat us to the claim, it sees the flag before running
        // anything.
        let now = shared.now();
        if let Ok(mut claimed) = shared
            .store
            .claim_run(id, &shared.config.owner, now, shared.lease_until(now))
            .await
        {
            let fence = claimed.fence();
            // A parked run's wait steps stop waiting.
            let mut steps = Vec::new();
            if claimed.status == RunStatus::Waiting {
                for mut step in shared.store.list_step_runs(id).await? {
                    if step.status == StepStatus::Running {
                        step.transition(StepTransition::Cancel, now)?;
                        step.error = Some(StepFailure {
                            message: "cancelled".into(),
                            terminal: true,
                            detail: None,
                        });
                        steps.push(step);
                    }
                }
            }
            let message = match claimed.status {
                RunStatus::Waiting => "cancelled while it waited",
                _ => "cancelled before it started",
            };
            claimed.transition(RunTransition::Cancel, now)?;
            claimed.error = Some(RunError {
                message: message.into(),
                step: steps.first().map(|s| s.step_key.clone()),
                detail: None,
            });
            shared.store.commit(fence, Some(&claimed), &steps).await?;
            shared.emit(|| RunUpdate::RunFinished {
                run_id: id,
                status: RunStatus::Cancelled,
            });
            return Ok(claimed);
        }
    }
    Ok(shared.store.get_run(id).await?)
}
