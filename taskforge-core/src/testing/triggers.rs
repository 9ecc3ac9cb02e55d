//! Trigger scenarios, run on every backend: webhook deliveries (dedup,
//! rejection, filters, replay) and cron triggers on a manual clock.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use serde_json::{json, Value};

use crate::{CronConfig, Delivery, Engine, EngineError, EventOutcome, EventQuery, RunStatus, StepContext, StepDefinition, StepError, StepRegistry, Store, TriggerKind, WebhookConfig, WorkflowDefinition, WorkflowId};
use crate::clock::ManualClock;
use crate::cron::{MissedRunPolicy, OverlapPolicy};
use crate::store::OutcomeKind;
use crate::webhook::{github_signature, Filter, Headers, Rejection, SignatureScheme, WebhookRequest};

/// A real GitHub `release` delivery body (`action: published`).
pub const GITHUB_RELEASE: &[u8] = include_bytes!("../../tests/fixtures/release-published.json");

const SECRET: &str = "It's a Secret to Everybody";

fn registry() -> StepRegistry {
    let mut registry = StepRegistry::new();
    registry
        .step("echo", |_ctx: StepContext, input: Value| async move {
            Ok::<_, StepError>(input)
        })
        .expect("register");
    registry
}

async fn workflow<S: Store>(engine: &Engine<S, StepRegistry>, name: &str) -> WorkflowId {
    let wf = engine.create_workflow(name).await.expect("create");
    engine
        .publish(
            wf.id,
            WorkflowDefinition::new(vec![StepDefinition::new("echo", "echo")]),
        )
        .await
        .expect("publish");
    wf.id
}

fn github_hook(path: &str) -> TriggerKind {
    TriggerKind::Webhook(
        WebhookConfig::new(path)
            .with_signature(SignatureScheme::github(SECRET))
            .with_dedup(crate::webhook::DedupSource::Header("x-github-delivery".into()))
            .with_filter(Filter::equals("/action", "published"))
            .keep_header("x-github-event"),
    )
}

fn github_delivery(body: &[u8], delivery: &str) -> WebhookRequest {
    let headers: Headers = [
        ("Content-Type", "application/json".to_owned()),
        ("X-GitHub-Event", "release".to_owned()),
        ("X-GitHub-Delivery", delivery.to_owned()),
        ("X-Hub-Signature-256", github_signature(SECRET, body)),
    ]
    .into_iter()
    .collect();
    WebhookRequest::new(headers, body)
}

/// Fifty concurrent deliveries with one delivery id give one event, one
/// run, and forty-nine duplicates pointing at them.
pub async fn concurrent_webhook_deliveries_start_one_run<S: Store>(store: S) {
    let engine = Engine::builder(store, registry()).build();
    let wf = workflow(&engine, "on-release").await;
    let trigger = engine
        .create_trigger(wf, github_hook("github/releases"))
        .await
        .expect("trigger");
    let request = Arc::new(github_delivery(
        GITHUB_RELEASE,
        "72d3162e-cc78-11e3-81ab-4c9367dc0958",
    ));
    let deliveries = (0..50).map(|_| {
        let (engine, request) = (engine.clone(), Arc::clone(&request));
        tokio::spawn(async move { engine.deliver_webhook("github/releases", &request).await })
    });
    let outcomes: Vec<Delivery> = futures::future::join_all(deliveries)
        .await
        .into_iter()
        .map(|joined| joined.expect("task").expect("delivery"))
        .collect();
    let accepted: Vec<_> = outcomes
        .iter()
        .filter_map(|o| match o {
            Delivery::Accepted { event_id, run_id } => Some((*event_id, *run_id)),
            _ => None,
        })
        .collect();
    assert_eq!(accepted.len(), 1, "{outcomes:?}");
    let (event_id, run_id) = accepted[0];
    let duplicates = outcomes
        .iter()
        .filter(|o| {
            **o == Delivery::Duplicate {
                event_id,
                run_id: Some(run_id),
            }
        })
        .count();
    assert_eq!(duplicates, 49);
    assert!(outcomes
        .iter()
        .all(|o| matches!(o.http_status(), 200 | 202)));

    let events = engine
        .list_events(&EventQuery {
            trigger_id: Some(trigger.id),
            ..EventQuery::default()
        })
        .await
        .expect("events");
    assert_eq!(events.items.len(), 1);
    let event = &events.items[0];
    assert_eq!(event.payload["release"]["tag_name"], json!("0.0.1"));
    assert_eq!(
        event.metadata.get("x-github-event").map(String::as_str),
        Some("release")
    );
    let runs = engine.runs_of_event(event_id).await.expect("runs");
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].id, run_id);
    assert_eq!(runs[0].input, event.payload);
}

