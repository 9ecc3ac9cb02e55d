//! Several engine processes on one PostgreSQL schema.
//!
//! The children are this test binary, launched again to run only
//! [`engine_child`] with `TASKFORGE_MP_SCHEMA` set (without it,
//! `engine_child` returns at once). A child opens the store, starts an
//! engine (1 s lease) whose one handler, `work`, runs every step, and
//! works until it is killed. Each invocation of `work`:
//! - takes a PostgreSQL advisory lock keyed by `(run, step)` on a
//!   connection of its own process, and an in-process guard: if either is
//!   held, another invocation of the step is running at that moment, and
//!   the child logs a `violation` line (the lock dies with its process, so
//!   a killed child holds nothing);
//! - appends `begin <run> <step> <attempt> <child>` to the child's log,
//!   then `end ...` when it is done (a single `write` per line, so a
//!   SIGKILL loses no acknowledged line).
//!
//! [`three_engines_share_runs_and_survive_a_kill`] starts the victim child
//! alone on one run; it parks its first invocation and says so in its log.
//! Then the parent starts two more children and inserts the other runs, and
//! kills the victim (SIGKILL), still inside that step and likely others,
//! once the logs show a tenth of the steps begun: kill points come from
//! progress the children report, never from a timer. A restarted child
//! takes its place. When every run is finished, the parent checks
//! that every run succeeded, that no step attempt ran in two places at
//! once, that no step ran again after an attempt of it succeeded (nor any
//! attempt twice), and that the parked attempt was interrupted and retried.
//!
//! 200 runs by default (a few seconds); the long form:
//!
//! ```sh
//! TASKFORGE_MP_RUNS=1000 TASKFORGE_PG_URL=postgres://postgres@127.0.0.1:5432/test \
//!     cargo test -p taskforge-store-postgres --test multiprocess -- --nocapture
//! ```
//!
//! Built only when `TASKFORGE_PG_URL` is set (see `build.rs`).

#![cfg(all(taskforge_pg, unix))]

mod common;

use std::collections::{HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use serde_json::{json, Value};
use taskforge_core::store::{RunQuery, RunStore, RunStoreExt, WorkflowStore};
use taskforge_core::{
    Engine, RetryPolicy, RunStatus, StepContext, StepDefinition, StepError, StepRegistry,
    StepStatus, Workflow, WorkflowDefinition, WorkflowRun, WorkflowVersion,
};
use taskforge_store_postgres::PostgresStore;
use tokio_postgres::NoTls;

use common::{fresh_schema, open, url, DropSchema};

const SCHEMA_ENV: &str = "TASKFORGE_MP_SCHEMA";
const NAME_ENV: &str = "TASKFORGE_MP_NAME";
const LOG_ENV: &str = "TASKFORGE_MP_LOG";
const PARK_ENV: &str = "TASKFORGE_MP_PARK_AT";
const RUNS_ENV: &str = "TASKFORGE_MP_RUNS";
const DEFAULT_RUNS: usize = 200;
const CHILD_TEST: &str = "engine_child";
const STEPS: [&str; 3] = ["fetch", "build", "ship"];
/// A guard against a hang, never a timing assertion.
const PATIENCE: Duration = Duration::from_secs(240);
/// A child left behind by a crashed parent stops by itself after this.
const CHILD_LIFETIME: Duration = Duration::from_secs(600);

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime")
}

// ----- the child -----

/// Appends whole lines to a log file, one `write` each.
#[derive(Clone)]
struct Log(Arc<Mutex<File>>);

impl Log {
    fn line(&self, line: &str) {
        let mut file = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let _ = file.write_all(format!("{line}\n").as_bytes());
    }
}

#[test]
fn engine_child() {
    let Ok(schema) = std::env::var(SCHEMA_ENV) else {
        return;
    };
    let name = std::env::var(NAME_ENV).expect("child name");
    let log = std::env::var(LOG_ENV).expect("child log");
    let park_at = std::env::var(PARK_ENV).ok().and_then(|n| n.parse().ok());
    runtime().block_on(child(schema, name, PathBuf::from(log), park_at));
}

