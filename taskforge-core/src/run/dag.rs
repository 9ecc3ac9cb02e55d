//! The scheduler of a run's steps: which are ready to start, which are
//! skipped, which wait for a retry and until when, and how the run ends,
//! decided from the definition, the run's input and the recorded step
//! attempts alone. No I/O, no clock: the worker does the writes and the
//! handler calls, and asks a [`Schedule`] what to do next.
//! See [`Schedule`] for the rules.

use std::fmt;

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use super::{RunError, RunStatus, Signal, StepRun, StepStatus};
use crate::trigger::filter::FilterMiss;
use crate::workflow::{
    condition_source, dependency_graph, ConditionSource, OnTimeout, Wait, WorkflowDefinition,
};

/// What a run does next, as [`Schedule::plan`] decides.
#[derive(Debug, Clone, PartialEq, Default)]
#[non_exhaustive]
pub struct Plan {
    /// Steps to record as skipped ([`StepRun::skipped`]), in the order
    /// decided; written with the next commit. The schedule counts them
    /// skipped already.
    pub skip: Vec<Skip>,
    /// Attempts to start now, lowest position first; never more than the
    /// free slots under the parallel limit. The schedule counts them
    /// running already.
    pub start: Vec<Start>,
    /// When the earliest retry that is not due yet is due, or the earliest
    /// sleep end or signal timeout of a wait step: plan again then (or when
    /// a running attempt ends or a signal arrives, whichever comes first).
    pub wake_at: Option<DateTime<Utc>>,
    /// Wait steps whose wait ended, in step order: record each attempt
    /// as the outcome says. The schedule counts them finished already.
    pub waited: Vec<Waited>,
    /// The run is over, and how. Steps still running are to be cancelled.
    pub end: Option<End>,
}

/// A step attempt to start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Start {
    /// The step's position in the definition.
    pub index: usize,
    /// The attempt's number, from 1.
    pub attempt: u32,
}

/// A wait step whose wait ended, and how.
#[derive(Debug, Clone, PartialEq)]
pub struct Waited {
    /// The step's position in the definition.
    pub index: usize,
    /// Its attempt (the one recorded running).
    pub attempt: u32,
    /// How the wait ended.
    pub outcome: WaitOutcome,
}

/// How a wait step's wait ended.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum WaitOutcome {
    /// Its signal came (and its sleep, if any, passed): the step succeeds
    /// with the payload as output, recording the signal's number.
    Signal {
        /// The signal's position in the run's signals.
        number: u32,
        /// Its payload.
        payload: Value,
    },
    /// Its sleep passed (it waits for no signal): it succeeds with `null`.
    Slept,
    /// Its timeout passed without its signal, and it goes on
    /// ([`OnTimeout::Continue`]): it succeeds with `null`.
    TimedOutContinue,
    /// Its timeout passed without its signal, and it fails
    /// ([`OnTimeout::Fail`]), for good, with this error: the run fails.
    TimedOutFail {
        /// Why, for people.
        message: String,
    },
}

/// A step to record as skipped, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skip {
    /// The step's position in the definition.
    pub index: usize,
    /// Why it is skipped.
    pub reason: SkipReason,
}

/// Why a step is skipped.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SkipReason {
    /// Its condition does not hold; the miss says what was found.
    ConditionFalse(FilterMiss),
    /// Every step it depends on was skipped.
    DependenciesSkipped,
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ConditionFalse(miss) => write!(f, "skipped: its condition is false ({miss})"),
            Self::DependenciesSkipped => {
                f.write_str("skipped: every step it depends on was skipped")
            }
        }
    }
}

/// How a run ends.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum End {
    /// Every step succeeded or was skipped.
    Succeeded {
        /// The run's output (see [`WorkflowDefinition::output`]).
        output: Value,
    },
    /// A step failed for good, or the run was cancelled.
    Failed {
        /// `Failed`, `TimedOut` (the step's last attempt timed out) or
        /// `Cancelled`.
        status: RunStatus,
        /// Why, naming the step.
        error: RunError,
    },
}

