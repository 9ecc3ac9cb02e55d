//! The headline benchmark: one table of Taskforge's key figures, each next
//! to the baseline measured in the same run and to its target.
//!
//! ```text
//! cargo run --release -p taskforge-benches --bin headline -- [--quick] [--repeat N] [--peer]
//! ```
//!
//! Every figure is measured twice: with 1,000 and with 100,000 finished
//! runs already stored (1,000 and 10,000 with `--quick`), to show whether
//! it stays flat as history grows. With `--repeat N` the whole suite runs
//! N times and the table shows medians. See `benches/README.md`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use taskforge_benches::{
    catalog, copy_dir, definition, fdatasync_rate, median, noop_registry, payload, percentile,
    prefill_history, runs_per_s, webhook_event, NOOP,
};
use taskforge_core::store::EventInsert;
use taskforge_core::{Engine, RunStatus, StepContext, StepExecutor, Store, TriggerId, WorkflowRun};
use taskforge_store_memory::MemoryStore;
use taskforge_store_sled::{Durability, SledConfig, SledStore};

/// Runs in flight in the throughput workloads.
const IN_FLIGHT: usize = 256;
/// Producers of the ingestion workload.
const PRODUCERS: usize = 64;

/// How much work each measurement does.
#[derive(Debug, Clone)]
struct Sizes {
    stored: [usize; 2],
    direct_calls: usize,
    overhead_runs: usize,
    memory_runs: usize,
    sled_runs: usize,
    latency_samples: usize,
    memory_events: usize,
    sled_events: usize,
    footprint_runs: usize,
    fsync_time: Duration,
    peer_runs: usize,
}

impl Sizes {
    fn full() -> Self {
        Self {
            stored: [1_000, 100_000],
            direct_calls: 200_000,
            overhead_runs: 5_000,
            memory_runs: 20_000,
            sled_runs: 5_000,
            latency_samples: 300,
            memory_events: 200_000,
            sled_events: 20_000,
            footprint_runs: 10_000,
            fsync_time: Duration::from_secs(1),
            peer_runs: 2_000,
        }
    }

    fn quick() -> Self {
        Self {
            stored: [1_000, 10_000],
            direct_calls: 20_000,
            overhead_runs: 500,
            memory_runs: 2_000,
            sled_runs: 500,
            latency_samples: 50,
            memory_events: 20_000,
            sled_events: 2_000,
            footprint_runs: 1_000,
            fsync_time: Duration::from_millis(200),
            peer_runs: 500,
        }
    }
}

struct Options {
    quick: bool,
    repeat: usize,
    peer: bool,
    /// How long the peer may take before it is reported as stalled.
    peer_deadline: Duration,
    /// Only these groups of figures (for profiling); all if empty.
    only: Vec<String>,
}

impl Options {
    fn wants(&self, group: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|g| g == group)
    }

    /// Groups run only when named in `--only`.
    fn names(&self, group: &str) -> bool {
        self.only.iter().any(|g| g == group)
    }
}

/// The 1-minute load average, from `/proc/loadavg`.
fn load_average() -> (f64, String) {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let one = text
        .split_whitespace()
        .next()
        .and_then(|v| v.parse().ok())
        .unwrap_or(f64::NAN);
    (one, text.trim().to_owned())
}

fn options() -> Options {
    let mut options = Options {
        quick: false,
        repeat: 1,
        peer: false,
        peer_deadline: PEER_DEADLINE,
        only: Vec::new(),
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--quick" => options.quick = true,
            "--peer" => options.peer = true,
            "--peer-deadline" => {
                options.peer_deadline = args
                    .next()
                    .and_then(|n| n.parse().ok())
                    .map(Duration::from_secs)
                    .expect("--peer-deadline takes a number of seconds");
            }
            "--only" => options.only.extend(
                args.next()
                    .expect("--only takes a comma-separated list of groups")
                    .split(',')
                    .map(str::to_owned),
            ),
            "--repeat" => {
                options.repeat = args
                    .next()
                    .and_then(|n| n.parse().ok())
                    .filter(|&n: &usize| n > 0)
                    .expect("--repeat takes a positive number");
            }
            "-h" | "--help" => {
                println!(
                    "usage: headline [--quick] [--repeat N] [--peer [--peer-deadline SECONDS]] [--only GROUP,...]\n\
                     groups (for profiling): overhead, memory, sled, latency, \
                     ingest-memory, ingest-sled, footprint, batches (group commit at \
                     1, 16 and 256 runs in flight; only when named), instructions \
                     (callgrind counts of the hot paths, from the instructions binary; \
                     needs valgrind; only when named)"
                );
                std::process::exit(0);
            }
            other => panic!("unknown option {other:?}; try --help"),
        }
    }
    options
}

