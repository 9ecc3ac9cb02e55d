//! Triggers: the entrypoints that start runs, and the code that checks
//! what reaches them.
//!
//! - [`webhook`](self::webhook): a webhook trigger's configuration and the
//!   verification of a delivery, with its parts in their own files:
//!   [`request`](self::request) (what the HTTP layer hands over, and why a
//!   delivery is refused), [`auth`](self::auth) (bearer tokens and
//!   signatures) and [`filter`](self::filter) (payload filters);
//! - [`cron`](self::cron): cron expressions, time zones and the slots due.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::id::{TriggerId, WorkflowId};

pub(crate) mod auth;
pub(crate) mod cron;
pub(crate) mod filter;
pub(crate) mod request;
pub(crate) mod webhook;

pub use self::cron::CronConfig;
use self::cron::ScheduleError;
use self::webhook::InvalidWebhookConfig;
pub use self::webhook::WebhookConfig;

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

impl TriggerKind {
    /// Checks the configuration, so that a trigger that could never fire is
    /// refused when it is created.
    pub fn validate(&self) -> Result<(), InvalidTrigger> {
        match self {
            Self::Manual => Ok(()),
            Self::Webhook(config) => config.validate().map_err(InvalidTrigger::Webhook),
            Self::Cron(config) => config.schedule().map(drop).map_err(InvalidTrigger::Cron),
        }
    }
}

/// Why a trigger's configuration was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidTrigger {
    /// The webhook configuration cannot work.
    #[error(transparent)]
    Webhook(#[from] InvalidWebhookConfig),
    /// The cron expression or timezone is invalid.
    #[error(transparent)]
    Cron(#[from] ScheduleError),
}
