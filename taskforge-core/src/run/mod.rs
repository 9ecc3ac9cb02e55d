//! Workflow runs, step runs, and their lifecycles as a pure state machine.
//!
//! Terminal states stay terminal: [`RunStatus::apply`] and
//! [`StepStatus::apply`] refuse every transition out of them, and stores
//! refuse to rewrite a finished record.

use std::fmt;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::concurrency::RunLimits;
use crate::id::{EventId, RunId, StepRunId, VersionId, WorkflowId};
use crate::workflow::WorkflowVersion;

pub(crate) mod dag;
pub(crate) mod decide;

/// The most signals one run holds ([`WorkflowRun::signals`]); stores
/// refuse more.
pub const MAX_SIGNALS_PER_RUN: usize = 1_000;

/// The largest payload of one signal, in bytes of JSON; the engine refuses
/// larger ones.
pub const MAX_SIGNAL_PAYLOAD_BYTES: usize = 64 * 1024;

/// Where a run is in its lifecycle.
///
/// # Lifecycle
///
/// ```text
///            Start              Succeed
///  Queued ─────────▶ Running ─────────▶ Succeeded
///    │                │  ▲ Resume
///    │ Cancel         │  └──┘ (a new owner picks it up after a crash)
///    ▼                ├── Fail ───▶ Failed
///  Cancelled ◀─Cancel─┤
///    ▲                ├── TimeOut ─▶ TimedOut
///    │                │  ▲               ▲
///    │           Park │  │ Wake          │
///    │                ▼  │               │
///    └───Cancel──── Waiting ───TimeOut───┘
/// ```
///
/// | status      | meaning                                                   |
/// |-------------|-----------------------------------------------------------|
/// | `Queued`    | accepted and durable, waiting for a worker to claim it   |
/// | `Running`   | claimed by a worker holding its lease; steps are running |
/// | `Waiting`   | parked: nothing to do before its [`wake_at`](WorkflowRun::wake_at) or a [signal](WorkflowRun::signals); no worker, lease or engine slot held |
/// | `Succeeded` | every step succeeded or was skipped (terminal)           |
/// | `Failed`    | a step failed for good (terminal)                        |
/// | `Cancelled` | cancelled before it finished (terminal)                  |
/// | `TimedOut`  | the run's timeout passed (terminal)                      |
///
/// A run is parked (`Park`) by its worker when all it has left to do is
/// wait: a [wait step](crate::StepDefinition::sleep) for a time or a
/// signal, or a retry's backoff, further away than
/// [`EngineConfig::park_after`](crate::EngineConfig::park_after). A worker
/// of any engine claims it again once it is due (`Wake`), and goes on from
/// its stored history.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum RunStatus {
    /// Accepted and durable, waiting for a worker.
    Queued,
    /// Claimed by a worker; steps are running.
    Running,
    /// Parked until a time or a signal, holding no worker, lease or
    /// engine slot.
    Waiting,
    /// Every step succeeded or was skipped.
    Succeeded,
    /// A step failed for good.
    Failed,
    /// Cancelled before it finished.
    Cancelled,
    /// The run's timeout passed.
    TimedOut,
}

/// A change of a run's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum RunTransition {
    /// A worker claimed a queued run.
    Start,
    /// A new worker took over a running run whose worker was lost.
    Resume,
    /// The last step succeeded.
    Succeed,
    /// A step failed for good.
    Fail,
    /// Cancellation was asked for.
    Cancel,
    /// The run timeout passed.
    TimeOut,
    /// The worker parked the run: it has nothing to do before a time or a
    /// signal, and gives back its lease.
    Park,
    /// A worker claimed a parked run that is due, and goes on with it.
    Wake,
}

impl RunTransition {
    /// Every transition, for exhaustive tests.
    pub const ALL: [Self; 8] = [
        Self::Start,
        Self::Resume,
        Self::Succeed,
        Self::Fail,
        Self::Cancel,
        Self::TimeOut,
        Self::Park,
        Self::Wake,
    ];
}

