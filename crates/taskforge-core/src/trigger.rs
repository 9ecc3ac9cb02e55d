//! Triggers: the entrypoints that start runs.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::id::{TriggerId, WorkflowId};

/// An entrypoint that starts runs of one workflow.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Trigger {
    /// Its id.
    pub id: TriggerId,
    /// The workflow it starts.
    pub workflow_id: WorkflowId,
    /// What kind of trigger it is, with its configuration.
    pub kind: TriggerKind,
    /// Whether it starts runs. A disabled trigger still records what it receives.
    pub enabled: bool,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it was last changed.
    pub updated_at: DateTime<Utc>,
}

impl Trigger {
    /// A new, enabled trigger.
    #[must_use]
    pub fn new(workflow_id: WorkflowId, kind: TriggerKind, now: DateTime<Utc>) -> Self {
        Self {
            id: TriggerId::new(),
            workflow_id,
            kind,
            enabled: true,
            created_at: now,
            updated_at: now,
        }
    }
}

/// The kind of a trigger, with its configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum TriggerKind {
    /// Started by a call to the engine.
    Manual,
    /// Started by an HTTP delivery.
    Webhook(WebhookConfig),
    /// Started on a schedule.
    Cron(CronConfig),
}

/// How a webhook trigger receives deliveries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookConfig {
    /// The path it is reachable under, unique among webhook triggers.
    pub path: String,
}

/// When a cron trigger fires.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CronConfig {
    /// The cron expression.
    pub expression: String,
    /// The IANA timezone the expression is read in.
    pub timezone: String,
}
