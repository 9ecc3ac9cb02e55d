//! Signals: sent to a run from any engine, kept with it in the store, and
//! received by its wait steps.

use serde_json::Value;

use super::shared::Shared;
use crate::error::{EngineError, StoreError};
use crate::id::RunId;
use crate::run::{RunStatus, Signal, WorkflowRun, MAX_SIGNAL_PAYLOAD_BYTES};
use crate::store::Store;
use crate::workflow::check_identifier;

/// Stores the signal `name` with `payload` for run `id`, and wakes this
/// engine's dispatcher if the run is parked (the store wakes the others).
pub(crate) async fn signal_run<S: Store, X>(
    shared: &Shared<S, X>,
    id: RunId,
    name: &str,
    payload: Value,
) -> Result<WorkflowRun, EngineError> {
    if let Err(reason) = check_identifier(name) {
        return Err(EngineError::InvalidInput(format!(
            "invalid signal name {name:?}: {reason}"
        )));
    }
    let size = serde_json::to_vec(&payload).map_or(usize::MAX, |v| v.len());
    if size > MAX_SIGNAL_PAYLOAD_BYTES {
        return Err(EngineError::InvalidInput(format!(
            "a signal's payload of {size} bytes is over the limit of {MAX_SIGNAL_PAYLOAD_BYTES}"
        )));
    }
    let signal = Signal::new(name, payload, shared.now());
    let run = match shared.store.signal_run(id, &signal).await {
        Ok(run) => run,
        Err(error @ StoreError::Conflict { .. }) => {
            // Finished: say how (a conflict has no other cause).
            let stored = shared.store.get_run(id).await?;
            if stored.status.is_terminal() {
                return Err(EngineError::RunFinished {
                    run: id,
                    status: stored.status,
                });
            }
            return Err(error.into());
        }
        Err(error) => return Err(error.into()),
    };
    tracing::info!(run_id = %id, signal = name, "signal received");
    if run.status == RunStatus::Waiting {
        shared.wake.notify_one();
    }
    Ok(run)
}
