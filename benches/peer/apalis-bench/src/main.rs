//! The peer side of Taskforge's headline benchmark: the same no-op
//! workloads on apalis with its SQLite backend (`apalis-sqlite`).
//!
//! - one step: N no-op jobs;
//! - three steps: N three-step no-op workflows (`apalis-workflow`'s
//!   `SteppedFlow`, each step a stored task);
//!
//! each in two modes, and the better one is the peer's figure:
//! - backlog: all N pushed first (timed), then the worker runs them;
//! - closed loop, like Taskforge's: a producer keeps 256 in flight (it
//!   pushes the next job or workflow when one finishes).
//!
//! One worker with concurrency 256 runs them, polling every 5 ms.
//!
//! Each figure is measured from the first push to the last completion, on
//! a file database in a fresh temporary directory, with the settings
//! `SqliteStorage::setup` applies (WAL, `synchronous = OFF`: no fsync).
//!
//! Prints machine-readable lines `peer <workload> <jobs_per_s>` after a
//! human-readable summary. Usage: `apalis-bench [--runs N] [--repeat R] [--batch B]`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use apalis::prelude::*;
use apalis_sqlite::{Config, SqlitePool, SqliteStorage};
use apalis_workflow::{SteppedFlow, WorkflowSink};
use tokio::sync::Semaphore;

const CONCURRENCY: usize = 256;

/// How often the worker polls for tasks pushed by the producer (a separate
/// handle, which does not wake the worker).
const POLL_MS: u64 = 5;

/// Tasks fetched per poll unless `--batch` says otherwise: the default is
/// 10; a larger batch is apalis's own knob for throughput, so the peer
/// gets it too.
const BATCH: usize = 100;

/// The storage config of a queue: the defaults, with the batch size.
fn config(queue: &str, batch: usize) -> Config {
    Config::default().queue(queue).batch_size(batch)
}

struct Options {
    runs: usize,
    repeat: usize,
    batch: usize,
}

fn options() -> Options {
    let mut options = Options {
        runs: 5_000,
        repeat: 1,
        batch: BATCH,
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
            "--batch" => options.batch = value().max(1),
            other => panic!("unknown option {other:?}; use --runs N, --repeat R, --batch B"),
        }
    }
    options
}

async fn pool(dir: &tempfile::TempDir) -> SqlitePool {
    let url = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("apalis.db").display()
    );
    let pool = SqlitePool::connect(&url).await.expect("open sqlite");
    SqliteStorage::setup(&pool)
        .await
        .expect("set up apalis tables");
    pool
}

/// A closed loop's state: finished runs, and the in-flight slots a
/// producer takes before starting a run and the run's last step gives back.
struct Loop {
    done: AtomicUsize,
    slots: Semaphore,
    n: usize,
}

impl Loop {
    fn new(n: usize) -> Arc<Self> {
        Arc::new(Self {
            done: AtomicUsize::new(0),
            slots: Semaphore::new(CONCURRENCY),
            n,
        })
    }

    async fn take_slot(&self) {
        self.slots.acquire().await.expect("semaphore open").forget();
    }

    /// Counts a finished run; stops the worker after the last one.
    fn finished(&self, worker: &WorkerContext) -> Result<(), BoxDynError> {
        self.slots.add_permits(1);
        if self.done.fetch_add(1, Ordering::SeqCst) + 1 == self.n {
            worker.stop()?;
        }
        Ok(())
    }
}

/// N one-step no-op jobs, at most [`CONCURRENCY`] in flight; returns jobs
/// per second.
async fn one_step(n: usize, batch: usize, closed: bool) -> f64 {
    let dir = tempfile::tempdir().expect("temp dir");
    let pool = pool(&dir).await;
    let storage = SqliteStorage::<u64>::new(&pool).with_config(config("one-step", batch));
    let state = Loop::new(n);
    let start = Instant::now();
    let mut producer = Some(tokio::spawn({
        let (mut sink, state) = (storage.clone(), Arc::clone(&state));
        async move {
            for i in 0..n as u64 {
                if closed {
                    state.take_slot().await;
                }
                sink.push(i).await.expect("push job");
            }
        }
    }));
    if !closed {
        if let Some(producer) = producer.take() {
            producer.await.expect("producer");
        }
    }
    let worker = WorkerBuilder::new("one-step")
        .backend(storage.poll_with_interval(Duration::from_millis(POLL_MS)))
        .concurrency(CONCURRENCY)
        .data(Arc::clone(&state))
        .build(
            |_job: u64, state: Data<Arc<Loop>>, worker: WorkerContext| async move {
                state.finished(&worker)
            },
        );
    worker.run().await.expect("worker runs");
    let elapsed = start.elapsed();
    if let Some(producer) = producer {
        producer.await.expect("producer");
    }
    assert_eq!(state.done.load(Ordering::SeqCst), n, "every job ran");
    n as f64 / elapsed.as_secs_f64()
}

