//! The peer side of Taskforge's headline benchmark: the same no-op
//! workloads on apalis with its SQLite backend (`apalis-sqlite`).
//!
//! - one step: N no-op jobs pushed in one batch, then a worker with
//!   concurrency 256 runs them all;
//! - three steps: N three-step no-op workflows (`apalis-workflow`'s
//!   `SteppedFlow`, each step a stored task) started in one batch, then a
//!   worker with concurrency 256 runs them all.
//!
//! Each figure is measured from the first push to the last completion, on
//! a file database in a fresh temporary directory, with the settings
//! `SqliteStorage::setup` applies (WAL, `synchronous = OFF`: no fsync).
//!
//! Prints machine-readable lines `peer <workload> <jobs_per_s>` after a
//! human-readable summary. Usage: `apalis-bench [--runs N] [--repeat R]`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use apalis::prelude::*;
use apalis_sqlite::{Config, SqlitePool, SqliteStorage};
use apalis_workflow::{SteppedFlow, WorkflowSink};

const CONCURRENCY: usize = 256;

/// Tasks fetched per poll: the default is 10; a larger batch is apalis's
/// own knob for throughput, so the peer gets it too.
const BATCH: usize = 100;

/// The storage config of a queue: the defaults, with the larger batch.
fn config(queue: &str) -> Config {
    Config::default().queue(queue).batch_size(BATCH)
}

struct Options {
    runs: usize,
    repeat: usize,
}

fn options() -> Options {
    let mut options = Options {
        runs: 5_000,
        repeat: 1,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || {
            args.next()
                .and_then(|v| v.parse::<usize>().ok())
                .expect("a number after the option")
        };
        match arg.as_str() {
            "--runs" => options.runs = value().max(1),
            "--repeat" => options.repeat = value().max(1),
            other => panic!("unknown option {other:?}; use --runs N, --repeat R"),
        }
    }
    options
}

async fn pool(dir: &tempfile::TempDir) -> SqlitePool {
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("apalis.db").display());
    let pool = SqlitePool::connect(&url).await.expect("open sqlite");
    SqliteStorage::setup(&pool).await.expect("set up apalis tables");
    pool
}

/// N one-step no-op jobs; returns jobs per second.
async fn one_step(n: usize) -> f64 {
    let dir = tempfile::tempdir().expect("temp dir");
    let pool = pool(&dir).await;
    let mut backend = SqliteStorage::<u64>::new(&pool).with_config(config("one-step"));
    let done = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let mut items = futures::stream::iter((0..n as u64).map(Task::new));
    backend.push_all(&mut items).await.expect("push jobs");

    let counter = Arc::clone(&done);
    let worker = WorkerBuilder::new("one-step")
        .backend(backend)
        .concurrency(CONCURRENCY)
        .data(counter)
        .build(
            move |_job: u64, done: Data<Arc<AtomicUsize>>, worker: WorkerContext| async move {
                if done.fetch_add(1, Ordering::SeqCst) + 1 == n {
                    worker.stop()?;
                }
                Ok::<(), BoxDynError>(())
            },
        );
    worker.run().await.expect("worker runs");
    let elapsed = start.elapsed();
    assert_eq!(done.load(Ordering::SeqCst), n, "every job ran");
    n as f64 / elapsed.as_secs_f64()
}

/// N three-step no-op workflows; returns workflows (runs) per second.
async fn three_steps(n: usize) -> f64 {
    let dir = tempfile::tempdir().expect("temp dir");
    let pool = pool(&dir).await;
    let done = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&done);
    let flow = SteppedFlow::new("three-steps")
        .and_then(|x: u64| async move { Ok::<u64, BoxDynError>(x) })
        .and_then(|x: u64| async move { Ok::<u64, BoxDynError>(x) })
        .and_then(move |_x: u64, worker: WorkerContext| {
            let counter = Arc::clone(&counter);
            async move {
                if counter.fetch_add(1, Ordering::SeqCst) + 1 == n {
                    worker.stop()?;
                }
                Ok::<(), BoxDynError>(())
            }
        });
    let mut backend = SqliteStorage::new(&pool)
        .with_config(config("three-steps"))
        .poll_with_interval(Duration::from_millis(5));
    let start = Instant::now();
    for i in 0..n as u64 {
        backend.push_start(i).await.expect("start workflow");
    }
    let worker = WorkerBuilder::new("three-steps")
        .backend(backend)
        .concurrency(CONCURRENCY)
        .build(flow);
    worker.run().await.expect("worker runs");
    let elapsed = start.elapsed();
    assert_eq!(done.load(Ordering::SeqCst), n, "every workflow finished");
    n as f64 / elapsed.as_secs_f64()
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

#[tokio::main]
async fn main() {
    let options = options();
    let mut one = Vec::new();
    let mut three = Vec::new();
    for _ in 0..options.repeat {
        one.push(one_step(options.runs).await);
        three.push(three_steps(options.runs).await);
    }
    let (one, three) = (median(one), median(three));
    println!(
        "apalis 1.0 + apalis-sqlite 1.0 (file db, WAL, synchronous=OFF), {} runs, concurrency {CONCURRENCY}, median of {}:",
        options.runs, options.repeat
    );
    println!("  one-step no-op jobs/s:        {one:>10.0}");
    println!("  three-step no-op runs/s:      {three:>10.0}  ({:.0} steps/s)", three * 3.0);
    println!("peer one_step {one:.1}");
    println!("peer three_step {three:.1}");
}
