//! Cases for the limits a claim enforces ([`RunStore::claim_run`](crate::store::RunStore::claim_run)
//! under **Limits**, and [`list_claimable`](crate::store::RunStore::list_claimable)):
//! a key's slots, its queue order, debounce windows, superseded runs and
//! rate limits, the `concurrency_key` filter, and racing claims.

use std::time::Duration;

use chrono::TimeDelta;

use super::*;
use crate::concurrency::{RateLimit, RunLimits};
use crate::store::RunQuery;

/// A queued run of `version` created at `at(secs)`, under a limit of `max`
/// runs of `key` (none with `max` 0).
fn limited(version: &WorkflowVersion, key: &str, max: u32, secs: i64) -> WorkflowRun {
    let mut run = queued(version, at(secs));
    run.limits = Some(Arc::new(RunLimits {
        key: key.to_owned(),
        max: (max > 0).then_some(max),
        policy: crate::LimitPolicy::Queue,
        debounce: false,
        not_before: None,
        rate: None,
        holds_slot: false,
    }));
    run
}

async fn insert_all<S: Store>(store: &S, runs: &[WorkflowRun]) {
    for run in runs {
        store.insert_run(run).await.expect("insert a run");
    }
}

async fn claim<S: Store>(
    store: &S,
    id: RunId,
    now: DateTime<Utc>,
) -> Result<WorkflowRun, StoreError> {
    store
        .claim_run(id, "worker", now, now + TimeDelta::seconds(3_600))
        .await
}

async fn claimable<S: Store>(store: &S, now: DateTime<Utc>) -> Vec<RunId> {
    store.list_claimable(now, 100).await.expect("list")
}

/// A key with `max` slots lets `max` runs be claimed and refuses the next
/// one (`Conflict`, nothing changed), and `list_claimable` stops listing
/// its runs once its slots are taken; other keys, and runs without limits,
/// are not held up.
pub async fn a_full_key_refuses_a_claim<S: Store + Clone>(store: S) {
    let (_, version) = setup(&store, "limits-full").await;
    let runs: Vec<WorkflowRun> = (0..3).map(|i| limited(&version, "k", 2, i)).collect();
    let other = limited(&version, "other", 1, 10);
    let free = queued(&version, at(11));
    insert_all(&store, &runs).await;
    insert_all(&store, &[other.clone(), free.clone()]).await;
    let now = at(60);
    assert_eq!(
        claimable(&store, now).await,
        vec![runs[0].id, runs[1].id, other.id, free.id],
        "two of the key's three runs, the other key's and the free run"
    );
    start(&store, runs[0].id, "a", now).await;
    claim(&store, runs[1].id, now)
        .await
        .expect("the second slot");
    let before = store.get_run(runs[2].id).await.expect("get");
    expect_conflict(
        claim(&store, runs[2].id, now).await,
        "a third run of a full key",
    );
    assert_eq!(
        store.get_run(runs[2].id).await.ok(),
        Some(before),
        "a refused claim changes nothing"
    );
    assert_eq!(claimable(&store, now).await, vec![other.id, free.id]);
    claim(&store, other.id, now)
        .await
        .expect("another key has its own slots");
    claim(&store, free.id, now)
        .await
        .expect("a run without limits");
}

/// A run holds its slot from its first claim until it finishes: a finished
/// run (succeeded, failed, cancelled) frees it for the key's next run. A
/// run claimed before whose lease lapsed is claimed again without a new
/// slot, even while the key is full.
pub async fn a_finished_run_frees_its_slot<S: Store + Clone>(store: S) {
    let (_, version) = setup(&store, "limits-free").await;
    let runs: Vec<WorkflowRun> = (0..3).map(|i| limited(&version, "k", 1, i)).collect();
    insert_all(&store, &runs).await;
    let now = at(60);
    start(&store, runs[0].id, "a", now).await;
    expect_conflict(
        claim(&store, runs[1].id, now).await,
        "the key's one slot is taken",
    );

    // The holder's lease lapses: it is claimed again (resumed), and still
    // holds the slot.
    let later = now + TimeDelta::seconds(31);
    assert_eq!(claimable(&store, later).await, vec![runs[0].id]);
    let mut first = claim(&store, runs[0].id, later)
        .await
        .expect("a lapsed holder is claimed again");
    expect_conflict(
        claim(&store, runs[1].id, later).await,
        "the resumed run still holds the slot",
    );

    finish(&store, &mut first, RunTransition::Succeed).await;
    assert_eq!(claimable(&store, later).await, vec![runs[1].id]);
    let mut second = start(&store, runs[1].id, "b", later).await;
    expect_conflict(claim(&store, runs[2].id, later).await, "taken again");
    finish(&store, &mut second, RunTransition::Cancel).await;
    claim(&store, runs[2].id, later)
        .await
        .expect("a cancelled run frees its slot too");
}

