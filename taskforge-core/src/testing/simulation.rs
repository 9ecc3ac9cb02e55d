//! A seeded simulation: several engines on one store, each through a
//! [`FaultyStore`], with step handlers that fail, panic and hang, engines
//! that crash and restart, and clients that start runs and deliver
//! webhooks, all drawn from one seed; then the faults stop, everything
//! settles, and the invariants the engine promises are checked.
//!
//! A backend runs it with one line, usually in `tests/simulation.rs`:
//!
//! ```ignore
//! taskforge_core::simulation!(|| async { MemoryStore::new() });
//! ```
//!
//! The factory is the one [`store_conformance!`](crate::store_conformance)
//! takes (see [`simulation!`](crate::simulation) for one store shared by
//! every scenario). Each scenario runs on a fresh current-thread runtime
//! with paused Tokio time, and a [`ManualClock`] kept in step with it
//! drives the engines' clock (leases, retry times), so waiting takes no
//! wall-clock time and nothing depends on how fast the machine is. Store
//! calls complete inline (see [`FaultyStore::with_inline_calls`]), so the
//! backend must not need the runtime's I/O driver.
//!
//! # What a scenario does
//!
//! Drawn from its seed ([`Plan::from_seed`]): 2 or 3 engines with short
//! leases; 1 or 2 workflows of 1 to 4 steps with retry policies, step
//! timeouts and sometimes a run timeout; 3 to 10 arrivals (manual starts,
//! some with an idempotency key, and webhook deliveries with a delivery
//! id; some repeat an earlier key or id), whose clients try again when it
//! is safe; engine crashes (the engine is dropped, which stops its tasks
//! as a crash would) and restarts; now and then a cancellation; store
//! faults at seeded rates (writes failed before or after they are
//! applied, failed reads, short delays, and stalls that outlast a lease);
//! and handlers that succeed, take their time, fail (retryably, with a
//! retry-after hint, or terminally), panic, or hang past their timeout.
//!
//! # What is checked
//!
//! While it runs, by the handlers: no step runs twice at the same time
//! (an attempt never carries on after a later attempt of its step has
//! started); a handler is called only for an attempt stored as running,
//! and never for a step whose success is stored. After the faults stop,
//! every engine is up again, and every run has finished:
//!
//! - every run reached exactly one terminal state: it is finished in the
//!   store, and no run was announced finished twice or otherwise;
//! - no acknowledged event is lost: every `Ok` from `start_run_with` or
//!   `deliver_webhook` names a stored event and its finished run, and an
//!   idempotency key or delivery id never starts two runs;
//! - each attempt number of a step is called once, and no handler is
//!   still executing a while after every run finished;
//! - each run's stored history replays through the state machine
//!   ([`RunStatus::replay`], [`StepStatus::apply`]) to its stored status,
//!   with attempts numbered `1..=k`, only a step's last attempt open to
//!   success, later steps only after a success, and the run's end
//!   matching its last attempt.
//!
//! # Seeds
//!
//! [`Settings::from_env`] reads `TASKFORGE_SIM_SCENARIOS` (how many
//! scenarios: seeds `0..n`) and `TASKFORGE_SIM_SEED` (one seed alone, its
//! report printed). A failure prints its seed, every violation and the
//! plan; the same seed replays the same scenario.
//!
//! [`FaultyStore`]: super::faults::FaultyStore
//! [`FaultyStore::with_inline_calls`]: super::faults::FaultyStore::with_inline_calls
//! [`ManualClock`]: crate::clock::ManualClock
//! [`RunStatus::replay`]: crate::RunStatus::replay
//! [`StepStatus::apply`]: crate::StepStatus::apply

use std::collections::BTreeMap;
use std::fmt;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Once;
use std::time::Duration;

use self::world::World;
use super::faults::FaultCounts;
use crate::store::Store;
use crate::RunStatus;

mod check;
mod plan;
mod world;

pub use self::plan::{Arrival, ArrivalKind, Crash, HandlerMix, Plan};

