//! Cancelling a run, from any engine on the store.

use super::shared::Shared;
use super::update::RunUpdate;
use crate::error::EngineError;
use crate::id::RunId;
use crate::run::{RunError, RunStatus, RunTransition, WorkflowRun};
use crate::store::Store;

/// Asks for run `id` to be cancelled. A run executing on this engine is
/// stopped at its next await point; a queued one is claimed and cancelled
/// at once; a running one on another engine stops when its owner next
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
    if let Some(token) = shared.local.lock().get(&id) {
        token.cancel();
        return Ok(run);
    }
    if run.status == RunStatus::Queued {
        // Claim it to cancel it now; if a worker beat us to the claim, it
        // sees the flag before running anything.
        let now = shared.now();
        if let Ok(mut claimed) = shared
            .store
            .claim_run(id, &shared.config.owner, now, shared.lease_until(now))
            .await
        {
            let fence = claimed.fence();
            claimed.transition(RunTransition::Cancel, now)?;
            claimed.error = Some(RunError {
                message: "cancelled before it started".into(),
                step: None,
                detail: None,
            });
            shared.store.commit(fence, Some(&claimed), &[]).await?;
            shared.emit(|| RunUpdate::RunFinished {
                run_id: id,
                status: RunStatus::Cancelled,
            });
            return Ok(claimed);
        }
    }
    Ok(shared.store.get_run(id).await?)
}
