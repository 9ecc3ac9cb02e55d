//! A store that fails on purpose: [`FaultyStore`] wraps any backend and
//! injects the faults a real database and network produce, chosen by a
//! seeded generator so that a failing run can be replayed.
//!
//! - **A write that fails before it is applied**: the caller gets
//!   [`StoreError::Backend`] and nothing changed.
//! - **A write that fails after it is applied**: the write happened, but
//!   the caller gets [`StoreError::Backend`], so it cannot tell whether it
//!   did (a lost reply). Any reply can be lost, a conflict's included.
//! - **A read that fails** with [`StoreError::Backend`].
//! - **A delay**, before the call or after it (the write is visible to
//!   others before its caller hears back): a Tokio sleep of up to
//!   [`FaultConfig::max_delay`], or a yield when that is zero. Under
//!   paused Tokio time (`tokio::time::pause`) a sleep takes no real time.
//! - **A stall**: a rare, long delay ([`FaultConfig::stall_length`]), as
//!   of a process paused or cut off from its database for longer than a
//!   lease, which then carries on as if nothing happened.
//!
//! Writes are every method that changes the store: `insert_*`,
//! `update_*`, `delete_trigger`, `claim_run`, `renew_lease`, `commit`,
//! `request_cancel`, `signal_run`, `revoke_token`, `touch_token`,
//! `reseal_secret` and `delete_secret`. Everything else is a read.
//!
//! ```
//! use taskforge_core::store::WorkflowStore;
//! use taskforge_core::testing::faults::{FaultConfig, FaultyStore, WriteFault};
//! use taskforge_core::Workflow;
//! use taskforge_store_memory::MemoryStore;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let store = FaultyStore::new(MemoryStore::new(), FaultConfig::none(), 7);
//! // The first write is applied, but its reply is lost.
//! store.fail_write(1, WriteFault::AfterApplied);
//! let workflow = Workflow::new("deploy", chrono::Utc::now()).unwrap();
//! assert!(store.insert_workflow(&workflow).await.is_err());
//! assert_eq!(store.inner().find_workflow("deploy").await.unwrap(), Some(workflow));
//! assert_eq!(store.counts().failed_after_applied, 1);
//! # }
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::ops::AddAssign;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use parking_lot::Mutex;

use crate::event::Event;
use crate::id::{EventId, RunId, TriggerId, VersionId, WorkflowId};
use crate::run::{Fence, Signal, StepRun, WorkflowRun};
use crate::secret::SealedSecret;
use crate::store::{
    EventInsert, EventQuery, EventStore, Page, RunQuery, RunStore, SecretStore, StoreError,
    WorkflowStore,
};
use crate::token::{ApiToken, TokenDigest, TokenId, TokenStore};
use crate::trigger::Trigger;
use crate::workflow::{Workflow, WorkflowVersion};

/// The backend name of injected errors: `injected backend error: ...`.
pub const INJECTED: &str = "injected";

/// How often each fault is injected: each rate is the chance, from 0.0 to
/// 1.0, that one call gets it. Build it from [`FaultConfig::none`].
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct FaultConfig {
    /// The chance that a write fails before it is applied.
    pub fail_before_write: f64,
    /// The chance that a write is applied but its caller gets an error.
    pub fail_after_write: f64,
    /// The chance that a read fails.
    pub fail_read: f64,
    /// The chance that a call is delayed (before or after the inner call,
    /// at random).
    pub delay: f64,
    /// The longest delay; each delay is drawn from zero to this, and a
    /// delay of zero is a yield to the scheduler.
    pub max_delay: Duration,
    /// The chance that a call stalls (before or after the inner call).
    pub stall: f64,
    /// How long a stall lasts: from half of this to all of it.
    pub stall_length: Duration,
}

impl FaultConfig {
    /// No faults at all.
    #[must_use]
    pub fn none() -> Self {
        Self {
            fail_before_write: 0.0,
            fail_after_write: 0.0,
            fail_read: 0.0,
            delay: 0.0,
            max_delay: Duration::ZERO,
            stall: 0.0,
            stall_length: Duration::ZERO,
        }
    }

    /// Fails writes before they are applied with chance `rate`.
    #[must_use]
    pub fn fail_before_write(mut self, rate: f64) -> Self {
        self.fail_before_write = rate;
        self
    }

