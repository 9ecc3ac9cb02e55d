//! Error types, one per concern, each with variants a caller can act on.
//! Every error type of the crate is here, whichever module defines it.

pub(crate) mod store;

pub use self::store::StoreError;
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
