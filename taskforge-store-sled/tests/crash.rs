//! Crash tests for the sled store: a child process runs workflows on a
//! durable sled database and is killed with SIGKILL at random points,
//! including while it opens the store; the parent reopens the database
//! after every kill and checks that nothing acknowledged was lost and
//! nothing was half-written.
//!
//! The child is this test binary, launched again to run only
//! [`crash_child`] with `TASKFORGE_CRASH_CHILD=<dir>` (without that
//! variable, `crash_child` returns at once). It opens the store, starts an
//! engine with a 200 ms lease, publishes a 3-step workflow and then, until
//! it is killed, delivers webhooks (dedup key `/n`, counting up from the
//! last acknowledged `n`, sometimes repeating an acknowledged one) and
//! starts runs by hand with idempotency keys. Each call that returned `Ok`
//! is appended to an ack log and fsynced; each step handler appends
//! `invoke <run> <step> <attempt>` to an invocation log, fsynced, before
//! it does its (0 to 5 ms of) work.
//!
//! The child reports its progress on its standard output, one line at a
//! time: `started`, `opening` (just before it opens the store), `opened`,
//! `ready` (the workflow and its trigger exist), then `ack <k>` after its
//! k-th acknowledged call is in the ack log and `invoke <k>` after its
//! k-th handler invocation is in the invocation log. Every kill point is
//! chosen, from the seed, among these reports (a phase of start-up, or the
//! k-th ack or invocation), never as a time: a slow or busy machine
//! changes how long the test takes, not what it tests. A child that
//! reports nothing for [`PROGRESS_PATIENCE`] fails the test as hung (a
//! guard, not a calibration).
//!
//! After each kill the parent reopens the store in-process and checks:
//! - the reopen succeeds (no corruption error, no panic);
//! - every acknowledged event exists with the run it started, every
//!   acknowledged run exists, and a repeated key was answered with the
//!   original event and run;
//! - no two stored events share a dedup key; every event's run and every
//!   run's event exist (they are written together);
//! - no run is half-written: each step's attempts are numbered `1..=k`,
//!   all but the last terminal; steps start only after the previous one
//!   succeeded; a queued run has no attempts; a succeeded run has every
//!   step succeeded and a running run has not;
//! - nothing a previous check saw (events, runs, finished attempts,
//!   finished runs) has disappeared or changed.
//!
//! At the end a recovery engine in the parent finishes every run: each
//! must succeed, and the invocation log must show that no step ran again
//! after an attempt of it succeeded, that every invoked attempt is stored
//! (interrupted ones were retried as new attempts), and that every
//! succeeded attempt was invoked exactly once.
//!
//! The check is seeded: a failure names the seed, the iteration and the
//! kill point (the seed picks the progress report each child is killed at
//! and what it does; the timing of the child's threads still varies
//! between runs). The default is 50 kills, about 10 s on two cores. Run
//! more iterations, or another seed, with
//!
//! ```sh
//! TASKFORGE_CRASH_ITERATIONS=500 TASKFORGE_CRASH_SEED=42 \
//!     cargo test -p taskforge-store-sled --test crash -- --nocapture
//! ```
//!
//! [`killed_while_creating_the_store`] aims its kills at the creation of a
//! fresh store (which the random kills above hit only on the first
//! iteration): after the child reports `opening`, the parent follows the
//! creation's steps on disk (staging directory, data file, data written,
//! renamed into place) and kills at a seeded step, a seeded number of
//! polls into it. A store whose creation was interrupted must open
//! afterwards.
#![cfg(unix)]

use std::collections::{HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, TryRecvError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use taskforge_core::store::{EventStore, RunStore, RunStoreExt, WorkflowStore, MAX_PAGE_SIZE};
use taskforge_core::webhook::{DedupSource, Headers, WebhookRequest};
use taskforge_core::{
    Delivery, Engine, Event, EventId, EventOutcome, EventQuery, RunId, RunOptions, RunQuery,
    RunStatus, StepContext, StepDefinition, StepError, StepRegistry, StepRun, StepStatus,
    TriggerId, TriggerKind, WebhookConfig, WorkflowDefinition, WorkflowRun,
};
use taskforge_store_sled::SledStore;

/// Set in the child's environment: the directory it works in.
const CHILD_ENV: &str = "TASKFORGE_CRASH_CHILD";
/// Set in the child's environment: the seed of its choices.
const CHILD_SEED_ENV: &str = "TASKFORGE_CRASH_CHILD_SEED";
/// How many children to kill (default [`DEFAULT_ITERATIONS`]).
const ITERATIONS_ENV: &str = "TASKFORGE_CRASH_ITERATIONS";
/// The seed of the parent's choices (default [`DEFAULT_SEED`]).
const SEED_ENV: &str = "TASKFORGE_CRASH_SEED";
const DEFAULT_ITERATIONS: u32 = 50;
const DEFAULT_SEED: u64 = 0x7a5c_f0e9;
/// The name of the test that acts as the child.
const CHILD_TEST: &str = "crash_child";

const WORKFLOW: &str = "crash";
const HOOK_PATH: &str = "crash";
const STEPS: [&str; 3] = ["fetch", "build", "ship"];
const HANDLER: &str = "work";
/// How long the recovery engine may take to finish every run; only a
/// guard against a hang, never a timing assertion.
const RECOVERY_PATIENCE: Duration = Duration::from_secs(120);
/// How long a child may go without reporting progress before the test
/// fails it as hung; only a guard against a hang, never a calibration of
/// when to kill (a child reports several times a second even on a
/// heavily loaded machine).
const PROGRESS_PATIENCE: Duration = Duration::from_secs(60);
/// The prefix of the child's progress lines on its standard output (the
/// test harness writes its own lines there too).
const PROGRESS: &str = "progress";

/// Fails a check with a message.
macro_rules! ensure {
    ($cond:expr, $($message:tt)+) => {
        if !$cond {
            return Err(format!($($message)+));
        }
    };
}

/// The files of one crash test: the store and the logs, side by side
/// (the store refuses a directory that holds other files).
struct Paths {
    root: PathBuf,
}

impl Paths {
    fn store(&self) -> PathBuf {
        self.root.join("store")
    }

    fn acks(&self) -> PathBuf {
        self.root.join("acks.log")
    }

    fn invocations(&self) -> PathBuf {
        self.root.join("invocations.log")
    }

    fn child_output(&self) -> PathBuf {
        self.root.join("child.out")
    }
}

/// An append-only log of lines, each fsynced before `append` returns.
struct Log {
    file: Mutex<File>,
    sync: File,
}

impl Log {
    /// Opens `path` for appending, first cutting a line torn by a kill, so
    /// that the next line starts on its own.
    fn open(path: &Path) -> std::io::Result<Self> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .read(true)
            .open(path)?;
        let text = std::fs::read(path)?;
        let whole = text.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        if whole < text.len() {
            file.set_len(whole as u64)?;
        }
        Ok(Self {
            sync: file.try_clone()?,
            file: Mutex::new(file),
        })
    }

    fn append(&self, line: &str) -> std::io::Result<()> {
        self.file
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .write_all(format!("{line}\n").as_bytes())?;
        // Outside the lock, so concurrent appenders share a sync.
        self.sync.sync_data()
    }
}

