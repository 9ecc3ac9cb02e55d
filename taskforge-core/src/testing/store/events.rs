//! Cases for [`EventStore`](crate::store::EventStore) writes and lookups.

use crate::id::TriggerId;
use crate::store::{EventInsert, EventQuery, RunQuery};

use super::*;

async fn runs_of<S: Store>(store: &S, workflow: &Workflow) -> Vec<WorkflowRun> {
    store
        .list_runs(&RunQuery {
            workflow_id: Some(workflow.id),
            limit: crate::store::MAX_PAGE_SIZE,
            ..Default::default()
        })
        .await
        .expect("list runs")
        .items
}

async fn events_of<S: Store>(store: &S, workflow: &Workflow) -> Vec<Event> {
    store
        .list_events(&EventQuery {
            workflow_id: Some(workflow.id),
            limit: crate::store::MAX_PAGE_SIZE,
            ..Default::default()
        })
        .await
        .expect("list events")
        .items
}

/// A stored event comes back as stored, by id and by dedup key.
pub async fn event_round_trip<S: Store + Clone>(store: S) {
    let (workflow, _) = setup(&store, "hooked").await;
    let other = new_workflow(&store, "other").await;
    let mut event = event(
        &workflow,
        Some("delivery-1"),
        EventOutcome::WorkflowInactive,
        t0(),
    );
    event.trigger_id = Some(TriggerId::new());
    event.metadata.insert("x-request-id".into(), "abc".into());
    let inserted = store.insert_event(&event, None).await.expect("insert");
    assert_eq!(inserted, EventInsert::Inserted);
    assert_eq!(store.get_event(event.id).await.ok().as_ref(), Some(&event));
    assert_eq!(
        store
            .find_event_by_dedup_key(workflow.id, "delivery-1")
            .await
            .expect("find"),
        Some(event)
    );
    assert_eq!(
        store
            .find_event_by_dedup_key(workflow.id, "delivery-2")
            .await
            .expect("find"),
        None
    );
    assert_eq!(
        store
            .find_event_by_dedup_key(other.id, "delivery-1")
            .await
            .expect("find"),
        None,
        "dedup keys are looked up per workflow"
    );
}

/// Of 50 concurrent inserts with one dedup key, exactly one is `Inserted`;
/// every other gets `Duplicate` carrying the stored event, whose outcome
/// names the stored run; only the winner's event and run are stored.
pub async fn concurrent_inserts_of_one_dedup_key_store_one_event<S: Store + Clone>(store: S) {
    let (workflow, version) = setup(&store, "deduped").await;
    let results = race(&store, 50, |store, _| {
        let mut run = queued(&version, t0());
        let event = event_starting(&workflow, Some("delivery-1"), &mut run);
        async move {
            let result = store.insert_event(&event, Some(&run)).await;
            (event, run, result)
        }
    })
    .await;

    let mut winners = Vec::new();
    let mut duplicates = Vec::new();
    let mut losers = Vec::new();
    for (event, run, result) in results {
        match result.expect("a dedup insert either inserts or is a duplicate") {
            EventInsert::Inserted => winners.push((event, run)),
            EventInsert::Duplicate(stored) => {
                duplicates.push(*stored);
                losers.push((event, run));
            }
        }
    }
    assert_eq!(winners.len(), 1, "exactly one insert of a dedup key wins");
    let (event, run) = winners.remove(0);
    for stored in &duplicates {
        assert_eq!(stored, &event, "every duplicate carries the stored event");
        assert_eq!(
            stored.outcome.run_id(),
            Some(run.id),
            "the stored event names the stored run"
        );
    }
    assert_eq!(events_of(&store, &workflow).await, vec![event.clone()]);
    assert_eq!(runs_of(&store, &workflow).await, vec![run]);
    for (event, run) in losers {
        expect_not_found(store.get_event(event.id).await, "a duplicate's event");
        expect_not_found(store.get_run(run.id).await, "a duplicate's run");
    }
    assert_eq!(
        store
            .find_event_by_dedup_key(workflow.id, "delivery-1")
            .await
            .expect("find"),
        Some(event)
    );
}

