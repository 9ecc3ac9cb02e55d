//! The live stream of what happens in runs.

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::id::{RunId, WorkflowId};
use crate::run::RunStatus;
use crate::step::LogLine;

/// What happened in a run, as it happens. Delivered to
/// subscribers of [`Engine::subscribe`](crate::Engine::subscribe); the store
/// keeps the durable history.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum RunUpdate {
    /// A run was queued.
    RunQueued {
        /// The run.
        run_id: RunId,
        /// Its workflow.
        workflow_id: WorkflowId,
    },
    /// A worker started (or, after a crash, resumed) a run.
    RunStarted {
        /// The run.
        run_id: RunId,
        /// Whether it was resumed from an earlier worker.
        resumed: bool,
    },
    /// A step attempt started.
    StepStarted {
        /// The run.
        run_id: RunId,
        /// The step.
        step_key: String,
        /// The attempt, from 1.
        attempt: u32,
    },
    /// A step attempt succeeded.
    StepSucceeded {
        /// The run.
        run_id: RunId,
        /// The step.
        step_key: String,
        /// The attempt, from 1.
        attempt: u32,
    },
    /// A step attempt failed; `retry_at` says when the next one starts,
    /// `None` if none will.
    StepFailed {
        /// The run.
        run_id: RunId,
        /// The step.
        step_key: String,
        /// The attempt, from 1.
        attempt: u32,
        /// What went wrong.
        error: String,
        /// When the next attempt is due.
        retry_at: Option<DateTime<Utc>>,
    },
    /// A step was skipped: its condition was false, or every step it
    /// depends on was skipped. Sent once the record is stored.
    StepSkipped {
        /// The run.
        run_id: RunId,
        /// The step.
        step_key: String,
        /// Why.
        reason: String,
    },
    /// A handler reported progress.
    StepProgress {
        /// The run.
        run_id: RunId,
        /// The step.
        step_key: String,
        /// What it reported.
        progress: Value,
    },
    /// A step attempt wrote a line to its log (already redacted and
    /// within the log's caps; it reaches the store in the next flush).
    StepLog {
        /// The step.
        step_key: String,
        /// The attempt, from 1.
        attempt: u32,
        /// The line; its `run_id` is the run's.
        line: LogLine,
    },
    /// A run was parked ([`RunStatus::Waiting`]): it has only waits left
    /// (a wait step, a retry's backoff), and its worker gave it back until
    /// `wake_at` or a signal. Any engine goes on with it then.
    RunWaiting {
        /// The run.
        run_id: RunId,
        /// When it is due; `None` while it waits for a signal alone.
        wake_at: Option<DateTime<Utc>>,
    },
    /// A run reached a terminal status.
    RunFinished {
        /// The run.
        run_id: RunId,
        /// Its terminal status.
        status: RunStatus,
    },
}