/// Rejected deliveries store nothing and are counted; earlier events stay.
pub async fn rejected_webhook_deliveries_store_nothing<S: Store>(store: S) {
    let engine = Engine::builder(store, registry()).build();
    let wf = workflow(&engine, "guarded").await;
    let trigger = engine
        .create_trigger(
            wf,
            TriggerKind::Webhook(
                WebhookConfig::new("guarded")
                    .with_signature(SignatureScheme::github(SECRET))
                    .with_max_body_bytes(16 * 1024),
            ),
        )
        .await
        .expect("trigger");
    let first = engine
        .deliver_webhook("guarded", &github_delivery(GITHUB_RELEASE, "1"))
        .await
        .expect("first");
    assert!(matches!(first, Delivery::Accepted { .. }), "{first:?}");

    let mut tampered = github_delivery(GITHUB_RELEASE, "2");
    tampered.body[10] ^= 1;
    let big = vec![b' '; 16 * 1024 + 1];
    let malformed = b"{\"action\": \"published\",\n  \"release\": }";
    let outcomes = [
        engine.deliver_webhook("guarded", &tampered).await,
        engine
            .deliver_webhook("guarded", &github_delivery(&big, "3"))
            .await,
        engine
            .deliver_webhook("guarded", &github_delivery(malformed, "4"))
            .await,
        engine
            .deliver_webhook("guarded", &github_delivery(b"[1, 2]", "5"))
            .await,
    ];
    let statuses: Vec<u16> = outcomes
        .iter()
        .map(|o| o.as_ref().expect("delivery").http_status())
        .collect();
    assert_eq!(statuses, [401, 413, 400, 400]);
    assert!(matches!(
        &outcomes[2],
        Ok(Delivery::Rejected(Rejection::Malformed { line: 2, .. }))
    ));
    assert_eq!(engine.rejected_deliveries(trigger.id), 4);
    let unknown = engine
        .deliver_webhook("nowhere", &github_delivery(GITHUB_RELEASE, "6"))
        .await
        .expect("unknown path");
    assert_eq!(unknown.http_status(), 404);

    let events = engine
        .list_events(&EventQuery::default())
        .await
        .expect("events");
    assert_eq!(
        events.items.len(),
        1,
        "only the accepted delivery is stored"
    );
    assert_eq!(events.items[0].payload["action"], json!("published"));
}