/// Samples of every figure, by name, then by stored-run count.
#[derive(Default)]
struct Samples(BTreeMap<&'static str, BTreeMap<usize, Vec<f64>>>);

impl Samples {
    fn add(&mut self, name: &'static str, stored: usize, value: f64) {
        eprintln!("  {name} @{stored}: {value:.1}");
        self.0
            .entry(name)
            .or_default()
            .entry(stored)
            .or_default()
            .push(value);
    }

    fn get(&self, name: &str, stored: usize) -> f64 {
        self.0
            .get(name)
            .and_then(|m| m.get(&stored))
            .map_or(f64::NAN, |v| median(v.clone()))
    }
}

fn main() {
    let options = options();
    let sizes = if options.quick {
        Sizes::quick()
    } else {
        Sizes::full()
    };
    let started = Instant::now();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let single = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");

    let (load_before, text) = load_average();
    eprintln!("load before: {text}");
    let mut templates = Vec::new();
    let sled_needed = options.peer
        || options.names("batches")
        || ["sled", "latency", "ingest-sled"]
            .iter()
            .any(|g| options.wants(g));
    for &stored in sizes.stored.iter().filter(|_| sled_needed) {
        let t = Instant::now();
        templates.push(rt.block_on(sled_template(stored)));
        eprintln!(
            "sled template with {stored} runs stored: {:.1}s",
            t.elapsed().as_secs_f64()
        );
    }

    let mut s = Samples::default();
    let mut batches = Vec::new();
    for round in 0..options.repeat {
        eprintln!("round {} of {}", round + 1, options.repeat);
        for (i, &stored) in sizes.stored.iter().enumerate() {
            let template = templates
                .get(i)
                .map_or_else(|| Path::new("/nonexistent"), |t| t.path());
            if options.wants("overhead") {
                let (engine_ns, direct_ns) = single.block_on(step_overhead(&sizes, stored));
                s.add("step_engine_ns", stored, engine_ns);
                s.add("step_direct_ns", stored, direct_ns);
                s.add("step_multiple", stored, engine_ns / direct_ns);
            }

            if options.wants("memory") {
                let memory = rt.block_on(async {
                    let store = MemoryStore::new();
                    prefill_history(&store, stored).await.expect("prefill");
                    closed(store, 3, sizes.memory_runs).await
                });
                s.add("runs_memory", stored, memory);
            }

            for (name, durability) in [
                ("runs_sled_relaxed", Durability::Relaxed),
                ("runs_sled_durable", Durability::Durable),
            ] {
                if !options.wants("sled") {
                    continue;
                }
                let value = rt.block_on(async {
                    let (_dir, store) = sled_copy(template, durability);
                    closed(store, 3, sizes.sled_runs).await
                });
                s.add(name, stored, value);
            }
            let fsync = {
                let dir = tempfile::tempdir().expect("temp dir");
                fdatasync_rate(dir.path(), sizes.fsync_time).expect("fdatasync baseline")
            };
            s.add("fdatasync", stored, fsync);
            s.add(
                "durable_steps_multiple",
                stored,
                3.0 * s.get("runs_sled_durable", stored) / fsync,
            );

            if options.wants("latency") {
                let (p50, p99) = rt.block_on(async {
                    let (_dir, store) = sled_copy(template, Durability::Durable);
                    sequential_latency(store, sizes.latency_samples).await
                });
                s.add("latency_p50_ms", stored, p50);
                s.add("latency_p99_ms", stored, p99);
            }

            if options.wants("ingest-memory") {
                let events = rt.block_on(async {
                    let store = MemoryStore::new();
                    prefill_history(&store, stored).await.expect("prefill");
                    ingestion(store, sizes.memory_events).await
                });
                s.add("ingest_memory", stored, events);
            }
            if options.wants("ingest-sled") {
                let events = rt.block_on(async {
                    let (_dir, store) = sled_copy(template, Durability::Durable);
                    ingestion(store, sizes.sled_events).await
                });
                s.add("ingest_sled_durable", stored, events);
            }

            if options.names("batches") {
                for in_flight in [1, 16, 256] {
                    let runs = (sizes.sled_runs * in_flight.min(16) / 16).max(100);
                    let (rate, stats) = rt.block_on(async {
                        let (_dir, store) = sled_copy(template, Durability::Durable);
                        let before = store.write_stats();
                        let rate = runs_per_s(store.clone(), 3, runs, in_flight)
                            .await
                            .expect("closed-loop workload");
                        (rate, store.write_stats().since(&before))
                    });
                    eprintln!(
                        "  group commit, {in_flight} in flight @{stored}: {rate:.0} runs/s; \
                         {:.1} writes per batch (max {}), {:.1} durable writes per flush, \
                         {:.1} keys and {:.0} bytes per run; batches by size (1, 2-3, 4-7, ...): {:?}",
                        stats.mean_batch(),
                        stats.max_batch,
                        stats.writes_per_flush(),
                        stats.keys as f64 / runs as f64,
                        stats.bytes as f64 / runs as f64,
                        stats.batch_sizes,
                    );
                    batches.push(format!(
                        "| {in_flight} | {stored} | {} | {:.1} | {} | {:.1} | {:.1} | {:.0} |",
                        fmt_rate(rate),
                        stats.mean_batch(),
                        stats.max_batch,
                        stats.writes_per_flush(),
                        stats.keys as f64 / runs as f64,
                        stats.bytes as f64 / runs as f64,
                    ));
                }
            }

            if options.wants("footprint") {
                let bytes = footprint(sizes.footprint_runs, stored);
                s.add("bytes_per_run", stored, bytes);
            }

            if options.peer {
                for (name, steps, durability) in [
                    ("one_step_sled_relaxed", 1, Durability::Relaxed),
                    ("one_step_sled_durable", 1, Durability::Durable),
                ] {
                    let value = rt.block_on(async {
                        let (_dir, store) = sled_copy(template, durability);
                        closed(store, steps, sizes.sled_runs).await
                    });
                    s.add(name, stored, value);
                }
            }
        }
    }
    let peer = options
        .peer
        .then(|| run_peer(sizes.peer_runs, options.repeat, options.peer_deadline));

    // Instruction counts do not move with the load: printed beside the
    // wall-clock figures, they are what to compare on a busy machine.
    let instructions = options
        .names("instructions")
        .then(|| instruction_counts(if options.quick { 100 } else { 200 }));
    let (load_after, text) = load_average();
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let busy = load_before.max(load_after) > cores as f64;
    print_table(&options, &sizes, &s, peer.as_ref(), busy);
    if !batches.is_empty() {
        println!();
        println!("Group commit, durable sled, 3-step runs (`--only batches`):");
        println!();
        println!("| runs in flight | stored | runs/s | writes per batch | largest batch | durable writes per flush | keys per run | bytes per run |");
        println!("|---:|---:|---:|---:|---:|---:|---:|---:|");
        for row in &batches {
            println!("{row}");
        }
    }
    if let Some(table) = instructions {
        println!();
        println!(
            "Instruction counts (callgrind, `--only instructions`; they do not follow the load \
             as wall-clock figures do, but vary by about 10% between runs):"
        );
        println!();
        print!("{table}");
    }
    println!();
    println!(
        "load average before: {load_before:.2}, after: {load_after:.2} ({cores} cores){}",
        if busy {
            "; above the core count, so no figure is called a pass"
        } else {
            ""
        }
    );
    eprintln!(
        "load after: {text}; took {:.0}s",
        started.elapsed().as_secs_f64()
    );
}

// ----- stores -----

/// A sled store in a temporary directory holding `stored` finished runs,
/// written with relaxed durability and closed: measurements copy it.
async fn sled_template(stored: usize) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = SledConfig {
        durability: Durability::Relaxed,
        ..SledConfig::default()
    };
    let store = SledStore::open_with(dir.path().join("db"), config).expect("open sled");
    prefill_history(&store, stored).await.expect("prefill");
    store.flush().await.expect("flush");
    drop(store);
    dir
}

