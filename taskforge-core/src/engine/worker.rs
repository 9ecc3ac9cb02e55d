//! The worker: drives one run's steps inline in its own task. It does the
//! I/O (claims, commits, lease renewals, calling handlers); what it does
//! next is decided by the state machine, the scheduler
//! ([`crate::run::dag`]: which steps start, which are skipped, how the run
//! ends) and [`crate::run::decide`] (what follows a failed attempt).
//!
//! # One task per run
//!
//! The steps a run has in flight (several, when its definition declares
//! dependencies) are futures in one [`FuturesUnordered`], polled by the
//! run's task, never tasks of their own. The task's loop is the only
//! writer: it asks the [`Schedule`] for a plan, writes the starts (and the
//! skips and succeeded attempts not yet written) in one fenced commit,
//! pushes the handlers' calls, then waits, under [`Worker::guard`] (lease
//! renewal, cancellation, the run's deadline), for the first call to end
//! or a retry to fall due, records that, and plans again. When a step
//! fails for good, or the run is cancelled or times out, the attempts still
//! running are dropped and recorded as cancelled (or timed out) in the
//! run's final commit.
//!
//! A definition without dependencies has one attempt in flight at a time,
//! and keeps the linear path's write saving: a succeeded attempt is
//! written with the next step's start (or the run's end). In a DAG, a
//! succeeded attempt that no start follows at once is written alone, so
//! that no finished branch waits for a sibling to become durable.
//!
//! # Waits and parking
//!
//! A [wait step](crate::StepDefinition::wait) calls no handler: its
//! attempt is recorded running, and the scheduler ends it when its time or
//! signal comes ([`Plan::waited`](crate::dag::Plan::waited)). When nothing
//! runs and only waits are left (wait steps, a retry's backoff), and the
//! next is further off than [`EngineConfig::park_after`](crate::EngineConfig::park_after),
//! the worker parks the run: one fenced commit makes it
//! [`Waiting`](RunStatus::Waiting) with its `wake_at` (the next wait's due
//! time, or its deadline) and no lease, and the task ends, freeing its
//! engine slot. A parked run that is due is claimed like a queued one; its
//! new worker wakes it (`Wake`) and goes on from its stored history.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use futures::future::{BoxFuture, Either};
use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};

use chrono::{DateTime, TimeDelta, Utc};
use serde_json::Value;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::shared::Shared;
use super::telemetry;
use super::update::RunUpdate;
use crate::error::StoreError;
use crate::id::{RunId, StepRunId};
use crate::run::dag::{End, Plan, Schedule, Skip, Start, WaitOutcome, Waited};
use crate::run::decide::{self, AfterFailure};
use crate::run::{
    Fence, IllegalTransition, RunError, RunStatus, RunTransition, StepFailure, StepRun, StepStatus,
    StepTransition, WorkflowRun,
};
use crate::secret::SecretValue;
use crate::step::{
    AttemptLog, AttemptLogParts, Captured, LogSink, Redactor, StepContext, StepContextParts,
    StepError, StepExecutor,
};
use crate::store::Store;
use crate::workflow::{StepDefinition, WorkflowDefinition, WorkflowVersion};

/// Why a worker stopped before its run finished.
#[derive(Debug)]
pub(crate) enum Halt {
    /// Another worker owns the run now (or it finished): write nothing more.
    LeaseLost,
    /// The store failed; the run is left for recovery once the lease lapses.
    Store(StoreError),
    /// The state machine refused a transition the worker asked for: a bug,
    /// or a store that returned a record it should not have.
    Illegal(IllegalTransition),
}

impl From<IllegalTransition> for Halt {
    fn from(error: IllegalTransition) -> Self {
        Self::Illegal(error)
    }
}

impl From<StoreError> for Halt {
    fn from(error: StoreError) -> Self {
        if error.is_conflict() {
            Self::LeaseLost
        } else {
            Self::Store(error)
        }
    }
}

/// Claims run `id` and drives it until it finishes or this worker must stop.
pub(crate) async fn execute<S: Store, X: StepExecutor>(
    shared: &Arc<Shared<S, X>>,
    id: RunId,
    cancel: CancellationToken,
) -> Result<(), Halt> {
    let now = shared.now();
    let run = shared
        .store
        .claim_run(id, &shared.config.owner, now, shared.lease_until(now))
        .await?;
    let version = shared.version_of(&run).await?;
    let workflow = telemetry::workflow_name(&shared.store, run.workflow_id).await;
    telemetry::annotate_run_span(&shared.store, &run, &workflow).await;
    let lease_expires = run.lease.as_ref().map_or(now, |l| l.expires_at);
    let worker = Worker {
        shared,
        sink: Arc::clone(shared) as Arc<dyn LogSink>,
        fence: run.fence(),
        input: Arc::clone(&run.input),
        run,
        version,
        workflow,
        cancel,
        lease_expires,
        outputs: Arc::new(Vec::new()),
        run_dirty: false,
        pending: Vec::new(),
        announce_start: false,
        waits: Vec::new(),
        watch_signals: false,
    };
    // On the heap, once: the driving future is large (the schedule, the
    // calls in flight, the store calls it awaits), and a task's future is
    // moved several times on its way to the runtime.
    Box::pin(worker.drive()).await
}

/// How a guarded wait ended.
enum Guarded<T> {
    Done(T),
    Cancelled,
    RunTimedOut,
    LeaseLost,
    /// New signals arrived for the run while a wait step waits for one.
    Signalled,
}

/// How a handler's call ended: its result, or the step's timeout.
type CallResult = Result<Result<Value, StepError>, std::time::Duration>;

/// A running attempt's call, as the run's task polls it: it yields the
/// step's position with the result.
type Call = BoxFuture<'static, (usize, CallResult)>;

