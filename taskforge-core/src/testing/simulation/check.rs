//! The handlers' bookkeeping while a scenario runs, and the checks of
//! what a settled scenario stored.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use parking_lot::Mutex;
use serde_json::{json, Value};

use super::plan::{Ack, Behavior, HandlerMix, Plan};
use super::INJECTED_PANIC;
use crate::store::{EventStore, RunStore, RunTransition, StepTransition, Store};
use crate::testing::faults::FaultyStore;
use crate::{
    RunId, RunStatus, StepContext, StepError, StepRun, StepStatus, WorkflowDefinition, WorkflowId,
    WorkflowRun,
};

/// A handler call.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Call {
    run: RunId,
    step: String,
    attempt: u32,
}

/// A step of a run, by which the handlers keep their books.
type StepOf = (RunId, String);

/// A call of a handler that has not ended yet.
#[derive(Debug, Clone)]
struct Open {
    /// Its place in the order of calls of its step.
    seq: u64,
    attempt: u32,
    engine: String,
}

/// What the handlers saw, and what the engines announced.
pub(super) struct Monitor {
    store: Arc<dyn RunStore>,
    mix: HandlerMix,
    rng: Mutex<fastrand::Rng>,
    /// Calls executing now, by step.
    executing: Mutex<HashMap<StepOf, Vec<Open>>>,
    /// How many calls each step had.
    entries: Mutex<HashMap<StepOf, u64>>,
    calls: Mutex<Vec<Call>>,
    behaviors: Mutex<BTreeMap<&'static str, u64>>,
    finished: Mutex<BTreeMap<RunId, Vec<(RunStatus, String)>>>,
    violations: Mutex<Vec<String>>,
}

/// An attempt executing; it leaves the books when dropped (returned,
/// timed out, cancelled, unwound or dropped with its engine).
struct Executing {
    monitor: Arc<Monitor>,
    key: StepOf,
    open: Open,
}

impl Executing {
    /// Called where the handler carries on after an await: a
    /// violation if a later call of its step has started since, for
    /// then two attempts of the step run at once. (An attempt that is
    /// never polled again after a later one started, such as one
    /// whose engine stalled and then dropped it, ran only before.)
    fn carry_on(&self) {
        let latest = self.monitor.entries.lock().get(&self.key).copied();
        if latest.is_some_and(|latest| latest > self.open.seq) {
            let (run, step) = &self.key;
            let others: Vec<String> = self
                .monitor
                .executing
                .lock()
                .get(&self.key)
                .into_iter()
                .flatten()
                .filter(|other| other.seq > self.open.seq)
                .map(|other| format!("attempt {} on {}", other.attempt, other.engine))
                .collect();
            self.monitor.violation(format!(
                "step {step} of run {run}: attempt {} on {} carried on after a later \
                 attempt started (still executing: {others:?})",
                self.open.attempt, self.open.engine
            ));
        }
    }
}

impl Drop for Executing {
    fn drop(&mut self) {
        let mut executing = self.monitor.executing.lock();
        if let Some(attempts) = executing.get_mut(&self.key) {
            attempts.retain(|open| open.seq != self.open.seq);
            if attempts.is_empty() {
                executing.remove(&self.key);
            }
        }
    }
}

impl Monitor {
    pub(super) fn new(store: Arc<dyn RunStore>, mix: HandlerMix, seed: u64) -> Self {
        Self {
            store,
            mix,
            rng: Mutex::new(fastrand::Rng::with_seed(seed ^ 0x4a4d_1e55)),
            executing: Mutex::new(HashMap::new()),
            entries: Mutex::new(HashMap::new()),
            calls: Mutex::new(Vec::new()),
            behaviors: Mutex::new(BTreeMap::new()),
            finished: Mutex::new(BTreeMap::new()),
            violations: Mutex::new(Vec::new()),
        }
    }

