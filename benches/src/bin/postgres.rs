//! Headline figures of the PostgreSQL store, each workload on a fresh
//! schema of the database at `TASKFORGE_PG_URL`: one-step jobs/s and
//! three-step runs/s (256 in flight, closed loop), and the sequential
//! three-step latency p50/p99; beside them, measured in the same run, what
//! bounds them: one durable single-row `UPDATE` alone (the server's flush
//! latency) and from 64 connections (its transaction rate), and the CPU
//! time the engine and the server's backends serving it spend per run.
//!
//! ```sh
//! TASKFORGE_PG_URL=postgres://postgres@127.0.0.1:5432/test \
//!     cargo run --release -p taskforge-benches --bin postgres -- --runs 5000 --repeat 3
//! ```
//!
//! Flags: `--runs N` per throughput workload (5,000), `--samples N` of the
//! latency (500), `--repeat N` (medians of N rounds), `--only
//! one,three,seq,floor`, `--pool N` connections (32), `--async-commit`
//! (the store's `synchronous_commit(false)` opt-in), `--engines N` engine
//! processes sharing the throughput workloads (1; with more, each workload
//! runs for `--seconds S`, 10, instead of a number of runs).

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use taskforge_benches::{
    closed_loop_registry, definition, median, noop_registry, payload, percentile, runs_per_s,
    settle, Completion, NOOP, NOOP_LAST,
};
use taskforge_core::store::{RunStore, MAX_PAGE_SIZE};
use taskforge_core::{Engine, RunQuery, RunStatus};
use taskforge_store_postgres::tokio_postgres::{self, NoTls};
use taskforge_store_postgres::{PostgresConfig, PostgresStore};

const IN_FLIGHT: usize = 256;

#[derive(Clone)]
struct Options {
    url: String,
    runs: usize,
    samples: usize,
    repeat: usize,
    only: Vec<String>,
    pool: usize,
    async_commit: bool,
    engines: usize,
    seconds: u64,
}

impl Options {
    fn wants(&self, name: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|o| o == name)
    }

    fn config(&self, schema: &str) -> PostgresConfig {
        PostgresConfig::new(&self.url)
            .schema(schema)
            .pool_size(self.pool)
            .synchronous_commit(!self.async_commit)
    }
}

async fn fresh(options: &Options, name: &str) -> PostgresStore {
    let schema = format!("tf_bench_{name}_{}", std::process::id());
    let store = PostgresStore::connect_with(options.config(&schema))
        .await
        .expect("open the PostgreSQL store");
    store.drop_schema().await.expect("drop a leftover schema");
    PostgresStore::connect_with(options.config(&schema))
        .await
        .expect("reopen the PostgreSQL store")
}

async fn sequential_latency(store: PostgresStore, samples: usize) -> (f64, f64) {
    let engine = Engine::builder(store, noop_registry().expect("registry")).build();
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
        if i >= 5 {
            latencies.push(start.elapsed().as_secs_f64() * 1e3);
        }
    }
    engine.shutdown(Duration::from_secs(30)).await;
    (percentile(&latencies, 50.0), percentile(&latencies, 99.0))
}

/// CPU seconds (user + system) of this process so far.
fn own_cpu() -> f64 {
    cpu_of("self").unwrap_or(0.0)
}

/// CPU seconds of `/proc/<pid>`, with its waited-for children.
fn cpu_of(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.get(stat.rfind(')')? + 2..)?.split(' ').collect();
    let ticks: f64 = fields[11..15]
        .iter()
        .filter_map(|f| f.parse::<f64>().ok())
        .sum();
    Some(ticks / 100.0)
}

/// The local TCP ports of this process's sockets (its connections to the
/// server), from `/proc`.
fn own_ports() -> std::collections::HashSet<u16> {
    let inodes: std::collections::HashSet<String> = std::fs::read_dir("/proc/self/fd")
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter_map(|fd| std::fs::read_link(fd.path()).ok())
        .filter_map(|link| {
            let link = link.to_string_lossy().into_owned();
            link.strip_prefix("socket:[")
                .and_then(|rest| rest.strip_suffix(']'))
                .map(str::to_owned)
        })
        .collect();
    let mut ports = std::collections::HashSet::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() > 9 && inodes.contains(fields[9]) {
                if let Some(port) = fields[1]
                    .rsplit(':')
                    .next()
                    .and_then(|p| u16::from_str_radix(p, 16).ok())
                {
                    ports.insert(port);
                }
            }
        }
    }
    ports
}

