//! Admission: the one way into the engine. A manual start, a webhook
//! delivery, a cron tick and a replay all end here, so dedup windows,
//! outcomes and wake-ups are the same whichever way work came in.

use std::sync::Arc;

use chrono::TimeDelta;

use super::dispatch::{self, Spawn};
use super::limits;
use super::shared::Shared;
use super::telemetry;
use super::update::RunUpdate;
use crate::concurrency::ConcurrencyLimit;
use crate::error::{EngineError, StoreError};
use crate::event::{Event, EventOutcome};
use crate::run::WorkflowRun;
use crate::step::StepExecutor;
use crate::store::{EventInsert, Store};
use crate::workflow::{Workflow, WorkflowVersion};

/// What comes into the engine.
pub(crate) struct Admission {
    /// The event to record: every way in records one, so every run
    /// traces to an event.
    pub(crate) event: Event,
    /// The run it starts, if any; stored atomically with the event.
    pub(crate) run: Option<WorkflowRun>,
    /// How long a repeat of the event's dedup key counts as a duplicate;
    /// `None`: forever.
    pub(crate) dedup_window: Option<TimeDelta>,
}

/// What came of an [`Admission`]. Made once per admission and matched at
/// once, so the run is not boxed to even out the variants.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Admitted {
    /// Stored; the run (if any) is queued and the dispatcher woken.
    Stored {
        /// The queued run (or, with the limit policy `cancel_newest`, the
        /// run recorded cancelled).
        run: Option<WorkflowRun>,
        /// The event as stored: its outcome is
        /// [`Limited`](EventOutcome::Limited) when the run's limit policy
        /// dropped or cancelled the run.
        event: Event,
    },
    /// A repeat of a stored event within its dedup window: nothing was
    /// stored; this is the original.
    Duplicate(Event),
}

/// Stores an admission's event and run in one atomic write, unless the
/// event repeats a stored one within the dedup window; then announces the
/// run. A repeat older than the window is stored under the key's next
/// generation (`key#2`, ...), so repeats of *it* are duplicates again.
///
/// A run with [limits](crate::concurrency) is subject to its key's policy
/// first (it may be dropped, or recorded cancelled, with the event's
/// outcome saying so), and once stored may cancel older runs of its key
/// ([`limits::after_insert`]).
pub(crate) async fn admit<S: Store, X: StepExecutor>(
    shared: &Arc<Shared<S, X>>,
    admission: Admission,
) -> Result<Admitted, EngineError> {
    let Admission {
        event,
        run,
        dedup_window,
    } = admission;
    let mut event = event;
    let run = match run {
        Some(run) if run.limits.is_some() => limits::before_insert(shared, &mut event, run).await?,
        run => run,
    };
    if let Some(original) = record(shared, &mut event, run.as_ref(), dedup_window).await? {
        return Ok(Admitted::Duplicate(original));
    }
    if let Some(run) = &run {
        if run.limits.is_some() {
            limits::after_insert(shared, run).await;
        }
        enqueued(shared, run);
    }
    Ok(Admitted::Stored { run, event })
}

/// Stores `event` with `run`; the original if it is a duplicate.
///
/// The event is stored under [`generation_key`] of its dedup key, so the
/// key's later generations cannot collide with another key.
async fn record<S: Store, X>(
    shared: &Shared<S, X>,
    event: &mut Event,
    run: Option<&WorkflowRun>,
    window: Option<TimeDelta>,
) -> Result<Option<Event>, EngineError> {
    let base = event.dedup_key.clone();
    for generation in 1u32.. {
        event.dedup_key = base.as_deref().map(|key| generation_key(key, generation));
        let began = std::time::Instant::now();
        let inserted = shared.store.insert_event(event, run).await?;
        metrics::histogram!(telemetry::STORE_COMMIT_DURATION, "op" => "admit")
            .record(began.elapsed());
        match inserted {
            EventInsert::Inserted => return Ok(None),
            EventInsert::Duplicate(original) => {
                let expired = window.is_some_and(|w| {
                    event
                        .received_at
                        .signed_duration_since(original.received_at)
                        >= w
                });
                if !expired {
                    return Ok(Some(*original));
                }
            }
        }
    }
    Ok(None)
}