/// Where one step is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Some dependency is not finished.
    Waiting,
    /// In `ready`: its next attempt may start.
    Ready,
    /// An attempt is running.
    Running,
    /// In `retries`: its next attempt waits for its due time.
    Retry,
    /// In `waits`: a wait step's attempt waits for its time or signal.
    Awaiting,
    Succeeded,
    Skipped,
    /// Failed for good.
    Failed,
    Cancelled,
}

#[derive(Debug, Clone, Copy)]
struct Slot {
    state: State,
    /// The latest attempt number recorded or handed out (0: none).
    attempt: u32,
    /// How many of its dependencies are not finished.
    unfinished: u32,
    /// Whether it has dependencies at all.
    dependent: bool,
    /// Whether one of its dependencies succeeded.
    dependency_succeeded: bool,
    /// Whether its output is kept: the run's output, or a condition, reads it.
    keep: bool,
}

/// The edges between steps.
#[derive(Debug, Clone)]
enum Edges {
    /// No step declares dependencies: each depends on the one before.
    Linear,
    /// Declared dependencies, and their reverse.
    Graph {
        dependencies: Vec<Vec<usize>>,
        dependents: Vec<Vec<usize>>,
    },
}

/// The steps of one run: where each is, and what comes next. Built for a
/// fresh run with [`new`](Self::new), or from the recorded history with
/// [`resume`](Self::resume); told what happened with
/// [`record`](Self::record); asked what to do with [`plan`](Self::plan).
///
/// # Rules
///
/// - **Dependencies.** A step's dependencies are what its
///   [`depends_on`](crate::StepDefinition::depends_on) declares; in a
///   definition where no step declares any, each step depends on the one
///   before it (the steps run one by one, in order).
/// - **Ready.** A step becomes ready when all its dependencies are finished
///   (succeeded or skipped) and at least one succeeded, or when it has
///   none, and its [condition](crate::StepDefinition::condition), if any,
///   holds. Ready steps start lowest position first, while fewer than
///   [`parallel_limit`](WorkflowDefinition::parallel_limit) attempts run.
/// - **Skipped.** A step whose dependencies were all skipped is skipped
///   (its condition is not read); so is one whose condition does not hold.
///   A skipped step counts as finished for the steps after it.
/// - **Retries.** An attempt that failed or timed out with a `retry_at`
///   is followed by the next attempt at that time; an interrupted one (its
///   worker was lost) by the next attempt at once. A succeeded step is
///   never run again.
/// - **The end.** The run succeeds when every step succeeded or was
///   skipped, with the output that
///   [`WorkflowDefinition::output`] describes. It fails as soon as one
///   step fails for good (an attempt that failed or timed out without a
///   `retry_at`): it ends `Failed`, or `TimedOut` if that attempt timed
///   out, with that step's error, and no other step starts (the worker
///   cancels those still running). A cancelled attempt in the history
///   means the run was cancelled.
/// - **Waits.** A [wait step](crate::StepDefinition::wait) has no handler:
///   once started (its attempt recorded running, which does not count
///   against the parallel limit), it ends when what it waits for is there
///   (see [`Wait`](crate::Wait)): its sleep has passed, a signal of its
///   name that no other wait step received arrived (given with
///   [`Schedule::receive`]), or its timeout passed. The plan hands those
///   out in [`Plan::waited`], counted finished already; `wake_at` includes
///   the next sleep end or timeout. A wait step left running by a lost
///   worker keeps waiting (it is not interrupted).
///
/// ```
/// use chrono::Utc;
/// use serde_json::json;
/// use taskforge_core::dag::Schedule;
/// use taskforge_core::{RunId, StepDefinition, StepRun, WorkflowDefinition};
///
/// let definition = WorkflowDefinition::new(vec![
///     StepDefinition::new("a", "noop"),
///     StepDefinition::new("b", "noop").depends_on(["a"]),
///     StepDefinition::new("c", "noop").depends_on(["a"]),
/// ]);
/// let input = json!({});
/// let mut schedule = Schedule::new(&definition, &input);
/// let plan = schedule.plan(Utc::now());
/// assert_eq!(plan.start.iter().map(|s| s.index).collect::<Vec<_>>(), [0]);
///
/// // `a` succeeded: `b` and `c` start together.
/// let mut a = StepRun::start(RunId::new(), "a", 0, 1, Utc::now());
/// a.status = taskforge_core::StepStatus::Succeeded;
/// a.output = Some(json!(1));
/// schedule.record(&a);
/// let plan = schedule.plan(Utc::now());
/// assert_eq!(plan.start.iter().map(|s| s.index).collect::<Vec<_>>(), [1, 2]);
/// ```
///
/// It reads a definition that passed
/// [validation](WorkflowDefinition::validate); given another, it still
/// answers (unknown dependencies are left out, and steps caught in a
/// cycle end the run as failed once nothing else can run).
#[derive(Debug, Clone)]
pub struct Schedule<'d> {
    definition: &'d WorkflowDefinition,
    input: &'d Value,
    edges: Edges,
    slots: Vec<Slot>,
    /// Ready steps, highest position first (so `pop` takes the lowest).
    ready: Vec<usize>,
    /// Steps waiting for a retry, with its due time.
    retries: Vec<(DateTime<Utc>, usize)>,
    /// Wait steps waiting, with when their attempt started, in step order.
    waits: Vec<(usize, DateTime<Utc>)>,
    /// The run's signals, in the order they arrived.
    signals: Vec<Signal>,
    /// The numbers of the signals a wait step received.
    received: std::collections::BTreeSet<u32>,
    /// Skips decided and not yet handed out.
    skipped: Vec<Skip>,
    running: usize,
    /// Steps succeeded or skipped.
    finished: usize,
    limit: usize,
    /// The first failure for good: when, its run status, its error.
    failure: Option<(Option<DateTime<Utc>>, RunStatus, RunError)>,
    /// The first cancelled attempt's error.
    cancelled: Option<RunError>,
    /// The outputs kept, by position.
    kept: Vec<(usize, Value)>,
}

