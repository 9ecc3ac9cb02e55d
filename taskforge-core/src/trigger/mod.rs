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

use crate::concurrency::ConcurrencyLimit;
use crate::id::{TriggerId, WorkflowId};
use crate::workflow::DefinitionProblem;

pub(crate) mod auth;
pub(crate) mod cron;
pub(crate) mod filter;
pub(crate) mod request;
pub(crate) mod webhook;

pub use self::cron::CronConfig;
use self::cron::ScheduleError;
use self::webhook::InvalidWebhookConfig;
pub use self::webhook::WebhookConfig;

/// The longest trigger name, in bytes.
pub const MAX_TRIGGER_NAME_LEN: usize = 256;

/// An entrypoint that starts runs of one workflow.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Trigger {
    /// Its id.
    pub id: TriggerId,
    /// The workflow it starts.
    pub workflow_id: WorkflowId,
    /// Its name, unique within its workflow and stable across launches: a
    /// host declares its triggers by name at start-up with
    /// [`Engine::ensure_trigger`](crate::Engine::ensure_trigger). Triggers
    /// stored before names existed load with an empty name.
    #[serde(default)]
    pub name: String,
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
    /// A new, enabled trigger, named after its kind (see
    /// [`TriggerKind::default_name`]).
    #[must_use]
    pub fn new(workflow_id: WorkflowId, kind: TriggerKind, now: DateTime<Utc>) -> Self {
        Self {
            id: TriggerId::new(),
            workflow_id,
            name: kind.default_name(),
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

impl Trigger {
    /// The same trigger under another name.
    #[must_use]
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// The webhook path it is reachable under, if it is a webhook trigger.
    #[must_use]
    pub fn webhook_path(&self) -> Option<&str> {
        match &self.kind {
            TriggerKind::Webhook(config) => Some(&config.path),
            _ => None,
        }
    }
}

/// Checks a trigger name: 1 to [`MAX_TRIGGER_NAME_LEN`] bytes, no control
/// characters, no leading or trailing whitespace.
pub(crate) fn validate_trigger_name(name: &str) -> Result<(), InvalidTrigger> {
    let reason = if name.is_empty() {
        "must not be empty"
    } else if name.len() > MAX_TRIGGER_NAME_LEN {
        "is longer than 256 bytes"
    } else if name.chars().any(char::is_control) {
        "has a control character"
    } else if name.trim() != name {
        "has leading or trailing whitespace"
    } else {
        return Ok(());
    };
    Err(InvalidTrigger::Name {
        name: name.chars().take(64).collect(),
        reason,
    })
}

impl TriggerKind {
    /// The name a trigger of this kind gets unless it is given one:
    /// `manual`, `webhook <path>`, or `cron <expression> <timezone>`, cut
    /// to [`MAX_TRIGGER_NAME_LEN`].
    #[must_use]
    pub fn default_name(&self) -> String {
        let name = match self {
            Self::Manual => "manual".to_owned(),
            Self::Webhook(config) => format!("webhook {}", config.path),
            Self::Cron(config) => format!("cron {} {}", config.expression, config.timezone),
        };
        let mut end = name.len().min(MAX_TRIGGER_NAME_LEN);
        while !name.is_char_boundary(end) {
            end -= 1;
        }
        name[..end].trim().to_owned()
    }

    /// Checks the configuration, so that a trigger that could never fire is
    /// refused when it is created.
    pub fn validate(&self) -> Result<(), InvalidTrigger> {
        match self {
            Self::Manual => Ok(()),
            Self::Webhook(config) => config.validate().map_err(InvalidTrigger::Webhook),
            Self::Cron(config) => config.schedule().map(drop).map_err(InvalidTrigger::Cron),
        }?;
        if let Some(limit) = self.concurrency() {
            let mut problems = Vec::new();
            limit.check(&mut problems);
            if let Some(problem) = problems.into_iter().next() {
                return Err(InvalidTrigger::Concurrency(problem));
            }
        }
        Ok(())
    }

    /// The concurrency limit of the runs a trigger of this kind starts, in
    /// place of the version's, if it declares one.
    #[must_use]
    pub fn concurrency(&self) -> Option<&ConcurrencyLimit> {
        match self {
            Self::Manual => None,
            Self::Webhook(config) => config.concurrency.as_ref(),
            Self::Cron(config) => config.concurrency.as_ref(),
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
    /// The operation needs a webhook trigger.
    #[error("trigger {0} is not a webhook trigger")]
    NotAWebhook(TriggerId),
    /// The trigger's concurrency limit is unusable.
    #[error("invalid concurrency limit: {0}")]
    Concurrency(DefinitionProblem),
    /// The trigger's name is unusable.
    #[error("invalid trigger name {name:?}: {reason}")]
    Name {
        /// The name given (at most its first 64 characters).
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
}
