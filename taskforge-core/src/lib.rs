//! Taskforge core: the domain model, the run and step state machine, the
//! storage contract, the triggers, and the engine that runs workflows of
//! Rust closures.
//!
//! Taskforge is an embeddable workflow engine. A host application registers
//! step handlers as closures, publishes immutable workflow versions that
//! name them, and starts runs by hand, from webhooks or on a schedule. Every
//! run is pinned to one version, and its whole history (each step attempt,
//! its output or error) is kept in a store.
//!
//! ```
//! use serde_json::{json, Value};
//! use taskforge_core::{Engine, StepContext, StepDefinition, StepError, StepRegistry, WorkflowDefinition};
//! use taskforge_store_memory::MemoryStore;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let mut registry = StepRegistry::new();
//! registry.step("greet", |_ctx: StepContext, input: Value| async move {
//!     Ok::<_, StepError>(json!({ "greeting": format!("hello, {}", input["name"].as_str().unwrap_or("you")) }))
//! })?;
//! let engine = Engine::builder(MemoryStore::new(), registry).build();
//! engine.start();
//!
//! let workflow = engine.ensure_workflow("greeter").await?;
//! engine
//!     .publish(workflow.id, WorkflowDefinition::new(vec![StepDefinition::new("greet", "greet")]))
//!     .await?;
//! let run = engine.start_run(workflow.id, json!({ "name": "world" })).await?;
//! let finished = engine.wait_for_run(run.id).await?;
//! assert_eq!(finished.output, Some(json!({ "greeting": "hello, world" })));
//! # Ok(())
//! # }
//! ```
//!
//! The examples here use the in-memory store; `taskforge-store-sled` is the
//! durable default, and the `taskforge` crate brings both.
//!
//! # Where things are
//!
//! The crate root holds what a host application uses. The rest is in
//! modules by audience:
//!
//! - [`store`]: the storage contract, for backend authors: the traits, each
//!   method with its `# Contract`, and [`store::rules`], the checks every
//!   backend applies the same way;
//! - [`webhook`]: what an HTTP layer needs to hand deliveries to the engine;
//! - [`cron`]: cron schedules and their policies;
//! - [`secret`]: secrets encrypted at rest, and the vault that seals them;
//! - [`concurrency`]: concurrency limits per workflow or per key, debounce
//!   and rate limits, and the rules every store enforces for them;
//! - [`error`]: every error type; [`limits`]: every bound on input;
//! - [`clock`]: the engine's clock, and a manual one for tests;
//! - `testing` (feature `testing`): test support for backends, the store
//!   conformance suite and the engine scenarios every backend runs; not a
//!   stable API.
//!
//! Inside, the code is layered, and imports run one way: the domain
//! ([`Workflow`], [`WorkflowRun`] and its state machine, [`Event`], step
//! handlers), the triggers (webhook verification, cron), the store contract,
//! and the runtime (`engine/`: the facade, the shared state background tasks
//! hold, admission, the dispatcher, the worker, webhook intake, the cron
//! loop).

#![warn(missing_docs)]

pub mod artifact;
pub mod clock;
pub mod concurrency;
mod duration_ms;
mod engine;
pub mod error;
mod event;
mod id;
mod retry;
mod run;
pub mod secret;
mod step;
pub mod store;
#[cfg(feature = "testing")]
pub mod testing;
mod time_format;
mod token;
mod trigger;
mod workflow;

pub use concurrency::{ConcurrencyLimit, LimitPolicy, RateLimit, RunLimits};
pub use engine::{
    Delivery, Engine, EngineBuilder, EngineConfig, ReplayOptions, ReplayVersion, RunDetails,
    RunOptions, RunUpdate,
};
pub use error::{EngineError, StoreError};
pub use event::{Event, EventOutcome, EventSource};
pub use id::{EventId, RunId, StepRunId, TriggerId, VersionId, WorkflowId};
pub use retry::{Backoff, RetryPolicy};
pub use run::{RunError, RunStatus, Signal, StepFailure, StepRun, StepStatus, WorkflowRun};
pub use step::{LogLevel, LogLine, StepContext, StepError, StepExecutor, StepFuture, StepRegistry};
pub use store::{EventQuery, Order, Page, RunQuery, Store};
pub use trigger::filter::Filter;
pub use trigger::{CronConfig, Trigger, TriggerKind, WebhookConfig};
pub use workflow::{
    OnTimeout, StepDefinition, Wait, Workflow, WorkflowDefinition, WorkflowVersion,
};

