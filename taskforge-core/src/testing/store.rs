//! The store conformance suite: one case per clause of the `# Contract`s of
//! [`WorkflowStore`](crate::store::WorkflowStore), [`EventStore`](crate::store::EventStore)
//! and [`RunStore`](crate::store::RunStore).
//!
//! Each case is an `async fn(store)` that panics when the store breaks the
//! contract. Each takes a fresh, empty store; cases that race spawn tasks
//! on the current tokio runtime, so run them on a multi-threaded one (as
//! [`store_conformance!`](crate::store_conformance) does).
//!
//! Where the contract is silent, the suite checks only what every sensible
//! backend does, with one exception spelled out in
//! [`concurrent_claims_have_one_winner`]: a claimed run that is still queued
//! is not claimable again while its lease is live.

mod claims;
mod commits;
mod events;
mod hardening;
mod limits;
mod listing;
mod logs;
mod runs;
mod secrets;
mod tokens;
mod waits;
mod workflows;

use std::fmt::Debug;
use std::future::Future;
use std::sync::Arc;

use chrono::{DateTime, TimeDelta, Utc};
use serde_json::json;
use tokio::sync::Barrier;

use crate::error::StoreError;
use crate::event::{Event, EventOutcome, EventSource};
use crate::id::{EventId, RunId};
use crate::run::{Lease, RunStatus, RunTransition, StepRun, WorkflowRun};
use crate::store::Store;
use crate::workflow::{StepDefinition, Workflow, WorkflowDefinition, WorkflowVersion};

pub use claims::*;
pub use commits::*;
pub use events::*;
pub use hardening::*;
pub use limits::*;
pub use listing::*;
pub use logs::*;
pub use runs::*;
pub use secrets::*;
pub use tokens::*;
pub use waits::*;
pub use workflows::*;

/// A fixed instant, so that cases control time without a clock.
fn t0() -> DateTime<Utc> {
    DateTime::from_timestamp(1_704_067_200, 0).expect("2024-01-01 is a valid timestamp")
}

/// `t0` plus `secs` seconds.
fn at(secs: i64) -> DateTime<Utc> {
    t0() + TimeDelta::seconds(secs)
}

fn definition(handler: &str) -> WorkflowDefinition {
    WorkflowDefinition::new(vec![StepDefinition::new("only", handler)])
}

async fn new_workflow<S: Store>(store: &S, name: &str) -> Workflow {
    let workflow = Workflow::new(name, t0()).expect("a valid workflow name");
    store
        .insert_workflow(&workflow)
        .await
        .expect("insert a workflow");
    workflow
}

/// Publishes the next version of `workflow`.
async fn publish<S: Store>(store: &S, workflow: &Workflow) -> WorkflowVersion {
    let number = store
        .latest_version(workflow.id)
        .await
        .expect("latest version")
        .map_or(1, |v| v.number + 1);
    let version = WorkflowVersion::new(workflow.id, number, definition("noop"), t0());
    store
        .insert_version(&version)
        .await
        .expect("publish a version");
    version
}

/// A workflow named `name` with one published version.
async fn setup<S: Store>(store: &S, name: &str) -> (Workflow, WorkflowVersion) {
    let workflow = new_workflow(store, name).await;
    let version = publish(store, &workflow).await;
    (workflow, version)
}

fn queued(version: &WorkflowVersion, created_at: DateTime<Utc>) -> WorkflowRun {
    WorkflowRun::new(version, json!({"input": "value"}), created_at)
}

/// A run record in `status`, with `lease`, as a store might hold it.
fn run_in(
    version: &WorkflowVersion,
    status: RunStatus,
    lease: Option<Lease>,
    created_at: DateTime<Utc>,
) -> WorkflowRun {
    let mut run = queued(version, created_at);
    run.status = status;
    if status != RunStatus::Queued {
        run.started_at = Some(created_at);
        run.lease_epoch = 1;
    }
    if status.is_terminal() {
        run.finished_at = Some(created_at);
    }
    run.lease = lease;
    run
}