/// A fresh copy of a template, opened with `durability`.
fn sled_copy(template: &Path, durability: Durability) -> (tempfile::TempDir, SledStore) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path: PathBuf = dir.path().join("db");
    copy_dir(&template.join("db"), &path).expect("copy template");
    let config = SledConfig {
        durability,
        ..SledConfig::default()
    };
    let store = SledStore::open_with(&path, config).expect("open sled copy");
    (dir, store)
}

// ----- measurements -----

/// Engine cost per no-op step (marginal: a 10-step run minus a 1-step run,
/// over 9 steps), and the cost of calling the same handler directly, in
/// nanoseconds, on one thread.
async fn step_overhead(sizes: &Sizes, stored: usize) -> (f64, f64) {
    let registry = noop_registry().expect("registry");
    let ctx = StepContext::detached("s0", payload(0));
    // Warm up, then time.
    for _ in 0..1_000 {
        let _ = registry.execute(NOOP, ctx.clone()).await;
    }
    let start = Instant::now();
    for _ in 0..sizes.direct_calls {
        let out = registry.execute(NOOP, ctx.clone()).await;
        debug_assert_eq!(out, Ok(Value::Null));
        std::hint::black_box(out).expect("no-op succeeds");
    }
    let direct = start.elapsed().as_nanos() as f64 / sizes.direct_calls as f64;

    let mut per_run = [0.0; 2];
    for (slot, steps) in [(0, 1), (1, 10)] {
        let store = MemoryStore::new();
        prefill_history(&store, stored).await.expect("prefill");
        let runs = sizes.overhead_runs;
        per_run[slot] = 1.0 / closed(store, steps, runs).await;
    }
    let engine = (per_run[1] - per_run[0]) / 9.0 * 1e9;
    (engine, direct)
}

