//! Rough throughput checks, ignored by default. Run with
//! `cargo test --release -p taskforge-store-sled --test throughput -- --ignored --nocapture`.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::Arc;
use std::time::Instant;

use chrono::{TimeDelta, Utc};
use serde_json::json;
use taskforge_core::{
    Event, EventId, EventOutcome, EventSource, EventStore, RunStore, RunTransition, StepDefinition,
    StepRun, StepTransition, Workflow, WorkflowDefinition, WorkflowRun, WorkflowStore,
    WorkflowVersion,
};
use taskforge_store_sled::{Durability, SledConfig, SledStore};
use tempfile::TempDir;

const PRODUCERS: usize = 64;

async fn setup(store: &SledStore) -> (Arc<Workflow>, Arc<WorkflowVersion>) {
    let wf = Workflow::new(
        format!("bench-{}", taskforge_core::WorkflowId::new()),
        Utc::now(),
    )
    .expect("workflow");
    store.insert_workflow(&wf).await.expect("insert");
    let version = WorkflowVersion::new(
        wf.id,
        1,
        WorkflowDefinition::new(vec![StepDefinition::new("a", "a")]),
        Utc::now(),
    );
    store.insert_version(&version).await.expect("version");
    (Arc::new(wf), Arc::new(version))
}

fn store(dir: &TempDir, durability: Durability) -> SledStore {
    let config = SledConfig {
        durability,
        ..SledConfig::default()
    };
    SledStore::open_with(dir.path().join(format!("{durability:?}")), config).expect("open")
}

/// Appends of 200 bytes, each followed by fdatasync, from one writer.
fn fdatasync_baseline(dir: &TempDir, n: usize) -> f64 {
    let mut file = std::fs::File::create(dir.path().join("log")).expect("file");
    let record = [7u8; 200];
    let start = Instant::now();
    for _ in 0..n {
        file.write_all(&record).expect("write");
        file.sync_data().expect("fdatasync");
    }
    n as f64 / start.elapsed().as_secs_f64()
}

/// Events with their runs, from 64 producers; returns inserts per second.
async fn events(store: &SledStore, per_producer: usize) -> f64 {
    let (wf, version) = setup(store).await;
    let start = Instant::now();
    let mut tasks = Vec::new();
    for p in 0..PRODUCERS {
        let (store, wf, version) = (store.clone(), Arc::clone(&wf), Arc::clone(&version));
        tasks.push(tokio::spawn(async move {
            for i in 0..per_producer {
                let mut run = WorkflowRun::new(&version, json!({ "i": i }), Utc::now());
                let event = Event {
                    id: EventId::new(),
                    workflow_id: wf.id,
                    trigger_id: None,
                    source: EventSource::Webhook,
                    received_at: Utc::now(),
                    dedup_key: Some(format!("{p}-{i}")),
                    payload: json!({ "producer": p, "i": i }),
                    metadata: BTreeMap::new(),
                    outcome: EventOutcome::RunStarted { run_id: run.id },
                };
                run.event_id = Some(event.id);
                store
                    .insert_event(&event, Some(&run))
                    .await
                    .expect("insert");
            }
        }));
    }
    for task in tasks {
        task.await.expect("task");
    }
    (PRODUCERS * per_producer) as f64 / start.elapsed().as_secs_f64()
}

/// Step attempts (a start and an end commit each) from 64 workers, each
/// on its own run; returns commits per second.
async fn commits(store: &SledStore, steps: u32) -> f64 {
    let (_, version) = setup(store).await;
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..PRODUCERS {
        let (store, version) = (store.clone(), Arc::clone(&version));
        tasks.push(tokio::spawn(async move {
            let now = Utc::now();
            let run = WorkflowRun::new(&version, json!(null), now);
            store.insert_run(&run).await.expect("run");
            let mut run = store
                .claim_run(run.id, "w", now, now + TimeDelta::seconds(60))
                .await
                .expect("claim");
            let fence = run.fence();
            run.transition(RunTransition::Start, now).expect("start");
            store.commit(fence, Some(&run), &[]).await.expect("commit");
            for attempt in 1..=steps {
                let mut step = StepRun::start(run.id, "a", 0, attempt, Utc::now());
                store
                    .commit(run.fence(), None, std::slice::from_ref(&step))
                    .await
                    .expect("step start");
                step.output = Some(json!({ "ok": attempt }));
                step.transition(StepTransition::Fail, Utc::now())
                    .expect("end");
                store
                    .commit(run.fence(), None, std::slice::from_ref(&step))
                    .await
                    .expect("step end");
            }
        }));
    }
    for task in tasks {
        task.await.expect("task");
    }
    (PRODUCERS * steps as usize * 2) as f64 / start.elapsed().as_secs_f64()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "a benchmark"]
async fn durable_throughput() {
    let dir = TempDir::new().expect("tempdir");
    let baseline = fdatasync_baseline(&dir, 500);
    println!("baseline append+fdatasync: {baseline:.0}/s");
    for durability in [Durability::Relaxed, Durability::Durable] {
        let store = store(&dir, durability);
        let events = events(&store, 400).await;
        println!("{durability:?}: event+run inserts, {PRODUCERS} producers: {events:.0}/s");
        let commits = commits(&store, 100).await;
        println!(
            "{durability:?}: step commits, {PRODUCERS} workers: {commits:.0}/s ({:.1}x baseline)",
            commits / baseline
        );
    }
}

#[tokio::test(flavor = "current_thread")]
#[ignore = "a benchmark"]
async fn relaxed_single_writer_event_cost() {
    let dir = TempDir::new().expect("tempdir");
    let store = store(&dir, Durability::Relaxed);
    let (wf, version) = setup(&store).await;
    let n = 20_000;
    let start = Instant::now();
    for i in 0..n {
        let mut run = WorkflowRun::new(&version, json!({ "i": i }), Utc::now());
        let event = Event {
            id: EventId::new(),
            workflow_id: wf.id,
            trigger_id: None,
            source: EventSource::Webhook,
            received_at: Utc::now(),
            dedup_key: Some(format!("k-{i}")),
            payload: json!({ "i": i }),
            metadata: BTreeMap::new(),
            outcome: EventOutcome::RunStarted { run_id: run.id },
        };
        run.event_id = Some(event.id);
        store
            .insert_event(&event, Some(&run))
            .await
            .expect("insert");
    }
    let per = start.elapsed().as_secs_f64() / f64::from(n) * 1e6;
    println!("relaxed single writer: {per:.1} us per event+run insert");
}