/// The whole lines of a log; a torn last line was never acknowledged.
fn read_lines(path: &Path) -> Vec<String> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Vec::new(),
        Err(e) => panic!("read {}: {e}", path.display()),
    };
    let mut lines: Vec<String> = text.split('\n').map(str::to_owned).collect();
    lines.pop(); // after the last newline: empty, or a torn line
    lines
}

fn definition() -> WorkflowDefinition {
    WorkflowDefinition::new(
        STEPS
            .iter()
            .map(|key| StepDefinition::new(*key, HANDLER))
            .collect(),
    )
}

/// The step handler: logs its invocation, durably, reports it (in the
/// child), then works a little.
fn registry(invocations: Arc<Log>, reporter: Option<Arc<Reporter>>, seed: u64) -> StepRegistry {
    let rng = Arc::new(Mutex::new(fastrand::Rng::with_seed(seed)));
    let mut registry = StepRegistry::new();
    registry
        .step(HANDLER, move |ctx: StepContext, _input: Value| {
            let invocations = Arc::clone(&invocations);
            let reporter = reporter.clone();
            let pause = rng.lock().unwrap_or_else(|e| e.into_inner()).u64(0..=5);
            async move {
                let line = format!(
                    "invoke {} {} {}",
                    ctx.run_id(),
                    ctx.step_key(),
                    ctx.attempt()
                );
                invocations.append(&line).expect("log an invocation");
                if let Some(reporter) = &reporter {
                    reporter.invoked();
                }
                tokio::time::sleep(Duration::from_millis(pause)).await;
                Ok::<_, StepError>(json!({ "step": ctx.step_key(), "attempt": ctx.attempt() }))
            }
        })
        .expect("register the handler");
    registry
}

fn engine(store: SledStore, registry: StepRegistry) -> Engine<SledStore, StepRegistry> {
    Engine::builder(store, registry)
        .lease_ttl(Duration::from_millis(200))
        .poll_interval(Duration::from_millis(20))
        .build()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("build a runtime")
}

// ---------------------------------------------------------------------------
// The child.

/// Acts as the child when `TASKFORGE_CRASH_CHILD` is set; returns at once
/// otherwise. Never returns on its own as the child: it is killed.
#[test]
fn crash_child() {
    let Some(root) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    Reporter::report("started");
    let seed = std::env::var(CHILD_SEED_ENV)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    runtime().block_on(child(
        Paths {
            root: PathBuf::from(root),
        },
        seed,
    ));
}

async fn child(paths: Paths, seed: u64) {
    let mut rng = fastrand::Rng::with_seed(seed);
    let acks = Arc::new(Log::open(&paths.acks()).expect("open the ack log"));
    let invocations = Arc::new(Log::open(&paths.invocations()).expect("open the invocation log"));
    let acked = Acks::parse(&read_lines(&paths.acks())).expect("parse the ack log");
    let reporter = Arc::new(Reporter::default());
    Reporter::report("opening");
    let store = SledStore::open(paths.store()).expect("open the store");
    acks.append("opened").expect("log the open");
    Reporter::report("opened");
    let engine = engine(
        store,
        registry(invocations, Some(Arc::clone(&reporter)), rng.u64(..)),
    );
    engine.start();
    let workflow = engine.ensure_workflow(WORKFLOW).await.expect("workflow");
    engine
        .publish(workflow.id, definition())
        .await
        .expect("publish");
    let triggers = engine.triggers(workflow.id).await.expect("triggers");
    if !triggers
        .iter()
        .any(|t| matches!(&t.kind, TriggerKind::Webhook(c) if c.path == HOOK_PATH))
    {
        let config =
            WebhookConfig::new(HOOK_PATH).with_dedup(DedupSource::JsonPointer("/n".into()));
        engine
            .create_trigger(workflow.id, TriggerKind::Webhook(config))
            .await
            .expect("create the webhook trigger");
    }
    Reporter::report("ready");

    let hooks = {
        let (engine, acks) = (engine.clone(), Arc::clone(&acks));
        let reporter = Arc::clone(&reporter);
        let mut rng = fastrand::Rng::with_seed(rng.u64(..));
        let mut next = acked.hooks.keys().max().map_or(1, |n| n + 1);
        tokio::spawn(async move {
            loop {
                let n = pick(&mut rng, &mut next);
                let body = json!({ "n": n }).to_string();
                let request = WebhookRequest::new(Headers::new(), body);
                let delivery = engine
                    .deliver_webhook(HOOK_PATH, &request)
                    .await
                    .expect("deliver a webhook");
                let line = match delivery {
                    Delivery::Accepted { event_id, run_id } => {
                        format!("event {n} {event_id} {run_id}")
                    }
                    Delivery::Duplicate {
                        event_id,
                        run_id: Some(run_id),
                    } => format!("dup {n} {event_id} {run_id}"),
                    other => panic!("delivery n={n}: unexpected {other:?}"),
                };
                acks.append(&line).expect("ack a delivery");
                reporter.acked();
                pace(&mut rng).await;
            }
        })
    };
    let manual = {
        let mut rng = fastrand::Rng::with_seed(rng.u64(..));
        let mut next = acked.manual_numbers().max().map_or(1, |n| n + 1);
        tokio::spawn(async move {
            loop {
                let key = format!("m{}", pick(&mut rng, &mut next));
                let options = RunOptions::new().idempotency_key(key.clone());
                let run = engine
                    .start_run_with(workflow.id, json!({ "key": key }), options)
                    .await
                    .expect("start a run");
                acks.append(&format!("run {key} {}", run.id))
                    .expect("ack a run");
                reporter.acked();
                pace(&mut rng).await;
            }
        })
    };
    let (hooks, manual) = tokio::join!(hooks, manual);
    panic!("the child's loops ended: {hooks:?} {manual:?}");
}