/// A delivery that misses a filter, or reaches a disabled trigger or an
/// inactive workflow, is stored with that outcome and starts no run.
pub async fn filtered_and_disabled_deliveries_are_recorded<S: Store>(store: S) {
    let engine = Engine::builder(store, registry()).build();
    let wf = workflow(&engine, "filtered").await;
    let trigger = engine
        .create_trigger(wf, github_hook("hook"))
        .await
        .expect("trigger");
    let mut created: Value = serde_json::from_slice(GITHUB_RELEASE).expect("fixture");
    created["action"] = json!("created");
    let body = serde_json::to_vec(&created).expect("body");
    let filtered = engine
        .deliver_webhook("hook", &github_delivery(&body, "a"))
        .await
        .expect("filtered");
    assert!(matches!(&filtered, Delivery::Filtered { reason, .. } if reason.contains("/action")));
    assert_eq!(filtered.http_status(), 204);

    engine
        .set_trigger_enabled(trigger.id, false)
        .await
        .expect("disable");
    let disabled = engine
        .deliver_webhook("hook", &github_delivery(GITHUB_RELEASE, "b"))
        .await
        .expect("disabled");
    assert!(matches!(
        disabled,
        Delivery::Recorded {
            outcome: EventOutcome::TriggerDisabled,
            ..
        }
    ));
    engine
        .set_trigger_enabled(trigger.id, true)
        .await
        .expect("enable");
    engine
        .set_workflow_active(wf, false)
        .await
        .expect("deactivate");
    let inactive = engine
        .deliver_webhook("hook", &github_delivery(GITHUB_RELEASE, "c"))
        .await
        .expect("inactive");
    assert!(matches!(
        inactive,
        Delivery::Recorded {
            outcome: EventOutcome::WorkflowInactive,
            ..
        }
    ));

    let filtered_events = engine
        .list_events(&EventQuery {
            trigger_id: Some(trigger.id),
            outcome: Some(OutcomeKind::Filtered),
            ..EventQuery::default()
        })
        .await
        .expect("events");
    assert_eq!(filtered_events.items.len(), 1);
    let runs = engine
        .list_runs(&crate::RunQuery {
            workflow_id: Some(wf),
            ..Default::default()
        })
        .await
        .expect("runs");
    assert!(runs.items.is_empty());
}

