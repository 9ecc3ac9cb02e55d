//! What a cron run receives, through an engine on a manual clock: the
//! trigger's static input merged with `trigger_id` and `scheduled_at`; and
//! what a cron trigger is refused for at creation.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use serde::Deserialize;
use serde_json::{json, Value};
use taskforge_core::clock::ManualClock;
use taskforge_core::error::{InvalidTrigger, ScheduleError};
use taskforge_core::{
    CronConfig, Engine, EngineError, RunStatus, StepContext, StepDefinition, StepError,
    StepRegistry, TriggerKind, WorkflowDefinition, WorkflowRun,
};
use taskforge_store_memory::MemoryStore;

#[derive(Debug, Deserialize)]
struct Report {
    region: String,
    scheduled_at: DateTime<Utc>,
    trigger_id: String,
}

fn registry() -> StepRegistry {
    let mut registry = StepRegistry::new();
    registry
        .step("echo", |_ctx: StepContext, input: Value| async move {
            Ok::<_, StepError>(input)
        })
        .expect("register echo")
        .step("report", |_ctx, input: Report| async move {
            Ok::<_, StepError>(json!({
                "line": format!("{} at {}", input.region, input.scheduled_at.to_rfc3339()),
                "trigger_id": input.trigger_id,
            }))
        })
        .expect("register report");
    registry
}

fn utc(h: u32, mi: u32, s: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 6, 1, h, mi, s)
        .single()
        .expect("valid time")
}

async fn engine_at(now: DateTime<Utc>) -> (Engine<MemoryStore, StepRegistry>, ManualClock) {
    let clock = ManualClock::new(now);
    let engine = Engine::builder(MemoryStore::new(), registry())
        .clock(clock.clone())
        .build();
    engine.start();
    (engine, clock)
}

async fn workflow(
    engine: &Engine<MemoryStore, StepRegistry>,
    name: &str,
    handler: &str,
) -> taskforge_core::WorkflowId {
    let wf = engine.create_workflow(name).await.expect("create");
    engine
        .publish(
            wf.id,
            WorkflowDefinition::new(vec![StepDefinition::new(handler, handler)]),
        )
        .await
        .expect("publish");
    wf.id
}

async fn finished(
    engine: &Engine<MemoryStore, StepRegistry>,
    run: taskforge_core::RunId,
) -> WorkflowRun {
    tokio::time::timeout(Duration::from_secs(30), engine.wait_for_run(run))
        .await
        .expect("the run finishes")
        .expect("wait")
}

#[tokio::test]
async fn a_cron_run_receives_the_static_input_with_its_slot() {
    let (engine, clock) = engine_at(utc(11, 59, 30)).await;
    let with_input = workflow(&engine, "hourly-report", "report").await;
    let plain = workflow(&engine, "hourly-echo", "echo").await;
    let report = engine
        .create_trigger(
            with_input,
            TriggerKind::Cron(
                CronConfig::new("0 * * * *", "UTC").with_input(json!({ "region": "eu" })),
            ),
        )
        .await
        .expect("trigger with input");
    let echo = engine
        .create_trigger(
            plain,
            TriggerKind::Cron(CronConfig::new("0 * * * *", "UTC")),
        )
        .await
        .expect("trigger without input");

    // The engine gets to the 12:00 slot ten seconds late.
    clock.set(utc(12, 0, 10));
    let firings = engine.fire_due_cron().await.expect("fire");
    assert_eq!(firings.len(), 2, "{firings:?}");
    for firing in firings {
        assert_eq!(firing.scheduled_at, utc(12, 0, 0));
        let run_id = firing.outcome.run_id().expect("a run started");
        let run = finished(&engine, run_id).await;
        assert_eq!(run.status, RunStatus::Succeeded, "{run:?}");
        if firing.trigger_id == report.id {
            assert_eq!(
                *run.input,
                json!({
                    "region": "eu",
                    "trigger_id": report.id.to_string(),
                    "scheduled_at": "2026-06-01T12:00:00Z",
                })
            );
            assert_eq!(
                run.output,
                Some(json!({
                    "line": "eu at 2026-06-01T12:00:00+00:00",
                    "trigger_id": report.id.to_string(),
                }))
            );
        } else {
            assert_eq!(firing.trigger_id, echo.id);
            // Without an input: the payload cron runs have always had.
            assert_eq!(
                *run.input,
                json!({
                    "trigger_id": echo.id.to_string(),
                    "scheduled_at": "2026-06-01T12:00:00Z",
                })
            );
        }
        // The event stores the same payload.
        let event_id = firing.event_id.expect("stored");
        let event = engine
            .list_events(&taskforge_core::EventQuery::default())
            .await
            .expect("events")
            .items
            .into_iter()
            .find(|e| e.id == event_id)
            .expect("the event");
        assert_eq!(event.payload, run.input);
    }

    // The next slot carries its own time, the same static input.
    clock.advance(TimeDelta::hours(1));
    let firings = engine.fire_due_cron().await.expect("fire");
    let next = firings
        .iter()
        .find(|f| f.trigger_id == report.id)
        .and_then(|f| f.outcome.run_id())
        .expect("fired");
    let run = finished(&engine, next).await;
    assert_eq!(run.input["scheduled_at"], "2026-06-01T13:00:00Z");
    assert_eq!(run.input["region"], "eu");
}

#[tokio::test]
async fn cron_triggers_that_cannot_work_are_refused_at_creation() {
    let (engine, _clock) = engine_at(utc(12, 0, 0)).await;
    let wf = workflow(&engine, "refused", "echo").await;
    let refused = |config: CronConfig| {
        let engine = engine.clone();
        async move { engine.create_trigger(wf, TriggerKind::Cron(config)).await }
    };
    for expression in ["0 0 30 2 *", "0 0 31 4 *"] {
        let result = refused(CronConfig::new(expression, "UTC")).await;
        assert!(
            matches!(
                result,
                Err(EngineError::InvalidTrigger(InvalidTrigger::Cron(
                    ScheduleError::NeverFires { .. }
                )))
            ),
            "{expression}: {result:?}"
        );
    }
    for input in [json!(["eu"]), json!({ "scheduled_at": "yesterday" })] {
        let result = refused(CronConfig::new("0 * * * *", "UTC").with_input(input.clone())).await;
        assert!(
            matches!(
                result,
                Err(EngineError::InvalidTrigger(InvalidTrigger::Cron(
                    ScheduleError::InvalidInput(_)
                )))
            ),
            "{input}: {result:?}"
        );
    }
    // Either day field matching is enough: Mondays in February fire.
    refused(CronConfig::new("0 0 30 2 1", "UTC"))
        .await
        .expect("the 30th of February or any Monday in it");
}
