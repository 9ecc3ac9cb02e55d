//! Parked runs and signals: [`RunStore::signal_run`](crate::store::RunStore::signal_run),
//! and waiting runs in `list_claimable` and `claim_run`.

use serde_json::json;

use crate::run::Signal;
use crate::store::rules;

use super::*;

/// Claims and starts a queued run for `owner` at `t0`, then parks it until
/// `wake_at` (`None`: until a signal), as a worker does. Returns the
/// owner's copy.
async fn parked<S: Store>(
    store: &S,
    version: &WorkflowVersion,
    wake_at: Option<DateTime<Utc>>,
) -> WorkflowRun {
    let run = insert_queued(store, version).await;
    let mut run = start(store, run.id, "owner", t0()).await;
    park(store, &mut run, wake_at).await;
    run
}

/// Parks a started run the caller holds the lease of.
async fn park<S: Store>(store: &S, run: &mut WorkflowRun, wake_at: Option<DateTime<Utc>>) {
    let fence = run.fence();
    run.transition(RunTransition::Park, at(1))
        .expect("a running run parks");
    run.wake_at = wake_at;
    store
        .commit(fence, Some(run), &[])
        .await
        .expect("commit the park");
}

fn signal(name: &str, payload: serde_json::Value, received_at: DateTime<Utc>) -> Signal {
    Signal::new(name, payload, received_at)
}

/// Signals are appended in the order they arrive, durably, by anyone and
/// without a lease; nothing else about the run changes, a queued run's
/// included. An unknown run is `NotFound`; a finished one is `Conflict`
/// and keeps no signal.
pub async fn signals_are_appended_without_a_lease<S: Store>(store: S) {
    let (_, version) = setup(&store, "signals").await;
    let run = insert_queued(&store, &version).await;
    let first = store
        .signal_run(run.id, &signal("approved", json!({ "by": "ada" }), at(1)))
        .await
        .expect("signal a queued run");
    assert_eq!(first.signals.len(), 1);
    let second = store
        .signal_run(run.id, &signal("approved", json!(2), at(2)))
        .await
        .expect("signal again");
    let stored = store.get_run(run.id).await.expect("get");
    assert_eq!(second, stored, "the answer is the run as stored");
    assert_eq!(
        stored.signals,
        vec![
            signal("approved", json!({ "by": "ada" }), at(1)),
            signal("approved", json!(2), at(2)),
        ]
    );
    let mut unchanged = stored.clone();
    unchanged.signals.clear();
    assert_eq!(unchanged, run, "a signal changes nothing else");

    expect_not_found(
        store
            .signal_run(RunId::new(), &signal("x", json!(null), at(1)))
            .await,
        "a signal for an unknown run",
    );

    let mut done = start(&store, run.id, "owner", at(3)).await;
    finish(&store, &mut done, RunTransition::Succeed).await;
    expect_conflict(
        store
            .signal_run(run.id, &signal("late", json!(null), at(70)))
            .await,
        "a signal for a finished run",
    );
    let finished = store.get_run(run.id).await.expect("get");
    assert_eq!(finished.signals.len(), 2, "the late signal is not kept");
}

/// A commit never drops a stored signal: the owner's copy, written as it
/// is, predates a signal sent while it runs, and the store keeps that
/// signal (and the owner keeps its lease).
pub async fn commits_keep_signals_their_writer_did_not_see<S: Store>(store: S) {
    let (_, version) = setup(&store, "keep-signals").await;
    let run = insert_queued(&store, &version).await;
    let mut owned = start(&store, run.id, "owner", t0()).await;
    let signalled = store
        .signal_run(run.id, &signal("go", json!(1), at(2)))
        .await
        .expect("signal a running run");
    assert_eq!(signalled.lease, owned.lease, "the owner keeps its lease");
    assert_eq!(signalled.lease_epoch, owned.lease_epoch);
    assert_eq!(signalled.status, RunStatus::Running);

    let fence = owned.fence();
    owned.output = Some(json!("progress"));
    assert!(owned.signals.is_empty(), "the owner's copy predates it");
    store
        .commit(fence, Some(&owned), &[step(&owned, 0, 1)])
        .await
        .expect("commit the owner's stale copy");
    let stored = store.get_run(run.id).await.expect("get");
    assert_eq!(stored.signals, vec![signal("go", json!(1), at(2))]);
    assert_eq!(stored.output, Some(json!("progress")));
    // The same commit again (a retry after a lost reply) is accepted.
    store
        .commit(fence, Some(&owned), &[step(&owned, 0, 1)])
        .await
        .expect("a retry of an applied commit succeeds");
}

