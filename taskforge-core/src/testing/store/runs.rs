//! Cases for run records of [`RunStore`](crate::store::RunStore): round
//! trip, cancellation requests and the order of step attempts; plus
//! not-found, empty-lookup and payload cases that span the three traits.

use serde_json::{json, Value};

use crate::event::EventOutcome;
use crate::id::{TriggerId, VersionId, WorkflowId};
use crate::run::{RunError, StepFailure, StepTransition};
use crate::store::{EventInsert, EventQuery, RunQuery};
use crate::{Trigger, TriggerKind};

use super::*;

/// A stored run comes back as stored; `AlreadyExists` if its id is taken.
pub async fn run_round_trip<S: Store + Clone>(store: S) {
    let (_, version) = setup(&store, "runs").await;
    let mut run = queued(&version, t0());
    run.replay_of = Some(RunId::new());
    run.deadline = Some(at(3_600));
    store.insert_run(&run).await.expect("insert a run");
    assert_eq!(store.get_run(run.id).await.ok().as_ref(), Some(&run));

    let mut rival = queued(&version, at(1));
    rival.id = run.id;
    rival.input = json!("other input").into();
    expect_already_exists(
        store.insert_run(&rival).await,
        "insert a run with a taken id",
    );
    assert_eq!(store.get_run(run.id).await.ok(), Some(run));
}

/// `request_cancel` sets the flag and nothing else, and returns the run; a
/// finished run is returned unchanged.
pub async fn request_cancel_sets_only_the_flag<S: Store + Clone>(store: S) {
    let (_, version) = setup(&store, "cancel").await;
    let queued_run = insert_queued(&store, &version).await;
    let mut expected = queued_run.clone();
    expected.cancel_requested = true;
    for _ in 0..2 {
        let returned = store.request_cancel(queued_run.id).await.expect("cancel");
        assert_eq!(returned, expected);
        assert_eq!(
            store.get_run(queued_run.id).await.ok().as_ref(),
            Some(&expected)
        );
    }

    let running = insert_queued(&store, &version).await;
    let owned = start(&store, running.id, "w", t0()).await;
    let mut expected = owned.clone();
    expected.cancel_requested = true;
    assert_eq!(
        store.request_cancel(running.id).await.ok().as_ref(),
        Some(&expected)
    );
    assert_eq!(store.get_run(running.id).await.ok(), Some(expected));

    let done = run_in(&version, RunStatus::Succeeded, None, t0());
    store.insert_run(&done).await.expect("insert a run");
    assert_eq!(
        store.request_cancel(done.id).await.ok().as_ref(),
        Some(&done)
    );
    assert_eq!(store.get_run(done.id).await.ok(), Some(done));
}

/// Step attempts list by step index, then attempt, as numbers, whatever
/// order they were written in.
pub async fn step_runs_are_ordered_by_index_then_attempt<S: Store + Clone>(store: S) {
    let (_, version) = setup(&store, "ordered").await;
    let run = insert_queued(&store, &version).await;
    let owned = start(&store, run.id, "w", t0()).await;
    let first = [(1, 1), (0, 2), (10, 1), (0, 1)].map(|(i, a)| step(&owned, i, a));
    let second = [(2, 1), (1, 2), (0, 10), (0, 300), (1, 256)].map(|(i, a)| step(&owned, i, a));
    store
        .commit(owned.fence(), None, &first)
        .await
        .expect("commit steps");
    store
        .commit(owned.fence(), None, &second)
        .await
        .expect("commit steps");
    let keys: Vec<(u32, u32)> = store
        .list_step_runs(run.id)
        .await
        .expect("steps")
        .iter()
        .map(|s| (s.step_index, s.attempt))
        .collect();
    assert_eq!(
        keys,
        [
            (0, 1),
            (0, 2),
            (0, 10),
            (0, 300),
            (1, 1),
            (1, 2),
            (1, 256),
            (2, 1),
            (10, 1)
        ]
    );
    let other = insert_queued(&store, &version).await;
    assert!(store
        .list_step_runs(other.id)
        .await
        .expect("steps")
        .is_empty());
}

/// Every lookup of a missing record by id is `NotFound`, and so is every
/// write to a missing run or trigger.
pub async fn missing_records_are_not_found<S: Store + Clone>(store: S) {
    let (workflow, version) = setup(&store, "present").await;
    let missing_run = RunId::new();
    expect_not_found(store.get_workflow(WorkflowId::new()).await, "get_workflow");
    expect_not_found(store.get_version(VersionId::new()).await, "get_version");
    expect_not_found(
        store.get_version_by_number(workflow.id, 2).await,
        "get_version_by_number of a missing number",
    );
    expect_not_found(
        store.get_version_by_number(workflow.id, 0).await,
        "get_version_by_number 0",
    );
    expect_not_found(
        store.get_version_by_number(WorkflowId::new(), 1).await,
        "get_version_by_number of a missing workflow",
    );
    expect_not_found(store.get_trigger(TriggerId::new()).await, "get_trigger");
    let trigger = Trigger::new(workflow.id, TriggerKind::Manual, t0());
    expect_not_found(store.update_trigger(&trigger).await, "update_trigger");
    expect_not_found(store.get_event(EventId::new()).await, "get_event");
    expect_not_found(store.get_run(missing_run).await, "get_run");
    expect_not_found(
        store.claim_run(missing_run, "w", t0(), at(30)).await,
        "claim_run",
    );
    expect_not_found(
        store.renew_lease(missing_run, 1, at(30)).await,
        "renew_lease",
    );
    let ghost = queued(&version, t0());
    expect_not_found(
        store
            .commit(ghost.fence(), Some(&ghost), &[step(&ghost, 0, 1)])
            .await,
        "commit",
    );
    expect_not_found(
        store.get_run(ghost.id).await,
        "a run written by a failed commit",
    );
    expect_not_found(store.request_cancel(missing_run).await, "request_cancel");
}

