//! Cases for paged listings: order, cursors, filters and page sizes.

use std::collections::HashSet;

use crate::event::OutcomeKind;
use crate::id::{TriggerId, WorkflowId};
use crate::store::rules::page_limit;
use crate::store::{EventQuery, Order, RunQuery, MAX_PAGE_SIZE};

use super::*;

/// More pages than any correct listing of these cases needs.
const MAX_PAGES: usize = 10_000;

/// Follows `query` page by page; every page but the last is full and has a
/// `next`. `between` runs after each page, before the next is read.
async fn run_pages<S, F, Fut>(store: &S, mut query: RunQuery, mut between: F) -> Vec<RunId>
where
    S: Store,
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    let mut ids = Vec::new();
    for _ in 0..MAX_PAGES {
        let page = store.list_runs(&query).await.expect("list runs");
        assert!(
            page.items.len() <= page_limit(query.limit),
            "a page holds at most limit runs"
        );
        ids.extend(page.items.iter().map(|r| r.id));
        match page.next {
            Some(next) => {
                assert_eq!(
                    page.items.len(),
                    page_limit(query.limit),
                    "only the last page is short"
                );
                assert_eq!(
                    Some(next),
                    ids.last().copied(),
                    "next is the page's last run"
                );
                query.after = Some(next);
            }
            None => return ids,
        }
        between().await;
    }
    panic!("paging runs did not end after {MAX_PAGES} pages");
}

async fn event_pages<S, F, Fut>(store: &S, mut query: EventQuery, mut between: F) -> Vec<EventId>
where
    S: Store,
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    let mut ids = Vec::new();
    for _ in 0..MAX_PAGES {
        let page = store.list_events(&query).await.expect("list events");
        assert!(
            page.items.len() <= page_limit(query.limit),
            "a page holds at most limit events"
        );
        ids.extend(page.items.iter().map(|e| e.id));
        match page.next {
            Some(next) => {
                assert_eq!(
                    page.items.len(),
                    page_limit(query.limit),
                    "only the last page is short"
                );
                assert_eq!(
                    Some(next),
                    ids.last().copied(),
                    "next is the page's last event"
                );
                query.after = Some(next);
            }
            None => return ids,
        }
        between().await;
    }
    panic!("paging events did not end after {MAX_PAGES} pages");
}

async fn nothing() {}

fn sorted<T: Ord + Copy>(ids: &[T], order: Order) -> Vec<T> {
    let mut ids = ids.to_vec();
    ids.sort_unstable();
    if order == Order::NewestFirst {
        ids.reverse();
    }
    ids
}

#[track_caller]
fn assert_once<T: std::hash::Hash + Eq + Debug>(ids: &[T]) {
    let mut seen = HashSet::new();
    for id in ids {
        assert!(seen.insert(id), "{id:?} was listed twice");
    }
}

/// Runs page by id in both orders, each exactly once, and pages hold the
/// same runs when read again.
pub async fn runs_page_in_both_orders<S: Store + Clone>(store: S) {
    let (workflow, version) = setup(&store, "paged").await;
    let mut ids = Vec::new();
    for i in 0..25 {
        let run = queued(&version, at(i));
        ids.push(run.id);
        store.insert_run(&run).await.expect("insert a run");
    }
    for order in [Order::OldestFirst, Order::NewestFirst] {
        for workflow_id in [None, Some(workflow.id)] {
            let query = RunQuery {
                workflow_id,
                order,
                limit: 7,
                ..Default::default()
            };
            let listed = run_pages(&store, query.clone(), nothing).await;
            assert_eq!(listed, sorted(&ids, order), "{order:?} pages of 7");
            let again = run_pages(&store, query, nothing).await;
            assert_eq!(listed, again, "paging is stable");
        }
    }
}

