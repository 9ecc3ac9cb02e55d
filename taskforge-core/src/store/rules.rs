//! The contract's rules, written once: every backend calls these checks
//! instead of re-deriving them, so a new backend only stores bytes.
//!
//! Each function decides; none does I/O. A backend reads what a rule needs
//! (inside its transaction, so nothing changes between the check and the
//! write), calls the rule, and writes what it returns, or nothing when it
//! returns an error.
//!
//! ```
//! use chrono::{TimeDelta, Utc};
//! use taskforge_core::store::rules;
//! use taskforge_core::{StepDefinition, Workflow, WorkflowDefinition, WorkflowRun, WorkflowVersion};
//!
//! let now = Utc::now();
//! let workflow = Workflow::new("deploy", now).unwrap();
//! let definition = WorkflowDefinition::new(vec![StepDefinition::new("build", "build")]);
//! let version = WorkflowVersion::new(workflow.id, 1, definition, now);
//! let queued = WorkflowRun::new(&version, serde_json::json!({}), now);
//!
//! // A claim takes the run with a new lease and the next epoch...
//! let claimed = rules::claim(&queued, "engine-a", now, now + TimeDelta::seconds(30)).unwrap();
//! assert_eq!(claimed.lease_epoch, 1);
//! // ...and a second claim while that lease lives is a conflict.
//! assert!(rules::claim(&claimed, "engine-b", now, now + TimeDelta::seconds(30)).is_err());
//! ```

use chrono::{DateTime, Utc};

use super::{EventQuery, RunQuery, MAX_PAGE_SIZE};
use crate::error::StoreError;
use crate::event::Event;
use crate::id::{EventId, RunId, VersionId, WorkflowId};
use crate::run::{Fence, Lease, RunStatus, StepRun, StepStatus, WorkflowRun};
use crate::trigger::Trigger;

/// The page size a query's `limit` asks for: 0 means 100, and no page is
/// larger than [`MAX_PAGE_SIZE`].
#[must_use]
pub fn page_limit(limit: usize) -> usize {
    match limit {
        0 => 100,
        n => n.min(MAX_PAGE_SIZE),
    }
}

/// Whether a worker may claim `run` at `now`: it is queued or running, and
/// holds no lease or one that lapsed at or before `now`. A run just claimed
/// is not claimable again until its lease lapses, so of concurrent claims
/// exactly one wins.
#[must_use]
pub fn is_claimable(status: RunStatus, lease: Option<&Lease>, now: DateTime<Utc>) -> bool {
    matches!(status, RunStatus::Queued | RunStatus::Running)
        && lease.is_none_or(|lease| lease.expires_at <= now)
}

/// The run after a claim by `owner` at `now` until `expires_at`: the new
/// lease and the next epoch; `Conflict` if it is not claimable.
pub fn claim(
    stored: &WorkflowRun,
    owner: &str,
    now: DateTime<Utc>,
    expires_at: DateTime<Utc>,
) -> Result<WorkflowRun, StoreError> {
    let id = stored.id;
    if !is_claimable(stored.status, stored.lease.as_ref(), now) {
        let reason = match &stored.lease {
            Some(lease) if !stored.status.is_terminal() => {
                format!("leased by {:?} until {}", lease.owner, lease.expires_at)
            }
            _ => format!("the run is {}", stored.status),
        };
        return Err(StoreError::conflict("run", id, reason));
    }
    let mut claimed = stored.clone();
    claimed.lease_epoch = stored
        .lease_epoch
        .checked_add(1)
        .ok_or_else(|| StoreError::conflict("run", id, "lease epoch exhausted"))?;
    claimed.lease = Some(Lease {
        owner: owner.to_owned(),
        expires_at,
    });
    Ok(claimed)
}

/// The run after the holder of the claim with epoch `epoch` renewed it
/// until `expires_at`; `Conflict` if the run is finished, was claimed
/// again since, or holds no lease.
pub fn renew(
    stored: &WorkflowRun,
    epoch: u64,
    expires_at: DateTime<Utc>,
) -> Result<WorkflowRun, StoreError> {
    let id = stored.id;
    if stored.status.is_terminal() {
        return Err(StoreError::conflict("run", id, "the run is finished"));
    }
    if stored.lease_epoch != epoch {
        return Err(StoreError::conflict(
            "run",
            id,
            format!(
                "lease epoch {epoch} is stale; the run was claimed again (epoch {})",
                stored.lease_epoch
            ),
        ));
    }
    let Some(lease) = &stored.lease else {
        return Err(StoreError::conflict("run", id, "the run holds no lease"));
    };
    let mut renewed = stored.clone();
    renewed.lease = Some(Lease {
        owner: lease.owner.clone(),
        expires_at,
    });
    Ok(renewed)
}