/// p50 and p99, in milliseconds, of one 3-step run started and waited for
/// at a time.
async fn sequential_latency(store: SledStore, samples: usize) -> (f64, f64) {
    let registry = noop_registry().expect("registry");
    let engine = Engine::builder(store, registry).build();
    engine.start();
    let workflow = engine.ensure_workflow("latency").await.expect("workflow");
    engine
        .publish(workflow.id, definition(3, NOOP))
        .await
        .expect("publish");
    let mut latencies = Vec::with_capacity(samples);
    for i in 0..samples as u64 + 5 {
        let start = Instant::now();
        let run = engine
            .start_run(workflow.id, payload(i))
            .await
            .expect("start run");
        let run = engine.wait_for_run(run.id).await.expect("wait");
        assert_eq!(run.status, RunStatus::Succeeded);
        // The first few warm the caches.
        if i >= 5 {
            latencies.push(start.elapsed().as_secs_f64() * 1e3);
        }
    }
    engine.shutdown(Duration::from_secs(30)).await;
    (percentile(&latencies, 50.0), percentile(&latencies, 99.0))
}

/// Webhook-like deliveries per second: [`PRODUCERS`] tasks insert `events`
/// events, each with the run it starts; one in ten re-sends an earlier
/// delivery's dedup key.
async fn ingestion<S: Store + Clone>(store: S, events: usize) -> f64 {
    let (workflow, version) = catalog(&store, "ingest", definition(3, NOOP))
        .await
        .expect("ingest workflow");
    let version = Arc::new(version);
    let trigger = TriggerId::new();
    let start = Instant::now();
    let mut producers = tokio::task::JoinSet::new();
    for p in 0..PRODUCERS {
        let (store, version) = (store.clone(), Arc::clone(&version));
        producers.spawn(async move {
            let (mut inserted, mut duplicates) = (0usize, 0usize);
            // The body is parsed once: this measures the store, not json!.
            let body = payload(p as u64);
            for n in (p..events).step_by(PRODUCERS) {
                // One delivery in ten repeats the one five before it.
                let key = if n % 10 == 9 { n - 5 } else { n };
                let run = WorkflowRun::new(&version, body.clone(), chrono::Utc::now());
                let event = webhook_event(workflow.id, trigger, format!("delivery-{key}"), &run);
                let mut run = run;
                run.event_id = Some(event.id);
                match store.insert_event(&event, Some(&run)).await {
                    Ok(EventInsert::Inserted) => inserted += 1,
                    Ok(EventInsert::Duplicate(_)) => duplicates += 1,
                    Err(e) => panic!("insert_event failed: {e}"),
                }
            }
            (inserted, duplicates)
        });
    }
    let (mut inserted, mut duplicates) = (0, 0);
    while let Some(done) = producers.join_next().await {
        let (i, d) = done.expect("producer");
        inserted += i;
        duplicates += d;
    }
    let elapsed = start.elapsed();
    assert_eq!(inserted + duplicates, events);
    assert!(
        duplicates >= events / 10 - PRODUCERS,
        "{duplicates} duplicates"
    );
    events as f64 / elapsed.as_secs_f64()
}