/// Paging visits every run exactly once while runs are inserted between
/// pages; oldest-first paging also reaches the runs inserted meanwhile.
pub async fn runs_page_while_inserted<S: Store + Clone>(store: S) {
    let (workflow, version) = setup(&store, "busy").await;
    let (_, elsewhere) = setup(&store, "elsewhere").await;
    let mut originals = Vec::new();
    for i in 0..20 {
        let run = queued(&version, at(i));
        originals.push(run.id);
        store.insert_run(&run).await.expect("insert a run");
    }
    for order in [Order::OldestFirst, Order::NewestFirst] {
        let added = std::sync::Mutex::new(Vec::new());
        let query = RunQuery {
            workflow_id: Some(workflow.id),
            order,
            limit: 6,
            ..Default::default()
        };
        let listed = run_pages(&store, query, || {
            let mut batch = vec![queued(&version, at(100)), queued(&version, at(100))];
            batch.push(queued(&elsewhere, at(100)));
            added
                .lock()
                .expect("unpoisoned")
                .extend(batch[..2].iter().map(|r| r.id));
            let store = &store;
            async move {
                for run in &batch {
                    store.insert_run(run).await.expect("insert a run");
                }
            }
        })
        .await;
        assert_once(&listed);
        assert_eq!(
            listed,
            sorted(&listed, order),
            "{order:?} order holds while inserting"
        );
        let mut expected = originals.clone();
        if order == Order::OldestFirst {
            // Runs made later sort after every cursor, so paging reaches them.
            expected.extend(added.into_inner().expect("unpoisoned"));
        }
        assert_eq!(
            listed,
            sorted(&expected, order),
            "{order:?} visits every run once"
        );
        originals = run_pages(
            &store,
            RunQuery {
                workflow_id: Some(workflow.id),
                limit: MAX_PAGE_SIZE,
                ..Default::default()
            },
            nothing,
        )
        .await;
    }
}

/// Events page by id in both orders, each exactly once.
pub async fn events_page_in_both_orders<S: Store + Clone>(store: S) {
    let (workflow, _) = setup(&store, "paged").await;
    let mut ids = Vec::new();
    for i in 0..25 {
        let event = event(&workflow, None, EventOutcome::WorkflowInactive, at(i));
        ids.push(event.id);
        store
            .insert_event(&event, None)
            .await
            .expect("insert an event");
    }
    for order in [Order::OldestFirst, Order::NewestFirst] {
        for workflow_id in [None, Some(workflow.id)] {
            let query = EventQuery {
                workflow_id,
                order,
                limit: 7,
                ..Default::default()
            };
            let listed = event_pages(&store, query.clone(), nothing).await;
            assert_eq!(listed, sorted(&ids, order), "{order:?} pages of 7");
            assert_eq!(listed, event_pages(&store, query, nothing).await, "stable");
        }
    }
}

/// Paging visits every event exactly once while events are inserted between
/// pages; oldest-first paging also reaches the events inserted meanwhile.
pub async fn events_page_while_inserted<S: Store + Clone>(store: S) {
    let (workflow, _) = setup(&store, "busy").await;
    let (elsewhere, _) = setup(&store, "elsewhere").await;
    let mut originals = Vec::new();
    for i in 0..20 {
        let event = event(&workflow, None, EventOutcome::WorkflowInactive, at(i));
        originals.push(event.id);
        store
            .insert_event(&event, None)
            .await
            .expect("insert an event");
    }
    for order in [Order::OldestFirst, Order::NewestFirst] {
        let added = std::sync::Mutex::new(Vec::new());
        let query = EventQuery {
            workflow_id: Some(workflow.id),
            order,
            limit: 6,
            ..Default::default()
        };
        let listed = event_pages(&store, query, || {
            let batch = [
                event(&workflow, None, EventOutcome::WorkflowInactive, at(100)),
                event(&elsewhere, None, EventOutcome::WorkflowInactive, at(100)),
                event(&workflow, None, EventOutcome::WorkflowInactive, at(100)),
            ];
            added
                .lock()
                .expect("unpoisoned")
                .extend([batch[0].id, batch[2].id]);
            let store = &store;
            async move {
                for event in &batch {
                    store
                        .insert_event(event, None)
                        .await
                        .expect("insert an event");
                }
            }
        })
        .await;
        assert_once(&listed);
        assert_eq!(
            listed,
            sorted(&listed, order),
            "{order:?} order holds while inserting"
        );
        let mut expected = originals.clone();
        if order == Order::OldestFirst {
            expected.extend(added.into_inner().expect("unpoisoned"));
        }
        assert_eq!(
            listed,
            sorted(&expected, order),
            "{order:?} visits every event once"
        );
        originals = event_pages(
            &store,
            EventQuery {
                workflow_id: Some(workflow.id),
                limit: MAX_PAGE_SIZE,
                ..Default::default()
            },
            nothing,
        )
        .await;
    }
}

