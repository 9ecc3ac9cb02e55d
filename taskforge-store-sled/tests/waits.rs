//! Parked runs and their signals survive a restart of the sled store: the
//! in-memory index of unfinished runs is rebuilt on open, parked runs
//! (and when they are due) with it.

use chrono::{DateTime, TimeDelta, Utc};
use serde_json::json;
use taskforge_core::store::{RunStore, RunTransition, WorkflowStore};
use taskforge_core::{
    RunStatus, Signal, StepDefinition, Workflow, WorkflowDefinition, WorkflowRun, WorkflowVersion,
};
use taskforge_store_sled::SledStore;

fn t0() -> DateTime<Utc> {
    DateTime::from_timestamp(1_767_225_600, 0).expect("a valid timestamp")
}

fn at(secs: i64) -> DateTime<Utc> {
    t0() + TimeDelta::seconds(secs)
}

/// A started run of a new workflow, parked until `wake_at`.
async fn parked(store: &SledStore, name: &str, wake_at: Option<DateTime<Utc>>) -> WorkflowRun {
    let workflow = Workflow::new(name, t0()).expect("workflow");
    store.insert_workflow(&workflow).await.expect("insert");
    let version = WorkflowVersion::new(
        workflow.id,
        1,
        WorkflowDefinition::new(vec![StepDefinition::wait_for_signal(
            "gate",
            "open",
            None,
            taskforge_core::OnTimeout::Fail,
        )]),
        t0(),
    );
    store.insert_version(&version).await.expect("insert");
    let run = WorkflowRun::new(&version, json!({}), t0());
    store.insert_run(&run).await.expect("insert");
    let mut run = store
        .claim_run(run.id, "owner", t0(), at(30))
        .await
        .expect("claim");
    let fence = run.fence();
    run.transition(RunTransition::Start, t0()).expect("start");
    store.commit(fence, Some(&run), &[]).await.expect("start");
    let fence = run.fence();
    run.transition(RunTransition::Park, at(1)).expect("park");
    run.wake_at = wake_at;
    store.commit(fence, Some(&run), &[]).await.expect("park");
    run
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parked_runs_and_signals_survive_a_reopen() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let store = SledStore::open(dir.path()).expect("open");
    let timed = parked(&store, "timed", Some(at(100))).await;
    let signalled = parked(&store, "signalled", None).await;
    store
        .signal_run(timed.id, &Signal::new("early", json!(1), at(2)))
        .await
        .expect("signal");
    drop(store);

    let store = SledStore::open(dir.path()).expect("reopen");
    let timed_now = store.get_run(timed.id).await.expect("get");
    assert_eq!(timed_now.status, RunStatus::Waiting);
    assert_eq!(timed_now.wake_at, Some(at(2)), "the signal made it due");
    assert_eq!(
        timed_now.signals,
        vec![Signal::new("early", json!(1), at(2))]
    );
    assert_eq!(timed_now.lease, None);
    assert_eq!(
        store.list_claimable(at(2), 10).await.expect("list"),
        vec![timed.id],
        "due after the reopen; the one waiting for a signal is not"
    );
    store
        .signal_run(signalled.id, &Signal::new("open", json!(2), at(3)))
        .await
        .expect("signal after the reopen");
    assert_eq!(
        store.list_claimable(at(3), 10).await.expect("list"),
        vec![timed.id, signalled.id]
    );
    let claimed = store
        .claim_run(signalled.id, "next", at(3), at(33))
        .await
        .expect("claim a signalled run");
    assert_eq!(claimed.status, RunStatus::Waiting);
    assert_eq!(claimed.signals.len(), 1);
}