    pub(super) fn violation(&self, violation: String) {
        self.violations.lock().push(violation);
    }

    pub(super) fn take_violations(&self) -> Vec<String> {
        std::mem::take(&mut *self.violations.lock())
    }

    pub(super) fn calls(&self) -> BTreeMap<&'static str, u64> {
        self.behaviors.lock().clone()
    }

    /// The calls still executing, described.
    pub(super) fn executing(&self) -> Vec<String> {
        let executing = self.executing.lock();
        let mut all: Vec<String> = executing
            .iter()
            .flat_map(|((run, step), calls)| {
                calls.iter().map(move |open| {
                    format!(
                        "step {step} of run {run}, attempt {} on {}",
                        open.attempt, open.engine
                    )
                })
            })
            .collect();
        all.sort();
        all
    }

    pub(super) fn finished(&self, run: RunId, status: RunStatus, engine: &str) {
        self.finished
            .lock()
            .entry(run)
            .or_default()
            .push((status, engine.to_owned()));
    }

    /// The simulated handler: checks it may run, then does what the
    /// mix draws.
    pub(super) async fn handle(
        self: Arc<Self>,
        ctx: StepContext,
        engine: String,
    ) -> Result<Value, StepError> {
        let (run, step, attempt) = (ctx.run_id(), ctx.step_key().to_owned(), ctx.attempt());
        let executing = self.enter(run, &step, attempt, engine.clone());
        self.check_stored(run, &step, attempt, &engine).await;
        let behavior = self.mix.draw(&mut self.rng.lock());
        *self.behaviors.lock().entry(behavior.name()).or_default() += 1;
        let output = json!({ "step": step, "attempt": attempt, "engine": engine });
        match behavior {
            Behavior::Succeed => Ok(output),
            Behavior::Slow(length) => {
                let result = tokio::select! {
                    biased;
                    () = ctx.cancelled() => Err(StepError::retryable("saw the cancellation")),
                    () = tokio::time::sleep(length) => Ok(output),
                };
                executing.carry_on();
                result
            }
            Behavior::Retryable => Err(StepError::retryable("injected failure")),
            Behavior::RetryAfter(hint) => {
                Err(StepError::retryable("injected failure, come back later").retry_after(hint))
            }
            Behavior::Terminal => Err(StepError::terminal("injected terminal failure")),
            Behavior::Panic => panic!("{INJECTED_PANIC} in {step} attempt {attempt}"),
            Behavior::Hang => std::future::pending().await,
        }
    }

    /// Books an attempt as executing.
    fn enter(self: &Arc<Self>, run: RunId, step: &str, attempt: u32, engine: String) -> Executing {
        let key = (run, step.to_owned());
        let seq = {
            let mut entries = self.entries.lock();
            let entry = entries.entry(key.clone()).or_default();
            *entry += 1;
            *entry
        };
        let open = Open {
            seq,
            attempt,
            engine,
        };
        self.executing
            .lock()
            .entry(key.clone())
            .or_default()
            .push(open.clone());
        self.calls.lock().push(Call {
            run,
            step: step.to_owned(),
            attempt,
        });
        Executing {
            monitor: Arc::clone(self),
            key,
            open,
        }
    }

    /// A handler is called for an attempt stored as running, and never
    /// for a step whose success is stored.
    async fn check_stored(&self, run: RunId, step: &str, attempt: u32, engine: &str) {
        let stored = match self.store.list_step_runs(run).await {
            Ok(stored) => stored,
            Err(e) => return self.violation(format!("reading the steps of {run}: {e}")),
        };
        if let Some(done) = stored
            .iter()
            .find(|s| s.step_key == step && s.status == StepStatus::Succeeded)
        {
            self.violation(format!(
                "step {step} of run {run} ran again (attempt {attempt} on {engine}) \
                 after attempt {} succeeded",
                done.attempt
            ));
        }
        let this = stored
            .iter()
            .find(|s| s.step_key == step && s.attempt == attempt);
        if this.is_none_or(|s| s.status != StepStatus::Running) {
            self.violation(format!(
                "step {step} of run {run}: attempt {attempt} on {engine} was called while \
                 stored as {:?}",
                this.map(|s| s.status)
            ));
        }
    }
}

