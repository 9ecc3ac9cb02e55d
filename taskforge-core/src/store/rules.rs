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
use crate::concurrency::{RateLimit, RunLimits};
use crate::error::store::StoreError;
use crate::event::Event;
use crate::id::{EventId, RunId, VersionId, WorkflowId};
use crate::run::{Fence, Lease, RunStatus, Signal, StepRun, StepStatus, WorkflowRun};
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

/// Whether a [`Waiting`](RunStatus::Waiting) (parked) run is due at
/// `now`: its [`wake_at`](WorkflowRun::wake_at) has passed (a signal that
/// arrives sets it, see [`signal`]), or cancellation was asked for (so it
/// is cancelled at once, not when it would have woken); and it holds no
/// lease, or one that lapsed at or before `now`. `false` for a run in any
/// other status.
#[must_use]
pub fn is_due(run: &WorkflowRun, now: DateTime<Utc>) -> bool {
    run.status == RunStatus::Waiting
        && (run.cancel_requested || run.wake_at.is_some_and(|at| at <= now))
        && run
            .lease
            .as_ref()
            .is_none_or(|lease| lease.expires_at <= now)
}

/// Whether a worker may claim `run` at `now`: [`is_claimable`] (queued, or
/// running with no live lease) or [`is_due`] (parked and due). This is the
/// test of [`claim`] and what `list_claimable` lists (before the limits).
#[must_use]
pub fn can_claim(run: &WorkflowRun, now: DateTime<Utc>) -> bool {
    is_claimable(run.status, run.lease.as_ref(), now) || is_due(run, now)
}

/// The run after a claim by `owner` at `now` until `expires_at`: the new
/// lease and the next epoch; `Conflict` if it is not claimable.
///
/// For a run that [`needs_slot`], a backend calls [`claim_with_slot`]
/// instead; this refuses it (`Invalid`), so that a backend cannot skip the
/// limits unnoticed.
pub fn claim(
    stored: &WorkflowRun,
    owner: &str,
    now: DateTime<Utc>,
    expires_at: DateTime<Utc>,
) -> Result<WorkflowRun, StoreError> {
    claim_with_slot(stored, owner, now, expires_at, None).map(|claimed| claimed.run)
}

/// What [`claim_with_slot`] returns.
#[derive(Debug, Clone, PartialEq)]
pub struct Claimed {
    /// The claimed run, to store.
    pub run: WorkflowRun,
    /// The workflow's new start times, to store, when the run counted
    /// against its rate limit ([`record_start`]).
    pub starts: Option<Vec<DateTime<Utc>>>,
}

/// The run after a claim by `owner` at `now` until `expires_at`, with the
/// limits of [`concurrency`](crate::concurrency) applied: for a run that
/// [`needs_slot`], `slot` is what the backend read of its key and its
/// workflow's recent starts in the claim's atomic step, and the claim
/// succeeds only as [`check_slot`] allows. Returns the claimed run (with
/// `cancel_requested` set if a newer run of its debounced key supersedes
/// it, and [`holds_slot`](crate::RunLimits::holds_slot) if it took a slot),
/// and the workflow's new start times to store when the run counted
/// against a rate limit ([`record_start`]).
///
/// `Conflict` if the run is not claimable or `check_slot` refuses it;
/// `Invalid` if it needs a slot and `slot` is `None`.
pub fn claim_with_slot(
    stored: &WorkflowRun,
    owner: &str,
    now: DateTime<Utc>,
    expires_at: DateTime<Utc>,
    slot: Option<&SlotState>,
) -> Result<Claimed, StoreError> {
    let id = stored.id;
    let claimable = is_claimable(stored.status, stored.lease.as_ref(), now);
    let granted = match (claimable && needs_slot(stored), slot) {
        (false, _) => None,
        (true, Some(slot)) => Some(check_slot(stored, now, slot)?),
        (true, None) => {
            return Err(StoreError::Invalid(format!(
                "run {id} has limits: its claim needs the state of its key (rules::claim_with_slot)"
            )))
        }
    };
    let mut claimed = claim_unchecked(stored, owner, now, expires_at)?;
    let starts = match granted {
        Some(SlotGrant::Take { starts }) => {
            if let Some(limits) = claimed.limits.as_mut() {
                let limits = std::sync::Arc::make_mut(limits);
                limits.holds_slot = limits.slot_key().is_some();
            }
            starts
        }
        Some(SlotGrant::Superseded) => {
            claimed.cancel_requested = true;
            None
        }
        None => None,
    };
    Ok(Claimed {
        run: claimed,
        starts,
    })
}

