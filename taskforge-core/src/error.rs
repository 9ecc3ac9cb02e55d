//! Error types, one per concern, each with variants a caller can act on.
//! Every error type of the crate is here, whichever module defines it.

use crate::id::RunId;
use crate::run::RunStatus;

pub use crate::run::IllegalTransition;
pub use crate::secret::{MasterKeyError, SecretError};
pub use crate::step::{ReadError, RegistryError};
pub use crate::trigger::cron::ScheduleError;
pub use crate::trigger::request::Rejection;
pub use crate::trigger::webhook::InvalidWebhookConfig;
pub use crate::trigger::InvalidTrigger;
pub use crate::workflow::{DefinitionProblem, InvalidDefinition, NameError};

/// What a store answers when it cannot do what was asked.
///
/// Every backend maps its own failures onto these variants, so the engine and
/// host applications can act on them without knowing the backend.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The record does not exist.
    #[error("{kind} {id} not found")]
    NotFound {
        /// What kind of record was looked for (`run`, `workflow`, ...).
        kind: &'static str,
        /// Its id or key.
        id: String,
    },
    /// A record with this id or unique key exists already.
    #[error("{kind} {id} already exists")]
    AlreadyExists {
        /// What kind of record collided.
        kind: &'static str,
        /// Its id or unique key.
        id: String,
    },
    /// A compare-and-set lost: the stored record is not in the state the
    /// caller expected (another writer won, the lease is stale, or the record
    /// is finished and immutable). Nothing was written.
    #[error("conflict on {kind} {id}: {reason}")]
    Conflict {
        /// What kind of record was contended.
        kind: &'static str,
        /// Its id.
        id: String,
        /// What did not match.
        reason: String,
    },
    /// The request itself is invalid (for example a page limit of zero).
    #[error("invalid store request: {0}")]
    Invalid(String),
    /// The backend failed (I/O, corruption, a closed database).
    #[error("{backend} backend error: {source}")]
    Backend {
        /// Which backend (`memory`, `sled`, ...).
        backend: &'static str,
        /// The underlying failure.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl StoreError {
    /// A [`StoreError::NotFound`].
    pub fn not_found(kind: &'static str, id: impl ToString) -> Self {
        Self::NotFound {
            kind,
            id: id.to_string(),
        }
    }

    /// A [`StoreError::AlreadyExists`].
    pub fn already_exists(kind: &'static str, id: impl ToString) -> Self {
        Self::AlreadyExists {
            kind,
            id: id.to_string(),
        }
    }

    /// A [`StoreError::Conflict`].
    pub fn conflict(kind: &'static str, id: impl ToString, reason: impl Into<String>) -> Self {
        Self::Conflict {
            kind,
            id: id.to_string(),
            reason: reason.into(),
        }
    }

    /// A [`StoreError::Backend`].
    pub fn backend(
        backend: &'static str,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        Self::Backend {
            backend,
            source: source.into(),
        }
    }

    /// Whether this is a [`StoreError::Conflict`].
    #[must_use]
    pub fn is_conflict(&self) -> bool {
        matches!(self, Self::Conflict { .. })
    }

    /// Whether this is a [`StoreError::NotFound`].
    #[must_use]
    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::NotFound { .. })
    }
}

/// Why the engine refused or failed a request.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// The store failed or refused.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The definition is invalid.
    #[error(transparent)]
    InvalidDefinition(#[from] InvalidDefinition),
    /// The state machine refused a transition.
    #[error(transparent)]
    IllegalTransition(#[from] IllegalTransition),
    /// A workflow name is invalid.
    #[error(transparent)]
    InvalidName(#[from] NameError),
    /// The workflow is inactive and takes no new runs.
    #[error("workflow {0} is inactive and takes no new runs")]
    WorkflowInactive(String),
    /// The workflow has no published version to run.
    #[error("workflow {0} has no published version")]
    NoVersion(String),
    /// The run is finished and cannot be cancelled.
    #[error("run {run} is already finished ({status:?})")]
    RunFinished {
        /// The run.
        run: RunId,
        /// Its terminal status.
        status: RunStatus,
    },
    /// A run input or payload is invalid.
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// Only a failed, timed-out or cancelled run can be resumed.
    #[error("run {run} is {status}; only a failed, timed-out or cancelled run can be resumed")]
    NotResumable {
        /// The run.
        run: RunId,
        /// Its status.
        status: RunStatus,
    },
    /// A trigger's configuration is invalid.
    #[error(transparent)]
    InvalidTrigger(#[from] InvalidTrigger),
    /// An artifact could not be stored or read.
    #[error(transparent)]
    Artifact(#[from] crate::artifact::ArtifactError),
    /// A secret could not be stored or read.
    #[error(transparent)]
    Secret(#[from] SecretError),
    /// The engine has no master key, so it keeps no secrets
    /// ([`EngineBuilder::master_key`](crate::EngineBuilder::master_key)).
    #[error("the engine has no master key, so it keeps no secrets")]
    NoMasterKey,
    /// The run was not started: the workflow's concurrency limit for its
    /// key was reached and its policy is [`Skip`](crate::LimitPolicy::Skip).
    /// The request is recorded as an event with the outcome
    /// [`Limited`](crate::EventOutcome::Limited).
    #[error("the concurrency limit of key {key:?} is reached; no run was started")]
    Limited {
        /// The concurrency key that was full.
        key: String,
        /// The event that records the request.
        event_id: crate::id::EventId,
    },
}
