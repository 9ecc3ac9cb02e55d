//! Taskforge core: the domain model, the run and step state machine, the
//! storage contract, and the engine that runs workflows of Rust closures.
//!
//! Taskforge is an embeddable workflow engine. A host application registers
//! step handlers as closures, publishes immutable workflow versions that
//! name them, and starts runs by hand, from webhooks or on a schedule. Every
//! run is pinned to one version, and its whole history (each step attempt,
//! its output or error) is kept in a store.
//!
//! Storage is pluggable: this crate defines [`WorkflowStore`], [`EventStore`]
//! and [`RunStore`], and backend crates implement them
//! (`taskforge-store-memory`, `taskforge-store-sled`). With the `testing`
//! feature, this crate also provides the conformance suite every backend runs.

#![warn(missing_docs)]

mod auth;
mod clock;
mod duration_ms;
mod engine;
mod error;
mod event;
mod filter;
mod id;
mod ingest;
mod retry;
mod run;
mod schedule;
mod scheduler;
mod step;
pub mod store;
#[cfg(feature = "testing")]
pub mod testing;
mod trigger;
mod webhook;
mod worker;
mod workflow;

pub use clock::{Clock, ManualClock, SystemClock};
pub use engine::{Engine, EngineBuilder, EngineConfig, RunDetails, RunOptions, RunUpdate};
pub use error::{EngineError, IllegalTransition, InvalidDefinition, StoreError};
pub use event::{Event, EventOutcome, EventSource, OutcomeKind};
pub use filter::{glob_match, matches, Filter, FilterMiss, Predicate, MAX_GLOB_LEN};
pub use id::{EventId, RunId, StepRunId, TriggerId, VersionId, WorkflowId};
pub use ingest::Delivery;
pub use retry::{Backoff, RetryDecision, RetryPolicy};
pub use run::{
    idempotency_key, replay_run, Fence, Lease, RunError, RunStatus, RunTransition, StepFailure,
    StepRun, StepStatus, StepTransition, WorkflowRun,
};
pub use schedule::{
    tick_dedup_key, CronSchedule, MissedRunPolicy, OverlapAction, OverlapPolicy, ScheduleError,
    MAX_CATCH_UP, MAX_EXPRESSION_LEN, SKIP_GRACE,
};
pub use scheduler::{CronFiring, SCHEDULED_AT};
pub use step::{
    RegistryError, StepContext, StepContextParts, StepError, StepExecutor, StepFuture, StepRegistry,
};
pub use store::{
    page_limit, EventInsert, EventQuery, EventStore, Order, Page, RunQuery, RunStore, RunStoreExt,
    Store, WorkflowStore, MAX_PAGE_SIZE,
};
pub use trigger::{CronConfig, InvalidTrigger, Trigger, TriggerKind, WebhookConfig};
pub use webhook::{
    github_signature, DedupSource, Headers, InvalidWebhookConfig, Rejection, SignatureScheme,
    TokenHash, VerifiedDelivery, WebhookRequest, DEFAULT_MAX_BODY_BYTES,
    DEFAULT_TIMESTAMP_TOLERANCE, GITHUB_SIGNATURE_HEADER, MAX_DEDUP_KEY_LEN, MAX_JSON_DEPTH,
};
pub use workflow::{
    validate_name, DefinitionProblem, NameError, StepDefinition, Workflow, WorkflowDefinition,
    WorkflowVersion, MAX_NAME_LEN, MAX_STEPS, MAX_STEP_CONFIG_BYTES,
};