/// CPU seconds, per server process, of the backends serving this process
/// (when the server runs on this machine): the server's work for this
/// benchmark, without other clients' and without shared background work
/// (WAL writer, checkpointer, autovacuum).
async fn backend_cpu(url: &str) -> std::collections::HashMap<i32, f64> {
    let ports = own_ports();
    let Ok((client, connection)) = tokio_postgres::connect(url, NoTls).await else {
        return Default::default();
    };
    let driver = tokio::spawn(connection);
    let rows = client
        .query(
            "SELECT pid, client_port FROM pg_stat_activity WHERE client_port IS NOT NULL",
            &[],
        )
        .await
        .unwrap_or_default();
    drop(client);
    let _ = driver.await;
    rows.iter()
        .filter(|row| {
            let port: i32 = row.get(1);
            u16::try_from(port).is_ok_and(|p| ports.contains(&p))
        })
        .filter_map(|row| {
            let pid: i32 = row.get(0);
            cpu_of(&pid.to_string()).map(|cpu| (pid, cpu))
        })
        .collect()
}

/// What one throughput measurement gave.
struct Throughput {
    per_s: f64,
    /// CPU milliseconds per run: this process (the engine, or the driver
    /// and the engine processes it waited for) and the server backends
    /// serving this process (not those of the engine processes).
    engine_ms: f64,
    server_ms: f64,
}

async fn throughput(options: &Options, steps: usize) -> Throughput {
    let name = if steps == 1 { "one" } else { "three" };
    let store = fresh(options, name).await;
    let (cpu0, server0) = (own_cpu(), backend_cpu(&options.url).await);
    let (per_s, runs) = if options.engines <= 1 {
        let per_s = runs_per_s(store.clone(), steps, options.runs, IN_FLIGHT)
            .await
            .expect("throughput");
        (per_s, options.runs)
    } else {
        several_engines(options, &store, steps).await
    };
    let runs = runs as f64;
    let engine_ms = (own_cpu() - cpu0) * 1e3 / runs;
    let server1 = backend_cpu(&options.url).await;
    let server_ms = server1
        .iter()
        .map(|(pid, cpu)| cpu - server0.get(pid).copied().unwrap_or(0.0))
        .sum::<f64>()
        * 1e3
        / runs;
    store.drop_schema().await.expect("drop");
    Throughput {
        per_s,
        engine_ms,
        server_ms,
    }
}

/// Runs the throughput workload on `options.engines` engine processes
/// (this binary with `--engine-child`) on one schema for `--seconds`:
/// each keeps its share of the 256 runs in flight (a run's last step,
/// wherever it ran, frees a slot of the process that ran it, so the 256
/// are kept across the processes), then stops starting runs; the rate is
/// the runs finished over the time until every run finished.
async fn several_engines(options: &Options, store: &PostgresStore, steps: usize) -> (f64, usize) {
    let engines = options.engines;
    let exe = std::env::current_exe().expect("this binary");
    let start = Instant::now();
    let children: Vec<_> = (0..engines)
        .map(|_| {
            Command::new(&exe)
                .args([
                    "--engine-child",
                    store.schema(),
                    &steps.to_string(),
                    &options.seconds.to_string(),
                    &(IN_FLIGHT / engines).to_string(),
                    &options.pool.to_string(),
                    if options.async_commit {
                        "async"
                    } else {
                        "sync"
                    },
                ])
                .stdout(Stdio::null())
                .spawn()
                .expect("start an engine process")
        })
        .collect();
    for mut child in children {
        let status = child.wait().expect("engine process");
        assert!(status.success(), "an engine process failed");
    }
    let elapsed = start.elapsed();
    let query = RunQuery {
        status: Some(RunStatus::Succeeded),
        limit: MAX_PAGE_SIZE,
        ..RunQuery::default()
    };
    let mut finished = 0;
    let mut page = store.list_runs(&query).await.expect("list runs");
    loop {
        finished += page.items.len();
        let Some(after) = page.next else { break };
        page = store
            .list_runs(&RunQuery {
                after: Some(after),
                ..query.clone()
            })
            .await
            .expect("list runs");
    }
    (finished as f64 / elapsed.as_secs_f64(), finished)
}

