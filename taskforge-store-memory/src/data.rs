//! Events and runs: the hot state, behind one lock because an event and the
//! run it starts are written together.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono::{DateTime, Utc};
use taskforge_core::store::rules::{
    self, ClaimablePicker, RunState, SlotState, SlotUse, StepState,
};
use taskforge_core::store::{EventInsert, Fence, StoreError};
use taskforge_core::{
    Event, EventId, EventQuery, Order, Page, RunId, RunQuery, RunStatus, Signal, StepRun,
    TriggerId, WorkflowId, WorkflowRun,
};

use crate::page::{bounds, Pager};

const MIN_RUN: RunId = RunId::from_bytes([0; 16]);
const MAX_RUN: RunId = RunId::from_bytes([0xff; 16]);
const MIN_EVENT: EventId = EventId::from_bytes([0; 16]);
const MAX_EVENT: EventId = EventId::from_bytes([0xff; 16]);

/// A run and its step attempts, kept sorted by `(step_index, attempt)`.
#[derive(Debug)]
struct RunEntry {
    run: WorkflowRun,
    steps: Vec<StepRun>,
}

impl RunEntry {
    fn step_position(&self, index: u32, attempt: u32) -> Result<usize, usize> {
        self.steps
            .binary_search_by_key(&(index, attempt), |s| (s.step_index, s.attempt))
    }
}

#[derive(Debug, Default)]
pub(crate) struct Data {
    events: BTreeMap<EventId, Event>,
    events_by_workflow: BTreeSet<(WorkflowId, EventId)>,
    events_by_trigger: BTreeSet<(TriggerId, EventId)>,
    /// Dedup keys per workflow, so a lookup by `&str` needs no allocation.
    dedup: HashMap<WorkflowId, HashMap<String, EventId>>,
    runs: BTreeMap<RunId, RunEntry>,
    runs_by_workflow: BTreeSet<(WorkflowId, RunId)>,
    runs_by_status: BTreeSet<(RunStatus, RunId)>,
    runs_by_workflow_status: BTreeSet<(WorkflowId, RunStatus, RunId)>,
    runs_by_event: BTreeSet<(EventId, RunId)>,
    /// Parked runs that wake at a time, by it ([`wake_key`]).
    runs_by_wake: BTreeSet<(DateTime<Utc>, RunId)>,
    /// The unfinished runs of each concurrency key ([`rules::slot_use`]).
    keys: HashMap<String, KeyRuns>,
    /// The recorded start times of each rate-limited workflow.
    rates: HashMap<WorkflowId, Vec<DateTime<Utc>>>,
}

/// The unfinished runs of one concurrency key.
#[derive(Debug, Default)]
struct KeyRuns {
    holding: BTreeSet<RunId>,
    waiting: BTreeSet<RunId>,
}

impl KeyRuns {
    fn set(&mut self, id: RunId, used: Option<SlotUse>) {
        self.holding.remove(&id);
        self.waiting.remove(&id);
        match used {
            Some(SlotUse::Holding) => self.holding.insert(id),
            Some(SlotUse::Waiting) => self.waiting.insert(id),
            None => false,
        };
    }

    fn is_empty(&self) -> bool {
        self.holding.is_empty() && self.waiting.is_empty()
    }
}

/// When parked `run` is due, for the wake index: its `wake_at`, or at once
/// with cancellation asked for ([`rules::is_due`]); `None` if it is not
/// parked or waits for a signal alone.
fn wake_key(run: &WorkflowRun) -> Option<DateTime<Utc>> {
    if run.status != RunStatus::Waiting {
        return None;
    }
    if run.cancel_requested {
        return Some(DateTime::<Utc>::MIN_UTC);
    }
    run.wake_at
}

/// Moves run `id` in the books of its key (`keys`) from how `old` took
/// part in it to how `new` does.
fn rekey(
    keys: &mut HashMap<String, KeyRuns>,
    id: RunId,
    old: Option<(&str, SlotUse)>,
    new: Option<(&str, SlotUse)>,
) {
    if old == new {
        return;
    }
    if let (Some((from, _)), Some((to, used))) = (old, new) {
        if from == to {
            // A claim: from waiting to holding, in one key's entry.
            if let Some(runs) = keys.get_mut(to) {
                runs.set(id, Some(used));
                return;
            }
        }
    }
    if let Some((key, _)) = old {
        if let Some(runs) = keys.get_mut(key) {
            runs.set(id, None);
            if runs.is_empty() {
                keys.remove(key);
            }
        }
    }
    if let Some((key, used)) = new {
        match keys.get_mut(key) {
            Some(runs) => runs.set(id, Some(used)),
            None => keys.entry(key.to_owned()).or_default().set(id, Some(used)),
        }
    }
}