/// A running attempt: its record (stored `Running`) and what the worker
/// needs when it ends.
struct InFlight {
    record: StepRun,
    log: Arc<AttemptLog>,
    redactor: Option<Arc<Redactor>>,
    began: Instant,
}

/// The attempts in flight: their calls, and their records by position.
/// A definition without dependencies has one call at most in flight: it
/// is kept as `solo` and awaited as it is, which spares the set's
/// bookkeeping on the path every linear step takes.
#[derive(Default)]
struct Flights {
    calls: FuturesUnordered<Call>,
    solo: Option<Call>,
    attempts: Vec<InFlight>,
}

impl Flights {
    /// Whether no call is in flight.
    fn is_idle(&self) -> bool {
        self.solo.is_none() && self.calls.is_empty()
    }

    fn take(&mut self, index: usize) -> Option<InFlight> {
        let at = self
            .attempts
            .iter()
            .position(|a| a.record.step_index as usize == index)?;
        Some(self.attempts.swap_remove(at))
    }
}

/// Why the run stops with attempts in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    Cancelled,
    TimedOut,
}

struct Worker<'a, S, X> {
    shared: &'a Shared<S, X>,
    /// Where step attempts' logs go: the engine.
    sink: Arc<dyn LogSink>,
    run: WorkflowRun,
    /// The fence of every write: the claimed epoch, status `Running` once started.
    fence: Fence,
    version: Arc<WorkflowVersion>,
    /// The workflow's name, for metric labels and spans.
    workflow: Arc<str>,
    input: Arc<Value>,
    cancel: CancellationToken,
    lease_expires: DateTime<Utc>,
    /// The outputs of the steps that succeeded, as they became durable
    /// (in a definition without dependencies: in step order), handed to
    /// the steps after them.
    outputs: Arc<Vec<(String, Value)>>,
    /// The run record changed and goes out with the next commit.
    run_dirty: bool,
    /// Succeeded attempts and skipped steps not yet written: each goes out
    /// with the next commit (the next step's start, or the run's end),
    /// saving one durable write per step. The output is still stored
    /// before any step that reads it starts.
    pending: Vec<StepRun>,
    /// `RunStarted` is announced once the start is durable.
    announce_start: bool,
    /// The attempts of wait steps that wait (stored `Running`).
    waits: Vec<StepRun>,
    /// Whether a wait step waits for a signal: [`Worker::guard`] then
    /// returns when the store holds new signals.
    watch_signals: bool,
}