impl<'d> Schedule<'d> {
    /// The schedule of a run that has recorded nothing yet, with this
    /// input (which conditions read).
    #[must_use]
    pub fn new(definition: &'d WorkflowDefinition, input: &'d Value) -> Self {
        let mut schedule = Self::empty(definition, input);
        schedule.settle();
        schedule
    }

    /// The schedule of a run whose step attempts `history` holds (every
    /// attempt stored, in any order), and the attempts in it left running
    /// by a lost worker: record those as interrupted before going on; the
    /// schedule counts them interrupted already, their steps ready for a
    /// new attempt. A succeeded step is never run again.
    #[must_use]
    pub fn resume(
        definition: &'d WorkflowDefinition,
        input: &'d Value,
        history: &[StepRun],
    ) -> (Self, Vec<StepRun>) {
        let mut schedule = Self::empty(definition, input);
        let n = schedule.slots.len();
        let mut latest: Vec<Option<&StepRun>> = vec![None; n];
        for step in history {
            if let Some(slot) = latest.get_mut(step.step_index as usize) {
                if slot.is_none_or(|s| s.attempt < step.attempt) {
                    *slot = Some(step);
                }
            }
        }
        let mut left_running = Vec::new();
        for (index, step) in latest.into_iter().enumerate() {
            let Some(step) = step else {
                continue;
            };
            schedule.slots[index].attempt = step.attempt;
            if step.status == StepStatus::Running && schedule.is_wait(index) {
                // A wait has nothing to interrupt: it keeps waiting.
                schedule.set_awaiting(index, step.started_at);
            } else if step.status == StepStatus::Running {
                left_running.push(step.clone());
                schedule.set_ready(index);
            } else {
                // No cascade yet: the dependents' own records come after.
                schedule.apply(index, step, false);
            }
        }
        // Dependencies finished before the crash: count them now, so that
        // what they make ready or skipped is decided below.
        for index in 0..n {
            let (mut unfinished, mut succeeded) = (0, false);
            for k in 0.. {
                let Some(dependency) = schedule.dependency(index, k) else {
                    break;
                };
                match schedule.slots[dependency].state {
                    State::Succeeded => succeeded = true,
                    State::Skipped => {}
                    _ => unfinished += 1,
                }
            }
            let slot = &mut schedule.slots[index];
            slot.unfinished = unfinished;
            slot.dependency_succeeded = succeeded;
        }
        schedule.settle();
        (schedule, left_running)
    }