impl RunStatus {
    /// Every status, for exhaustive tests.
    pub const ALL: [Self; 7] = [
        Self::Queued,
        Self::Running,
        Self::Waiting,
        Self::Succeeded,
        Self::Failed,
        Self::Cancelled,
        Self::TimedOut,
    ];

    /// The status after `transition`, or why it is not allowed.
    pub fn apply(self, transition: RunTransition) -> Result<Self, IllegalTransition> {
        use RunStatus::*;
        use RunTransition as T;
        match (self, transition) {
            (Queued, T::Start) => Ok(Running),
            (Queued, T::Cancel) => Ok(Cancelled),
            (Running, T::Resume) => Ok(Running),
            (Running, T::Succeed) => Ok(Succeeded),
            (Running, T::Fail) => Ok(Failed),
            (Running, T::Cancel) => Ok(Cancelled),
            (Running, T::TimeOut) => Ok(TimedOut),
            (Running, T::Park) => Ok(Waiting),
            (Waiting, T::Wake) => Ok(Running),
            (Waiting, T::Cancel) => Ok(Cancelled),
            (Waiting, T::TimeOut) => Ok(TimedOut),
            (Queued, T::Resume | T::Succeed | T::Fail | T::TimeOut | T::Park | T::Wake)
            | (Running, T::Start | T::Wake)
            | (Waiting, T::Start | T::Resume | T::Succeed | T::Fail | T::Park)
            | (Succeeded | Failed | Cancelled | TimedOut, _) => Err(IllegalTransition::Run {
                from: self,
                transition,
            }),
        }
    }

    /// The status a recorded history of transitions leads to from
    /// `Queued`, or the first transition it does not allow.
    pub fn replay(history: &[RunTransition]) -> Result<Self, IllegalTransition> {
        history
            .iter()
            .try_fold(Self::Queued, |status, &t| status.apply(t))
    }

    /// Whether no transition leaves this status.
    #[must_use]
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            Self::Succeeded | Self::Failed | Self::Cancelled | Self::TimedOut
        )
    }

    /// The status's name in `snake_case`, as stored.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Waiting => "waiting",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
            Self::TimedOut => "timed_out",
        }
    }
}

impl fmt::Display for RunStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where one step attempt is in its lifecycle.
///
/// # Lifecycle
///
/// Each attempt of a step is its own [`StepRun`], created `Running` just
/// before its handler is called ([`StepRun::start`]). A step that is not
/// run at all, because its
/// [condition](crate::StepDefinition::condition) was false or every step
/// it depends on was skipped, has one record, created `Skipped`
/// ([`StepRun::skipped`]); no transition leads to or out of it.
///
/// | status        | meaning                                                        |
/// |---------------|----------------------------------------------------------------|
/// | `Running`     | its handler has been called and has not returned             |
/// | `Succeeded`   | the handler returned output (terminal)                        |
/// | `Failed`      | the handler returned an error; `retry_at` says if another attempt follows (terminal) |
/// | `TimedOut`    | the attempt outlived its timeout and was dropped (terminal)  |
/// | `Cancelled`   | the run was cancelled, or another step failed for good, while it ran (terminal) |
/// | `Interrupted` | its worker was lost (crash, lost lease); a new attempt follows (terminal) |
/// | `Skipped`     | not run: `error` says why; created so (terminal)              |
///
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum StepStatus {
    /// The handler has been called and has not returned.
    Running,
    /// The handler returned output.
    Succeeded,
    /// The handler returned an error.
    Failed,
    /// The attempt outlived its timeout.
    TimedOut,
    /// The run was cancelled while the attempt ran.
    Cancelled,
    /// The attempt's worker was lost; a new attempt follows.
    Interrupted,
    /// The step was not run: its condition was false, or every step it
    /// depends on was skipped. Created so; never the end of a transition.
    Skipped,
}

/// A change of a step attempt's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum StepTransition {
    /// The handler returned output.
    Succeed,
    /// The handler returned an error.
    Fail,
    /// The attempt's timeout passed.
    TimeOut,
    /// The run was cancelled.
    Cancel,
    /// The attempt's worker was found lost during recovery.
    Interrupt,
}