/// Whether a worker may claim `run` at `now`, by the contract's rule.
fn claimable(run: &WorkflowRun, now: DateTime<Utc>) -> bool {
    rules::can_claim(run, now)
}

impl Data {
    pub(crate) fn counts(&self) -> (usize, usize) {
        (self.events.len(), self.runs.len())
    }

    // ----- events -----

    /// Stores `event` and `run` unless the event is a duplicate. Checks the
    /// dedup key before the ids, so a caller retrying the very same event
    /// learns it is stored (`Duplicate`) rather than `AlreadyExists`.
    pub(crate) fn insert_event(
        &mut self,
        event: Event,
        run: Option<WorkflowRun>,
    ) -> Result<EventInsert, StoreError> {
        if let Some(key) = &event.dedup_key {
            if let Some(id) = self
                .dedup
                .get(&event.workflow_id)
                .and_then(|keys| keys.get(key.as_str()))
            {
                let stored = self.events.get(id).ok_or_else(|| {
                    StoreError::backend("memory", format!("dedup index names missing event {id}"))
                })?;
                return Ok(EventInsert::Duplicate(Box::new(stored.clone())));
            }
        }
        if self.events.contains_key(&event.id) {
            return Err(StoreError::already_exists("event", event.id));
        }
        if let Some(run) = &run {
            if self.runs.contains_key(&run.id) {
                return Err(StoreError::already_exists("run", run.id));
            }
        }
        // Nothing below can fail: the event and its run land together.
        if let Some(run) = run {
            self.put_run(run);
        }
        if let Some(key) = &event.dedup_key {
            self.dedup
                .entry(event.workflow_id)
                .or_default()
                .insert(key.clone(), event.id);
        }
        self.events_by_workflow
            .insert((event.workflow_id, event.id));
        if let Some(trigger_id) = event.trigger_id {
            self.events_by_trigger.insert((trigger_id, event.id));
        }
        self.events.insert(event.id, event);
        Ok(EventInsert::Inserted)
    }

    pub(crate) fn event(&self, id: EventId) -> Result<&Event, StoreError> {
        self.events
            .get(&id)
            .ok_or_else(|| StoreError::not_found("event", id))
    }

    pub(crate) fn event_by_dedup_key(&self, workflow_id: WorkflowId, key: &str) -> Option<&Event> {
        self.dedup
            .get(&workflow_id)
            .and_then(|keys| keys.get(key))
            .and_then(|id| self.events.get(id))
    }

    pub(crate) fn list_events(&self, q: &EventQuery) -> Page<Event, EventId> {
        let mut pager = Pager::new(q.limit);
        let accept = |id: EventId| {
            let event = self.events.get(&id)?;
            rules::event_matches(event, q).then_some(event)
        };
        // A trigger belongs to one workflow, so its index is the narrower.
        if let Some(trigger_id) = q.trigger_id {
            let range = bounds(q.order, q.after, MIN_EVENT, MAX_EVENT, |id| {
                (trigger_id, id)
            });
            pager.fill(&self.events_by_trigger, range, q.order, |k| k.1, accept);
        } else if let Some(workflow_id) = q.workflow_id {
            let range = bounds(q.order, q.after, MIN_EVENT, MAX_EVENT, |id| {
                (workflow_id, id)
            });
            pager.fill(&self.events_by_workflow, range, q.order, |k| k.1, accept);
        } else {
            let range = self
                .events
                .range(bounds(q.order, q.after, MIN_EVENT, MAX_EVENT, |id| id))
                .map(|(id, _)| *id);
            match q.order {
                Order::OldestFirst => pager.take(range, accept),
                Order::NewestFirst => pager.take(range.rev(), accept),
            }
        }
        let (events, more) = pager.finish();
        Page::new(events.into_iter().cloned().collect(), more, |e| e.id)
    }

    // ----- runs -----

    /// Moves run `id` in its key's books from how `old` took part in it
    /// to how `new` does.
    fn rekey(&mut self, id: RunId, old: Option<(&str, SlotUse)>, new: Option<(&str, SlotUse)>) {
        rekey(&mut self.keys, id, old, new);
    }