async fn child(schema: String, name: String, log: PathBuf, park_at: Option<usize>) {
    let log = Log(Arc::new(Mutex::new(
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .expect("open the log"),
    )));
    let store = open(&schema).await;
    let (locks, connection) = tokio_postgres::connect(&url(), NoTls)
        .await
        .expect("connect for advisory locks");
    tokio::spawn(connection);
    let locks = Arc::new(locks);
    let running: Arc<Mutex<HashSet<String>>> = Arc::default();
    let invocations = Arc::new(AtomicUsize::new(0));

    let mut registry = StepRegistry::new();
    let owner = name.clone();
    registry
        .step("work", move |ctx: StepContext, _input: Value| {
            let (log, locks, running, invocations, name) = (
                log.clone(),
                Arc::clone(&locks),
                Arc::clone(&running),
                Arc::clone(&invocations),
                owner.clone(),
            );
            async move {
                let key = format!("{}/{}", ctx.run_id(), ctx.step_key());
                let mine = running
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(key.clone());
                let locked: bool = locks
                    .query_one(
                        "SELECT pg_try_advisory_lock(hashtextextended($1, 0))",
                        &[&key],
                    )
                    .await
                    .map_err(StepError::retryable)?
                    .get(0);
                let line = format!(
                    "{} {} {} {name}",
                    ctx.run_id(),
                    ctx.step_key(),
                    ctx.attempt()
                );
                log.line(&format!("begin {line}"));
                if !mine || !locked {
                    log.line(&format!("violation {key} is running elsewhere"));
                }
                if Some(invocations.fetch_add(1, Ordering::SeqCst) + 1) == park_at {
                    log.line("parked");
                    std::future::pending::<()>().await;
                }
                tokio::task::yield_now().await;
                log.line(&format!("end {line}"));
                running
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&key);
                if locked {
                    locks
                        .execute(
                            "SELECT pg_advisory_unlock(hashtextextended($1, 0))",
                            &[&key],
                        )
                        .await
                        .map_err(StepError::retryable)?;
                }
                Ok::<_, StepError>(json!({ "step": ctx.step_key(), "by": name }))
            }
        })
        .expect("register");
    let engine = Engine::builder(store, registry)
        .owner(name)
        .lease_ttl(Duration::from_secs(1))
        .poll_interval(Duration::from_millis(50))
        // Few runs at a time, so that no engine takes all the work at once.
        .max_concurrent_runs(16)
        .build();
    engine.start();
    tokio::time::sleep(CHILD_LIFETIME).await;
}

// ----- the parent -----

/// Children killed when the test ends, however it ends.
#[derive(Default)]
struct Children(HashMap<String, Child>);

impl Children {
    fn spawn(&mut self, dir: &Path, schema: &str, name: &str, park_at: Option<usize>) {
        let output = File::create(dir.join(format!("{name}.out"))).expect("child output");
        let mut command = Command::new(std::env::current_exe().expect("the test binary"));
        command
            .args([CHILD_TEST, "--exact", "--nocapture", "--test-threads=1"])
            .env(SCHEMA_ENV, schema)
            .env(NAME_ENV, name)
            .env(LOG_ENV, dir.join(format!("{name}.log")))
            .stdin(Stdio::null())
            .stdout(output.try_clone().expect("clone a file handle"))
            .stderr(output);
        if let Some(n) = park_at {
            command.env(PARK_ENV, n.to_string());
        }
        let child = command.spawn().expect("launch a child");
        self.0.insert(name.to_owned(), child);
    }

    fn kill(&mut self, name: &str) {
        if let Some(mut child) = self.0.remove(name) {
            let _ = child.kill(); // SIGKILL
            let _ = child.wait();
        }
    }

    /// Fails if a child exited by itself (it only ever stops when killed).
    fn check_alive(&mut self, dir: &Path) {
        for (name, child) in &mut self.0 {
            if let Ok(Some(status)) = child.try_wait() {
                let output =
                    std::fs::read_to_string(dir.join(format!("{name}.out"))).unwrap_or_default();
                panic!("child {name} exited by itself ({status}):\n{output}");
            }
        }
    }
}

