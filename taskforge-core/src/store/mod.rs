//! The storage contract, for backend authors: small traits that every
//! backend implements, the [`rules`] they all apply, and the conformance
//! suite (core's `testing` feature) that checks them.
//!
//! `Arc<T>` implements the traits whenever `T` does, `Arc<dyn Store>`
//! included, so a host can choose its backend at run time.
//!
//! A backend implements all three traits over one database, because some
//! writes span them (an event and the run it starts are stored atomically).
//! [`Store`] names the three together.
//!
//! Every method documents its contract under `# Contract`. Words used there:
//! - *durable*: once the call returns `Ok`, the write survives a process
//!   crash (for backends that persist at all; the memory store keeps it
//!   until the process ends). Readers may see a write before it is durable:
//!   backends that group commits apply a write, then wait for a shared
//!   flush before acknowledging it.
//! - *atomic*: other callers see all of the write or none of it, and a
//!   failed call has changed nothing.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

pub use crate::error::store::StoreError;
pub use crate::event::OutcomeKind;
pub use crate::run::{Fence, Lease, RunTransition, Signal, StepTransition};
pub use crate::secret::SealedSecret;
pub use crate::token::{ApiToken, Scope, TokenDigest, TokenId, TokenStore};

mod arc;
mod log;
pub mod rules;
mod secret;

pub use self::log::{LogQuery, LogStore};
pub use self::secret::SecretStore;
use crate::event::Event;
use crate::id::{EventId, RunId, TriggerId, VersionId, WorkflowId};
use crate::run::{RunStatus, StepRun, WorkflowRun};
use crate::trigger::Trigger;
use crate::workflow::{Workflow, WorkflowVersion};

/// The largest page a listing returns, whatever limit is asked for.
pub const MAX_PAGE_SIZE: usize = 1_000;

/// Which end of a listing comes first. Listings are ordered by id, and ids
/// (UUID v7) are ordered by creation time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Order {
    /// Oldest first.
    #[default]
    OldestFirst,
    /// Newest first.
    NewestFirst,
}

/// One page of a listing.
#[derive(Debug, Clone, PartialEq)]
pub struct Page<T, C> {
    /// The items, in the order asked for.
    pub items: Vec<T>,
    /// Pass this as `after` to get the next page; `None` on the last page.
    pub next: Option<C>,
}

impl<T, C> Page<T, C> {
    /// A page of `items`; when `more` match after them, `next` is the
    /// cursor of the last item.
    pub fn new(items: Vec<T>, more: bool, cursor: impl Fn(&T) -> C) -> Self {
        let next = if more { items.last().map(cursor) } else { None };
        Self { items, next }
    }
}

/// Which runs to list, and which page of them.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RunQuery {
    /// Only runs of this workflow.
    pub workflow_id: Option<WorkflowId>,
    /// Only runs in this status.
    pub status: Option<RunStatus>,
    /// Only runs caused by this event.
    pub event_id: Option<EventId>,
    /// Only unfinished runs that take part in this concurrency key
    /// ([`rules::slot_use`]: a key with a maximum or a debounce window),
    /// holding a slot or waiting for one. Finished runs leave their key, so
    /// with this filter a listing never holds one.
    pub concurrency_key: Option<String>,
    /// Only runs created at or after this time.
    pub created_from: Option<DateTime<Utc>>,
    /// Only runs created before this time.
    pub created_until: Option<DateTime<Utc>>,
    /// The order of the listing.
    pub order: Order,
    /// Start after this run (the `next` of the previous page).
    pub after: Option<RunId>,
    /// The most runs to return, from 1 to [`MAX_PAGE_SIZE`]; 0 means 100.
    pub limit: usize,
}

/// Which events to list, and which page of them.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EventQuery {
    /// Only events addressed to this workflow.
    pub workflow_id: Option<WorkflowId>,
    /// Only events received by this trigger.
    pub trigger_id: Option<TriggerId>,
    /// Only events with this kind of outcome.
    pub outcome: Option<OutcomeKind>,
    /// Only events received at or after this time.
    pub received_from: Option<DateTime<Utc>>,
    /// Only events received before this time.
    pub received_until: Option<DateTime<Utc>>,
    /// The order of the listing.
    pub order: Order,
    /// Start after this event (the `next` of the previous page).
    pub after: Option<EventId>,
    /// The most events to return, from 1 to [`MAX_PAGE_SIZE`]; 0 means 100.
    pub limit: usize,
}