/// Run filters (workflow, status, event, creation time, and combinations)
/// list exactly the matching runs, by id, in pages.
pub async fn runs_filter<S: Store + Clone>(store: S) {
    let (a, version_a) = setup(&store, "a").await;
    let (b, version_b) = setup(&store, "b").await;
    let events = [EventId::new(), EventId::new()];
    let statuses = RunStatus::ALL;
    let mut runs = Vec::new();
    for i in 0..36_usize {
        let version = if i % 3 == 2 { &version_b } else { &version_a };
        let status = statuses[i % statuses.len()];
        let lease = (status == RunStatus::Running).then(|| lease("w", at(1_000)));
        let secs = i64::try_from(i).expect("a small number") * 10;
        let mut run = run_in(version, status, lease, at(secs));
        run.event_id = match i % 4 {
            0 => Some(events[0]),
            1 => Some(events[1]),
            _ => None,
        };
        runs.push(run);
    }
    // Inserted in an order unrelated to their ids.
    for i in (0..runs.len()).map(|i| (i * 7) % runs.len()) {
        store.insert_run(&runs[i]).await.expect("insert a run");
    }

    let mut queries = Vec::new();
    for workflow_id in [None, Some(a.id), Some(b.id), Some(WorkflowId::new())] {
        for status in [
            None,
            Some(RunStatus::Queued),
            Some(RunStatus::Running),
            Some(RunStatus::Failed),
        ] {
            queries.push(RunQuery {
                workflow_id,
                status,
                ..Default::default()
            });
        }
    }
    for event_id in [events[0], events[1], EventId::new()] {
        queries.push(RunQuery {
            event_id: Some(event_id),
            ..Default::default()
        });
        queries.push(RunQuery {
            event_id: Some(event_id),
            workflow_id: Some(a.id),
            ..Default::default()
        });
    }
    queries.push(RunQuery {
        created_from: Some(at(100)),
        ..Default::default()
    });
    queries.push(RunQuery {
        created_until: Some(at(100)),
        ..Default::default()
    });
    queries.push(RunQuery {
        created_from: Some(at(50)),
        created_until: Some(at(250)),
        workflow_id: Some(a.id),
        ..Default::default()
    });
    queries.push(RunQuery {
        created_from: Some(at(50)),
        created_until: Some(at(300)),
        status: Some(RunStatus::Succeeded),
        event_id: Some(events[0]),
        ..Default::default()
    });
    queries.push(RunQuery {
        created_from: Some(at(10_000)),
        ..Default::default()
    });

    for base in queries {
        for order in [Order::OldestFirst, Order::NewestFirst] {
            let query = RunQuery {
                order,
                limit: 4,
                ..base.clone()
            };
            let expected: Vec<RunId> = runs
                .iter()
                .filter(|r| {
                    base.workflow_id.is_none_or(|w| r.workflow_id == w)
                        && base.status.is_none_or(|s| r.status == s)
                        && base.event_id.is_none_or(|e| r.event_id == Some(e))
                        && base.created_from.is_none_or(|t| r.created_at >= t)
                        && base.created_until.is_none_or(|t| r.created_at < t)
                })
                .map(|r| r.id)
                .collect();
            let listed = run_pages(&store, query.clone(), nothing).await;
            assert_eq!(listed, sorted(&expected, order), "runs matching {query:?}");
        }
    }
}