/// N three-step no-op workflows, at most [`CONCURRENCY`] in flight;
/// returns workflows (runs) per second.
async fn three_steps(n: usize, batch: usize, closed: bool) -> f64 {
    let dir = tempfile::tempdir().expect("temp dir");
    let pool = pool(&dir).await;
    let state = Loop::new(n);
    let flow = SteppedFlow::new("three-steps")
        .and_then(|x: u64| async move { Ok::<u64, BoxDynError>(x) })
        .and_then(|x: u64| async move { Ok::<u64, BoxDynError>(x) })
        .and_then({
            let state = Arc::clone(&state);
            move |_x: u64, worker: WorkerContext| {
                let state = Arc::clone(&state);
                async move { state.finished(&worker) }
            }
        });
    let storage = SqliteStorage::new(&pool).with_config(config("three-steps", batch));
    let start = Instant::now();
    let mut producer = Some(tokio::spawn({
        let (mut sink, state) = (storage.clone(), Arc::clone(&state));
        async move {
            for i in 0..n as u64 {
                if closed {
                    state.take_slot().await;
                }
                sink.push_start(i).await.expect("start workflow");
            }
        }
    }));
    if !closed {
        if let Some(producer) = producer.take() {
            producer.await.expect("producer");
        }
    }
    let worker = WorkerBuilder::new("three-steps")
        .backend(storage.poll_with_interval(Duration::from_millis(POLL_MS)))
        .concurrency(CONCURRENCY)
        .build(flow);
    worker.run().await.expect("worker runs");
    let elapsed = start.elapsed();
    if let Some(producer) = producer {
        producer.await.expect("producer");
    }
    assert_eq!(
        state.done.load(Ordering::SeqCst),
        n,
        "every workflow finished"
    );
    n as f64 / elapsed.as_secs_f64()
}

/// One line per measured workload, printed at once: a caller that stops a
/// stalled peer (the headline does) can tell how far it got.
fn progress(line: &str) {
    use std::io::Write;
    println!("peer-progress {line}");
    let _ = std::io::stdout().flush();
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

#[tokio::main]
async fn main() {
    let options = options();
    let mut lines = Vec::new();
    let mut best = [0.0f64; 2];
    for (mode, closed) in [("backlog", false), ("closed loop", true)] {
        let (mut one, mut three) = (Vec::new(), Vec::new());
        for round in 1..=options.repeat {
            one.push(one_step(options.runs, options.batch, closed).await);
            progress(&format!("{mode} round {round}: one-step {:.0}/s", one[one.len() - 1]));
            three.push(three_steps(options.runs, options.batch, closed).await);
            progress(&format!("{mode} round {round}: three-step {:.0}/s", three[three.len() - 1]));
        }
        let (one, three) = (median(one), median(three));
        best = [best[0].max(one), best[1].max(three)];
        lines.push(format!(
            "  {mode:<12} one-step no-op jobs/s: {one:>8.0}   three-step no-op runs/s: {three:>6.0} ({:.0} steps/s)",
            three * 3.0
        ));
    }
    println!(
        "apalis 1.0 + apalis-sqlite 1.0 (file db, WAL, synchronous=OFF), {} runs, concurrency {CONCURRENCY}, batch {}, poll {POLL_MS} ms, median of {}:",
        options.runs, options.batch, options.repeat
    );
    for line in lines {
        println!("{line}");
    }
    // The better mode of each workload is the peer's figure.
    println!("peer one_step {:.1}", best[0]);
    println!("peer three_step {:.1}", best[1]);
}