/// The result of [`EventStore::insert_event`].
#[derive(Debug, Clone, PartialEq)]
pub enum EventInsert {
    /// The event (and its run, if one was given) was stored.
    Inserted,
    /// An event with the same dedup key is stored already; this is it.
    /// Nothing was written.
    Duplicate(Box<Event>),
}

/// Workflows, their versions and their triggers.
#[async_trait]
pub trait WorkflowStore: Send + Sync + 'static {
    /// Stores a new workflow.
    ///
    /// # Contract
    /// Atomic and durable. `AlreadyExists` if the id or the name is taken
    /// (names are unique); of concurrent inserts of one name, exactly one wins.
    async fn insert_workflow(&self, workflow: &Workflow) -> Result<(), StoreError>;

    /// Rewrites a workflow's mutable fields (`active`, `updated_at`).
    ///
    /// # Contract
    /// Atomic and durable. `NotFound` if absent; `Conflict` if `name` or
    /// `created_at` differ from the stored ones (they are immutable).
    async fn update_workflow(&self, workflow: &Workflow) -> Result<(), StoreError>;

    /// The workflow with this id.
    ///
    /// # Contract
    /// `NotFound` if absent.
    async fn get_workflow(&self, id: WorkflowId) -> Result<Workflow, StoreError>;

    /// The workflow with this name, if any.
    async fn find_workflow(&self, name: &str) -> Result<Option<Workflow>, StoreError>;

    /// Every workflow, ordered by id.
    async fn list_workflows(&self) -> Result<Vec<Workflow>, StoreError>;

    /// Publishes a version.
    ///
    /// # Contract
    /// Atomic and durable. `NotFound` if the workflow is absent;
    /// `Conflict` unless `version.number` is exactly one more than the
    /// latest stored number (1 for the first), so of concurrent publishers
    /// exactly one gets each number; `AlreadyExists` if the id is taken.
    /// A stored version is never changed or removed.
    async fn insert_version(&self, version: &WorkflowVersion) -> Result<(), StoreError>;

    /// The version with this id.
    ///
    /// # Contract
    /// `NotFound` if absent.
    async fn get_version(&self, id: VersionId) -> Result<WorkflowVersion, StoreError>;

    /// The version of `workflow_id` numbered `number`.
    ///
    /// # Contract
    /// `NotFound` if absent.
    async fn get_version_by_number(
        &self,
        workflow_id: WorkflowId,
        number: u32,
    ) -> Result<WorkflowVersion, StoreError>;

    /// The highest-numbered version of `workflow_id`, if any.
    async fn latest_version(
        &self,
        workflow_id: WorkflowId,
    ) -> Result<Option<WorkflowVersion>, StoreError>;

    /// Every version of `workflow_id`, by number.
    async fn list_versions(
        &self,
        workflow_id: WorkflowId,
    ) -> Result<Vec<WorkflowVersion>, StoreError>;

    /// Stores a new trigger.
    ///
    /// # Contract
    /// Atomic and durable. `NotFound` if the workflow is absent;
    /// `AlreadyExists` if the id is taken, if another trigger of the
    /// workflow has the same non-empty `name`, or if another trigger has
    /// the same webhook path ([`Trigger::webhook_path`]). The uniqueness
    /// checks and the write are one atomic step: of concurrent inserts of
    /// one name or one path, exactly one wins.
    async fn insert_trigger(&self, trigger: &Trigger) -> Result<(), StoreError>;

    /// Rewrites a trigger.
    ///
    /// # Contract
    /// Atomic and durable. `NotFound` if absent; `Conflict` if
    /// `workflow_id` differs from the stored one (see
    /// [`rules::check_trigger_update`]); `AlreadyExists` if its name or
    /// webhook path is taken by another trigger, as for
    /// [`insert_trigger`](Self::insert_trigger).
    async fn update_trigger(&self, trigger: &Trigger) -> Result<(), StoreError>;

    /// Removes a trigger, freeing its name and webhook path. The events it
    /// received stay.
    ///
    /// # Contract
    /// Atomic and durable. `NotFound` if absent.
    async fn delete_trigger(&self, id: TriggerId) -> Result<(), StoreError>;

    /// The trigger with this id.
    ///
    /// # Contract
    /// `NotFound` if absent.
    async fn get_trigger(&self, id: TriggerId) -> Result<Trigger, StoreError>;

    /// The triggers of `workflow_id`, or every trigger, ordered by id.
    async fn list_triggers(
        &self,
        workflow_id: Option<WorkflowId>,
    ) -> Result<Vec<Trigger>, StoreError>;
}