    fn empty(definition: &'d WorkflowDefinition, input: &'d Value) -> Self {
        let n = definition.steps.len();
        let edges = if definition.declares_dependencies() {
            let dependencies = dependency_graph(definition);
            let mut dependents = vec![Vec::new(); n];
            for (index, of) in dependencies.iter().enumerate() {
                for &dependency in of {
                    dependents[dependency].push(index);
                }
            }
            Edges::Graph {
                dependencies,
                dependents,
            }
        } else {
            Edges::Linear
        };
        let mut schedule = Self {
            definition,
            input,
            edges,
            slots: Vec::with_capacity(n),
            ready: Vec::new(),
            retries: Vec::new(),
            waits: Vec::new(),
            signals: Vec::new(),
            received: std::collections::BTreeSet::new(),
            skipped: Vec::new(),
            running: 0,
            finished: 0,
            limit: definition.parallel_limit() as usize,
            failure: None,
            cancelled: None,
            kept: Vec::new(),
        };
        for index in 0..n {
            let unfinished = schedule.dependency_count(index);
            schedule.slots.push(Slot {
                state: State::Waiting,
                attempt: 0,
                unfinished,
                dependent: unfinished > 0,
                dependency_succeeded: false,
                keep: false,
            });
        }
        match definition
            .output
            .as_deref()
            .map(|key| schedule.position(key))
        {
            Some(Some(index)) => schedule.slots[index].keep = true,
            Some(None) => {}
            None => {
                for index in 0..n {
                    if schedule.dependent_of(index, 0).is_none() {
                        schedule.slots[index].keep = true;
                    }
                }
            }
        }
        for step in &definition.steps {
            let source = step
                .condition
                .as_ref()
                .and_then(|c| condition_source(&c.pointer));
            if let Some((ConditionSource::Step(key), _)) = source {
                if let Some(index) = schedule.position(key) {
                    schedule.slots[index].keep = true;
                }
            }
        }
        schedule
    }

    /// Records what happened to an attempt: it started (`Running`) or
    /// ended, or the step was skipped. An attempt older than one recorded
    /// already, and anything about a step that is finished or failed for
    /// good, changes nothing. Steps it makes ready or skipped are handed
    /// out by the next [`plan`](Self::plan).
    pub fn record(&mut self, step: &StepRun) {
        let index = step.step_index as usize;
        let Some(slot) = self.slots.get(index) else {
            return;
        };
        let settled = matches!(
            slot.state,
            State::Succeeded | State::Skipped | State::Failed | State::Cancelled
        );
        if settled || step.attempt < slot.attempt {
            return;
        }
        self.leave(index);
        self.slots[index].attempt = step.attempt;
        if step.status == StepStatus::Running && self.is_wait(index) {
            self.set_awaiting(index, step.started_at);
        } else if step.status == StepStatus::Running {
            self.slots[index].state = State::Running;
            self.running += 1;
        } else {
            self.apply(index, step, true);
        }
    }

    /// Takes step `index` out of its current state's bookkeeping.
    fn leave(&mut self, index: usize) {
        match self.slots[index].state {
            State::Running => self.running -= 1,
            State::Ready => self.ready.retain(|&i| i != index),
            State::Retry => self.retries.retain(|&(_, i)| i != index),
            State::Awaiting => self.waits.retain(|&(i, _)| i != index),
            State::Waiting
            | State::Succeeded
            | State::Skipped
            | State::Failed
            | State::Cancelled => {}
        }
    }