/// A short form of a run's attempts: `s0#1 succeeded, s1#1 running`.
pub(super) fn brief(steps: &[StepRun]) -> String {
    let parts: Vec<String> = steps
        .iter()
        .map(|s| {
            let retry = if s.retry_at.is_some() { " (retry)" } else { "" };
            format!("{}#{} {}{retry}", s.step_key, s.attempt, s.status)
        })
        .collect();
    parts.join(", ")
}

/// What the checks of a settled scenario read.
pub(super) struct Stored<'a, S> {
    pub(super) store: &'a FaultyStore<S>,
    pub(super) plan: &'a Plan,
    pub(super) workflows: &'a [WorkflowId],
    pub(super) runs: &'a [WorkflowRun],
    pub(super) acks: &'a [Ack],
    pub(super) monitor: &'a Monitor,
}

impl<S: Store> Stored<'_, S> {
    /// Every violation of what a settled scenario must show.
    pub(super) async fn check(&self) -> Vec<String> {
        let mut v = Vec::new();
        self.ends(&mut v);
        self.acknowledged(&mut v).await;
        let calls: Vec<Call> = self.monitor.calls.lock().clone();
        let mut seen = HashSet::new();
        for call in calls.iter().filter(|call| !seen.insert(*call)) {
            v.push(format!(
                "step {} of run {}: attempt {} was called twice",
                call.step, call.run, call.attempt
            ));
        }
        for run in self.runs {
            let steps = match self.store.list_step_runs(run.id).await {
                Ok(steps) => steps,
                Err(e) => {
                    v.push(format!("reading the steps of {}: {e}", run.id));
                    continue;
                }
            };
            for call in calls.iter().filter(|c| c.run == run.id) {
                if !steps
                    .iter()
                    .any(|s| s.step_key == call.step && s.attempt == call.attempt)
                {
                    v.push(format!(
                        "step {} of run {}: attempt {} was called but is not stored",
                        call.step, run.id, call.attempt
                    ));
                }
            }
            match self.workflows.iter().position(|w| *w == run.workflow_id) {
                Some(i) => history(run, &steps, &self.plan.workflows[i], &mut v),
                None => v.push(format!(
                    "run {} belongs to no workflow of the scenario",
                    run.id
                )),
            }
        }
        v
    }

    /// Every run finished once: stored as finished, and never announced
    /// finished twice or otherwise.
    fn ends(&self, v: &mut Vec<String>) {
        let by_id: HashMap<RunId, &WorkflowRun> = self.runs.iter().map(|r| (r.id, r)).collect();
        for run in self.runs.iter().filter(|run| !run.status.is_terminal()) {
            v.push(format!("run {} ended {}", run.id, run.status));
        }
        for (run, ends) in self.monitor.finished.lock().iter() {
            if ends.len() > 1 {
                v.push(format!(
                    "run {run} was announced finished {} times: {ends:?}",
                    ends.len()
                ));
            }
            match by_id.get(run) {
                Some(stored) if ends.iter().all(|(status, _)| *status == stored.status) => {}
                Some(stored) => v.push(format!(
                    "run {run} was announced finished as {ends:?} but is stored {}",
                    stored.status
                )),
                None => v.push(format!(
                    "run {run} was announced finished but is not stored"
                )),
            }
        }
    }

    /// No acknowledged event is lost, and no key starts two runs.
    async fn acknowledged(&self, v: &mut Vec<String>) {
        let by_id: HashMap<RunId, &WorkflowRun> = self.runs.iter().map(|r| (r.id, r)).collect();
        let mut acked: HashMap<&str, HashSet<RunId>> = HashMap::new();
        for ack in self.acks {
            acked.entry(&ack.key).or_default().insert(ack.run_id);
            match by_id.get(&ack.run_id) {
                None => v.push(format!(
                    "the run {} acknowledged to arrival {} ({}) is not stored",
                    ack.run_id, ack.arrival, ack.key
                )),
                Some(run) if ack.event_id.is_some() && run.event_id != ack.event_id => {
                    v.push(format!(
                        "arrival {} was acknowledged with event {:?}, but its run {} has \
                         event {:?}",
                        ack.arrival, ack.event_id, run.id, run.event_id
                    ));
                }
                Some(_) => {}
            }
        }
        for (key, runs) in acked.iter().filter(|(_, runs)| runs.len() > 1) {
            v.push(format!(
                "{key} was acknowledged with {} runs: {runs:?}",
                runs.len()
            ));
        }
        let mut started: HashMap<String, Vec<RunId>> = HashMap::new();
        for run in self.runs {
            let key = run.input["key"].as_str().unwrap_or("?").to_owned();
            started.entry(key).or_default().push(run.id);
            let Some(event_id) = run.event_id else {
                v.push(format!("run {} traces to no event", run.id));
                continue;
            };
            match self.store.get_event(event_id).await {
                Ok(event) if event.outcome.run_id() == Some(run.id) => {}
                Ok(event) => v.push(format!(
                    "run {}'s event {event_id} has the outcome {:?}",
                    run.id, event.outcome
                )),
                Err(e) => v.push(format!("run {}'s event {event_id}: {e}", run.id)),
            }
        }
        for (key, runs) in started.iter().filter(|(_, runs)| runs.len() > 1) {
            v.push(format!("{key} started {} runs: {runs:?}", runs.len()));
        }
    }
}