/// Listings by status follow the runs through claims and commits: a run is
/// listed under its current status only, alone or with its workflow.
pub async fn runs_filter_follows_status_changes<S: Store + Clone>(store: S) {
    let (workflow, version) = setup(&store, "moving").await;
    let mut runs = Vec::new();
    for i in 0..6 {
        let run = queued(&version, at(i));
        store.insert_run(&run).await.expect("insert a run");
        runs.push(run);
    }
    let mut owned = Vec::new();
    for run in &runs[..4] {
        owned.push(start(&store, run.id, "w", t0()).await);
    }
    finish(&store, &mut owned[0], RunTransition::Succeed).await;
    finish(&store, &mut owned[1], RunTransition::Fail).await;
    finish(&store, &mut owned[2], RunTransition::Cancel).await;
    let expected = [
        (RunStatus::Queued, vec![runs[4].id, runs[5].id]),
        (RunStatus::Running, vec![runs[3].id]),
        (RunStatus::Succeeded, vec![runs[0].id]),
        (RunStatus::Failed, vec![runs[1].id]),
        (RunStatus::Cancelled, vec![runs[2].id]),
        (RunStatus::TimedOut, vec![]),
    ];
    for (status, ids) in expected {
        for workflow_id in [None, Some(workflow.id)] {
            let query = RunQuery {
                workflow_id,
                status: Some(status),
                limit: 1,
                ..Default::default()
            };
            assert_eq!(
                run_pages(&store, query, nothing).await,
                ids,
                "{status} runs, workflow {workflow_id:?}"
            );
        }
    }
}

/// Event filters (workflow, trigger, outcome, receipt time, and
/// combinations) list exactly the matching events, by id, in pages.
pub async fn events_filter<S: Store + Clone>(store: S) {
    let (a, version_a) = setup(&store, "a").await;
    let (b, _) = setup(&store, "b").await;
    let triggers = [TriggerId::new(), TriggerId::new(), TriggerId::new()];
    let mut events = Vec::new();
    for i in 0..36_usize {
        let workflow = if i % 3 == 2 { &b } else { &a };
        let secs = i64::try_from(i).expect("a small number") * 10;
        let outcome = match i % 4 {
            0 => EventOutcome::Filtered {
                reason: "branch".into(),
            },
            1 => EventOutcome::Skipped {
                reason: "overlap".into(),
            },
            2 => EventOutcome::TriggerDisabled,
            _ => EventOutcome::WorkflowInactive,
        };
        let mut event = event(workflow, Some(&format!("k{i}")), outcome, at(secs));
        event.trigger_id = match (i % 3, i % 2) {
            (2, _) => Some(triggers[2]),
            (_, 0) => Some(triggers[0]),
            (_, _) => (i % 5 != 0).then_some(triggers[1]),
        };
        events.push(event);
    }
    for (n, event) in events.iter_mut().enumerate().filter(|(n, _)| n % 9 == 4) {
        // Some events started runs, stored with them.
        let mut run = queued(&version_a, at(i64::try_from(n).expect("small")));
        run.workflow_id = event.workflow_id;
        run.event_id = Some(event.id);
        event.outcome = EventOutcome::RunStarted { run_id: run.id };
        store
            .insert_event(event, Some(&run))
            .await
            .expect("insert an event and its run");
    }
    for event in events.iter().filter(|e| e.outcome.run_id().is_none()).rev() {
        store
            .insert_event(event, None)
            .await
            .expect("insert an event");
    }

    let mut queries = Vec::new();
    for workflow_id in [None, Some(a.id), Some(b.id), Some(WorkflowId::new())] {
        for trigger_id in [
            None,
            Some(triggers[0]),
            Some(triggers[1]),
            Some(triggers[2]),
        ] {
            queries.push(EventQuery {
                workflow_id,
                trigger_id,
                ..Default::default()
            });
        }
    }
    for outcome in [
        OutcomeKind::RunStarted,
        OutcomeKind::Filtered,
        OutcomeKind::Skipped,
        OutcomeKind::TriggerDisabled,
        OutcomeKind::WorkflowInactive,
    ] {
        queries.push(EventQuery {
            outcome: Some(outcome),
            ..Default::default()
        });
        queries.push(EventQuery {
            outcome: Some(outcome),
            workflow_id: Some(a.id),
            trigger_id: Some(triggers[0]),
            ..Default::default()
        });
    }
    queries.push(EventQuery {
        received_from: Some(at(100)),
        ..Default::default()
    });
    queries.push(EventQuery {
        received_until: Some(at(100)),
        ..Default::default()
    });
    queries.push(EventQuery {
        received_from: Some(at(50)),
        received_until: Some(at(250)),
        workflow_id: Some(a.id),
        ..Default::default()
    });
    queries.push(EventQuery {
        received_from: Some(at(0)),
        received_until: Some(at(0)),
        ..Default::default()
    });

    for base in queries {
        for order in [Order::OldestFirst, Order::NewestFirst] {
            let query = EventQuery {
                order,
                limit: 4,
                ..base.clone()
            };
            let expected: Vec<EventId> = events
                .iter()
                .filter(|e| {
                    base.workflow_id.is_none_or(|w| e.workflow_id == w)
                        && base.trigger_id.is_none_or(|t| e.trigger_id == Some(t))
                        && base.outcome.is_none_or(|o| e.outcome.kind() == o)
                        && base.received_from.is_none_or(|t| e.received_at >= t)
                        && base.received_until.is_none_or(|t| e.received_at < t)
                })
                .map(|e| e.id)
                .collect();
            let listed = event_pages(&store, query.clone(), nothing).await;
            assert_eq!(
                listed,
                sorted(&expected, order),
                "events matching {query:?}"
            );
        }
    }
}