/// Events: persisted records of deliveries, ticks and requests.
#[async_trait]
pub trait EventStore: Send + Sync + 'static {
    /// Stores an event, and the run it starts if `run` is given, unless an
    /// event with the same `(workflow_id, dedup_key)` is stored already.
    ///
    /// # Contract
    /// Atomic and durable: the event and its run are stored together or not
    /// at all. Insert-if-absent on the dedup key: of any number of
    /// concurrent inserts with one key, exactly one returns `Inserted` and
    /// every other returns `Duplicate` with the stored event, whose outcome
    /// names the run it started. An event without a dedup key is never a
    /// duplicate. `AlreadyExists` if the event's or the run's id is taken.
    /// A stored event is never rewritten. Dedup keys are unique among
    /// stored events: a backend's retention that removes an event frees
    /// its key.
    async fn insert_event(
        &self,
        event: &Event,
        run: Option<&WorkflowRun>,
    ) -> Result<EventInsert, StoreError>;

    /// The event with this id.
    ///
    /// # Contract
    /// `NotFound` if absent.
    async fn get_event(&self, id: EventId) -> Result<Event, StoreError>;

    /// The event of `workflow_id` stored with `dedup_key`, if any.
    async fn find_event_by_dedup_key(
        &self,
        workflow_id: WorkflowId,
        dedup_key: &str,
    ) -> Result<Option<Event>, StoreError>;

    /// A page of events matching `query`.
    ///
    /// # Contract
    /// Ordered by id as `query.order` says; paging with `next` visits every
    /// matching event exactly once, even while new events are inserted.
    /// Filtering by workflow or trigger does not scan other workflows' or
    /// triggers' events.
    async fn list_events(&self, query: &EventQuery) -> Result<Page<Event, EventId>, StoreError>;
}