impl StepStatus {
    /// Every status, for exhaustive tests.
    pub const ALL: [Self; 7] = [
        Self::Running,
        Self::Succeeded,
        Self::Failed,
        Self::TimedOut,
        Self::Cancelled,
        Self::Interrupted,
        Self::Skipped,
    ];

    /// The status after `transition`, or why it is not allowed.
    pub fn apply(self, transition: StepTransition) -> Result<Self, IllegalTransition> {
        use StepStatus::*;
        use StepTransition as T;
        match (self, transition) {
            (Running, T::Succeed) => Ok(Succeeded),
            (Running, T::Fail) => Ok(Failed),
            (Running, T::TimeOut) => Ok(TimedOut),
            (Running, T::Cancel) => Ok(Cancelled),
            (Running, T::Interrupt) => Ok(Interrupted),
            (Succeeded | Failed | TimedOut | Cancelled | Interrupted | Skipped, _) => {
                Err(IllegalTransition::Step {
                    from: self,
                    transition,
                })
            }
        }
    }

    /// Whether no transition leaves this status.
    #[must_use]
    pub fn is_terminal(self) -> bool {
        !matches!(self, Self::Running)
    }
}

impl fmt::Display for StepStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::TimedOut => "timed_out",
            Self::Cancelled => "cancelled",
            Self::Interrupted => "interrupted",
            Self::Skipped => "skipped",
        })
    }
}

/// The claim a worker holds on a run while it executes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// The worker (engine instance) holding it.
    pub owner: String,
    /// When it lapses unless renewed.
    #[serde(serialize_with = "crate::time_format::serialize")]
    pub expires_at: DateTime<Utc>,
}

/// What a fenced write expects of the stored run: a store applies the write
/// only if the run's `lease_epoch` and `status` still match, so a worker
/// that lost its lease can never overwrite its successor's work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fence {
    /// The run written.
    pub run_id: RunId,
    /// The lease epoch the writer claimed.
    pub epoch: u64,
    /// The status the writer last saw.
    pub status: RunStatus,
}

/// Why a run did not succeed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunError {
    /// What went wrong, for people.
    pub message: String,
    /// The step it went wrong in, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    /// Structured detail from the handler, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<Value>,
}

/// One execution of a workflow, pinned to one version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkflowRun {
    /// Its id.
    pub id: RunId,
    /// The workflow.
    pub workflow_id: WorkflowId,
    /// The version it runs: fixed for its whole life.
    pub version_id: VersionId,
    /// That version's number.
    pub version: u32,
    /// The event that caused it, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_id: Option<EventId>,
    /// The run this one replays, if it is a replay.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replay_of: Option<RunId>,
    /// The failed, timed-out or cancelled run this one resumes
    /// ([`Engine::resume_run`](crate::Engine::resume_run)): it keeps that
    /// run's succeeded steps and goes on from the ones that did not
    /// succeed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resumed_from: Option<RunId>,
    /// Where it is in its lifecycle.
    pub status: RunStatus,
    /// Its input, handed to every step; shared, not copied, with the event
    /// that caused the run and with step contexts.
    pub input: Arc<Value>,
    /// Its output, once it succeeded: as the version's
    /// [`WorkflowDefinition::output`](crate::WorkflowDefinition::output)
    /// describes (without dependencies, the last step's output).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<Value>,
    /// Why it did not succeed, once it failed, timed out or was cancelled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<RunError>,
    /// When it was queued.
    #[serde(serialize_with = "crate::time_format::serialize")]
    pub created_at: DateTime<Utc>,
    /// When it first started.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "crate::time_format::serialize_opt"
    )]
    pub started_at: Option<DateTime<Utc>>,
    /// When it reached a terminal status.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "crate::time_format::serialize_opt"
    )]
    pub finished_at: Option<DateTime<Utc>>,
    /// When the run times out, set when it starts if the version has a run timeout.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "crate::time_format::serialize_opt"
    )]
    pub deadline: Option<DateTime<Utc>>,
    /// The current claim, while a worker holds one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease: Option<Lease>,
    /// Incremented by every claim; the fencing token of writes.
    pub lease_epoch: u64,
    /// Whether cancellation was asked for; set by any engine, honoured by the owner.
    #[serde(default)]
    pub cancel_requested: bool,
    /// The concurrency limit, debounce window and rate limit the run was
    /// admitted under, if any: copied from its version (or its trigger)
    /// when it is created, so that stores enforce them when it is claimed.
    /// See [`concurrency`](crate::concurrency). Shared, not copied, by
    /// the run's copies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<Arc<RunLimits>>,
    /// When a [`Waiting`](RunStatus::Waiting) run is due: a worker may
    /// claim it from then on. `None` while it waits for a signal alone
    /// (a signal that arrives makes it due at once). Set when the run is
    /// parked, cleared when it wakes.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "crate::time_format::serialize_opt"
    )]
    pub wake_at: Option<DateTime<Utc>>,
    /// The signals sent to the run ([`Engine::signal_run`](crate::Engine::signal_run)),
    /// in the order they arrived. Stores append to it, atomically and
    /// without a lease ([`RunStore::signal_run`](crate::store::RunStore::signal_run));
    /// a signal's position here is its number, which the wait step that
    /// received it records ([`StepRun::signal`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub signals: Vec<Signal>,
}