fn lease(owner: &str, expires_at: DateTime<Utc>) -> Lease {
    Lease {
        owner: owner.to_owned(),
        expires_at,
    }
}

async fn insert_queued<S: Store>(store: &S, version: &WorkflowVersion) -> WorkflowRun {
    let run = queued(version, t0());
    store.insert_run(&run).await.expect("insert a run");
    run
}

/// Claims the run for `owner` at `now` with a 30 s lease and commits `Start`,
/// as an engine does. Returns the owner's copy of the run.
async fn start<S: Store>(store: &S, id: RunId, owner: &str, now: DateTime<Utc>) -> WorkflowRun {
    let mut run = store
        .claim_run(id, owner, now, now + TimeDelta::seconds(30))
        .await
        .expect("claim a queued run");
    let fence = run.fence();
    run.transition(RunTransition::Start, now)
        .expect("start a queued run");
    store
        .commit(fence, Some(&run), &[])
        .await
        .expect("commit the start");
    run
}

/// Commits a transition of a run the caller holds the lease of.
async fn finish<S: Store>(store: &S, run: &mut WorkflowRun, transition: RunTransition) {
    let fence = run.fence();
    run.transition(transition, at(60))
        .expect("a legal transition");
    store
        .commit(fence, Some(run), &[])
        .await
        .expect("commit the transition");
}

fn event(
    workflow: &Workflow,
    dedup_key: Option<&str>,
    outcome: EventOutcome,
    received_at: DateTime<Utc>,
) -> Event {
    Event {
        id: EventId::new(),
        workflow_id: workflow.id,
        trigger_id: None,
        source: EventSource::Webhook,
        received_at,
        dedup_key: dedup_key.map(str::to_owned),
        payload: json!({"delivery": dedup_key}).into(),
        metadata: [("content-type".to_owned(), "application/json".to_owned())].into(),
        outcome,
    }
}

/// An event of `run`'s workflow that started it.
fn event_starting(workflow: &Workflow, dedup_key: Option<&str>, run: &mut WorkflowRun) -> Event {
    let event = event(
        workflow,
        dedup_key,
        EventOutcome::RunStarted { run_id: run.id },
        run.created_at,
    );
    run.event_id = Some(event.id);
    event
}

fn step(run: &WorkflowRun, index: u32, attempt: u32) -> StepRun {
    StepRun::start(run.id, format!("step-{index}"), index, attempt, at(1))
}

#[track_caller]
fn expect_conflict<T: Debug>(result: Result<T, StoreError>, what: &str) {
    match result {
        Err(StoreError::Conflict { .. }) => {}
        other => panic!("{what}: expected a conflict, got {other:?}"),
    }
}

#[track_caller]
fn expect_not_found<T: Debug>(result: Result<T, StoreError>, what: &str) {
    match result {
        Err(StoreError::NotFound { .. }) => {}
        other => panic!("{what}: expected not found, got {other:?}"),
    }
}

#[track_caller]
fn expect_already_exists<T: Debug>(result: Result<T, StoreError>, what: &str) {
    match result {
        Err(StoreError::AlreadyExists { .. }) => {}
        other => panic!("{what}: expected already exists, got {other:?}"),
    }
}

/// Runs `n` tasks at once, each `task(store clone, its index)`, released
/// together by a barrier so they really race; returns their results in index
/// order.
async fn race<S, F, Fut, T>(store: &S, n: usize, task: F) -> Vec<T>
where
    S: Store + Clone,
    F: Fn(S, usize) -> Fut,
    Fut: Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let barrier = Arc::new(Barrier::new(n));
    let handles: Vec<_> = (0..n)
        .map(|i| {
            let work = task(store.clone(), i);
            let barrier = Arc::clone(&barrier);
            tokio::spawn(async move {
                barrier.wait().await;
                work.await
            })
        })
        .collect();
    let mut results = Vec::with_capacity(n);
    for handle in handles {
        results.push(handle.await.expect("a racing task panicked"));
    }
    results
}
