//! Cases for [`RunStore`](crate::store::RunStore): claims, leases, fenced commits,
//! cancellation and step attempts; plus not-found and payload cases that
//! span the three traits.

use chrono::TimeDelta;
use serde_json::{json, Value};

use crate::event::EventOutcome;
use crate::id::{StepRunId, TriggerId, VersionId, WorkflowId};
use crate::run::{Fence, RunError, StepFailure, StepStatus, StepTransition};
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

/// A fenced commit writes the run record and step attempts, new or updated.
pub async fn commit_writes_run_and_steps<S: Store + Clone>(store: S) {
    let (_, version) = setup(&store, "committed").await;
    let run = insert_queued(&store, &version).await;
    let mut owned = start(&store, run.id, "w", t0()).await;
    assert_eq!(store.get_run(run.id).await.ok().as_ref(), Some(&owned));

    let mut attempt = step(&owned, 0, 1);
    store
        .commit(owned.fence(), None, std::slice::from_ref(&attempt))
        .await
        .expect("commit a running step");
    assert_eq!(store.get_run(run.id).await.ok().as_ref(), Some(&owned));
    assert_eq!(
        store.list_step_runs(run.id).await.expect("steps"),
        vec![attempt.clone()]
    );

    attempt.output = Some(json!({"built": true}));
    attempt
        .transition(StepTransition::Succeed, at(2))
        .expect("succeed");
    let fence = owned.fence();
    owned.output = attempt.output.clone();
    owned
        .transition(RunTransition::Succeed, at(2))
        .expect("succeed");
    store
        .commit(fence, Some(&owned), std::slice::from_ref(&attempt))
        .await
        .expect("commit the end of the run");
    assert_eq!(store.get_run(run.id).await.ok(), Some(owned));
    assert_eq!(
        store.list_step_runs(run.id).await.expect("steps"),
        vec![attempt]
    );
}

/// Sets the scene of a lost lease: `a` started the run and wrote a step,
/// then its lease lapsed and `b` claimed the run. Returns `a`'s copy.
async fn lost_lease<S: Store + Clone>(store: &S, version: &WorkflowVersion) -> WorkflowRun {
    let run = insert_queued(store, version).await;
    let owned = start(store, run.id, "a", t0()).await;
    store
        .commit(owned.fence(), None, &[step(&owned, 0, 1)])
        .await
        .expect("commit a step");
    store
        .claim_run(run.id, "b", at(30), at(60))
        .await
        .expect("claim after the lease lapsed");
    owned
}

/// A commit whose fence has a stale lease epoch gets `Conflict` and writes
/// nothing: neither the run nor any step attempt.
pub async fn commit_with_stale_epoch_changes_nothing<S: Store + Clone>(store: S) {
    let (_, version) = setup(&store, "fenced").await;
    let mut stale = lost_lease(&store, &version).await;
    let run_before = store.get_run(stale.id).await.expect("get");
    let steps_before = store.list_step_runs(stale.id).await.expect("steps");

    let fence = stale.fence();
    let mut done = steps_before[0].clone();
    done.transition(StepTransition::Succeed, at(40))
        .expect("succeed");
    stale.output = Some(json!("late"));
    stale
        .transition(RunTransition::Succeed, at(40))
        .expect("succeed");
    expect_conflict(
        store
            .commit(fence, Some(&stale), &[done, step(&stale, 1, 1)])
            .await,
        "commit with a stale epoch",
    );
    expect_conflict(
        store.commit(fence, None, &[step(&stale, 1, 1)]).await,
        "commit steps alone with a stale epoch",
    );
    assert_eq!(store.get_run(stale.id).await.ok(), Some(run_before));
    assert_eq!(
        store.list_step_runs(stale.id).await.expect("steps"),
        steps_before
    );
}