/// A repeat older than the dedup window starts a new run; repeats of that
/// one are duplicates again.
pub async fn dedup_window_expires<S: Store>(store: S) {
    let clock = ManualClock::new(Utc::now());
    let engine = Engine::builder(store, registry())
        .clock(clock.clone())
        .build();
    let wf = workflow(&engine, "windowed").await;
    engine
        .create_trigger(
            wf,
            TriggerKind::Webhook(
                WebhookConfig::new("windowed")
                    .with_dedup(crate::webhook::DedupSource::JsonPointer("/id".into()))
                    .with_dedup_window(Duration::from_secs(60)),
            ),
        )
        .await
        .expect("trigger");
    let request = WebhookRequest::new(Headers::new(), br#"{"id": "order-1"}"#.to_vec());
    let first = engine
        .deliver_webhook("windowed", &request)
        .await
        .expect("1");
    clock.advance(TimeDelta::seconds(30));
    let within = engine
        .deliver_webhook("windowed", &request)
        .await
        .expect("2");
    clock.advance(TimeDelta::seconds(60));
    let after = engine
        .deliver_webhook("windowed", &request)
        .await
        .expect("3");
    let again = engine
        .deliver_webhook("windowed", &request)
        .await
        .expect("4");
    let (Delivery::Accepted { event_id: e1, .. }, Delivery::Accepted { event_id: e3, .. }) =
        (&first, &after)
    else {
        panic!("first and after-window deliveries start runs: {first:?} {after:?}");
    };
    assert!(matches!(within, Delivery::Duplicate { event_id, .. } if event_id == *e1));
    assert!(matches!(again, Delivery::Duplicate { event_id, .. } if event_id == *e3));
}

/// Replaying an event starts a new run linked to it and marked as a replay.
pub async fn replay_links_runs_to_their_event<S: Store>(store: S) {
    let engine = Engine::builder(store, registry()).build();
    engine.start();
    let wf = workflow(&engine, "replayable").await;
    engine
        .create_trigger(wf, github_hook("replay"))
        .await
        .expect("trigger");
    let Delivery::Accepted { event_id, run_id } = engine
        .deliver_webhook("replay", &github_delivery(GITHUB_RELEASE, "r"))
        .await
        .expect("delivery")
    else {
        panic!("accepted");
    };
    let replay = engine.replay_event(event_id).await.expect("replay");
    assert_eq!(replay.event_id, Some(event_id));
    assert_eq!(replay.replay_of, Some(run_id));
    for id in [run_id, replay.id] {
        let done = engine.wait_for_run(id).await.expect("wait");
        assert_eq!(done.status, RunStatus::Succeeded);
    }
    let runs: BTreeSet<_> = engine
        .runs_of_event(event_id)
        .await
        .expect("runs")
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(runs, BTreeSet::from([run_id, replay.id]));
    let event = engine
        .event_of_run(replay.id)
        .await
        .expect("event")
        .expect("has event");
    assert_eq!(event.id, event_id);
}

/// Bad cron expressions and timezones are refused with a typed error.
pub async fn bad_cron_triggers_are_refused<S: Store>(store: S) {
    let engine = Engine::builder(store, registry()).build();
    let wf = workflow(&engine, "cron-bad").await;
    let long = "*".repeat(10 * 1024);
    for (expression, timezone) in [
        ("1/0 * * * *", "UTC"),
        ("*/0 * * * *", "UTC"),
        ("0", "UTC"),
        (long.as_str(), "UTC"),
        ("0 ☃ * * *", "UTC"),
        ("0 3 * * *", "Mars/Olympus_Mons"),
    ] {
        let result = engine
            .create_trigger(wf, TriggerKind::Cron(CronConfig::new(expression, timezone)))
            .await;
        assert!(
            matches!(result, Err(EngineError::InvalidTrigger(_))),
            "{expression:.20} in {timezone}: {result:?}"
        );
    }
    assert!(engine.triggers(wf).await.expect("triggers").is_empty());
}

fn new_york(y: i32, m: u32, d: u32, h: u32) -> DateTime<Utc> {
    chrono_tz::America::New_York
        .with_ymd_and_hms(y, m, d, h, 0, 0)
        .earliest()
        .expect("a valid local time")
        .with_timezone(&Utc)
}

/// A daily cron in America/New_York, stepped hour by hour through 2026 on a
/// manual clock, fires exactly once on every local day, across both DST
/// changes.
pub async fn daily_cron_fires_once_a_day_across_dst<S: Store>(store: S) {
    let clock = ManualClock::new(new_york(2026, 1, 1, 0));
    let engine = Engine::builder(store, registry())
        .clock(clock.clone())
        .build();
    let wf = workflow(&engine, "nightly").await;
    engine
        .create_trigger(
            wf,
            TriggerKind::Cron(
                CronConfig::new("30 2 * * *", "America/New_York")
                    .with_missed(MissedRunPolicy::RunOnce),
            ),
        )
        .await
        .expect("trigger");
    let end = new_york(2027, 1, 1, 0);
    let mut days = Vec::new();
    while crate::clock::Clock::now(&clock) < end {
        clock.advance(TimeDelta::hours(1));
        for firing in engine.fire_due_cron().await.expect("fire") {
            assert!(firing.outcome.run_id().is_some(), "{firing:?}");
            days.push(
                firing
                    .scheduled_at
                    .with_timezone(&chrono_tz::America::New_York)
                    .date_naive(),
            );
        }
    }
    let unique: BTreeSet<_> = days.iter().copied().collect();
    assert_eq!(days.len(), 365, "one firing a day");
    assert_eq!(unique.len(), 365, "never twice on one day");
}

/// An engine down for three ticks does what each missed-run policy says.
pub async fn missed_ticks_follow_the_policy<S: Store>(store: S) {
    let start = Utc
        .with_ymd_and_hms(2026, 6, 1, 12, 0, 30)
        .single()
        .expect("time");
    let clock = ManualClock::new(start);
    let engine = Engine::builder(store, registry())
        .clock(clock.clone())
        .build();
    let mut triggers = Vec::new();
    for (name, policy) in [
        ("skip", MissedRunPolicy::Skip),
        ("run-once", MissedRunPolicy::RunOnce),
        ("catch-up", MissedRunPolicy::CatchUp { max: 10 }),
        ("catch-up-2", MissedRunPolicy::CatchUp { max: 2 }),
    ] {
        let wf = workflow(&engine, name).await;
        let trigger = engine
            .create_trigger(
                wf,
                TriggerKind::Cron(CronConfig::new("0 * * * *", "UTC").with_missed(policy)),
            )
            .await
            .expect("trigger");
        triggers.push(trigger.id);
    }
    // Up at 13:00:10: each trigger fires the 13:00 slot.
    clock.set(start + TimeDelta::minutes(59) + TimeDelta::seconds(40));
    let firings = engine.fire_due_cron().await.expect("fire");
    assert_eq!(firings.len(), 4, "{firings:?}");
    // Down for the 14:00, 15:00 and 16:00 ticks; back at 16:20.
    clock.set(start + TimeDelta::hours(4) + TimeDelta::minutes(19) + TimeDelta::seconds(30));
    let firings = engine.fire_due_cron().await.expect("fire");
    let slots = |trigger| -> Vec<u32> {
        use chrono::Timelike;
        firings
            .iter()
            .filter(|f| f.trigger_id == trigger)
            .map(|f| f.scheduled_at.hour())
            .collect()
    };
    assert_eq!(
        slots(triggers[0]),
        Vec::<u32>::new(),
        "skip fires nothing late"
    );
    assert_eq!(slots(triggers[1]), [16], "run once fires the latest");
    assert_eq!(
        slots(triggers[2]),
        [14, 15, 16],
        "catch up fires all, oldest first"
    );
    assert_eq!(slots(triggers[3]), [15, 16], "catch up is bounded");
    // Nothing is due twice.
    assert!(engine.fire_due_cron().await.expect("fire").is_empty());
}

/// Two engines on one store that both see a slot due fire it once.
pub async fn two_engines_fire_each_slot_once<S: Store + Clone>(store: S) {
    let start = Utc
        .with_ymd_and_hms(2026, 6, 1, 11, 55, 20)
        .single()
        .expect("time");
    let clock = ManualClock::new(start);
    let a = Engine::builder(store.clone(), registry())
        .clock(clock.clone())
        .build();
    let b = Engine::builder(store, registry())
        .clock(clock.clone())
        .build();
    let wf = workflow(&a, "shared-cron").await;
    let trigger = a
        .create_trigger(wf, TriggerKind::Cron(CronConfig::new("*/5 * * * *", "UTC")))
        .await
        .expect("trigger");
    for _ in 0..6 {
        clock.advance(TimeDelta::minutes(5));
        let (x, y) = tokio::join!(a.fire_due_cron(), b.fire_due_cron());
        x.expect("a fires");
        y.expect("b fires");
    }
    let events = a
        .list_events(&EventQuery {
            trigger_id: Some(trigger.id),
            ..EventQuery::default()
        })
        .await
        .expect("events");
    assert_eq!(events.items.len(), 6);
    let runs = a
        .list_runs(&crate::RunQuery {
            workflow_id: Some(wf),
            ..Default::default()
        })
        .await
        .expect("runs");
    assert_eq!(runs.items.len(), 6);
}

/// With the skip overlap policy, a tick while the previous run is still
/// going is recorded as skipped and starts nothing.
pub async fn overlapping_ticks_follow_the_policy<S: Store>(store: S) {
    let start = Utc
        .with_ymd_and_hms(2026, 6, 1, 11, 59, 30)
        .single()
        .expect("time");
    let clock = ManualClock::new(start);
    // Not started: runs stay queued, so the previous run is still going.
    let engine = Engine::builder(store, registry())
        .clock(clock.clone())
        .build();
    let wf = workflow(&engine, "no-overlap").await;
    engine
        .create_trigger(
            wf,
            TriggerKind::Cron(
                CronConfig::new("* * * * *", "UTC").with_overlap(OverlapPolicy::Skip),
            ),
        )
        .await
        .expect("trigger");
    clock.advance(TimeDelta::seconds(40));
    let first = engine.fire_due_cron().await.expect("fire");
    assert!(first[0].outcome.run_id().is_some());
    clock.advance(TimeDelta::minutes(1));
    let second = engine.fire_due_cron().await.expect("fire");
    assert!(
        matches!(second[0].outcome, EventOutcome::Skipped { .. }),
        "{second:?}"
    );
}
