//! Test support for backends: the store conformance suite and the
//! engine-level scenarios.
//!
//! This is test support, not a stable API: it exists for the tests of
//! backend crates, is only compiled with the `testing` feature, and its
//! cases, helpers and macros may change in any release, minor and patch
//! releases included.
//!
//! It holds two suites, each run with one macro call:
//!
//! - the store conformance suite ([`store`], run by
//!   [`store_conformance!`](crate::store_conformance)): one case per clause
//!   of the contracts in [`WorkflowStore`](crate::store::WorkflowStore),
//!   [`EventStore`](crate::store::EventStore) and
//!   [`RunStore`](crate::store::RunStore), each on the store alone;
//! - the engine-level scenarios ([`engine`] and [`triggers`], run by
//!   [`engine_conformance!`](crate::engine_conformance)): each drives a real
//!   [`Engine`](crate::Engine) over the store (runs, retries, timeouts,
//!   cancellation, versions, recovery, webhooks, cron).
//!
//! The artifact store suite ([`artifacts`], run by
//! [`artifact_conformance!`](crate::artifact_conformance)) is apart: it
//! checks an [`ArtifactStore`](crate::artifact::ArtifactStore).
//!
//! A backend runs them with one line each, usually in its
//! `tests/conformance.rs` and `tests/engine.rs`:
//!
//! ```ignore
//! taskforge_core::store_conformance!(|| async { MemoryStore::new() });
//! taskforge_core::engine_conformance!(|| async { MemoryStore::new() });
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
//! hand a clone to each of many tasks, and engine scenarios start a second
//! engine on the same data. The calling crate needs `tokio` with the
//! `macros` and `rt-multi-thread` features among its dev-dependencies,
//! because the generated tests are `#[tokio::test]`s (multi-threaded, four
//! workers, so races are real).
//!
//! Each macro also generates a test `every_case_is_listed`, which fails if
//! the macro's list of cases and the `pub async fn`s of the suite's source
//! files differ (see [`assert_every_case_listed`]), so a new case cannot be
//! left out of the macro unnoticed.
//!
//! The cases are also plain `async fn`s in [`store`], [`engine`] and
//! [`triggers`], for a backend that wants to run one by hand.

use std::any::Any;
use std::collections::BTreeSet;
use std::fmt;
use std::future::Future;

use crate::store::Store;

pub mod artifacts;
pub mod at_rest;
pub mod engine;
pub mod faults;
pub mod simulation;
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

/// Defines, from one list of paths relative to this file, a constant with
/// the paths and one with the files' text.
macro_rules! case_files {
    ($paths:ident, $sources:ident: $($path:literal),+ $(,)?) => {
        #[cfg(test)]
        const $paths: &[&str] = &[$($path),+];
        const $sources: &[&str] = &[$(include_str!($path)),+];
    };
}

case_files!(STORE_CASE_PATHS, STORE_CASE_SOURCES:
    "store.rs",
    "store/claims.rs",
    "store/commits.rs",
    "store/events.rs",
    "store/hardening.rs",
    "store/limits.rs",
    "store/listing.rs",
    "store/logs.rs",
    "store/runs.rs",
    "store/secrets.rs",
    "store/tokens.rs",
    "store/waits.rs",
    "store/workflows.rs",
);

case_files!(ENGINE_CASE_PATHS, ENGINE_CASE_SOURCES:
    "engine/mod.rs",
    "engine/artifacts.rs",
    "engine/cancellation.rs",
    "engine/dag.rs",
    "engine/execution.rs",
    "engine/hardening.rs",
    "engine/limits.rs",
    "engine/logs.rs",
    "engine/recovery.rs",
    "engine/resume.rs",
    "engine/secrets.rs",
    "engine/versions.rs",
    "engine/waits.rs",
    "triggers/mod.rs",
    "triggers/cron.rs",
    "triggers/webhooks.rs",
);

/// The text of every source file of the store conformance suite
/// ([`store`]), for [`assert_every_case_listed`].
#[must_use]
pub fn store_case_sources() -> &'static [&'static str] {
    STORE_CASE_SOURCES
}

/// The text of every source file of the engine-level scenarios
/// ([`engine`] and [`triggers`]), for [`assert_every_case_listed`].
#[must_use]
pub fn engine_case_sources() -> &'static [&'static str] {
    ENGINE_CASE_SOURCES
}

