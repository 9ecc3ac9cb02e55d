//! The worker: drives one run's steps inline in its own task. It does the
//! I/O (claims, commits, lease renewals, calling handlers); what it does
//! next is decided by the state machine and the pure functions of
//! [`crate::run::decide`].

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use futures::future::Either;
use futures::FutureExt;

use chrono::{DateTime, TimeDelta, Utc};
use serde_json::Value;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::shared::Shared;
use super::telemetry;
use super::update::RunUpdate;
use crate::error::StoreError;
use crate::id::RunId;
use crate::run::decide::{self, AfterFailure, Resume};
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
use crate::workflow::{StepDefinition, WorkflowVersion};

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
    Worker {
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
    }
    .drive()
    .await
}

/// How a guarded wait ended.
enum Guarded<T> {
    Done(T),
    Cancelled,
    RunTimedOut,
    LeaseLost,
}

/// How one step attempt ended.
enum Attempt {
    Succeeded(Value),
    Failed(StepError, StepTransition),
}

/// The next attempt to run: the step, its attempt number, and when it is due.
struct Next {
    index: usize,
    attempt: u32,
    due: Option<DateTime<Utc>>,
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
    outputs: Arc<Vec<(String, Value)>>,
    /// The run record changed and goes out with the next commit.
    run_dirty: bool,
    /// Succeeded attempts not yet written: each goes out with the next
    /// step's start (or the run's end), saving one durable write per step.
    /// The output is still stored before the next step's handler runs.
    pending: Vec<StepRun>,
    /// `RunStarted` is announced once the start is durable.
    announce_start: bool,
}