/// Reports the child's progress to the parent, one line at a time on the
/// standard output, each written whole and flushed before the child goes
/// on.
#[derive(Debug, Default)]
struct Reporter {
    acks: AtomicU64,
    invocations: AtomicU64,
}

impl Reporter {
    /// Reports a phase (or a count). A child whose parent is gone (the
    /// pipe is closed) exits rather than work on unobserved.
    fn report(line: &str) {
        let mut out = std::io::stdout().lock();
        if writeln!(out, "{PROGRESS} {line}")
            .and_then(|()| out.flush())
            .is_err()
        {
            std::process::exit(3);
        }
    }

    /// Reports that one more call is in the ack log.
    fn acked(&self) {
        let k = self.acks.fetch_add(1, Ordering::SeqCst) + 1;
        Self::report(&format!("ack {k}"));
    }

    /// Reports that one more invocation is in the invocation log.
    fn invoked(&self) {
        let k = self.invocations.fetch_add(1, Ordering::SeqCst) + 1;
        Self::report(&format!("invoke {k}"));
    }
}

/// The next key number: usually a new one, sometimes one used already
/// (acknowledged, or in flight when the previous child was killed).
fn pick(rng: &mut fastrand::Rng, next: &mut u64) -> u64 {
    if *next > 1 && rng.u8(..6) == 0 {
        rng.u64(next.saturating_sub(6).max(1)..*next)
    } else {
        *next += 1;
        *next - 1
    }
}

/// A short, random pause between calls, so runs do not pile up faster
/// than the steps can execute.
async fn pace(rng: &mut fastrand::Rng) {
    tokio::time::sleep(Duration::from_millis(rng.u64(1..=4))).await;
}

// ---------------------------------------------------------------------------
// The ack log.

/// What the children acknowledged, consistent across repeats.
#[derive(Debug, Default)]
struct Acks {
    /// Webhook key `n` to the event and run it was answered with.
    hooks: HashMap<u64, (EventId, RunId)>,
    /// Idempotency key to the run it was answered with.
    manual: HashMap<String, RunId>,
    /// How many children got as far as opening the store (`opened`
    /// lines).
    opened: usize,
    /// How many answers were repeats.
    repeats: usize,
}

impl Acks {
    fn parse(lines: &[String]) -> Result<Self, String> {
        let mut acks = Self::default();
        for line in lines {
            let words: Vec<&str> = line.split_whitespace().collect();
            match words.as_slice() {
                ["opened", ..] => acks.opened += 1,
                [kind @ ("event" | "dup"), n, event, run] => {
                    let n: u64 = n.parse().map_err(|e| format!("ack {line:?}: {e}"))?;
                    let event: EventId = event.parse().map_err(|e| format!("ack {line:?}: {e}"))?;
                    let run: RunId = run.parse().map_err(|e| format!("ack {line:?}: {e}"))?;
                    if *kind == "dup" {
                        acks.repeats += 1;
                    }
                    if let Some(&first) = acks.hooks.get(&n) {
                        ensure!(
                            first == (event, run),
                            "webhook n={n} was answered with event {event} and run {run}, \
                             but earlier with {first:?}"
                        );
                    }
                    acks.hooks.insert(n, (event, run));
                }
                ["run", key, run] => {
                    let run: RunId = run.parse().map_err(|e| format!("ack {line:?}: {e}"))?;
                    if let Some(&first) = acks.manual.get(*key) {
                        acks.repeats += 1;
                        ensure!(
                            first == run,
                            "idempotency key {key} was answered with run {run}, but earlier with {first}"
                        );
                    }
                    acks.manual.insert((*key).to_owned(), run);
                }
                _ => return Err(format!("malformed ack line {line:?}")),
            }
        }
        Ok(acks)
    }

    fn manual_numbers(&self) -> impl Iterator<Item = u64> + '_ {
        self.manual
            .keys()
            .filter_map(|k| k.strip_prefix('m')?.parse().ok())
    }
}

// ---------------------------------------------------------------------------
// The parent.

