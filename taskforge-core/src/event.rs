//! Events: persisted records of something that happened outside (a webhook
//! delivery, a cron tick, a manual request), kept for debugging, reliability
//! and deduplication.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::id::{EventId, RunId, TriggerId, WorkflowId};

/// Where an event came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum EventSource {
    /// A request made through the engine's API.
    Manual,
    /// An HTTP delivery to a webhook trigger.
    Webhook,
    /// A tick of a cron trigger.
    Cron,
}

/// A persisted record of something that happened outside.
///
/// An event is written once, together with the run it starts (if any), and
/// never rewritten.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Its id.
    pub id: EventId,
    /// The workflow it was addressed to.
    pub workflow_id: WorkflowId,
    /// The trigger that received it; `None` for a manual request made
    /// without a trigger.
    pub trigger_id: Option<TriggerId>,
    /// Where it came from.
    pub source: EventSource,
    /// When it was received.
    #[serde(serialize_with = "crate::time_format::serialize")]
    pub received_at: DateTime<Utc>,
    /// Unique per workflow among stored events: a second event with the same
    /// key is a duplicate and is not stored.
    pub dedup_key: Option<String>,
    /// The payload, normalized to JSON; shared, not copied, with the run
    /// it starts.
    pub payload: Arc<Value>,
    /// The request metadata worth keeping (selected headers, the scheduled
    /// time of a cron tick, ...).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
    /// What came of it.
    pub outcome: EventOutcome,
}

/// What came of an event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum EventOutcome {
    /// It started this run.
    RunStarted {
        /// The run.
        run_id: RunId,
    },
    /// Its payload did not match the trigger's filters.
    Filtered {
        /// Which filter did not match.
        reason: String,
    },
    /// The workflow was inactive.
    WorkflowInactive,
    /// The trigger was disabled.
    TriggerDisabled,
    /// It was deliberately not acted on (for example a cron tick skipped
    /// because the previous run was still going).
    Skipped {
        /// Why.
        reason: String,
    },
    /// The delivery was refused (unauthenticated, malformed, too large,
    /// ...): recorded for the audit trail, without its body.
    Rejected {
        /// Why, as the sender was told.
        reason: String,
        /// The HTTP status the sender got.
        status: u16,
    },
    /// The workflow's concurrency limit for the run's key was reached, and
    /// its [policy](crate::LimitPolicy) said so: no run was started
    /// (`skip`), or the run was recorded cancelled (`cancel_newest`).
    Limited {
        /// The concurrency key that was full.
        key: String,
        /// The run recorded cancelled, with `cancel_newest`; `None` with `skip`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        run_id: Option<RunId>,
    },
}

impl EventOutcome {
    /// The run it started, if any (for [`Limited`](Self::Limited), the run
    /// recorded cancelled, if any).
    #[must_use]
    pub fn run_id(&self) -> Option<RunId> {
        match self {
            Self::RunStarted { run_id } => Some(*run_id),
            Self::Limited { run_id, .. } => *run_id,
            _ => None,
        }
    }

    /// A short name of the outcome's kind, as used in queries.
    #[must_use]
    pub fn kind(&self) -> OutcomeKind {
        match self {
            Self::RunStarted { .. } => OutcomeKind::RunStarted,
            Self::Filtered { .. } => OutcomeKind::Filtered,
            Self::WorkflowInactive => OutcomeKind::WorkflowInactive,
            Self::TriggerDisabled => OutcomeKind::TriggerDisabled,
            Self::Skipped { .. } => OutcomeKind::Skipped,
            Self::Rejected { .. } => OutcomeKind::Rejected,
            Self::Limited { .. } => OutcomeKind::Limited,
        }
    }
}

/// The kind of an [`EventOutcome`], for filtering event listings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum OutcomeKind {
    /// [`EventOutcome::RunStarted`].
    RunStarted,
    /// [`EventOutcome::Filtered`].
    Filtered,
    /// [`EventOutcome::WorkflowInactive`].
    WorkflowInactive,
    /// [`EventOutcome::TriggerDisabled`].
    TriggerDisabled,
    /// [`EventOutcome::Skipped`].
    Skipped,
    /// [`EventOutcome::Rejected`].
    Rejected,
    /// [`EventOutcome::Limited`].
    Limited,
}