/// The variable naming one seed to run alone.
pub const SEED_VAR: &str = "TASKFORGE_SIM_SEED";
/// The variable setting how many scenarios to run.
pub const SCENARIOS_VAR: &str = "TASKFORGE_SIM_SCENARIOS";
/// How many scenarios a backend's test runs unless told otherwise.
pub const DEFAULT_SCENARIOS: u64 = 1_000;
/// The seeds [`simulation!`](crate::simulation) runs twice to check that
/// a seed replays its scenario.
pub const REPLAYED_SEEDS: [u64; 3] = [1, 2, 3];
/// The start of the message of a handler's injected panic; the
/// simulation's panic hook keeps these off stderr.
pub const INJECTED_PANIC: &str = "taskforge-sim: injected handler panic";

/// How often the manual clock is brought in step with Tokio's.
const TICK: Duration = Duration::from_millis(25);
/// How long runs may take to finish once the faults stop.
const SETTLE_LIMIT: Duration = Duration::from_secs(600);
/// How long a handler may go on executing once every run has finished
/// (its engine stalled, and has not yet found its lease lost).
const LINGER_LIMIT: Duration = Duration::from_secs(60);
/// Failures after which the runner stops looking for more.
const MAX_FAILURES: usize = 3;
/// How often a client tries before it gives up.
const CLIENT_TRIES: u32 = 5;

/// Which seeds to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// The seeds, in order.
    pub seeds: Vec<u64>,
    /// Whether to print each scenario's report (when one seed runs alone).
    pub verbose: bool,
}

impl Settings {
    /// Seeds `0..default_scenarios`, or as the environment says: one seed
    /// alone with `TASKFORGE_SIM_SEED=<n>`, seeds `0..n` with
    /// `TASKFORGE_SIM_SCENARIOS=<n>`.
    ///
    /// # Panics
    /// If a variable is set to something other than a number.
    #[must_use]
    pub fn from_env(default_scenarios: u64) -> Self {
        let number = |var: &str| {
            std::env::var(var).ok().map(|value| {
                value
                    .trim()
                    .parse::<u64>()
                    .unwrap_or_else(|_| panic!("{var}={value:?} is not a number"))
            })
        };
        if let Some(seed) = number(SEED_VAR) {
            return Self {
                seeds: vec![seed],
                verbose: true,
            };
        }
        Self {
            seeds: (0..number(SCENARIOS_VAR).unwrap_or(default_scenarios)).collect(),
            verbose: false,
        }
    }
}

/// What one scenario did. The same seed gives an equal report.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Report {
    /// Runs stored, by final status.
    pub runs: BTreeMap<RunStatus, u64>,
    /// Client calls answered with a run.
    pub acknowledged: u64,
    /// Client calls that failed or were cut off by a crash.
    pub client_errors: u64,
    /// Cancellations asked for.
    pub cancels: u64,
    /// Engines crashed.
    pub crashes: u64,
    /// Engines started again after a crash.
    pub restarts: u64,
    /// Handler calls, by what they were made to do.
    pub handler_calls: BTreeMap<&'static str, u64>,
    /// What the faulty stores saw and injected.
    pub faults: FaultCounts,
    /// Simulated time, in milliseconds.
    pub simulated_ms: u64,
}

impl Report {
    fn add(&mut self, other: &Self) {
        for (status, n) in &other.runs {
            *self.runs.entry(*status).or_default() += n;
        }
        for (what, n) in &other.handler_calls {
            *self.handler_calls.entry(what).or_default() += n;
        }
        self.acknowledged += other.acknowledged;
        self.client_errors += other.client_errors;
        self.cancels += other.cancels;
        self.crashes += other.crashes;
        self.restarts += other.restarts;
        self.faults += other.faults;
        self.simulated_ms += other.simulated_ms;
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let runs: u64 = self.runs.values().sum();
        let statuses: Vec<String> = self.runs.iter().map(|(s, n)| format!("{s} {n}")).collect();
        writeln!(f, "runs: {runs} ({})", statuses.join(", "))?;
        writeln!(
            f,
            "clients: {} acknowledged, {} failed or cut off, {} cancels",
            self.acknowledged, self.client_errors, self.cancels
        )?;
        writeln!(
            f,
            "engines: {} crashes, {} restarts",
            self.crashes, self.restarts
        )?;
        let calls: Vec<String> = self
            .handler_calls
            .iter()
            .map(|(what, n)| format!("{what} {n}"))
            .collect();
        writeln!(f, "handler calls: {}", calls.join(", "))?;
        writeln!(f, "store: {}", self.faults)?;
        write!(f, "simulated time: {} s", self.simulated_ms / 1000)
    }
}

