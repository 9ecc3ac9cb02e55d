//! Test support for backends: the store conformance suite.
//!
//! Every backend runs the same suite, one `#[tokio::test]` per clause of the
//! contracts in [`WorkflowStore`](crate::store::WorkflowStore),
//! [`EventStore`](crate::store::EventStore) and [`RunStore`](crate::store::RunStore), with
//! one line in its `tests/conformance.rs`:
//!
//! ```ignore
//! taskforge_core::store_conformance!(|| async { MemoryStore::new() });
//! ```
//!
//! The argument is a factory: a closure without arguments returning a
//! future, called once per case so that every case gets a fresh, empty
//! store. The future's output is either the store itself or a [`Fixture`]:
//! the store with a guard that lives until the case ends, for backends that
//! need one (a temporary directory, a container):
//!
//! ```ignore
//! taskforge_core::store_conformance!(|| async {
//!     let dir = tempfile::tempdir().expect("create a temporary directory");
//!     let store = SledStore::open(dir.path()).expect("open the store");
//!     taskforge_core::testing::Fixture::with_guard(store, dir)
//! });
//! ```
//!
//! The store must be `Clone`, clones sharing one database: concurrency cases
//! hand a clone to each of many tasks. The calling crate needs `tokio` with
//! the `macros` and `rt-multi-thread` features among its dev-dependencies,
//! because the generated tests are `#[tokio::test]`s (multi-threaded, four
//! workers, so races are real).
//!
//! The cases are also plain `async fn`s in [`store`], for a backend that
//! wants to run one by hand.

use std::any::Any;
use std::fmt;
use std::future::Future;

use crate::store::Store;

pub mod engine;
pub mod store;
pub mod triggers;

/// A store under test, and whatever must outlive it (dropped after the case).
pub struct Fixture<S> {
    store: S,
    guard: Box<dyn Any + Send>,
}

impl<S: Store + Clone> Fixture<S> {
    /// A store that needs no guard.
    #[must_use]
    pub fn new(store: S) -> Self {
        Self::with_guard(store, ())
    }

    /// A store with a guard, such as a `tempfile::TempDir`, dropped only
    /// after the case and every clone of the store it made are done.
    #[must_use]
    pub fn with_guard(store: S, guard: impl Any + Send) -> Self {
        Self {
            store,
            guard: Box::new(guard),
        }
    }

    /// The store.
    #[must_use]
    pub fn store(&self) -> &S {
        &self.store
    }

    /// The store and its guard.
    #[must_use]
    pub fn into_parts(self) -> (S, Box<dyn Any + Send>) {
        (self.store, self.guard)
    }
}

impl<S: fmt::Debug> fmt::Debug for Fixture<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Fixture")
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

/// What a conformance factory may return: a store, or a [`Fixture`].
pub trait IntoFixture {
    /// The store under test.
    type Store: Store + Clone;

    /// The store with its guard.
    fn into_fixture(self) -> Fixture<Self::Store>;
}

impl<S: Store + Clone> IntoFixture for S {
    type Store = S;

    fn into_fixture(self) -> Fixture<S> {
        Fixture::new(self)
    }
}

impl<S: Store + Clone> IntoFixture for Fixture<S> {
    type Store = S;

    fn into_fixture(self) -> Fixture<S> {
        self
    }
}

/// Runs one case on a fresh store from `factory`, dropping the guard last.
/// Used by [`store_conformance!`](crate::store_conformance).
pub async fn run_case<F, Fut, C, CFut>(factory: F, case: C)
where
    F: FnOnce() -> Fut,
    Fut: Future,
    Fut::Output: IntoFixture,
    C: FnOnce(<Fut::Output as IntoFixture>::Store) -> CFut,
    CFut: Future<Output = ()>,
{
    let (store, guard) = factory().await.into_fixture().into_parts();
    case(store).await;
    drop(guard);
}

/// Expands to one `#[tokio::test]` per case of the store conformance suite,
/// each on a fresh store from the factory. See the [module docs](crate::testing).
///
/// ```ignore
/// taskforge_core::store_conformance!(|| async { MemoryStore::new() });
/// ```
#[macro_export]
macro_rules! store_conformance {
    (@cases $factory:expr; $($case:ident),* $(,)?) => {
        $(
            #[::tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $case() {
                $crate::testing::run_case($factory, $crate::testing::store::$case).await;
            }
        )*
    };
    ($factory:expr $(,)?) => {
        $crate::store_conformance!(@cases $factory;
            // workflows, versions, triggers
            workflow_round_trip,
            workflow_id_is_unique,
            workflow_name_is_unique,
            concurrent_inserts_of_one_name_have_one_winner,
            update_workflow_rewrites_mutable_fields,
            update_workflow_cannot_change_name_or_created_at,
            update_of_missing_workflow_is_not_found,
            version_round_trip,
            version_numbers_are_consecutive,
            concurrent_publishers_get_each_number_once,
            published_version_is_never_overwritten,
            version_of_missing_workflow_is_not_found,
            trigger_round_trip,
            trigger_ids_are_unique_and_need_a_workflow,
            update_trigger_cannot_move_it,
            // events
            event_round_trip,
            concurrent_inserts_of_one_dedup_key_store_one_event,
            event_and_its_run_are_stored_together,
            events_without_dedup_key_are_never_duplicates,
            dedup_keys_are_per_workflow,
            taken_event_or_run_ids_write_nothing,
            events_page_in_both_orders,
            events_page_while_inserted,
            events_filter,
            // runs
            run_round_trip,
            runs_page_in_both_orders,
            runs_page_while_inserted,
            runs_filter,
            runs_filter_follows_status_changes,
            page_limits_default_and_cap,
            list_claimable_finds_queued_and_lapsed_runs,
            claim_sets_lease_and_epoch_only,
            concurrent_claims_have_one_winner,
            claim_respects_live_leases,
            finished_runs_cannot_be_claimed,
            renew_lease_extends_the_current_claim,
            renew_lease_with_stale_epoch_conflicts,
            commit_writes_run_and_steps,
            commit_with_stale_epoch_changes_nothing,
            commit_with_stale_status_changes_nothing,
            finished_run_is_never_rewritten,
            terminal_step_attempt_is_never_rewritten,
            commit_keeps_cancel_requested,
            commit_cannot_repin_a_run,
            request_cancel_sets_only_the_flag,
            step_runs_are_ordered_by_index_then_attempt,
            missing_records_are_not_found,
            absent_lookups_are_empty,
            large_and_unicode_payloads_round_trip,
        );
    };
}
