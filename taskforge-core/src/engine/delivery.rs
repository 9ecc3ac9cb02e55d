//! What came of a webhook delivery, and the HTTP status it maps to.

use crate::event::EventOutcome;
use crate::id::{EventId, RunId};
use crate::trigger::request::Rejection;

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
    /// inactive or the trigger disabled, or the concurrency limit of the
    /// run's key was reached and its policy skips or cancels new runs
    /// ([`EventOutcome::Limited`], which names the run recorded cancelled,
    /// if any). The event's outcome says which.
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
    /// Refused (too large, unauthenticated, malformed, ...): no run starts
    /// and the body is not kept, but the refusal is recorded as an event
    /// with the outcome [`EventOutcome::Rejected`] for the audit trail.
    /// HTTP status from [`Rejection::http_status`].
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
