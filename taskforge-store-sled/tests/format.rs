//! Stores written by an earlier format open with every record: the
//! fixtures `fixtures/format1/store` and `fixtures/format4/store` were
//! written by the format-1 release (commit 97e2528) and the format-4 one
//! (cd78ea3, events and runs in trees of their own) with runs in every
//! state, and the `manifest.json` beside each names them.

use std::collections::BTreeSet;
use std::path::Path;

use chrono::{TimeZone, Utc};
use serde_json::Value;
use taskforge_core::store::StepTransition;
use taskforge_core::store::{EventStore, RunStore, RunStoreExt};
use taskforge_core::{EventQuery, RunId, RunQuery, RunStatus, StepRun, StepStatus, WorkflowId};
use taskforge_store_sled::{SledStore, FORMAT_VERSION};
use tempfile::TempDir;

fn manifest(fixture: &str) -> serde_json::Map<String, Value> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(fixture)
        .join("manifest.json");
    let text = std::fs::read_to_string(path).expect("read the manifest");
    serde_json::from_str(&text).expect("parse the manifest")
}

fn id<T: std::str::FromStr>(manifest: &serde_json::Map<String, Value>, name: &str) -> T
where
    T::Err: std::fmt::Debug,
{
    manifest[name]
        .as_str()
        .expect("an id")
        .parse()
        .expect("a valid id")
}

/// A copy of a fixture, which opening migrates.
fn copy_fixture(fixture: &str) -> TempDir {
    let dir = TempDir::new().expect("tempdir");
    let from = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(fixture)
        .join("store");
    let to = dir.path().join("store");
    std::fs::create_dir_all(&to).expect("create");
    for entry in std::fs::read_dir(from).expect("read the fixture") {
        let entry = entry.expect("entry");
        if entry.file_type().expect("type").is_file() {
            std::fs::copy(entry.path(), to.join(entry.file_name())).expect("copy");
        }
    }
    dir
}

fn ids(runs: &[taskforge_core::WorkflowRun]) -> BTreeSet<RunId> {
    runs.iter().map(|r| r.id).collect()
}

async fn check(store: &SledStore, m: &serde_json::Map<String, Value>, migrated_only: bool) {
    let names = [
        "queued",
        "claimed",
        "running",
        "succeeded",
        "lapsed",
        "failed",
    ];
    let run = |name: &str| id::<RunId>(m, &format!("run_{name}"));
    for name in names {
        let (stored, steps) = store
            .get_run_with_steps(run(name))
            .await
            .unwrap_or_else(|e| panic!("run {name}: {e}"));
        let status: RunStatus =
            serde_json::from_value(m[&format!("status_{name}")].clone()).expect("status");
        assert_eq!(stored.status, status, "{name}");
        if migrated_only || name != "lapsed" {
            assert_eq!(stored.lease_epoch, m[&format!("epoch_{name}")], "{name}");
            assert_eq!(steps.len() as u64, m[&format!("steps_{name}")], "{name}");
        } else {
            // Claimed again and committed to after the migration.
            assert_eq!(stored.lease_epoch, 2, "{name}");
            assert_eq!(steps.len(), 3, "{name}");
        }
        if name != "failed" {
            let event = id(m, &format!("event_{name}"));
            assert_eq!(stored.event_id, Some(event), "{name}");
            assert_eq!(store.get_event(event).await.expect("event").id, event);
        }
    }
    let workflow: WorkflowId = id(m, "workflow");
    // Every status lists exactly its runs, with and without the workflow.
    for (status, expected) in [
        (RunStatus::Queued, vec!["queued", "claimed"]),
        (RunStatus::Running, vec!["running", "lapsed"]),
        (RunStatus::Succeeded, vec!["succeeded"]),
        (RunStatus::Failed, vec!["failed"]),
        (RunStatus::Cancelled, vec![]),
    ] {
        let expected: BTreeSet<RunId> = expected.into_iter().map(run).collect();
        for workflow in [None, Some(workflow)] {
            let query = RunQuery {
                status: Some(status),
                workflow_id: workflow,
                ..RunQuery::default()
            };
            let listed = store.list_all_runs(&query).await.expect("list");
            assert_eq!(ids(&listed), expected, "{status} {workflow:?}");
        }
    }
    let all = RunQuery {
        workflow_id: Some(workflow),
        ..RunQuery::default()
    };
    assert_eq!(store.list_all_runs(&all).await.expect("list").len(), 6);
    // The queued run with no lease and the running one whose lease lapsed
    // in 2000 are claimable; the others hold leases until 2100.
    let now = Utc.with_ymd_and_hms(2030, 1, 1, 0, 0, 0).unwrap();
    let claimable: BTreeSet<RunId> = store
        .list_claimable(now, 10)
        .await
        .expect("claimable")
        .into_iter()
        .collect();
    if migrated_only {
        assert_eq!(claimable, [run("queued"), run("lapsed")].into());
    } else {
        // Claimed again until 2030-01-01T01:00; the claim was written with
        // the commit that followed it.
        assert_eq!(claimable, [run("queued")].into());
    }
    for i in 0..5 {
        let event = store
            .find_event_by_dedup_key(workflow, &format!("d-{i}"))
            .await
            .expect("find")
            .expect("the event of each dedup key");
        assert_eq!(event.dedup_key.as_deref(), Some(format!("d-{i}").as_str()));
    }
    let events = store
        .list_events(&EventQuery {
            workflow_id: Some(workflow),
            ..EventQuery::default()
        })
        .await
        .expect("events");
    assert_eq!(events.items.len(), 5);
}