/// [`runs_per_s`] with [`IN_FLIGHT`] runs in flight.
async fn closed<S: Store + Clone>(store: S, steps: usize, runs: usize) -> f64 {
    runs_per_s(store, steps, runs, IN_FLIGHT)
        .await
        .expect("closed-loop workload")
}

/// Heap bytes kept per completed run, from the `footprint` binary: it has
/// the counting allocator, which would slow every other figure here.
fn footprint(runs: usize, stored: usize) -> f64 {
    let output = cargo()
        .args([
            "run",
            "--release",
            "-q",
            "-p",
            "taskforge-benches",
            "--bin",
            "footprint",
            "--",
        ])
        .args(["--runs", &runs.to_string(), "--stored", &stored.to_string()])
        .output()
        .expect("run cargo");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "footprint failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("bytes_per_run "))
        .and_then(|v| v.trim().parse().ok())
        .expect("footprint prints bytes_per_run")
}

/// The table of the `instructions` binary (which runs the hot paths under
/// callgrind), with `ops` operations per mode.
fn instruction_counts(ops: usize) -> String {
    let output = cargo()
        .args([
            "run",
            "--release",
            "-q",
            "-p",
            "taskforge-benches",
            "--bin",
            "instructions",
            "--",
        ])
        .args(["--ops", &ops.to_string()])
        .output()
        .expect("run cargo");
    if !output.status.success() {
        return format!(
            "instructions failed: {}\n",
            String::from_utf8_lossy(&output.stderr)
                .lines()
                .rev()
                .take(3)
                .collect::<Vec<_>>()
                .join(" | ")
        );
    }
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// `cargo`, run from the workspace root.
fn cargo() -> std::process::Command {
    let mut command = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    command.current_dir(root());
    command
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

// ----- the peer -----

struct Peer {
    one_step: f64,
    three_step: f64,
}

/// How long the peer may take, its build included, before it is stopped
/// and reported as stalled: the headline's own figures take about four
/// minutes, so a `--peer` run ends within ten whatever the peer does.
const PEER_DEADLINE: Duration = Duration::from_secs(5 * 60);

fn run_peer(runs: usize, repeat: usize, deadline: Duration) -> Result<Peer, String> {
    use std::io::{BufRead, BufReader, Read};
    use std::os::unix::process::CommandExt;
    use std::process::Stdio;

    let manifest = root().join("benches/peer/apalis-bench/Cargo.toml");
    eprintln!(
        "building and running the peer ({}), for {} s at most",
        manifest.display(),
        deadline.as_secs()
    );
    let started = Instant::now();
    let mut child = cargo()
        .args(["run", "--release", "--manifest-path"])
        .arg(&manifest)
        .args(["--", "--runs", &runs.to_string()])
        .args(["--repeat", &repeat.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group: a stalled peer is stopped with cargo.
        .process_group(0)
        .spawn()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    // Read as the peer prints, so whatever it measured before stalling is
    // kept, and so a full pipe never blocks it.
    let stdout = child.stdout.take().map(|out| {
        std::thread::spawn(move || {
            let mut lines = Vec::new();
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                eprintln!("{line}");
                lines.push(line);
            }
            lines
        })
    });
    let stderr = child.stderr.take().map(|mut err| {
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = err.read_to_string(&mut text);
            text
        })
    });
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if started.elapsed() >= deadline => {
                // The whole group: cargo and the peer it started.
                // (`--` first: procps' kill reads a bare `-N` as an option.)
                let _ = Command::new("kill")
                    .args(["-s", "KILL", "--", &format!("-{}", child.id())])
                    .status();
                let _ = child.wait();
                break None;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(100)),
            Err(e) => return Err(format!("cannot wait for the peer: {e}")),
        }
    };
    let stdout = stdout
        .map(|t| t.join().unwrap_or_default())
        .unwrap_or_default();
    let stderr = stderr
        .map(|t| t.join().unwrap_or_default())
        .unwrap_or_default();
    let tail = |text: &str| text.lines().rev().take(3).collect::<Vec<_>>().join(" | ");
    let Some(status) = status else {
        let progress = stdout
            .iter()
            .rev()
            .find(|l| l.starts_with("peer-progress "))
            .map_or_else(|| tail(&stderr), Clone::clone);
        return Err(format!(
            "stalled: stopped after {} s (last: {progress})",
            deadline.as_secs()
        ));
    };
    if !status.success() {
        return Err(format!("the peer failed ({status}): {}", tail(&stderr)));
    }
    let figure = |name: &str| {
        stdout
            .iter()
            .find_map(|l| l.strip_prefix(&format!("peer {name} ")))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .ok_or_else(|| format!("the peer printed no {name} figure"))
    };
    Ok(Peer {
        one_step: figure("one_step")?,
        three_step: figure("three_step")?,
    })
}