/// The step transition that ends an attempt in `status` (none for a
/// running attempt, or a skipped step, which no transition leads to).
fn step_transition(status: StepStatus) -> Option<StepTransition> {
    match status {
        StepStatus::Running | StepStatus::Skipped => None,
        StepStatus::Succeeded => Some(StepTransition::Succeed),
        StepStatus::Failed => Some(StepTransition::Fail),
        StepStatus::TimedOut => Some(StepTransition::TimeOut),
        StepStatus::Cancelled => Some(StepTransition::Cancel),
        StepStatus::Interrupted => Some(StepTransition::Interrupt),
    }
}

/// The run transition that ends a run in `status`.
fn run_transition(status: RunStatus) -> Option<RunTransition> {
    match status {
        RunStatus::Queued | RunStatus::Running | RunStatus::Waiting => None,
        RunStatus::Succeeded => Some(RunTransition::Succeed),
        RunStatus::Failed => Some(RunTransition::Fail),
        RunStatus::Cancelled => Some(RunTransition::Cancel),
        RunStatus::TimedOut => Some(RunTransition::TimeOut),
    }
}

/// Whether an attempt ended so that another follows.
fn retried(step: &StepRun) -> bool {
    match step.status {
        StepStatus::Interrupted => true,
        StepStatus::Failed | StepStatus::TimedOut => step.retry_at.is_some(),
        _ => false,
    }
}