/// One engine process of [`several_engines`].
fn engine_child(args: &[String]) {
    let [schema, steps, seconds, in_flight, pool, commit] = args else {
        panic!("engine child arguments: {args:?}");
    };
    let steps: usize = steps.parse().expect("steps");
    let seconds: u64 = seconds.parse().expect("seconds");
    let in_flight: usize = in_flight.parse().expect("in flight");
    let url = std::env::var("TASKFORGE_PG_URL").expect("TASKFORGE_PG_URL");
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let config = PostgresConfig::new(url)
            .schema(schema)
            .pool_size(pool.parse().expect("pool"))
            .synchronous_commit(commit == "sync");
        let store = PostgresStore::connect_with(config)
            .await
            .expect("open the store");
        let completion = Completion::new(in_flight);
        let engine = Engine::builder(
            store.clone(),
            closed_loop_registry(&completion).expect("registry"),
        )
        .max_concurrent_runs(in_flight)
        .build();
        engine.start();
        let workflow = engine
            .ensure_workflow(&format!("bench-{steps}"))
            .await
            .expect("workflow");
        engine
            .publish(workflow.id, definition(steps, NOOP_LAST))
            .await
            .expect("publish");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(seconds);
        let mut starts = tokio::task::JoinSet::new();
        loop {
            tokio::select! {
                () = completion.take_slot() => {}
                () = tokio::time::sleep_until(deadline) => break,
            }
            let engine = engine.clone();
            let input = payload(0);
            starts.spawn(async move { engine.start_run(workflow.id, input).await.map(drop) });
            while let Some(done) = starts.try_join_next() {
                done.expect("task").expect("start a run");
            }
        }
        while let Some(done) = starts.join_next().await {
            done.expect("task").expect("start a run");
        }
        settle(&store).await.expect("settle");
        engine.shutdown(Duration::from_secs(30)).await;
    });
}