/// Kills children at points chosen from their progress and checks the
/// store after each kill, then recovers every run. See the module docs.
#[test]
fn killed_children_leave_a_consistent_store() {
    if std::env::var_os(CHILD_ENV).is_some() {
        return;
    }
    let iterations: u32 = env_number(ITERATIONS_ENV).unwrap_or(DEFAULT_ITERATIONS);
    let seed: u64 = env_number(SEED_ENV).unwrap_or(DEFAULT_SEED);
    eprintln!("crash test: seed {seed}, {iterations} iterations ({SEED_ENV}, {ITERATIONS_ENV})");
    let dir = tempfile::tempdir().expect("create a temporary directory");
    let paths = Paths {
        root: dir.path().to_path_buf(),
    };
    let runtime = runtime();
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut seen = Seen::default();
    let mut kills = KillTally::default();
    let started = Instant::now();
    for iteration in 0..iterations {
        // The last child always gets as far as acknowledging a call, so
        // that the recovery below always has something to recover.
        let point = KillPoint::pick(&mut rng, iteration + 1 == iterations);
        let child_seed = rng.u64(..);
        let context = format!("seed {seed}, iteration {iteration} (child killed at {point})");
        let mut child = ChildProcess::spawn(&paths, child_seed);
        child.wait_for(|progress| point.reached(progress), &context);
        child.kill(&context);
        kills.count(point);
        let checked = runtime.block_on(async {
            let store = SledStore::open(paths.store())
                .unwrap_or_else(|e| panic!("{context}: reopening the store failed: {e}"));
            check(&store, &paths, &mut seen).await
        });
        if let Err(problem) = checked {
            panic!("{context}: {problem}");
        }
    }
    let checked = Duration::from_secs_f64(started.elapsed().as_secs_f64());
    let summary = runtime
        .block_on(recover(&paths, rng.u64(..)))
        .unwrap_or_else(|problem| panic!("seed {seed}, recovery after the last kill: {problem}"));
    eprintln!(
        "crash test: {iterations} kills in {checked:.1?} ({kills}; {} before the store was \
         open), then recovery in {:.1?}: {summary}",
        iterations as usize - summary.opened,
        started.elapsed() - checked,
    );
}

fn env_number<T: std::str::FromStr>(name: &str) -> Option<T> {
    let value = std::env::var(name).ok()?;
    Some(
        value
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={value:?} is not a number")),
    )
}

/// A progress report of the child (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Progress {
    /// Its test began.
    Started,
    /// It is about to open (or create) the store.
    Opening,
    /// The store is open.
    Opened,
    /// The workflow is published and its trigger exists.
    Ready,
    /// Its k-th acknowledged call is in the ack log.
    Ack(u64),
    /// Its k-th handler invocation is in the invocation log.
    Invoke(u64),
}

impl Progress {
    fn parse(line: &str) -> Option<Self> {
        let words: Vec<&str> = line.split_whitespace().collect();
        Some(match words.as_slice() {
            ["started"] => Self::Started,
            ["opening"] => Self::Opening,
            ["opened"] => Self::Opened,
            ["ready"] => Self::Ready,
            ["ack", k] => Self::Ack(k.parse().ok()?),
            ["invoke", k] => Self::Invoke(k.parse().ok()?),
            _ => return None,
        })
    }

    /// The phase of the child's life: start-up phases in order, then
    /// work.
    fn phase(self) -> u8 {
        match self {
            Self::Started => 0,
            Self::Opening => 1,
            Self::Opened => 2,
            Self::Ready => 3,
            Self::Ack(_) | Self::Invoke(_) => 4,
        }
    }
}

/// Where a child is killed: as soon as it reports a given progress.
#[derive(Clone, Copy, Debug)]
enum KillPoint {
    /// A phase of start-up (or any later report).
    StartUp(Progress),
    /// Its k-th acknowledged call.
    Ack(u64),
    /// Its k-th handler invocation.
    Invoke(u64),
}

/// The start-up phases a kill can aim at.
const START_UP: [Progress; 4] = [
    Progress::Started,
    Progress::Opening,
    Progress::Opened,
    Progress::Ready,
];
/// The largest k of a kill at the k-th ack: a busy child makes about this
/// many in a few tenths of a second (debug build, two cores), which keeps
/// the default run near 10 s. The count, not the time, is what a kill
/// waits for: a slower machine only makes the run longer.
const MAX_ACKS: u64 = 30;
/// The largest k of a kill at the k-th invocation (a child invokes about
/// twice as often as it acks).
const MAX_INVOCATIONS: u64 = 60;

impl KillPoint {
    /// A third of the kills land in start-up (a quarter of those while
    /// the store is being opened), the rest while the child works.
    fn pick(rng: &mut fastrand::Rng, must_work: bool) -> Self {
        match rng.u8(..6) {
            0 | 1 if !must_work => Self::StartUp(START_UP[rng.usize(..START_UP.len())]),
            0 | 2 | 3 => Self::Ack(rng.u64(1..=MAX_ACKS)),
            _ => Self::Invoke(rng.u64(1..=MAX_INVOCATIONS)),
        }
    }

    fn reached(self, progress: Progress) -> bool {
        match (self, progress) {
            (Self::StartUp(phase), progress) => progress.phase() >= phase.phase(),
            (Self::Ack(k), Progress::Ack(n)) | (Self::Invoke(k), Progress::Invoke(n)) => n >= k,
            _ => false,
        }
    }
}

impl std::fmt::Display for KillPoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::StartUp(phase) => write!(f, "its report {phase:?}"),
            Self::Ack(k) => write!(f, "its ack {k}"),
            Self::Invoke(k) => write!(f, "its invocation {k}"),
        }
    }
}

/// How many kills aimed at each kind of point, for the final report.
#[derive(Debug, Default)]
struct KillTally {
    start_up: [usize; START_UP.len()],
    acks: usize,
    invocations: usize,
}

impl KillTally {
    fn count(&mut self, point: KillPoint) {
        match point {
            KillPoint::StartUp(phase) => self.start_up[usize::from(phase.phase())] += 1,
            KillPoint::Ack(_) => self.acks += 1,
            KillPoint::Invoke(_) => self.invocations += 1,
        }
    }
}