/// A claim's lease and epoch, without the limits.
fn claim_unchecked(
    stored: &WorkflowRun,
    owner: &str,
    now: DateTime<Utc>,
    expires_at: DateTime<Utc>,
) -> Result<WorkflowRun, StoreError> {
    let id = stored.id;
    if !can_claim(stored, now) {
        let reason = match (&stored.lease, stored.wake_at) {
            (Some(lease), _) if !stored.status.is_terminal() => {
                format!("leased by {:?} until {}", lease.owner, lease.expires_at)
            }
            (None, Some(at)) if stored.status == RunStatus::Waiting => {
                format!("the run is waiting until {at}")
            }
            (None, None) if stored.status == RunStatus::Waiting => {
                "the run is waiting for a signal".to_owned()
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

/// How an unfinished run takes part in its key (see [`slot_use`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SlotUse {
    /// A claim gave it one of its key's slots
    /// ([`holds_slot`](crate::RunLimits::holds_slot)) and it has not
    /// finished: it holds the slot, also while a later owner resumes it.
    Holding,
    /// Never claimed: it waits for a slot.
    Waiting,
}

/// The key `run` takes part in and how, or `None`: an unfinished run whose
/// [`limits`](WorkflowRun::limits) have a [slot key](crate::RunLimits::slot_key)
/// (a concurrency maximum or a debounce window) waits for a slot until it
/// is first claimed, and holds one from the claim that gave it one until
/// it finishes. (A run claimed only to be cancelled does neither.) A
/// backend keeps, per key, the runs holding and the runs waiting (or can
/// count them), and updates them whenever a run is inserted, claimed or
/// finished.
#[must_use]
pub fn slot_use(run: &WorkflowRun) -> Option<(&str, SlotUse)> {
    if run.status.is_terminal() {
        return None;
    }
    let limits = run.limits.as_deref()?;
    let key = limits.slot_key()?;
    if limits.holds_slot {
        Some((key, SlotUse::Holding))
    } else if run.lease_epoch == 0 {
        Some((key, SlotUse::Waiting))
    } else {
        None
    }
}

/// Whether claiming `run` must first pass its limits ([`check_slot`]): it
/// has [`limits`](WorkflowRun::limits), is queued, was never claimed
/// (`lease_epoch == 0`), and no cancellation was asked for. A run claimed
/// before holds its slot already (a new owner resuming it needs no other),
/// and a run to be cancelled is claimed only to be cancelled, so neither
/// is checked.
#[must_use]
pub fn needs_slot(run: &WorkflowRun) -> bool {
    run.limits.is_some()
        && run.lease_epoch == 0
        && !run.cancel_requested
        && run.status == RunStatus::Queued
}

/// Whether `run` may not start yet at `now`: its debounce window has not
/// ended ([`RunLimits::not_before`](crate::RunLimits::not_before)).
#[must_use]
pub fn not_yet(run: &WorkflowRun, now: DateTime<Utc>) -> bool {
    run.limits
        .as_ref()
        .and_then(|l| l.not_before)
        .is_some_and(|at| at > now)
}

/// Whether `other`, a waiting run of the same key created before the run
/// being claimed, is ahead of it in the key's queue at `now`: no
/// cancellation was asked for it and its debounce window has ended.
#[must_use]
pub fn waits_ahead(other: &WorkflowRun, now: DateTime<Utc>) -> bool {
    !other.cancel_requested && !not_yet(other, now)
}

/// What a backend reads for [`check_slot`], in the claim's atomic step
/// (under the lock, transaction or single writer that orders it with the
/// other claims of the key and of the workflow).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SlotState {
    /// How many other runs of the run's key hold a slot
    /// ([`SlotUse::Holding`]). Read for a run with a maximum.
    pub holding: usize,
    /// How many waiting runs of the key are ahead of it: created before it
    /// (lower id) and [`waits_ahead`]. Read for a run with a maximum. Only
    /// whether it reaches the key's free slots (`max - holding`) matters,
    /// so a backend may stop counting there, and may give 0 when fewer
    /// runs than that wait in all.
    pub ahead: usize,
    /// Whether a newer waiting run of the key, with no cancellation asked
    /// for, exists. Read for a debounced run.
    pub behind: bool,
    /// The start times recorded for the run's workflow by [`record_start`],
    /// oldest first. Read for a run with a rate limit.
    pub starts: Vec<DateTime<Utc>>,
}

/// What [`check_slot`] allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SlotGrant {
    /// The run takes a slot of its key; with a rate limit, `starts` are the
    /// workflow's start times to store, this one included.
    Take {
        /// The new start times, for a rate-limited run.
        starts: Option<Vec<DateTime<Utc>>>,
    },
    /// A newer run of its debounced key supersedes it: it is claimed with
    /// `cancel_requested` set, so its new owner cancels it at once
    /// without running a step (and without waiting for a slot).
    Superseded,
}

/// Whether a run that [`needs_slot`] may be claimed at `now`, given what
/// its backend read of its key and workflow (`state`). In order:
///
/// 1. its debounce window must have ended (`Conflict` before);
/// 2. a debounced run with a newer waiting run of its key is
///    [`Superseded`](SlotGrant::Superseded);
/// 3. with a maximum, fewer than `max` other runs of the key may hold a
///    slot, and the runs waiting ahead of it must not fill the slots that
///    are free (`Conflict`): a key's runs start in creation order;
/// 4. with a rate limit, fewer than `runs` starts may be recorded in the
///    window ending at `now` (`Conflict`).
pub fn check_slot(
    run: &WorkflowRun,
    now: DateTime<Utc>,
    state: &SlotState,
) -> Result<SlotGrant, StoreError> {
    let Some(limits) = run.limits.as_deref() else {
        return Ok(SlotGrant::Take { starts: None });
    };
    let refuse = |reason: String| Err(StoreError::conflict("run", run.id, reason));
    if let Some(at) = limits.not_before.filter(|at| *at > now) {
        return refuse(format!("its debounce window ends at {at}"));
    }
    if limits.debounce && state.behind {
        return Ok(SlotGrant::Superseded);
    }
    if let Some(max) = limits.max {
        let max = max as usize;
        if state.holding >= max {
            return refuse(format!(
                "key {:?} has {} of {max} slots taken",
                limits.key, state.holding
            ));
        }
        if state.ahead >= max - state.holding {
            return refuse(format!(
                "older runs of key {:?} wait for its free slots first",
                limits.key
            ));
        }
    }
    let starts = match &limits.rate {
        Some(rate) => {
            if rate_room(rate, &state.starts, now) == 0 {
                return refuse(format!(
                    "the workflow's rate limit of {} runs per {} ms is reached",
                    rate.runs,
                    rate.per.as_millis()
                ));
            }
            Some(record_start(rate, &state.starts, now))
        }
        None => None,
    };
    Ok(SlotGrant::Take { starts })
}

/// How many more runs may start at `now` under `rate`, given the start
/// times recorded (`starts`): `runs` minus the starts in the window
/// `(now - per, now]`.
#[must_use]
pub fn rate_room(rate: &RateLimit, starts: &[DateTime<Utc>], now: DateTime<Utc>) -> usize {
    let since = now
        .checked_sub_signed(rate.window())
        .unwrap_or(DateTime::<Utc>::MIN_UTC);
    let recent = starts.iter().filter(|&&at| at > since && at <= now).count();
    (rate.runs as usize).saturating_sub(recent)
}

/// The start times to store after a run started at `now` under `rate`:
/// `starts` with `now` added, in order, keeping only the newest `runs` and
/// none that left the window, so the record stays small.
#[must_use]
pub fn record_start(
    rate: &RateLimit,
    starts: &[DateTime<Utc>],
    now: DateTime<Utc>,
) -> Vec<DateTime<Utc>> {
    let since = now
        .checked_sub_signed(rate.window())
        .unwrap_or(DateTime::<Utc>::MIN_UTC);
    let mut kept: Vec<DateTime<Utc>> = starts.iter().copied().filter(|&at| at > since).collect();
    kept.push(now);
    kept.sort_unstable();
    let excess = kept.len().saturating_sub(rate.runs as usize);
    kept.drain(..excess);
    kept
}

/// Decides, run by run, which runs `list_claimable` lists, so that it
/// lists no run a claim would refuse for its limits (a dispatcher that
/// kept trying those would spin). Offer it the claimable runs (by status
/// and lease) oldest first; it keeps, per key and per workflow, what the
/// runs offered before used up, reading a key's holders and a workflow's
/// starts only when it first meets them.
#[derive(Debug, Default)]
pub struct ClaimablePicker {
    /// Per key (by its hash under `hasher`, so no key is copied; seeded
    /// afresh for each listing, so two keys sharing a hash is a one-off
    /// of negligible odds, which would only leave a run for the next
    /// look): the runs holding a slot, and the waiting runs offered so far
    /// (each of them is ahead of the next, listed or not).
    keys: std::collections::HashMap<u64, (usize, usize)>,
    hasher: std::collections::hash_map::RandomState,
    /// Per rate-limited workflow: its recorded starts, and the runs listed
    /// so far.
    rates: std::collections::HashMap<WorkflowId, (Vec<DateTime<Utc>>, usize)>,
}

impl ClaimablePicker {
    /// An empty picker, for one listing.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether to list `run` (offered oldest first, each claimable by
    /// status and lease at `now`). For a run that [`needs_slot`]: it is
    /// listed once its debounce window ended, if it is superseded
    /// (`behind` says whether a newer waiting run of its debounced key
    /// exists), or if its key has a free slot not taken by a run offered
    /// before and its workflow's rate limit has a start left. `holding`
    /// counts the runs holding a slot of a key, `starts` reads a
    /// workflow's recorded start times.
    pub fn pick(
        &mut self,
        run: &WorkflowRun,
        now: DateTime<Utc>,
        behind: impl FnOnce() -> bool,
        holding: impl FnOnce(&str) -> usize,
        starts: impl FnOnce(WorkflowId) -> Vec<DateTime<Utc>>,
    ) -> bool {
        let limits = run.limits.as_deref().filter(|_| needs_slot(run));
        self.pick_limits(run.workflow_id, limits, now, behind, holding, starts)
    }

    /// [`pick`](Self::pick), for a backend that reads a run's limits apart
    /// from its record: `limits` are those of a run of `workflow_id` that
    /// [`needs_slot`], `None` for any other run (which is listed).
    pub fn pick_limits(
        &mut self,
        workflow_id: WorkflowId,
        limits: Option<&RunLimits>,
        now: DateTime<Utc>,
        behind: impl FnOnce() -> bool,
        holding: impl FnOnce(&str) -> usize,
        starts: impl FnOnce(WorkflowId) -> Vec<DateTime<Utc>>,
    ) -> bool {
        let Some(limits) = limits else {
            return true;
        };
        if limits.not_before.is_some_and(|at| at > now) {
            return false;
        }
        let mut room = true;
        if let Some(max) = limits.max {
            let hash = std::hash::BuildHasher::hash_one(&self.hasher, &limits.key);
            let (held, ahead) = self
                .keys
                .entry(hash)
                .or_insert_with(|| (holding(&limits.key), 0));
            // As in check_slot, with this run's own maximum (runs of one
            // key may carry different ones): every run waiting ahead
            // counts, listed or not.
            room = *held + *ahead < max as usize;
            *ahead += 1;
        }
        if limits.debounce && behind() {
            return true;
        }
        if !room {
            return false;
        }
        if let Some(rate) = &limits.rate {
            let (recorded, listed) = self
                .rates
                .entry(workflow_id)
                .or_insert_with(|| (starts(workflow_id), 0));
            if rate_room(rate, recorded, now) <= *listed {
                return false;
            }
            *listed += 1;
        }
        true
    }
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

/// The run after `signal` arrived: the signal appended to its
/// [`signals`](WorkflowRun::signals), and, if it is parked
/// ([`Waiting`](RunStatus::Waiting)), due at once: its `wake_at` becomes
/// the signal's `received_at` if that is earlier (any signal wakes a
/// parked run; its worker decides whether a wait step receives it).
/// `Conflict` if the run is finished; `Invalid` if it holds
/// [`MAX_SIGNALS_PER_RUN`](crate::limits::MAX_SIGNALS_PER_RUN) signals
/// already. Nothing else changes: no lease is needed, and the run's owner
/// (if any) keeps its lease.
pub fn signal(stored: &WorkflowRun, signal: &Signal) -> Result<WorkflowRun, StoreError> {
    if stored.status.is_terminal() {
        return Err(StoreError::conflict(
            "run",
            stored.id,
            format!(
                "the run is finished ({}): it takes no signal",
                stored.status
            ),
        ));
    }
    if stored.signals.len() >= crate::run::MAX_SIGNALS_PER_RUN {
        return Err(StoreError::Invalid(format!(
            "run {} holds {} signals, the most a run may",
            stored.id,
            stored.signals.len()
        )));
    }
    let mut signalled = stored.clone();
    signalled.signals.push(signal.clone());
    if signalled.status == RunStatus::Waiting {
        signalled.wake_at = Some(
            signalled
                .wake_at
                .map_or(signal.received_at, |at| at.min(signal.received_at)),
        );
    }
    Ok(signalled)
}

/// Whether a commit's `run` must be changed by [`merge_signals`] before it
/// is written: the store holds signals its writer did not see.
#[must_use]
pub fn needs_signal_merge(stored: &[Signal], run: &WorkflowRun) -> bool {
    stored.len() != run.signals.len()
}

/// Merges the signals stored with a run into what a commit writes: only
/// [`signal`] adds signals (a commit's copy may predate some), so the
/// stored ones are kept. A run parked by this commit whose writer did not
/// see every stored signal is due at once (its `wake_at` becomes the
/// earliest unseen signal's `received_at` if that is earlier), so a signal
/// that arrived while its worker was parking it is not left waiting.
/// Returns whether `run` changed.
pub fn merge_signals(stored: &[Signal], run: &mut WorkflowRun) -> bool {
    if !needs_signal_merge(stored, run) {
        return false;
    }
    let seen = run.signals.len();
    run.signals = stored.to_vec();
    if run.status == RunStatus::Waiting {
        if let Some(first) = stored
            .get(seen..)
            .and_then(|new| new.iter().map(|s| s.received_at).min())
        {
            run.wake_at = Some(run.wake_at.map_or(first, |at| at.min(first)));
        }
    }
    true
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
            merge_signals(&stored.signals, &mut merged);
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
        && query
            .concurrency_key
            .as_deref()
            .is_none_or(|key| slot_use(run).is_some_and(|(k, _)| k == key))
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
