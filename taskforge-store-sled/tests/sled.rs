//! Focused tests of the sled backend: persistence across reopen, group
//! commit under concurrency, atomicity, open errors and retention.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use serde_json::json;
use taskforge_core::store::{
    EventInsert, EventStore, Lease, RunStore, RunStoreExt, RunTransition, StepTransition,
    WorkflowStore,
};
use taskforge_core::{
    Event, EventOutcome, EventQuery, EventSource, Order, RunQuery, RunStatus, StepDefinition,
    StepRun, StoreError, Trigger, TriggerKind, Workflow, WorkflowDefinition, WorkflowRun,
    WorkflowVersion,
};
use taskforge_store_sled::{Durability, OpenError, SledConfig, SledStore, FORMAT_VERSION};
use tempfile::TempDir;

fn now() -> DateTime<Utc> {
    Utc::now()
}

async fn workflow(store: &SledStore, name: &str) -> (Workflow, WorkflowVersion) {
    let wf = Workflow::new(name, now()).expect("workflow");
    store.insert_workflow(&wf).await.expect("insert workflow");
    let version = WorkflowVersion::new(
        wf.id,
        1,
        WorkflowDefinition::new(vec![
            StepDefinition::new("build", "build"),
            StepDefinition::new("deploy", "deploy"),
        ]),
        now(),
    );
    store
        .insert_version(&version)
        .await
        .expect("insert version");
    (wf, version)
}

fn event(wf: &Workflow, dedup: Option<&str>, received_at: DateTime<Utc>) -> Event {
    Event {
        id: taskforge_core::EventId::new(),
        workflow_id: wf.id,
        trigger_id: None,
        source: EventSource::Manual,
        received_at,
        dedup_key: dedup.map(str::to_owned),
        payload: json!({ "n": 1 }).into(),
        metadata: BTreeMap::new(),
        outcome: EventOutcome::Skipped {
            reason: "test".into(),
        },
    }
}

/// An event and the queued run it starts.
fn event_with_run(
    wf: &Workflow,
    version: &WorkflowVersion,
    dedup: Option<&str>,
    at: DateTime<Utc>,
) -> (Event, WorkflowRun) {
    let mut run = WorkflowRun::new(version, json!({ "input": true }), at);
    let mut event = event(wf, dedup, at);
    event.outcome = EventOutcome::RunStarted { run_id: run.id };
    run.event_id = Some(event.id);
    (event, run)
}

fn open(dir: &TempDir) -> SledStore {
    SledStore::open(dir.path()).expect("open store")
}

/// Claims and starts a run, returning it as the lease holder sees it.
async fn start(store: &SledStore, run: &WorkflowRun) -> WorkflowRun {
    let t = now();
    let mut claimed = store
        .claim_run(run.id, "worker-1", t, t + TimeDelta::seconds(30))
        .await
        .expect("claim");
    let fence = claimed.fence();
    claimed
        .transition(RunTransition::Start, t)
        .expect("start transition");
    store
        .commit(fence, Some(&claimed), &[])
        .await
        .expect("commit start");
    claimed
}

