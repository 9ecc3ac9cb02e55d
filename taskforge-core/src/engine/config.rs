//! The engine's settings, and the options of a manual start.

use std::time::Duration;

use crate::artifact::ArtifactLimits;
use crate::step::{LogLevel, DEFAULT_MAX_LOG_BYTES, DEFAULT_MAX_LOG_LINES};

/// Engine settings; set them through [`EngineBuilder`](crate::EngineBuilder).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct EngineConfig {
    /// The name this engine claims runs under; unique per engine instance.
    pub owner: String,
    /// The most runs this engine executes at once.
    pub max_concurrent_runs: usize,
    /// How long a claim lasts unless renewed. A crashed engine's runs are
    /// picked up this long after its last renewal.
    pub lease_ttl: Duration,
    /// How often the dispatcher looks for queued runs and lapsed leases
    /// that it was not told about (other engines' runs, crash recovery).
    pub poll_interval: Duration,
    /// The timeout of a step attempt whose definition sets none, so a
    /// handler that never returns (a forgotten await, a hung connection)
    /// cannot hold a slot forever; `None` lets such attempts run unbounded.
    pub default_step_timeout: Option<Duration>,
    /// How often the owner of a running run checks the store for a
    /// cancellation asked for by another engine. A cancel from any engine
    /// stops the step within about this long, whatever the lease length.
    pub cancel_check_interval: Duration,
    /// The most lines one step attempt's log keeps (the first ones; a
    /// marker line says how many more were dropped).
    pub max_log_lines: u32,
    /// The most bytes of messages one step attempt's log keeps.
    pub max_log_bytes: usize,
    /// The least level of `tracing` events captured into a step's log
    /// ([`StepContext::log`](crate::StepContext::log) keeps every level).
    pub log_capture_level: LogLevel,
    /// The size limits of step artifacts.
    pub artifact_limits: ArtifactLimits,
    /// How far off the next thing a run waits for must be for its worker
    /// to park it (see [`RunStatus::Waiting`](crate::RunStatus::Waiting)):
    /// when a run has nothing running and only waits left (a
    /// [wait step](crate::StepDefinition::wait)'s sleep or signal, a
    /// retry's backoff), a wait shorter than this is slept in the worker,
    /// holding its lease and engine slot; a longer one (or a wait for a
    /// signal without a timeout this close) parks the run, freeing both,
    /// and any engine claims it again when it is due. Default 1 s; zero
    /// parks every such wait.
    pub park_after: Duration,
}

/// The default [`EngineConfig::park_after`]: one second.
pub const DEFAULT_PARK_AFTER: Duration = Duration::from_secs(1);

/// The default [`EngineConfig::default_step_timeout`]: one hour.
pub const DEFAULT_STEP_TIMEOUT: Duration = Duration::from_secs(60 * 60);

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            owner: format!("engine-{}", uuid::Uuid::now_v7()),
            max_concurrent_runs: 256,
            lease_ttl: Duration::from_secs(30),
            poll_interval: Duration::from_secs(1),
            default_step_timeout: Some(DEFAULT_STEP_TIMEOUT),
            cancel_check_interval: Duration::from_secs(1),
            max_log_lines: DEFAULT_MAX_LOG_LINES,
            max_log_bytes: DEFAULT_MAX_LOG_BYTES,
            log_capture_level: LogLevel::Info,
            artifact_limits: ArtifactLimits::default(),
            park_after: DEFAULT_PARK_AFTER,
        }
    }
}

/// Which version a replayed event runs on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ReplayVersion {
    /// The workflow's latest version, as a new delivery would (the
    /// default).
    #[default]
    Latest,
    /// The version the event's original run was pinned to.
    Original,
}

/// Options of [`Engine::replay_event_with`](crate::Engine::replay_event_with).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
#[must_use]
pub struct ReplayOptions {
    /// The version to run.
    pub version: ReplayVersion,
    /// Who asked, recorded on the replay's event under `requested_by`.
    pub requested_by: Option<String>,
}

impl ReplayOptions {
    /// The latest version, no requester.
    pub fn new() -> Self {
        Self::default()
    }

    /// Runs on this version.
    pub fn version(mut self, version: ReplayVersion) -> Self {
        self.version = version;
        self
    }

    /// Records who asked.
    pub fn requested_by(mut self, who: impl Into<String>) -> Self {
        self.requested_by = Some(who.into());
        self
    }
}

/// Options of [`Engine::start_run_with`](crate::Engine::start_run_with).
///
/// ```
/// use taskforge_core::RunOptions;
///
/// let options = RunOptions::new().version(2).idempotency_key("deploy-v1.4.0");
/// assert_eq!(options.version, Some(2));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
#[must_use]
pub struct RunOptions {
    /// Run this version number instead of the latest.
    pub version: Option<u32>,
    /// Starting twice with the same key gives the same run.
    pub idempotency_key: Option<String>,
    /// Who asked (an API token's id, a user name, ...): kept in the manual
    /// event's metadata under `requested_by`, so the history says who
    /// started the run.
    pub requested_by: Option<String>,
    /// The W3C `traceparent` of the caller, kept in the manual event's
    /// metadata (if it is a valid one), so the run's spans join the
    /// caller's trace wherever the run executes.
    pub trace_parent: Option<String>,
}

impl RunOptions {
    /// The defaults: the latest version, no idempotency key.
    pub fn new() -> Self {
        Self::default()
    }

    /// Runs version `number` instead of the latest.
    pub fn version(mut self, number: u32) -> Self {
        self.version = Some(number);
        self
    }

    /// Makes the start idempotent: starting again with the same key
    /// returns the first run.
    pub fn idempotency_key(mut self, key: impl Into<String>) -> Self {
        self.idempotency_key = Some(key.into());
        self
    }

    /// Records who asked for the run on its event.
    pub fn requested_by(mut self, who: impl Into<String>) -> Self {
        self.requested_by = Some(who.into());
        self
    }

    /// Joins the run to the caller's trace: `traceparent` is a W3C trace
    /// context header value (`00-<trace id>-<span id>-<flags>`); one that
    /// is not valid is ignored.
    pub fn trace_parent(mut self, traceparent: impl Into<String>) -> Self {
        self.trace_parent = Some(traceparent.into());
        self
    }
}