    /// Puts step `index` where its latest attempt `step` (not running)
    /// leaves it; with `cascade`, decides the dependents it finishes.
    fn apply(&mut self, index: usize, step: &StepRun, cascade: bool) {
        match step.status {
            StepStatus::Running => {}
            StepStatus::Succeeded => {
                if let Some(number) = step.signal {
                    self.received.insert(number);
                }
                self.slots[index].state = State::Succeeded;
                self.finished += 1;
                if self.slots[index].keep {
                    let output = step.output.clone().unwrap_or(Value::Null);
                    self.kept.push((index, output));
                }
                if cascade {
                    self.cascade(index, true);
                }
            }
            StepStatus::Skipped => {
                self.slots[index].state = State::Skipped;
                self.finished += 1;
                if cascade {
                    self.cascade(index, false);
                }
            }
            StepStatus::Interrupted => self.set_ready(index),
            StepStatus::Failed | StepStatus::TimedOut => match step.retry_at {
                Some(due) => {
                    self.slots[index].state = State::Retry;
                    self.retries.push((due, index));
                }
                None => {
                    self.slots[index].state = State::Failed;
                    let status = if step.status == StepStatus::TimedOut {
                        RunStatus::TimedOut
                    } else {
                        RunStatus::Failed
                    };
                    let error = step.error.clone().map_or_else(
                        || RunError {
                            message: format!("step {} failed", step.step_key),
                            step: Some(step.step_key.clone()),
                            detail: None,
                        },
                        |f| RunError {
                            message: f.message,
                            step: Some(step.step_key.clone()),
                            detail: f.detail,
                        },
                    );
                    // The earliest failure decides, whatever order the
                    // history came in.
                    let earlier = self
                        .failure
                        .as_ref()
                        .is_some_and(|(at, _, _)| at.is_some() && *at <= step.finished_at);
                    if !earlier {
                        self.failure = Some((step.finished_at, status, error));
                    }
                }
            },
            StepStatus::Cancelled => {
                self.slots[index].state = State::Cancelled;
                self.cancelled.get_or_insert_with(|| RunError {
                    message: "cancelled".into(),
                    step: Some(step.step_key.clone()),
                    detail: None,
                });
            }
        }
    }

    /// What to do now: skips decided since the last plan, attempts to
    /// start (marked running), when to plan again, or the run's end.
    pub fn plan(&mut self, now: DateTime<Utc>) -> Plan {
        let mut plan = Plan::default();
        self.plan_into(now, &mut plan);
        plan
    }

    /// As [`plan`](Self::plan), into `plan`, which is cleared first and
    /// whose buffers are kept: a worker that plans after every attempt
    /// allocates nothing for it.
    pub fn plan_into(&mut self, now: DateTime<Utc>, plan: &mut Plan) {
        plan.skip.clear();
        plan.start.clear();
        plan.waited.clear();
        plan.wake_at = None;
        plan.end = None;
        let mut at = 0;
        while at < self.retries.len() {
            if self.retries[at].0 <= now {
                let (_, index) = self.retries.swap_remove(at);
                self.set_ready(index);
            } else {
                at += 1;
            }
        }
        let next_wait = self.settle_waits(now, &mut plan.waited);
        plan.skip.append(&mut self.skipped);
        if let Some(end) = self.end() {
            plan.end = Some(end);
            return;
        }
        // Wait steps start whatever the parallel limit: they run nothing.
        let mut at = 0;
        while at < self.ready.len() {
            let index = self.ready[at];
            if self.is_wait(index) {
                self.ready.remove(at);
                let slot = &mut self.slots[index];
                slot.attempt += 1;
                let attempt = slot.attempt;
                self.set_awaiting(index, now);
                plan.start.push(Start { index, attempt });
            } else {
                at += 1;
            }
        }
        while self.running < self.limit {
            let Some(index) = self.ready.pop() else {
                break;
            };
            let slot = &mut self.slots[index];
            slot.state = State::Running;
            slot.attempt += 1;
            self.running += 1;
            plan.start.push(Start {
                index,
                attempt: slot.attempt,
            });
        }
        plan.start.sort_by_key(|s| s.index);
        plan.wake_at = self
            .retries
            .iter()
            .map(|&(due, _)| due)
            .chain(next_wait)
            .min();
        if self.running == 0 && plan.wake_at.is_none() && self.waits.is_empty() {
            // Nothing runs, nothing will: only a cycle (which validation
            // refuses) leaves steps waiting forever.
            plan.end = Some(End::Failed {
                status: RunStatus::Failed,
                error: RunError {
                    message: "no step can start: the steps left wait for each other".into(),
                    step: None,
                    detail: None,
                },
            });
        }
    }

