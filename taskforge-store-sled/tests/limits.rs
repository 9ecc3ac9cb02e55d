//! Limits across a reopen of the sled store: the slots a key's runs hold
//! and the start times of a rate-limited workflow are the store's, so a
//! restarted process enforces them as the one before did.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use serde_json::json;
use taskforge_core::store::{RunStore, RunTransition, WorkflowStore};
use taskforge_core::{
    ConcurrencyLimit, RateLimit, RunLimits, StepDefinition, StoreError, Workflow,
    WorkflowDefinition, WorkflowRun, WorkflowVersion,
};
use taskforge_store_sled::SledStore;
use tempfile::TempDir;

fn t(secs: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(1_767_225_600 + secs, 0).expect("a valid time")
}

fn run_of(version: &WorkflowVersion, limits: RunLimits) -> WorkflowRun {
    let mut run = WorkflowRun::new(version, json!({"repo": "r"}), t(0));
    run.limits = Some(std::sync::Arc::new(limits));
    run
}

async fn claim(store: &SledStore, run: &WorkflowRun, at: i64) -> Result<WorkflowRun, StoreError> {
    store
        .claim_run(run.id, "worker", t(at), t(at) + TimeDelta::hours(1))
        .await
}

/// Claims and starts `run` (the start is durable, and carries the claim).
async fn start(store: &SledStore, run: &WorkflowRun, at: i64) -> WorkflowRun {
    let mut claimed = claim(store, run, at).await.expect("claim");
    let fence = claimed.fence();
    claimed
        .transition(RunTransition::Start, t(at))
        .expect("start");
    store
        .commit(fence, Some(&claimed), &[])
        .await
        .expect("commit the start");
    claimed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slots_and_rate_windows_survive_a_reopen() {
    let dir = TempDir::new().expect("temp dir");
    let store = SledStore::open(dir.path()).expect("open");
    let workflow = Workflow::new("limited", t(0)).expect("workflow");
    store.insert_workflow(&workflow).await.expect("insert");
    let version = WorkflowVersion::new(
        workflow.id,
        1,
        WorkflowDefinition::new(vec![StepDefinition::new("work", "work")]),
        t(0),
    );
    store.insert_version(&version).await.expect("insert");

    let keyed = RunLimits::new(
        workflow.id,
        &json!({"repo": "r"}),
        Some(&ConcurrencyLimit::per_key("/repo", 1)),
        None,
        None,
        t(0),
    )
    .expect("limits");
    let rated = RunLimits::new(
        workflow.id,
        &json!({}),
        None,
        None,
        Some(&RateLimit::new(1, Duration::from_secs(60))),
        t(0),
    )
    .expect("limits");
    let (a, b) = (run_of(&version, keyed.clone()), run_of(&version, keyed));
    let (r1, r2) = (run_of(&version, rated.clone()), run_of(&version, rated));
    for run in [&a, &b, &r1, &r2] {
        store.insert_run(run).await.expect("insert");
    }
    let mut a = start(&store, &a, 10).await;
    assert!(a.limits.as_deref().is_some_and(|l| l.holds_slot));
    start(&store, &r1, 10).await;
    drop(store);

    let store = SledStore::open(dir.path()).expect("reopen");
    assert!(
        matches!(
            claim(&store, &b, 20).await,
            Err(StoreError::Conflict { .. })
        ),
        "the key's slot is still taken after the reopen"
    );
    assert!(
        matches!(
            claim(&store, &r2, 20).await,
            Err(StoreError::Conflict { .. })
        ),
        "the rate window still holds a start after the reopen"
    );
    assert!(store
        .list_claimable(t(20), 10)
        .await
        .expect("list")
        .is_empty());
    assert_eq!(
        store.list_claimable(t(70), 10).await.expect("list"),
        vec![r2.id],
        "the rate window moved on"
    );
    claim(&store, &r2, 70).await.expect("the window allows it");

    let fence = a.fence();
    a.transition(RunTransition::Succeed, t(30))
        .expect("succeed");
    store
        .commit(fence, Some(&a), &[])
        .await
        .expect("commit the end");
    claim(&store, &b, 30)
        .await
        .expect("the finished run freed its slot");
}