/// Runs and their step attempts.
#[async_trait]
pub trait RunStore: Send + Sync + 'static {
    /// Stores a new run.
    ///
    /// # Contract
    /// Atomic and durable. `AlreadyExists` if the id is taken.
    async fn insert_run(&self, run: &WorkflowRun) -> Result<(), StoreError>;

    /// The run with this id.
    ///
    /// # Contract
    /// `NotFound` if absent.
    async fn get_run(&self, id: RunId) -> Result<WorkflowRun, StoreError>;

    /// A page of runs matching `query`.
    ///
    /// # Contract
    /// Ordered by id as `query.order` says; paging with `next` visits every
    /// matching run exactly once. Filtering by workflow or status does not
    /// scan other workflows' runs or runs in other statuses.
    async fn list_runs(&self, query: &RunQuery) -> Result<Page<WorkflowRun, RunId>, StoreError>;

    /// Up to `limit` runs a worker may claim at `now` (queued or running,
    /// with no live lease, and allowed by their limits; or parked and due,
    /// see [`rules::is_due`]), oldest first.
    ///
    /// # Contract
    /// Does not scan finished runs, nor parked runs that are not due (a
    /// parked run is found by its `wake_at`, not by a scan of every parked
    /// run). The answer may be stale by the time it is used;
    /// [`claim_run`](Self::claim_run) decides. Lists no run whose
    /// claim at `now` its limits would refuse (see `claim_run`), so that a
    /// dispatcher never spins on runs it cannot take: of a key's waiting
    /// runs, oldest first, as many as the key has free slots, and of a
    /// rate-limited workflow's, as many as its window allows
    /// ([`rules::ClaimablePicker`] decides this run by run); a run whose
    /// debounce window has not ended is not listed, and a superseded one
    /// is. A run limited by a rate is listed once its window allows it, a
    /// run of a full key once a slot frees: both need a new look (a poll,
    /// or the [`work_signal`](Self::work_signal) of a finished run).
    async fn list_claimable(
        &self,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<RunId>, StoreError>;

    /// Claims a run for `owner` until `expires_at`, returning the run with
    /// its new lease and an incremented `lease_epoch`.
    ///
    /// # Contract
    /// Atomic compare-and-set: succeeds only if the run is queued or
    /// running, with no lease or a lease that lapsed at or before `now`
    /// (see [`rules::is_claimable`]), or parked and due at `now`
    /// ([`rules::is_due`]): the test is [`rules::can_claim`]. Of
    /// concurrent claims exactly one succeeds; the others get `Conflict`
    /// and change nothing. `NotFound` if absent. The status is not changed;
    /// the new owner changes it with a fenced [`commit`](Self::commit). Need not be durable on return, as
    /// long as it is durable no later than the claimer's next durable write:
    /// a claim lost in a crash is lost together with its claimer.
    ///
    /// **Limits** ([`concurrency`](crate::concurrency)). The first claim
    /// of a run with [`limits`](WorkflowRun::limits) and no cancellation
    /// asked for ([`rules::needs_slot`]) also takes a slot of its key and a
    /// start of its workflow's rate limit: the backend reads its key's
    /// holders and waiting runs and its workflow's recorded starts
    /// ([`rules::SlotState`]) and applies [`rules::claim_with_slot`], in
    /// the same atomic step as the claim, serialized with every other
    /// claim of the key and of the workflow, by any engine: so no more than
    /// `max` runs of a key ever hold a slot (a run holds one from its first
    /// claim until it finishes, see [`rules::slot_use`]), a key's waiting
    /// runs are claimed in creation order, no run is claimed before its
    /// debounce window ends, and a rate limit's window never holds more
    /// starts than it allows. A refusal is `Conflict` and changes nothing.
    /// The state lives in the store, so it survives restarts. A run
    /// claimed before (a lapsed lease) and a run to be cancelled are
    /// claimed without these checks.
    async fn claim_run(
        &self,
        id: RunId,
        owner: &str,
        now: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    ) -> Result<WorkflowRun, StoreError>;

    /// Extends the lease of the claim with epoch `epoch` to `expires_at`,
    /// returning the run (whose `cancel_requested` tells the owner to stop).
    ///
    /// # Contract
    /// Atomic compare-and-set on `lease_epoch`: `Conflict` if the run was
    /// claimed again since, holds no lease, or is finished. Need not be durable: a lost
    /// renewal only shortens the lease.
    async fn renew_lease(
        &self,
        id: RunId,
        epoch: u64,
        expires_at: DateTime<Utc>,
    ) -> Result<WorkflowRun, StoreError>;

    /// Writes the lease holder's progress: the run record (if given) and
    /// step attempts (new or updated), all fenced by `fence`.
    ///
    /// # Contract
    /// Atomic and durable. Applied only if the stored run's `lease_epoch`
    /// and `status` equal the fence's; otherwise `Conflict` and nothing is
    /// written. A finished run is never rewritten: its status is terminal,
    /// so a fence naming it as running cannot match, and a fence naming a
    /// terminal status gets `Conflict`. A step attempt already stored in a
    /// terminal status is never rewritten (`Conflict`). The stored
    /// `cancel_requested` flag is kept if set, whatever `run` says; `run`'s
    /// `lease` is written as given, so a writer passes its latest renewal,
    /// while the stored `lease_epoch` and `signals` are kept whatever `run`
    /// says ([`rules::merge_committed`], [`rules::merge_signals`]). Changing
    /// a run's `workflow_id`, `version_id` or `event_id`, or writing a step
    /// of another run, is `Invalid`. Step attempts are keyed by
    /// `(run_id, step_index, attempt)`; an attempt written twice in one
    /// commit is judged against its first write.
    async fn commit(
        &self,
        fence: Fence,
        run: Option<&WorkflowRun>,
        steps: &[StepRun],
    ) -> Result<(), StoreError>;

    /// Asks for a run to be cancelled, returning it with `cancel_requested` set.
    ///
    /// # Contract
    /// Atomic and durable. Changes nothing but the flag. `NotFound` if
    /// absent; a finished run is returned unchanged. A parked run with
    /// the flag is due at once ([`rules::is_due`]).
    async fn request_cancel(&self, id: RunId) -> Result<WorkflowRun, StoreError>;

    /// Stores a signal sent to a run, returning the run with the signal
    /// appended to its [`signals`](WorkflowRun::signals).
    ///
    /// # Contract
    /// Atomic and durable, and needs no lease: like
    /// [`request_cancel`](Self::request_cancel) it is a narrow update, by
    /// any engine at any time, that changes only what [`rules::signal`]
    /// returns (the signal appended; a parked run made due). `NotFound` if
    /// absent; `Conflict` if the run is finished (nothing is written);
    /// `Invalid` if it holds [`MAX_SIGNALS_PER_RUN`](crate::limits::MAX_SIGNALS_PER_RUN)
    /// already. A later [`commit`](Self::commit) never drops a stored
    /// signal, whatever its `run` says ([`rules::merge_signals`]), and a
    /// commit that parks the run after a signal its writer did not see
    /// leaves it due. A signal that makes a parked run due wakes the
    /// [`work_signal`](Self::work_signal), as any write that makes a run
    /// claimable.
    ///
    /// The default refuses (`Invalid`), for backends written before
    /// signals; every backend of this workspace implements it.
    async fn signal_run(&self, id: RunId, signal: &Signal) -> Result<WorkflowRun, StoreError> {
        let _ = signal;
        Err(StoreError::Invalid(format!(
            "this store does not keep signals (run {id})"
        )))
    }

    /// Wake-ups for when work is queued by another process, for backends
    /// that can push them (PostgreSQL's LISTEN/NOTIFY). The engine's
    /// dispatcher waits on it beside its poll interval, so a run started
    /// in one process begins in another within milliseconds. `None`, the
    /// default, for backends that cannot.
    ///
    /// # Contract
    /// A signal taken before a write that makes a run claimable is woken
    /// after that write (a run that finishes while holding a slot of its
    /// key makes the key's next run claimable); wake-ups are hints (several
    /// may merge into one, some may be lost), so callers keep polling as a
    /// fallback.
    fn work_signal(&self) -> Option<WorkSignal> {
        None
    }

    /// Every attempt of every step of a run, by step index then attempt.
    ///
    /// # Contract
    /// Empty if the run has none or does not exist.
    async fn list_step_runs(&self, run_id: RunId) -> Result<Vec<StepRun>, StoreError>;
}