    /// Tells the schedule the run's signals (every one stored, in the
    /// order they arrived; a longer list than before adds the new ones).
    /// Returns whether it holds signals it did not have: plan again.
    pub fn receive(&mut self, signals: &[Signal]) -> bool {
        if signals.len() <= self.signals.len() {
            return false;
        }
        self.signals = signals.to_vec();
        true
    }

    /// Whether a wait step waits for a signal now: the run's owner then
    /// looks for new signals while it waits.
    #[must_use]
    pub fn awaits_signal(&self) -> bool {
        self.waits
            .iter()
            .any(|&(index, _)| self.wait_of(index).is_some_and(|w| w.signal.is_some()))
    }

    /// How many wait steps wait now.
    #[must_use]
    pub fn waiting(&self) -> usize {
        self.waits.len()
    }

    /// Ends the waits that are over at `now` (in step order, so of two
    /// waits for one signal name the first receives the oldest signal),
    /// recording each in `waited`; returns when the next one is due.
    fn settle_waits(
        &mut self,
        now: DateTime<Utc>,
        waited: &mut Vec<Waited>,
    ) -> Option<DateTime<Utc>> {
        let mut next: Option<DateTime<Utc>> = None;
        let mut at = 0;
        while at < self.waits.len() {
            let (index, started) = self.waits[at];
            let Some(wait) = self.wait_of(index).cloned() else {
                // Not a wait step (another definition): it ends at once.
                self.waits.remove(at);
                self.finish_wait(index, WaitOutcome::Slept, now, waited);
                continue;
            };
            match self.wait_state(&wait, started, now) {
                Ok(outcome) => {
                    self.waits.remove(at);
                    if let WaitOutcome::Signal { number, .. } = &outcome {
                        self.received.insert(*number);
                    }
                    self.finish_wait(index, outcome, now, waited);
                }
                Err(due) => {
                    next = match (next, due) {
                        (Some(a), Some(b)) => Some(a.min(b)),
                        (a, b) => a.or(b),
                    };
                    at += 1;
                }
            }
        }
        next
    }

