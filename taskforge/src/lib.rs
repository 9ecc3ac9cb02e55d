//! Taskforge: an embeddable, durable workflow engine for Rust applications.
//!
//! This crate is the one a host application depends on. It re-exports
//! [`taskforge_core`] (the engine, the domain model and the storage
//! contract) and, behind features, the storage backends: [`sled`] (the
//! default, durable and embedded), `memory` (the in-memory store, feature
//! `memory`) and `postgres` (PostgreSQL, feature `postgres`: several engine
//! processes on one database).
//!
//! ```no_run
//! use serde_json::{json, Value};
//! use taskforge::{Engine, StepContext, StepDefinition, StepError, StepRegistry, WorkflowDefinition};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let mut registry = StepRegistry::new();
//! registry.step("hello", |ctx: StepContext, input: Value| async move {
//!     Ok::<_, StepError>(json!({ "hello": input["name"], "attempt": ctx.attempt() }))
//! })?;
//! let store = taskforge::sled::SledStore::open("taskforge-data")?;
//! let engine = Engine::builder(store, registry).build();
//! engine.start();
//! let workflow = engine.ensure_workflow("greeter").await?;
//! engine
//!     .publish(workflow.id, WorkflowDefinition::new(vec![StepDefinition::new("greet", "hello")]))
//!     .await?;
//! let run = engine.start_run(workflow.id, json!({ "name": "world" })).await?;
//! let finished = engine.wait_for_run(run.id).await?;
//! println!("{:?}", finished.output);
//! # Ok(())
//! # }
//! ```

pub use taskforge_core::*;

/// The in-memory store.
#[cfg(feature = "memory")]
pub use taskforge_store_memory as memory;
/// The PostgreSQL store: several engine processes share one database.
#[cfg(feature = "postgres")]
pub use taskforge_store_postgres as postgres;
/// The durable embedded store on sled.
#[cfg(feature = "sled")]
pub use taskforge_store_sled as sled;
