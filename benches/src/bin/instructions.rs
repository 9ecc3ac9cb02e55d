//! Instruction counts of the hot paths, which do not move with the
//! machine's load, beside the keys and bytes each one writes to sled.
//!
//! ```text
//! cargo run --release -p taskforge-benches --bin instructions -- [--ops N] [--modes a,b,...]
//! ```
//!
//! Each mode is run twice under valgrind's callgrind (`valgrind` must be on
//! `PATH`), with N and with 2N operations after the same set-up and
//! warm-up; the difference of the two totals over N is the count of one
//! operation, set-up and start-up cancelled out. Every thread is counted
//! (the engine's, the store's writer and flusher, sled's), so a durable
//! write's flush is in it, but not the time the kernel spends in `fsync`.
//! Operations run one at a time (but in `sled-run-256`), so each write is
//! a batch of its own: this is the cost of one operation on an idle store.
//!
//! The counts do not follow the machine's load the way wall-clock figures
//! do, but they are not exact: timers (the engine's polls, sled's
//! background threads) fire by the clock, and valgrind runs threads one at
//! a time, so batching varies. Repeated runs agree within about 10%;
//! `sled-run-256` runs 5N operations and `sled-ingest-dup` 10N, as their
//! differences are otherwise lost in that noise.
//!
//! Modes:
//! - `memory-run`: one 3-step no-op run through the engine on the memory
//!   store (`start_run`, then `wait_for_run`);
//! - `sled-run`: the same on a durable sled store;
//! - `sled-run-256`: 3-step runs on durable sled with 256 in flight (the
//!   headline's closed loop): what a run costs when writes are batched;
//! - `sled-commit`: one fenced durable `commit` on sled that finishes step
//!   0 of a started run and starts step 1 (what the worker writes between
//!   two steps);
//! - `sled-ingest`: one durable `insert_event` of a webhook-like event
//!   with the queued run it starts, new dedup key;
//! - `sled-ingest-dup`: the same event again (a duplicate).
//!
//! With `--child MODE N [PREPARE]` it runs N operations of one mode without
//! valgrind and prints what sled wrote per operation
//! (`SledStore::write_stats`).

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use chrono::Utc;
use taskforge_benches::{catalog, definition, noop_registry, payload, webhook_event, NOOP};
use taskforge_core::store::{EventInsert, EventStore, RunStore, RunTransition, StepTransition};
use taskforge_core::{Engine, RunStatus, StepRun, Store, TriggerId, WorkflowRun};
use taskforge_store_memory::MemoryStore;
use taskforge_store_sled::{SledStore, WriteStats};

const MODES: [&str; 6] = [
    "memory-run",
    "sled-run",
    "sled-run-256",
    "sled-commit",
    "sled-ingest",
    "sled-ingest-dup",
];

/// Operations run before counting starts, to warm caches and lazies.
const WARM_UP: usize = 20;

fn main() {
    let mut args = std::env::args().skip(1);
    let mut ops = 200usize;
    let mut modes: Vec<String> = MODES.iter().map(|m| (*m).to_owned()).collect();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--child" => {
                let mode = args.next().expect("--child MODE N");
                let n = args
                    .next()
                    .and_then(|n| n.parse().ok())
                    .expect("--child MODE N");
                let prepare = args.next().and_then(|n| n.parse().ok()).unwrap_or(0);
                child(&mode, n, prepare);
                return;
            }
            "--ops" => {
                ops = args.next().and_then(|n| n.parse().ok()).expect("--ops N");
            }
            "--modes" => {
                modes = args
                    .next()
                    .expect("--modes a,b")
                    .split(',')
                    .map(str::to_owned)
                    .collect();
            }
            "-h" | "--help" => {
                println!(
                    "usage: instructions [--ops N] [--modes {}]",
                    MODES.join(",")
                );
                return;
            }
            other => panic!("unknown option {other:?}; try --help"),
        }
    }
    let exe = std::env::current_exe().expect("own path");
    println!("| hot path | instructions per op | sled keys per op | sled bytes per op | batches per op | flushes per op |");
    println!("|---|---:|---:|---:|---:|---:|");
    for mode in &modes {
        // Cheap or batched operations need more of them for the
        // difference to stand above the noise of timers and scheduling.
        let ops = match mode.as_str() {
            "sled-run-256" => ops * 5,
            "sled-ingest-dup" => ops * 10,
            _ => ops,
        };
        // Set-up that grows with the operations is done for 2N + warm-up
        // in both runs.
        let prepare = 2 * ops + WARM_UP;
        let written = native(&exe, mode, ops, prepare);
        let small = callgrind(&exe, mode, ops, prepare);
        let large = callgrind(&exe, mode, 2 * ops, prepare);
        let per_op = match (small, large) {
            (Some(small), Some(large)) => {
                format!("{}", (large.saturating_sub(small)) / ops as u64)
            }
            _ => "- (valgrind failed or missing)".into(),
        };
        println!("| {mode} | {per_op} | {written} |");
        // Machine-readable too, for the headline.
        eprintln!("instructions {mode} {per_op}");
    }
}