/// The stored form of dedup key `key` in its `generation`th window
/// (generations count from 1): every `#` of `key` doubled, then, from the
/// second generation on, a single `#` and the generation number.
///
/// The encoding is injective: in the escaped key every run of `#` has even
/// length, so a generation suffix (an odd run, then digits to the end) can
/// only have been added here, and `k` in generation 2 (`k#2`) differs from
/// the key `k#2` in generation 1 (`k##2`). Keys without `#` keep the form
/// they were stored under before the escaping (`k`, `k#2`, ...), so events
/// stored earlier still deduplicate.
fn generation_key(key: &str, generation: u32) -> String {
    let mut stored = key.replace('#', "##");
    if generation > 1 {
        stored.push('#');
        stored.push_str(&generation.to_string());
    }
    stored
}

/// Announces a freshly stored run: subscribers hear of it, and this engine
/// takes it at once when it has a free slot (no dispatcher round trip, no
/// store query to find it again), or wakes the dispatcher.
fn enqueued<S: Store, X: StepExecutor>(shared: &Arc<Shared<S, X>>, run: &WorkflowRun) {
    shared.emit(|| RunUpdate::RunQueued {
        run_id: run.id,
        workflow_id: run.workflow_id,
    });
    if run.status.is_terminal() {
        // Recorded cancelled by its limit policy: nothing to execute.
        shared.emit(|| RunUpdate::RunFinished {
            run_id: run.id,
            status: run.status,
        });
        return;
    }
    if !shared.is_claiming() {
        return;
    }
    // A run in its debounce window cannot be claimed yet: the dispatcher
    // finds it when the window ends. A rate-limited run is left to the
    // dispatcher too, which lists a workflow's waiting runs oldest first,
    // as many as the window allows, so they start in order (a claim of
    // this one could take the window's last start from an older run).
    if run.limits.as_deref().is_some_and(|l| l.rate.is_some())
        || crate::store::rules::not_yet(run, shared.now())
    {
        shared.wake.notify_one();
        return;
    }
    match dispatch::try_spawn(shared, run.id) {
        Spawn::NoCapacity => shared.wake.notify_one(),
        Spawn::Spawned | Spawn::AlreadyLocal => {}
    }
}

/// A queued run of the workflow's latest version, caused by `event`, whose
/// outcome becomes "started this run". Its limits are the version's, with
/// the concurrency limit of the trigger that received the event
/// (`trigger_limit`) in place of the version's, if it declares one.
pub(crate) async fn run_for_event<S: Store, X>(
    shared: &Shared<S, X>,
    workflow: &Workflow,
    event: &mut Event,
    trigger_limit: Option<&ConcurrencyLimit>,
) -> Result<WorkflowRun, EngineError> {
    let version = latest_version(shared, workflow).await?;
    let mut run = WorkflowRun::new(&version, Arc::clone(&event.payload), event.received_at);
    limits::attach(&mut run, &version, trigger_limit, event.received_at);
    run.event_id = Some(event.id);
    event.outcome = EventOutcome::RunStarted { run_id: run.id };
    Ok(run)
}

/// The workflow's latest version; `NoVersion` if it has none.
pub(crate) async fn latest_version<S: Store, X>(
    shared: &Shared<S, X>,
    workflow: &Workflow,
) -> Result<WorkflowVersion, EngineError> {
    shared
        .store
        .latest_version(workflow.id)
        .await?
        .ok_or_else(|| EngineError::NoVersion(workflow.name.clone()))
}

/// The run an admitted duplicate started, read back from the store.
pub(crate) async fn original_run<S: Store, X>(
    shared: &Shared<S, X>,
    original: &Event,
    key: &str,
) -> Result<WorkflowRun, EngineError> {
    if let EventOutcome::Limited { key, run_id: None } = &original.outcome {
        return Err(EngineError::Limited {
            key: key.clone(),
            event_id: original.id,
        });
    }
    let run_id = original.outcome.run_id().ok_or_else(|| {
        EngineError::InvalidInput(format!(
            "idempotency key {key:?} was used by an event that started no run"
        ))
    })?;
    shared
        .store
        .get_run(run_id)
        .await
        .map_err(|e: StoreError| e.into())
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::generation_key;

    #[test]
    fn generation_keys_do_not_collide() {
        assert_eq!(generation_key("k", 1), "k");
        assert_eq!(generation_key("k", 2), "k#2");
        assert_eq!(generation_key("k#2", 1), "k##2");
        let keys = ["k", "k#", "k#2", "k##2", "k#2#2", "#", "##", "#2", ""];
        let mut seen = HashSet::new();
        for key in keys {
            for generation in 1..=12 {
                let stored = generation_key(key, generation);
                assert!(
                    seen.insert(stored.clone()),
                    "{key:?} generation {generation} collides as {stored:?}"
                );
            }
        }
    }
}
