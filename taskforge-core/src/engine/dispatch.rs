//! The dispatcher: claims runs and hands each to a worker task of its own.

use std::sync::Arc;

use tokio::sync::OwnedSemaphorePermit;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::shared::Shared;
use super::telemetry;
use super::worker::{self, Halt};
use crate::error::StoreError;
use crate::id::RunId;
use crate::step::StepExecutor;
use crate::store::{Store, WorkSignal};

/// Claims runs while the engine runs: those it is woken for, and on every
/// poll those nobody announced (other engines' runs, lapsed leases).
pub(crate) async fn dispatch<S: Store, X: StepExecutor>(shared: Arc<Shared<S, X>>) {
    // Taken before the first look for work, so nothing queued by another
    // process in between is missed.
    let mut signal = shared.store.work_signal();
    loop {
        if let Err(error) = fill(&shared).await {
            tracing::warn!(%error, "looking for claimable runs failed");
        }
        let due = shared.next_wake();
        tokio::select! {
            biased;
            () = shared.kill.cancelled() => return,
            () = shared.stop_claiming.cancelled() => return,
            () = shared.wake.notified() => {}
            () = signalled(signal.as_mut()) => {}
            () = until(due) => {}
            () = tokio::time::sleep(shared.config.poll_interval) => {}
        }
    }
}

/// Waits until `at`, or forever without it.
async fn until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Waits for the store's work signal, or forever without one.
async fn signalled(signal: Option<&mut WorkSignal>) {
    match signal {
        Some(signal) => signal.notified().await,
        None => std::future::pending().await,
    }
}

/// Claims claimable runs until the engine is at its concurrency limit or
/// none are left.
async fn fill<S: Store, X: StepExecutor>(shared: &Arc<Shared<S, X>>) -> Result<(), StoreError> {
    loop {
        let available = shared.permits.available_permits();
        let active = shared.config.max_concurrent_runs.saturating_sub(available);
        metrics::gauge!(telemetry::RUNS_ACTIVE).set(active as f64);
        if available == 0 || shared.stop_claiming.is_cancelled() {
            return Ok(());
        }
        let ids = shared.store.list_claimable(shared.now(), available).await?;
        metrics::gauge!(telemetry::QUEUE_DEPTH).set(ids.len() as f64);
        let mut spawned = 0;
        for &id in &ids {
            match try_spawn(shared, id) {
                Spawn::Spawned => spawned += 1,
                Spawn::AlreadyLocal => {}
                Spawn::NoCapacity => return Ok(()),
            }
        }
        if ids.len() < available || spawned == 0 {
            return Ok(());
        }
    }
}

/// What came of [`try_spawn`].
pub(crate) enum Spawn {
    Spawned,
    AlreadyLocal,
    NoCapacity,
}

/// Spawns a worker task for run `id` if this engine has a free slot and is
/// not executing it already.
pub(crate) fn try_spawn<S: Store, X: StepExecutor>(shared: &Arc<Shared<S, X>>, id: RunId) -> Spawn {
    let Ok(permit) = Arc::clone(&shared.permits).try_acquire_owned() else {
        return Spawn::NoCapacity;
    };
    let token = CancellationToken::new();
    {
        let mut local = shared.local.lock();
        if local.contains_key(&id) {
            return Spawn::AlreadyLocal;
        }
        local.insert(id, token.clone());
    }
    let span = tracing::info_span!(
        "run",
        run_id = %id,
        workflow = tracing::field::Empty,
        version = tracing::field::Empty,
        trace_parent = tracing::field::Empty,
    );
    shared
        .tracker
        .spawn(run_task(Arc::clone(shared), id, token, permit).instrument(span));
    Spawn::Spawned
}

async fn run_task<S: Store, X: StepExecutor>(
    shared: Arc<Shared<S, X>>,
    id: RunId,
    cancel: CancellationToken,
    permit: OwnedSemaphorePermit,
) {
    // Whatever ends the task (a finish, a halt, a kill, a panic that got
    // past the handler guard), the run leaves this engine's books and its
    // slot is freed, so the run is claimable again once its lease lapses.
    let _slot = Slot {
        shared: &shared,
        id,
        permit: Some(permit),
    };
    tokio::select! {
        biased;
        // Dropping the worker mid-await is exactly what a crash does: the
        // store keeps the last committed state, and the lease lapses.
        () = shared.kill.cancelled() => {}
        result = worker::execute(&shared, id, cancel) => match result {
            Ok(()) | Err(Halt::LeaseLost) => {}
            Err(Halt::Store(error)) => {
                tracing::error!(%error, "store failed; the run is left to recovery");
            }
            Err(Halt::Illegal(error)) => {
                tracing::error!(%error, "the state machine refused the worker; the run is left to recovery");
            }
        },
    }
}

/// A run's place on this engine: released when the worker task ends.
struct Slot<'a, S, X> {
    shared: &'a Shared<S, X>,
    id: RunId,
    permit: Option<OwnedSemaphorePermit>,
}

impl<S, X> Drop for Slot<'_, S, X> {
    fn drop(&mut self) {
        self.shared.local.lock().remove(&self.id);
        // Free the slot before waking the dispatcher, so it sees it free.
        drop(self.permit.take());
        self.shared.wake.notify_one();
    }
}