// ----- the table -----

fn fmt_rate(v: f64) -> String {
    if v.is_nan() {
        return "-".into();
    }
    let n = v.round() as u64;
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// One row of the table: label, figure, unit, (baseline, multiple),
/// target text, and the check of the target.
type Row = (
    &'static str,
    &'static str,
    &'static str,
    Option<(&'static str, &'static str)>,
    &'static str,
    fn(f64) -> bool,
);

fn print_table(
    options: &Options,
    sizes: &Sizes,
    s: &Samples,
    peer: Option<&Result<Peer, String>>,
    busy: bool,
) {
    let [lo, hi] = sizes.stored;
    println!();
    println!(
        "Taskforge headline ({}; medians of {} round{}; {} cores)",
        if options.quick { "--quick" } else { "full" },
        options.repeat,
        if options.repeat == 1 { "" } else { "s" },
        std::thread::available_parallelism().map_or(0, usize::from),
    );
    println!();
    println!(
        "| figure | {} stored | {} stored | flat ({}/{}) | baseline (same run) | vs baseline | target | holds |",
        fmt_rate(lo as f64),
        fmt_rate(hi as f64),
        fmt_rate(hi as f64),
        fmt_rate(lo as f64)
    );
    println!("|---|---:|---:|---:|---|---:|---|---|");
    // (label, figure, unit, (baseline, multiple), target text, check)
    let rows: Vec<Row> = vec![
        (
            "step overhead, no-op step via engine (memory store)",
            "step_engine_ns",
            "ns/step",
            Some(("step_direct_ns", "step_multiple")),
            "<= 10x direct call",
            |m| m <= 10.0,
        ),
        (
            "3-step runs/s, 256 in flight, memory",
            "runs_memory",
            "runs/s",
            None,
            ">= 50,000 runs/s",
            |v| v >= 50_000.0,
        ),
        (
            "3-step runs/s, 256 in flight, sled relaxed",
            "runs_sled_relaxed",
            "runs/s",
            None,
            "-",
            |_| true,
        ),
        (
            "3-step runs/s, 256 in flight, sled durable",
            "runs_sled_durable",
            "runs/s",
            None,
            "-",
            |_| true,
        ),
        (
            "durable steps/s, sled, 256 runs in flight",
            "durable_steps",
            "steps/s",
            Some(("fdatasync", "durable_steps_multiple")),
            ">= 3x fdatasync/s",
            |m| m >= 3.0,
        ),
        (
            "sequential durable 3-step run, sled, p50",
            "latency_p50_ms",
            "ms",
            None,
            "< 1 ms",
            |v| v < 1.0,
        ),
        (
            "sequential durable 3-step run, sled, p99",
            "latency_p99_ms",
            "ms",
            None,
            "-",
            |_| true,
        ),
        (
            "event ingestion with dedup, memory, 64 producers",
            "ingest_memory",
            "events/s",
            None,
            ">= 500,000/s",
            |v| v >= 500_000.0,
        ),
        (
            "event ingestion with dedup, sled durable, 64 producers",
            "ingest_sled_durable",
            "events/s",
            None,
            ">= 50,000/s",
            |v| v >= 50_000.0,
        ),
        (
            "heap per completed run, memory store, 200 B input",
            "bytes_per_run",
            "bytes",
            None,
            "<= 4,096 B",
            |v| v <= 4096.0,
        ),
    ];
    for (label, figure, unit, baseline, target, check) in rows {
        let value = |stored| {
            if figure == "durable_steps" {
                3.0 * s.get("runs_sled_durable", stored)
            } else {
                s.get(figure, stored)
            }
        };
        let (a, b) = (value(lo), value(hi));
        let show = |v: f64| {
            if unit == "ms" {
                format!("{v:.2} {unit}")
            } else {
                format!("{} {unit}", fmt_rate(v))
            }
        };
        let (base, multiple, holds) = match baseline {
            Some((base, multiple)) => {
                let (m_lo, m_hi) = (s.get(multiple, lo), s.get(multiple, hi));
                let base_text = match base {
                    "fdatasync" => format!(
                        "128 B append+fdatasync: {} /s",
                        fmt_rate(s.get(base, lo).min(s.get(base, hi)))
                    ),
                    _ => format!(
                        "direct StepRegistry::execute: {:.0} ns",
                        s.get(base, lo).min(s.get(base, hi))
                    ),
                };
                (
                    base_text,
                    format!("{m_lo:.1}x / {m_hi:.1}x"),
                    check(m_lo) && check(m_hi),
                )
            }
            None => ("-".into(), "-".into(), check(a) && check(b)),
        };
        let verdict = if target == "-" || a.is_nan() {
            "-"
        } else if busy {
            "n/a (load)"
        } else if holds {
            "yes"
        } else {
            "NO"
        };
        println!(
            "| {label} | {} | {} | {:.2} | {base} | {multiple} | {target} | {verdict} |",
            show(a),
            show(b),
            b / a
        );
    }
    match peer {
        None => {}
        Some(Err(reason)) => {
            println!("| vs apalis (SQLite) | - | - | - | {reason} | - | >= 10x | - |")
        }
        Some(Ok(peer)) => {
            for (label, ours, theirs) in [
                (
                    "1-step jobs/s vs apalis, sled relaxed",
                    "one_step_sled_relaxed",
                    peer.one_step,
                ),
                (
                    "1-step jobs/s vs apalis, sled durable",
                    "one_step_sled_durable",
                    peer.one_step,
                ),
                (
                    "3-step runs/s vs apalis, sled relaxed",
                    "runs_sled_relaxed",
                    peer.three_step,
                ),
                (
                    "3-step runs/s vs apalis, sled durable",
                    "runs_sled_durable",
                    peer.three_step,
                ),
            ] {
                let (a, b) = (s.get(ours, lo), s.get(ours, hi));
                let (m_lo, m_hi) = (a / theirs, b / theirs);
                println!(
                    "| {label} | {} /s | {} /s | {:.2} | apalis-sqlite, best mode: {} /s | {m_lo:.1}x / {m_hi:.1}x | >= 10x | {} |",
                    fmt_rate(a),
                    fmt_rate(b),
                    b / a,
                    fmt_rate(theirs),
                    if busy {
                        "n/a (load)"
                    } else if m_lo >= 10.0 && m_hi >= 10.0 {
                        "yes"
                    } else {
                        "NO"
                    }
                );
            }
        }
    }
    println!();
    println!(
        "runs per throughput figure: memory {}, sled {}; latency samples {}; events: memory {}, sled {}; footprint runs {}",
        fmt_rate(sizes.memory_runs as f64),
        fmt_rate(sizes.sled_runs as f64),
        sizes.latency_samples,
        fmt_rate(sizes.memory_events as f64),
        fmt_rate(sizes.sled_events as f64),
        fmt_rate(sizes.footprint_runs as f64),
    );
}