    /// Applies writes but loses their reply with chance `rate`.
    #[must_use]
    pub fn fail_after_write(mut self, rate: f64) -> Self {
        self.fail_after_write = rate;
        self
    }

    /// Fails reads with chance `rate`.
    #[must_use]
    pub fn fail_read(mut self, rate: f64) -> Self {
        self.fail_read = rate;
        self
    }

    /// Delays calls with chance `rate`, by up to `max`.
    #[must_use]
    pub fn delay(mut self, rate: f64, max: Duration) -> Self {
        self.delay = rate;
        self.max_delay = max;
        self
    }

    /// Stalls calls with chance `rate`, for half of `length` to all of it.
    #[must_use]
    pub fn stall(mut self, rate: f64, length: Duration) -> Self {
        self.stall = rate;
        self.stall_length = length;
        self
    }
}

impl Default for FaultConfig {
    fn default() -> Self {
        Self::none()
    }
}

/// How a scheduled write fails; see [`FaultyStore::fail_write`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum WriteFault {
    /// Before it is applied: nothing changes.
    BeforeApplied,
    /// After it is applied: the write happens, the reply is lost.
    AfterApplied,
}

/// What a [`FaultyStore`] has seen and injected so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct FaultCounts {
    /// Reads asked for.
    pub reads: u64,
    /// Writes asked for.
    pub writes: u64,
    /// Reads failed.
    pub failed_reads: u64,
    /// Writes failed before they were applied.
    pub failed_before_applied: u64,
    /// Writes applied whose reply was lost.
    pub failed_after_applied: u64,
    /// Calls delayed.
    pub delays: u64,
    /// Calls stalled.
    pub stalls: u64,
}

impl FaultCounts {
    /// Every fault injected.
    #[must_use]
    pub fn injected(&self) -> u64 {
        self.failed_reads
            + self.failed_before_applied
            + self.failed_after_applied
            + self.delays
            + self.stalls
    }
}

impl AddAssign for FaultCounts {
    fn add_assign(&mut self, other: Self) {
        self.reads += other.reads;
        self.writes += other.writes;
        self.failed_reads += other.failed_reads;
        self.failed_before_applied += other.failed_before_applied;
        self.failed_after_applied += other.failed_after_applied;
        self.delays += other.delays;
        self.stalls += other.stalls;
    }
}

impl fmt::Display for FaultCounts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} writes ({} failed before applied, {} applied with a lost reply), \
             {} reads ({} failed), {} delays, {} stalls",
            self.writes,
            self.failed_before_applied,
            self.failed_after_applied,
            self.reads,
            self.failed_reads,
            self.delays,
            self.stalls
        )
    }
}

/// What one call gets.
#[derive(Debug, Default)]
struct Plan {
    delay_before: Option<Duration>,
    delay_after: Option<Duration>,
    fail_before: bool,
    fail_after: bool,
}

#[derive(Debug)]
struct State {
    rng: fastrand::Rng,
    config: FaultConfig,
    counts: FaultCounts,
    scheduled_writes: BTreeMap<u64, WriteFault>,
    scheduled_reads: BTreeMap<u64, ()>,
}

#[derive(Debug)]
struct Faults {
    state: Mutex<State>,
    enabled: AtomicBool,
    inline: AtomicBool,
}

/// A store that injects faults into the calls it passes to `S`; see the
/// [module docs](self). Clones share the generator, the switch and the
/// counters.
///
/// Faults are drawn from a generator seeded by the seed given to
/// [`new`](Self::new), one draw sequence per call in call order: the same
/// calls in the same order get the same faults.
pub struct FaultyStore<S> {
    inner: S,
    faults: Arc<Faults>,
}

impl<S: Clone> Clone for FaultyStore<S> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            faults: Arc::clone(&self.faults),
        }
    }
}

impl<S: fmt::Debug> fmt::Debug for FaultyStore<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.faults.state.lock();
        f.debug_struct("FaultyStore")
            .field("inner", &self.inner)
            .field("enabled", &self.is_enabled())
            .field("config", &state.config)
            .field("counts", &state.counts)
            .finish_non_exhaustive()
    }
}