/// The scheduler of a run's steps (dependencies, conditions, parallelism,
/// retries, how the run ends), as a pure function of the definition and
/// the recorded history: what the engine's worker asks, for tools that want
/// to show or check a run's course.
pub mod dag {
    pub use crate::run::dag::{End, Plan, Schedule, Skip, SkipReason, Start, WaitOutcome, Waited};
}

/// Webhook deliveries, for HTTP layers: the request the engine verifies,
/// why a delivery may be refused, and the parts of a webhook trigger's
/// configuration (signatures, payload filters, dedup).
pub mod webhook {
    pub use crate::trigger::auth::{
        github_signature, is_secret_ref, SignatureScheme, TokenHash, SECRET_REF_PREFIX,
    };
    pub use crate::trigger::filter::{Filter, FilterMiss, InputShape, Predicate, RequiredValue};
    pub use crate::trigger::request::{
        is_credential_header, Headers, JsonType, Rejection, VerifiedDelivery, WebhookRequest,
        GITHUB_SIGNATURE_HEADER, TRUNCATION_MARKER,
    };
    pub use crate::trigger::webhook::{DedupSource, RetiredCredentials, WebhookConfig};
}

/// Cron triggers: schedules, their policies, and what a tick did.
pub mod cron {
    pub use crate::engine::cron::{CronFiring, SCHEDULED_AT};
    pub use crate::trigger::cron::{
        CronConfig, CronSchedule, MissedRunPolicy, OverlapAction, OverlapPolicy,
    };
}

/// Metrics and trace context: the names of the metrics the engine emits
/// through the [`metrics`](https://docs.rs/metrics) facade, and the W3C
/// `traceparent` it keeps with each event.
pub mod telemetry {
    pub use crate::engine::telemetry::{
        parse_traceparent, trace_id, METRICS, QUEUE_DEPTH, RUNS_ACTIVE, RUNS_FINISHED,
        RUNS_RESUMED, RUNS_STARTED, RUN_DURATION, STEP_ATTEMPT_DURATION, STORE_COMMIT_DURATION,
        TRACEPARENT, WEBHOOK_DELIVERIES,
    };
}

/// Every bound the engine puts on input, in one place.
pub mod limits {
    pub use crate::concurrency::{MAX_KEY_POINTER_LEN, MAX_KEY_VALUE_LEN, MAX_RATE_RUNS};
    pub use crate::engine::{DEFAULT_PARK_AFTER, DEFAULT_STEP_TIMEOUT};
    pub use crate::run::{MAX_SIGNALS_PER_RUN, MAX_SIGNAL_PAYLOAD_BYTES};
    pub use crate::secret::MAX_SECRET_BYTES;
    pub use crate::step::{
        DEFAULT_MAX_LOG_BYTES, DEFAULT_MAX_LOG_LINES, LINE_CUT_MARKER, MAX_LOG_LINE_BYTES,
    };
    pub use crate::store::MAX_PAGE_SIZE;
    pub use crate::trigger::auth::MIN_TOKEN_LEN;
    pub use crate::trigger::cron::{MAX_CATCH_UP, MAX_EXPRESSION_LEN, SKIP_GRACE};
    pub use crate::trigger::filter::{MAX_GLOB_LEN, MAX_REQUIRED_VALUES};
    pub use crate::trigger::request::{
        DEFAULT_TIMESTAMP_TOLERANCE, MAX_JSON_DEPTH, MAX_KEPT_HEADERS, MAX_KEPT_HEADER_LEN,
    };
    pub use crate::trigger::webhook::{DEFAULT_MAX_BODY_BYTES, MAX_DEDUP_KEY_LEN};
    pub use crate::trigger::MAX_TRIGGER_NAME_LEN;
    pub use crate::workflow::{
        DEFAULT_MAX_PARALLEL_STEPS, MAX_DURATION, MAX_NAME_LEN, MAX_STEPS, MAX_STEP_CONFIG_BYTES,
        MAX_STEP_SECRETS,
    };
}
