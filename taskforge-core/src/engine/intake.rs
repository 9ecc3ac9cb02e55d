//! Webhook intake: verifying a delivery, turning it into an event (and
//! the run it starts) and admitting it.
//!
//! Every delivery that passes verification is stored as an [`Event`]
//! together with the run it starts, in one atomic write, so a delivery
//! starts its run exactly once: a repeat (same dedup key) is answered with
//! the original event and run, and stores nothing.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::TimeDelta;

use super::admit::{self, Admission, Admitted};
use super::credentials;
pub(crate) use super::delivery::Delivery;
use super::shared::Shared;
use super::telemetry;
use crate::error::{EngineError, StoreError};
use crate::event::{Event, EventOutcome, EventSource};
use crate::id::{EventId, TriggerId, WorkflowId};
use crate::step::StepExecutor;
use crate::store::Store;
use crate::trigger::request::{Rejection, WebhookRequest};
use crate::trigger::{validate_trigger_name, Trigger, TriggerKind};

/// Stores a new trigger after checking its name and configuration (a cron
/// expression that parses, a webhook path that is free, ...). The store
/// enforces unique names and paths.
pub(crate) async fn create_trigger<S: Store, X>(
    shared: &Shared<S, X>,
    trigger: Trigger,
) -> Result<Trigger, EngineError> {
    validate_trigger_name(&trigger.name)?;
    trigger.kind.validate()?;
    let mut trigger = trigger;
    credentials::seal(shared, &mut trigger).await?;
    if let Err(error) = shared.store.insert_trigger(&trigger).await {
        // The secrets sealed for it belong to nothing.
        let _ = credentials::forget(shared, &trigger).await;
        return Err(error.into());
    }
    forget_paths(shared);
    Ok(trigger)
}