/// A signal sent to a run: a name and a JSON payload, for the
/// [wait step](crate::StepDefinition::wait_for_signal) that waits for that
/// name. Kept with the run, so one sent before the run reaches its wait
/// step is received when it gets there.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Signal {
    /// Its name (what a wait step waits for).
    pub name: String,
    /// What it carries: the output of the wait step that receives it.
    #[serde(default)]
    pub payload: Value,
    /// When it was received.
    #[serde(serialize_with = "crate::time_format::serialize")]
    pub received_at: DateTime<Utc>,
}

impl Signal {
    /// A signal named `name`, carrying `payload`, received at `now`.
    #[must_use]
    pub fn new(name: impl Into<String>, payload: Value, now: DateTime<Utc>) -> Self {
        Self {
            name: name.into(),
            payload,
            received_at: now,
        }
    }
}

impl WorkflowRun {
    /// A queued run of `version` with `input`.
    #[must_use]
    pub fn new(
        version: &WorkflowVersion,
        input: impl Into<Arc<Value>>,
        now: DateTime<Utc>,
    ) -> Self {
        Self {
            id: RunId::new(),
            workflow_id: version.workflow_id,
            version_id: version.id,
            version: version.number,
            event_id: None,
            replay_of: None,
            resumed_from: None,
            status: RunStatus::Queued,
            input: input.into(),
            output: None,
            error: None,
            created_at: now,
            started_at: None,
            finished_at: None,
            deadline: None,
            lease: None,
            lease_epoch: 0,
            cancel_requested: false,
            limits: None,
            wake_at: None,
            signals: Vec::new(),
        }
    }

    /// Applies `transition` through the state machine and stamps the times.
    /// A run that finishes or is parked gives back its lease; one that
    /// finishes or wakes has no [`wake_at`](Self::wake_at) any more (the
    /// caller of `Park` sets it).
    pub fn transition(
        &mut self,
        transition: RunTransition,
        now: DateTime<Utc>,
    ) -> Result<(), IllegalTransition> {
        self.status = self.status.apply(transition)?;
        if transition == RunTransition::Start {
            self.started_at = Some(now);
        }
        if transition == RunTransition::Park {
            self.lease = None;
        }
        if transition == RunTransition::Wake {
            self.wake_at = None;
        }
        if self.status.is_terminal() {
            self.finished_at = Some(now);
            self.lease = None;
            self.wake_at = None;
        }
        Ok(())
    }

    /// The fence for a write by the current lease holder.
    #[must_use]
    pub fn fence(&self) -> Fence {
        Fence {
            run_id: self.id,
            epoch: self.lease_epoch,
            status: self.status,
        }
    }
}