    /// How the wait of a step that started at `started` ended at `now`, or
    /// when to look again (`None`: only when a signal arrives).
    fn wait_state(
        &self,
        wait: &Wait,
        started: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<WaitOutcome, Option<DateTime<Utc>>> {
        let after = |d: std::time::Duration| {
            chrono::TimeDelta::from_std(d)
                .ok()
                .and_then(|d| started.checked_add_signed(d))
                .unwrap_or(DateTime::<Utc>::MAX_UTC)
        };
        let slept = wait.sleep.map(after);
        let Some(name) = &wait.signal else {
            return match slept {
                Some(end) if end > now => Err(Some(end)),
                _ => Ok(WaitOutcome::Slept),
            };
        };
        let timeout = wait.timeout.map(after);
        let found = self.signals.iter().enumerate().find(|(number, signal)| {
            signal.name == *name
                && !self.received.contains(&(*number as u32))
                && timeout.is_none_or(|t| signal.received_at <= t)
        });
        match found {
            Some((number, signal)) => match slept {
                Some(end) if end > now => Err(Some(end)),
                _ => Ok(WaitOutcome::Signal {
                    number: number as u32,
                    payload: signal.payload.clone(),
                }),
            },
            None => match timeout {
                Some(t) if t <= now => Ok(match wait.on_timeout {
                    OnTimeout::Continue => WaitOutcome::TimedOutContinue,
                    _ => WaitOutcome::TimedOutFail {
                        message: format!(
                            "no signal {name:?} arrived within {} ms",
                            wait.timeout.unwrap_or_default().as_millis()
                        ),
                    },
                }),
                timeout => Err(timeout),
            },
        }
    }

    /// Records the end of wait step `index`'s wait: it succeeds (its
    /// dependents are decided) or fails for good.
    fn finish_wait(
        &mut self,
        index: usize,
        outcome: WaitOutcome,
        now: DateTime<Utc>,
        waited: &mut Vec<Waited>,
    ) {
        let attempt = self.slots[index].attempt;
        match &outcome {
            WaitOutcome::TimedOutFail { message } => {
                self.slots[index].state = State::Failed;
                if self.failure.is_none() {
                    self.failure = Some((
                        Some(now),
                        RunStatus::Failed,
                        RunError {
                            message: message.clone(),
                            step: Some(self.definition.steps[index].key.clone()),
                            detail: None,
                        },
                    ));
                }
            }
            WaitOutcome::Signal { payload, .. } => {
                let output = payload.clone();
                self.succeed_wait(index, output);
            }
            WaitOutcome::Slept | WaitOutcome::TimedOutContinue => {
                self.succeed_wait(index, Value::Null);
            }
        }
        waited.push(Waited {
            index,
            attempt,
            outcome,
        });
    }

    fn succeed_wait(&mut self, index: usize, output: Value) {
        self.slots[index].state = State::Succeeded;
        self.finished += 1;
        if self.slots[index].keep {
            self.kept.push((index, output));
        }
        self.cascade(index, true);
    }

    /// Whether step `index` is a wait step.
    fn is_wait(&self, index: usize) -> bool {
        self.wait_of(index).is_some()
    }

    fn wait_of(&self, index: usize) -> Option<&Wait> {
        self.definition
            .steps
            .get(index)
            .and_then(|s| s.wait.as_ref())
    }

    /// Puts wait step `index`, whose attempt started at `started`, in
    /// `waits`.
    fn set_awaiting(&mut self, index: usize, started: DateTime<Utc>) {
        self.slots[index].state = State::Awaiting;
        let at = self.waits.partition_point(|&(i, _)| i < index);
        self.waits.insert(at, (index, started));
    }

    /// The run's end, if it is over.
    fn end(&mut self) -> Option<End> {
        if let Some((_, status, error)) = &self.failure {
            return Some(End::Failed {
                status: *status,
                error: error.clone(),
            });
        }
        if let Some(error) = &self.cancelled {
            return Some(End::Failed {
                status: RunStatus::Cancelled,
                error: error.clone(),
            });
        }
        (self.finished == self.slots.len()).then(|| End::Succeeded {
            output: self.output(),
        })
    }

    /// The run's output: the declared step's, the single sink's, or the
    /// sinks' by key. Taken out of the schedule: asked for once.
    fn output(&mut self) -> Value {
        let mut take = |index: usize| {
            self.kept
                .iter()
                .position(|&(i, _)| i == index)
                .map(|at| self.kept.swap_remove(at).1)
        };
        if let Some(key) = &self.definition.output {
            return self
                .definition
                .steps
                .iter()
                .position(|s| s.key == *key)
                .and_then(&mut take)
                .unwrap_or(Value::Null);
        }
        let n = self.slots.len();
        let sinks: Vec<usize> = match &self.edges {
            Edges::Linear => n.checked_sub(1).into_iter().collect(),
            Edges::Graph { dependents, .. } => {
                (0..n).filter(|&i| dependents[i].is_empty()).collect()
            }
        };
        if let &[sink] = sinks.as_slice() {
            return take(sink).unwrap_or(Value::Null);
        }
        let mut outputs = Map::new();
        for index in sinks {
            if let Some(output) = take(index) {
                outputs.insert(self.definition.steps[index].key.clone(), output);
            }
        }
        Value::Object(outputs)
    }

    /// Decides every waiting step whose dependencies are all finished.
    fn settle(&mut self) {
        for index in 0..self.slots.len() {
            let slot = self.slots[index];
            if slot.state == State::Waiting && slot.unfinished == 0 && self.decide(index) {
                self.cascade(index, false);
            }
        }
    }

    /// Step `index` just finished (succeeded or skipped): its dependents
    /// that were waiting only for it are decided.
    fn cascade(&mut self, index: usize, succeeded: bool) {
        // Steps skipped on the way, whose dependents are decided in turn
        // (no allocation unless a skip flows on).
        let mut skipped: Vec<usize> = Vec::new();
        let (mut index, mut succeeded) = (index, succeeded);
        loop {
            for k in 0.. {
                let Some(next) = self.dependent_of(index, k) else {
                    break;
                };
                let slot = &mut self.slots[next];
                slot.unfinished = slot.unfinished.saturating_sub(1);
                slot.dependency_succeeded |= succeeded;
                if slot.unfinished == 0 && slot.state == State::Waiting && self.decide(next) {
                    skipped.push(next);
                }
            }
            match skipped.pop() {
                Some(next) => (index, succeeded) = (next, false),
                None => break,
            }
        }
    }

    /// Makes step `index`, whose dependencies are finished, ready or
    /// skipped; `true` if skipped (the caller cascades).
    fn decide(&mut self, index: usize) -> bool {
        let slot = self.slots[index];
        let reason = if slot.dependent && !slot.dependency_succeeded {
            Some(SkipReason::DependenciesSkipped)
        } else {
            self.check_condition(index)
                .err()
                .map(SkipReason::ConditionFalse)
        };
        match reason {
            None => {
                self.set_ready(index);
                false
            }
            Some(reason) => {
                self.slots[index].state = State::Skipped;
                self.finished += 1;
                self.skipped.push(Skip { index, reason });
                true
            }
        }
    }

    /// Whether step `index`'s condition holds (it does without one).
    fn check_condition(&self, index: usize) -> Result<(), FilterMiss> {
        let Some(condition) = &self.definition.steps[index].condition else {
            return Ok(());
        };
        let found = match condition_source(&condition.pointer) {
            Some((ConditionSource::Input, rest)) => self.input.pointer(rest),
            Some((ConditionSource::Step(key), rest)) => self
                .position(key)
                .and_then(|at| self.kept.iter().find(|&&(i, _)| i == at))
                .and_then(|(_, output)| output.pointer(rest)),
            None => None,
        };
        condition.check_found(found)
    }

    fn set_ready(&mut self, index: usize) {
        self.slots[index].state = State::Ready;
        let at = self.ready.partition_point(|&i| i > index);
        self.ready.insert(at, index);
    }

    fn position(&self, key: &str) -> Option<usize> {
        self.definition.steps.iter().position(|s| s.key == key)
    }

    fn dependency_count(&self, index: usize) -> u32 {
        match &self.edges {
            Edges::Linear => u32::from(index > 0),
            Edges::Graph { dependencies, .. } => dependencies[index].len() as u32,
        }
    }

    /// The `k`th dependency of step `index`.
    fn dependency(&self, index: usize, k: usize) -> Option<usize> {
        match &self.edges {
            Edges::Linear => (k == 0 && index > 0).then(|| index - 1),
            Edges::Graph { dependencies, .. } => dependencies[index].get(k).copied(),
        }
    }

    /// The `k`th step that depends on step `index`.
    fn dependent_of(&self, index: usize, k: usize) -> Option<usize> {
        match &self.edges {
            Edges::Linear => (k == 0 && index + 1 < self.slots.len()).then_some(index + 1),
            Edges::Graph { dependents, .. } => dependents[index].get(k).copied(),
        }
    }

    /// The positions of the steps `index` depends on, directly or through
    /// others, in step order: whose outputs its handler sees.
    #[must_use]
    pub fn ancestors(&self, index: usize) -> Vec<usize> {
        match &self.edges {
            Edges::Linear => (0..index.min(self.slots.len())).collect(),
            Edges::Graph { dependencies, .. } => {
                let seen = crate::workflow::ancestors(dependencies, index);
                (0..seen.len()).filter(|&i| seen[i]).collect()
            }
        }
    }

    /// Whether no step declares dependencies (each runs after the one
    /// before it, one at a time).
    #[must_use]
    pub fn is_linear(&self) -> bool {
        matches!(self.edges, Edges::Linear)
    }

    /// How many attempts run now.
    #[must_use]
    pub fn running(&self) -> usize {
        self.running
    }

    /// The most attempts that may run at once.
    #[must_use]
    pub fn limit(&self) -> usize {
        self.limit
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod wait_tests;