/// A key's waiting runs are claimed in creation order: while an older run
/// of the key waits for the free slot, a newer one is refused, and
/// `list_claimable` lists the older. A run that is to be cancelled needs no
/// slot (it is claimed only to be cancelled) and does not hold up the runs
/// behind it.
pub async fn waiting_runs_of_a_key_start_in_order<S: Store + Clone>(store: S) {
    let (_, version) = setup(&store, "limits-order").await;
    let runs: Vec<WorkflowRun> = (0..4).map(|i| limited(&version, "k", 1, i)).collect();
    insert_all(&store, &runs).await;
    let now = at(60);
    expect_conflict(
        claim(&store, runs[2].id, now).await,
        "older runs of the key come first",
    );
    assert_eq!(claimable(&store, now).await, vec![runs[0].id]);

    let cancelled = store.request_cancel(runs[0].id).await.expect("cancel");
    assert!(cancelled.cancel_requested);
    assert_eq!(
        claimable(&store, now).await,
        vec![runs[0].id, runs[1].id],
        "a run to be cancelled is claimable and waits ahead of nobody"
    );
    let mut doomed = claim(&store, runs[0].id, now)
        .await
        .expect("claimed to be cancelled");
    let mut second = start(&store, runs[1].id, "b", now).await;
    finish(&store, &mut doomed, RunTransition::Cancel).await;
    expect_conflict(
        claim(&store, runs[3].id, now).await,
        "the slot is the second run's",
    );
    finish(&store, &mut second, RunTransition::Succeed).await;
    expect_conflict(
        claim(&store, runs[3].id, now).await,
        "the third run is older",
    );
    claim(&store, runs[2].id, now)
        .await
        .expect("the oldest waiting run");
}

/// Keys are independent: runs of one key never take another key's slots,
/// whatever their order of creation.
pub async fn keys_are_independent<S: Store + Clone>(store: S) {
    let (_, version) = setup(&store, "limits-keys").await;
    let runs: Vec<WorkflowRun> = (0..6)
        .map(|i| limited(&version, if i % 2 == 0 { "even" } else { "odd" }, 1, i))
        .collect();
    insert_all(&store, &runs).await;
    let now = at(60);
    assert_eq!(claimable(&store, now).await, vec![runs[0].id, runs[1].id]);
    claim(&store, runs[1].id, now).await.expect("odd's slot");
    claim(&store, runs[0].id, now).await.expect("even's slot");
    for run in &runs[2..] {
        expect_conflict(claim(&store, run.id, now).await, "both keys are full");
    }
    assert!(claimable(&store, now).await.is_empty());
}

/// Racing claims of a key's waiting runs, by many workers at once, never
/// give more than `max` runs a slot: of 24 runs of a key with 3 slots, each
/// claimed by 8 racing workers, exactly 3 claims succeed, each for a
/// different run; the other claims get `Conflict`.
pub async fn concurrent_claims_never_exceed_the_max<S: Store + Clone>(store: S) {
    let (_, version) = setup(&store, "limits-race").await;
    let runs: Vec<WorkflowRun> = (0..24).map(|i| limited(&version, "k", 3, i)).collect();
    insert_all(&store, &runs).await;
    let ids: Arc<Vec<RunId>> = Arc::new(runs.iter().map(|r| r.id).collect());
    let now = at(60);
    let results = race(&store, 24 * 8, move |store, i| {
        let ids = Arc::clone(&ids);
        async move {
            // Newest first for half the workers, so order is contested too.
            let at = if i % 2 == 0 { i / 8 } else { 23 - i / 8 };
            store
                .claim_run(ids[at], &format!("w{i}"), now, now + TimeDelta::seconds(30))
                .await
        }
    })
    .await;
    let mut won = std::collections::BTreeSet::new();
    for result in results {
        match result {
            Ok(run) => assert!(won.insert(run.id), "one run claimed twice"),
            Err(StoreError::Conflict { .. }) => {}
            Err(e) => panic!("a refused claim must be a conflict, got {e:?}"),
        }
    }
    let oldest: std::collections::BTreeSet<RunId> = runs[..3].iter().map(|r| r.id).collect();
    assert_eq!(
        won, oldest,
        "the key's three oldest runs, and only they, took its slots"
    );
    let holding = store
        .list_runs(&RunQuery {
            concurrency_key: Some("k".to_owned()),
            limit: 100,
            ..RunQuery::default()
        })
        .await
        .expect("list")
        .items
        .into_iter()
        .filter(|r| r.lease_epoch > 0)
        .count();
    assert_eq!(holding, 3, "the store agrees on who holds a slot");
    assert!(claimable(&store, now).await.is_empty(), "the key is full");
}