/// Why a step attempt failed, stored so it survives restarts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepFailure {
    /// What went wrong, for people.
    pub message: String,
    /// Whether the handler said retrying cannot help.
    #[serde(default)]
    pub terminal: bool,
    /// Structured detail from the handler, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<Value>,
}

/// One attempt of one step of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepRun {
    /// Its id.
    pub id: StepRunId,
    /// The run.
    pub run_id: RunId,
    /// The step's key in the run's version.
    pub step_key: String,
    /// The step's position in the run's version.
    pub step_index: u32,
    /// 1 for the first attempt, then 2, 3, ...
    pub attempt: u32,
    /// Where it is in its lifecycle.
    pub status: StepStatus,
    /// What the handler returned, once it succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<Value>,
    /// Why it did not succeed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<StepFailure>,
    /// When the next attempt is due, if this one failed and another follows.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "crate::time_format::serialize_opt"
    )]
    pub retry_at: Option<DateTime<Utc>>,
    /// When the handler was called.
    #[serde(serialize_with = "crate::time_format::serialize")]
    pub started_at: DateTime<Utc>,
    /// When the attempt ended.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "crate::time_format::serialize_opt"
    )]
    pub finished_at: Option<DateTime<Utc>>,
    /// For a [wait step](crate::StepDefinition::wait_for_signal) that
    /// received a signal: its number, the position in the run's
    /// [`signals`](WorkflowRun::signals). A signal is received by one wait
    /// step at most.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<u32>,
    /// For a step a resumed run kept from the run it resumes: the attempt
    /// of that run whose output it carries. Such a step never ran in this
    /// run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub carried_from: Option<StepRunId>,
}

impl StepRun {
    /// A running attempt, recorded before its handler is called.
    #[must_use]
    pub fn start(
        run_id: RunId,
        step_key: impl Into<String>,
        step_index: u32,
        attempt: u32,
        now: DateTime<Utc>,
    ) -> Self {
        Self {
            id: StepRunId::new(),
            run_id,
            step_key: step_key.into(),
            step_index,
            attempt,
            status: StepStatus::Running,
            output: None,
            error: None,
            retry_at: None,
            started_at: now,
            finished_at: None,
            signal: None,
            carried_from: None,
        }
    }

    /// The record of a step that is not run (status
    /// [`Skipped`](StepStatus::Skipped), as its only attempt), with why in
    /// `error`.
    #[must_use]
    pub fn skipped(
        run_id: RunId,
        step_key: impl Into<String>,
        step_index: u32,
        reason: impl Into<String>,
        now: DateTime<Utc>,
    ) -> Self {
        Self {
            id: StepRunId::new(),
            run_id,
            step_key: step_key.into(),
            step_index,
            attempt: 1,
            status: StepStatus::Skipped,
            output: None,
            error: Some(StepFailure {
                message: reason.into(),
                terminal: true,
                detail: None,
            }),
            retry_at: None,
            started_at: now,
            finished_at: Some(now),
            signal: None,
            carried_from: None,
        }
    }

    /// Applies `transition` through the state machine and stamps the end time.
    pub fn transition(
        &mut self,
        transition: StepTransition,
        now: DateTime<Utc>,
    ) -> Result<(), IllegalTransition> {
        self.status = self.status.apply(transition)?;
        self.finished_at = Some(now);
        Ok(())
    }

    /// The key a handler uses to make its side effects idempotent: the same
    /// for every attempt of this step in this run, across restarts.
    #[must_use]
    pub fn idempotency_key(&self) -> String {
        idempotency_key(self.run_id, &self.step_key)
    }
}