impl std::fmt::Display for KillTally {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let [started, opening, opened, ready] = self.start_up;
        write!(
            f,
            "killed at the report started {started}, opening {opening}, opened {opened}, \
             ready {ready}, at an ack {}, at an invocation {}",
            self.acks, self.invocations
        )
    }
}

/// A launched child, its output going to a file, its progress reports
/// read from its standard output by a thread.
struct ChildProcess {
    process: std::process::Child,
    progress: Receiver<String>,
    reader: Option<JoinHandle<()>>,
    output: PathBuf,
    /// Its last report, for messages.
    last: String,
    /// Whether it closed its standard output (it exited, or was killed).
    closed: bool,
    reaped: bool,
}

impl ChildProcess {
    /// Launches the child on `paths`.
    fn spawn(paths: &Paths, seed: u64) -> Self {
        let output = File::create(paths.child_output()).expect("create the child's output file");
        let mut process = Command::new(std::env::current_exe().expect("the test binary"))
            .args([CHILD_TEST, "--exact", "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, &paths.root)
            .env(CHILD_SEED_ENV, seed.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(output)
            .spawn()
            .expect("launch the child");
        let stdout = process.stdout.take().expect("the child's standard output");
        let (send, progress) = std::sync::mpsc::channel();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                // The harness may start the line ("test crash_child ... ").
                let marker = format!("{PROGRESS} ");
                if let Some((_, report)) = line.split_once(&marker) {
                    if send.send(report.trim().to_owned()).is_err() {
                        break;
                    }
                }
            }
        });
        Self {
            process,
            progress,
            reader: Some(reader),
            output: paths.child_output(),
            last: "nothing".into(),
            closed: false,
            reaped: false,
        }
    }

    /// Waits until the child reports progress that `done` accepts, or
    /// closes its output (then [`kill`](Self::kill) reports how it
    /// exited). Fails if it reports nothing for [`PROGRESS_PATIENCE`].
    fn wait_for(&mut self, mut done: impl FnMut(Progress) -> bool, context: &str) {
        while !self.closed {
            match self.progress.recv_timeout(PROGRESS_PATIENCE) {
                Ok(line) => {
                    if done(self.parse(line, context)) {
                        return;
                    }
                }
                Err(RecvTimeoutError::Timeout) => self.hung(context),
                Err(RecvTimeoutError::Disconnected) => self.closed = true,
            }
        }
    }

    /// The next report if one is there, without waiting.
    fn poll(&mut self, context: &str) -> Option<Progress> {
        match self.progress.try_recv() {
            Ok(line) => Some(self.parse(line, context)),
            Err(TryRecvError::Empty) => None,
            Err(TryRecvError::Disconnected) => {
                self.closed = true;
                None
            }
        }
    }

    fn parse(&mut self, line: String, context: &str) -> Progress {
        let progress = Progress::parse(&line)
            .unwrap_or_else(|| panic!("{context}: the child reported {line:?}"));
        self.last = line;
        progress
    }

    /// Fails the test: the child made no progress for too long.
    fn hung(&mut self, context: &str) -> ! {
        self.reap();
        panic!(
            "{context}: the child reported no progress for {PROGRESS_PATIENCE:?} (its last \
             report: {}); it hangs. Its output:\n{}",
            self.last,
            self.output()
        );
    }

    /// Kills the child with SIGKILL and reaps it; fails if it had exited
    /// by itself (it never does unless something failed).
    fn kill(mut self, context: &str) {
        let status = self.reap();
        const SIGKILL: i32 = 9;
        if status.signal() != Some(SIGKILL) {
            panic!(
                "{context}: the child exited by itself ({status}) before the kill (its last \
                 report: {}):\n{}",
                self.last,
                self.output()
            );
        }
    }

    /// What the child wrote to its standard error, for messages.
    fn output(&self) -> String {
        match std::fs::read_to_string(&self.output) {
            Ok(output) if !output.trim().is_empty() => output,
            Ok(_) => "(nothing)".into(),
            Err(e) => format!("(unreadable: {e})"),
        }
    }

    fn reap(&mut self) -> std::process::ExitStatus {
        let _ = self.process.kill();
        let status = self.process.wait().expect("wait for the child");
        self.reaped = true;
        // The child is gone, so its output is closed: the reader ends.
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
        status
    }
}

impl Drop for ChildProcess {
    /// A test that fails while a child runs leaves no child behind.
    fn drop(&mut self) {
        if !self.reaped {
            let _ = self.process.kill();
            let _ = self.process.wait();
        }
    }
}

/// What earlier checks saw; none of it may disappear or change.
#[derive(Default)]
struct Seen {
    events: HashSet<EventId>,
    runs: HashSet<RunId>,
    finished_runs: HashMap<RunId, RunStatus>,
    finished_attempts: HashMap<(RunId, u32, u32), StepStatus>,
}

/// Counts for the final report.
#[derive(Debug, Default)]
struct Summary {
    runs: usize,
    events: usize,
    acked_hooks: usize,
    acked_runs: usize,
    repeats: usize,
    attempts: usize,
    interrupted: usize,
    invocations: usize,
    opened: usize,
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} runs, {} events, {} webhook keys and {} idempotency keys acked, {} repeats, \
             {} step attempts ({} interrupted), {} invocations",
            self.runs,
            self.events,
            self.acked_hooks,
            self.acked_runs,
            self.repeats,
            self.attempts,
            self.interrupted,
            self.invocations,
        )
    }
}

/// Every run of the workflow with its step attempts.
type History = Vec<(WorkflowRun, Vec<StepRun>)>;

