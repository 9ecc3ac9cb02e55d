//! The cost of concurrency limits (issue 13): three-step runs per second,
//! 256 in flight, on the memory store and on sled (relaxed and durable),
//! without limits and with limits that never make a run wait, so what is
//! measured is their enforcement (the key attached at admission, the key's
//! books kept by the store, the slot taken and checked at every claim), not
//! their effect:
//!
//! - `workflow`: one key for the whole workflow, `max` 512, twice the runs
//!   in flight (the closed loop starts a run when one reaches its last
//!   step, before it finishes, so a max of 256 would make runs wait): every
//!   claim checks a key held by some 256 runs;
//! - `per-key`: one key per run (`/release/id`, unique), `max` 1: every run
//!   adds a key to the store's books and removes it when it finishes.
//!
//! Each round measures the three workloads back to back on fresh stores, in
//! a rotating order; the figures are medians over the rounds, and the ratio
//! is limited / unlimited of the same round. See `benches/README.md`.
//!
//! ```sh
//! cargo run --release -p taskforge-benches --bin limits -- [--rounds N] [--quick]
//! cargo run --release -p taskforge-benches --bin limits -- --instructions [--ops N]
//! ```
//!
//! With `--instructions` it counts instead, under valgrind's callgrind
//! (which must be on `PATH`), the instructions of one three-step run
//! started and waited for alone (`start_run`, `wait_for_run`), on the
//! memory store and on durable sled, for each workload: each count is the
//! difference of a child process running 2N and N runs after the same
//! warm-up, over N, so start-up and set-up cancel out. Instruction counts
//! do not move with the machine's load, as wall-clock figures on a shared
//! machine do; they leave out the kernel's time in `fsync` and the waits.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use taskforge_benches::{closed_loop_registry, definition, median, payload, settle, Completion};
use taskforge_benches::{LoadError, NOOP_LAST};
use taskforge_core::{ConcurrencyLimit, Engine, EngineError, Store, WorkflowDefinition};
use taskforge_store_memory::MemoryStore;
use taskforge_store_sled::{Durability, SledConfig, SledStore};

const IN_FLIGHT: usize = 256;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Workload {
    Unlimited,
    Workflow,
    PerKey,
}

impl Workload {
    const ALL: [Self; 3] = [Self::Unlimited, Self::Workflow, Self::PerKey];

    fn name(self) -> &'static str {
        match self {
            Self::Unlimited => "no limit",
            Self::Workflow => "workflow limit (max 512)",
            Self::PerKey => "per-key limit (unique keys, max 1)",
        }
    }

    fn definition(self) -> WorkflowDefinition {
        let three = definition(3, NOOP_LAST);
        match self {
            Self::Unlimited => three,
            Self::Workflow => three.concurrency(ConcurrencyLimit::new(2 * IN_FLIGHT as u32)),
            Self::PerKey => three.concurrency(ConcurrencyLimit::per_key("/release/id", 1)),
        }
    }
}

/// Runs per second of `runs` three-step runs of `workload` through an
/// engine on `store`, `IN_FLIGHT` at a time (a closed loop, as the
/// headline's throughput figure), each with its own input.
async fn runs_per_s<S: Store + Clone>(
    store: S,
    workload: Workload,
    runs: usize,
) -> Result<f64, LoadError> {
    let completion = Completion::new(IN_FLIGHT);
    let registry = closed_loop_registry(&completion)
        .map_err(|e| LoadError::Engine(EngineError::InvalidInput(e.to_string())))?;
    let engine = Engine::builder(store.clone(), registry)
        .max_concurrent_runs(IN_FLIGHT)
        .build();
    engine.start();
    let workflow = engine.ensure_workflow("bench-limits").await?;
    engine.publish(workflow.id, workload.definition()).await?;
    let inputs: Arc<Vec<Value>> = Arc::new((0..runs as u64).map(payload).collect());

    let start = Instant::now();
    let producer = tokio::spawn({
        let (engine, completion, inputs) = (engine.clone(), Arc::clone(&completion), inputs);
        async move {
            let mut starts = tokio::task::JoinSet::new();
            for i in 0..runs {
                completion.take_slot().await;
                let (engine, input) = (engine.clone(), inputs[i].clone());
                starts.spawn(async move { engine.start_run(workflow.id, input).await.map(drop) });
                while let Some(done) = starts.try_join_next() {
                    done??;
                }
            }
            while let Some(done) = starts.join_next().await {
                done??;
            }
            Ok::<(), LoadError>(())
        }
    });
    completion.wait_for(runs).await;
    settle(&store).await?;
    let elapsed = start.elapsed();
    producer.await??;
    engine.shutdown(Duration::from_secs(30)).await;
    Ok(runs as f64 / elapsed.as_secs_f64())
}