/// Lookups that may find nothing answer `None` or empty on an empty store.
pub async fn absent_lookups_are_empty<S: Store + Clone>(store: S) {
    let workflow_id = WorkflowId::new();
    assert_eq!(store.find_workflow("nothing").await.expect("find"), None);
    assert!(store.list_workflows().await.expect("list").is_empty());
    assert_eq!(
        store.latest_version(workflow_id).await.expect("latest"),
        None
    );
    assert!(store
        .list_versions(workflow_id)
        .await
        .expect("list")
        .is_empty());
    assert!(store.list_triggers(None).await.expect("list").is_empty());
    assert!(store
        .list_triggers(Some(workflow_id))
        .await
        .expect("list")
        .is_empty());
    assert_eq!(
        store
            .find_event_by_dedup_key(workflow_id, "k")
            .await
            .expect("find"),
        None
    );
    let events = store
        .list_events(&EventQuery::default())
        .await
        .expect("list");
    assert!(events.items.is_empty() && events.next.is_none());
    let runs = store.list_runs(&RunQuery::default()).await.expect("list");
    assert!(runs.items.is_empty() && runs.next.is_none());
    assert!(store
        .list_claimable(t0(), 10)
        .await
        .expect("list")
        .is_empty());
    assert!(store
        .list_step_runs(RunId::new())
        .await
        .expect("steps")
        .is_empty());
}

/// Nested arrays and objects `depth` levels deep, with unicode keys.
fn nested(depth: usize) -> Value {
    (0..depth).fold(json!("🦀 bottom"), |inner, level| {
        if level % 2 == 0 {
            json!([level, inner, null])
        } else {
            json!({ "ключ-日本-🦀": inner, "level": level })
        }
    })
}

fn unicode() -> Value {
    json!({
        "latin": "héllo wörld ñ ß",
        "cjk": "日本語の文字列",
        "rtl": "שלום עולם مرحبا",
        "emoji": "🦀🚀👩‍👩‍👧‍👦",
        "escapes": "quote \" backslash \\ newline \n tab \t nul \u{0} bell \u{7}",
        "edges": "\u{fffd}\u{10ffff}\u{feff}",
        "": "empty key",
        "numbers": [i64::MIN, u64::MAX, 0, -1, 1.5, -0.25],
        "flags": [true, false, null],
    })
}

/// Large, deeply nested and unicode payloads round-trip exactly through
/// every record that carries JSON.
pub async fn large_and_unicode_payloads_round_trip<S: Store + Clone>(store: S) {
    let (workflow, _) = setup(&store, "payloads").await;
    let config_version = WorkflowVersion::new(
        workflow.id,
        2,
        WorkflowDefinition::new(vec![StepDefinition::new("only", "noop")
            .config(json!({"deep": nested(100), "text": unicode()}))]),
        t0(),
    );
    store
        .insert_version(&config_version)
        .await
        .expect("publish");
    assert_eq!(
        store.get_version(config_version.id).await.ok().as_ref(),
        Some(&config_version)
    );

    let big = json!({
        "blob": "x".repeat(5 * 1024 * 1024),
        "items": (0..20_000).collect::<Vec<u32>>(),
        "text": unicode(),
    });
    let mut large = WorkflowRun::new(&config_version, big, t0());
    large.error = Some(RunError {
        message: "échec — 失敗 🦀".into(),
        step: Some("only".into()),
        detail: Some(unicode()),
    });
    store.insert_run(&large).await.expect("insert a 5 MB run");
    assert_eq!(store.get_run(large.id).await.ok().as_ref(), Some(&large));
    let listed = store
        .list_runs(&RunQuery {
            limit: 1,
            ..Default::default()
        })
        .await
        .expect("list runs");
    assert_eq!(listed.items, vec![large]);

    let mut deep = WorkflowRun::new(&config_version, nested(100), at(1));
    let mut event = event_starting(&workflow, Some("ключ 🦀 key"), &mut deep);
    event.payload = json!({"deep": nested(100), "text": unicode()}).into();
    event
        .metadata
        .insert("x-ünïcode-🦀".into(), "värde — 値".into());
    event.outcome = EventOutcome::RunStarted { run_id: deep.id };
    assert_eq!(
        store
            .insert_event(&event, Some(&deep))
            .await
            .expect("insert"),
        EventInsert::Inserted
    );
    assert_eq!(store.get_event(event.id).await.ok().as_ref(), Some(&event));
    assert_eq!(
        store
            .find_event_by_dedup_key(workflow.id, "ключ 🦀 key")
            .await
            .expect("find")
            .as_ref(),
        Some(&event)
    );
    assert_eq!(store.get_run(deep.id).await.ok().as_ref(), Some(&deep));

    let owned = start(&store, deep.id, "wörker-🦀", t0()).await;
    let mut attempt = StepRun::start(deep.id, "schritt-ステップ", 0, 1, at(2));
    attempt.output = Some(nested(100));
    attempt.error = Some(StepFailure {
        message: "ошибка 🦀".into(),
        terminal: true,
        detail: Some(unicode()),
    });
    attempt
        .transition(StepTransition::Fail, at(3))
        .expect("fail");
    store
        .commit(owned.fence(), None, std::slice::from_ref(&attempt))
        .await
        .expect("commit a step");
    assert_eq!(
        store.list_step_runs(deep.id).await.expect("steps"),
        vec![attempt]
    );
    assert_eq!(store.get_run(deep.id).await.ok(), Some(owned));
}
