//! The state an engine's background tasks share: they hold an
//! `Arc<Shared>`, never the [`Engine`](crate::Engine) itself, so dropping
//! the last engine handle stops them.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, TimeDelta, Utc};
use parking_lot::Mutex;
use tokio::sync::{broadcast, Notify, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::config::EngineConfig;
use super::update::RunUpdate;
use crate::clock::Clock;
use crate::error::StoreError;
use crate::id::{RunId, TriggerId, VersionId};
use crate::run::WorkflowRun;
use crate::secret::SecretVault;
use crate::step::ArtifactAccess;
use crate::store::Store;
use crate::workflow::WorkflowVersion;

/// Everything an engine's tasks share.
pub(crate) struct Shared<S, X> {
    pub(crate) store: S,
    pub(crate) executor: X,
    pub(crate) config: EngineConfig,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) updates: broadcast::Sender<RunUpdate>,
    /// One permit per run this engine may execute at once.
    pub(crate) permits: Arc<Semaphore>,
    /// Wakes the dispatcher early: a run was queued or a slot freed up.
    pub(crate) wake: Notify,
    /// When runs this engine parked fall due: the dispatcher looks then,
    /// not only at its next poll (other engines' parked runs are found by
    /// polls).
    wakes: Mutex<BTreeSet<tokio::time::Instant>>,
    /// Runs executing on this engine, with the token that cancels them.
    pub(crate) local: Mutex<HashMap<RunId, CancellationToken>>,
    /// Versions are immutable, so caching them is always correct.
    versions: Mutex<HashMap<VersionId, Arc<WorkflowVersion>>>,
    /// Set by shutdown: claim nothing new.
    pub(crate) stop_claiming: CancellationToken,
    /// Set when the last handle is dropped or on shutdown's deadline: every
    /// task stops at its next await, writing nothing more, as in a crash.
    pub(crate) kill: CancellationToken,
    pub(crate) tracker: TaskTracker,
    started: AtomicBool,
    pub(crate) webhooks: WebhookIndex,
    /// Secrets, sealed with the master key; `None` without one.
    pub(crate) vault: Option<SecretVault<S>>,
    /// Webhook credentials opened from the secret store, by reference (a
    /// reference names an immutable version, so entries never go stale).
    pub(crate) credentials: Mutex<HashMap<String, Arc<String>>>,
    /// Where steps keep artifacts; `None` without a store.
    pub(crate) artifacts: Option<Arc<ArtifactAccess>>,
}

/// Webhook paths to trigger ids, and rejection counts. Rejected deliveries
/// keep no body; they are only counted.
#[derive(Debug, Default)]
pub(crate) struct WebhookIndex {
    /// Every webhook path, and when the listing was read.
    pub(crate) paths: Mutex<Option<(HashMap<String, TriggerId>, Instant)>>,
    pub(crate) rejections: Mutex<HashMap<TriggerId, u64>>,
}

impl<S, X> Shared<S, X> {
    pub(crate) fn new(store: S, executor: X, config: EngineConfig, clock: Arc<dyn Clock>) -> Self {
        let (updates, _) = broadcast::channel(4096);
        Self {
            permits: Arc::new(Semaphore::new(config.max_concurrent_runs)),
            store,
            executor,
            config,
            clock,
            updates,
            wake: Notify::new(),
            wakes: Mutex::new(BTreeSet::new()),
            local: Mutex::new(HashMap::new()),
            versions: Mutex::new(HashMap::new()),
            stop_claiming: CancellationToken::new(),
            kill: CancellationToken::new(),
            tracker: TaskTracker::new(),
            started: AtomicBool::new(false),
            webhooks: WebhookIndex::default(),
            vault: None,
            credentials: Mutex::new(HashMap::new()),
            artifacts: None,
        }
    }

    pub(crate) fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// Sends an update to subscribers, if there are any.
    pub(crate) fn emit(&self, update: impl FnOnce() -> RunUpdate) {
        // Building an update costs allocations; skip it when nobody listens.
        if self.updates.receiver_count() > 0 {
            let _ = self.updates.send(update());
        }
    }

    /// Has the dispatcher look for work at `at` (a parked run falls due).
    /// The earliest thousand are kept; later ones are left to polls.
    pub(crate) fn wake_later(&self, at: tokio::time::Instant) {
        let mut wakes = self.wakes.lock();
        wakes.insert(at);
        if wakes.len() > 1_000 {
            wakes.pop_last();
        }
    }

    /// The next time the dispatcher must look for work, forgetting those
    /// past.
    pub(crate) fn next_wake(&self) -> Option<tokio::time::Instant> {
        let now = tokio::time::Instant::now();
        let mut wakes = self.wakes.lock();
        while wakes.first().is_some_and(|&at| at <= now) {
            wakes.pop_first();
        }
        wakes.first().copied()
    }

    /// When a lease taken or renewed at `now` lapses.
    pub(crate) fn lease_until(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        let ttl = TimeDelta::from_std(self.config.lease_ttl).unwrap_or(TimeDelta::MAX);
        now.checked_add_signed(ttl)
            .unwrap_or(DateTime::<Utc>::MAX_UTC)
    }

    /// Marks the engine started; `false` if it was already.
    pub(crate) fn mark_started(&self) -> bool {
        !self.started.swap(true, Ordering::SeqCst)
    }

    /// Whether this engine executes runs: started, and not shutting down.
    pub(crate) fn is_claiming(&self) -> bool {
        self.started.load(Ordering::Acquire) && !self.stop_claiming.is_cancelled()
    }
}

impl<S: Store, X> Shared<S, X> {
    /// The version a run is pinned to, from the cache or the store.
    pub(crate) async fn version_of(
        &self,
        run: &WorkflowRun,
    ) -> Result<Arc<WorkflowVersion>, StoreError> {
        if let Some(version) = self.versions.lock().get(&run.version_id) {
            return Ok(Arc::clone(version));
        }
        let version = Arc::new(self.store.get_version(run.version_id).await?);
        self.versions
            .lock()
            .insert(run.version_id, Arc::clone(&version));
        Ok(version)
    }
}
