//! Triggers and events on the engine: creating triggers, taking webhook
//! deliveries, querying events, and replaying them.
//!
//! Every delivery that passes verification is stored as an [`Event`]
//! together with the run it starts, in one atomic write, so a delivery
//! starts its run exactly once: a repeat (same dedup key) is answered with
//! the original event and run, and stores nothing.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::TimeDelta;
use parking_lot::Mutex;

use crate::engine::Engine;
use crate::error::{EngineError, StoreError};
use crate::event::{Event, EventOutcome, EventSource};
use crate::id::{EventId, RunId, TriggerId, WorkflowId};
use crate::run::WorkflowRun;
use crate::step::StepExecutor;
use crate::store::{EventInsert, EventQuery, Page, RunQuery, Store};
use crate::trigger::{Trigger, TriggerKind};
use crate::webhook::{Rejection, WebhookRequest};
use crate::workflow::Workflow;

/// What came of a webhook delivery, and what the HTTP layer should answer
/// ([`Delivery::http_status`]).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Delivery {
    /// Stored as an event that started a run. HTTP 202.
    Accepted {
        /// The stored event.
        event_id: EventId,
        /// The run it started.
        run_id: RunId,
    },
    /// Stored as an event, but no run was started because the workflow is
    /// inactive or the trigger disabled (the event's outcome says which).
    /// HTTP 202: the delivery was taken; retrying would not change it.
    Recorded {
        /// The stored event.
        event_id: EventId,
        /// Why no run started.
        outcome: EventOutcome,
    },
    /// A repeat of a stored delivery: nothing was stored. HTTP 200, so the
    /// sender stops retrying.
    Duplicate {
        /// The original event.
        event_id: EventId,
        /// The run the original started, if any.
        run_id: Option<RunId>,
    },
    /// Stored as an event, but its payload missed the trigger's filters.
    /// HTTP 204.
    Filtered {
        /// The stored event.
        event_id: EventId,
        /// Which filter missed.
        reason: String,
    },
    /// Refused before anything was stored (too large, unauthenticated,
    /// malformed, ...). HTTP status from [`Rejection::http_status`].
    Rejected(Rejection),
    /// No enabled or disabled webhook trigger has this path. HTTP 404.
    UnknownPath,
}

impl Delivery {
    /// The HTTP status an HTTP layer should answer with.
    #[must_use]
    pub fn http_status(&self) -> u16 {
        match self {
            Self::Accepted { .. } | Self::Recorded { .. } => 202,
            Self::Duplicate { .. } => 200,
            Self::Filtered { .. } => 204,
            Self::Rejected(rejection) => rejection.http_status(),
            Self::UnknownPath => 404,
        }
    }
}

/// Webhook paths to trigger ids, and rejection counts. Rejected deliveries
/// keep no body; they are only counted.
#[derive(Debug, Default)]
pub(crate) struct WebhookIndex {
    paths: Mutex<Option<(HashMap<String, TriggerId>, Instant)>>,
    rejections: Mutex<HashMap<TriggerId, u64>>,
}

impl<S: Store, X: StepExecutor> Engine<S, X> {
    /// Creates an enabled trigger for a workflow, after checking its
    /// configuration (a cron expression that parses, a webhook path that is
    /// free, ...).
    pub async fn create_trigger(
        &self,
        workflow_id: WorkflowId,
        kind: TriggerKind,
    ) -> Result<Trigger, EngineError> {
        kind.validate()?;
        if let TriggerKind::Webhook(config) = &kind {
            if self.webhook_trigger(&config.path, true).await?.is_some() {
                return Err(StoreError::already_exists("webhook path", &config.path).into());
            }
        }
        let trigger = Trigger::new(workflow_id, kind, self.inner().now());
        self.store().insert_trigger(&trigger).await?;
        self.inner().webhooks.paths.lock().take();
        Ok(trigger)
    }