impl<S: Store, X: StepExecutor> Worker<'_, S, X> {
    async fn drive(mut self) -> Result<(), Halt> {
        if self.run.cancel_requested {
            self.cancel.cancel();
        }
        let resumed = self.run.status == RunStatus::Running;
        let woken = self.run.status == RunStatus::Waiting;
        if resumed {
            self.transition(RunTransition::Resume)?;
        } else if woken {
            // Written with the next commit: the next start, or the run
            // parked again.
            self.transition(RunTransition::Wake)?;
            self.run_dirty = true;
            let run_id = self.run.id;
            self.shared.emit(|| RunUpdate::RunStarted {
                run_id,
                resumed: true,
            });
        } else {
            if self.cancel.is_cancelled() {
                return self
                    .finish(RunTransition::Cancel, cancelled(None), Vec::new())
                    .await;
            }
            let now = self.shared.now();
            self.transition(RunTransition::Start)?;
            self.run.deadline = self
                .version
                .definition
                .timeout
                .and_then(|t| TimeDelta::from_std(t).ok())
                .and_then(|t| now.checked_add_signed(t));
            // Written together with the first step's start.
            self.run_dirty = true;
            self.announce_start = true;
        }
        if resumed {
            metrics::counter!(telemetry::RUNS_RESUMED, "workflow" => Arc::clone(&self.workflow))
                .increment(1);
            let run_id = self.run.id;
            self.shared
                .emit(|| RunUpdate::RunStarted { run_id, resumed });
        }
        let version = Arc::clone(&self.version);
        let input = Arc::clone(&self.input);
        let mut schedule = if resumed || woken {
            self.recover(&version.definition, &input).await?
        } else if let Some(original) = self.run.resumed_from {
            self.carry(original, &version.definition, &input).await?
        } else {
            Schedule::new(&version.definition, &input)
        };
        schedule.receive(&self.run.signals);
        let mut flights = Flights::default();
        let mut plan = Plan::default();
        loop {
            let now = self.shared.now();
            schedule.plan_into(now, &mut plan);
            for skip in plan.skip.drain(..) {
                self.skip(&version.definition, skip);
            }
            for waited in plan.waited.drain(..) {
                self.waited(waited, now)?;
            }
            if let Some(end) = plan.end.take() {
                return self.end(end, flights).await;
            }
            if plan.start.is_empty() {
                if flights.is_idle() {
                    // Nothing runs: only waits are left.
                    if self.cancel.is_cancelled() {
                        return self.stop(Stop::Cancelled, flights, None).await;
                    }
                    if self.run.deadline.is_some_and(|d| d <= now) {
                        return self.stop(Stop::TimedOut, flights, None).await;
                    }
                    if self.parks(plan.wake_at, now) {
                        return self.park(plan.wake_at).await;
                    }
                }
                if !self.pending.is_empty() {
                    // Nothing starts now to carry them: write them alone.
                    self.commit(Vec::new()).await?;
                }
            } else {
                if self.cancel.is_cancelled() {
                    return self.stop(Stop::Cancelled, flights, None).await;
                }
                if self.run.deadline.is_some_and(|d| d <= now) {
                    return self.stop(Stop::TimedOut, flights, None).await;
                }
                let waits = self
                    .start(&mut schedule, &plan.start, &mut flights, now)
                    .await?;
                if waits {
                    // Wait steps started: see at once whether what they
                    // wait for is there, with the latest signals.
                    if schedule.awaits_signal() {
                        self.refresh_signals().await;
                        schedule.receive(&self.run.signals);
                    }
                    continue;
                }
            }
            self.watch_signals = schedule.awaits_signal();
            let wake = plan.wake_at.map(|at| self.instant_at(at));
            let calls = &mut flights.calls;
            let solo = &mut flights.solo;
            let next = self
                .guard(async move {
                    if let Some(call) = solo {
                        let done = tokio::select! {
                            biased;
                            done = call => Some(done),
                            () = sleep_until_opt(wake) => None,
                        };
                        if done.is_some() {
                            *solo = None;
                        }
                        return done;
                    }
                    if calls.is_empty() {
                        sleep_until_opt(wake).await;
                        return None;
                    }
                    tokio::select! {
                        biased;
                        done = calls.next() => done,
                        () = sleep_until_opt(wake) => None,
                    }
                })
                .await?;
            let mut done = match next {
                // A retry or a wait fell due.
                Guarded::Done(None) => continue,
                Guarded::Signalled => {
                    schedule.receive(&self.run.signals);
                    continue;
                }
                Guarded::Done(Some(done)) => done,
                Guarded::Cancelled => return self.stop(Stop::Cancelled, flights, None).await,
                Guarded::RunTimedOut => return self.stop(Stop::TimedOut, flights, None).await,
                Guarded::LeaseLost => {
                    self.drop_flights(flights, "interrupted").await;
                    return Err(Halt::LeaseLost);
                }
            };
            // Calls that ended together are recorded before planning again,
            // so their successes go out in one write.
            loop {
                let (index, result) = done;
                if let Some(stop) = self
                    .ended(&mut schedule, &mut flights, index, result)
                    .await?
                {
                    return self.stop(Stop::Cancelled, flights, Some(stop)).await;
                }
                if flights.calls.is_empty() {
                    break;
                }
                match flights.calls.next().now_or_never() {
                    Some(Some(next)) => done = next,
                    _ => break,
                }
            }
        }
    }

    /// Rebuilds a resumed run's schedule from its stored step attempts
    /// ([`Schedule::resume`]): attempts left running by a lost worker are
    /// recorded as interrupted (their steps run again), succeeded steps
    /// keep their outputs and never run again.
    async fn recover<'d>(
        &mut self,
        definition: &'d WorkflowDefinition,
        input: &'d Value,
    ) -> Result<Schedule<'d>, Halt> {
        let history = self.shared.store.list_step_runs(self.run.id).await?;
        let (schedule, left_running) = Schedule::resume(definition, input, &history);
        // The latest attempt of each wait step that waits.
        let mut waits: Vec<StepRun> = Vec::new();
        for step in &history {
            let is_wait = definition
                .steps
                .get(step.step_index as usize)
                .is_some_and(StepDefinition::is_wait);
            if !is_wait || step.status != StepStatus::Running {
                continue;
            }
            match waits.iter_mut().find(|w| w.step_index == step.step_index) {
                Some(kept) if kept.attempt >= step.attempt => {}
                Some(kept) => *kept = step.clone(),
                None => waits.push(step.clone()),
            }
        }
        self.waits = waits;
        let mut succeeded: Vec<&StepRun> = history
            .iter()
            .filter(|s| s.status == StepStatus::Succeeded)
            .collect();
        succeeded.sort_by_key(|s| s.step_index);
        self.outputs = Arc::new(
            succeeded
                .into_iter()
                .map(|s| (s.step_key.clone(), s.output.clone().unwrap_or(Value::Null)))
                .collect(),
        );
        if !left_running.is_empty() {
            let now = self.shared.now();
            let mut interrupted = Vec::with_capacity(left_running.len());
            for mut step in left_running {
                tracing::info!(step = %step.step_key, attempt = step.attempt, "interrupting an attempt whose worker was lost");
                step.transition(StepTransition::Interrupt, now)?;
                interrupted.push(step);
            }
            self.commit(interrupted).await?;
        }
        Ok(schedule)
    }

    /// Starts a run that resumes `original`: the steps that succeeded there
    /// are carried into this run (copies that name the attempt they come
    /// from, written with the first commit), so only the others run, from
    /// a first attempt. Steps the pinned version does not name at the same
    /// position are not carried.
    async fn carry<'d>(
        &mut self,
        original: RunId,
        definition: &'d WorkflowDefinition,
        input: &'d Value,
    ) -> Result<Schedule<'d>, Halt> {
        let history = self.shared.store.list_step_runs(original).await?;
        let run_id = self.run.id;
        let mut carried: Vec<StepRun> = history
            .into_iter()
            .filter(|step| {
                step.status == StepStatus::Succeeded
                    && definition
                        .steps
                        .get(step.step_index as usize)
                        .is_some_and(|d| d.key == step.step_key)
            })
            .map(|step| StepRun {
                id: StepRunId::new(),
                run_id,
                carried_from: Some(step.id),
                signal: None,
                ..step
            })
            .collect();
        carried.sort_by_key(|step| step.step_index);
        let (schedule, _) = Schedule::resume(definition, input, &carried);
        self.outputs = Arc::new(
            carried
                .iter()
                .map(|s| (s.step_key.clone(), s.output.clone().unwrap_or(Value::Null)))
                .collect(),
        );
        self.pending.extend(carried);
        Ok(schedule)
    }

    /// Records a skipped step; it is written with the next commit.
    fn skip(&mut self, definition: &WorkflowDefinition, skip: Skip) {
        let key = &definition.steps[skip.index].key;
        let record = StepRun::skipped(
            self.run.id,
            key.clone(),
            skip.index as u32,
            skip.reason.to_string(),
            self.shared.now(),
        );
        self.pending.push(record);
    }

    /// Starts `starts`: their records go out in one commit (with whatever
    /// is pending), then their handlers are called; a wait step's attempt
    /// is kept to be ended when its wait is over. Returns whether a wait
    /// step started.
    async fn start(
        &mut self,
        schedule: &mut Schedule<'_>,
        starts: &[Start],
        flights: &mut Flights,
        now: DateTime<Utc>,
    ) -> Result<bool, Halt> {
        let version = Arc::clone(&self.version);
        let steps = &version.definition.steps;
        // Room for what is pending too: the commit appends it.
        let mut records = Vec::with_capacity(starts.len() + self.pending.len());
        records.extend(starts.iter().map(|s| {
            let key = steps[s.index].key.as_str();
            StepRun::start(self.run.id, key, s.index as u32, s.attempt, now)
        }));
        let records = self.commit_starts(records).await?;
        let mut waits = false;
        for record in records {
            let index = record.step_index as usize;
            if steps[index].is_wait() {
                let (run_id, step_key, attempt) =
                    (self.run.id, record.step_key.clone(), record.attempt);
                self.shared.emit(|| RunUpdate::StepStarted {
                    run_id,
                    step_key,
                    attempt,
                });
                // The wait counts from the attempt's recorded start.
                schedule.record(&record);
                self.waits.push(record);
                waits = true;
                continue;
            }
            self.call(schedule, &steps[index], record, flights).await;
        }
        Ok(waits)
    }

    /// Ends the attempt of a wait step whose wait is over, as the
    /// schedule decided: a success goes out with the next commit, a
    /// failure with the run's end (which the same plan gives).
    fn waited(&mut self, waited: Waited, now: DateTime<Utc>) -> Result<(), Halt> {
        let Waited {
            index,
            attempt,
            outcome,
        } = waited;
        let mut record = match self
            .waits
            .iter()
            .position(|w| w.step_index as usize == index && w.attempt == attempt)
        {
            Some(at) => self.waits.swap_remove(at),
            None => {
                let key = self.version.definition.steps[index].key.clone();
                tracing::warn!(step = %key, attempt, "a wait ended whose attempt is unknown; recording it anew");
                StepRun::start(self.run.id, key, index as u32, attempt, now)
            }
        };
        match outcome {
            WaitOutcome::Signal { number, payload } => {
                record.transition(StepTransition::Succeed, now)?;
                record.output = Some(payload);
                record.signal = Some(number);
            }
            WaitOutcome::TimedOutFail { message } => {
                record.transition(StepTransition::Fail, now)?;
                let run_id = self.run.id;
                let step_key = record.step_key.clone();
                let error = message.clone();
                self.shared.emit(|| RunUpdate::StepFailed {
                    run_id,
                    step_key,
                    attempt,
                    error,
                    retry_at: None,
                });
                record.error = Some(StepFailure {
                    message,
                    terminal: true,
                    detail: None,
                });
            }
            // Slept, or timed out and goes on.
            _ => {
                record.transition(StepTransition::Succeed, now)?;
                record.output = Some(Value::Null);
            }
        }
        self.pending.push(record);
        Ok(())
    }

    /// Whether to park the run rather than wait in this worker, when
    /// nothing runs: its next wait ends further off than `park_after`, or
    /// it waits for a signal alone.
    fn parks(&self, wake_at: Option<DateTime<Utc>>, now: DateTime<Utc>) -> bool {
        let threshold =
            TimeDelta::from_std(self.shared.config.park_after).unwrap_or(TimeDelta::MAX);
        wake_at.is_none_or(|at| at.signed_duration_since(now) > threshold)
    }

    /// Parks the run until `wake_at` (or its deadline, if sooner; with
    /// neither, until a signal): one fenced commit makes it `Waiting`
    /// without a lease, with whatever is pending. The worker is done.
    async fn park(&mut self, wake_at: Option<DateTime<Utc>>) -> Result<(), Halt> {
        let wake_at = match (wake_at, self.run.deadline) {
            (Some(at), Some(deadline)) => Some(at.min(deadline)),
            (at, deadline) => at.or(deadline),
        };
        self.transition(RunTransition::Park)?;
        self.run.wake_at = wake_at;
        self.run_dirty = true;
        self.commit(Vec::new()).await?;
        let run_id = self.run.id;
        self.shared
            .emit(|| RunUpdate::RunWaiting { run_id, wake_at });
        if let Some(at) = wake_at {
            // This engine's dispatcher looks for it when it is due (a
            // moment after, so that its clock has passed `at` too).
            let slack = std::time::Duration::from_millis(2);
            self.shared.wake_later(self.instant_at(at) + slack);
        }
        match wake_at {
            Some(at) => tracing::info!(wake_at = %at, "run parked"),
            None => tracing::info!("run parked until a signal"),
        }
        Ok(())
    }

    /// Reads the run's stored signals (a failed read changes nothing: the
    /// next look, or the park's merge, catches up).
    async fn refresh_signals(&mut self) {
        match self.shared.store.get_run(self.run.id).await {
            Ok(stored) if stored.signals.len() > self.run.signals.len() => {
                self.run.signals = stored.signals;
            }
            Ok(_) => {}
            Err(error) => tracing::debug!(%error, "reading the run's signals failed"),
        }
    }

    /// Calls the handler of the attempt `record` (stored running), adding
    /// the call to `flights`.
    async fn call(
        &mut self,
        schedule: &Schedule<'_>,
        step: &StepDefinition,
        record: StepRun,
        flights: &mut Flights,
    ) {
        let (run_id, index, attempt) = (self.run.id, record.step_index as usize, record.attempt);
        self.shared.emit(|| RunUpdate::StepStarted {
            run_id,
            step_key: step.key.clone(),
            attempt,
        });
        let (secrets, unreadable) =
            match super::secrets::open_step_secrets(self.shared, &step.secrets).await {
                Ok(secrets) => (secrets, None),
                Err(error) => (Arc::from([]), Some(error)),
            };
        let redactor = Redactor::new(
            secrets
                .iter()
                .map(|(name, value)| (name.as_str(), value.expose())),
        )
        .map(Arc::new);
        let log = Arc::new(AttemptLog::new(AttemptLogParts {
            run_id,
            step_run_id: record.id,
            step_key: step.key.clone(),
            attempt,
            max_lines: self.shared.config.max_log_lines,
            max_bytes: self.shared.config.max_log_bytes,
            sink: Arc::clone(&self.sink),
            redact: redactor.clone(),
        }));
        let outputs = if schedule.is_linear() {
            Arc::clone(&self.outputs)
        } else {
            self.ancestor_outputs(schedule, index)
        };
        let ctx = self.context(
            step,
            attempt,
            outputs,
            Arc::clone(&log),
            secrets,
            redactor.clone(),
        );
        let call = match unreadable {
            None => Either::Left(call_handler(&self.shared.executor, &step.handler, ctx)),
            Some(error) => Either::Right(std::future::ready(Err(error))),
        };
        let call = Captured::new(call, Arc::clone(&log), self.shared.config.log_capture_level);
        let span = tracing::info_span!(
            "step",
            step = %step.key,
            attempt,
            run_id = %run_id,
            workflow = %self.workflow,
        );
        let limit = step.timeout.or(self.shared.config.default_step_timeout);
        let call = async move {
            let result = match limit {
                Some(limit) => tokio::time::timeout(limit, call).await.map_err(|_| limit),
                None => Ok(call.await),
            };
            (index, result)
        };
        let call = call.instrument(span).boxed();
        if schedule.is_linear() {
            flights.solo = Some(call);
        } else {
            flights.calls.push(call);
        }
        flights.attempts.push(InFlight {
            record,
            log,
            redactor,
            began: Instant::now(),
        });
    }

    /// The outputs of step `index`'s ancestors that succeeded, in step
    /// order: what its handler sees in a definition with dependencies.
    fn ancestor_outputs(&self, schedule: &Schedule<'_>, index: usize) -> Arc<Vec<(String, Value)>> {
        let steps = &self.version.definition.steps;
        Arc::new(
            schedule
                .ancestors(index)
                .into_iter()
                .filter_map(|at| {
                    let key = &steps[at].key;
                    self.outputs
                        .iter()
                        .find(|(k, _)| k == key)
                        .map(|(k, v)| (k.clone(), v.clone()))
                })
                .collect(),
        )
    }

    /// Records the end of the attempt of step `index`, which returned
    /// `result`: its success waits to go out with the next commit; a
    /// failure followed by a retry is written now; a failure for good
    /// waits for the run's end (which the next plan gives). `Some` with
    /// the attempt if its handler gave up because the run was cancelled.
    async fn ended(
        &mut self,
        schedule: &mut Schedule<'_>,
        flights: &mut Flights,
        index: usize,
        result: CallResult,
    ) -> Result<Option<InFlight>, Halt> {
        let Some(flight) = flights.take(index) else {
            return Ok(None);
        };
        let attempt = flight.record.attempt;
        if let Err(error) = flight.log.flush(true).await {
            tracing::warn!(step = %flight.record.step_key, attempt, %error, "could not store the attempt's last log lines");
        }
        let cancelled = matches!(result, Ok(Err(_))) && self.cancel.is_cancelled();
        metrics::histogram!(
            telemetry::STEP_ATTEMPT_DURATION,
            "workflow" => Arc::clone(&self.workflow),
            "step" => flight.record.step_key.clone(),
            "outcome" => attempt_outcome(&result, cancelled),
        )
        .record(flight.began.elapsed());
        if cancelled {
            // A handler that gives up because it saw cancellation was cancelled.
            return Ok(Some(flight));
        }
        let InFlight {
            mut record,
            redactor,
            ..
        } = flight;
        let (error, transition) = match result {
            Ok(Ok(mut output)) => {
                if let Some(redactor) = &redactor {
                    redactor.redact_value(&mut output);
                }
                record.transition(StepTransition::Succeed, self.shared.now())?;
                record.output = Some(output);
                schedule.record(&record);
                self.pending.push(record);
                return Ok(None);
            }
            Ok(Err(error)) => (error, StepTransition::Fail),
            Err(limit) => (
                StepError::retryable(format!("step timed out after {}ms", limit.as_millis())),
                StepTransition::TimeOut,
            ),
        };
        let now = self.shared.now();
        record.transition(transition, now)?;
        let mut failure = error.to_failure();
        if let Some(redactor) = &redactor {
            failure.message = redactor.redact_str(&failure.message).into_owned();
            if let Some(detail) = &mut failure.detail {
                redactor.redact_value(detail);
            }
        }
        let message = failure.message.clone();
        record.error = Some(failure);
        let definition = &self.version.definition;
        let decision = decide::after_failure(
            definition.retry_policy(&definition.steps[index]),
            attempt,
            transition,
            error.is_terminal(),
            error.retry_after_hint(),
            now,
            fastrand::f64(),
        );
        let retry_at = match decision {
            AfterFailure::Retry(at) => Some(at),
            AfterFailure::Finish(_) => None,
        };
        let run_id = self.run.id;
        self.shared.emit(|| RunUpdate::StepFailed {
            run_id,
            step_key: record.step_key.clone(),
            attempt,
            error: message,
            retry_at,
        });
        record.retry_at = retry_at;
        schedule.record(&record);
        if retry_at.is_some() {
            self.commit(vec![record]).await?;
        } else {
            // The run fails: written with its end, which the next plan gives.
            self.pending.push(record);
        }
        Ok(None)
    }

    /// Ends the run as the schedule says, cancelling the attempts still in
    /// flight (a step failed for good), in one write.
    async fn end(&mut self, end: End, flights: Flights) -> Result<(), Halt> {
        match end {
            End::Succeeded { output } => {
                self.run.output = Some(output);
                let steps = self.close(flights, StepTransition::Cancel, None).await?;
                self.finish(RunTransition::Succeed, None, steps).await
            }
            End::Failed { status, error } => {
                let transition = match status {
                    RunStatus::TimedOut => RunTransition::TimeOut,
                    RunStatus::Cancelled => RunTransition::Cancel,
                    _ => RunTransition::Fail,
                };
                let reason = match &error.step {
                    Some(step) => format!("cancelled: step {step:?} failed"),
                    None => "cancelled: the run failed".to_owned(),
                };
                let steps = self
                    .close(flights, StepTransition::Cancel, Some(reason))
                    .await?;
                self.finish(transition, Some(error), steps).await
            }
        }
    }

    /// Ends the run after it was cancelled or timed out, closing every
    /// attempt in flight (and `also`, one that ended because it saw the
    /// cancellation) in the same write.
    async fn stop(
        &mut self,
        stop: Stop,
        flights: Flights,
        also: Option<InFlight>,
    ) -> Result<(), Halt> {
        let first = also
            .as_ref()
            .map(|a| a.record.step_index)
            .into_iter()
            .chain(flights.attempts.iter().map(|a| a.record.step_index))
            .min();
        let step = first.map(|i| self.version.definition.steps[i as usize].key.clone());
        let (run_transition, step_transition, error) = match stop {
            Stop::Cancelled => (
                RunTransition::Cancel,
                StepTransition::Cancel,
                cancelled(step.as_deref()),
            ),
            Stop::TimedOut => (
                RunTransition::TimeOut,
                StepTransition::TimeOut,
                run_timed_out(step.as_deref()),
            ),
        };
        let message = error.as_ref().map(|e| e.message.clone());
        let mut steps = self
            .close(flights, step_transition, message.clone())
            .await?;
        if let Some(also) = also {
            let mut record = also.record;
            record.transition(step_transition, self.shared.now())?;
            record.error = message.map(|message| StepFailure {
                message,
                terminal: true,
                detail: None,
            });
            steps.push(record);
        }
        self.finish(run_transition, error, steps).await
    }

    /// Drops the calls in flight and closes their attempts with
    /// `transition` and an error saying `reason`, flushing their logs.
    async fn close(
        &mut self,
        flights: Flights,
        transition: StepTransition,
        reason: Option<String>,
    ) -> Result<Vec<StepRun>, Halt> {
        let Flights {
            calls,
            solo,
            attempts,
        } = flights;
        drop((calls, solo));
        if attempts.is_empty() && self.waits.is_empty() {
            return Ok(Vec::new());
        }
        let outcome = match transition {
            StepTransition::TimeOut => "timed_out",
            _ => "cancelled",
        };
        let now = self.shared.now();
        let mut steps = Vec::with_capacity(attempts.len() + self.waits.len());
        for mut record in std::mem::take(&mut self.waits) {
            record.transition(transition, now)?;
            record.error = reason.clone().map(|message| StepFailure {
                message,
                terminal: true,
                detail: None,
            });
            steps.push(record);
        }
        for flight in attempts {
            self.closed(&flight, outcome).await;
            let mut record = flight.record;
            record.transition(transition, now)?;
            record.error = reason.clone().map(|message| StepFailure {
                message,
                terminal: true,
                detail: None,
            });
            steps.push(record);
        }
        steps.sort_by_key(|s| s.step_index);
        Ok(steps)
    }

    /// Drops the calls in flight, when the lease is lost: their logs are
    /// flushed, their records left to the next owner's recovery.
    async fn drop_flights(&mut self, flights: Flights, outcome: &'static str) {
        let Flights {
            calls,
            solo,
            attempts,
        } = flights;
        drop((calls, solo));
        for flight in &attempts {
            self.closed(flight, outcome).await;
        }
    }

    /// The bookkeeping of an attempt whose call was dropped: its last log
    /// lines, and its duration.
    async fn closed(&self, flight: &InFlight, outcome: &'static str) {
        if let Err(error) = flight.log.flush(true).await {
            tracing::warn!(step = %flight.record.step_key, attempt = flight.record.attempt, %error, "could not store the attempt's last log lines");
        }
        metrics::histogram!(
            telemetry::STEP_ATTEMPT_DURATION,
            "workflow" => Arc::clone(&self.workflow),
            "step" => flight.record.step_key.clone(),
            "outcome" => outcome,
        )
        .record(flight.began.elapsed());
    }

    /// Writes the run's terminal status together with `steps`.
    async fn finish(
        &mut self,
        transition: RunTransition,
        error: Option<RunError>,
        steps: Vec<StepRun>,
    ) -> Result<(), Halt> {
        self.transition(transition)?;
        self.run.error = error;
        self.run_dirty = true;
        self.commit(steps).await?;
        let (run_id, status) = (self.run.id, self.run.status);
        let workflow = Arc::clone(&self.workflow);
        metrics::counter!(
            telemetry::RUNS_FINISHED,
            "workflow" => Arc::clone(&workflow),
            "status" => status.as_str(),
        )
        .increment(1);
        if let (Some(from), Some(to)) = (self.run.started_at, self.run.finished_at) {
            let took = (to - from).to_std().unwrap_or_default();
            metrics::histogram!(
                telemetry::RUN_DURATION,
                "workflow" => workflow,
                "status" => status.as_str(),
            )
            .record(took);
        }
        self.shared
            .emit(|| RunUpdate::RunFinished { run_id, status });
        tracing::info!(status = %status, "run finished");
        Ok(())
    }

    fn transition(&mut self, transition: RunTransition) -> Result<(), Halt> {
        let now = self.shared.now();
        Ok(self.run.transition(transition, now)?)
    }

    /// Writes `steps`, with the pending succeeded attempts and the run
    /// record if it changed, in one fenced atomic commit; then announces
    /// what became durable.
    async fn commit(&mut self, steps: Vec<StepRun>) -> Result<(), Halt> {
        let mut batch = std::mem::take(&mut self.pending);
        batch.extend(steps);
        self.write(&batch).await?;
        self.announce(batch);
        Ok(())
    }

    /// Writes the attempts `starts`, just started, as
    /// [`commit`](Self::commit) does, and hands them back: no copy of them
    /// is made, and `pending` keeps its buffer for the attempts to come.
    async fn commit_starts(&mut self, starts: Vec<StepRun>) -> Result<Vec<StepRun>, Halt> {
        let mut batch = starts;
        let count = batch.len();
        batch.append(&mut self.pending);
        self.write(&batch).await?;
        self.announce(batch.drain(count..));
        Ok(batch)
    }

    /// The fenced write of `batch`, with the run record if it changed.
    async fn write(&mut self, batch: &[StepRun]) -> Result<(), Halt> {
        let run = self.run_dirty.then_some(&self.run);
        commit_with_retries(&self.shared.store, self.fence, run, batch).await?;
        if self.run_dirty {
            self.run_dirty = false;
            self.fence = self.run.fence();
        }
        let run_id = self.run.id;
        if std::mem::take(&mut self.announce_start) {
            metrics::counter!(telemetry::RUNS_STARTED, "workflow" => Arc::clone(&self.workflow))
                .increment(1);
            self.shared.emit(|| RunUpdate::RunStarted {
                run_id,
                resumed: false,
            });
        }
        Ok(())
    }

    /// Announces the attempts of a durable write: skipped and succeeded
    /// steps, whose outputs the steps after them read.
    fn announce(&mut self, batch: impl IntoIterator<Item = StepRun>) {
        let run_id = self.run.id;
        for mut step in batch {
            if step.status == StepStatus::Skipped {
                self.shared.emit(|| RunUpdate::StepSkipped {
                    run_id,
                    step_key: step.step_key,
                    reason: step.error.map(|e| e.message).unwrap_or_default(),
                });
                continue;
            }
            if step.status != StepStatus::Succeeded {
                continue;
            }
            self.shared.emit(|| RunUpdate::StepSucceeded {
                run_id,
                step_key: step.step_key.clone(),
                attempt: step.attempt,
            });
            let output = step.output.take().unwrap_or(Value::Null);
            Arc::make_mut(&mut self.outputs).push((step.step_key, output));
        }
    }

    fn context(
        &self,
        step: &StepDefinition,
        attempt: u32,
        outputs: Arc<Vec<(String, Value)>>,
        log: Arc<AttemptLog>,
        secrets: Arc<[(String, SecretValue)]>,
        redactor: Option<Arc<Redactor>>,
    ) -> StepContext {
        let step_key = step.key.as_str();
        let progress = (self.shared.updates.receiver_count() > 0).then(|| {
            let updates = self.shared.updates.clone();
            let (run_id, step_key) = (self.run.id, step_key.to_owned());
            Arc::new(move |mut progress: Value| {
                if let Some(redactor) = &redactor {
                    redactor.redact_value(&mut progress);
                }
                let _ = updates.send(RunUpdate::StepProgress {
                    run_id,
                    step_key: step_key.clone(),
                    progress,
                });
            }) as Arc<dyn Fn(Value) + Send + Sync>
        });
        StepContext::new(StepContextParts {
            run_id: self.run.id,
            workflow_id: self.run.workflow_id,
            version_id: self.run.version_id,
            version: self.run.version,
            step_key: step_key.to_owned(),
            attempt,
            input: Arc::clone(&self.input),
            config: step.config.clone(),
            outputs,
            cancel: self.cancel.clone(),
            progress,
            log: Some(log),
            secrets,
            artifacts: self.shared.artifacts.clone(),
        })
    }

    /// Drives `fut` while keeping the lease alive, and stops it early if the
    /// run is cancelled, its deadline passes, or the lease is lost.
    async fn guard<F: Future>(&mut self, fut: F) -> Result<Guarded<F::Output>, Halt> {
        tokio::pin!(fut);
        let deadline = self.run.deadline.map(|d| self.instant_at(d));
        let ttl = self.shared.config.lease_ttl;
        loop {
            // Renew a third of the way into the lease, so two renewals can
            // fail before it lapses.
            let renew_at = self
                .instant_at(self.lease_expires)
                .checked_sub(ttl * 2 / 3)
                .unwrap_or_else(Instant::now);
            // A cancel asked for on another engine reaches this one through
            // the store: look often, not only when renewing.
            let check_at = Instant::now() + self.shared.config.cancel_check_interval;
            tokio::select! {
                biased;
                // An overdue renewal comes before the handler: after a
                // stalled store call the lease may have lapsed, and the
                // handler must not carry on under another engine's lease.
                () = tokio::time::sleep_until(renew_at) => {
                    if !self.renew().await? {
                        return Ok(Guarded::LeaseLost);
                    }
                }
                out = &mut fut => return Ok(Guarded::Done(out)),
                () = self.cancel.cancelled() => return Ok(Guarded::Cancelled),
                () = sleep_until_opt(deadline) => return Ok(Guarded::RunTimedOut),
                () = tokio::time::sleep_until(check_at) => {
                    if self.check_store().await && self.watch_signals {
                        return Ok(Guarded::Signalled);
                    }
                }
            }
        }
    }

    /// Reads whether another engine asked for this run to be cancelled,
    /// and takes the signals that arrived; `true` if there are new ones.
    async fn check_store(&mut self) -> bool {
        match self.shared.store.get_run(self.run.id).await {
            Ok(stored) => {
                if stored.cancel_requested {
                    self.cancel.cancel();
                }
                if stored.signals.len() > self.run.signals.len() {
                    self.run.signals = stored.signals;
                    return true;
                }
                false
            }
            // The next check, or the next renewal, tries again.
            Err(error) => {
                tracing::debug!(%error, "checking for a cancellation failed");
                false
            }
        }
    }

    /// Renews the lease; `false` once it is lost.
    async fn renew(&mut self) -> Result<bool, Halt> {
        let now = self.shared.now();
        let until = self.shared.lease_until(now);
        match self
            .shared
            .store
            .renew_lease(self.run.id, self.fence.epoch, until)
            .await
        {
            Ok(stored) => {
                self.lease_expires = until;
                // Commits write the run's lease as given: keep it current.
                self.run.lease.clone_from(&stored.lease);
                if stored.cancel_requested {
                    self.cancel.cancel();
                }
                Ok(true)
            }
            Err(e) if e.is_conflict() || e.is_not_found() => Ok(false),
            Err(error) => {
                tracing::warn!(%error, "lease renewal failed");
                // Keep going while the lease still holds; past it, another
                // engine may already own the run. Judged when the answer
                // came: a failed call may have taken a while.
                let margin =
                    TimeDelta::from_std(self.shared.config.lease_ttl / 10).unwrap_or_default();
                Ok(self
                    .shared
                    .now()
                    .checked_add_signed(margin)
                    .is_some_and(|t| t < self.lease_expires))
            }
        }
    }

    /// The monotonic instant of wall-clock time `at`: now if it is past, a
    /// year ahead at most (a timer that far out is re-armed long before).
    fn instant_at(&self, at: DateTime<Utc>) -> Instant {
        const FAR: std::time::Duration = std::time::Duration::from_secs(366 * 24 * 60 * 60);
        let ahead = at
            .signed_duration_since(self.shared.now())
            .to_std()
            .unwrap_or_default()
            .min(FAR);
        Instant::now() + ahead
    }
}