/// A parked run is claimed once its `wake_at` has passed, not a moment
/// before: `list_claimable` lists it with the other claimable runs in id
/// order, and `claim_run` takes it (status unchanged, next epoch, a new
/// lease), once; its new owner wakes it with a commit fenced on `Waiting`.
pub async fn a_parked_run_is_claimable_once_due<S: Store>(store: S) {
    let (_, version) = setup(&store, "parked").await;
    let run = parked(&store, &version, Some(at(100))).await;
    let stored = store.get_run(run.id).await.expect("get");
    assert_eq!(
        (stored.status, stored.lease.as_ref(), stored.wake_at),
        (RunStatus::Waiting, None, Some(at(100)))
    );
    let later = queued(&version, at(5));
    store.insert_run(&later).await.expect("insert");

    let listed = store.list_claimable(at(99), 10).await.expect("list");
    assert_eq!(listed, vec![later.id], "not due at 99 s");
    expect_conflict(
        store.claim_run(run.id, "early", at(99), at(130)).await,
        "claiming a parked run before it is due",
    );

    let listed = store.list_claimable(at(100), 10).await.expect("list");
    assert_eq!(listed, vec![run.id, later.id], "due at 100 s, in id order");
    let mut claimed = store
        .claim_run(run.id, "next", at(100), at(130))
        .await
        .expect("claim a due parked run");
    assert_eq!(claimed.status, RunStatus::Waiting);
    assert_eq!(claimed.lease_epoch, run.lease_epoch + 1);
    assert_eq!(claimed.lease, Some(lease("next", at(130))));
    expect_conflict(
        store.claim_run(run.id, "other", at(101), at(131)).await,
        "a second claim while the lease lives",
    );
    assert_eq!(
        store.list_claimable(at(101), 10).await.expect("list"),
        vec![later.id]
    );

    let fence = claimed.fence();
    claimed
        .transition(RunTransition::Wake, at(101))
        .expect("wake");
    store
        .commit(fence, Some(&claimed), &[])
        .await
        .expect("commit the wake");
    let woken = store.get_run(run.id).await.expect("get");
    assert_eq!((woken.status, woken.wake_at), (RunStatus::Running, None));
    assert!(rules::is_claimable(
        woken.status,
        woken.lease.as_ref(),
        at(131)
    ));
}

/// A signal makes a parked run due at once: its `wake_at` becomes the
/// signal's time if that is earlier, also for a run parked until a signal
/// alone (no `wake_at`), which no time makes due.
pub async fn a_signal_makes_a_parked_run_due<S: Store>(store: S) {
    let (_, version) = setup(&store, "signalled").await;
    let forever = parked(&store, &version, None).await;
    let later = parked(&store, &version, Some(at(1_000))).await;
    assert!(
        store
            .list_claimable(at(1_000_000), 10)
            .await
            .expect("list")
            .iter()
            .all(|id| *id != forever.id),
        "a run parked until a signal is not due at any time"
    );
    for run in [&forever, &later] {
        let signalled = store
            .signal_run(run.id, &signal("go", json!(true), at(5)))
            .await
            .expect("signal a parked run");
        assert_eq!(signalled.wake_at, Some(at(5)));
        assert_eq!(signalled.status, RunStatus::Waiting);
    }
    // A later signal does not put it off.
    let again = store
        .signal_run(later.id, &signal("go", json!(false), at(9)))
        .await
        .expect("signal again");
    assert_eq!(again.wake_at, Some(at(5)));
    assert!(store
        .list_claimable(at(4), 10)
        .await
        .expect("list")
        .is_empty());
    assert_eq!(
        store.list_claimable(at(5), 10).await.expect("list"),
        vec![forever.id, later.id]
    );
    store
        .claim_run(forever.id, "next", at(5), at(35))
        .await
        .expect("claim a signalled run");
}

/// A run parked by a commit whose writer did not see a stored signal (it
/// came while the worker was parking the run) is due at once, from the
/// signal's time: the signal is not left waiting for the run's `wake_at`.
pub async fn parking_after_an_unseen_signal_leaves_the_run_due<S: Store>(store: S) {
    let (_, version) = setup(&store, "race").await;
    let run = insert_queued(&store, &version).await;
    let mut owned = start(&store, run.id, "owner", t0()).await;
    store
        .signal_run(run.id, &signal("go", json!(1), at(3)))
        .await
        .expect("signal while it runs");
    park(&store, &mut owned, Some(at(1_000))).await;
    let stored = store.get_run(run.id).await.expect("get");
    assert_eq!(stored.status, RunStatus::Waiting);
    assert_eq!(stored.signals.len(), 1);
    assert_eq!(stored.wake_at, Some(at(3)));
    assert_eq!(
        store.list_claimable(at(3), 10).await.expect("list"),
        vec![run.id]
    );

    // A writer that saw the signal parks it as it says.
    let mut claimed = store
        .claim_run(run.id, "next", at(3), at(33))
        .await
        .expect("claim");
    let fence = claimed.fence();
    claimed
        .transition(RunTransition::Wake, at(4))
        .expect("wake");
    claimed
        .transition(RunTransition::Park, at(4))
        .expect("park");
    claimed.wake_at = Some(at(1_000));
    store
        .commit(fence, Some(&claimed), &[])
        .await
        .expect("park again");
    let stored = store.get_run(run.id).await.expect("get");
    assert_eq!(stored.wake_at, Some(at(1_000)));
    assert!(store
        .list_claimable(at(999), 10)
        .await
        .expect("list")
        .is_empty());
}

/// A cancel request makes a parked run due at once, so it is cancelled
/// now, not when it would have woken.
pub async fn a_cancel_request_makes_a_parked_run_due<S: Store>(store: S) {
    let (_, version) = setup(&store, "cancel-parked").await;
    let run = parked(&store, &version, Some(at(1_000))).await;
    let asked = store.request_cancel(run.id).await.expect("request cancel");
    assert!(asked.cancel_requested);
    assert_eq!(asked.status, RunStatus::Waiting);
    assert_eq!(
        store.list_claimable(at(2), 10).await.expect("list"),
        vec![run.id]
    );
    let mut claimed = store
        .claim_run(run.id, "canceller", at(2), at(32))
        .await
        .expect("claim");
    let fence = claimed.fence();
    claimed
        .transition(RunTransition::Cancel, at(2))
        .expect("a parked run is cancelled");
    store
        .commit(fence, Some(&claimed), &[])
        .await
        .expect("commit the cancel");
    let stored = store.get_run(run.id).await.expect("get");
    assert_eq!(
        (stored.status, stored.wake_at),
        (RunStatus::Cancelled, None)
    );
    assert!(store
        .list_claimable(at(2_000), 10)
        .await
        .expect("list")
        .is_empty());
}