/// A commit whose fence names a status other than the stored one gets
/// `Conflict` and writes nothing.
pub async fn commit_with_stale_status_changes_nothing<S: Store + Clone>(store: S) {
    let (_, version) = setup(&store, "fenced").await;
    let run = insert_queued(&store, &version).await;
    let mut owned = store
        .claim_run(run.id, "w", t0(), at(30))
        .await
        .expect("claim");
    let queued_fence = owned.fence();
    owned.transition(RunTransition::Start, t0()).expect("start");
    store
        .commit(queued_fence, Some(&owned), &[])
        .await
        .expect("commit the start");
    let run_before = store.get_run(run.id).await.expect("get");

    let mut again = owned.clone();
    again.deadline = Some(at(999));
    for status in [
        RunStatus::Queued,
        RunStatus::Succeeded,
        RunStatus::Cancelled,
    ] {
        let fence = Fence {
            status,
            ..owned.fence()
        };
        expect_conflict(
            store
                .commit(fence, Some(&again), &[step(&owned, 0, 1)])
                .await,
            &format!("commit fenced on {status} while running"),
        );
    }
    assert_eq!(store.get_run(run.id).await.ok(), Some(run_before));
    assert!(store
        .list_step_runs(run.id)
        .await
        .expect("steps")
        .is_empty());
}

/// A finished run is never rewritten: not by a fence naming it running, not
/// by one naming its terminal status, not by claims or cancellation.
pub async fn finished_run_is_never_rewritten<S: Store + Clone>(store: S) {
    let (_, version) = setup(&store, "final").await;
    let run = insert_queued(&store, &version).await;
    let mut owned = start(&store, run.id, "w", t0()).await;
    let mut attempt = step(&owned, 0, 1);
    attempt
        .transition(StepTransition::Succeed, at(2))
        .expect("succeed");
    store
        .commit(owned.fence(), None, std::slice::from_ref(&attempt))
        .await
        .expect("commit a step");
    let running_fence = owned.fence();
    finish(&store, &mut owned, RunTransition::Succeed).await;
    let run_before = store.get_run(run.id).await.expect("get");
    let steps_before = store.list_step_runs(run.id).await.expect("steps");

    let mut rewrite = owned.clone();
    rewrite.status = RunStatus::Failed;
    rewrite.output = Some(json!("rewritten"));
    for fence in [running_fence, owned.fence()] {
        expect_conflict(
            store.commit(fence, Some(&rewrite), &[]).await,
            &format!("rewrite a finished run fenced on {}", fence.status),
        );
        expect_conflict(
            store.commit(fence, None, &[step(&owned, 1, 1)]).await,
            &format!("add a step to a finished run fenced on {}", fence.status),
        );
    }
    expect_conflict(
        store.claim_run(run.id, "x", at(86_400), at(86_430)).await,
        "claim a finished run",
    );
    let cancelled = store.request_cancel(run.id).await.expect("request cancel");
    assert_eq!(
        cancelled, run_before,
        "cancelling a finished run changes nothing"
    );
    assert_eq!(store.get_run(run.id).await.ok(), Some(run_before));
    assert_eq!(
        store.list_step_runs(run.id).await.expect("steps"),
        steps_before
    );
}