impl Drop for Children {
    fn drop(&mut self) {
        let names: Vec<String> = self.0.keys().cloned().collect();
        for name in names {
            self.kill(&name);
        }
    }
}

fn read_log(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(format!("{name}.log"))).unwrap_or_default()
}

fn log_dir(schema: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(schema);
    std::fs::create_dir_all(&dir).expect("a log directory");
    dir
}

async fn publish(store: &PostgresStore) -> WorkflowVersion {
    let now = Utc::now();
    let workflow = Workflow::new("multiprocess", now).expect("name");
    store.insert_workflow(&workflow).await.expect("workflow");
    let steps = STEPS
        .iter()
        .map(|key| {
            StepDefinition::new(*key, "work")
                .retry(RetryPolicy::fixed(10, Duration::from_millis(10)))
        })
        .collect();
    let version = WorkflowVersion::new(workflow.id, 1, WorkflowDefinition::new(steps), now);
    store.insert_version(&version).await.expect("version");
    version
}

async fn unfinished(store: &PostgresStore) -> bool {
    for status in [RunStatus::Queued, RunStatus::Running] {
        let query = RunQuery {
            status: Some(status),
            limit: 1,
            ..RunQuery::default()
        };
        if !store
            .list_runs(&query)
            .await
            .expect("list")
            .items
            .is_empty()
        {
            return true;
        }
    }
    false
}