/// The names of the cases in `source`: every `pub async fn` at the start
/// of a line (cases are top-level items; a nested or indented `pub async
/// fn` is not one).
fn case_names(source: &str) -> impl Iterator<Item = &str> {
    source.lines().filter_map(|line| {
        let rest = line.strip_prefix("pub async fn ")?;
        let end = rest
            .find(|c: char| !(c.is_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        Some(&rest[..end])
    })
}

/// Panics unless `listed` (the cases a conformance macro runs) names every
/// case of `sources` (the text of the suite's files, such as
/// [`store_case_sources`]) exactly once, and nothing else.
///
/// A case is a `pub async fn` at the start of a line. The panic message
/// names the cases missing from the list, the listed names that are not
/// cases, and any name that appears twice.
///
/// # Panics
///
/// If the list and the cases differ, if a name is listed or defined twice,
/// or if `sources` define no case at all.
pub fn assert_every_case_listed(listed: &[&str], sources: &[&str]) {
    let mut cases = BTreeSet::new();
    let mut twice = BTreeSet::new();
    for name in sources.iter().flat_map(|source| case_names(source)) {
        if !cases.insert(name) {
            twice.insert(name);
        }
    }
    assert!(!cases.is_empty(), "the suite's sources define no case");
    let mut named = BTreeSet::new();
    for &name in listed {
        if !named.insert(name) {
            twice.insert(name);
        }
    }
    let missing: Vec<_> = cases.difference(&named).collect();
    let extra: Vec<_> = named.difference(&cases).collect();
    let twice: Vec<_> = twice.into_iter().collect();
    assert!(
        missing.is_empty() && extra.is_empty() && twice.is_empty(),
        "the conformance macro's list of cases is out of date:\n\
         cases the macro does not list: {missing:?}\n\
         listed names that are not cases: {extra:?}\n\
         names listed or defined twice: {twice:?}"
    );
}

/// Expands to one `#[tokio::test]` per case of the store conformance suite,
/// each on a fresh store from the factory, and one `#[test]`
/// `every_case_is_listed` that checks this list against the cases of
/// [`store`](crate::testing::store) (see
/// [`assert_every_case_listed`](crate::testing::assert_every_case_listed)).
/// See the [module docs](crate::testing).
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

        #[test]
        fn every_case_is_listed() {
            $crate::testing::assert_every_case_listed(
                &[$(stringify!($case)),*],
                $crate::testing::store_case_sources(),
            );
        }
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
            // tokens
            token_round_trip,
            token_id_and_digest_are_unique,
            revoked_token_stays_revoked,
            touch_token_only_moves_forward,
            missing_tokens_are_not_found,
            // secrets
            secret_round_trip,
            secret_versions_are_unique,
            concurrent_inserts_of_one_secret_version_have_one_winner,
            latest_secret_is_the_highest_version,
            reseal_is_a_compare_and_set_on_key_id,
            delete_secret_removes_every_version,
            missing_secrets_are_not_found_or_empty,
            large_secrets_and_every_name_character_round_trip,
            // logs
            log_lines_round_trip_in_seq_order,
            log_appends_are_idempotent,
            logs_are_kept_per_attempt,
            empty_logs_are_empty_pages,
            // hardening
            concurrent_creates_of_one_webhook_path_have_one_winner,
            trigger_names_are_unique_per_workflow,
            update_trigger_onto_a_taken_name_or_path_changes_nothing,
            concurrent_updates_onto_one_path_have_one_winner,
            delete_trigger_frees_its_name_and_path,
            a_commit_retried_after_a_lost_reply_succeeds,
            only_an_identical_retry_is_accepted,
            // limits
            a_full_key_refuses_a_claim,
            a_finished_run_frees_its_slot,
            waiting_runs_of_a_key_start_in_order,
            keys_are_independent,
            concurrent_claims_never_exceed_the_max,
            debounce_windows_and_superseded_runs,
            rate_limits_count_starts_in_a_window,
            runs_filter_by_concurrency_key,
            // parked runs and signals
            signals_are_appended_without_a_lease,
            commits_keep_signals_their_writer_did_not_see,
            a_parked_run_is_claimable_once_due,
            a_signal_makes_a_parked_run_due,
            parking_after_an_unseen_signal_leaves_the_run_due,
            a_cancel_request_makes_a_parked_run_due,
        );
    };
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    /// Files of the testing module that hold no conformance case.
    const SUPPORT_PATHS: &[&str] = &[
        "at_rest.rs",
        "faults.rs",
        "simulation.rs",
        "simulation/check.rs",
        "simulation/plan.rs",
        "simulation/world.rs",
    ];

    /// Every `.rs` file under `src/testing/` but `mod.rs`, relative to it.
    fn suite_files(dir: &Path, prefix: &str, files: &mut BTreeSet<String>) {
        for entry in std::fs::read_dir(dir).expect("read the testing directory") {
            let entry = entry.expect("a directory entry");
            let name = entry.file_name().into_string().expect("a UTF-8 name");
            let path = format!("{prefix}{name}");
            if entry.file_type().expect("a file type").is_dir() {
                suite_files(&entry.path(), &format!("{path}/"), files);
            } else if name.ends_with(".rs") && path != "mod.rs" {
                files.insert(path);
            }
        }
    }

    #[test]
    fn every_file_of_the_suites_is_a_case_source() {
        let mut files = BTreeSet::new();
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/testing");
        suite_files(&dir, "", &mut files);
        let sources: BTreeSet<String> = STORE_CASE_PATHS
            .iter()
            .chain(ENGINE_CASE_PATHS)
            .chain(&["artifacts.rs"])
            .chain(SUPPORT_PATHS)
            .map(|path| (*path).to_owned())
            .collect();
        assert_eq!(sources, files);
    }

    const SOURCES: &[&str] = &[
        "/// A case.\npub async fn first<S: Store + Clone>(store: S) {\n    drop(store);\n}\n",
        "fn helper() {}\n/// pub async fn in_a_comment\nasync fn private() {}\n\
         mod nested {\n    pub async fn indented() {}\n}\npub async fn second<S>(store: S) {}\n",
    ];

    #[test]
    fn a_complete_list_passes() {
        assert_every_case_listed(&["second", "first"], SOURCES);
    }

    #[test]
    #[should_panic(expected = "cases the macro does not list: [\"second\"]")]
    fn an_unlisted_case_fails() {
        assert_every_case_listed(&["first"], SOURCES);
    }

    #[test]
    #[should_panic(expected = "listed names that are not cases: [\"third\"]")]
    fn a_listed_name_that_is_no_case_fails() {
        assert_every_case_listed(&["first", "second", "third"], SOURCES);
    }

    #[test]
    #[should_panic(expected = "names listed or defined twice: [\"first\"]")]
    fn a_name_listed_twice_fails() {
        assert_every_case_listed(&["first", "second", "first"], SOURCES);
    }

    #[test]
    fn the_suites_define_cases() {
        assert!(case_names(STORE_CASE_SOURCES.concat().as_str()).count() > 0);
        assert!(case_names(ENGINE_CASE_SOURCES.concat().as_str()).count() > 0);
    }
}