    /// What [`rules::check_slot`] reads of `run`'s key and workflow.
    fn slot_state(&self, run: &WorkflowRun, now: DateTime<Utc>) -> SlotState {
        let mut state = SlotState::default();
        let Some(limits) = run.limits.as_deref() else {
            return state;
        };
        if let Some(keyed) = self.keys.get(&limits.key) {
            state.holding = keyed.holding.len();
            let free = limits.max.map_or(usize::MAX, |max| {
                (max as usize).saturating_sub(state.holding)
            });
            // Only whether `free` runs wait ahead matters: with fewer
            // waiting in all, none need be looked at.
            state.ahead = if keyed.waiting.len() < free {
                0
            } else {
                keyed
                    .waiting
                    .range(..run.id)
                    .filter(|id| {
                        self.runs
                            .get(id)
                            .is_some_and(|e| rules::waits_ahead(&e.run, now))
                    })
                    .take(free)
                    .count()
            };
            state.behind = limits.debounce && self.has_behind(keyed, run.id);
        }
        if limits.rate.is_some() {
            state.starts = self
                .rates
                .get(&run.workflow_id)
                .cloned()
                .unwrap_or_default();
        }
        state
    }

    /// Whether a waiting run of the key newer than `id`, with no
    /// cancellation asked for, exists.
    fn has_behind(&self, keyed: &KeyRuns, id: RunId) -> bool {
        use std::ops::Bound::{Excluded, Unbounded};
        keyed
            .waiting
            .range((Excluded(id), Unbounded))
            .any(|id| self.runs.get(id).is_some_and(|e| !e.run.cancel_requested))
    }

    /// Moves run `id` in the wake index from key `old` to `new`.
    fn rewake(&mut self, id: RunId, old: Option<DateTime<Utc>>, new: Option<DateTime<Utc>>) {
        if old == new {
            return;
        }
        if let Some(at) = old {
            self.runs_by_wake.remove(&(at, id));
        }
        if let Some(at) = new {
            self.runs_by_wake.insert((at, id));
        }
    }

    fn put_run(&mut self, run: WorkflowRun) {
        self.rewake(run.id, None, wake_key(&run));
        self.rekey(run.id, None, rules::slot_use(&run));
        self.runs_by_workflow.insert((run.workflow_id, run.id));
        self.runs_by_status.insert((run.status, run.id));
        self.runs_by_workflow_status
            .insert((run.workflow_id, run.status, run.id));
        if let Some(event_id) = run.event_id {
            self.runs_by_event.insert((event_id, run.id));
        }
        self.runs.insert(
            run.id,
            RunEntry {
                run,
                steps: Vec::new(),
            },
        );
    }

    pub(crate) fn insert_run(&mut self, run: WorkflowRun) -> Result<(), StoreError> {
        if self.runs.contains_key(&run.id) {
            return Err(StoreError::already_exists("run", run.id));
        }
        self.put_run(run);
        Ok(())
    }

    pub(crate) fn run(&self, id: RunId) -> Result<&WorkflowRun, StoreError> {
        self.runs
            .get(&id)
            .map(|entry| &entry.run)
            .ok_or_else(|| StoreError::not_found("run", id))
    }

    pub(crate) fn list_runs(&self, q: &RunQuery) -> Page<WorkflowRun, RunId> {
        let mut pager = Pager::new(q.limit);
        let accept = |id: RunId| {
            let run = &self.runs.get(&id)?.run;
            rules::run_matches(run, q).then_some(run)
        };
        let (order, after) = (q.order, q.after);
        // The most selective index that the query pins down.
        if let Some(keyed) = q.concurrency_key.as_deref().map(|k| self.keys.get(k)) {
            let ids: BTreeSet<RunId> = keyed
                .map(|k| k.holding.union(&k.waiting).copied().collect())
                .unwrap_or_default();
            let range = ids
                .range(bounds(order, after, MIN_RUN, MAX_RUN, |id| id))
                .copied();
            match order {
                Order::OldestFirst => pager.take(range, accept),
                Order::NewestFirst => pager.take(range.rev(), accept),
            }
            let (runs, more) = pager.finish();
            return Page::new(runs.into_iter().cloned().collect(), more, |r| r.id);
        }
        match (q.event_id, q.workflow_id, q.status) {
            (Some(event_id), _, _) => {
                let range = bounds(order, after, MIN_RUN, MAX_RUN, |id| (event_id, id));
                pager.fill(&self.runs_by_event, range, order, |k| k.1, accept);
            }
            (None, Some(workflow_id), Some(status)) => {
                let range = bounds(order, after, MIN_RUN, MAX_RUN, |id| {
                    (workflow_id, status, id)
                });
                pager.fill(&self.runs_by_workflow_status, range, order, |k| k.2, accept);
            }
            (None, Some(workflow_id), None) => {
                let range = bounds(order, after, MIN_RUN, MAX_RUN, |id| (workflow_id, id));
                pager.fill(&self.runs_by_workflow, range, order, |k| k.1, accept);
            }
            (None, None, Some(status)) => {
                let range = bounds(order, after, MIN_RUN, MAX_RUN, |id| (status, id));
                pager.fill(&self.runs_by_status, range, order, |k| k.1, accept);
            }
            (None, None, None) => {
                let range = self
                    .runs
                    .range(bounds(order, after, MIN_RUN, MAX_RUN, |id| id))
                    .map(|(id, _)| *id);
                match order {
                    Order::OldestFirst => pager.take(range, accept),
                    Order::NewestFirst => pager.take(range.rev(), accept),
                }
            }
        }
        let (runs, more) = pager.finish();
        Page::new(runs.into_iter().cloned().collect(), more, |r| r.id)
    }

