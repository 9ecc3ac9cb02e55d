//! Cases for fenced commits of [`RunStore`](crate::store::RunStore): what a
//! commit writes, stale fences, finished runs and terminal step attempts
//! that are never rewritten, and fields a commit cannot change.

use crate::id::{StepRunId, VersionId, WorkflowId};
use crate::run::{Fence, StepFailure, StepStatus, StepTransition};

use super::*;

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