impl<S> FaultyStore<S> {
    /// Wraps `inner`, injecting faults as `config` says, drawn from a
    /// generator seeded with `seed`. Faults are on.
    pub fn new(inner: S, config: FaultConfig, seed: u64) -> Self {
        Self {
            inner,
            faults: Arc::new(Faults {
                state: Mutex::new(State {
                    rng: fastrand::Rng::with_seed(seed),
                    config,
                    counts: FaultCounts::default(),
                    scheduled_writes: BTreeMap::new(),
                    scheduled_reads: BTreeMap::new(),
                }),
                enabled: AtomicBool::new(true),
                inline: AtomicBool::new(false),
            }),
        }
    }

    /// Completes each call of the wrapped store before giving the thread
    /// back to the runtime (injected delays still sleep).
    ///
    /// Under paused Tokio time, a runtime whose tasks all wait moves its
    /// clock to the next timer at once. A backend that hands its writes to
    /// a thread of its own (sled's writer) leaves the runtime waiting
    /// during each write, so time would leap ahead by however long the
    /// runtime happened to wait, and a test would depend on the machine's
    /// speed. Inline calls take no time on the runtime's clock. Only for
    /// backends that do not need the runtime's I/O driver: a network
    /// database would wait for itself.
    #[must_use]
    pub fn with_inline_calls(self) -> Self {
        self.faults.inline.store(true, Ordering::Relaxed);
        self
    }

    /// The wrapped store, to read or write without faults.
    pub fn inner(&self) -> &S {
        &self.inner
    }

    /// Turns injection on or off; off, calls pass straight through (and
    /// are still counted). Turn it off to let a system settle.
    pub fn set_enabled(&self, enabled: bool) {
        self.faults.enabled.store(enabled, Ordering::SeqCst);
    }

    /// Whether faults are injected.
    pub fn is_enabled(&self) -> bool {
        self.faults.enabled.load(Ordering::SeqCst)
    }

    /// Replaces the rates.
    pub fn set_config(&self, config: FaultConfig) {
        self.faults.state.lock().config = config;
    }

    /// Fails the `k`-th write from now on counted from the first write
    /// through this store (1 is the first), as `fault` says, whatever the
    /// rates, if injection is on when it comes.
    pub fn fail_write(&self, k: u64, fault: WriteFault) {
        self.faults.state.lock().scheduled_writes.insert(k, fault);
    }

    /// Fails the `k`-th read (1 is the first), if injection is on when it comes.
    pub fn fail_read(&self, k: u64) {
        self.faults.state.lock().scheduled_reads.insert(k, ());
    }

    /// What was seen and injected so far.
    pub fn counts(&self) -> FaultCounts {
        self.faults.state.lock().counts
    }

    /// Decides what the next call gets.
    fn plan(&self, write: bool) -> Plan {
        let enabled = self.is_enabled();
        let mut state = self.faults.state.lock();
        let State {
            rng,
            config,
            counts,
            scheduled_writes,
            scheduled_reads,
        } = &mut *state;
        let number = if write {
            counts.writes += 1;
            counts.writes
        } else {
            counts.reads += 1;
            counts.reads
        };
        let scheduled_write = if write {
            scheduled_writes.remove(&number)
        } else {
            None
        };
        let scheduled_read = !write && scheduled_reads.remove(&number).is_some();
        if !enabled {
            return Plan::default();
        }
        let mut plan = Plan::default();
        // Every call draws the same number of times, so one call's faults
        // do not shift the draws of the calls after it.
        let (fail, after, delay, before_or_after, length, stall) = (
            rng.f64(),
            rng.f64(),
            rng.f64(),
            rng.bool(),
            rng.f64(),
            rng.f64(),
        );
        if write {
            match scheduled_write {
                Some(WriteFault::BeforeApplied) => plan.fail_before = true,
                Some(WriteFault::AfterApplied) => plan.fail_after = true,
                None if fail < config.fail_before_write => plan.fail_before = true,
                None if after < config.fail_after_write => plan.fail_after = true,
                None => {}
            }
        } else {
            plan.fail_before = scheduled_read || fail < config.fail_read;
        }
        let length = if stall < config.stall {
            counts.stalls += 1;
            Some(config.stall_length.mul_f64(0.5 + length / 2.0))
        } else if delay < config.delay {
            counts.delays += 1;
            Some(config.max_delay.mul_f64(length))
        } else {
            None
        };
        if let Some(length) = length {
            // Only a call that happens has an "after".
            if before_or_after || plan.fail_before {
                plan.delay_before = Some(length);
            } else {
                plan.delay_after = Some(length);
            }
        }
        match (write, plan.fail_before, plan.fail_after) {
            (true, true, _) => counts.failed_before_applied += 1,
            (true, _, true) => counts.failed_after_applied += 1,
            (false, true, _) => counts.failed_reads += 1,
            _ => {}
        }
        plan
    }