/// Runs `mode` natively and returns the sled columns of its row.
fn native(exe: &Path, mode: &str, ops: usize, prepare: usize) -> String {
    let output = Command::new(exe)
        .args(["--child", mode, &ops.to_string(), &prepare.to_string()])
        .output()
        .expect("run the child");
    assert!(
        output.status.success(),
        "child {mode} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("written "))
        .map_or_else(|| "- | - | - | -".into(), str::to_owned)
}

/// Total instructions of `mode` with `ops` operations under callgrind.
fn callgrind(exe: &Path, mode: &str, ops: usize, prepare: usize) -> Option<u64> {
    let dir = tempfile::tempdir().ok()?;
    let out = dir.path().join("callgrind.out");
    let status = Command::new("valgrind")
        .arg("--tool=callgrind")
        .arg(format!("--callgrind-out-file={}", out.display()))
        .arg(exe)
        .args(["--child", mode, &ops.to_string(), &prepare.to_string()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .ok()?;
    if !status.success() {
        return None;
    }
    let text = std::fs::read_to_string(out).ok()?;
    text.lines()
        .find_map(|l| {
            l.strip_prefix("totals: ")
                .or_else(|| l.strip_prefix("summary: "))
        })
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

fn child(mode: &str, n: usize, prepare: usize) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("temp dir");
    let written = rt.block_on(async {
        match mode {
            "memory-run" => {
                engine_runs(MemoryStore::new(), n).await;
                None
            }
            "sled-run" => Some(engine_runs(open(dir.path()), n).await),
            "sled-run-256" => {
                let store = open(dir.path());
                // The warm-up's runs, then the counted ones.
                taskforge_benches::runs_per_s(store.clone(), 3, WARM_UP * 10, 256)
                    .await
                    .expect("warm-up");
                let before = store.write_stats();
                taskforge_benches::runs_per_s(store.clone(), 3, n, 256)
                    .await
                    .expect("closed loop");
                Some(store.write_stats().since(&before))
            }
            "sled-commit" => Some(commits(open(dir.path()), n, prepare).await),
            "sled-ingest" => Some(ingest(open(dir.path()), n, false).await),
            "sled-ingest-dup" => Some(ingest(open(dir.path()), n, true).await),
            other => panic!("unknown mode {other:?}; modes: {}", MODES.join(", ")),
        }
    });
    if let Some(w) = written {
        let n = n as f64;
        println!(
            "written {:.1} | {:.0} | {:.2} | {:.2}",
            w.keys as f64 / n,
            w.bytes as f64 / n,
            w.batches as f64 / n,
            w.flushes as f64 / n
        );
    }
}

fn open(dir: &Path) -> SledStore {
    SledStore::open(dir.join("db")).expect("open sled")
}

/// `WARM_UP` then `n` sequential 3-step runs through an engine; returns
/// what sled wrote during the `n` if the store is sled.
async fn engine_runs<S: Store + Clone + Stats>(store: S, n: usize) -> WriteStats {
    let engine = Engine::builder(store.clone(), noop_registry().expect("registry")).build();
    engine.start();
    let workflow = engine
        .ensure_workflow("instructions")
        .await
        .expect("workflow");
    engine
        .publish(workflow.id, definition(3, NOOP))
        .await
        .expect("publish");
    let mut before = WriteStats::default();
    for i in 0..WARM_UP + n {
        if i == WARM_UP {
            before = store.stats();
        }
        let run = engine
            .start_run(workflow.id, payload(i as u64))
            .await
            .expect("start run");
        let run = engine.wait_for_run(run.id).await.expect("wait");
        assert_eq!(run.status, RunStatus::Succeeded);
    }
    let written = store.stats().since(&before);
    engine.shutdown(Duration::from_secs(10)).await;
    written
}

/// Write counters of a store, where it has them.
trait Stats {
    fn stats(&self) -> WriteStats;
}

impl Stats for MemoryStore {
    fn stats(&self) -> WriteStats {
        WriteStats::default()
    }
}

impl Stats for SledStore {
    fn stats(&self) -> WriteStats {
        self.write_stats()
    }
}

/// Fenced commits, each finishing step 0 of a started run and starting its
/// step 1 (what the worker writes between two steps): `prepare` runs are
/// started first (the same number whatever `n`, so that the set-up cancels
/// out), then `WARM_UP + n` of them get their commit.
async fn commits(store: SledStore, n: usize, prepare: usize) -> WriteStats {
    let (_, version) = catalog(&store, "commits", definition(3, NOOP))
        .await
        .expect("catalog");
    let mut started = Vec::with_capacity(prepare);
    for i in 0..prepare.max(WARM_UP + n) {
        let now = Utc::now();
        let run = WorkflowRun::new(&version, payload(i as u64), now);
        store.insert_run(&run).await.expect("insert run");
        let mut run = store
            .claim_run(run.id, "bench", now, now + chrono::TimeDelta::hours(1))
            .await
            .expect("claim");
        let fence = run.fence();
        run.transition(RunTransition::Start, now).expect("start");
        let step = StepRun::start(run.id, "s0", 0, 1, now);
        store
            .commit(fence, Some(&run), std::slice::from_ref(&step))
            .await
            .expect("commit start");
        started.push((run.fence(), step));
    }
    let mut before = WriteStats::default();
    for (i, (fence, mut step)) in started.into_iter().take(WARM_UP + n).enumerate() {
        if i == WARM_UP {
            before = store.write_stats();
        }
        let now = Utc::now();
        step.transition(StepTransition::Succeed, now)
            .expect("succeed");
        step.output = Some(serde_json::Value::Null);
        let next = StepRun::start(fence.run_id, "s1", 1, 1, now);
        store
            .commit(fence, None, &[step, next])
            .await
            .expect("commit");
    }
    store.write_stats().since(&before)
}

/// `WARM_UP + n` webhook-like events with their runs; with `duplicate`,
/// every counted one repeats the first event.
async fn ingest(store: SledStore, n: usize, duplicate: bool) -> WriteStats {
    let (workflow, version) = catalog(&store, "ingest", definition(3, NOOP))
        .await
        .expect("catalog");
    let trigger = TriggerId::new();
    let body = payload(1);
    let mut before = WriteStats::default();
    for i in 0..WARM_UP + n {
        if i == WARM_UP {
            before = store.write_stats();
        }
        let key = if duplicate && i >= WARM_UP { 0 } else { i };
        let mut run = WorkflowRun::new(&version, body.clone(), Utc::now());
        let event = webhook_event(workflow.id, trigger, format!("delivery-{key}"), &run);
        run.event_id = Some(event.id);
        let out = store
            .insert_event(&event, Some(&run))
            .await
            .expect("insert event");
        assert_eq!(
            matches!(out, EventInsert::Duplicate(_)),
            duplicate && i >= WARM_UP
        );
    }
    store.write_stats().since(&before)
}
