//! The unfinished runs, in memory.
//!
//! sled locks its database files, so one process alone opens a store, and
//! in it one writer thread applies every write to runs: what that thread
//! knows of the unfinished runs is the whole truth. It keeps them here,
//! each with its step attempts' statuses, and indexed by status (alone and
//! with its workflow) and by lease expiry. So:
//!
//! - a claim, a lease renewal or a fenced commit reads nothing from sled
//!   and decodes nothing: the fence and step checks run on this copy;
//! - a claim and a renewal, which need not be durable, write nothing to
//!   sled at all: the run's next durable write (its start, usually)
//!   carries them, and a crash loses them together with their claimer,
//!   as the contract allows;
//! - starting a run writes no index key, and claimable runs and runs by
//!   unfinished status are listed from here.
//!
//! On disk an unfinished run has an [`ACTIVE`](crate::keys::tag::ACTIVE)
//! index key; opening the store loads those runs and their attempts back.
//! Finished runs are not kept here: they leave with the write that
//! finishes them, and are read from sled like any record.
//!
//! Writes in a batch stage their changes in a [`Staged`] overlay, which
//! later writes of the same batch see; the writer thread applies the
//! overlay to the shared copy once the batch is applied to sled, before it
//! answers anyone, and drops it if the batch failed.

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap};
use std::ops::Bound;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use sled::IVec;
use taskforge_core::store::rules::{self, ClaimablePicker, SlotState, SlotUse};
use taskforge_core::{RunId, RunStatus, StepStatus, WorkflowId, WorkflowRun};

use crate::keys::{self, ID, TIME_MIN};

/// Maps keyed by run ids (UUIDs the engine makes, never chosen by whoever
/// sends a webhook), looked up on every write: hashed with foldhash rather
/// than std's SipHash. Concurrency keys, which come from run inputs, keep
/// std's DoS-resistant hasher.
type IdMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

type Id = [u8; ID];

/// A stored step attempt of an unfinished run.
#[derive(Debug, Clone)]
pub(crate) struct StoredStep {
    pub(crate) index: u32,
    pub(crate) attempt: u32,
    pub(crate) status: StepStatus,
    /// Its JSON, as stored.
    pub(crate) bytes: IVec,
}

/// An unfinished run as the store holds it.
#[derive(Debug, Clone)]
pub(crate) struct ActiveRun {
    /// The run, with any claim or renewal its sled record lacks.
    pub(crate) run: Arc<WorkflowRun>,
    /// The run's JSON as its record holds it (without `unsaved` changes).
    pub(crate) run_bytes: IVec,
    /// Its stored step attempts, by (index, attempt).
    pub(crate) steps: Arc<Vec<StoredStep>>,
    /// Whether `run` holds changes (a claim, a renewal) not written to
    /// sled yet: the run's next write to sled writes them.
    pub(crate) unsaved: bool,
}

impl ActiveRun {
    /// A run stored just now as `run_bytes`, with no attempts.
    pub(crate) fn new(run: Arc<WorkflowRun>, run_bytes: IVec) -> Self {
        Self {
            run,
            run_bytes,
            steps: Arc::new(Vec::new()),
            unsaved: false,
        }
    }

    /// The stored attempt `(index, attempt)`.
    pub(crate) fn step(&self, index: u32, attempt: u32) -> Option<&StoredStep> {
        self.steps
            .iter()
            .find(|s| (s.index, s.attempt) == (index, attempt))
    }

    /// Records that attempt `(index, attempt)` is stored as `bytes`, in
    /// `status`.
    pub(crate) fn set_step(&mut self, index: u32, attempt: u32, status: StepStatus, bytes: IVec) {
        let steps = Arc::make_mut(&mut self.steps);
        let step = StoredStep {
            index,
            attempt,
            status,
            bytes,
        };
        match steps.binary_search_by_key(&(index, attempt), |s| (s.index, s.attempt)) {
            Ok(i) => steps[i] = step,
            Err(i) => steps.insert(i, step),
        }
    }

    /// The run's record: its JSON with its attempts.
    pub(crate) fn record(&self) -> IVec {
        crate::record::compose(
            &self.run_bytes,
            self.steps.iter().map(|s| (s.index, s.attempt, &s.bytes)),
        )
    }
}