    /// Passes one call through, with the faults it draws.
    async fn call<T, F, Fut>(
        &self,
        write: bool,
        what: &'static str,
        call: F,
    ) -> Result<T, StoreError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, StoreError>>,
    {
        let plan = self.plan(write);
        if let Some(delay) = plan.delay_before {
            pause(delay).await;
        }
        if plan.fail_before {
            let when = if write { "before it was applied" } else { "" };
            return Err(injected(what, when));
        }
        let result = if self.faults.inline.load(Ordering::Relaxed) {
            // A backend's future may wait for its own threads; block on it
            // here so the runtime never sees this task waiting. Cooperative
            // budgeting is off: a budget spent outside this loop would make
            // Tokio resources report `Pending` forever inside it.
            futures::executor::block_on(tokio::task::unconstrained(call()))
        } else {
            call().await
        };
        if let Some(delay) = plan.delay_after {
            pause(delay).await;
        }
        if plan.fail_after {
            return Err(injected(what, "after it was applied"));
        }
        result
    }

    async fn read<T, F, Fut>(&self, what: &'static str, call: F) -> Result<T, StoreError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, StoreError>>,
    {
        self.call(false, what, call).await
    }

    async fn write<T, F, Fut>(&self, what: &'static str, call: F) -> Result<T, StoreError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, StoreError>>,
    {
        self.call(true, what, call).await
    }
}

async fn pause(delay: Duration) {
    if delay.is_zero() {
        tokio::task::yield_now().await;
    } else {
        tokio::time::sleep(delay).await;
    }
}

fn injected(what: &'static str, when: &str) -> StoreError {
    let message = if when.is_empty() {
        format!("{what} failed")
    } else {
        format!("{what} failed {when}")
    };
    StoreError::backend(INJECTED, message)
}

#[async_trait]
impl<S: WorkflowStore> WorkflowStore for FaultyStore<S> {
    async fn insert_workflow(&self, workflow: &Workflow) -> Result<(), StoreError> {
        self.write("insert_workflow", || self.inner.insert_workflow(workflow))
            .await
    }

    async fn update_workflow(&self, workflow: &Workflow) -> Result<(), StoreError> {
        self.write("update_workflow", || self.inner.update_workflow(workflow))
            .await
    }

    async fn get_workflow(&self, id: WorkflowId) -> Result<Workflow, StoreError> {
        self.read("get_workflow", || self.inner.get_workflow(id))
            .await
    }

    async fn find_workflow(&self, name: &str) -> Result<Option<Workflow>, StoreError> {
        self.read("find_workflow", || self.inner.find_workflow(name))
            .await
    }

    async fn list_workflows(&self) -> Result<Vec<Workflow>, StoreError> {
        self.read("list_workflows", || self.inner.list_workflows())
            .await
    }

    async fn insert_version(&self, version: &WorkflowVersion) -> Result<(), StoreError> {
        self.write("insert_version", || self.inner.insert_version(version))
            .await
    }

    async fn get_version(&self, id: VersionId) -> Result<WorkflowVersion, StoreError> {
        self.read("get_version", || self.inner.get_version(id))
            .await
    }

    async fn get_version_by_number(
        &self,
        workflow_id: WorkflowId,
        number: u32,
    ) -> Result<WorkflowVersion, StoreError> {
        self.read("get_version_by_number", || {
            self.inner.get_version_by_number(workflow_id, number)
        })
        .await
    }

    async fn latest_version(
        &self,
        workflow_id: WorkflowId,
    ) -> Result<Option<WorkflowVersion>, StoreError> {
        self.read("latest_version", || self.inner.latest_version(workflow_id))
            .await
    }

    async fn list_versions(
        &self,
        workflow_id: WorkflowId,
    ) -> Result<Vec<WorkflowVersion>, StoreError> {
        self.read("list_versions", || self.inner.list_versions(workflow_id))
            .await
    }

    async fn insert_trigger(&self, trigger: &Trigger) -> Result<(), StoreError> {
        self.write("insert_trigger", || self.inner.insert_trigger(trigger))
            .await
    }

    async fn update_trigger(&self, trigger: &Trigger) -> Result<(), StoreError> {
        self.write("update_trigger", || self.inner.update_trigger(trigger))
            .await
    }

    async fn delete_trigger(&self, id: TriggerId) -> Result<(), StoreError> {
        self.write("delete_trigger", || self.inner.delete_trigger(id))
            .await
    }

    async fn get_trigger(&self, id: TriggerId) -> Result<Trigger, StoreError> {
        self.read("get_trigger", || self.inner.get_trigger(id))
            .await
    }

    async fn list_triggers(
        &self,
        workflow_id: Option<WorkflowId>,
    ) -> Result<Vec<Trigger>, StoreError> {
        self.read("list_triggers", || self.inner.list_triggers(workflow_id))
            .await
    }
}

#[async_trait]
impl<S: EventStore> EventStore for FaultyStore<S> {
    async fn insert_event(
        &self,
        event: &Event,
        run: Option<&WorkflowRun>,
    ) -> Result<EventInsert, StoreError> {
        self.write("insert_event", || self.inner.insert_event(event, run))
            .await
    }

    async fn get_event(&self, id: EventId) -> Result<Event, StoreError> {
        self.read("get_event", || self.inner.get_event(id)).await
    }

    async fn find_event_by_dedup_key(
        &self,
        workflow_id: WorkflowId,
        dedup_key: &str,
    ) -> Result<Option<Event>, StoreError> {
        self.read("find_event_by_dedup_key", || {
            self.inner.find_event_by_dedup_key(workflow_id, dedup_key)
        })
        .await
    }

    async fn list_events(&self, query: &EventQuery) -> Result<Page<Event, EventId>, StoreError> {
        self.read("list_events", || self.inner.list_events(query))
            .await
    }
}

#[async_trait]
impl<S: RunStore> RunStore for FaultyStore<S> {
    async fn insert_run(&self, run: &WorkflowRun) -> Result<(), StoreError> {
        self.write("insert_run", || self.inner.insert_run(run))
            .await
    }

    async fn get_run(&self, id: RunId) -> Result<WorkflowRun, StoreError> {
        self.read("get_run", || self.inner.get_run(id)).await
    }

    async fn list_runs(&self, query: &RunQuery) -> Result<Page<WorkflowRun, RunId>, StoreError> {
        self.read("list_runs", || self.inner.list_runs(query)).await
    }

    async fn list_claimable(
        &self,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<RunId>, StoreError> {
        self.read("list_claimable", || self.inner.list_claimable(now, limit))
            .await
    }

    async fn claim_run(
        &self,
        id: RunId,
        owner: &str,
        now: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    ) -> Result<WorkflowRun, StoreError> {
        self.write("claim_run", || {
            self.inner.claim_run(id, owner, now, expires_at)
        })
        .await
    }

    async fn renew_lease(
        &self,
        id: RunId,
        epoch: u64,
        expires_at: DateTime<Utc>,
    ) -> Result<WorkflowRun, StoreError> {
        self.write("renew_lease", || {
            self.inner.renew_lease(id, epoch, expires_at)
        })
        .await
    }

    async fn commit(
        &self,
        fence: Fence,
        run: Option<&WorkflowRun>,
        steps: &[StepRun],
    ) -> Result<(), StoreError> {
        self.write("commit", || self.inner.commit(fence, run, steps))
            .await
    }

    async fn request_cancel(&self, id: RunId) -> Result<WorkflowRun, StoreError> {
        self.write("request_cancel", || self.inner.request_cancel(id))
            .await
    }

    async fn signal_run(&self, id: RunId, signal: &Signal) -> Result<WorkflowRun, StoreError> {
        self.write("signal_run", || self.inner.signal_run(id, signal))
            .await
    }

    async fn list_step_runs(&self, run_id: RunId) -> Result<Vec<StepRun>, StoreError> {
        self.read("list_step_runs", || self.inner.list_step_runs(run_id))
            .await
    }
}

#[async_trait]
impl<S: TokenStore> TokenStore for FaultyStore<S> {
    async fn insert_token(&self, token: &ApiToken) -> Result<(), StoreError> {
        self.write("insert_token", || self.inner.insert_token(token))
            .await
    }

    async fn get_token(&self, id: TokenId) -> Result<ApiToken, StoreError> {
        self.read("get_token", || self.inner.get_token(id)).await
    }

    async fn find_token(&self, digest: &TokenDigest) -> Result<Option<ApiToken>, StoreError> {
        self.read("find_token", || self.inner.find_token(digest))
            .await
    }

    async fn list_tokens(&self) -> Result<Vec<ApiToken>, StoreError> {
        self.read("list_tokens", || self.inner.list_tokens()).await
    }

    async fn revoke_token(&self, id: TokenId, at: DateTime<Utc>) -> Result<ApiToken, StoreError> {
        self.write("revoke_token", || self.inner.revoke_token(id, at))
            .await
    }

    async fn touch_token(&self, id: TokenId, at: DateTime<Utc>) -> Result<(), StoreError> {
        self.write("touch_token", || self.inner.touch_token(id, at))
            .await
    }
}

#[async_trait]
impl<S: SecretStore> SecretStore for FaultyStore<S> {
    async fn insert_secret(&self, secret: &SealedSecret) -> Result<(), StoreError> {
        self.write("insert_secret", || self.inner.insert_secret(secret))
            .await
    }

    async fn get_secret(
        &self,
        name: &str,
        version: Option<u32>,
    ) -> Result<Option<SealedSecret>, StoreError> {
        self.read("get_secret", || self.inner.get_secret(name, version))
            .await
    }

    async fn list_secret_versions(&self, name: &str) -> Result<Vec<SealedSecret>, StoreError> {
        self.read("list_secret_versions", || {
            self.inner.list_secret_versions(name)
        })
        .await
    }

    async fn list_secret_names(&self) -> Result<Vec<String>, StoreError> {
        self.read("list_secret_names", || self.inner.list_secret_names())
            .await
    }

    async fn reseal_secret(
        &self,
        secret: &SealedSecret,
        expected_key_id: &str,
    ) -> Result<(), StoreError> {
        self.write("reseal_secret", || {
            self.inner.reseal_secret(secret, expected_key_id)
        })
        .await
    }

    async fn delete_secret(&self, name: &str) -> Result<usize, StoreError> {
        self.write("delete_secret", || self.inner.delete_secret(name))
            .await
    }
}

#[async_trait]
impl<S: crate::store::LogStore> crate::store::LogStore for FaultyStore<S> {
    async fn append_logs(&self, lines: &[crate::step::LogLine]) -> Result<(), StoreError> {
        self.write("append_logs", || self.inner.append_logs(lines))
            .await
    }

    async fn list_logs(
        &self,
        query: &crate::store::LogQuery,
    ) -> Result<Page<crate::step::LogLine, u32>, StoreError> {
        self.read("list_logs", || self.inner.list_logs(query)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts_of(config: FaultConfig, seed: u64, calls: usize) -> Vec<(bool, bool, bool)> {
        let store = FaultyStore::new((), config, seed);
        (0..calls)
            .map(|i| {
                let plan = store.plan(i % 2 == 0);
                (
                    plan.fail_before,
                    plan.fail_after,
                    plan.delay_before.is_some(),
                )
            })
            .collect()
    }

    #[test]
    fn one_seed_gives_one_sequence_of_faults() {
        let config = FaultConfig::none()
            .fail_before_write(0.2)
            .fail_after_write(0.2)
            .fail_read(0.2)
            .delay(0.3, Duration::from_millis(10));
        assert_eq!(
            counts_of(config.clone(), 3, 200),
            counts_of(config.clone(), 3, 200)
        );
        assert_ne!(counts_of(config.clone(), 3, 200), counts_of(config, 4, 200));
    }

    #[test]
    fn scheduled_faults_hit_their_call_only_while_enabled() {
        let store = FaultyStore::new((), FaultConfig::none(), 1);
        store.fail_write(2, WriteFault::AfterApplied);
        store.fail_write(3, WriteFault::BeforeApplied);
        store.fail_read(1);
        assert!(store.plan(false).fail_before);
        assert!(!store.plan(true).fail_after);
        assert!(store.plan(true).fail_after);
        store.set_enabled(false);
        assert!(!store.plan(true).fail_before);
        let counts = store.counts();
        assert_eq!((counts.reads, counts.writes), (1, 3));
        assert_eq!(counts.failed_reads, 1);
        assert_eq!(counts.failed_after_applied, 1);
        assert_eq!(counts.failed_before_applied, 0);
    }
}