/// The run after a cancellation request; `None` when nothing changes (it
/// is finished, or the flag is set already).
#[must_use]
pub fn request_cancel(stored: &WorkflowRun) -> Option<WorkflowRun> {
    if stored.status.is_terminal() || stored.cancel_requested {
        return None;
    }
    let mut cancelled = stored.clone();
    cancelled.cancel_requested = true;
    Some(cancelled)
}

/// What the commit rules read of a stored run: a backend that keeps runs
/// serialized may decode only these fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunState {
    /// The run's status.
    pub status: RunStatus,
    /// Its lease epoch.
    pub lease_epoch: u64,
    /// Whether cancellation was asked for.
    pub cancel_requested: bool,
    /// Its workflow.
    pub workflow_id: WorkflowId,
    /// Its pinned version.
    pub version_id: VersionId,
    /// The event that caused it.
    pub event_id: Option<EventId>,
}

impl From<&WorkflowRun> for RunState {
    fn from(run: &WorkflowRun) -> Self {
        Self {
            status: run.status,
            lease_epoch: run.lease_epoch,
            cancel_requested: run.cancel_requested,
            workflow_id: run.workflow_id,
            version_id: run.version_id,
            event_id: run.event_id,
        }
    }
}

/// The checks of a commit that need nothing stored: the run and every step
/// written belong to the fenced run. Call it before the transaction.
pub fn check_commit_request(
    fence: Fence,
    run: Option<&WorkflowRun>,
    steps: &[StepRun],
) -> Result<(), StoreError> {
    let id = fence.run_id;
    if let Some(run) = run.filter(|run| run.id != id) {
        return Err(StoreError::Invalid(format!(
            "commit fenced on run {id} writes run {}",
            run.id
        )));
    }
    if let Some(step) = steps.iter().find(|s| s.run_id != id) {
        return Err(StoreError::Invalid(format!(
            "commit fenced on run {id} writes a step of run {}",
            step.run_id
        )));
    }
    Ok(())
}

/// The checks of a commit against the stored run, in its transaction: the
/// fence matches (epoch and status, and a finished run is never
/// rewritten), and the run written keeps its workflow, version and event.
pub fn check_fence(
    fence: Fence,
    stored: &RunState,
    run: Option<&RunState>,
) -> Result<(), StoreError> {
    let id = fence.run_id;
    if fence.status.is_terminal() {
        return Err(StoreError::conflict(
            "run",
            id,
            format!("a finished run ({}) is never rewritten", fence.status),
        ));
    }
    if stored.lease_epoch != fence.epoch || stored.status != fence.status {
        return Err(StoreError::conflict(
            "run",
            id,
            format!(
                "fence expects epoch {} and status {}, stored are epoch {} and status {}",
                fence.epoch, fence.status, stored.lease_epoch, stored.status
            ),
        ));
    }
    if let Some(run) = run {
        if (run.workflow_id, run.version_id, run.event_id)
            != (stored.workflow_id, stored.version_id, stored.event_id)
        {
            return Err(StoreError::Invalid(format!(
                "commit changes the workflow, version or event of run {id}"
            )));
        }
    }
    Ok(())
}

/// What the step rules read of a step attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StepState {
    /// The step's position in the run's version.
    pub index: u32,
    /// The attempt, from 1.
    pub attempt: u32,
    /// Its status.
    pub status: StepStatus,
}

impl From<&StepRun> for StepState {
    fn from(step: &StepRun) -> Self {
        Self {
            index: step.step_index,
            attempt: step.attempt,
            status: step.status,
        }
    }
}

/// The check of a commit's step attempts: none rewrites an attempt stored
/// in a terminal status, or one finished earlier in the same commit.
/// `stored_status` reads the stored status of attempt `(index, attempt)`;
/// its own failure is returned as the outer error.
pub fn check_steps<E>(
    run_id: RunId,
    steps: &[StepState],
    mut stored_status: impl FnMut(u32, u32) -> Result<Option<StepStatus>, E>,
) -> Result<Result<(), StoreError>, E> {
    for (i, step) in steps.iter().enumerate() {
        let key = (step.index, step.attempt);
        let earlier = steps[..i]
            .iter()
            .any(|s| (s.index, s.attempt) == key && s.status.is_terminal());
        if earlier || stored_status(key.0, key.1)?.is_some_and(StepStatus::is_terminal) {
            return Ok(Err(StoreError::conflict(
                "step",
                format!("{run_id}/{}/{}", key.0, key.1),
                "a finished step attempt is never rewritten",
            )));
        }
    }
    Ok(Ok(()))
}