/// The idempotency key of step `step_key` of run `run_id`.
#[must_use]
pub(crate) fn idempotency_key(run_id: RunId, step_key: &str) -> String {
    format!("{run_id}/{step_key}")
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

#[cfg(test)]
mod tests {
    use super::*;

    const RUN_TRANSITIONS: [RunTransition; 8] = RunTransition::ALL;

    #[test]
    fn terminal_run_states_refuse_every_transition() {
        for status in RunStatus::ALL.into_iter().filter(|s| s.is_terminal()) {
            for t in RUN_TRANSITIONS {
                assert!(status.apply(t).is_err(), "{status:?} {t:?}");
            }
        }
    }

    #[test]
    fn the_happy_path_and_cancellation_are_legal() {
        assert_eq!(
            RunStatus::replay(&[
                RunTransition::Start,
                RunTransition::Resume,
                RunTransition::Succeed
            ]),
            Ok(RunStatus::Succeeded)
        );
        assert_eq!(
            RunStatus::replay(&[RunTransition::Cancel]),
            Ok(RunStatus::Cancelled)
        );
        assert_eq!(
            RunStatus::replay(&[RunTransition::Succeed]),
            Err(IllegalTransition::Run {
                from: RunStatus::Queued,
                transition: RunTransition::Succeed
            })
        );
    }

    #[test]
    fn a_run_parks_and_wakes() {
        use RunTransition as T;
        assert_eq!(
            RunStatus::replay(&[T::Start, T::Park, T::Wake, T::Park, T::Wake, T::Succeed]),
            Ok(RunStatus::Succeeded)
        );
        assert_eq!(
            RunStatus::replay(&[T::Start, T::Park, T::Cancel]),
            Ok(RunStatus::Cancelled)
        );
        assert_eq!(
            RunStatus::replay(&[T::Start, T::Park, T::TimeOut]),
            Ok(RunStatus::TimedOut)
        );
        // Only a running run parks, and only a parked one wakes.
        for (status, transition) in [
            (RunStatus::Queued, T::Park),
            (RunStatus::Waiting, T::Park),
            (RunStatus::Running, T::Wake),
            (RunStatus::Queued, T::Wake),
            (RunStatus::Waiting, T::Succeed),
            (RunStatus::Waiting, T::Resume),
        ] {
            assert!(
                status.apply(transition).is_err(),
                "{status:?} {transition:?}"
            );
        }
        let mut run = WorkflowRun::new(
            &crate::workflow::WorkflowVersion::new(
                WorkflowId::new(),
                1,
                crate::workflow::WorkflowDefinition::new(vec![crate::StepDefinition::new(
                    "a", "a",
                )]),
                Utc::now(),
            ),
            Value::Null,
            Utc::now(),
        );
        run.lease = Some(Lease {
            owner: "a".into(),
            expires_at: Utc::now(),
        });
        run.transition(T::Start, Utc::now()).expect("start");
        run.transition(T::Park, Utc::now()).expect("park");
        assert_eq!((run.status, run.lease.as_ref()), (RunStatus::Waiting, None));
        run.wake_at = Some(Utc::now());
        run.transition(T::Wake, Utc::now()).expect("wake");
        assert_eq!((run.status, run.wake_at), (RunStatus::Running, None));
    }

    #[test]
    fn a_skipped_step_is_created_so_and_stays() {
        let step = StepRun::skipped(RunId::new(), "deploy", 2, "condition false", Utc::now());
        assert_eq!((step.status, step.attempt), (StepStatus::Skipped, 1));
        assert!(step.finished_at.is_some() && step.status.is_terminal());
        for transition in [
            StepTransition::Succeed,
            StepTransition::Fail,
            StepTransition::TimeOut,
            StepTransition::Cancel,
            StepTransition::Interrupt,
        ] {
            assert_eq!(
                StepStatus::Skipped.apply(transition),
                Err(IllegalTransition::Step {
                    from: StepStatus::Skipped,
                    transition
                })
            );
            assert!(StepStatus::ALL
                .into_iter()
                .all(|from| from.apply(transition) != Ok(StepStatus::Skipped)));
        }
    }

    #[test]
    fn step_attempts_end_once() {
        let mut step = StepRun::start(RunId::new(), "build", 0, 1, Utc::now());
        assert!(step.transition(StepTransition::Succeed, Utc::now()).is_ok());
        assert!(step.transition(StepTransition::Fail, Utc::now()).is_err());
        assert_eq!(step.status, StepStatus::Succeeded);
    }
}
