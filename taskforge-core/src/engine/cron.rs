//! The cron loop: firing due slots of cron triggers as events and runs.
//!
//! Each slot a cron trigger fires is stored as an [`Event`] whose dedup key
//! is `(trigger, scheduled time)`, together with its run, in one atomic
//! write: two engines on one store that both see a slot due fire it once.
//! The last slot fired is read back from the trigger's newest event, so a
//! restarted engine knows what it missed and applies the trigger's
//! [`MissedRunPolicy`](crate::cron::MissedRunPolicy).

use std::sync::Arc;

use chrono::{DateTime, Utc};

use super::admit::{self, Admission, Admitted};
use super::cancel;
use super::shared::Shared;
use crate::error::EngineError;
use crate::event::{Event, EventOutcome, EventSource};
use crate::id::{EventId, TriggerId};
use crate::step::StepExecutor;
use crate::store::{EventQuery, Order, Store};
use crate::trigger::cron::{run_input, tick_dedup_key, CronConfig, OverlapAction};
use crate::trigger::{InvalidTrigger, Trigger, TriggerKind};

/// The metadata key under which a cron event records its slot.
pub const SCHEDULED_AT: &str = "scheduled_at";

/// One slot a cron trigger fired, or decided not to.
#[derive(Debug, Clone, PartialEq)]
pub struct CronFiring {
    /// The trigger.
    pub trigger_id: TriggerId,
    /// The slot.
    pub scheduled_at: DateTime<Utc>,
    /// The stored event; `None` if another engine fired the slot first.
    pub event_id: Option<EventId>,
    /// What came of it.
    pub outcome: EventOutcome,
}

/// Fires every slot of every enabled cron trigger that is due at the
/// engine clock's `now`, as each trigger's missed-run and overlap policies
/// say.
pub(crate) async fn fire_due<S: Store, X: StepExecutor>(
    shared: &Arc<Shared<S, X>>,
) -> Result<Vec<CronFiring>, EngineError> {
    let mut firings = Vec::new();
    for trigger in shared.store.list_triggers(None).await? {
        let TriggerKind::Cron(config) = &trigger.kind else {
            continue;
        };
        if !trigger.enabled {
            continue;
        }
        match fire_trigger(shared, &trigger, config, &mut firings).await {
            Ok(()) => {}
            // One broken trigger must not stop the others.
            Err(error) => {
                tracing::warn!(trigger_id = %trigger.id, %error, "cron trigger failed to fire");
            }
        }
    }
    Ok(firings)
}

async fn fire_trigger<S: Store, X: StepExecutor>(
    shared: &Arc<Shared<S, X>>,
    trigger: &Trigger,
    config: &CronConfig,
    firings: &mut Vec<CronFiring>,
) -> Result<(), EngineError> {
    let schedule = config.schedule().map_err(InvalidTrigger::Cron)?;
    let now = shared.now();
    let newest = newest_event(shared, trigger.id).await?;
    let last_fired = newest
        .as_ref()
        .and_then(|e| e.metadata.get(SCHEDULED_AT))
        .and_then(|at| DateTime::parse_from_rfc3339(at).ok())
        .map(|at| at.with_timezone(&Utc))
        // A new trigger fires from its creation on, never for its past.
        .unwrap_or(trigger.created_at);
    let mut previous = newest.and_then(|e| e.outcome.run_id());
    for slot in schedule.due_slots(Some(last_fired), now, config.missed) {
        let running = match previous {
            Some(run_id) => !shared.store.get_run(run_id).await?.status.is_terminal(),
            None => false,
        };
        let outcome = match config.overlap.decide(running) {
            OverlapAction::Start => None,
            // Leave the slot due: it fires once the previous run is done.
            OverlapAction::Queue => return Ok(()),
            OverlapAction::Skip => Some(EventOutcome::Skipped {
                reason: format!(
                    "run {} of the previous slot is still going",
                    previous.map(|r| r.to_string()).unwrap_or_default()
                ),
            }),
            OverlapAction::CancelPreviousAndStart => {
                if let Some(run_id) = previous {
                    match cancel::cancel_run(shared, run_id).await {
                        Ok(_) | Err(EngineError::RunFinished { .. }) => {}
                        Err(e) => return Err(e),
                    }
                }
                None
            }
        };
        let firing = fire_slot(shared, trigger, slot, outcome).await?;
        if let Some(run_id) = firing.outcome.run_id() {
            previous = Some(run_id);
        }
        firings.push(firing);
    }
    Ok(())
}

async fn fire_slot<S: Store, X: StepExecutor>(
    shared: &Arc<Shared<S, X>>,
    trigger: &Trigger,
    slot: DateTime<Utc>,
    outcome: Option<EventOutcome>,
) -> Result<CronFiring, EngineError> {
    let now = shared.now();
    let workflow = shared.store.get_workflow(trigger.workflow_id).await?;
    // The run's input, documented on `CronConfig`: the trigger's static
    // input with `trigger_id` and `scheduled_at` beside it.
    let static_input = match &trigger.kind {
        TriggerKind::Cron(config) => Some(&config.input),
        _ => None,
    };
    let payload = run_input(static_input, trigger.id, slot);
    let mut event = Event {
        id: EventId::new(),
        workflow_id: workflow.id,
        trigger_id: Some(trigger.id),
        source: EventSource::Cron,
        received_at: now,
        dedup_key: Some(tick_dedup_key(trigger.id, slot)),
        payload: Arc::new(payload),
        metadata: [(SCHEDULED_AT.to_owned(), slot.to_rfc3339())].into(),
        outcome: EventOutcome::WorkflowInactive,
    };
    let run = match outcome {
        Some(outcome) => {
            event.outcome = outcome;
            None
        }
        None if !workflow.active => None,
        None => {
            let limit = match &trigger.kind {
                TriggerKind::Cron(config) => config.concurrency.as_ref(),
                _ => None,
            };
            Some(admit::run_for_event(shared, &workflow, &mut event, limit).await?)
        }
    };
    let event_id = event.id;
    let admission = Admission {
        event,
        run,
        dedup_window: None,
    };
    let (event_id, outcome) = match admit::admit(shared, admission).await? {
        // Another engine fired this slot first.
        Admitted::Duplicate(original) => (None, original.outcome),
        Admitted::Stored { event, .. } => (Some(event_id), event.outcome),
    };
    Ok(CronFiring {
        trigger_id: trigger.id,
        scheduled_at: slot,
        event_id,
        outcome,
    })
}

async fn newest_event<S: Store, X>(
    shared: &Shared<S, X>,
    trigger_id: TriggerId,
) -> Result<Option<Event>, EngineError> {
    let page = shared
        .store
        .list_events(&EventQuery {
            trigger_id: Some(trigger_id),
            order: Order::NewestFirst,
            limit: 1,
            ..EventQuery::default()
        })
        .await?;
    Ok(page.items.into_iter().next())
}

/// Fires due cron slots on every poll until the engine stops.
pub(crate) async fn cron_loop<S: Store, X: StepExecutor>(shared: Arc<Shared<S, X>>) {
    loop {
        tokio::select! {
            biased;
            () = shared.kill.cancelled() => return,
            () = shared.stop_claiming.cancelled() => return,
            () = tokio::time::sleep(shared.config.poll_interval) => {}
        }
        if let Err(error) = fire_due(&shared).await {
            tracing::warn!(%error, "firing cron triggers failed");
        }
    }
}