#[tokio::test]
async fn reopen_keeps_everything() {
    let dir = TempDir::new().expect("tempdir");
    let store = open(&dir);
    let (wf, v1) = workflow(&store, "release").await;
    let v2 = WorkflowVersion::new(wf.id, 2, v1.definition.clone(), now());
    store.insert_version(&v2).await.expect("v2");
    let trigger = Trigger::new(wf.id, TriggerKind::Manual, now());
    store.insert_trigger(&trigger).await.expect("trigger");
    let (ev, run) = event_with_run(&wf, &v2, Some("delivery-1"), now());
    assert_eq!(
        store.insert_event(&ev, Some(&run)).await.expect("event"),
        EventInsert::Inserted
    );
    let running = start(&store, &run).await;
    let mut step = StepRun::start(run.id, "build", 0, 1, now());
    store
        .commit(running.fence(), None, std::slice::from_ref(&step))
        .await
        .expect("step start");
    step.output = Some(json!({ "artifact": "api" }));
    step.transition(StepTransition::Succeed, now())
        .expect("succeed");
    store
        .commit(running.fence(), None, std::slice::from_ref(&step))
        .await
        .expect("step end");
    drop(store);

    let store = open(&dir);
    assert_eq!(store.get_workflow(wf.id).await.expect("wf"), wf);
    assert_eq!(
        store.find_workflow("release").await.expect("find"),
        Some(wf.clone())
    );
    assert_eq!(
        store.list_versions(wf.id).await.expect("versions"),
        vec![v1.clone(), v2.clone()]
    );
    assert_eq!(
        store.latest_version(wf.id).await.expect("latest"),
        Some(v2.clone())
    );
    assert_eq!(store.get_version_by_number(wf.id, 1).await.expect("v1"), v1);
    assert_eq!(
        store.list_triggers(Some(wf.id)).await.expect("triggers"),
        vec![trigger]
    );
    assert_eq!(store.get_event(ev.id).await.expect("event"), ev);
    let (stored, steps) = store.get_run_with_steps(run.id).await.expect("run");
    assert_eq!(stored, running);
    assert_eq!(steps, vec![step]);
    let by_status = store
        .list_runs(&RunQuery {
            status: Some(RunStatus::Running),
            ..RunQuery::default()
        })
        .await
        .expect("list");
    assert_eq!(by_status.items, vec![running.clone()]);

    // The dedup key still dedups, and the next version number is still 3.
    let (again, again_run) = event_with_run(&wf, &v2, Some("delivery-1"), now());
    match store
        .insert_event(&again, Some(&again_run))
        .await
        .expect("dup")
    {
        EventInsert::Duplicate(original) => assert_eq!(*original, ev),
        other => panic!("expected a duplicate, got {other:?}"),
    }
    assert!(store
        .get_run(again_run.id)
        .await
        .expect_err("no run")
        .is_not_found());
    let v2_again = WorkflowVersion::new(wf.id, 2, v1.definition.clone(), now());
    assert!(store
        .insert_version(&v2_again)
        .await
        .expect_err("taken")
        .is_conflict());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixty_four_concurrent_durable_writers_all_complete() {
    let dir = TempDir::new().expect("tempdir");
    let store = open(&dir);
    let (wf, version) = workflow(&store, "load").await;
    let wf = Arc::new(wf);
    let version = Arc::new(version);
    let mut tasks = Vec::new();
    for writer in 0..64 {
        let (store, wf, version) = (store.clone(), Arc::clone(&wf), Arc::clone(&version));
        tasks.push(tokio::spawn(async move {
            for i in 0..20 {
                let key = format!("{writer}-{i}");
                let (ev, run) = event_with_run(&wf, &version, Some(&key), now());
                let inserted = store.insert_event(&ev, Some(&run)).await.expect("insert");
                assert_eq!(inserted, EventInsert::Inserted);
            }
        }));
    }
    let all = futures_join(tasks);
    tokio::time::timeout(Duration::from_secs(60), all)
        .await
        .expect("writers finished: no deadlock");
    drop(store);
    let store = open(&dir);
    let runs = store
        .list_all_runs(&RunQuery {
            workflow_id: Some(wf.id),
            limit: 1000,
            ..RunQuery::default()
        })
        .await
        .expect("runs");
    assert_eq!(runs.len(), 64 * 20);
}

async fn futures_join(tasks: Vec<tokio::task::JoinHandle<()>>) {
    for task in tasks {
        task.await.expect("writer task");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_dedup_and_claims_have_one_winner() {
    let store = SledStore::temporary().expect("temporary");
    let (wf, version) = workflow(&store, "races").await;
    let mut tasks = Vec::new();
    for _ in 0..32 {
        let (store, wf, version) = (store.clone(), wf.clone(), version.clone());
        tasks.push(tokio::spawn(async move {
            let (ev, run) = event_with_run(&wf, &version, Some("same"), now());
            store.insert_event(&ev, Some(&run)).await.expect("insert")
        }));
    }
    let mut inserted = 0;
    for task in tasks {
        if task.await.expect("task") == EventInsert::Inserted {
            inserted += 1;
        }
    }
    assert_eq!(inserted, 1);

    let run = WorkflowRun::new(&version, json!(null), now());
    store.insert_run(&run).await.expect("run");
    let mut claims = Vec::new();
    for worker in 0..16 {
        let store = store.clone();
        claims.push(tokio::spawn(async move {
            let t = now();
            store
                .claim_run(run.id, &format!("w{worker}"), t, t + TimeDelta::seconds(30))
                .await
        }));
    }
    let mut winners = 0;
    for claim in claims {
        match claim.await.expect("task") {
            Ok(claimed) => {
                assert_eq!(claimed.lease_epoch, 1);
                winners += 1;
            }
            Err(e) => assert!(e.is_conflict(), "{e}"),
        }
    }
    assert_eq!(winners, 1);
    let stored = store.get_run(run.id).await.expect("run");
    assert_eq!(stored.lease_epoch, 1);
}

#[tokio::test]
async fn failed_writes_leave_nothing_behind() {
    let store = SledStore::temporary().expect("temporary");
    let (wf, version) = workflow(&store, "atomic").await;

    // An event whose run id is taken: neither is written.
    let (ev, run) = event_with_run(&wf, &version, Some("k"), now());
    store.insert_run(&run).await.expect("run");
    let err = store
        .insert_event(&ev, Some(&run))
        .await
        .expect_err("run id taken");
    assert!(matches!(err, StoreError::AlreadyExists { kind: "run", .. }));
    assert!(store
        .get_event(ev.id)
        .await
        .expect_err("absent")
        .is_not_found());
    assert_eq!(
        store
            .find_event_by_dedup_key(wf.id, "k")
            .await
            .expect("find"),
        None
    );

    // A commit with one finished step: no step and no run change is written.
    let running = start(&store, &run).await;
    let mut done = StepRun::start(run.id, "build", 0, 1, now());
    done.transition(StepTransition::Fail, now()).expect("fail");
    store
        .commit(running.fence(), None, std::slice::from_ref(&done))
        .await
        .expect("commit");
    let mut rewrite = done.clone();
    rewrite.status = taskforge_core::StepStatus::Running;
    let fresh = StepRun::start(run.id, "deploy", 1, 1, now());
    let mut finished = running.clone();
    finished
        .transition(RunTransition::Succeed, now())
        .expect("succeed");
    let err = store
        .commit(running.fence(), Some(&finished), &[fresh.clone(), rewrite])
        .await
        .expect_err("finished step");
    assert!(err.is_conflict(), "{err}");
    let (stored, steps) = store.get_run_with_steps(run.id).await.expect("run");
    assert_eq!(stored.status, RunStatus::Running);
    assert_eq!(steps, vec![done.clone()]);

    // A stale fence: nothing written.
    let mut stale = running.fence();
    stale.epoch += 1;
    let err = store
        .commit(stale, Some(&finished), std::slice::from_ref(&fresh))
        .await
        .expect_err("stale");
    assert!(err.is_conflict());
    assert_eq!(
        store.list_step_runs(run.id).await.expect("steps"),
        vec![done]
    );

    // The right fence wins, then the run is immutable.
    store
        .commit(running.fence(), Some(&finished), &[fresh])
        .await
        .expect("commit");
    let err = store
        .commit(finished.fence(), Some(&finished), &[])
        .await
        .expect_err("terminal");
    assert!(err.is_conflict());
    let status = store
        .list_runs(&RunQuery {
            workflow_id: Some(wf.id),
            status: Some(RunStatus::Running),
            ..RunQuery::default()
        })
        .await
        .expect("list");
    assert!(status.items.is_empty(), "the status index was updated");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn failing_writes_batched_with_others_change_nothing() {
    let store = SledStore::temporary().expect("temporary");
    let (wf, version) = workflow(&store, "batched").await;
    let taken = WorkflowRun::new(&version, json!("taken"), now());
    store.insert_run(&taken).await.expect("taken");
    let mut tasks = Vec::new();
    for i in 0..64 {
        let (store, wf, version, taken) =
            (store.clone(), wf.clone(), version.clone(), taken.clone());
        tasks.push(tokio::spawn(async move {
            let (ev, mut run) = event_with_run(&wf, &version, Some(&format!("k{i}")), now());
            if i % 2 == 1 {
                // Its run id is taken: neither the event nor the run lands.
                run.id = taken.id;
                let err = store
                    .insert_event(&ev, Some(&run))
                    .await
                    .expect_err("taken run id");
                assert!(matches!(err, StoreError::AlreadyExists { kind: "run", .. }));
                assert!(store
                    .get_event(ev.id)
                    .await
                    .expect_err("absent")
                    .is_not_found());
                false
            } else {
                store.insert_event(&ev, Some(&run)).await.expect("insert");
                true
            }
        }));
    }
    let mut inserted = 0;
    for task in tasks {
        if task.await.expect("task") {
            inserted += 1;
        }
    }
    let events = store
        .list_events(&EventQuery {
            workflow_id: Some(wf.id),
            ..EventQuery::default()
        })
        .await
        .expect("events");
    assert_eq!(events.items.len(), inserted);
    let runs = store
        .list_all_runs(&RunQuery {
            workflow_id: Some(wf.id),
            ..RunQuery::default()
        })
        .await
        .expect("runs");
    assert_eq!(runs.len(), inserted + 1);
    assert_eq!(store.get_run(taken.id).await.expect("taken"), taken);
}

#[tokio::test]
async fn cancel_flag_survives_a_commit_that_lacks_it() {
    let store = SledStore::temporary().expect("temporary");
    let (_, version) = workflow(&store, "cancel").await;
    let run = WorkflowRun::new(&version, json!(null), now());
    store.insert_run(&run).await.expect("run");
    let running = start(&store, &run).await;
    assert!(
        store
            .request_cancel(run.id)
            .await
            .expect("cancel")
            .cancel_requested
    );
    store
        .commit(running.fence(), Some(&running), &[])
        .await
        .expect("commit");
    assert!(store.get_run(run.id).await.expect("run").cancel_requested);
    let renewed = store
        .renew_lease(run.id, running.lease_epoch, now() + TimeDelta::seconds(60))
        .await
        .expect("renew");
    assert!(renewed.cancel_requested);
    let err = store
        .renew_lease(run.id, running.lease_epoch + 1, now())
        .await
        .expect_err("stale epoch");
    assert!(err.is_conflict());
}

#[tokio::test]
async fn listings_use_indexes_and_page_exactly_once() {
    let store = SledStore::temporary().expect("temporary");
    let (a, va) = workflow(&store, "a").await;
    let (b, vb) = workflow(&store, "b").await;
    let base = now() - TimeDelta::hours(10);
    let mut a_runs = Vec::new();
    for i in 0..25 {
        let at = base + TimeDelta::minutes(i);
        let (ev, run) = event_with_run(&a, &va, None, at);
        store.insert_event(&ev, Some(&run)).await.expect("a");
        a_runs.push(run.id);
        let (ev, run) = event_with_run(&b, &vb, None, at);
        store.insert_event(&ev, Some(&run)).await.expect("b");
    }
    for order in [Order::OldestFirst, Order::NewestFirst] {
        let mut query = RunQuery {
            workflow_id: Some(a.id),
            order,
            limit: 7,
            ..RunQuery::default()
        };
        let mut seen = Vec::new();
        loop {
            let page = store.list_runs(&query).await.expect("page");
            assert!(page.items.len() <= 7);
            seen.extend(page.items.iter().map(|r| r.id));
            match page.next {
                Some(next) => query.after = Some(next),
                None => break,
            }
        }
        let mut expected = a_runs.clone();
        if order == Order::NewestFirst {
            expected.reverse();
        }
        assert_eq!(seen, expected);
    }
    // By time only: runs created in [base + 5min, base + 10min).
    let window = store
        .list_all_runs(&RunQuery {
            created_from: Some(base + TimeDelta::minutes(5)),
            created_until: Some(base + TimeDelta::minutes(10)),
            limit: 3,
            ..RunQuery::default()
        })
        .await
        .expect("window");
    assert_eq!(window.len(), 10);
    let events = store
        .list_events(&EventQuery {
            workflow_id: Some(b.id),
            received_from: Some(base + TimeDelta::minutes(20)),
            ..EventQuery::default()
        })
        .await
        .expect("events");
    assert_eq!(events.items.len(), 5);
    assert!(events.items.iter().all(|e| e.workflow_id == b.id));
}

#[tokio::test]
async fn claimable_runs_are_queued_or_lapsed() {
    let store = SledStore::temporary().expect("temporary");
    let (_, version) = workflow(&store, "claims").await;
    let t = now();
    let queued = WorkflowRun::new(&version, json!(1), t);
    let mut lapsed = WorkflowRun::new(&version, json!(2), t);
    lapsed.status = RunStatus::Running;
    lapsed.lease = Some(Lease {
        owner: "gone".into(),
        expires_at: t - TimeDelta::seconds(1),
    });
    let mut held = WorkflowRun::new(&version, json!(3), t);
    held.status = RunStatus::Running;
    held.lease = Some(Lease {
        owner: "alive".into(),
        expires_at: t + TimeDelta::seconds(60),
    });
    let mut finished = WorkflowRun::new(&version, json!(4), t);
    finished.status = RunStatus::Succeeded;
    finished.finished_at = Some(t);
    for run in [&queued, &lapsed, &held, &finished] {
        store.insert_run(run).await.expect("insert");
    }
    assert_eq!(
        store.list_claimable(t, 10).await.expect("claimable"),
        vec![queued.id, lapsed.id]
    );
    assert_eq!(
        store.list_claimable(t, 1).await.expect("claimable"),
        vec![queued.id]
    );
    assert_eq!(
        store
            .list_claimable(t + TimeDelta::seconds(60), 10)
            .await
            .expect("claimable"),
        vec![queued.id, lapsed.id, held.id]
    );
    let err = store
        .claim_run(held.id, "thief", t, t + TimeDelta::seconds(5))
        .await
        .expect_err("held");
    assert!(err.is_conflict());
    let claimed = store
        .claim_run(lapsed.id, "new", t, t + TimeDelta::seconds(5))
        .await
        .expect("lapsed");
    assert_eq!(claimed.lease_epoch, 1);
    assert_eq!(
        store.list_claimable(t, 10).await.expect("claimable"),
        vec![queued.id]
    );
}

#[tokio::test]
async fn prune_removes_old_finished_runs_and_unreferenced_events() {
    let store = SledStore::temporary().expect("temporary");
    let (wf, version) = workflow(&store, "retention").await;
    let old = now() - TimeDelta::days(30);
    let cutoff = now() - TimeDelta::days(7);

    // An old event whose run finished long ago: both go, with the steps.
    let (old_ev, old_run) = event_with_run(&wf, &version, Some("old"), old);
    store
        .insert_event(&old_ev, Some(&old_run))
        .await
        .expect("old");
    let running = start(&store, &old_run).await;
    let mut steps = Vec::new();
    for (index, key) in ["build", "deploy"].iter().enumerate() {
        let mut step = StepRun::start(old_run.id, *key, index as u32, 1, old);
        step.transition(StepTransition::Succeed, old)
            .expect("succeed");
        steps.push(step);
    }
    let mut done = running.clone();
    done.transition(RunTransition::Succeed, old).expect("done");
    store
        .commit(running.fence(), Some(&done), &steps)
        .await
        .expect("finish");

    // An old event whose run is still running: both stay.
    let (live_ev, live_run) = event_with_run(&wf, &version, Some("live"), old);
    store
        .insert_event(&live_ev, Some(&live_run))
        .await
        .expect("live");
    start(&store, &live_run).await;

    // An old event that started nothing: it goes.
    let lone = event(&wf, Some("lone"), old);
    store.insert_event(&lone, None).await.expect("lone");
    // A recent event and run: they stay.
    let (new_ev, new_run) = event_with_run(&wf, &version, Some("new"), now());
    store
        .insert_event(&new_ev, Some(&new_run))
        .await
        .expect("new");

    let size_before = store.size_on_disk().expect("size");
    assert!(size_before > 0);
    let report = store.prune(cutoff).await.expect("prune");
    assert_eq!(report.runs, 1);
    assert_eq!(report.step_runs, 2);
    assert_eq!(report.events, 2);

    assert!(store
        .get_run(old_run.id)
        .await
        .expect_err("pruned")
        .is_not_found());
    assert!(store
        .list_step_runs(old_run.id)
        .await
        .expect("steps")
        .is_empty());
    assert!(store
        .get_event(old_ev.id)
        .await
        .expect_err("pruned")
        .is_not_found());
    assert!(store
        .get_event(lone.id)
        .await
        .expect_err("pruned")
        .is_not_found());
    assert_eq!(store.get_event(live_ev.id).await.expect("kept"), live_ev);
    assert_eq!(
        store.get_run(live_run.id).await.expect("kept").id,
        live_run.id
    );
    assert_eq!(store.get_event(new_ev.id).await.expect("kept"), new_ev);
    let finished = store
        .list_runs(&RunQuery {
            status: Some(RunStatus::Succeeded),
            ..RunQuery::default()
        })
        .await
        .expect("list");
    assert!(finished.items.is_empty(), "index entries removed");
    let events = store
        .list_events(&EventQuery {
            workflow_id: Some(wf.id),
            ..EventQuery::default()
        })
        .await
        .expect("events");
    assert_eq!(events.items.len(), 2);
    // The pruned event's dedup key is free again; the kept one's is not.
    assert_eq!(
        store
            .find_event_by_dedup_key(wf.id, "old")
            .await
            .expect("find"),
        None
    );
    assert!(store
        .find_event_by_dedup_key(wf.id, "live")
        .await
        .expect("find")
        .is_some());
    // A second prune finds nothing more.
    assert_eq!(
        store.prune(cutoff).await.expect("prune"),
        taskforge_store_sled::PruneReport::default()
    );
}

#[tokio::test]
async fn relaxed_durability_still_persists_on_close() {
    let dir = TempDir::new().expect("tempdir");
    let config = SledConfig {
        durability: Durability::Relaxed,
        ..SledConfig::default()
    };
    let store = SledStore::open_with(dir.path(), config.clone()).expect("open");
    let (wf, _) = workflow(&store, "relaxed").await;
    drop(store);
    let store = SledStore::open_with(dir.path(), config).expect("reopen");
    assert_eq!(store.get_workflow(wf.id).await.expect("wf"), wf);
}

/// Opens a database with plain sled, waiting for the lock of a store
/// closed a moment ago (sled's background writes may still hold it).
fn plain_sled(path: &std::path::Path) -> sled::Db {
    let start = std::time::Instant::now();
    loop {
        match sled::open(path) {
            Ok(db) => return db,
            Err(e) if start.elapsed() < Duration::from_secs(5) => {
                eprintln!("retrying plain sled open: {e}");
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("plain sled: {e}"),
        }
    }
}

/// Deterministic pseudo-random bytes (xorshift), so failures reproduce.
fn garbage(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.max(1);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

#[test]
fn garbage_files_are_corrupt_or_foreign_never_a_panic() {
    for seed in 1..=8 {
        let dir = TempDir::new().expect("tempdir");
        std::fs::write(dir.path().join("conf"), garbage(seed, 512)).expect("conf");
        std::fs::write(dir.path().join("db"), garbage(seed * 31, 64 * 1024)).expect("db");
        let result = SledStore::open(dir.path());
        eprintln!("seed {seed}: {result:?}");
        match result {
            Err(OpenError::Corrupt { .. } | OpenError::NotATaskforgeStore { .. }) => {}
            other => panic!("seed {seed}: expected corrupt, got {other:?}"),
        }
    }
}

#[test]
fn a_store_with_garbage_over_its_data_is_corrupt_never_a_panic() {
    for seed in 1..=8 {
        let dir = TempDir::new().expect("tempdir");
        drop(SledStore::open(dir.path()).expect("create"));
        let len = std::fs::metadata(dir.path().join("db"))
            .expect("db file")
            .len();
        let len = usize::try_from(len).expect("size").max(4096);
        std::fs::write(dir.path().join("db"), garbage(seed, len)).expect("db");
        let result = SledStore::open(dir.path());
        eprintln!("seed {seed}: {result:?}");
        match result {
            Err(OpenError::Corrupt { .. } | OpenError::NotATaskforgeStore { .. }) => {}
            other => panic!("seed {seed}: expected corrupt, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_store_with_damaged_bytes_opens_with_a_typed_answer_never_a_panic() {
    for seed in 1..=8u64 {
        let dir = TempDir::new().expect("tempdir");
        {
            let store = open(&dir);
            for i in 0..50 {
                workflow(&store, &format!("wf-{i}")).await;
            }
        }
        let path = dir.path().join("db");
        let mut bytes = std::fs::read(&path).expect("read db");
        // Overwrite a stretch in the middle of the data with garbage.
        let start = bytes.len() / 3 + usize::try_from(seed * 977).expect("offset");
        let end = (start + 2048).min(bytes.len());
        let noise = garbage(seed, end.saturating_sub(start));
        if start < end {
            bytes[start..end].copy_from_slice(&noise);
        }
        std::fs::write(&path, bytes).expect("write db");
        // Whatever sled makes of it, the answer is a value, not a panic:
        // a store (sled may cut the log at the damage) or a typed error.
        let result = std::panic::catch_unwind(|| SledStore::open(dir.path()));
        let result = result.expect("open does not panic");
        eprintln!("seed {seed}: {result:?}");
    }
}

#[test]
fn a_directory_of_other_files_is_left_alone() {
    let dir = TempDir::new().expect("tempdir");
    std::fs::write(dir.path().join("notes.bin"), garbage(7, 4096)).expect("write");
    let err = SledStore::open(dir.path()).expect_err("foreign");
    assert!(
        matches!(err, OpenError::NotATaskforgeStore { .. }),
        "{err:?}"
    );
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .expect("read dir")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(names, vec!["notes.bin"]);

    let file = dir.path().join("notes.bin");
    let err = SledStore::open(&file).expect_err("a file");
    assert!(
        matches!(err, OpenError::NotATaskforgeStore { .. }),
        "{err:?}"
    );
}

#[test]
fn another_programs_sled_database_is_refused() {
    let dir = TempDir::new().expect("tempdir");
    {
        let db = plain_sled(dir.path());
        let tree = db.open_tree("accounts").expect("tree");
        tree.insert("alice", "10").expect("insert");
        db.insert("key", "value").expect("insert");
        db.flush().expect("flush");
    }
    let err = SledStore::open(dir.path()).expect_err("foreign");
    assert!(
        matches!(err, OpenError::NotATaskforgeStore { .. }),
        "{err:?}"
    );
    // Untouched: no meta tree was added.
    let db = plain_sled(dir.path());
    assert!(!db.tree_names().iter().any(|n| n == b"meta"));
}

#[test]
fn a_newer_format_is_refused() {
    let dir = TempDir::new().expect("tempdir");
    drop(SledStore::open(dir.path()).expect("create"));
    {
        let db = plain_sled(dir.path());
        let meta = db.open_tree("meta").expect("meta");
        meta.insert("format", &999u32.to_be_bytes())
            .expect("insert");
        db.flush().expect("flush");
    }
    match SledStore::open(dir.path()) {
        Err(OpenError::NewerFormat { found, supported }) => {
            assert_eq!(found, 999);
            assert_eq!(supported, FORMAT_VERSION);
        }
        other => panic!("expected newer format, got {other:?}"),
    }
}

#[test]
fn an_empty_directory_becomes_a_store() {
    let dir = TempDir::new().expect("tempdir");
    drop(SledStore::open(dir.path()).expect("create"));
    drop(SledStore::open(dir.path()).expect("reopen"));
    let missing = dir.path().join("a").join("b");
    drop(SledStore::open(&missing).expect("create nested"));
}

#[tokio::test]
async fn a_pruned_delivery_is_stored_again_not_answered_from_memory() {
    let dir = TempDir::new().expect("tempdir");
    let store = open(&dir);
    let (wf, _) = workflow(&store, "recent").await;
    let old = now() - TimeDelta::days(30);
    let first = event(&wf, Some("k"), old);
    assert_eq!(
        store.insert_event(&first, None).await.expect("first"),
        EventInsert::Inserted
    );
    // The repeat is answered (from memory now) with the original.
    let repeat = event(&wf, Some("k"), old);
    match store.insert_event(&repeat, None).await.expect("repeat") {
        EventInsert::Duplicate(stored) => assert_eq!(stored.id, first.id),
        other => panic!("expected a duplicate, got {other:?}"),
    }
    let report = store.prune(now()).await.expect("prune");
    assert_eq!(report.events, 1);
    // The key is free again: the next delivery is stored.
    let again = event(&wf, Some("k"), now());
    assert_eq!(
        store.insert_event(&again, None).await.expect("again"),
        EventInsert::Inserted
    );
    match store.insert_event(&repeat, None).await.expect("repeat") {
        EventInsert::Duplicate(stored) => assert_eq!(stored.id, again.id),
        other => panic!("expected a duplicate, got {other:?}"),
    }
}

/// Retention takes a run's step logs with it, and the engine's artifact
/// sweep then removes the artifacts of the runs that went.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prune_takes_logs_and_the_sweep_takes_artifacts() {
    use taskforge_core::artifact::FsArtifactStore;
    use taskforge_core::store::{LogQuery, LogStore};
    use taskforge_core::{Engine, LogLevel, StepError, StepRegistry};

    let store = SledStore::temporary().expect("temporary");
    let artifacts = TempDir::new().expect("a directory for artifacts");
    let mut registry = StepRegistry::new();
    registry
        .step_without_input("build", |ctx| async move {
            ctx.log(LogLevel::Info, "compiling");
            ctx.put_artifact("app.bin", vec![1u8; 100]).await?;
            Ok::<_, StepError>(json!("built"))
        })
        .expect("register");
    let engine = Engine::builder(store.clone(), registry)
        .artifacts(FsArtifactStore::open(artifacts.path()).expect("artifacts"))
        .build();
    engine.start();
    let wf = engine.ensure_workflow("retained").await.expect("workflow");
    engine
        .publish(
            wf.id,
            WorkflowDefinition::new(vec![StepDefinition::new("build", "build")]),
        )
        .await
        .expect("publish");
    let run = engine.start_run(wf.id, json!(null)).await.expect("start");
    engine.wait_for_run(run.id).await.expect("finish");
    let attempt = engine.run(run.id).await.expect("details").steps[0].id;
    let query = LogQuery::new(run.id, attempt);
    assert_eq!(store.list_logs(&query).await.expect("logs").items.len(), 1);
    assert_eq!(
        engine.sweep_artifacts().await.expect("sweep"),
        0,
        "the run is kept"
    );
    assert_eq!(engine.run_artifacts(run.id).await.expect("list").len(), 1);

    let report = store
        .prune(Utc::now() + TimeDelta::days(1))
        .await
        .expect("prune");
    assert_eq!(report.runs, 1);
    assert!(store
        .list_logs(&query)
        .await
        .expect("logs")
        .items
        .is_empty());
    assert_eq!(engine.sweep_artifacts().await.expect("sweep"), 1);
    assert!(engine.run_artifacts(run.id).await.expect("list").is_empty());
}