fn sled(durability: Durability) -> (tempfile::TempDir, SledStore) {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = SledConfig {
        durability,
        ..SledConfig::default()
    };
    let store = SledStore::open_with(dir.path().join("db"), config).expect("open sled");
    (dir, store)
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|text| {
            text.split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_else(|_| "unknown".to_owned())
}

/// Runs before counting starts, to warm caches and lazies.
const WARM_UP: usize = 20;

/// `WARM_UP` then `n` three-step runs of `workload`, one at a time.
async fn sequential<S: Store + Clone>(store: S, workload: Workload, n: usize) {
    let registry = taskforge_benches::noop_registry().expect("registry");
    let engine = Engine::builder(store, registry).build();
    engine.start();
    let workflow = engine
        .ensure_workflow("bench-limits")
        .await
        .expect("workflow");
    // The same limits, with plain no-op steps (no closed loop to report to).
    let mut three = workload.definition();
    three.steps = definition(3, taskforge_benches::NOOP).steps;
    engine.publish(workflow.id, three).await.expect("publish");
    for i in 0..WARM_UP + n {
        let run = engine
            .start_run(workflow.id, payload(i as u64))
            .await
            .expect("start");
        let run = engine.wait_for_run(run.id).await.expect("wait");
        assert!(run.status.is_terminal());
    }
    engine.shutdown(Duration::from_secs(10)).await;
}

/// The child of `--instructions`: `n` sequential runs of one workload.
fn child(backend: &str, workload: usize, n: usize) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let workload = Workload::ALL[workload];
    rt.block_on(async {
        if backend == "memory" {
            sequential(MemoryStore::new(), workload, n).await;
        } else if backend == "memory, 256 in flight" {
            let store = MemoryStore::new();
            runs_per_s(store.clone(), workload, WARM_UP * 10)
                .await
                .expect("warm-up");
            runs_per_s(store, workload, n).await.expect("closed loop");
        } else {
            let (_dir, store) = sled(Durability::Durable);
            sequential(store, workload, n).await;
        }
    });
}