    /// Claimable queued and running runs and due parked ones, merged by
    /// id, that their limits allow ([`rules::ClaimablePicker`]). Walks only
    /// the queued and running parts of the status index, and the due part
    /// of the wake index.
    pub(crate) fn list_claimable(&self, now: DateTime<Utc>, limit: usize) -> Vec<RunId> {
        let ids = |status| {
            self.runs_by_status
                .range((status, MIN_RUN)..=(status, MAX_RUN))
                .map(|(_, id)| *id)
        };
        let mut queued = ids(RunStatus::Queued)
            .filter(|id| self.runs.get(id).is_some_and(|e| claimable(&e.run, now)))
            .peekable();
        let mut lapsed = ids(RunStatus::Running)
            .filter(|id| self.runs.get(id).is_some_and(|e| claimable(&e.run, now)))
            .peekable();
        let mut due: Vec<RunId> = self
            .runs_by_wake
            .range(..=(now, MAX_RUN))
            .map(|(_, id)| *id)
            .filter(|id| self.runs.get(id).is_some_and(|e| claimable(&e.run, now)))
            .collect();
        due.sort_unstable();
        let mut waking = due.into_iter().peekable();
        let mut picker = ClaimablePicker::new();
        let mut found = Vec::with_capacity(limit.min(1_024));
        while found.len() < limit {
            let next = match (queued.peek(), lapsed.peek(), waking.peek()) {
                (q, l, Some(w)) if q.is_none_or(|q| w < q) && l.is_none_or(|l| w < l) => {
                    waking.next()
                }
                (Some(q), Some(l), _) if l < q => lapsed.next(),
                (Some(_), _, _) => queued.next(),
                (None, _, _) => lapsed.next(),
            };
            let Some(id) = next else { break };
            let Some(entry) = self.runs.get(&id) else {
                continue;
            };
            let run = &entry.run;
            let keyed = || run.limits.as_deref().and_then(|l| self.keys.get(&l.key));
            let picked = picker.pick(
                run,
                now,
                || keyed().is_some_and(|k| self.has_behind(k, id)),
                |_| keyed().map_or(0, |k| k.holding.len()),
                |workflow| self.rates.get(&workflow).cloned().unwrap_or_default(),
            );
            if picked {
                found.push(id);
            }
        }
        found
    }

    pub(crate) fn claim_run(
        &mut self,
        id: RunId,
        owner: &str,
        now: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    ) -> Result<&WorkflowRun, StoreError> {
        let slot = {
            let stored = self.run(id)?;
            rules::needs_slot(stored).then(|| self.slot_state(stored, now))
        };
        let stored = &self
            .runs
            .get(&id)
            .ok_or_else(|| StoreError::not_found("run", id))?
            .run;
        let rules::Claimed {
            run: claimed,
            starts,
        } = rules::claim_with_slot(stored, owner, now, expires_at, slot.as_ref())?;
        // The books and the runs are apart: no key is copied.
        rekey(
            &mut self.keys,
            id,
            rules::slot_use(stored),
            rules::slot_use(&claimed),
        );
        if let Some(starts) = starts {
            self.rates.insert(claimed.workflow_id, starts);
        }
        let run = &mut self.entry_mut(id)?.run;
        *run = claimed;
        Ok(run)
    }