    /// Enables or disables a trigger. A disabled trigger still records what
    /// it receives, with the outcome [`EventOutcome::TriggerDisabled`].
    pub async fn set_trigger_enabled(
        &self,
        id: TriggerId,
        enabled: bool,
    ) -> Result<Trigger, EngineError> {
        let mut trigger = self.store().get_trigger(id).await?;
        trigger.enabled = enabled;
        trigger.updated_at = self.inner().now();
        self.store().update_trigger(&trigger).await?;
        Ok(trigger)
    }

    /// The triggers of a workflow.
    pub async fn triggers(&self, workflow_id: WorkflowId) -> Result<Vec<Trigger>, EngineError> {
        Ok(self.store().list_triggers(Some(workflow_id)).await?)
    }

    /// Takes a webhook delivery for the trigger at `path`: verifies it
    /// (size, token, signature, JSON), stores it as an event, and starts a
    /// run unless it is a duplicate, filtered out, or its workflow or
    /// trigger is off. Bad input is a [`Delivery::Rejected`], never an
    /// error; errors are the store's.
    pub async fn deliver_webhook(
        &self,
        path: &str,
        request: &WebhookRequest,
    ) -> Result<Delivery, EngineError> {
        let Some(trigger) = self.webhook_trigger(path, false).await? else {
            return Ok(Delivery::UnknownPath);
        };
        let TriggerKind::Webhook(config) = &trigger.kind else {
            return Ok(Delivery::UnknownPath);
        };
        let now = self.inner().now();
        let delivery = match config.verify(request, now) {
            Ok(delivery) => delivery,
            Err(rejection) => {
                *self
                    .inner()
                    .webhooks
                    .rejections
                    .lock()
                    .entry(trigger.id)
                    .or_default() += 1;
                tracing::info!(trigger_id = %trigger.id, %rejection, "webhook delivery rejected");
                return Ok(Delivery::Rejected(rejection));
            }
        };
        let workflow = self.store().get_workflow(trigger.workflow_id).await?;
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
            metadata: delivery.metadata,
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
            (None, true, true) => Some(self.run_for_event(&workflow, &mut event).await?),
        };
        let window = config
            .dedup_window
            .and_then(|w| TimeDelta::from_std(w).ok());
        if let Some(original) = self.record(&mut event, run.as_ref(), window).await? {
            return Ok(Delivery::Duplicate {
                event_id: original.id,
                run_id: original.outcome.run_id(),
            });
        }
        Ok(match (run, event.outcome) {
            (Some(run), _) => {
                self.enqueued(&run);
                Delivery::Accepted {
                    event_id: event.id,
                    run_id: run.id,
                }
            }
            (None, EventOutcome::Filtered { reason }) => Delivery::Filtered {
                event_id: event.id,
                reason,
            },
            (None, outcome) => Delivery::Recorded {
                event_id: event.id,
                outcome,
            },
        })
    }

    /// Stores `event` with `run`, unless it repeats a stored event within
    /// the dedup window: then returns the original. A repeat older than the
    /// window is stored under the key's next generation (`key#2`, ...), so
    /// repeats of *it* are duplicates again.
    pub(crate) async fn record(
        &self,
        event: &mut Event,
        run: Option<&WorkflowRun>,
        window: Option<TimeDelta>,
    ) -> Result<Option<Event>, EngineError> {
        let base = event.dedup_key.clone();
        for generation in 1u32.. {
            if generation > 1 {
                event.dedup_key = base.as_ref().map(|key| format!("{key}#{generation}"));
            }
            match self.store().insert_event(event, run).await? {
                EventInsert::Inserted => return Ok(None),
                EventInsert::Duplicate(original) => {
                    let expired =
                        window.is_some_and(|w| event.received_at - original.received_at >= w);
                    if !expired {
                        return Ok(Some(*original));
                    }
                }
            }
        }
        Ok(None)
    }

    /// A queued run of the workflow's latest version, caused by `event`,
    /// whose outcome becomes "started this run".
    pub(crate) async fn run_for_event(
        &self,
        workflow: &Workflow,
        event: &mut Event,
    ) -> Result<WorkflowRun, EngineError> {
        let version = self.latest_version_of(workflow).await?;
        let mut run = WorkflowRun::new(&version, event.payload.clone(), event.received_at);
        run.event_id = Some(event.id);
        event.outcome = EventOutcome::RunStarted { run_id: run.id };
        Ok(run)
    }

    /// How many deliveries to a trigger were rejected since this engine
    /// started. Rejected deliveries are counted, never stored.
    #[must_use]
    pub fn rejected_deliveries(&self, trigger_id: TriggerId) -> u64 {
        self.inner()
            .webhooks
            .rejections
            .lock()
            .get(&trigger_id)
            .copied()
            .unwrap_or(0)
    }

    /// The webhook trigger at `path`, read fresh from the store (so a
    /// trigger disabled by another engine is seen as disabled).
    async fn webhook_trigger(
        &self,
        path: &str,
        refresh: bool,
    ) -> Result<Option<Trigger>, EngineError> {
        let cached = {
            let paths = self.inner().webhooks.paths.lock();
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
                let triggers = self.store().list_triggers(None).await?;
                let paths: HashMap<String, TriggerId> = triggers
                    .into_iter()
                    .filter_map(|t| match t.kind {
                        TriggerKind::Webhook(config) => Some((config.path, t.id)),
                        _ => None,
                    })
                    .collect();
                let found = paths.get(path).copied();
                *self.inner().webhooks.paths.lock() = Some((paths, Instant::now()));
                found
            }
        };
        match id {
            Some(id) => Ok(Some(self.store().get_trigger(id).await?)),
            None => Ok(None),
        }
    }

    /// The event with this id.
    pub async fn event(&self, id: EventId) -> Result<Event, EngineError> {
        Ok(self.store().get_event(id).await?)
    }

    /// A page of events: by workflow, trigger, outcome and time.
    pub async fn list_events(
        &self,
        query: &EventQuery,
    ) -> Result<Page<Event, EventId>, EngineError> {
        Ok(self.store().list_events(query).await?)
    }

    /// The event that caused a run, if any.
    pub async fn event_of_run(&self, run_id: RunId) -> Result<Option<Event>, EngineError> {
        let run = self.store().get_run(run_id).await?;
        match run.event_id {
            Some(id) => Ok(Some(self.store().get_event(id).await?)),
            None => Ok(None),
        }
    }

    /// Every run an event caused: the one it started, and its replays.
    pub async fn runs_of_event(&self, event_id: EventId) -> Result<Vec<WorkflowRun>, EngineError> {
        use crate::store::RunStoreExt;
        Ok(self
            .store()
            .list_all_runs(&RunQuery {
                event_id: Some(event_id),
                ..RunQuery::default()
            })
            .await?)
    }

    /// Starts a new run from a stored event's payload, on the workflow's
    /// latest version, linked to the same event and marked as a replay of
    /// the run the event first started (if any).
    pub async fn replay_event(&self, event_id: EventId) -> Result<WorkflowRun, EngineError> {
        let event = self.store().get_event(event_id).await?;
        let workflow = self.store().get_workflow(event.workflow_id).await?;
        if !workflow.active {
            return Err(EngineError::WorkflowInactive(workflow.name));
        }
        let version = self.latest_version_of(&workflow).await?;
        let mut run = WorkflowRun::new(&version, event.payload, self.inner().now());
        run.event_id = Some(event.id);
        run.replay_of = event.outcome.run_id();
        self.store().insert_run(&run).await?;
        self.enqueued(&run);
        Ok(run)
    }
}

/// How long the path cache may answer "no such path" before the triggers
/// are read again: long enough that a flood of deliveries to unknown paths
/// costs one listing a second, short enough that a trigger created by
/// another engine is found promptly.
const PATH_MISS_TTL: Duration = Duration::from_secs(1);