/// A limit of 0 means 100; a limit over [`MAX_PAGE_SIZE`] gives pages of
/// [`MAX_PAGE_SIZE`]; paging with either still visits everything once.
pub async fn page_limits_default_and_cap<S: Store + Clone>(store: S) {
    let (workflow, version) = setup(&store, "crowded").await;
    let total = MAX_PAGE_SIZE + 5;
    for i in 0..total {
        let mut run = queued(&version, at(i64::try_from(i).expect("small")));
        let event = event_starting(&workflow, None, &mut run);
        store
            .insert_event(&event, Some(&run))
            .await
            .expect("insert an event and its run");
    }
    for (limit, expected) in [
        (0, 100),
        (1, 1),
        (MAX_PAGE_SIZE, MAX_PAGE_SIZE),
        (MAX_PAGE_SIZE + 1, MAX_PAGE_SIZE),
        (usize::MAX, MAX_PAGE_SIZE),
    ] {
        let runs = store
            .list_runs(&RunQuery {
                limit,
                ..Default::default()
            })
            .await
            .expect("list runs");
        assert_eq!(runs.items.len(), expected, "runs page for limit {limit}");
        assert_eq!(
            runs.next,
            runs.items.last().map(|r| r.id),
            "a next page follows"
        );
        let events = store
            .list_events(&EventQuery {
                limit,
                ..Default::default()
            })
            .await
            .expect("list events");
        assert_eq!(
            events.items.len(),
            expected,
            "events page for limit {limit}"
        );
        assert_eq!(
            events.next,
            events.items.last().map(|e| e.id),
            "a next page follows"
        );
    }
    for limit in [0, MAX_PAGE_SIZE * 3] {
        let mut query = RunQuery {
            limit,
            ..Default::default()
        };
        let mut runs = Vec::new();
        loop {
            let page = store.list_runs(&query).await.expect("list runs");
            runs.extend(page.items.into_iter().map(|r| r.id));
            match page.next {
                Some(next) => query.after = Some(next),
                None => break,
            }
            assert!(
                runs.len() <= total,
                "paging runs with limit {limit} must end"
            );
        }
        assert_once(&runs);
        assert_eq!(
            runs.len(),
            total,
            "paging with limit {limit} visits every run"
        );

        let mut query = EventQuery {
            limit,
            ..Default::default()
        };
        let mut events = Vec::new();
        loop {
            let page = store.list_events(&query).await.expect("list events");
            events.extend(page.items.into_iter().map(|e| e.id));
            match page.next {
                Some(next) => query.after = Some(next),
                None => break,
            }
            assert!(
                events.len() <= total,
                "paging events with limit {limit} must end"
            );
        }
        assert_once(&events);
        assert_eq!(
            events.len(),
            total,
            "paging with limit {limit} visits every event"
        );
    }
}