impl<S: Store, X: StepExecutor> Worker<'_, S, X> {
    async fn drive(mut self) -> Result<(), Halt> {
        if self.run.cancel_requested {
            self.cancel.cancel();
        }
        let resumed = self.run.status == RunStatus::Running;
        if resumed {
            self.transition(RunTransition::Resume)?;
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
        let mut next = if resumed {
            match self.recover().await? {
                Some(next) => next,
                None => return Ok(()),
            }
        } else {
            Next {
                index: 0,
                attempt: 1,
                due: None,
            }
        };
        let step_count = self.version.definition.steps.len();
        while next.index < step_count {
            next = match self.run_step(next).await? {
                Some(next) => next,
                None => return Ok(()),
            };
        }
        // Only reached when recovery found every step succeeded but the
        // run unfinished, which atomic commits rule out; finish it rather
        // than hold it forever.
        self.run.output = self.outputs.last().map(|(_, output)| output.clone());
        self.finish(RunTransition::Succeed, None, Vec::new()).await
    }

    /// Rebuilds a resumed run's position from its stored step attempts, as
    /// [`decide::resume`] says: an attempt left running by a lost worker is
    /// recorded as interrupted, a run whose last attempt ended it is
    /// finished, and the rest goes on from its next attempt.
    async fn recover(&mut self) -> Result<Option<Next>, Halt> {
        let history = self.shared.store.list_step_runs(self.run.id).await?;
        let (resume, outputs) = decide::resume(self.version.definition.steps.len(), &history);
        self.outputs = Arc::new(outputs);
        match resume {
            Resume::Step {
                index,
                attempt,
                due,
                interrupt,
            } => {
                if let Some(mut step) = interrupt {
                    tracing::info!(step = %step.step_key, attempt = step.attempt, "interrupting an attempt whose worker was lost");
                    step.transition(StepTransition::Interrupt, self.shared.now())?;
                    self.commit(vec![step]).await?;
                }
                Ok(Some(Next {
                    index,
                    attempt,
                    due,
                }))
            }
            Resume::Finish { transition, error } => {
                self.finish(transition, error, Vec::new()).await?;
                Ok(None)
            }
        }
    }

    /// Runs attempts of step `next.index` until it succeeds (returning the
    /// next step) or the run ends (returning `None`).
    async fn run_step(&mut self, mut next: Next) -> Result<Option<Next>, Halt> {
        let index = next.index;
        let version = Arc::clone(&self.version);
        let definition = &version.definition;
        let step = &definition.steps[index];
        let last = index + 1 == definition.steps.len();
        loop {
            if let Some(due) = next.due.take() {
                let wait = (due - self.shared.now()).to_std().unwrap_or_default();
                match self.guard(tokio::time::sleep(wait)).await? {
                    Guarded::Done(()) => {}
                    other => return self.interrupted(other, None).await,
                }
            }
            if self.cancel.is_cancelled() {
                self.finish(RunTransition::Cancel, cancelled(None), Vec::new())
                    .await?;
                return Ok(None);
            }
            let now = self.shared.now();
            if self.run.deadline.is_some_and(|d| d <= now) {
                self.finish(RunTransition::TimeOut, run_timed_out(None), Vec::new())
                    .await?;
                return Ok(None);
            }
            let attempt = next.attempt;
            let mut record = StepRun::start(self.run.id, &step.key, index as u32, attempt, now);
            self.commit(vec![record.clone()]).await?;
            let run_id = self.run.id;
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
            let ctx = self.context(step, attempt, Arc::clone(&log), secrets, redactor.clone());
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
                match limit {
                    Some(limit) => tokio::time::timeout(limit, call).await.map_err(|_| limit),
                    None => Ok(call.await),
                }
            };
            let began = Instant::now();
            let guarded = self.guard(call).instrument(span).await?;
            if let Err(error) = log.flush(true).await {
                tracing::warn!(step = %step.key, attempt, %error, "could not store the attempt's last log lines");
            }
            metrics::histogram!(
                telemetry::STEP_ATTEMPT_DURATION,
                "workflow" => Arc::clone(&self.workflow),
                "step" => step.key.clone(),
                "outcome" => attempt_outcome(&guarded, &self.cancel),
            )
            .record(began.elapsed());
            let attempt_result = match guarded {
                Guarded::Done(Ok(Ok(output))) => Attempt::Succeeded(output),
                // A handler that gives up because it saw cancellation was cancelled.
                Guarded::Done(Ok(Err(_))) if self.cancel.is_cancelled() => {
                    return self
                        .interrupted(Guarded::<()>::Cancelled, Some(record))
                        .await;
                }
                Guarded::Done(Ok(Err(error))) => Attempt::Failed(error, StepTransition::Fail),
                Guarded::Done(Err(limit)) => Attempt::Failed(
                    StepError::retryable(format!("step timed out after {}ms", limit.as_millis())),
                    StepTransition::TimeOut,
                ),
                other => return self.interrupted(other, Some(record)).await,
            };
            let now = self.shared.now();
            match attempt_result {
                Attempt::Succeeded(mut output) => {
                    if let Some(redactor) = &redactor {
                        redactor.redact_value(&mut output);
                    }
                    record.transition(StepTransition::Succeed, now)?;
                    record.output = Some(output);
                    if last {
                        self.run.output.clone_from(&record.output);
                        self.finish(RunTransition::Succeed, None, vec![record])
                            .await?;
                        return Ok(None);
                    }
                    self.pending.push(record);
                    return Ok(Some(Next {
                        index: index + 1,
                        attempt: 1,
                        due: None,
                    }));
                }
                Attempt::Failed(error, transition) => {
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
                    let decision = decide::after_failure(
                        definition.retry_policy(step),
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
                    self.shared.emit(|| RunUpdate::StepFailed {
                        run_id,
                        step_key: step.key.clone(),
                        attempt,
                        error: message,
                        retry_at,
                    });
                    match decision {
                        AfterFailure::Retry(at) => {
                            record.retry_at = Some(at);
                            self.commit(vec![record]).await?;
                            next = Next {
                                index,
                                attempt: attempt + 1,
                                due: Some(at),
                            };
                        }
                        AfterFailure::Finish(run_transition) => {
                            let failure = record.error.clone().map(|f| RunError {
                                message: f.message,
                                step: Some(step.key.clone()),
                                detail: f.detail,
                            });
                            self.finish(run_transition, failure, vec![record]).await?;
                            return Ok(None);
                        }
                    }
                }
            }
        }
    }

    /// Ends the run after a guarded wait was cut short, closing the running
    /// attempt (if any) in the same write.
    async fn interrupted<T>(
        &mut self,
        how: Guarded<T>,
        record: Option<StepRun>,
    ) -> Result<Option<Next>, Halt> {
        let (run_transition, step_transition, error) = match how {
            Guarded::Done(_) | Guarded::LeaseLost => return Err(Halt::LeaseLost),
            Guarded::Cancelled => (
                RunTransition::Cancel,
                StepTransition::Cancel,
                cancelled(record.as_ref().map(|r| r.step_key.as_str())),
            ),
            Guarded::RunTimedOut => (
                RunTransition::TimeOut,
                StepTransition::TimeOut,
                run_timed_out(record.as_ref().map(|r| r.step_key.as_str())),
            ),
        };
        let mut steps = Vec::new();
        if let Some(mut record) = record {
            record.transition(step_transition, self.shared.now())?;
            record.error = error.as_ref().map(|e| StepFailure {
                message: e.message.clone(),
                terminal: true,
                detail: None,
            });
            steps.push(record);
        }
        self.finish(run_transition, error, steps).await?;
        Ok(None)
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
        let run = self.run_dirty.then_some(&self.run);
        commit_with_retries(&self.shared.store, self.fence, run, &batch).await?;
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
        for mut step in batch {
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
        Ok(())
    }

    fn context(
        &self,
        step: &StepDefinition,
        attempt: u32,
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
            outputs: Arc::clone(&self.outputs),
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
                () = tokio::time::sleep_until(check_at) => self.check_cancel().await,
            }
        }
    }

    /// Reads whether another engine asked for this run to be cancelled.
    async fn check_cancel(&self) {
        match self.shared.store.get_run(self.run.id).await {
            Ok(stored) if stored.cancel_requested => self.cancel.cancel(),
            Ok(_) => {}
            // The next check, or the next renewal, tries again.
            Err(error) => tracing::debug!(%error, "checking for a cancellation failed"),
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

/// The `outcome` label of a step attempt's duration.
fn attempt_outcome<T, E, L>(
    guarded: &Guarded<Result<Result<T, E>, L>>,
    cancel: &CancellationToken,
) -> &'static str {
    match guarded {
        Guarded::Done(Ok(Ok(_))) => "succeeded",
        Guarded::Done(Ok(Err(_))) if cancel.is_cancelled() => "cancelled",
        Guarded::Done(Ok(Err(_))) => "failed",
        Guarded::Done(Err(_)) | Guarded::RunTimedOut => "timed_out",
        Guarded::Cancelled => "cancelled",
        Guarded::LeaseLost => "interrupted",
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