/// Checks the store against the ack log and what earlier checks saw.
async fn check(store: &SledStore, paths: &Paths, seen: &mut Seen) -> Result<Summary, String> {
    let acks = Acks::parse(&read_lines(&paths.acks()))?;
    let mut summary = Summary {
        acked_hooks: acks.hooks.len(),
        acked_runs: acks.manual.len(),
        repeats: acks.repeats,
        opened: acks.opened,
        ..Summary::default()
    };
    let store_error = |what: &str| {
        let what = what.to_owned();
        move |e: taskforge_core::StoreError| format!("{what}: {e}")
    };
    let Some(workflow) = store
        .find_workflow(WORKFLOW)
        .await
        .map_err(store_error("find the workflow"))?
    else {
        ensure!(
            acks.hooks.is_empty() && acks.manual.is_empty(),
            "the workflow is gone, though calls on it were acknowledged"
        );
        return Ok(summary);
    };
    let hook: Option<TriggerId> = store
        .list_triggers(Some(workflow.id))
        .await
        .map_err(store_error("list triggers"))?
        .into_iter()
        .find(|t| matches!(&t.kind, TriggerKind::Webhook(c) if c.path == HOOK_PATH))
        .map(|t| t.id);

    let events = all_events(store, workflow.id).await?;
    let runs = store
        .list_all_runs(&RunQuery {
            workflow_id: Some(workflow.id),
            ..RunQuery::default()
        })
        .await
        .map_err(store_error("list runs"))?;
    summary.events = events.len();
    summary.runs = runs.len();

    // Events: unique dedup keys, each with its run.
    let runs_by_id: HashMap<RunId, &WorkflowRun> = runs.iter().map(|r| (r.id, r)).collect();
    let mut by_key: HashMap<&str, EventId> = HashMap::new();
    let mut events_by_id: HashMap<EventId, &Event> = HashMap::new();
    for event in &events {
        events_by_id.insert(event.id, event);
        let key = event
            .dedup_key
            .as_deref()
            .ok_or_else(|| format!("event {} has no dedup key", event.id))?;
        if let Some(other) = by_key.insert(key, event.id) {
            return Err(format!(
                "events {other} and {} share the dedup key {key:?}",
                event.id
            ));
        }
        let EventOutcome::RunStarted { run_id } = event.outcome else {
            return Err(format!(
                "event {} started no run: {:?}",
                event.id, event.outcome
            ));
        };
        let run = runs_by_id
            .get(&run_id)
            .ok_or_else(|| format!("event {} names run {run_id}, which is missing", event.id))?;
        ensure!(
            run.event_id == Some(event.id),
            "event {} started run {run_id}, whose event is {:?}",
            event.id,
            run.event_id
        );
    }
    for run in &runs {
        let event = run
            .event_id
            .and_then(|id| events_by_id.get(&id))
            .ok_or_else(|| format!("run {} has no stored event ({:?})", run.id, run.event_id))?;
        ensure!(
            event.outcome.run_id() == Some(run.id),
            "run {} belongs to event {}, which started {:?}",
            run.id,
            event.id,
            event.outcome
        );
    }

    // Acknowledged calls.
    for (n, (event_id, run_id)) in &acks.hooks {
        let event = events_by_id
            .get(event_id)
            .ok_or_else(|| format!("acked event {event_id} (webhook n={n}) is missing"))?;
        let hook =
            hook.ok_or_else(|| format!("webhook n={n} was acked, the trigger is missing"))?;
        let expected = format!("webhook:{hook}:{n}");
        ensure!(
            event.dedup_key.as_deref() == Some(expected.as_str()),
            "acked event {event_id} of webhook n={n} has dedup key {:?}",
            event.dedup_key
        );
        ensure!(
            event.outcome.run_id() == Some(*run_id),
            "acked event {event_id} started {:?}, not the acked run {run_id}",
            event.outcome
        );
    }
    for (key, run_id) in &acks.manual {
        let run = runs_by_id
            .get(run_id)
            .ok_or_else(|| format!("acked run {run_id} (key {key}) is missing"))?;
        let expected = format!("manual:{key}");
        let event = run.event_id.and_then(|id| events_by_id.get(&id));
        ensure!(
            event.and_then(|e| e.dedup_key.as_deref()) == Some(expected.as_str()),
            "acked run {run_id} of key {key} has the event {event:?}"
        );
    }

    // Histories.
    let mut history: History = Vec::with_capacity(runs.len());
    for run in runs {
        let steps = store
            .list_step_runs(run.id)
            .await
            .map_err(store_error("list step runs"))?;
        check_history(&run, &steps)?;
        summary.attempts += steps.len();
        summary.interrupted += steps
            .iter()
            .filter(|s| s.status == StepStatus::Interrupted)
            .count();
        history.push((run, steps));
    }

    // Nothing seen before has gone.
    for id in &seen.events {
        ensure!(
            events_by_id.contains_key(id),
            "event {id} was stored, then lost"
        );
    }
    let stored_runs: HashMap<RunId, &WorkflowRun> =
        history.iter().map(|(r, _)| (r.id, r)).collect();
    for id in &seen.runs {
        ensure!(
            stored_runs.contains_key(id),
            "run {id} was stored, then lost"
        );
    }
    for (id, status) in &seen.finished_runs {
        let now = stored_runs[id].status;
        ensure!(
            now == *status,
            "run {id} finished {status}, and is now {now}"
        );
    }
    let mut attempts: HashMap<(RunId, u32, u32), StepStatus> = HashMap::new();
    for (run, steps) in &history {
        for step in steps {
            attempts.insert((run.id, step.step_index, step.attempt), step.status);
        }
    }
    for (key, status) in &seen.finished_attempts {
        let now = attempts.get(key);
        ensure!(
            now == Some(status),
            "attempt {} of step {} of run {} was {status:?}, and is now {now:?}",
            key.2,
            key.1,
            key.0
        );
    }
    seen.events.extend(events_by_id.keys());
    seen.runs.extend(stored_runs.keys());
    for (run, _) in &history {
        if run.status.is_terminal() {
            seen.finished_runs.insert(run.id, run.status);
        }
    }
    seen.finished_attempts.extend(
        attempts
            .into_iter()
            .filter(|(_, status)| *status != StepStatus::Running),
    );
    Ok(summary)
}