/// An event inserted with a run stores both; a duplicate stores neither.
pub async fn event_and_its_run_are_stored_together<S: Store + Clone>(store: S) {
    let (workflow, version) = setup(&store, "atomic").await;
    let mut run = queued(&version, t0());
    let first = event_starting(&workflow, Some("k"), &mut run);
    assert_eq!(
        store
            .insert_event(&first, Some(&run))
            .await
            .expect("insert"),
        EventInsert::Inserted
    );
    assert_eq!(store.get_event(first.id).await.ok().as_ref(), Some(&first));
    assert_eq!(store.get_run(run.id).await.ok().as_ref(), Some(&run));

    let mut second_run = queued(&version, at(1));
    let second = event_starting(&workflow, Some("k"), &mut second_run);
    assert_eq!(
        store
            .insert_event(&second, Some(&second_run))
            .await
            .expect("insert a duplicate"),
        EventInsert::Duplicate(Box::new(first.clone()))
    );
    expect_not_found(store.get_event(second.id).await, "the duplicate event");
    expect_not_found(store.get_run(second_run.id).await, "the duplicate's run");
    assert_eq!(events_of(&store, &workflow).await, vec![first]);
    assert_eq!(runs_of(&store, &workflow).await, vec![run]);
}

/// An event without a dedup key is never a duplicate.
pub async fn events_without_dedup_key_are_never_duplicates<S: Store + Clone>(store: S) {
    let (workflow, _) = setup(&store, "undeduped").await;
    let mut events = Vec::new();
    for i in 0..3 {
        let event = event(&workflow, None, EventOutcome::WorkflowInactive, t0());
        assert_eq!(
            store.insert_event(&event, None).await.expect("insert"),
            EventInsert::Inserted,
            "event {i} without a dedup key"
        );
        events.push(event);
    }
    assert_eq!(events_of(&store, &workflow).await, events);
}

/// Dedup keys are unique per workflow, not across workflows.
pub async fn dedup_keys_are_per_workflow<S: Store + Clone>(store: S) {
    let (a, _) = setup(&store, "a").await;
    let (b, _) = setup(&store, "b").await;
    let event_a = event(&a, Some("shared"), EventOutcome::WorkflowInactive, t0());
    let event_b = event(&b, Some("shared"), EventOutcome::WorkflowInactive, t0());
    assert_eq!(
        store.insert_event(&event_a, None).await.expect("insert"),
        EventInsert::Inserted
    );
    assert_eq!(
        store.insert_event(&event_b, None).await.expect("insert"),
        EventInsert::Inserted
    );
    assert_eq!(
        store
            .find_event_by_dedup_key(a.id, "shared")
            .await
            .expect("find"),
        Some(event_a)
    );
    assert_eq!(
        store
            .find_event_by_dedup_key(b.id, "shared")
            .await
            .expect("find"),
        Some(event_b)
    );
}

/// `AlreadyExists` if the event's or the run's id is taken, and then nothing
/// is written: not the event, not its run, not its dedup key. A stored event
/// is never rewritten.
pub async fn taken_event_or_run_ids_write_nothing<S: Store + Clone>(store: S) {
    let (workflow, version) = setup(&store, "collisions").await;
    let stored = event(&workflow, None, EventOutcome::WorkflowInactive, t0());
    store.insert_event(&stored, None).await.expect("insert");

    // The same id again, with other content and a run: refused, nothing changes.
    let mut run = queued(&version, t0());
    let mut rewrite = event_starting(&workflow, Some("fresh-key"), &mut run);
    rewrite.id = stored.id;
    run.event_id = Some(stored.id);
    expect_already_exists(
        store.insert_event(&rewrite, Some(&run)).await,
        "insert an event with a taken id",
    );
    assert_eq!(
        store.get_event(stored.id).await.ok().as_ref(),
        Some(&stored)
    );
    expect_not_found(store.get_run(run.id).await, "the run of a refused event");
    assert_eq!(
        store
            .find_event_by_dedup_key(workflow.id, "fresh-key")
            .await
            .expect("find"),
        None
    );

    // A fresh event whose run id is taken: refused, the event is not stored.
    let taken = insert_queued(&store, &version).await;
    let mut clash = queued(&version, at(1));
    clash.id = taken.id;
    let orphan = event_starting(&workflow, Some("fresh-key"), &mut clash);
    expect_already_exists(
        store.insert_event(&orphan, Some(&clash)).await,
        "insert an event whose run id is taken",
    );
    expect_not_found(
        store.get_event(orphan.id).await,
        "the event of a refused run",
    );
    assert_eq!(store.get_run(taken.id).await.ok().as_ref(), Some(&taken));
    assert_eq!(
        store
            .find_event_by_dedup_key(workflow.id, "fresh-key")
            .await
            .expect("find"),
        None,
        "a refused insert does not take its dedup key"
    );
    let retry = event(
        &workflow,
        Some("fresh-key"),
        EventOutcome::WorkflowInactive,
        at(2),
    );
    assert_eq!(
        store.insert_event(&retry, None).await.expect("insert"),
        EventInsert::Inserted
    );
    assert_eq!(events_of(&store, &workflow).await, vec![stored, retry]);
}