/// A backend: all the store traits over one database.
pub trait Store:
    WorkflowStore + EventStore + RunStore + TokenStore + LogStore + SecretStore
{
}

impl<T: WorkflowStore + EventStore + RunStore + TokenStore + LogStore + SecretStore> Store for T {}

/// Conveniences over [`RunStore`], for every store.
#[async_trait]
pub trait RunStoreExt: RunStore {
    /// A run with its step attempts.
    async fn get_run_with_steps(
        &self,
        id: RunId,
    ) -> Result<(WorkflowRun, Vec<StepRun>), StoreError> {
        let run = self.get_run(id).await?;
        let steps = self.list_step_runs(id).await?;
        Ok((run, steps))
    }

    /// Every run matching `query`, following pages to the end.
    async fn list_all_runs(&self, query: &RunQuery) -> Result<Vec<WorkflowRun>, StoreError> {
        let mut query = query.clone();
        let mut all = Vec::new();
        loop {
            let page = self.list_runs(&query).await?;
            all.extend(page.items);
            match page.next {
                Some(next) => query.after = Some(next),
                None => return Ok(all),
            }
        }
    }
}

impl<T: RunStore + ?Sized> RunStoreExt for T {}

/// A subscription to a backend's work notifications, from
/// [`RunStore::work_signal`]: a counter the backend bumps when work may
/// have been queued.
#[derive(Debug, Clone)]
pub struct WorkSignal {
    rx: tokio::sync::watch::Receiver<u64>,
}

impl WorkSignal {
    /// A signal that wakes whenever the sender's value changes after now.
    #[must_use]
    pub fn new(mut rx: tokio::sync::watch::Receiver<u64>) -> Self {
        rx.mark_unchanged();
        Self { rx }
    }

    /// Waits until work may have been queued since the signal was made or
    /// this last returned. Never returns once the sender is gone.
    pub async fn notified(&mut self) {
        if self.rx.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}
