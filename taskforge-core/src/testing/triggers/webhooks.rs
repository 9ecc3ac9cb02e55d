//! Webhook scenarios: concurrent and repeated deliveries, rejections,
//! filters, disabled triggers and inactive workflows, the dedup window, and
//! replay.

use crate::secret::MasterKey;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use chrono::{TimeDelta, Utc};
use serde_json::json;

use crate::clock::ManualClock;
use crate::store::OutcomeKind;
use crate::webhook::{
    github_signature, Filter, Headers, Rejection, SignatureScheme, WebhookRequest,
};
use crate::{Delivery, EventOutcome, EventQuery, RunQuery, RunStatus, TriggerKind, WebhookConfig};

use super::*;

const SECRET: &str = "It's a Secret to Everybody";

fn github_hook(path: &str) -> TriggerKind {
    TriggerKind::Webhook(
        WebhookConfig::new(path)
            .with_signature(SignatureScheme::github(SECRET))
            .with_dedup(crate::webhook::DedupSource::Header(
                "x-github-delivery".into(),
            ))
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
pub async fn concurrent_webhook_deliveries_start_one_run<S: Store + Clone>(store: S) {
    let engine = Engine::builder(store, registry())
        .master_key(MasterKey::generate())
        .build();
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

/// Rejected deliveries start no run and keep no body: each is recorded as
/// a rejected event with its reason and status (the audit trail survives a
/// restart), and counted; earlier events stay.
pub async fn rejected_webhook_deliveries_are_recorded_without_their_body<S: Store + Clone>(
    store: S,
) {
    let engine = Engine::builder(store, registry())
        .master_key(MasterKey::generate())
        .build();
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
        5,
        "the accepted delivery and four refusals"
    );
    assert_eq!(events.items[0].payload["action"], json!("published"));
    let refused: Vec<u16> = events.items[1..]
        .iter()
        .map(|event| match &event.outcome {
            EventOutcome::Rejected { status, reason } => {
                assert!(!reason.is_empty());
                *status
            }
            other => panic!("a refusal recorded as {other:?}"),
        })
        .collect();
    assert_eq!(refused, [401, 413, 400, 400]);
    for event in &events.items[1..] {
        assert!(event.metadata.is_empty(), "no header is kept: {event:?}");
        assert!(
            event.payload.get("release").is_none() && event.payload.get("action").is_none(),
            "no body is kept: {:?}",
            event.payload
        );
    }
    assert_eq!(events.items[2].payload["body_bytes"], json!(16 * 1024 + 1));
    let runs = engine.list_runs(&RunQuery::default()).await.expect("runs");
    assert_eq!(runs.items.len(), 1, "refusals start no run");
}

/// A delivery that misses a filter, or reaches a disabled trigger or an
/// inactive workflow, is stored with that outcome and starts no run.
pub async fn filtered_and_disabled_deliveries_are_recorded<S: Store + Clone>(store: S) {
    let engine = Engine::builder(store, registry())
        .master_key(MasterKey::generate())
        .build();
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
pub async fn dedup_window_expires<S: Store + Clone>(store: S) {
    let clock = ManualClock::new(Utc::now());
    let engine = Engine::builder(store, registry())
        .master_key(MasterKey::generate())
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
pub async fn replay_links_runs_to_their_event<S: Store + Clone>(store: S) {
    let engine = Engine::builder(store, registry())
        .master_key(MasterKey::generate())
        .build();
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