/// The floor of one durable write on this server, in the same run: a
/// single-row `UPDATE` in its own transaction, one at a time (p50 ms) and
/// from 64 connections at once (transactions/s).
async fn floor(options: &Options) -> (f64, f64) {
    let url = &options.url;
    let connect = || async {
        let (client, connection) = tokio_postgres::connect(url, NoTls).await.expect("connect");
        tokio::spawn(connection);
        if options.async_commit {
            client
                .batch_execute("SET synchronous_commit = off")
                .await
                .expect("set");
        }
        client
    };
    let table = format!("tf_bench_floor_{}", std::process::id());
    let client = connect().await;
    client
        .batch_execute(&format!(
            "DROP TABLE IF EXISTS {table};
             CREATE TABLE {table} (id int PRIMARY KEY, n bigint NOT NULL);
             INSERT INTO {table} SELECT i, 0 FROM generate_series(1, 64) AS i;"
        ))
        .await
        .expect("floor table");
    let update = format!("UPDATE {table} SET n = n + 1 WHERE id = $1");
    let statement = client.prepare(&update).await.expect("prepare");
    let mut latencies = Vec::new();
    for _ in 0..200 {
        let start = Instant::now();
        client.execute(&statement, &[&1i32]).await.expect("update");
        latencies.push(start.elapsed().as_secs_f64() * 1e3);
    }
    let p50 = percentile(&latencies, 50.0);
    // Every connection first, then the clock.
    let mut clients = Vec::new();
    for _ in 0..64 {
        clients.push(connect().await);
    }
    let start = Instant::now();
    let deadline = start + Duration::from_secs(3);
    let mut tasks = Vec::new();
    for (id, client) in (1..=64i32).zip(clients) {
        let update = update.clone();
        tasks.push(tokio::spawn(async move {
            let statement = client.prepare(&update).await.expect("prepare");
            let mut n = 0u64;
            while Instant::now() < deadline {
                client.execute(&statement, &[&id]).await.expect("update");
                n += 1;
            }
            n
        }));
    }
    let mut total = 0;
    for task in tasks {
        total += task.await.expect("task");
    }
    let tps = total as f64 / start.elapsed().as_secs_f64();
    client
        .batch_execute(&format!("DROP TABLE {table}"))
        .await
        .expect("drop");
    (p50, tps)
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split(' ').take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn parse() -> Option<Options> {
    let url = std::env::var("TASKFORGE_PG_URL").ok()?;
    let mut options = Options {
        url,
        runs: 5_000,
        samples: 500,
        repeat: 1,
        only: Vec::new(),
        pool: 32,
        async_commit: false,
        engines: 1,
        seconds: 10,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut number =
            |default: usize| args.next().and_then(|n| n.parse().ok()).unwrap_or(default);
        match arg.as_str() {
            "--runs" => options.runs = number(options.runs),
            "--samples" => options.samples = number(options.samples),
            "--repeat" => options.repeat = number(1).max(1),
            "--pool" => options.pool = number(options.pool),
            "--engines" => options.engines = number(1).max(1),
            "--seconds" => options.seconds = number(10) as u64,
            "--async-commit" => options.async_commit = true,
            "--only" => {
                options.only = args
                    .next()
                    .unwrap_or_default()
                    .split(',')
                    .map(str::to_owned)
                    .collect();
            }
            other => panic!("unknown flag {other}"),
        }
    }
    Some(options)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--engine-child") {
        engine_child(&args[2..]);
        return;
    }
    let Some(options) = parse() else {
        eprintln!("set TASKFORGE_PG_URL (e.g. postgres://postgres@127.0.0.1:5432/test)");
        return;
    };
    eprintln!("load average before: {}", load_average());
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let mut rounds = Vec::new();
    for round in 0..options.repeat {
        let result = runtime.block_on(async {
            let mut result = Round::default();
            if options.wants("floor") {
                result.floor = Some(floor(&options).await);
            }
            if options.wants("one") {
                result.one = Some(throughput(&options, 1).await);
            }
            if options.wants("three") {
                result.three = Some(throughput(&options, 3).await);
            }
            if options.wants("seq") {
                let store = fresh(&options, "seq").await;
                result.seq = Some(sequential_latency(store.clone(), options.samples).await);
                store.drop_schema().await.expect("drop");
            }
            result
        });
        eprintln!("round {}: {}", round + 1, result.line());
        rounds.push(result);
    }
    eprintln!("load average after: {}", load_average());
    let med = |f: &dyn Fn(&Round) -> Option<f64>| {
        let values: Vec<f64> = rounds.iter().filter_map(f).collect();
        (!values.is_empty()).then(|| median(values))
    };
    println!(
        "postgres, {} engine process(es), pool {}, synchronous_commit {}, {}, medians of {}",
        options.engines,
        options.pool,
        if options.async_commit { "off" } else { "on" },
        if options.engines > 1 {
            format!("{} s per workload", options.seconds)
        } else {
            format!("{} runs per workload", options.runs)
        },
        options.repeat
    );
    if let Some(v) = med(&|r| r.one.as_ref().map(|t| t.per_s)) {
        println!("one-step jobs/s (256 in flight)           {v:>10.0}");
        println!(
            "  CPU per job: engine {:.3} ms, server {:.3} ms",
            med(&|r| r.one.as_ref().map(|t| t.engine_ms)).unwrap_or(0.0),
            med(&|r| r.one.as_ref().map(|t| t.server_ms)).unwrap_or(0.0)
        );
    }
    if let Some(v) = med(&|r| r.three.as_ref().map(|t| t.per_s)) {
        println!("three-step runs/s (256 in flight)         {v:>10.0}");
        println!(
            "  CPU per run: engine {:.3} ms, server {:.3} ms",
            med(&|r| r.three.as_ref().map(|t| t.engine_ms)).unwrap_or(0.0),
            med(&|r| r.three.as_ref().map(|t| t.server_ms)).unwrap_or(0.0)
        );
    }
    if let (Some(p50), Some(p99)) = (med(&|r| r.seq.map(|s| s.0)), med(&|r| r.seq.map(|s| s.1))) {
        println!("sequential three-step p50 / p99 (ms)      {p50:>7.2} / {p99:.2}");
    }
    if let (Some(p50), Some(tps)) = (
        med(&|r| r.floor.map(|f| f.0)),
        med(&|r| r.floor.map(|f| f.1)),
    ) {
        println!("floor: one-row UPDATE alone p50 (ms)      {p50:>7.2}");
        println!("floor: one-row UPDATEs, 64 connections /s {tps:>10.0}");
    }
}

#[derive(Default)]
struct Round {
    one: Option<Throughput>,
    three: Option<Throughput>,
    seq: Option<(f64, f64)>,
    floor: Option<(f64, f64)>,
}

impl Round {
    fn line(&self) -> String {
        let mut parts = Vec::new();
        if let Some(t) = &self.one {
            parts.push(format!(
                "one {:.0}/s (cpu {:.3}+{:.3} ms)",
                t.per_s, t.engine_ms, t.server_ms
            ));
        }
        if let Some(t) = &self.three {
            parts.push(format!(
                "three {:.0}/s (cpu {:.3}+{:.3} ms)",
                t.per_s, t.engine_ms, t.server_ms
            ));
        }
        if let Some((p50, p99)) = self.seq {
            parts.push(format!("seq {p50:.2}/{p99:.2} ms"));
        }
        if let Some((p50, tps)) = self.floor {
            parts.push(format!("floor {p50:.2} ms, {tps:.0}/s"));
        }
        parts.join(", ")
    }
}