/// A debounced run is neither listed nor claimed before its window ends
/// (`not_before`); then it is. A newer waiting run of its key supersedes
/// it: it is listed and claimed with `cancel_requested` set, without
/// taking a slot, even while the key is full.
pub async fn debounce_windows_and_superseded_runs<S: Store + Clone>(store: S) {
    let (_, version) = setup(&store, "limits-debounce").await;
    let debounced = |secs: i64, window: i64| {
        let mut run = limited(&version, "d", 1, secs);
        if let Some(limits) = run.limits.as_mut().map(Arc::make_mut) {
            limits.debounce = true;
            limits.not_before = Some(at(secs + window));
        }
        run
    };
    let first = debounced(0, 10);
    store.insert_run(&first).await.expect("insert");
    assert!(
        claimable(&store, at(9)).await.is_empty(),
        "inside its window"
    );
    expect_conflict(claim(&store, first.id, at(9)).await, "inside its window");
    assert_eq!(claimable(&store, at(10)).await, vec![first.id]);

    let second = debounced(5, 10);
    store.insert_run(&second).await.expect("insert");
    assert_eq!(
        claimable(&store, at(10)).await,
        vec![first.id],
        "the superseded run is listed, the newer one waits for its window"
    );
    let mut superseded = claim(&store, first.id, at(10))
        .await
        .expect("claimed to be cancelled");
    assert!(
        superseded.cancel_requested,
        "a newer run of its key supersedes it"
    );
    let fence = superseded.fence();
    superseded
        .transition(RunTransition::Cancel, at(10))
        .expect("cancel");
    store
        .commit(fence, Some(&superseded), &[])
        .await
        .expect("commit the cancel");
    let taken = claim(&store, second.id, at(15))
        .await
        .expect("the last run of the burst");
    assert!(!taken.cancel_requested);
}

/// A rate limit lets `runs` first claims of a workflow's runs happen in
/// any window of `per`: further claims are refused, and not listed, until
/// the oldest start leaves the window. The start times are the store's
/// (they count claims by any caller).
pub async fn rate_limits_count_starts_in_a_window<S: Store + Clone>(store: S) {
    let (_, version) = setup(&store, "limits-rate").await;
    let runs: Vec<WorkflowRun> = (0..4)
        .map(|i| {
            let mut run = queued(&version, at(i));
            run.limits = Some(Arc::new(RunLimits {
                key: version.workflow_id.to_string(),
                max: None,
                policy: crate::LimitPolicy::Queue,
                debounce: false,
                not_before: None,
                rate: Some(RateLimit::new(2, Duration::from_secs(60))),
                holds_slot: false,
            }));
            run
        })
        .collect();
    insert_all(&store, &runs).await;
    assert_eq!(
        claimable(&store, at(100)).await,
        runs[..2].iter().map(|r| r.id).collect::<Vec<_>>()
    );
    claim(&store, runs[0].id, at(100))
        .await
        .expect("first start");
    claim(&store, runs[1].id, at(130))
        .await
        .expect("second start");
    expect_conflict(
        claim(&store, runs[2].id, at(159)).await,
        "two starts in the window",
    );
    assert!(claimable(&store, at(159)).await.is_empty());
    assert_eq!(
        claimable(&store, at(160)).await,
        vec![runs[2].id],
        "the first start left the window"
    );
    claim(&store, runs[2].id, at(160))
        .await
        .expect("third start");
    expect_conflict(
        claim(&store, runs[3].id, at(189)).await,
        "two starts in the window again",
    );
    claim(&store, runs[3].id, at(190))
        .await
        .expect("fourth start");
}

/// `list_runs` with a `concurrency_key` lists the key's unfinished runs,
/// holding a slot or waiting, and no finished one nor another key's.
pub async fn runs_filter_by_concurrency_key<S: Store + Clone>(store: S) {
    let (_, version) = setup(&store, "limits-filter").await;
    let runs: Vec<WorkflowRun> = (0..4).map(|i| limited(&version, "k", 2, i)).collect();
    insert_all(&store, &runs).await;
    store
        .insert_run(&limited(&version, "other", 2, 9))
        .await
        .expect("insert");
    store
        .insert_run(&queued(&version, at(10)))
        .await
        .expect("insert");
    let now = at(60);
    let mut first = start(&store, runs[0].id, "a", now).await;
    claim(&store, runs[1].id, now).await.expect("claim");
    finish(&store, &mut first, RunTransition::Succeed).await;
    let listed = store
        .list_runs(&RunQuery {
            concurrency_key: Some("k".to_owned()),
            ..RunQuery::default()
        })
        .await
        .expect("list");
    let ids: Vec<RunId> = listed.items.iter().map(|r| r.id).collect();
    assert_eq!(ids, vec![runs[1].id, runs[2].id, runs[3].id]);
    let newest = store
        .list_runs(&RunQuery {
            concurrency_key: Some("k".to_owned()),
            order: crate::store::Order::NewestFirst,
            limit: 2,
            ..RunQuery::default()
        })
        .await
        .expect("list");
    assert_eq!(
        newest.items.iter().map(|r| r.id).collect::<Vec<_>>(),
        vec![runs[3].id, runs[2].id]
    );
    assert!(newest.next.is_some());
}
