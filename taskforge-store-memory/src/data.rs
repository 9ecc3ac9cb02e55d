//! Events and runs: the hot state, behind one lock because an event and the
//! run it starts are written together.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono::{DateTime, Utc};
use taskforge_core::store::rules::{self, RunState, StepState};
use taskforge_core::store::{EventInsert, Fence, StoreError};
use taskforge_core::{
    Event, EventId, EventQuery, Order, Page, RunId, RunQuery, RunStatus, StepRun, TriggerId,
    WorkflowId, WorkflowRun,
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
}

/// Whether a worker may claim `run` at `now`, by the contract's rule.
fn claimable(run: &WorkflowRun, now: DateTime<Utc>) -> bool {
    rules::is_claimable(run.status, run.lease.as_ref(), now)
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

    fn put_run(&mut self, run: WorkflowRun) {
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

    /// Claimable queued and running runs, merged by id. Walks only the
    /// queued and running parts of the status index.
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
        let mut found = Vec::with_capacity(limit.min(1_024));
        while found.len() < limit {
            let next = match (queued.peek(), lapsed.peek()) {
                (Some(q), Some(l)) if l < q => lapsed.next(),
                (Some(_), _) => queued.next(),
                (None, _) => lapsed.next(),
            };
            match next {
                Some(id) => found.push(id),
                None => break,
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
        let run = &mut self.entry_mut(id)?.run;
        *run = rules::claim(run, owner, now, expires_at)?;
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
            let new = run.status;
            let workflow_id = run.workflow_id;
            entry.run = run;
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
        let run = &mut self.entry_mut(id)?.run;
        if let Some(cancelled) = rules::request_cancel(run) {
            *run = cancelled;
        }
        Ok(run)
    }

    pub(crate) fn step_runs(&self, run_id: RunId) -> &[StepRun] {
        self.runs
            .get(&run_id)
            .map_or(&[], |entry| entry.steps.as_slice())
    }
}
