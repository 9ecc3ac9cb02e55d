//! Cases for claims and leases of [`RunStore`](crate::store::RunStore):
//! which runs are claimable, what a claim writes, racing claims, live and
//! lapsed leases, finished runs, and lease renewal.

use chrono::TimeDelta;

use super::*;

/// `list_claimable` lists queued runs and running runs whose lease lapsed
/// at or before `now` (or that hold none), oldest first, up to `limit`; not
/// finished runs, nor running runs with a live lease.
pub async fn list_claimable_finds_queued_and_lapsed_runs<S: Store + Clone>(store: S) {
    let (_, version) = setup(&store, "claimable").await;
    let now = at(3_600);
    let second = TimeDelta::seconds(1);
    let specs = [
        (RunStatus::Queued, None, true),
        (RunStatus::Running, Some(lease("lost", now - second)), true),
        (
            RunStatus::Running,
            Some(lease("alive", now + second * 60)),
            false,
        ),
        (RunStatus::Succeeded, None, false),
        (RunStatus::Queued, None, true),
        (RunStatus::Running, Some(lease("edge", now)), true),
        (RunStatus::Failed, None, false),
        (RunStatus::Cancelled, None, false),
        (RunStatus::TimedOut, None, false),
        (RunStatus::Running, None, true),
        (RunStatus::Queued, None, true),
    ];
    let runs: Vec<_> = specs
        .iter()
        .enumerate()
        .map(|(i, (status, lease, _))| {
            let mut run = run_in(
                &version,
                *status,
                lease.clone(),
                at(i64::try_from(i).expect("small")),
            );
            run.cancel_requested = i == 10;
            run
        })
        .collect();
    // Inserted newest first: the answer must be sorted, not replayed.
    for run in runs.iter().rev() {
        store.insert_run(run).await.expect("insert a run");
    }
    let expected: Vec<RunId> = runs
        .iter()
        .zip(&specs)
        .filter(|(_, spec)| spec.2)
        .map(|(run, _)| run.id)
        .collect();
    assert_eq!(
        store.list_claimable(now, 100).await.expect("list"),
        expected
    );
    assert_eq!(
        store.list_claimable(now, 2).await.expect("list"),
        expected[..2]
    );
    assert_eq!(
        store.list_claimable(now, 3).await.expect("list"),
        expected[..3]
    );

    // A started run is not claimable while its lease lives, then is again;
    // a finished one never is.
    let mut first = start(&store, runs[0].id, "w", now).await;
    assert_eq!(
        store.list_claimable(now, 100).await.expect("list"),
        expected[1..],
        "a freshly started run has a live lease"
    );
    let later = now + second * 31;
    assert_eq!(
        store.list_claimable(later, 100).await.expect("list"),
        expected,
        "its lease lapsed"
    );
    finish(&store, &mut first, RunTransition::Succeed).await;
    let far = now + TimeDelta::days(1);
    let mut everything = expected[1..].to_vec();
    everything.push(runs[2].id);
    everything.sort_unstable();
    assert_eq!(
        store.list_claimable(far, 100).await.expect("list"),
        everything,
        "every unfinished run once every lease lapsed"
    );
}

/// A claim of a queued run sets the lease and increments `lease_epoch`, and
/// changes nothing else (the status stays queued).
pub async fn claim_sets_lease_and_epoch_only<S: Store + Clone>(store: S) {
    let (_, version) = setup(&store, "claimed").await;
    let run = insert_queued(&store, &version).await;
    let claimed = store
        .claim_run(run.id, "worker-1", at(10), at(40))
        .await
        .expect("claim a queued run");
    let mut expected = run.clone();
    expected.lease = Some(lease("worker-1", at(40)));
    expected.lease_epoch = run.lease_epoch + 1;
    assert_eq!(
        claimed, expected,
        "claim returns the run with its new lease"
    );
    assert_eq!(store.get_run(run.id).await.ok(), Some(expected));
}