/// The unfinished runs and their in-memory indexes.
#[derive(Debug, Default)]
pub(crate) struct ActiveRuns {
    runs: IdMap<Id, ActiveRun>,
    /// `(status, run)`.
    by_status: BTreeSet<(u8, Id)>,
    /// `(workflow, status, run)`.
    by_workflow_status: BTreeSet<(Id, u8, Id)>,
    /// `(lease expiry, run)` of running runs; no lease sorts first.
    leases: BTreeSet<([u8; 8], Id)>,
    /// `(due time, run)` of parked runs that a time makes due
    /// ([`wake_key`]).
    wakes: BTreeSet<([u8; 8], Id)>,
    /// The runs of each concurrency key ([`rules::slot_use`]).
    keys: HashMap<String, KeyRuns>,
}

/// The unfinished runs of one concurrency key: holding a slot, waiting.
#[derive(Debug, Default)]
struct KeyRuns {
    holding: BTreeSet<Id>,
    waiting: BTreeSet<Id>,
}

impl KeyRuns {
    fn of(&self, used: SlotUse) -> &BTreeSet<Id> {
        match used {
            SlotUse::Holding => &self.holding,
            SlotUse::Waiting => &self.waiting,
        }
    }

    fn of_mut(&mut self, used: SlotUse) -> &mut BTreeSet<Id> {
        match used {
            SlotUse::Holding => &mut self.holding,
            SlotUse::Waiting => &mut self.waiting,
        }
    }
}

fn lease_key(run: &WorkflowRun) -> Option<[u8; 8]> {
    (run.status == RunStatus::Running).then(|| {
        run.lease
            .as_ref()
            .map_or(TIME_MIN, |l| keys::time(l.expires_at))
    })
}

/// When a parked run is due, for the wake index: its `wake_at`, or at once
/// with cancellation asked for ([`rules::is_due`]); `None` if it is not
/// parked, or waits for a signal alone.
fn wake_key(run: &WorkflowRun) -> Option<[u8; 8]> {
    if run.status != RunStatus::Waiting {
        return None;
    }
    if run.cancel_requested {
        return Some(TIME_MIN);
    }
    run.wake_at.map(keys::time)
}

impl ActiveRuns {
    /// The unfinished run `id`, if it is one.
    pub(crate) fn get(&self, id: &Id) -> Option<&ActiveRun> {
        self.runs.get(id)
    }

    /// Replaces what is kept of run `id`: `None` (or a finished run)
    /// removes it.
    pub(crate) fn set(&mut self, id: Id, run: Option<ActiveRun>) {
        // Most changes (a commit between two steps) keep the run's status
        // and lease: its index entries stay as they are.
        if let (Some(new), Some(old)) = (&run, self.runs.get_mut(&id)) {
            let same = keys::is_active(new.run.status)
                && new.run.status == old.run.status
                && new.run.workflow_id == old.run.workflow_id
                && lease_key(&new.run) == lease_key(&old.run)
                && wake_key(&new.run) == wake_key(&old.run)
                && rules::slot_use(&new.run) == rules::slot_use(&old.run);
            if same {
                *old = new.clone();
                return;
            }
        }
        if let Some(old) = self.runs.remove(&id) {
            let st = keys::status(old.run.status);
            self.by_status.remove(&(st, id));
            self.by_workflow_status
                .remove(&(old.run.workflow_id.to_bytes(), st, id));
            if let Some(lease) = lease_key(&old.run) {
                self.leases.remove(&(lease, id));
            }
            if let Some(due) = wake_key(&old.run) {
                self.wakes.remove(&(due, id));
            }
            if let Some((key, used)) = rules::slot_use(&old.run) {
                if let Some(runs) = self.keys.get_mut(key) {
                    runs.of_mut(used).remove(&id);
                    if runs.holding.is_empty() && runs.waiting.is_empty() {
                        self.keys.remove(key);
                    }
                }
            }
        }
        let Some(new) = run.filter(|r| keys::is_active(r.run.status)) else {
            return;
        };
        let st = keys::status(new.run.status);
        self.by_status.insert((st, id));
        self.by_workflow_status
            .insert((new.run.workflow_id.to_bytes(), st, id));
        if let Some(lease) = lease_key(&new.run) {
            self.leases.insert((lease, id));
        }
        if let Some(due) = wake_key(&new.run) {
            self.wakes.insert((due, id));
        }
        if let Some((key, used)) = rules::slot_use(&new.run) {
            self.keys
                .entry(key.to_owned())
                .or_default()
                .of_mut(used)
                .insert(id);
        }
        self.runs.insert(id, new);
    }