/// Every event of a workflow, following pages to the end.
async fn all_events(
    store: &SledStore,
    workflow_id: taskforge_core::WorkflowId,
) -> Result<Vec<Event>, String> {
    let mut query = EventQuery {
        workflow_id: Some(workflow_id),
        limit: MAX_PAGE_SIZE,
        ..EventQuery::default()
    };
    let mut all = Vec::new();
    loop {
        let page = store
            .list_events(&query)
            .await
            .map_err(|e| format!("list events: {e}"))?;
        all.extend(page.items);
        match page.next {
            Some(next) => query.after = Some(next),
            None => return Ok(all),
        }
    }
}

/// Checks that a run's step attempts form a history the engine could have
/// written one whole write at a time.
fn check_history(run: &WorkflowRun, steps: &[StepRun]) -> Result<(), String> {
    let id = run.id;
    let mut by_index: Vec<Vec<&StepRun>> = vec![Vec::new(); STEPS.len()];
    for step in steps {
        let index = step.step_index as usize;
        ensure!(
            step.run_id == id && index < STEPS.len() && step.step_key == STEPS[index],
            "run {id} holds a foreign step attempt {step:?}"
        );
        by_index[index].push(step);
    }
    let mut running = 0;
    let mut started = 0;
    for (index, attempts) in by_index.iter().enumerate() {
        if attempts.is_empty() {
            continue;
        }
        ensure!(
            started == index,
            "run {id}: step {index} has attempts, step {started} has none"
        );
        started = index + 1;
        for (i, step) in attempts.iter().enumerate() {
            let last = i + 1 == attempts.len();
            ensure!(
                step.attempt as usize == i + 1,
                "run {id}: the attempts of step {index} are not numbered 1..=k: {:?}",
                attempts.iter().map(|s| s.attempt).collect::<Vec<_>>()
            );
            match step.status {
                StepStatus::Succeeded => {
                    ensure!(
                        last,
                        "run {id}: step {index} ran again after attempt {} succeeded",
                        step.attempt
                    );
                    ensure!(
                        step.output.is_some() && step.finished_at.is_some(),
                        "run {id}: succeeded attempt {step:?} is half-written"
                    );
                }
                StepStatus::Interrupted => {
                    ensure!(
                        step.finished_at.is_some(),
                        "run {id}: interrupted attempt {step:?} is half-written"
                    );
                }
                StepStatus::Running => {
                    ensure!(
                        last,
                        "run {id}: attempt {} of step {index} is running, yet a later one exists",
                        step.attempt
                    );
                    running += 1;
                }
                other => {
                    return Err(format!(
                        "run {id}: attempt {} of step {index} is {other:?}; handlers never fail",
                        step.attempt
                    ))
                }
            }
        }
        if index + 1 < STEPS.len() && !by_index[index + 1].is_empty() {
            let last = attempts[attempts.len() - 1];
            ensure!(
                last.status == StepStatus::Succeeded,
                "run {id}: step {} started while step {index} was {:?}",
                index + 1,
                last.status
            );
        }
    }
    let last_step_done = by_index[STEPS.len() - 1]
        .last()
        .is_some_and(|s| s.status == StepStatus::Succeeded);
    match run.status {
        RunStatus::Queued => ensure!(steps.is_empty(), "run {id} is queued but has step attempts"),
        RunStatus::Running => {
            ensure!(run.started_at.is_some(), "run {id} runs but never started");
            ensure!(running <= 1, "run {id} has {running} attempts running");
            ensure!(
                !last_step_done,
                "run {id}: its last step succeeded, but the run is still running"
            );
        }
        RunStatus::Succeeded => {
            ensure!(
                last_step_done && running == 0,
                "run {id} succeeded, but its steps are {:?}",
                steps
                    .iter()
                    .map(|s| (s.step_index, s.attempt, s.status))
                    .collect::<Vec<_>>()
            );
            ensure!(
                run.finished_at.is_some()
                    && run.lease.is_none()
                    && run.output
                        == by_index[STEPS.len() - 1]
                            .last()
                            .and_then(|s| s.output.clone()),
                "run {id} succeeded, but its record is half-written: {run:?}"
            );
        }
        other => return Err(format!("run {id} ended {other}; handlers never fail")),
    }
    Ok(())
}