    pub(crate) fn renew_lease(
        &mut self,
        id: RunId,
        epoch: u64,
        expires_at: DateTime<Utc>,
    ) -> Result<&WorkflowRun, StoreError> {
        let run = &mut self.entry_mut(id)?.run;
        *run = rules::renew(run, epoch, expires_at)?;
        Ok(run)
    }

    fn entry_mut(&mut self, id: RunId) -> Result<&mut RunEntry, StoreError> {
        self.runs
            .get_mut(&id)
            .ok_or_else(|| StoreError::not_found("run", id))
    }

    pub(crate) fn commit(
        &mut self,
        fence: Fence,
        run: Option<WorkflowRun>,
        steps: Vec<StepRun>,
    ) -> Result<(), StoreError> {
        let id = fence.run_id;
        rules::check_commit_request(fence, run.as_ref(), &steps)?;
        let entry = self.entry_mut(id)?;
        let stored = RunState::from(&entry.run);
        let states: Vec<StepState> = steps.iter().map(StepState::from).collect();
        let checked = rules::check_fence(fence, &stored, run.as_ref().map(RunState::from).as_ref())
            .and_then(|()| {
                let Ok(checked) = rules::check_steps(id, &states, |index, attempt| {
                    Ok::<_, std::convert::Infallible>(
                        entry
                            .step_position(index, attempt)
                            .ok()
                            .map(|pos| entry.steps[pos].status),
                    )
                });
                checked
            });
        if let Err(error) = checked {
            let applied = error.is_conflict()
                && rules::is_applied(fence, &entry.run, run.as_ref(), &states, |i| {
                    let (index, attempt) = (steps[i].step_index, steps[i].attempt);
                    entry
                        .step_position(index, attempt)
                        .is_ok_and(|pos| entry.steps[pos] == steps[i])
                });
            return if applied { Ok(()) } else { Err(error) };
        }

        // Checked: from here on nothing fails, so the commit is all or nothing.
        for step in steps {
            match entry.step_position(step.step_index, step.attempt) {
                Ok(pos) => entry.steps[pos] = step,
                Err(pos) => entry.steps.insert(pos, step),
            }
        }
        if let Some(mut run) = run {
            let old = entry.run.status;
            rules::merge_committed(&stored, &mut run);
            rules::merge_signals(&entry.run.signals, &mut run);
            let (old_wake, new_wake) = (wake_key(&entry.run), wake_key(&run));
            let new = run.status;
            let workflow_id = run.workflow_id;
            // Most commits keep the run's place in its key's books.
            let moved = (rules::slot_use(&entry.run) != rules::slot_use(&run)).then(|| {
                let owned = |r| rules::slot_use(r).map(|(k, u): (&str, _)| (k.to_owned(), u));
                (owned(&entry.run), owned(&run))
            });
            entry.run = run;
            if new.is_terminal() {
                // A finished run's attempts never change again: give back
                // the room the vector grew into (a quarter of a run's heap
                // at three attempts in a capacity of four).
                entry.steps.shrink_to_fit();
            }
            if let Some((old_slot, new_slot)) = moved {
                self.rekey(
                    id,
                    old_slot.as_ref().map(|(k, u)| (k.as_str(), *u)),
                    new_slot.as_ref().map(|(k, u)| (k.as_str(), *u)),
                );
            }
            self.rewake(id, old_wake, new_wake);
            if old != new {
                self.runs_by_status.remove(&(old, id));
                self.runs_by_status.insert((new, id));
                self.runs_by_workflow_status.remove(&(workflow_id, old, id));
                self.runs_by_workflow_status.insert((workflow_id, new, id));
            }
        }
        Ok(())
    }

    pub(crate) fn request_cancel(&mut self, id: RunId) -> Result<&WorkflowRun, StoreError> {
        let old = wake_key(self.run(id)?);
        if let Some(cancelled) = rules::request_cancel(self.run(id)?) {
            self.rewake(id, old, wake_key(&cancelled));
            self.entry_mut(id)?.run = cancelled;
        }
        self.run(id)
    }

    pub(crate) fn signal_run(
        &mut self,
        id: RunId,
        signal: &Signal,
    ) -> Result<&WorkflowRun, StoreError> {
        let stored = self.run(id)?;
        let signalled = rules::signal(stored, signal)?;
        self.rewake(id, wake_key(stored), wake_key(&signalled));
        self.entry_mut(id)?.run = signalled;
        self.run(id)
    }

    pub(crate) fn step_runs(&self, run_id: RunId) -> &[StepRun] {
        self.runs
            .get(&run_id)
            .map_or(&[], |entry| entry.steps.as_slice())
    }
}