/// How often a commit that failed for a reason other than a conflict (a
/// lost connection, an ambiguous reply) is tried before the run is left to
/// recovery, and the first pause between tries (doubled each time).
const COMMIT_TRIES: u32 = 4;
const COMMIT_RETRY_PAUSE: std::time::Duration = std::time::Duration::from_millis(20);

/// Commits, trying again after failures that may be transient. A retry is
/// safe even if the failed try was applied: stores accept a commit that is
/// stored already (see [`rules::is_applied`](crate::store::rules::is_applied)).
async fn commit_with_retries<S: Store>(
    store: &S,
    fence: Fence,
    run: Option<&WorkflowRun>,
    steps: &[StepRun],
) -> Result<(), StoreError> {
    let mut pause = COMMIT_RETRY_PAUSE;
    let mut attempt = 1;
    loop {
        let began = std::time::Instant::now();
        let result = store.commit(fence, run, steps).await;
        metrics::histogram!(telemetry::STORE_COMMIT_DURATION, "op" => "commit")
            .record(began.elapsed());
        match result {
            Err(error @ StoreError::Backend { .. }) if attempt < COMMIT_TRIES => {
                tracing::warn!(%error, attempt, "commit failed; trying again");
                tokio::time::sleep(pause).await;
                pause *= 2;
                attempt += 1;
            }
            result => return result,
        }
    }
}

