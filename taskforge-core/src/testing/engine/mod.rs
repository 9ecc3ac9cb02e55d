//! Engine-level scenarios, run on every backend: each case drives a real
//! [`Engine`] over the store it is given and checks what users rely on.
//!
//! Cases take a store that is `Clone` (clones share one database), so a
//! case can start a second engine on the same data, as a restarted or
//! second process would.
//!
//! The cases live in one file per concern and are all re-exported here,
//! where [`engine_conformance!`](crate::engine_conformance) finds them:
//! linear runs, retries and timeouts; dependencies, parallel steps and
//! conditions; cancellation; versions and starting
//! runs; recovery (a crashed engine, two engines, a thousand runs,
//! shutdown); durable waits (sleeps, signals, parked retries); limits
//! (a key's queue, each policy, debounce and rate limits, a restart). The
//! trigger scenarios are in
//! [`triggers`](crate::testing::triggers).

mod artifacts;
mod cancellation;
mod dag;
mod execution;
mod hardening;
mod limits;
mod logs;
mod recovery;
mod resume;
mod secrets;
mod versions;
mod waits;

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::sync::Notify;

use crate::{
    Engine, RunId, StepContext, StepError, StepRegistry, Store, WorkflowDefinition, WorkflowRun,
};

pub use artifacts::*;
pub use cancellation::*;
pub use dag::*;
pub use execution::*;
pub use hardening::*;
pub use limits::*;
pub use logs::*;
pub use recovery::*;
pub use resume::*;
pub use secrets::*;
pub use versions::*;
pub use waits::*;

/// How long a case waits for a run before it fails.
const PATIENCE: Duration = Duration::from_secs(60);

fn engine<S: Store>(store: S, registry: StepRegistry) -> Engine<S, StepRegistry> {
    Engine::builder(store, registry)
        .lease_ttl(Duration::from_millis(500))
        .poll_interval(Duration::from_millis(20))
        .build()
}

async fn wait<S: Store>(engine: &Engine<S, StepRegistry>, id: RunId) -> WorkflowRun {
    tokio::time::timeout(PATIENCE, engine.wait_for_run(id))
        .await
        .unwrap_or_else(|_| panic!("run {id} did not finish within {PATIENCE:?}"))
        .expect("wait for run")
}

/// Creates the workflow `name` and publishes `definition` as its first version.
async fn published<S: Store, X: crate::StepExecutor>(
    engine: &Engine<S, X>,
    name: &str,
    definition: WorkflowDefinition,
) -> crate::Workflow {
    let workflow = engine.create_workflow(name).await.expect("create");
    engine
        .publish(workflow.id, definition)
        .await
        .expect("publish");
    workflow
}

fn ok(value: Value) -> Result<Value, StepError> {
    Ok(value)
}

fn hanging_registry(started: Arc<Notify>) -> StepRegistry {
    let mut registry = StepRegistry::new();
    registry
        .step("hang", move |_ctx: StepContext, _input: Value| {
            let started = Arc::clone(&started);
            async move {
                started.notify_one();
                std::future::pending::<()>().await;
                ok(Value::Null)
            }
        })
        .expect("register")
        .step("never", |_ctx: StepContext, _input: Value| async move {
            Err::<Value, _>(StepError::terminal(
                "a step after a cancelled or timed-out one must not run",
            ))
        })
        .expect("register");
    registry
}