/// Creates the trigger of `workflow_id` named `name` (enabled), or brings
/// the stored one to `kind` if it differs, keeping its enabled flag: what a
/// host calls at every start-up to declare its triggers.
pub(crate) async fn ensure_trigger<S: Store, X>(
    shared: &Shared<S, X>,
    workflow_id: WorkflowId,
    name: &str,
    kind: TriggerKind,
) -> Result<Trigger, EngineError> {
    validate_trigger_name(name)?;
    kind.validate()?;
    for _ in 0..3 {
        let stored = shared
            .store
            .list_triggers(Some(workflow_id))
            .await?
            .into_iter()
            .find(|t| t.name == name);
        let result = match stored {
            // The enabled flag stays as it is: a trigger an operator
            // disabled stays disabled across restarts of the host. Its
            // credentials are compared opened: the stored ones are sealed.
            Some(stored) if credentials::open(shared, stored.clone()).await?.kind == kind => {
                return Ok(stored)
            }
            Some(mut stored) => {
                stored.kind = kind.clone();
                stored.updated_at = shared.now();
                credentials::seal(shared, &mut stored).await?;
                shared.store.update_trigger(&stored).await.map(|()| stored)
            }
            None => {
                let mut trigger =
                    Trigger::new(workflow_id, kind.clone(), shared.now()).with_name(name);
                credentials::seal(shared, &mut trigger).await?;
                shared
                    .store
                    .insert_trigger(&trigger)
                    .await
                    .map(|()| trigger)
            }
        };
        match result {
            Ok(trigger) => {
                forget_paths(shared);
                return Ok(trigger);
            }
            // Another host declared it at the same moment: read it again.
            Err(StoreError::AlreadyExists {
                kind: "trigger name",
                ..
            }) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(StoreError::conflict("trigger", name, "kept changing while it was declared").into())
}

/// Changes a trigger's configuration (name, kind, enabled).
pub(crate) async fn update_trigger<S: Store, X>(
    shared: &Shared<S, X>,
    mut trigger: Trigger,
) -> Result<Trigger, EngineError> {
    validate_trigger_name(&trigger.name)?;
    trigger.kind.validate()?;
    trigger.updated_at = shared.now();
    credentials::seal(shared, &mut trigger).await?;
    shared.store.update_trigger(&trigger).await?;
    forget_paths(shared);
    Ok(trigger)
}

/// Removes a trigger; the events it received stay.
pub(crate) async fn delete_trigger<S: Store, X>(
    shared: &Shared<S, X>,
    id: TriggerId,
) -> Result<(), EngineError> {
    let trigger = shared.store.get_trigger(id).await?;
    shared.store.delete_trigger(id).await?;
    forget_paths(shared);
    credentials::forget(shared, &trigger).await
}

/// Drops the cached path listing: the next delivery reads it again.
fn forget_paths<S, X>(shared: &Shared<S, X>) {
    shared.webhooks.paths.lock().take();
}

/// Takes a webhook delivery for the trigger at `path`: verifies it (size,
/// token, signature, JSON), stores it as an event, and starts a run unless
/// it is a duplicate, filtered out, or its workflow or trigger is off.
pub(crate) async fn deliver<S: Store, X: StepExecutor>(
    shared: &Arc<Shared<S, X>>,
    path: &str,
    request: &WebhookRequest,
) -> Result<Delivery, EngineError> {
    let Some(trigger) = webhook_trigger(shared, path, false).await? else {
        return Ok(Delivery::UnknownPath);
    };
    let trigger = credentials::open(shared, trigger).await?;
    let TriggerKind::Webhook(config) = &trigger.kind else {
        return Ok(Delivery::UnknownPath);
    };
    let now = shared.now();
    let delivery = match config.verify(request, now) {
        Ok(delivery) => delivery,
        Err(rejection) => {
            *shared
                .webhooks
                .rejections
                .lock()
                .entry(trigger.id)
                .or_default() += 1;
            tracing::info!(trigger_id = %trigger.id, %rejection, "webhook delivery rejected");
            record_rejection(shared, &trigger, request, &rejection).await?;
            return Ok(Delivery::Rejected(rejection));
        }
    };
    let workflow = shared.store.get_workflow(trigger.workflow_id).await?;
    let filtered = config.matches(&delivery.payload).err();
    let mut event = Event {
        id: EventId::new(),
        workflow_id: trigger.workflow_id,
        trigger_id: Some(trigger.id),
        source: EventSource::Webhook,
        received_at: now,
        // Scoped by trigger: two hooks of one workflow may see equal bodies.
        dedup_key: Some(format!("webhook:{}:{}", trigger.id, delivery.dedup_key)),
        payload: Arc::new(delivery.payload),
        metadata: telemetry::with_request_trace(delivery.metadata, &request.headers),
        outcome: EventOutcome::WorkflowInactive,
    };
    let run = match (&filtered, trigger.enabled, workflow.active) {
        (Some(miss), _, _) => {
            event.outcome = EventOutcome::Filtered {
                reason: miss.to_string(),
            };
            None
        }
        (None, false, _) => {
            event.outcome = EventOutcome::TriggerDisabled;
            None
        }
        (None, true, false) => None,
        (None, true, true) => Some(
            admit::run_for_event(shared, &workflow, &mut event, config.concurrency.as_ref())
                .await?,
        ),
    };
    let event_id = event.id;
    let admission = Admission {
        event,
        run,
        dedup_window: config
            .dedup_window
            .and_then(|w| TimeDelta::from_std(w).ok()),
    };
    Ok(match admit::admit(shared, admission).await? {
        Admitted::Duplicate(original) => Delivery::Duplicate {
            event_id: original.id,
            run_id: original.outcome.run_id(),
        },
        Admitted::Stored { event, .. } if matches!(event.outcome, EventOutcome::Limited { .. }) => {
            Delivery::Recorded {
                event_id,
                outcome: event.outcome,
            }
        }
        Admitted::Stored { run: Some(run), .. } => Delivery::Accepted {
            event_id,
            run_id: run.id,
        },
        Admitted::Stored { run: None, event } => match event.outcome {
            EventOutcome::Filtered { reason } => Delivery::Filtered { event_id, reason },
            outcome => Delivery::Recorded { event_id, outcome },
        },
    })
}

/// The longest rejection reason kept on its event, in bytes.
const MAX_REASON_LEN: usize = 512;

/// Records a refused delivery as an event: its reason and status, the
/// body's size and content type, never the body or any other header (they
/// may carry credentials).
async fn record_rejection<S: Store, X: StepExecutor>(
    shared: &Arc<Shared<S, X>>,
    trigger: &Trigger,
    request: &WebhookRequest,
    rejection: &Rejection,
) -> Result<(), EngineError> {
    let mut reason = rejection.to_string();
    if reason.len() > MAX_REASON_LEN {
        let mut end = MAX_REASON_LEN;
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        reason.truncate(end);
        reason.push_str("...");
    }
    let content_type: String = request
        .headers
        .get("content-type")
        .unwrap_or_default()
        .chars()
        .take(100)
        .collect();
    let event = Event {
        id: EventId::new(),
        workflow_id: trigger.workflow_id,
        trigger_id: Some(trigger.id),
        source: EventSource::Webhook,
        received_at: shared.now(),
        dedup_key: None,
        payload: Arc::new(serde_json::json!({
            "body_bytes": request.body.len(),
            "content_type": content_type,
        })),
        metadata: telemetry::with_request_trace(Default::default(), &request.headers),
        outcome: EventOutcome::Rejected {
            reason,
            status: rejection.http_status(),
        },
    };
    let admission = Admission {
        event,
        run: None,
        dedup_window: None,
    };
    admit::admit(shared, admission).await?;
    Ok(())
}

/// How many deliveries to a trigger were rejected since this engine started.
pub(crate) fn rejected_deliveries<S, X>(shared: &Shared<S, X>, trigger_id: TriggerId) -> u64 {
    shared
        .webhooks
        .rejections
        .lock()
        .get(&trigger_id)
        .copied()
        .unwrap_or(0)
}

/// The webhook trigger at `path`, read fresh from the store (so a trigger
/// disabled by another engine is seen as disabled).
async fn webhook_trigger<S: Store, X>(
    shared: &Shared<S, X>,
    path: &str,
    refresh: bool,
) -> Result<Option<Trigger>, EngineError> {
    let cached = {
        let paths = shared.webhooks.paths.lock();
        paths
            .as_ref()
            .and_then(|(paths, read_at)| match paths.get(path) {
                Some(&id) => Some(Some(id)),
                None if read_at.elapsed() < PATH_MISS_TTL => Some(None),
                None => None,
            })
    };
    let id = match cached {
        Some(found) if !refresh => found,
        _ => {
            let triggers = shared.store.list_triggers(None).await?;
            let paths: HashMap<String, TriggerId> = triggers
                .into_iter()
                .filter_map(|t| match t.kind {
                    TriggerKind::Webhook(config) => Some((config.path, t.id)),
                    _ => None,
                })
                .collect();
            let found = paths.get(path).copied();
            *shared.webhooks.paths.lock() = Some((paths, Instant::now()));
            found
        }
    };
    match id {
        Some(id) => Ok(Some(shared.store.get_trigger(id).await?)),
        None => Ok(None),
    }
}

/// How long the path cache may answer "no such path" before the triggers
/// are read again: long enough that a flood of deliveries to unknown paths
/// costs one listing a second, short enough that a trigger created by
/// another engine is found promptly.
const PATH_MISS_TTL: Duration = Duration::from_secs(1);