    /// The ids of the unfinished runs of concurrency key `key` (holding a
    /// slot or waiting), in id order.
    pub(crate) fn key_ids(&self, key: &str) -> Vec<Id> {
        self.keys.get(key).map_or_else(Vec::new, |runs| {
            runs.holding.union(&runs.waiting).copied().collect()
        })
    }

    /// The runs of `key` that take part in it as `used`, in id order.
    fn key_runs(&self, key: &str, used: SlotUse) -> impl DoubleEndedIterator<Item = &Id> + '_ {
        self.keys
            .get(key)
            .into_iter()
            .flat_map(move |runs| runs.of(used).iter())
    }

    /// The ids of unfinished runs in `status` (of `workflow`, if given),
    /// in id order.
    pub(crate) fn ids(&self, status: RunStatus, workflow: Option<WorkflowId>) -> Vec<Id> {
        let st = keys::status(status);
        match workflow {
            Some(wf) => {
                let wf = wf.to_bytes();
                self.by_workflow_status
                    .range((wf, st, [0; ID])..=(wf, st, [0xff; ID]))
                    .map(|(_, _, id)| *id)
                    .collect()
            }
            None => self
                .by_status
                .range((st, [0; ID])..=(st, [0xff; ID]))
                .map(|(_, id)| *id)
                .collect(),
        }
    }

    /// Up to `limit` runs a worker may claim at `now`, oldest first: the
    /// claimable queued runs, the running runs whose lease lapsed at or
    /// before `now` and the parked runs due by then, that their limits allow ([`rules::ClaimablePicker`];
    /// `starts` reads a rate-limited workflow's recorded start times).
    pub(crate) fn claimable(
        &self,
        now: DateTime<Utc>,
        limit: usize,
        starts: impl Fn(WorkflowId) -> Vec<DateTime<Utc>>,
    ) -> Vec<RunId> {
        let claimable = |id: &Id| {
            self.runs
                .get(id)
                .is_some_and(|r| rules::can_claim(&r.run, now))
        };
        let lapsed_until = (keys::time(now), [0xff; ID]);
        // The indexes are kept to the microsecond: check the run itself.
        let lapsed: BTreeSet<Id> = self
            .leases
            .range(..=lapsed_until)
            .chain(self.wakes.range(..=lapsed_until))
            .map(|(_, id)| *id)
            .filter(claimable)
            .collect();
        let queued = keys::status(RunStatus::Queued);
        let mut queued = self
            .by_status
            .range((queued, [0; ID])..=(queued, [0xff; ID]))
            .map(|(_, id)| *id)
            .filter(claimable)
            .peekable();
        let mut lapsed = lapsed.into_iter().peekable();
        let mut picker = ClaimablePicker::new();
        let mut ids = Vec::with_capacity(limit.min(1_024));
        while ids.len() < limit {
            let next = match (queued.peek(), lapsed.peek()) {
                (Some(q), Some(l)) if l < q => lapsed.next(),
                (Some(_), _) => queued.next(),
                (None, _) => lapsed.next(),
            };
            let Some(id) = next else { break };
            let Some(active) = self.runs.get(&id) else {
                continue;
            };
            let run = &active.run;
            let key = run.limits.as_deref().map(|l| l.key.as_str());
            let picked = picker.pick(
                run,
                now,
                || {
                    key.is_some_and(|key| {
                        self.key_runs(key, SlotUse::Waiting)
                            .filter(|other| **other > id)
                            .any(|other| {
                                self.runs
                                    .get(other)
                                    .is_some_and(|o| !o.run.cancel_requested)
                            })
                    })
                },
                |key| self.keys.get(key).map_or(0, |runs| runs.holding.len()),
                &starts,
            );
            if picked {
                ids.push(RunId::from_bytes(id));
            }
        }
        ids
    }
}

/// The changes a batch's writes make to the unfinished runs, seen by the
/// later writes of the batch, applied once the batch is in sled.
#[derive(Debug)]
pub(crate) struct Staged<'a> {
    base: &'a ActiveRuns,
    changes: RefCell<IdMap<Id, Option<ActiveRun>>>,
    /// The runs of each concurrency key that the batch changed (as the
    /// shared copy had them, or as staged), so a claim's books need not
    /// look at the batch's other changes.
    changed_keys: RefCell<HashMap<String, BTreeSet<Id>>>,
}