#[test]
fn three_engines_share_runs_and_survive_a_kill() {
    runtime().block_on(async {
        let runs: usize = std::env::var(RUNS_ENV)
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(DEFAULT_RUNS);
        let schema = fresh_schema("tf_mp");
        let _drop_schema = DropSchema(schema.clone());
        let dir = log_dir(&schema);
        let store = open(&schema).await;
        let version = publish(&store).await;
        let insert = |n: usize| {
            let (store, version) = (store.clone(), version.clone());
            async move {
                let run = WorkflowRun::new(&version, json!({ "n": n }), Utc::now());
                store.insert_run(&run).await.expect("insert a run");
            }
        };

        // The victim alone takes the first run and parks in its first step,
        // so it is surely mid-step when killed.
        let mut children = Children::default();
        insert(0).await;
        children.spawn(&dir, &schema, "a", Some(1));
        let started = Instant::now();
        while !read_log(&dir, "a").lines().any(|line| line == "parked") {
            assert!(started.elapsed() < PATIENCE, "the victim never parked");
            children.check_alive(&dir);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        children.spawn(&dir, &schema, "b", None);
        children.spawn(&dir, &schema, "c", None);
        for n in 1..runs {
            insert(n).await;
        }

        // Killed once a tenth of the steps have begun, with all three working.
        let kill_after = runs * STEPS.len() / 10;
        let mut killed = false;
        loop {
            assert!(
                started.elapsed() < PATIENCE,
                "runs still unfinished after {PATIENCE:?}; logs in {}",
                dir.display()
            );
            children.check_alive(&dir);
            if !killed {
                let begun: usize = ["a", "b", "c"]
                    .iter()
                    .map(|name| {
                        read_log(&dir, name)
                            .lines()
                            .filter(|l| l.starts_with("begin"))
                            .count()
                    })
                    .sum();
                if begun >= kill_after {
                    children.kill("a");
                    killed = true;
                    children.spawn(&dir, &schema, "a-restarted", None);
                }
            }
            if killed && !unfinished(&store).await {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        drop(children);

        check(&store, &dir, runs).await;
        let _ = std::fs::remove_dir_all(&dir);
    });
}

/// One invocation, from a child's log.
#[derive(Debug)]
struct Begin {
    attempt: u32,
    child: String,
}

async fn check(store: &PostgresStore, dir: &Path, runs: usize) {
    let mut begins: HashMap<(String, String), Vec<Begin>> = HashMap::new();
    let mut children = HashSet::new();
    for name in ["a", "b", "c", "a-restarted"] {
        let log = std::fs::read_to_string(dir.join(format!("{name}.log"))).unwrap_or_default();
        for line in log.lines() {
            assert!(!line.starts_with("violation"), "{name}: {line}");
            let parts: Vec<&str> = line.split(' ').collect();
            if let ["begin", run, step, attempt, child] = parts[..] {
                children.insert(child.to_owned());
                begins
                    .entry((run.to_owned(), step.to_owned()))
                    .or_default()
                    .push(Begin {
                        attempt: attempt.parse().expect("attempt"),
                        child: child.to_owned(),
                    });
            }
        }
    }
    assert!(
        ["b", "c", "a-restarted"]
            .iter()
            .filter(|name| children.contains(**name))
            .count()
            >= 2,
        "the engines shared the work: {children:?}"
    );

    let all = store
        .list_all_runs(&RunQuery::default())
        .await
        .expect("list runs");
    assert_eq!(all.len(), runs);
    let mut interrupted = 0;
    for run in &all {
        assert_eq!(run.status, RunStatus::Succeeded, "run {}", run.id);
        let steps = store.list_step_runs(run.id).await.expect("steps");
        for (index, key) in STEPS.iter().enumerate() {
            let attempts: Vec<_> = steps
                .iter()
                .filter(|s| s.step_index as usize == index)
                .collect();
            let succeeded: Vec<_> = attempts
                .iter()
                .filter(|s| s.status == StepStatus::Succeeded)
                .collect();
            assert_eq!(
                succeeded.len(),
                1,
                "run {} step {key}: {attempts:?}",
                run.id
            );
            let done = succeeded[0].attempt;
            interrupted += attempts
                .iter()
                .filter(|s| s.status == StepStatus::Interrupted)
                .count();
            let invoked = begins
                .get(&(run.id.to_string(), (*key).to_owned()))
                .map(Vec::as_slice)
                .unwrap_or_default();
            let mut seen = HashSet::new();
            for begin in invoked {
                assert!(
                    begin.attempt <= done,
                    "run {} step {key} ran again (attempt {} by {}) after attempt {done} succeeded",
                    run.id,
                    begin.attempt,
                    begin.child
                );
                assert!(
                    seen.insert(begin.attempt),
                    "run {} step {key} attempt {} ran twice: {invoked:?}",
                    run.id,
                    begin.attempt
                );
            }
            assert!(
                seen.contains(&done),
                "run {} step {key}: {invoked:?}",
                run.id
            );
        }
    }
    assert!(
        interrupted >= 1,
        "the attempt parked in the killed child was interrupted"
    );
}

/// An operator tool (this process) opens the store while an engine (a
/// child) runs, starts a run, and reads its history as the child works.
#[test]
fn a_second_process_reads_the_history_while_the_first_runs() {
    runtime().block_on(async {
        let schema = fresh_schema("tf_reader");
        let _drop_schema = DropSchema(schema.clone());
        let dir = log_dir(&schema);
        let store = open(&schema).await;
        let version = publish(&store).await;
        let mut children = Children::default();
        children.spawn(&dir, &schema, "engine", None);

        // Opened while the child runs.
        let reader = open(&schema).await;
        let run = WorkflowRun::new(&version, json!({ "from": "operator" }), Utc::now());
        reader.insert_run(&run).await.expect("start a run");
        let started = Instant::now();
        let finished = loop {
            assert!(started.elapsed() < PATIENCE, "the run did not finish");
            children.check_alive(&dir);
            let (stored, steps) = reader.get_run_with_steps(run.id).await.expect("read");
            if stored.status.is_terminal() {
                break (stored, steps);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let (stored, steps) = finished;
        assert_eq!(stored.status, RunStatus::Succeeded);
        assert_eq!(
            steps
                .iter()
                .map(|s| s.step_key.as_str())
                .collect::<Vec<_>>(),
            STEPS
        );
        assert!(steps.iter().all(|s| s.status == StepStatus::Succeeded));
        assert_eq!(
            stored.output,
            Some(json!({ "step": "ship", "by": "engine" }))
        );
        drop(children);
        let _ = std::fs::remove_dir_all(&dir);
    });
}