/// A run's stored history replays through the state machine to its
/// stored status, and its end matches its last attempt.
fn history(
    run: &WorkflowRun,
    steps: &[StepRun],
    definition: &WorkflowDefinition,
    v: &mut Vec<String>,
) {
    let id = run.id;
    let mut by_index: BTreeMap<u32, Vec<&StepRun>> = BTreeMap::new();
    for step in steps {
        by_index.entry(step.step_index).or_default().push(step);
    }
    let count = by_index.len();
    for (position, (&index, attempts)) in by_index.iter_mut().enumerate() {
        let Some(def) = definition.steps.get(index as usize) else {
            v.push(format!(
                "run {id} has attempts of step {index}, past its last step"
            ));
            return;
        };
        if index as usize != position {
            v.push(format!(
                "run {id}: step {} has attempts, step {position} none",
                def.key
            ));
            return;
        }
        attempts.sort_by_key(|s| s.attempt);
        let numbers: Vec<u32> = attempts.iter().map(|s| s.attempt).collect();
        if numbers != (1..=numbers.len() as u32).collect::<Vec<_>>() {
            v.push(format!(
                "run {id}: attempts of step {} are numbered {numbers:?}",
                def.key
            ));
        }
        for (i, attempt) in attempts.iter().enumerate() {
            let n = attempt.attempt;
            if attempt.step_key != def.key {
                v.push(format!(
                    "run {id}: step {index} is stored as {:?}",
                    attempt.step_key
                ));
            }
            match step_transition(attempt.status) {
                // The simulation's definitions have no conditions.
                None if attempt.status == StepStatus::Skipped => v.push(format!(
                    "run {id}: step {} was skipped, yet nothing could skip it",
                    def.key
                )),
                None => v.push(format!(
                    "run {id}: attempt {n} of step {} is running though the run is {}",
                    def.key, run.status
                )),
                Some(t) if StepStatus::Running.apply(t) != Ok(attempt.status) => v.push(format!(
                    "run {id}: attempt {n} of step {} does not replay to {}",
                    def.key, attempt.status
                )),
                Some(_) => {}
            }
            if i + 1 < attempts.len() && !retried(attempt) {
                v.push(format!(
                    "run {id}: attempt {n} of step {} ended {} without a retry, yet attempt {} \
                     followed",
                    def.key,
                    attempt.status,
                    n + 1
                ));
            }
            if attempt.status == StepStatus::Succeeded && attempt.output.is_none() {
                v.push(format!(
                    "run {id}: attempt {n} of step {} succeeded without output",
                    def.key
                ));
            }
        }
        let last = attempts[attempts.len() - 1];
        if position + 1 < count && last.status != StepStatus::Succeeded {
            v.push(format!(
                "run {id}: step {} ended {}, yet the next step ran",
                def.key, last.status
            ));
        }
    }
    let mut transitions = Vec::new();
    if run.started_at.is_some() {
        transitions.push(RunTransition::Start);
        let resumes = steps
            .iter()
            .filter(|s| s.status == StepStatus::Interrupted)
            .count();
        transitions.extend(std::iter::repeat_n(RunTransition::Resume, resumes));
    } else if !steps.is_empty() {
        v.push(format!("run {id} has step attempts but never started"));
    }
    transitions.extend(run_transition(run.status));
    match RunStatus::replay(&transitions) {
        Ok(status) if status == run.status => {}
        replayed => v.push(format!(
            "run {id}: its history {transitions:?} replays to {replayed:?}, but it is stored {}",
            run.status
        )),
    }
    let last = by_index.values().last().and_then(|a| a.last()).copied();
    let ended =
        |status: StepStatus| last.is_some_and(|s| s.status == status && s.retry_at.is_none());
    match run.status {
        RunStatus::Succeeded => {
            let all = count == definition.steps.len()
                && by_index
                    .values()
                    .all(|a| a.last().is_some_and(|s| s.status == StepStatus::Succeeded));
            if !all {
                v.push(format!("run {id} succeeded with attempts {}", brief(steps)));
            } else if run.output != last.and_then(|s| s.output.clone()) {
                v.push(format!(
                    "run {id} succeeded with another output than its last step's"
                ));
            }
        }
        RunStatus::Failed if !ended(StepStatus::Failed) => {
            v.push(format!("run {id} failed with attempts {}", brief(steps)));
        }
        RunStatus::TimedOut if definition.timeout.is_none() && !ended(StepStatus::TimedOut) => {
            v.push(format!("run {id} timed out with attempts {}", brief(steps)));
        }
        _ => {}
    }
}