impl<'a> Staged<'a> {
    pub(crate) fn new(base: &'a ActiveRuns) -> Self {
        Self {
            base,
            changes: RefCell::new(IdMap::default()),
            changed_keys: RefCell::new(HashMap::new()),
        }
    }

    /// The unfinished run `id` as the batch left it so far.
    pub(crate) fn get(&self, id: &Id) -> Option<ActiveRun> {
        match self.changes.borrow().get(id) {
            Some(staged) => staged.clone(),
            None => self.base.get(id).cloned(),
        }
    }

    /// Stages run `id` as `run`; `None`, or a finished run, removes it.
    pub(crate) fn set(&self, id: Id, run: Option<ActiveRun>) {
        let run = run.filter(|r| keys::is_active(r.run.status));
        // A run whose place in its key's books moves (inserted, claimed,
        // finished) is noted under its key, old and new; the others keep
        // theirs, as the shared copy has it.
        let was = self.base.get(&id).and_then(|a| rules::slot_use(&a.run));
        let now = run.as_ref().and_then(|a| rules::slot_use(&a.run));
        if was != now {
            let mut keyed = self.changed_keys.borrow_mut();
            for (key, _) in was.into_iter().chain(now) {
                match keyed.get_mut(key) {
                    Some(ids) => {
                        ids.insert(id);
                    }
                    None => {
                        keyed.insert(key.to_owned(), BTreeSet::from([id]));
                    }
                }
            }
        }
        self.changes.borrow_mut().insert(id, run);
    }

    /// What to apply once the batch committed.
    pub(crate) fn into_changes(self) -> IdMap<Id, Option<ActiveRun>> {
        self.changes.into_inner()
    }

    /// What [`rules::check_slot`] reads of `run`'s key, as the batch left
    /// it so far (`starts` is left for the caller, which reads sled).
    pub(crate) fn slot_state(&self, run: &WorkflowRun, now: DateTime<Utc>) -> SlotState {
        let mut state = SlotState::default();
        let Some(limits) = run.limits.as_deref() else {
            return state;
        };
        let key = limits.key.as_str();
        let me = run.id.to_bytes();
        let changes = self.changes.borrow();
        let base = self.base.keys.get(key);
        // The shared copy's books, corrected for the runs of the key this
        // batch changed.
        let mut holding = base.map_or(0, |k| k.holding.len());
        let mut staged_waiting = BTreeSet::new();
        let keyed = self.changed_keys.borrow();
        let empty = BTreeSet::new();
        let moved = keyed.get(key).unwrap_or(&empty);
        for (id, staged) in moved
            .iter()
            .filter_map(|id| changes.get(id).map(|s| (id, s)))
        {
            if base.is_some_and(|k| k.holding.contains(id)) {
                holding -= 1;
            }
            match staged.as_ref().and_then(|s| rules::slot_use(&s.run)) {
                Some((k, SlotUse::Holding)) if k == key && *id != me => holding += 1,
                Some((k, SlotUse::Waiting)) if k == key => {
                    staged_waiting.insert(*id);
                }
                _ => {}
            }
        }
        if base.is_some_and(|k| k.holding.contains(&me)) && !moved.contains(&me) {
            holding -= 1;
        }
        state.holding = holding;
        let get = |id: &Id| match changes.get(id) {
            Some(staged) => staged.as_ref().map(|s| Arc::clone(&s.run)),
            None => self.base.get(id).map(|a| Arc::clone(&a.run)),
        };
        let base_waiting = base.map_or(&empty, |k| &k.waiting);
        let unchanged = |id: &&Id| !moved.contains(*id);
        let free = limits
            .max
            .map_or(usize::MAX, |max| (max as usize).saturating_sub(holding));
        // Only whether `free` runs wait ahead matters: with fewer waiting
        // in all, none need be looked at.
        let ahead = if base_waiting.len() + staged_waiting.len() < free {
            0
        } else {
            base_waiting
                .range(..me)
                .filter(unchanged)
                .chain(staged_waiting.range(..me))
                .filter(|id| get(id).is_some_and(|r| rules::waits_ahead(&r, now)))
                .take(free)
                .count()
        };
        let after = (Bound::Excluded(me), Bound::Unbounded);
        let behind = limits.debounce
            && base_waiting
                .range(after)
                .filter(unchanged)
                .chain(staged_waiting.range(after))
                .any(|id| get(id).is_some_and(|r| !r.cancel_requested));
        state.ahead = ahead;
        state.behind = behind;
        state
    }
}