/// Total instructions of a child under callgrind.
fn callgrind(backend: &str, workload: usize, n: usize) -> Option<u64> {
    let exe = std::env::current_exe().ok()?;
    let dir = tempfile::tempdir().ok()?;
    let out = dir.path().join("callgrind.out");
    let status = std::process::Command::new("valgrind")
        .arg("--tool=callgrind")
        .arg(format!("--callgrind-out-file={}", out.display()))
        .arg(exe)
        .args(["--child", backend, &workload.to_string(), &n.to_string()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .ok()?;
    if !status.success() {
        return None;
    }
    std::fs::read_to_string(out)
        .ok()?
        .lines()
        .find_map(|l| {
            l.strip_prefix("totals: ")
                .or_else(|| l.strip_prefix("summary: "))
        })
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

fn instructions(ops: usize) {
    println!("| backend | workload | instructions per run | vs no limit | cost |");
    println!("|---|---|---:|---:|---:|");
    for backend in ["memory", "memory, 256 in flight", "sled durable"] {
        let mut base = None;
        // The closed loop's runs are cheaper and vary more: more of them.
        let ops = if backend.contains("in flight") {
            ops * 10
        } else {
            ops
        };
        for (w, workload) in Workload::ALL.iter().enumerate() {
            let per_run = match (callgrind(backend, w, ops), callgrind(backend, w, 2 * ops)) {
                (Some(small), Some(large)) => large.saturating_sub(small) as f64 / ops as f64,
                _ => {
                    println!(
                        "| {backend} | {} | - (valgrind failed or missing) | | |",
                        workload.name()
                    );
                    continue;
                }
            };
            let base = *base.get_or_insert(per_run);
            let ratio = per_run / base;
            let cost = if w == 0 {
                "-".to_owned()
            } else {
                format!("{:+.1}%", (ratio - 1.0) * 100.0)
            };
            println!(
                "| {backend} | {} | {per_run:.0} | {ratio:.3} | {cost} |",
                workload.name()
            );
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--child") {
        let arg = |i: usize| args.get(i).expect("--child BACKEND WORKLOAD N");
        child(
            arg(1),
            arg(2).parse().expect("a workload"),
            arg(3).parse().expect("a count"),
        );
        return;
    }
    let number = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .and_then(|n| n.parse::<usize>().ok())
    };
    if args.iter().any(|a| a == "--instructions") {
        instructions(number("--ops").unwrap_or(100));
        return;
    }
    let quick = args.iter().any(|a| a == "--quick");
    let rounds = number("--rounds").unwrap_or(if quick { 1 } else { 5 });
    let (memory_runs, sled_runs) = if quick { (2_000, 500) } else { (20_000, 5_000) };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    eprintln!("load before: {}", load_average());
    let backends = ["memory", "sled relaxed", "sled durable"];
    // figures[backend][workload] over rounds; ratios the same, per round.
    let mut figures = vec![vec![Vec::new(); 3]; backends.len()];
    let mut ratios = vec![vec![Vec::new(); 3]; backends.len()];
    for round in 0..rounds {
        eprintln!("round {} of {rounds}", round + 1);
        for (b, backend) in backends.iter().enumerate() {
            let mut this = [0.0; 3];
            for k in 0..3 {
                // Rotated, so no workload always runs first (or last).
                let w = (k + round) % 3;
                let workload = Workload::ALL[w];
                let value = rt.block_on(async {
                    match *backend {
                        "memory" => runs_per_s(MemoryStore::new(), workload, memory_runs).await,
                        "sled relaxed" => {
                            let (_dir, store) = sled(Durability::Relaxed);
                            runs_per_s(store, workload, sled_runs).await
                        }
                        _ => {
                            let (_dir, store) = sled(Durability::Durable);
                            runs_per_s(store, workload, sled_runs).await
                        }
                    }
                });
                this[w] = value.unwrap_or_else(|e| panic!("{backend} {}: {e}", workload.name()));
            }
            for w in 0..3 {
                figures[b][w].push(this[w]);
                ratios[b][w].push(this[w] / this[0]);
            }
        }
    }
    eprintln!("load after: {}", load_average());
    println!("| backend | workload | 3-step runs/s (median of {rounds}) | vs no limit (median of per-round ratios) | cost |");
    println!("|---|---|---:|---:|---:|");
    for (b, backend) in backends.iter().enumerate() {
        for (w, workload) in Workload::ALL.iter().enumerate() {
            let runs = median(figures[b][w].clone());
            let ratio = median(ratios[b][w].clone());
            let cost = if w == 0 {
                "-".to_owned()
            } else {
                format!("{:+.1}%", (1.0 - ratio) * 100.0)
            };
            println!(
                "| {backend} | {} | {:.0} | {:.3} | {cost} |",
                workload.name(),
                runs,
                ratio
            );
        }
    }
}