/// Every scenario's report added up: the closing note of a run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// Scenarios run.
    pub scenarios: u64,
    /// Their reports, added up.
    pub total: Report,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "simulation: {} scenarios passed", self.scenarios)?;
        write!(f, "{}", self.total)
    }
}

/// A scenario that broke an invariant, or panicked.
#[derive(Debug, Clone)]
pub struct Failure {
    /// Its seed.
    pub seed: u64,
    /// What was violated.
    pub violations: Vec<String>,
    /// Its plan, printed.
    pub plan: String,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "simulation seed {seed} failed; run it alone with {SEED_VAR}={seed}",
            seed = self.seed
        )?;
        for violation in &self.violations {
            writeln!(f, "  - {violation}")?;
        }
        write!(f, "plan: {}", self.plan)
    }
}

/// Runs `scenario` for every seed of `settings` and adds up the reports.
/// `scenario` runs one seed to its end, on a runtime of its own (see
/// [`simulation!`](crate::simulation)).
///
/// # Panics
/// If a scenario fails or panics: the message names the failing seeds
/// (the runner stops at three) and shows the first in full.
pub fn run_seeds(
    settings: &Settings,
    mut scenario: impl FnMut(u64) -> Result<Report, Failure>,
) -> Summary {
    quiet_injected_panics();
    let mut summary = Summary::default();
    let mut failures = Vec::new();
    for &seed in &settings.seeds {
        let result =
            std::panic::catch_unwind(AssertUnwindSafe(|| scenario(seed))).unwrap_or_else(|panic| {
                Err(Failure {
                    seed,
                    violations: vec![format!("the scenario panicked: {}", panic_text(&*panic))],
                    plan: format!("{:#?}", Plan::from_seed(seed)),
                })
            });
        match result {
            Ok(report) => {
                if settings.verbose {
                    println!("seed {seed}:\n{report}");
                }
                summary.scenarios += 1;
                summary.total.add(&report);
            }
            Err(failure) => {
                failures.push(failure);
                if failures.len() >= MAX_FAILURES {
                    break;
                }
            }
        }
    }
    if let Some(first) = failures.first() {
        let seeds: Vec<u64> = failures.iter().map(|f| f.seed).collect();
        panic!(
            "{} of {} scenarios failed (seeds {seeds:?})\n{first}",
            failures.len(),
            summary.scenarios + failures.len() as u64,
        );
    }
    summary
}

fn panic_text(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a non-string payload".to_owned())
}

/// Keeps the handlers' injected panics off stderr; every other panic is
/// reported as before.
fn quiet_injected_panics() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !panic_text(info.payload()).starts_with(INJECTED_PANIC) {
                previous(info);
            }
        }));
    });
}

/// Runs the scenario of `seed` on `store`, fresh and empty. Call it on a
/// current-thread runtime with paused time.
///
/// # Errors
/// A [`Failure`] naming every invariant the scenario broke.
pub async fn run_scenario<S: Store + Clone>(seed: u64, store: S) -> Result<Report, Failure> {
    // Names unique in the process, so scenarios can share one store.
    static SCENARIOS: AtomicU64 = AtomicU64::new(0);
    let namespace = format!("sim{}", SCENARIOS.fetch_add(1, Ordering::Relaxed));
    let world = World::new(Plan::from_seed(seed), store, namespace);
    world.run().await.map_err(|violations| Failure {
        seed,
        violations,
        plan: format!("{:#?}", world.plan),
    })
}