async fn race_claims<S: Store + Clone>(store: &S, id: RunId, now: DateTime<Utc>) -> WorkflowRun {
    let before = store.get_run(id).await.expect("get the run");
    let results = race(store, 50, move |store, i| async move {
        store
            .claim_run(
                id,
                &format!("worker-{i}"),
                now,
                now + TimeDelta::seconds(30),
            )
            .await
    })
    .await;
    let mut winners = Vec::new();
    for result in results {
        match result {
            Ok(run) => winners.push(run),
            Err(StoreError::Conflict { .. }) => {}
            Err(e) => panic!("a losing claim must get Conflict, got {e:?}"),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one of 50 concurrent claims wins");
    let winner = winners.remove(0);
    let stored = store.get_run(id).await.expect("get the run");
    assert_eq!(stored, winner, "the winner's claim is stored");
    assert_eq!(
        stored.lease_epoch,
        before.lease_epoch + 1,
        "one claim, one epoch"
    );
    assert_eq!(stored.status, before.status, "a claim keeps the status");
    stored
}

/// Of 50 concurrent claims of one run exactly one succeeds, the others get
/// `Conflict`, and the epoch moves by one: for a queued run, and for a
/// running run whose lease lapsed.
///
/// For a queued run this reads the contract's "succeeds only if the run is
/// queued" as "queued and not leased, or leased with a lapsed lease": a
/// claimed run stays queued until its owner commits `Start`, and a second
/// claim in that window would give it two owners.
pub async fn concurrent_claims_have_one_winner<S: Store + Clone>(store: S) {
    let (_, version) = setup(&store, "contested").await;
    let run = insert_queued(&store, &version).await;
    let claimed = race_claims(&store, run.id, t0()).await;
    assert_eq!(claimed.status, RunStatus::Queued);

    let mut started = claimed;
    let fence = started.fence();
    started
        .transition(RunTransition::Start, t0())
        .expect("start");
    store
        .commit(fence, Some(&started), &[])
        .await
        .expect("commit the start");
    let reclaimed = race_claims(&store, run.id, at(100)).await;
    assert_eq!(reclaimed.status, RunStatus::Running);
}

/// A claim succeeds on a running run whose lease lapsed at or before `now`
/// (or that holds none), and conflicts while the lease lives, changing nothing.
pub async fn claim_respects_live_leases<S: Store + Clone>(store: S) {
    let (_, version) = setup(&store, "leased").await;
    let run = insert_queued(&store, &version).await;
    start(&store, run.id, "a", t0()).await;
    let before = store.get_run(run.id).await.expect("get");
    for now in [at(10), at(29)] {
        expect_conflict(
            store
                .claim_run(run.id, "b", now, now + TimeDelta::seconds(30))
                .await,
            "claim a run with a live lease",
        );
    }
    assert_eq!(store.get_run(run.id).await.ok().as_ref(), Some(&before));
    let taken = store
        .claim_run(run.id, "b", at(30), at(60))
        .await
        .expect("claim a run whose lease lapsed at now");
    assert_eq!(taken.lease, Some(lease("b", at(60))));
    assert_eq!(taken.lease_epoch, before.lease_epoch + 1);
    assert_eq!(taken.status, RunStatus::Running);

    let unleased = run_in(&version, RunStatus::Running, None, t0());
    store.insert_run(&unleased).await.expect("insert a run");
    let claimed = store
        .claim_run(unleased.id, "c", t0(), at(30))
        .await
        .expect("claim a running run without a lease");
    assert_eq!(claimed.lease_epoch, unleased.lease_epoch + 1);

    // Claimed but not yet started: the lease protects it as well.
    let fresh = insert_queued(&store, &version).await;
    store
        .claim_run(fresh.id, "a", t0(), at(30))
        .await
        .expect("claim");
    expect_conflict(
        store.claim_run(fresh.id, "b", at(10), at(40)).await,
        "claim a claimed queued run with a live lease",
    );
    let second = store
        .claim_run(fresh.id, "b", at(30), at(60))
        .await
        .expect("claim a claimed queued run whose lease lapsed");
    assert_eq!(second.lease_epoch, 2);
}

/// A finished run cannot be claimed, whatever its lease.
pub async fn finished_runs_cannot_be_claimed<S: Store + Clone>(store: S) {
    let (_, version) = setup(&store, "finished").await;
    for status in RunStatus::ALL.into_iter().filter(|s| s.is_terminal()) {
        let run = run_in(&version, status, None, t0());
        store.insert_run(&run).await.expect("insert a run");
        expect_conflict(
            store.claim_run(run.id, "w", at(86_400), at(86_430)).await,
            &format!("claim a {status} run"),
        );
        assert_eq!(store.get_run(run.id).await.ok(), Some(run));
    }
    let run = insert_queued(&store, &version).await;
    let mut owned = start(&store, run.id, "w", t0()).await;
    finish(&store, &mut owned, RunTransition::Fail).await;
    expect_conflict(
        store.claim_run(run.id, "w", at(86_400), at(86_430)).await,
        "claim a run that failed",
    );
    assert_eq!(store.get_run(run.id).await.ok(), Some(owned));
}

/// `renew_lease` with the current epoch extends the lease and returns the
/// run, with `cancel_requested` telling the owner to stop.
pub async fn renew_lease_extends_the_current_claim<S: Store + Clone>(store: S) {
    let (_, version) = setup(&store, "renewed").await;
    let run = insert_queued(&store, &version).await;
    let owned = start(&store, run.id, "w", t0()).await;
    let renewed = store
        .renew_lease(run.id, owned.lease_epoch, at(90))
        .await
        .expect("renew the lease");
    let mut expected = owned.clone();
    expected.lease = Some(lease("w", at(90)));
    assert_eq!(renewed, expected);
    assert_eq!(store.get_run(run.id).await.ok().as_ref(), Some(&expected));
    expect_conflict(
        store.claim_run(run.id, "x", at(60), at(120)).await,
        "claim a run whose lease was renewed",
    );

    store.request_cancel(run.id).await.expect("request cancel");
    let renewed = store
        .renew_lease(run.id, owned.lease_epoch, at(120))
        .await
        .expect("renew the lease");
    assert!(renewed.cancel_requested, "renewal tells the owner to stop");
    assert_eq!(renewed.lease, Some(lease("w", at(120))));
}

/// `renew_lease` conflicts if the run was claimed again since, or is
/// finished, and changes nothing.
pub async fn renew_lease_with_stale_epoch_conflicts<S: Store + Clone>(store: S) {
    let (_, version) = setup(&store, "stale").await;
    let run = insert_queued(&store, &version).await;
    let first = start(&store, run.id, "a", t0()).await;
    let mut second = store
        .claim_run(run.id, "b", at(30), at(60))
        .await
        .expect("claim after the lease lapsed");
    for epoch in [first.lease_epoch, second.lease_epoch + 1] {
        expect_conflict(
            store.renew_lease(run.id, epoch, at(1_000)).await,
            &format!("renew with epoch {epoch}"),
        );
    }
    assert_eq!(store.get_run(run.id).await.ok().as_ref(), Some(&second));
    store
        .renew_lease(run.id, second.lease_epoch, at(90))
        .await
        .expect("renew with the current epoch");
    second.lease = Some(lease("b", at(90)));
    finish(&store, &mut second, RunTransition::Succeed).await;
    expect_conflict(
        store
            .renew_lease(run.id, second.lease_epoch, at(1_000))
            .await,
        "renew the lease of a finished run",
    );
    assert_eq!(store.get_run(run.id).await.ok(), Some(second));

    // Finished with its lease still recorded: the status alone refuses.
    for status in RunStatus::ALL.into_iter().filter(|s| s.is_terminal()) {
        let done = run_in(&version, status, Some(lease("w", at(30))), t0());
        store.insert_run(&done).await.expect("insert a run");
        expect_conflict(
            store
                .renew_lease(done.id, done.lease_epoch, at(1_000))
                .await,
            &format!("renew the lease of a {status} run"),
        );
        assert_eq!(store.get_run(done.id).await.ok(), Some(done));
    }
}
