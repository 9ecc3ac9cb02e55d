//! Executing runs: the dispatcher that claims them, and the worker that
//! drives one run's steps inline in its own task.

use std::future::Future;
use std::sync::Arc;

use chrono::{DateTime, TimeDelta, Utc};
use serde_json::Value;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::engine::{Inner, RunUpdate};
use crate::error::StoreError;
use crate::id::RunId;
use crate::retry::RetryDecision;
use crate::run::{
    Fence, RunError, RunStatus, RunTransition, StepRun, StepStatus, StepTransition, WorkflowRun,
};
use crate::step::{StepContext, StepContextParts, StepError, StepExecutor};
use crate::store::Store;
use crate::workflow::WorkflowVersion;

/// Claims runs while the engine runs: those it is woken for, and on every
/// poll those nobody announced (other engines' runs, lapsed leases).
pub(crate) async fn dispatch<S: Store, X: StepExecutor>(inner: Arc<Inner<S, X>>) {
    loop {
        if let Err(error) = fill(&inner).await {
            tracing::warn!(%error, "looking for claimable runs failed");
        }
        tokio::select! {
            biased;
            () = inner.kill.cancelled() => return,
            () = inner.stop_claiming.cancelled() => return,
            () = inner.wake.notified() => {}
            () = tokio::time::sleep(inner.config.poll_interval) => {}
        }
    }
}

/// Claims claimable runs until the engine is at its concurrency limit or
/// none are left.
async fn fill<S: Store, X: StepExecutor>(inner: &Arc<Inner<S, X>>) -> Result<(), StoreError> {
    loop {
        let available = inner.permits.available_permits();
        if available == 0 || inner.stop_claiming.is_cancelled() {
            return Ok(());
        }
        let ids = inner.store.list_claimable(inner.now(), available).await?;
        let mut spawned = 0;
        for &id in &ids {
            match try_spawn(inner, id) {
                Spawn::Spawned => spawned += 1,
                Spawn::AlreadyLocal => {}
                Spawn::NoCapacity => return Ok(()),
            }
        }
        if ids.len() < available || spawned == 0 {
            return Ok(());
        }
    }
}

pub(crate) enum Spawn {
    Spawned,
    AlreadyLocal,
    NoCapacity,
}

/// Spawns a worker task for run `id` if this engine has a free slot and is
/// not executing it already.
pub(crate) fn try_spawn<S: Store, X: StepExecutor>(inner: &Arc<Inner<S, X>>, id: RunId) -> Spawn {
    let Ok(permit) = Arc::clone(&inner.permits).try_acquire_owned() else {
        return Spawn::NoCapacity;
    };
    let token = CancellationToken::new();
    {
        let mut local = inner.local.lock();
        if local.contains_key(&id) {
            return Spawn::AlreadyLocal;
        }
        local.insert(id, token.clone());
    }
    let span = tracing::info_span!("run", run_id = %id);
    inner
        .tracker
        .spawn(run_task(Arc::clone(inner), id, token, permit).instrument(span));
    Spawn::Spawned
}

async fn run_task<S: Store, X: StepExecutor>(
    inner: Arc<Inner<S, X>>,
    id: RunId,
    cancel: CancellationToken,
    permit: OwnedSemaphorePermit,
) {
    tokio::select! {
        biased;
        // Dropping the worker mid-await is exactly what a crash does: the
        // store keeps the last committed state, and the lease lapses.
        () = inner.kill.cancelled() => {}
        result = execute(&inner, id, cancel) => match result {
            Ok(()) | Err(Halt::LeaseLost) => {}
            Err(Halt::Store(error)) => {
                tracing::error!(%error, "store failed; the run is left to recovery");
            }
        },
    }
    inner.local.lock().remove(&id);
    drop(permit);
    inner.wake.notify_one();
}

