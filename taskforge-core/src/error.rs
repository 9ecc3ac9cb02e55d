//! Error types, one per concern, each with variants a caller can act on.

use crate::id::RunId;
use crate::run::{RunStatus, RunTransition, StepStatus, StepTransition};
use crate::workflow::DefinitionProblem;

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

/// A workflow definition was rejected; every problem found is listed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid workflow definition: {}", join(.problems))]
pub struct InvalidDefinition {
    /// Every problem found, in definition order.
    pub problems: Vec<DefinitionProblem>,
}

fn join(problems: &[DefinitionProblem]) -> String {
    problems
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// A lifecycle transition that the state machine does not allow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IllegalTransition {
    /// A run transition that its current status does not allow.
    #[error("illegal run transition {transition:?} from {from:?}")]
    Run {
        /// The status the run is in.
        from: RunStatus,
        /// The transition asked for.
        transition: RunTransition,
    },
    /// A step transition that its current status does not allow.
    #[error("illegal step transition {transition:?} from {from:?}")]
    Step {
        /// The status the step attempt is in.
        from: StepStatus,
        /// The transition asked for.
        transition: StepTransition,
    },
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
    #[error("invalid workflow name {name:?}: {reason}")]
    InvalidName {
        /// The name given.
        name: String,
        /// What is wrong with it.
        reason: String,
    },
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
    /// A trigger's configuration is invalid.
    #[error(transparent)]
    InvalidTrigger(#[from] crate::trigger::InvalidTrigger),
    /// The engine is shutting down and takes no new work.
    #[error("engine is shutting down")]
    ShuttingDown,
}