/// A step attempt stored in a terminal status is never rewritten: the
/// commit gets `Conflict` and writes nothing else either. A running attempt
/// can be updated, and a new attempt added.
pub async fn terminal_step_attempt_is_never_rewritten<S: Store + Clone>(store: S) {
    let (_, version) = setup(&store, "steps").await;
    let run = insert_queued(&store, &version).await;
    let owned = start(&store, run.id, "w", t0()).await;
    let mut attempt = step(&owned, 0, 1);
    store
        .commit(owned.fence(), None, std::slice::from_ref(&attempt))
        .await
        .expect("commit a running attempt");
    attempt.error = Some(StepFailure {
        message: "boom".into(),
        terminal: false,
        detail: None,
    });
    attempt.retry_at = Some(at(5));
    attempt
        .transition(StepTransition::Fail, at(2))
        .expect("fail");
    store
        .commit(owned.fence(), None, std::slice::from_ref(&attempt))
        .await
        .expect("update a running attempt to failed");
    let run_before = store.get_run(run.id).await.expect("get");
    let steps_before = store.list_step_runs(run.id).await.expect("steps");
    assert_eq!(steps_before, vec![attempt.clone()]);

    let mut rewrite = attempt.clone();
    rewrite.status = StepStatus::Succeeded;
    rewrite.error = None;
    rewrite.output = Some(json!("rewritten"));
    let mut changed = owned.clone();
    changed.deadline = Some(at(999));
    expect_conflict(
        store
            .commit(
                owned.fence(),
                Some(&changed),
                &[step(&owned, 0, 2), rewrite.clone()],
            )
            .await,
        "rewrite a failed attempt",
    );
    let mut restarted = rewrite.clone();
    restarted.status = StepStatus::Running;
    restarted.id = StepRunId::new();
    expect_conflict(
        store
            .commit(owned.fence(), None, std::slice::from_ref(&restarted))
            .await,
        "rewrite a failed attempt under another step run id",
    );
    assert_eq!(store.get_run(run.id).await.ok(), Some(run_before));
    assert_eq!(
        store.list_step_runs(run.id).await.expect("steps"),
        steps_before
    );

    let retry = step(&owned, 0, 2);
    store
        .commit(owned.fence(), None, std::slice::from_ref(&retry))
        .await
        .expect("add the next attempt");
    assert_eq!(
        store.list_step_runs(run.id).await.expect("steps"),
        vec![attempt, retry]
    );
}

/// The stored `cancel_requested` flag survives a commit of a run copy that
/// predates it, while the rest of the commit is applied.
pub async fn commit_keeps_cancel_requested<S: Store + Clone>(store: S) {
    let (_, version) = setup(&store, "cancelled").await;
    let run = insert_queued(&store, &version).await;
    let mut owned = start(&store, run.id, "w", t0()).await;
    let flagged = store.request_cancel(run.id).await.expect("request cancel");
    assert!(flagged.cancel_requested);
    assert!(
        !owned.cancel_requested,
        "the owner's copy predates the request"
    );

    owned.deadline = Some(at(500));
    store
        .commit(owned.fence(), Some(&owned), &[step(&owned, 0, 1)])
        .await
        .expect("commit with an old copy");
    let stored = store.get_run(run.id).await.expect("get");
    assert!(stored.cancel_requested, "commit keeps the flag");
    assert_eq!(
        stored.deadline,
        Some(at(500)),
        "the rest of the commit applies"
    );
    assert_eq!(store.list_step_runs(run.id).await.expect("steps").len(), 1);

    finish(&store, &mut owned, RunTransition::Cancel).await;
    let stored = store.get_run(run.id).await.expect("get");
    assert!(stored.cancel_requested, "the flag outlives the run's end");
    assert_eq!(stored.status, RunStatus::Cancelled);
}

/// A commit cannot move a run to another workflow, version or event: a run
/// always points at the version it was created with.
pub async fn commit_cannot_repin_a_run<S: Store + Clone>(store: S) {
    let (_, version) = setup(&store, "pinned").await;
    let run = insert_queued(&store, &version).await;
    let owned = start(&store, run.id, "w", t0()).await;
    let mut repinned = owned.clone();
    repinned.version_id = VersionId::new();
    let mut moved = owned.clone();
    moved.workflow_id = WorkflowId::new();
    for (what, changed) in [("version", repinned), ("workflow", moved)] {
        let result = store.commit(owned.fence(), Some(&changed), &[]).await;
        assert!(
            matches!(result, Err(StoreError::Invalid(_))),
            "changing the {what} must be refused: {result:?}"
        );
    }
    assert_eq!(store.get_run(run.id).await.expect("get"), owned);
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