/// Why a worker stopped before its run finished.
#[derive(Debug)]
enum Halt {
    /// Another worker owns the run now (or it finished): write nothing more.
    LeaseLost,
    /// The store failed; the run is left for recovery once the lease lapses.
    Store(StoreError),
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

async fn execute<S: Store, X: StepExecutor>(
    inner: &Arc<Inner<S, X>>,
    id: RunId,
    cancel: CancellationToken,
) -> Result<(), Halt> {
    let now = inner.now();
    let run = inner
        .store
        .claim_run(id, &inner.config.owner, now, inner.lease_until(now))
        .await?;
    let version = load_version(inner, &run).await?;
    let lease_expires = run.lease.as_ref().map_or(now, |l| l.expires_at);
    Worker {
        inner,
        fence: run.fence(),
        input: Arc::clone(&run.input),
        run,
        version,
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

async fn load_version<S: Store, X>(
    inner: &Inner<S, X>,
    run: &WorkflowRun,
) -> Result<Arc<WorkflowVersion>, StoreError> {
    if let Some(version) = inner.versions.lock().get(&run.version_id) {
        return Ok(Arc::clone(version));
    }
    let version = Arc::new(inner.store.get_version(run.version_id).await?);
    inner
        .versions
        .lock()
        .insert(run.version_id, Arc::clone(&version));
    Ok(version)
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

/// Where to resume a run: the step, its next attempt, and when it is due.
struct Resume {
    index: usize,
    attempt: u32,
    due: Option<DateTime<Utc>>,
}

struct Worker<'a, S, X> {
    inner: &'a Inner<S, X>,
    run: WorkflowRun,
    /// The fence of every write: the claimed epoch, status `Running` once started.
    fence: Fence,
    version: Arc<WorkflowVersion>,
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
            let now = self.inner.now();
            self.transition(RunTransition::Start)?;
            self.run.deadline = self
                .version
                .definition
                .timeout
                .and_then(|t| TimeDelta::from_std(t).ok())
                .map(|t| now + t);
            // Written together with the first step's start.
            self.run_dirty = true;
            self.announce_start = true;
        }
        if resumed {
            let run_id = self.run.id;
            self.inner
                .emit(|| RunUpdate::RunStarted { run_id, resumed });
        }
        let mut next = if resumed {
            match self.recover().await? {
                Some(next) => next,
                None => return Ok(()),
            }
        } else {
            Resume {
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

    /// Rebuilds a resumed run's position from its stored step attempts:
    /// succeeded steps keep their outputs and are never run again; an
    /// attempt left running by a lost worker is marked interrupted.
    async fn recover(&mut self) -> Result<Option<Resume>, Halt> {
        let history = self.inner.store.list_step_runs(self.run.id).await?;
        let mut outputs = Vec::new();
        let mut next = Resume {
            index: 0,
            attempt: 1,
            due: None,
        };
        let mut latest: Vec<Option<StepRun>> = vec![None; self.version.definition.steps.len()];
        for step in history {
            if let Some(slot) = latest.get_mut(step.step_index as usize) {
                if slot.as_ref().is_none_or(|s| s.attempt < step.attempt) {
                    *slot = Some(step);
                }
            }
        }
        for (index, slot) in latest.into_iter().enumerate() {
            let Some(mut step) = slot else {
                next.index = index;
                break;
            };
            next = Resume {
                index,
                attempt: step.attempt + 1,
                due: None,
            };
            match step.status {
                StepStatus::Succeeded => {
                    outputs.push((step.step_key, step.output.unwrap_or(Value::Null)));
                    next.index = index + 1;
                    next.attempt = 1;
                    continue;
                }
                StepStatus::Running => {
                    tracing::info!(step = %step.step_key, attempt = step.attempt, "interrupting an attempt whose worker was lost");
                    step.transition(StepTransition::Interrupt, self.inner.now())
                        .map_err(|e| Halt::Store(StoreError::Invalid(e.to_string())))?;
                    self.commit(vec![step]).await?;
                }
                StepStatus::Interrupted => {}
                StepStatus::Failed | StepStatus::TimedOut if step.retry_at.is_some() => {
                    next.due = step.retry_at;
                }
                // The last attempt gave up or was cancelled, but the run's
                // terminal write did not land with it: finish it now.
                StepStatus::Failed | StepStatus::TimedOut => {
                    let error = step.error.clone().map(|f| RunError {
                        message: f.message,
                        step: Some(step.step_key.clone()),
                        detail: f.detail,
                    });
                    self.finish(RunTransition::Fail, error, Vec::new()).await?;
                    return Ok(None);
                }
                StepStatus::Cancelled => {
                    self.finish(
                        RunTransition::Cancel,
                        cancelled(Some(&step.step_key)),
                        Vec::new(),
                    )
                    .await?;
                    return Ok(None);
                }
            }
            break;
        }
        self.outputs = Arc::new(outputs);
        Ok(Some(next))
    }

    /// Runs attempts of step `next.index` until it succeeds (returning the
    /// next step) or the run ends (returning `None`).
    async fn run_step(&mut self, mut next: Resume) -> Result<Option<Resume>, Halt> {
        let index = next.index;
        let version = Arc::clone(&self.version);
        let definition = &version.definition;
        let step = &definition.steps[index];
        let last = index + 1 == definition.steps.len();
        loop {
            if let Some(due) = next.due.take() {
                let wait = (due - self.inner.now()).to_std().unwrap_or_default();
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
            let now = self.inner.now();
            if self.run.deadline.is_some_and(|d| d <= now) {
                self.finish(RunTransition::TimeOut, run_timed_out(None), Vec::new())
                    .await?;
                return Ok(None);
            }
            let attempt = next.attempt;
            let mut record = StepRun::start(self.run.id, &step.key, index as u32, attempt, now);
            self.commit(vec![record.clone()]).await?;
            let run_id = self.run.id;
            self.inner.emit(|| RunUpdate::StepStarted {
                run_id,
                step_key: step.key.clone(),
                attempt,
            });

            let ctx = self.context(&step.key, &step.config, attempt);
            let call = self.inner.executor.execute(&step.handler, ctx);
            let span = tracing::info_span!("step", step = %step.key, attempt);
            let limit = step.timeout;
            let call = async move {
                match limit {
                    Some(limit) => tokio::time::timeout(limit, call).await.map_err(|_| limit),
                    None => Ok(call.await),
                }
            };
            let attempt_result = match self.guard(call).instrument(span).await? {
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
            let now = self.inner.now();
            match attempt_result {
                Attempt::Succeeded(output) => {
                    self.step_transition(&mut record, StepTransition::Succeed, now)?;
                    record.output = Some(output);
                    if last {
                        self.run.output.clone_from(&record.output);
                        self.finish(RunTransition::Succeed, None, vec![record])
                            .await?;
                        return Ok(None);
                    }
                    self.pending.push(record);
                    return Ok(Some(Resume {
                        index: index + 1,
                        attempt: 1,
                        due: None,
                    }));
                }
                Attempt::Failed(error, transition) => {
                    self.step_transition(&mut record, transition, now)?;
                    record.error = Some(error.to_failure());
                    let decision =
                        definition
                            .retry_policy(step)
                            .map_or(RetryDecision::GiveUp, |policy| {
                                policy.decide(
                                    attempt,
                                    error.is_terminal(),
                                    error.retry_after_hint(),
                                    fastrand::f64(),
                                )
                            });
                    let retry_at = match decision {
                        RetryDecision::RetryAfter(delay) => {
                            Some(now + TimeDelta::from_std(delay).unwrap_or(TimeDelta::MAX))
                        }
                        RetryDecision::GiveUp => None,
                    };
                    self.inner.emit(|| RunUpdate::StepFailed {
                        run_id,
                        step_key: step.key.clone(),
                        attempt,
                        error: error.message().to_owned(),
                        retry_at,
                    });
                    if let Some(at) = retry_at {
                        record.retry_at = Some(at);
                        self.commit(vec![record]).await?;
                        next = Resume {
                            index,
                            attempt: attempt + 1,
                            due: Some(at),
                        };
                        continue;
                    }
                    let run_transition = if transition == StepTransition::TimeOut {
                        RunTransition::TimeOut
                    } else {
                        RunTransition::Fail
                    };
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

    /// Ends the run after a guarded wait was cut short, closing the running
    /// attempt (if any) in the same write.
    async fn interrupted<T>(
        &mut self,
        how: Guarded<T>,
        record: Option<StepRun>,
    ) -> Result<Option<Resume>, Halt> {
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
            self.step_transition(&mut record, step_transition, self.inner.now())?;
            record.error = error.as_ref().map(|e| crate::run::StepFailure {
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
        self.inner
            .emit(|| RunUpdate::RunFinished { run_id, status });
        tracing::info!(status = %status, "run finished");
        Ok(())
    }

    fn transition(&mut self, transition: RunTransition) -> Result<(), Halt> {
        let now = self.inner.now();
        self.run
            .transition(transition, now)
            .map_err(|e| Halt::Store(StoreError::Invalid(e.to_string())))
    }

    fn step_transition(
        &self,
        record: &mut StepRun,
        transition: StepTransition,
        now: DateTime<Utc>,
    ) -> Result<(), Halt> {
        record
            .transition(transition, now)
            .map_err(|e| Halt::Store(StoreError::Invalid(e.to_string())))
    }

    /// Writes `steps`, with the pending succeeded attempts and the run
    /// record if it changed, in one fenced atomic commit; then announces
    /// what became durable.
    async fn commit(&mut self, steps: Vec<StepRun>) -> Result<(), Halt> {
        let mut batch = std::mem::take(&mut self.pending);
        batch.extend(steps);
        let run = self.run_dirty.then_some(&self.run);
        self.inner.store.commit(self.fence, run, &batch).await?;
        if self.run_dirty {
            self.run_dirty = false;
            self.fence = self.run.fence();
        }
        let run_id = self.run.id;
        if std::mem::take(&mut self.announce_start) {
            self.inner.emit(|| RunUpdate::RunStarted {
                run_id,
                resumed: false,
            });
        }
        for mut step in batch {
            if step.status != StepStatus::Succeeded {
                continue;
            }
            self.inner.emit(|| RunUpdate::StepSucceeded {
                run_id,
                step_key: step.step_key.clone(),
                attempt: step.attempt,
            });
            let output = step.output.take().unwrap_or(Value::Null);
            Arc::make_mut(&mut self.outputs).push((step.step_key, output));
        }
        Ok(())
    }

    fn context(&self, step_key: &str, config: &Value, attempt: u32) -> StepContext {
        let progress = (self.inner.updates.receiver_count() > 0).then(|| {
            let updates = self.inner.updates.clone();
            let (run_id, step_key) = (self.run.id, step_key.to_owned());
            Arc::new(move |progress: Value| {
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
            config: config.clone(),
            outputs: Arc::clone(&self.outputs),
            cancel: self.cancel.clone(),
            progress,
        })
    }

    /// Drives `fut` while keeping the lease alive, and stops it early if the
    /// run is cancelled, its deadline passes, or the lease is lost.
    async fn guard<F: Future>(&mut self, fut: F) -> Result<Guarded<F::Output>, Halt> {
        tokio::pin!(fut);
        let deadline = self.run.deadline.map(|d| self.instant_at(d));
        let ttl = self.inner.config.lease_ttl;
        loop {
            // Renew a third of the way into the lease, so two renewals can
            // fail before it lapses.
            let renew_at = self.instant_at(self.lease_expires) - ttl * 2 / 3;
            tokio::select! {
                biased;
                out = &mut fut => return Ok(Guarded::Done(out)),
                () = self.cancel.cancelled() => return Ok(Guarded::Cancelled),
                () = sleep_until_opt(deadline) => return Ok(Guarded::RunTimedOut),
                () = tokio::time::sleep_until(renew_at) => {
                    if !self.renew().await? {
                        return Ok(Guarded::LeaseLost);
                    }
                }
            }
        }
    }

    /// Renews the lease; `false` once it is lost.
    async fn renew(&mut self) -> Result<bool, Halt> {
        let now = self.inner.now();
        let until = self.inner.lease_until(now);
        match self
            .inner
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
                // engine may already own the run.
                let margin =
                    TimeDelta::from_std(self.inner.config.lease_ttl / 10).unwrap_or_default();
                Ok(now + margin < self.lease_expires)
            }
        }
    }

    fn instant_at(&self, at: DateTime<Utc>) -> Instant {
        let delta = at - self.inner.now();
        match delta.to_std() {
            Ok(ahead) => Instant::now() + ahead,
            Err(_) => Instant::now(),
        }
    }
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