#[tokio::test]
async fn a_format_1_store_is_migrated_and_keeps_every_record() {
    migrates_and_keeps_every_record("format1").await;
}

#[tokio::test]
async fn a_format_4_store_is_migrated_and_keeps_every_record() {
    migrates_and_keeps_every_record("format4").await;
}

/// Opens a copy of `fixture`, checks every record, works on it, reopens it
/// and checks again.
async fn migrates_and_keeps_every_record(fixture: &str) {
    let m = manifest(fixture);
    let dir = copy_fixture(fixture);
    let path = dir.path().join("store");
    let store = SledStore::open(&path).expect("open the fixture's store");
    check(&store, &m, true).await;
    // The migrated store works: the lapsed run is claimed again.
    let lapsed: RunId = id(&m, "run_lapsed");
    let now = Utc.with_ymd_and_hms(2030, 1, 1, 0, 0, 0).unwrap();
    let claimed = store
        .claim_run(
            lapsed,
            "after-migration",
            now,
            now + chrono::TimeDelta::hours(1),
        )
        .await
        .expect("claim");
    assert_eq!(claimed.lease_epoch, 2);
    // Its attempts were written by the old format (format 1: in the steps
    // tree; format 4: in its record); new ones go into its record, and
    // listing shows both, the newer write of an attempt winning.
    let mut steps = store.list_step_runs(lapsed).await.expect("steps");
    assert_eq!(steps.len(), 2);
    let mut running = steps.pop().expect("the running attempt");
    assert_eq!(
        (running.step_index, running.status),
        (1, StepStatus::Running)
    );
    running
        .transition(StepTransition::Succeed, now)
        .expect("succeed");
    let next = StepRun::start(lapsed, "c", 2, 1, now);
    store
        .commit(claimed.fence(), None, &[running, next])
        .await
        .expect("commit after migration");
    let steps = store.list_step_runs(lapsed).await.expect("steps");
    let seen: Vec<_> = steps.iter().map(|s| (s.step_index, s.status)).collect();
    assert_eq!(
        seen,
        [
            (0, StepStatus::Succeeded),
            (1, StepStatus::Succeeded),
            (2, StepStatus::Running)
        ]
    );
    drop(store);

    // It is of the current format now, and opens again.
    {
        // sled's background threads may hold the lock a moment longer.
        let start = std::time::Instant::now();
        let db = loop {
            match sled::open(&path) {
                Ok(db) => break db,
                Err(e) if start.elapsed() < std::time::Duration::from_secs(5) => {
                    let _ = e;
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                Err(e) => panic!("plain sled: {e}"),
            }
        };
        let format = db
            .open_tree("meta")
            .expect("meta")
            .get("format")
            .expect("read")
            .expect("a format");
        assert_eq!(format.as_ref(), FORMAT_VERSION.to_be_bytes());
        // The records moved out of their old trees, which are gone.
        let names = db.tree_names();
        for old in ["events", "runs", "steps"] {
            assert!(
                !names.iter().any(|n| n == old.as_bytes()),
                "tree {old} left behind"
            );
        }
    }
    let store = SledStore::open(&path).expect("reopen");
    check(&store, &m, false).await;
}
