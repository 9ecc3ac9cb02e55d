//! Runs and events whose UUID v7 ids carry the millisecond they were made
//! in are found by time through their ids, with no time-index key (format
//! 5); the others keep one. Listings by time and prune must find both
//! kinds, exactly, in either order and across pages.

use std::collections::BTreeMap;

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use serde_json::json;
use taskforge_core::store::{EventStore, RunStore, WorkflowStore};
use taskforge_core::{
    Event, EventId, EventOutcome, EventQuery, EventSource, Order, RunQuery, RunStatus,
    StepDefinition, Workflow, WorkflowDefinition, WorkflowRun, WorkflowVersion,
};
use taskforge_store_sled::SledStore;

/// The millisecond a UUID v7 carries.
fn id_time(bytes: [u8; 16]) -> DateTime<Utc> {
    let mut ms = [0; 8];
    ms[2..].copy_from_slice(&bytes[..6]);
    DateTime::from_timestamp_millis(i64::from_be_bytes(ms)).expect("a time")
}

/// Every run of a listing, paged three at a time.
async fn runs(
    store: &SledStore,
    from: Option<DateTime<Utc>>,
    until: Option<DateTime<Utc>>,
    order: Order,
) -> Vec<WorkflowRun> {
    let mut all = Vec::new();
    let mut after = None;
    loop {
        let page = store
            .list_runs(&RunQuery {
                created_from: from,
                created_until: until,
                order,
                after,
                limit: 3,
                ..RunQuery::default()
            })
            .await
            .expect("list runs");
        after = page.items.last().map(|r| r.id);
        let more = page.next.is_some();
        all.extend(page.items);
        if !more {
            return all;
        }
    }
}

/// Every event of a listing, paged three at a time.
async fn events(
    store: &SledStore,
    from: Option<DateTime<Utc>>,
    until: Option<DateTime<Utc>>,
    order: Order,
) -> Vec<Event> {
    let mut all = Vec::new();
    let mut after = None;
    loop {
        let page = store
            .list_events(&EventQuery {
                received_from: from,
                received_until: until,
                order,
                after,
                limit: 3,
                ..EventQuery::default()
            })
            .await
            .expect("list events");
        after = page.items.last().map(|e| e.id);
        let more = page.next.is_some();
        all.extend(page.items);
        if !more {
            return all;
        }
    }
}

#[tokio::test]
async fn records_dated_by_their_ids_are_listed_and_pruned_by_time() {
    let store = SledStore::temporary().expect("store");
    let t0 = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
    let workflow = Workflow::new("dated", t0).unwrap();
    store.insert_workflow(&workflow).await.unwrap();
    let version = WorkflowVersion::new(
        workflow.id,
        1,
        WorkflowDefinition::new(vec![StepDefinition::new("a", "noop")]),
        t0,
    );
    store.insert_version(&version).await.unwrap();

    // Even runs are dated by their ids (made within their id's millisecond,
    // as with the system clock); odd ones by a manual clock, in 2026.
    let mut run_times: BTreeMap<String, DateTime<Utc>> = BTreeMap::new();
    let mut event_times: BTreeMap<String, DateTime<Utc>> = BTreeMap::new();
    let mut keys = [0u64; 2];
    for i in 0..24u32 {
        let mut run = WorkflowRun::new(&version, json!({ "i": i }), t0);
        let dated = i % 2 == 0;
        run.created_at = if dated {
            id_time(run.id.to_bytes()) + TimeDelta::microseconds(i64::from(i % 7) * 100)
        } else {
            t0 + TimeDelta::seconds(i64::from(i))
        };
        run.status = RunStatus::Succeeded;
        run.finished_at = Some(run.created_at);
        let mut event = Event {
            id: EventId::new(),
            workflow_id: workflow.id,
            trigger_id: None,
            source: EventSource::Manual,
            received_at: run.created_at,
            dedup_key: None,
            payload: run.input.clone(),
            metadata: BTreeMap::new(),
            outcome: EventOutcome::RunStarted { run_id: run.id },
        };
        if dated {
            event.received_at = id_time(event.id.to_bytes()) + TimeDelta::microseconds(250);
        }
        run.event_id = Some(event.id);
        let before = store.write_stats().keys;
        store
            .insert_event(&event, Some(&run))
            .await
            .expect("insert");
        keys[usize::from(dated)] = store.write_stats().keys - before;
        run_times.insert(run.id.to_string(), run.created_at);
        event_times.insert(event.id.to_string(), event.received_at);
    }
    assert_eq!(
        keys[0],
        keys[1] + 2,
        "a run and its event dated by their ids write no time keys"
    );

    let check = |run_times: BTreeMap<String, DateTime<Utc>>,
                 event_times: BTreeMap<String, DateTime<Utc>>| {
        let store = store.clone();
        async move {
            let now = Utc::now();
            let ranges = [
                (None, None),
                (None, Some(t0 + TimeDelta::seconds(9))),
                (
                    Some(t0 + TimeDelta::seconds(3)),
                    Some(t0 + TimeDelta::seconds(15)),
                ),
                (Some(t0 + TimeDelta::seconds(20)), None),
                (Some(now - TimeDelta::minutes(5)), None),
                (
                    Some(now - TimeDelta::minutes(5)),
                    Some(now + TimeDelta::minutes(5)),
                ),
                (
                    None,
                    Some(Utc.with_ymd_and_hms(1960, 1, 1, 0, 0, 0).unwrap()),
                ),
            ];
            for (from, until) in ranges {
                let inside = |t: &DateTime<Utc>| {
                    from.is_none_or(|f| *t >= f) && until.is_none_or(|u| *t < u)
                };
                let expect = |times: &BTreeMap<String, DateTime<Utc>>, order: Order| {
                    let mut ids: Vec<String> = times
                        .iter()
                        .filter(|(_, t)| inside(t))
                        .map(|(id, _)| id.clone())
                        .collect();
                    if order == Order::NewestFirst {
                        ids.reverse();
                    }
                    ids
                };
                for order in [Order::OldestFirst, Order::NewestFirst] {
                    let listed: Vec<String> = runs(&store, from, until, order)
                        .await
                        .iter()
                        .map(|r| r.id.to_string())
                        .collect();
                    assert_eq!(
                        listed,
                        expect(&run_times, order),
                        "runs {from:?}..{until:?} {order:?}"
                    );
                    let listed: Vec<String> = events(&store, from, until, order)
                        .await
                        .iter()
                        .map(|e| e.id.to_string())
                        .collect();
                    assert_eq!(
                        listed,
                        expect(&event_times, order),
                        "events {from:?}..{until:?} {order:?}"
                    );
                }
            }
        }
    };
    check(run_times.clone(), event_times.clone()).await;

    // Prune: the manual runs finished before the cutoff go, with their
    // events; the runs dated by their ids (made now) stay.
    let cutoff = t0 + TimeDelta::seconds(12);
    let report = store.prune(cutoff).await.expect("prune");
    assert_eq!((report.runs, report.events), (6, 6));
    run_times.retain(|_, t| *t >= cutoff);
    event_times.retain(|_, t| *t >= cutoff);
    assert_eq!(run_times.len(), 18);
    check(run_times, event_times).await;

    // A cutoff after them all: the rest go too, those dated by their ids
    // found through their ids.
    let report = store
        .prune(Utc::now() + TimeDelta::minutes(1))
        .await
        .expect("prune");
    assert_eq!((report.runs, report.events), (18, 18));
    check(BTreeMap::new(), BTreeMap::new()).await;
}