/// Expands to a `#[test]` `simulation` that runs the seeded simulation
/// (see [the module docs](crate::testing::simulation)) and prints its
/// closing note, and a `#[test]` `simulation_replays_a_seed` that runs a
/// few seeds twice and compares their reports. Each scenario runs on a
/// fresh current-thread runtime with paused time.
///
/// The factory is the one [`store_conformance!`](crate::store_conformance)
/// takes. By default it is called once per scenario; with `shared:` once
/// per test, and every scenario runs on that one store (each with its own
/// workflows), which spares a backend that is slow to open one store per
/// scenario; a scenario that fails may then leave unfinished runs to the
/// engines of the next ones, so run a failing seed alone. The calling
/// crate needs `tokio` with the `test-util` feature among its
/// dev-dependencies.
///
/// ```ignore
/// taskforge_core::simulation!(|| async { MemoryStore::new() });
/// taskforge_core::simulation!(shared: || async { SledStore::temporary().unwrap() });
/// ```
#[macro_export]
macro_rules! simulation {
    (@define $factory:expr) => {
        /// A store from the factory, and its guard.
        fn simulation_fixture() -> (
            impl $crate::Store + ::std::clone::Clone,
            ::std::boxed::Box<dyn ::std::any::Any + ::std::marker::Send>,
        ) {
            let runtime = ::tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .build()
                .expect("build a runtime");
            let factory = $factory;
            runtime.block_on(async {
                $crate::testing::IntoFixture::into_fixture(factory().await).into_parts()
            })
        }

        /// One scenario on a runtime of its own, with paused time.
        fn simulate_seed<S: $crate::Store + ::std::clone::Clone>(
            seed: u64,
            store: S,
        ) -> ::std::result::Result<
            $crate::testing::simulation::Report,
            $crate::testing::simulation::Failure,
        > {
            let runtime = ::tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .start_paused(true)
                .build()
                .expect("build a runtime");
            let result = runtime.block_on($crate::testing::simulation::run_scenario(seed, store));
            // Tasks still holding the store end with the runtime.
            drop(runtime);
            result
        }

        fn simulation_settings() -> $crate::testing::simulation::Settings {
            $crate::testing::simulation::Settings::from_env(
                $crate::testing::simulation::DEFAULT_SCENARIOS,
            )
        }

        /// Runs `seed` twice and compares the reports.
        fn simulation_replay<S: $crate::Store + ::std::clone::Clone>(
            seed: u64,
            mut store: impl FnMut() -> S,
        ) {
            let first = simulate_seed(seed, store()).unwrap_or_else(|f| panic!("{f}"));
            let again = simulate_seed(seed, store()).unwrap_or_else(|f| panic!("{f}"));
            assert_eq!(first, again, "seed {seed} ran differently the second time");
        }
    };
    (shared: $factory:expr $(,)?) => {
        $crate::simulation!(@define $factory);

        #[test]
        fn simulation() {
            let (store, guard) = simulation_fixture();
            let summary = $crate::testing::simulation::run_seeds(&simulation_settings(), |seed| {
                simulate_seed(seed, store.clone())
            });
            drop(store);
            drop(guard);
            println!("{summary}");
        }

        #[test]
        fn simulation_replays_a_seed() {
            let (store, guard) = simulation_fixture();
            for seed in $crate::testing::simulation::REPLAYED_SEEDS {
                simulation_replay(seed, || store.clone());
            }
            drop(store);
            drop(guard);
        }
    };
    ($factory:expr $(,)?) => {
        $crate::simulation!(@define $factory);

        #[test]
        fn simulation() {
            let summary = $crate::testing::simulation::run_seeds(&simulation_settings(), |seed| {
                let (store, guard) = simulation_fixture();
                let result = simulate_seed(seed, store);
                drop(guard);
                result
            });
            println!("{summary}");
        }

        #[test]
        fn simulation_replays_a_seed() {
            for seed in $crate::testing::simulation::REPLAYED_SEEDS {
                let mut guards = ::std::vec::Vec::new();
                simulation_replay(seed, || {
                    let (store, guard) = simulation_fixture();
                    guards.push(guard);
                    store
                });
            }
        }
    };
}