/// Expands to one `#[tokio::test]` per engine-level scenario (the cases of
/// [`engine`](crate::testing::engine) and
/// [`triggers`](crate::testing::triggers)), each on a fresh store from the
/// factory; the factory is the one
/// [`store_conformance!`](crate::store_conformance) takes. It also expands
/// to one `#[test]` `every_case_is_listed` that checks this list against
/// the cases of both modules (see
/// [`assert_every_case_listed`](crate::testing::assert_every_case_listed)).
///
/// ```ignore
/// taskforge_core::engine_conformance!(|| async { MemoryStore::new() });
/// ```
#[macro_export]
macro_rules! engine_conformance {
    (@cases $factory:expr; $($module:ident :: $case:ident),* $(,)?) => {
        $(
            #[::tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $case() {
                $crate::testing::run_case($factory, $crate::testing::$module::$case).await;
            }
        )*

        #[test]
        fn every_case_is_listed() {
            $crate::testing::assert_every_case_listed(
                &[$(stringify!($case)),*],
                $crate::testing::engine_case_sources(),
            );
        }
    };
    ($factory:expr $(,)?) => {
        $crate::engine_conformance!(@cases $factory;
            engine::linear_run_passes_data,
            engine::each_attempt_keeps_its_log,
            engine::step_logs_are_capped_with_a_marker,
            engine::flushed_logs_survive_a_crash,
            engine::secrets_are_read_and_redacted_everywhere,
            engine::artifacts_pass_between_steps,
            engine::oversized_artifacts_are_refused,
            engine::undeclared_secrets_cannot_be_read,
            engine::publishing_checks_declared_secrets,
            engine::master_key_rotation_with_runs_in_flight,
            engine::a_failed_run_resumes_from_the_failed_step,
            engine::only_unsuccessful_finished_runs_resume,
            engine::fan_out_branches_overlap_and_fan_in_sees_them,
            engine::max_parallel_steps_bounds_a_run,
            engine::a_false_condition_skips_a_branch_and_its_dependants,
            engine::a_failing_branch_fails_the_run_and_cancels_its_sibling,
            engine::cancel_and_timeout_stop_every_branch,
            engine::a_new_engine_resumes_every_branch_in_flight,
            engine::a_linear_definition_stays_sequential,
            engine::failing_step_is_retried,
            engine::exhausted_retries_fail_the_run,
            engine::terminal_errors_are_not_retried,
            engine::step_timeout_times_out_the_run,
            engine::run_timeout_times_out_the_run,
            engine::cancel_stops_a_running_run,
            engine::handlers_see_cancellation,
            engine::cancel_a_queued_run,
            engine::runs_stay_on_their_version,
            engine::inactive_workflows_refuse_runs,
            engine::publishing_validates_and_numbers_versions,
            engine::idempotency_keys_start_one_run,
            engine::subscribers_see_every_transition,
            engine::a_new_engine_recovers_an_interrupted_run,
            engine::two_engines_never_run_one_step_twice,
            engine::a_thousand_concurrent_runs_finish,
            engine::shutdown_finishes_or_leaves_runs_to_recovery,
            engine::a_panicking_handler_fails_its_attempt,
            engine::durations_are_bounded_and_hints_clamped,
            engine::ensured_triggers_survive_relaunches,
            engine::an_ensured_cron_fires_each_slot_once,
            engine::default_step_timeout_applies_where_the_definition_sets_none,
            engine::a_cancel_from_another_engine_reaches_the_owner,
            engine::every_run_traces_to_an_event,
            engine::a_key_runs_one_at_a_time_in_order,
            engine::skip_records_the_event_as_limited,
            engine::cancel_running_makes_room_for_the_newest,
            engine::cancel_newest_records_the_newcomer_cancelled,
            engine::debounce_starts_the_last_run_of_a_burst,
            engine::a_rate_limit_spreads_starts_over_windows,
            engine::a_limited_run_resumes_after_a_restart,
            engine::two_engines_never_run_more_of_a_key_than_its_limit,
            engine::a_sleep_parks_the_run_until_the_clock_passes_it,
            engine::a_signal_wakes_a_waiting_run_with_its_payload,
            engine::signals_sent_early_are_received_in_order,
            engine::signal_timeouts_fail_or_continue,
            engine::a_second_engine_resumes_a_waiting_run,
            engine::a_retry_backoff_parks_the_run,
            engine::a_waiting_run_holds_no_engine_slot,
            engine::cancel_a_waiting_run,
            engine::a_parked_run_wakes_on_time_between_polls,
            engine::a_waiting_run_keeps_its_key_slot,
            triggers::concurrent_webhook_deliveries_start_one_run,
            triggers::rejected_webhook_deliveries_are_recorded_without_their_body,
            triggers::filtered_and_disabled_deliveries_are_recorded,
            triggers::dedup_window_expires,
            triggers::replay_links_runs_to_their_event,
            triggers::bad_cron_triggers_are_refused,
            triggers::daily_cron_fires_once_a_day_across_dst,
            triggers::missed_ticks_follow_the_policy,
            triggers::two_engines_fire_each_slot_once,
            triggers::overlapping_ticks_follow_the_policy,
        );
    };
}