/// Runs a recovery engine until every run finished, then checks the
/// store and the invocation log.
async fn recover(paths: &Paths, seed: u64) -> Result<Summary, String> {
    let invocations = Arc::new(Log::open(&paths.invocations()).expect("open the invocation log"));
    let store = SledStore::open(paths.store()).map_err(|e| format!("reopen the store: {e}"))?;
    let engine = engine(store, registry(invocations, None, seed));
    engine.start();
    let workflow = engine
        .store()
        .find_workflow(WORKFLOW)
        .await
        .map_err(|e| format!("find the workflow: {e}"))?
        .ok_or("no child ever created the workflow: nothing was tested")?;
    let runs = engine
        .store()
        .list_all_runs(&RunQuery {
            workflow_id: Some(workflow.id),
            ..RunQuery::default()
        })
        .await
        .map_err(|e| format!("list runs: {e}"))?;
    let waited = tokio::time::timeout(RECOVERY_PATIENCE, async {
        for run in &runs {
            engine.wait_for_run(run.id).await?;
        }
        Ok::<_, taskforge_core::EngineError>(())
    })
    .await;
    engine.shutdown(Duration::from_secs(5)).await;
    match waited {
        Err(_) => return Err(format!("runs still unfinished after {RECOVERY_PATIENCE:?}")),
        Ok(Err(e)) => return Err(format!("wait for a run: {e}")),
        Ok(Ok(())) => {}
    }
    let store = engine.store().clone();
    drop(engine);

    let mut summary = check(&store, paths, &mut Seen::default()).await?;
    let mut attempts: HashMap<(RunId, String, u32), StepStatus> = HashMap::new();
    let mut succeeded_at: HashMap<(RunId, String), u32> = HashMap::new();
    for run in &runs {
        let (run, steps) = store
            .get_run_with_steps(run.id)
            .await
            .map_err(|e| format!("read run {}: {e}", run.id))?;
        ensure!(
            run.status == RunStatus::Succeeded,
            "run {} ended {} after recovery",
            run.id,
            run.status
        );
        for step in steps {
            if step.status == StepStatus::Succeeded {
                succeeded_at.insert((run.id, step.step_key.clone()), step.attempt);
            }
            attempts.insert((run.id, step.step_key, step.attempt), step.status);
        }
    }
    ensure!(
        succeeded_at.len() == runs.len() * STEPS.len(),
        "{} of {} steps succeeded after recovery",
        succeeded_at.len(),
        runs.len() * STEPS.len()
    );

    let mut invoked: HashSet<(RunId, String, u32)> = HashSet::new();
    for line in read_lines(&paths.invocations()) {
        let words: Vec<&str> = line.split_whitespace().collect();
        let ["invoke", run, step, attempt] = words.as_slice() else {
            return Err(format!("malformed invocation line {line:?}"));
        };
        let run: RunId = run
            .parse()
            .map_err(|e| format!("invocation {line:?}: {e}"))?;
        let attempt: u32 = attempt
            .parse()
            .map_err(|e| format!("invocation {line:?}: {e}"))?;
        let key = (run, (*step).to_owned(), attempt);
        ensure!(
            attempts.contains_key(&key),
            "run {run}: step {step} attempt {attempt} was invoked but is not stored"
        );
        let done = succeeded_at[&(run, (*step).to_owned())];
        ensure!(
            attempt <= done,
            "run {run}: step {step} succeeded at attempt {done}, then ran again as attempt {attempt}"
        );
        ensure!(
            invoked.insert(key),
            "run {run}: step {step} attempt {attempt} was invoked twice"
        );
    }
    for ((run, step), attempt) in &succeeded_at {
        ensure!(
            invoked.contains(&(*run, step.clone(), *attempt)),
            "run {run}: step {step} attempt {attempt} succeeded but its handler was never invoked"
        );
    }
    summary.invocations = invoked.len();
    Ok(summary)
}

/// The steps of a store's creation the parent can see, in order: the
/// child's report, then the files on disk (see `create` in the store).
const CREATION_STEPS: [&str; 5] = [
    "the child reported opening",
    "the staging directory exists",
    "the staging data file exists",
    "the staging data file holds data",
    "the store is renamed into place",
];
/// How many children [`killed_while_creating_the_store`] kills.
const CREATION_ATTEMPTS: u64 = 20;

/// The furthest step of creation visible on disk (an index into
/// [`CREATION_STEPS`]).
fn creation_step(paths: &Paths) -> usize {
    // The store first: the staging directory disappears as it appears.
    if paths.store().exists() {
        return 4;
    }
    let staging = paths.root.join(".store.creating");
    match std::fs::metadata(staging.join("db")) {
        Ok(data) if data.len() > 0 => 3,
        Ok(_) => 2,
        Err(_) if staging.exists() => 1,
        Err(_) => 0,
    }
}

/// Kills children while they create the store. After the child reports
/// `opening`, the parent follows the creation's steps on disk and kills
/// at a seeded step, a seeded number of polls into it (or as soon as it
/// sees a later step). The store must open afterwards.
#[test]
fn killed_while_creating_the_store() {
    if std::env::var_os(CHILD_ENV).is_some() {
        return;
    }
    let seed: u64 = env_number(SEED_ENV).unwrap_or(DEFAULT_SEED);
    let mut rng = fastrand::Rng::with_seed(seed);
    // How many kills landed at each step, the last past creation.
    let mut landed = [0_usize; CREATION_STEPS.len() + 1];
    for attempt in 0..CREATION_ATTEMPTS {
        let target = rng.usize(..CREATION_STEPS.len());
        let polls = rng.u32(0..=64);
        let context = format!(
            "seed {seed}, attempt {attempt} (aimed at: {}, {polls} polls in)",
            CREATION_STEPS[target]
        );
        let dir = tempfile::tempdir().expect("create a temporary directory");
        let paths = Paths {
            root: dir.path().to_path_buf(),
        };
        let mut child = ChildProcess::spawn(&paths, rng.u64(..));
        child.wait_for(|p| p.phase() >= Progress::Opening.phase(), &context);
        let mut step = 0;
        let mut opened = false;
        let mut polled = 0;
        let mut progressed = Instant::now();
        while !child.closed {
            while let Some(progress) = child.poll(&context) {
                opened |= progress.phase() > Progress::Opening.phase();
            }
            let now = if opened {
                CREATION_STEPS.len()
            } else {
                step.max(creation_step(&paths))
            };
            if now != step {
                step = now;
                progressed = Instant::now();
            }
            if step > target || (step == target && polled >= polls) {
                break;
            }
            if step == target {
                polled += 1;
            }
            if progressed.elapsed() > PROGRESS_PATIENCE {
                child.hung(&format!("{context}, at: {}", CREATION_STEPS[step]));
            }
            std::thread::yield_now();
        }
        child.kill(&context);
        landed[step] += 1;
        let len = std::fs::metadata(paths.store().join("db")).map_or(0, |m| m.len());
        if let Err(e) = SledStore::open(paths.store()) {
            panic!(
                "{context}: killed after {} with a {len}-byte data file, the store does not \
                 open: {e}",
                CREATION_STEPS.get(step).unwrap_or(&"the store was open")
            );
        }
    }
    eprintln!(
        "creation kills: {}",
        CREATION_STEPS
            .iter()
            .chain(&["the child opened the store"])
            .zip(landed)
            .map(|(step, n)| format!("{n} after {step}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
}