/// The `outcome` label of the duration of an attempt whose call ended
/// with `result`; `cancelled` if its error came from seeing cancellation.
fn attempt_outcome(result: &CallResult, cancelled: bool) -> &'static str {
    match result {
        Ok(Ok(_)) => "succeeded",
        Ok(Err(_)) if cancelled => "cancelled",
        Ok(Err(_)) => "failed",
        Err(_) => "timed_out",
    }
}

/// Calls a step handler, turning a panic (while it builds its future or
/// while it runs) into a retryable error that carries the panic message,
/// so the worker's bookkeeping always runs and the attempt is recorded as
/// failed like any other.
fn call_handler<X: StepExecutor>(
    executor: &X,
    handler: &str,
    ctx: StepContext,
) -> impl Future<Output = Result<Value, StepError>> + Send + 'static {
    let call = std::panic::catch_unwind(AssertUnwindSafe(|| executor.execute(handler, ctx)));
    async move {
        let call = call.map_err(|panic| panicked(&*panic))?;
        AssertUnwindSafe(call)
            .catch_unwind()
            .await
            .unwrap_or_else(|panic| Err(panicked(&*panic)))
    }
}

/// The error of an attempt whose handler panicked.
fn panicked(panic: &(dyn std::any::Any + Send)) -> StepError {
    let message = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a non-string payload".to_owned());
    StepError::retryable(format!("step handler panicked: {message}"))
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

fn cancelled(step: Option<&str>) -> Option<RunError> {
    Some(RunError {
        message: "cancelled".into(),
        step: step.map(str::to_owned),
        detail: None,
    })
}

fn run_timed_out(step: Option<&str>) -> Option<RunError> {
    Some(RunError {
        message: "run timed out".into(),
        step: step.map(str::to_owned),
        detail: None,
    })
}