/// Whether a commit that failed its checks was applied already: a retry
/// after a lost reply (same fence, same content) must succeed, not
/// conflict. It was applied if the stored run is under the fence's epoch,
/// the run written (if any) equals the stored one once merged, and every
/// step attempt written is stored as written. `stored_as_written(i)` says
/// whether the stored attempt of `steps[i]` equals the one this commit
/// writes; it is asked only for the last write of each attempt.
pub fn is_applied(
    fence: Fence,
    stored: &WorkflowRun,
    run: Option<&WorkflowRun>,
    steps: &[StepState],
    mut stored_as_written: impl FnMut(usize) -> bool,
) -> bool {
    // A fence naming a finished run never let a commit through.
    if fence.status.is_terminal() || stored.lease_epoch != fence.epoch {
        return false;
    }
    let run_applied = match run {
        Some(run) => {
            let mut merged = run.clone();
            merge_committed(&RunState::from(stored), &mut merged);
            merged == *stored
        }
        None => stored.status == fence.status,
    };
    run_applied
        && steps.iter().enumerate().all(|(i, step)| {
            let superseded = steps[i + 1..]
                .iter()
                .any(|later| (later.index, later.attempt) == (step.index, step.attempt));
            superseded || stored_as_written(i)
        })
}

/// Whether a commit's `run` must be changed by [`merge_committed`] before
/// it is written (rarely: only after a cancel request or a claim it did
/// not see), so a backend that keeps the serialized run can skip the copy.
#[must_use]
pub fn needs_merge(stored: &RunState, run: &RunState) -> bool {
    (stored.cancel_requested && !run.cancel_requested) || stored.lease_epoch != run.lease_epoch
}

/// Merges what a commit writes with what only the store may change: the
/// cancellation flag (set by any engine at any time; the owner's copy may
/// predate it) and the lease epoch (it belongs to claims alone). Returns
/// whether `run` changed.
pub fn merge_committed(stored: &RunState, run: &mut WorkflowRun) -> bool {
    let before = (run.cancel_requested, run.lease_epoch);
    run.cancel_requested |= stored.cancel_requested;
    run.lease_epoch = stored.lease_epoch;
    before != (run.cancel_requested, run.lease_epoch)
}

/// Whether `run` matches the filters of `query` (not its page bounds).
#[must_use]
pub fn run_matches(run: &WorkflowRun, query: &RunQuery) -> bool {
    query.workflow_id.is_none_or(|w| run.workflow_id == w)
        && query.status.is_none_or(|s| run.status == s)
        && query.event_id.is_none_or(|e| run.event_id == Some(e))
        && query.created_from.is_none_or(|t| run.created_at >= t)
        && query.created_until.is_none_or(|t| run.created_at < t)
}

/// Whether `event` matches the filters of `query` (not its page bounds).
#[must_use]
pub fn event_matches(event: &Event, query: &EventQuery) -> bool {
    query.workflow_id.is_none_or(|w| event.workflow_id == w)
        && query.trigger_id.is_none_or(|t| event.trigger_id == Some(t))
        && query.outcome.is_none_or(|o| event.outcome.kind() == o)
        && query.received_from.is_none_or(|t| event.received_at >= t)
        && query.received_until.is_none_or(|t| event.received_at < t)
}

/// The check of a trigger update against the stored trigger: a trigger
/// never moves to another workflow.
pub fn check_trigger_update(stored: &Trigger, trigger: &Trigger) -> Result<(), StoreError> {
    if stored.workflow_id != trigger.workflow_id {
        return Err(StoreError::conflict(
            "trigger",
            trigger.id,
            format!(
                "a trigger cannot move from workflow {} to {}",
                stored.workflow_id, trigger.workflow_id
            ),
        ));
    }
    Ok(())
}

/// The unique keys a trigger holds in its store: its name within its
/// workflow (unless empty, as for triggers stored before names existed),
/// and its webhook path. A store refuses a write that would give either to
/// two triggers.
#[must_use]
pub fn trigger_keys(trigger: &Trigger) -> (Option<&str>, Option<&str>) {
    let name = Some(trigger.name.as_str()).filter(|name| !name.is_empty());
    (name, trigger.webhook_path())
}

/// The `AlreadyExists` of a taken trigger name.
#[must_use]
pub fn name_taken(trigger: &Trigger) -> StoreError {
    StoreError::already_exists(
        "trigger name",
        format!("{:?} in workflow {}", trigger.name, trigger.workflow_id),
    )
}

/// The `AlreadyExists` of a taken webhook path.
#[must_use]
pub fn path_taken(path: &str) -> StoreError {
    StoreError::already_exists("webhook path", path)
}
