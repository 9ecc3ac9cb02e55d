//! A [PostgreSQL](https://www.postgresql.org) storage backend for
//! Taskforge: several engine processes, on one or many machines, share one
//! database.
//!
//! [`PostgresStore`] implements the three store traits of `taskforge-core`
//! ([`WorkflowStore`](taskforge_core::store::WorkflowStore),
//! [`EventStore`](taskforge_core::store::EventStore),
//! [`RunStore`](taskforge_core::store::RunStore)) with their contracts, in
//! one schema of a database. Choose it over the embedded sled store when
//! more than one process needs the store: several engines sharing the
//! work, or an operator tool reading the history while the application
//! runs.
//!
//! ```
//! use chrono::Utc;
//! use taskforge_core::store::WorkflowStore;
//! use taskforge_core::Workflow;
//! use taskforge_store_postgres::{PostgresConfig, PostgresStore};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let Ok(url) = std::env::var("TASKFORGE_PG_URL") else {
//!     eprintln!("TASKFORGE_PG_URL is unset: skipping the PostgreSQL example");
//!     return Ok(());
//! };
//! let schema = format!("taskforge_doc_{}", std::process::id());
//! let store = PostgresStore::connect_with(PostgresConfig::new(url).schema(&schema)).await?;
//!
//! let workflow = Workflow::new("nightly-report", Utc::now())?;
//! store.insert_workflow(&workflow).await?;
//! assert_eq!(store.find_workflow("nightly-report").await?, Some(workflow));
//! # store.drop_schema().await?;
//! # Ok(())
//! # }
//! ```
//!
//! # Schema
//!
//! Tables live in one PostgreSQL schema (`taskforge` unless
//! [`PostgresConfig::schema`] says otherwise), created on open. Versioned
//! migrations are embedded in the crate and applied on open inside one
//! transaction under an advisory lock, so processes starting at once apply
//! each migration once; a schema migrated by a newer release is refused
//! with [`OpenError::NewerSchema`]. Statements name tables with their
//! schema, so they work on any connection, including a host's.
//!
//! Each record is stored whole as serde JSON text (not `jsonb`, which
//! rejects `\u0000` and renormalizes numbers), so it round-trips exactly;
//! the fields that queries filter, order or lock on are columns beside it,
//! each query with its index.
//!
//! # Many processes
//!
//! - A claim takes the run's row lock and checks the lease in the same
//!   statement, so of racing claims (in one process or many) exactly one
//!   wins.
//! - A [`commit`](taskforge_core::store::RunStore::commit) is one
//!   transaction that locks the run's row, checks the fence (lease epoch
//!   and status) and writes the run and its step attempts; a connection
//!   lost midway leaves nothing, and the engine's retry of a commit that
//!   was applied is accepted.
//! - Unique constraints enforce workflow names, version numbers, webhook
//!   paths and dedup keys per workflow (cron slots are dedup keys), so
//!   racing processes cannot create two of anything.
//! - New runs, and runs given back unfinished, notify listeners through
//!   `LISTEN/NOTIFY` once committed; see [`PostgresStore::notifications`].
//!
//! # Group commit
//!
//! Claims, commits and admissions (an event with its run) that callers
//! make at the same moment go to the server together: one statement, one
//! transaction, one WAL flush per batch, on a few lanes (connections) per
//! kind of write (a quarter of [`PostgresConfig::pool_size`] each). A write
//! that finds a lane free goes out at once, alone. Claims and commits run
//! as the server-side functions `taskforge_claim` and `taskforge_commit`
//! (migration 2), which lock the batch's runs in id order (so batches
//! cannot deadlock) and apply each claim or commit whose checks pass;
//! whatever a batch leaves out (a refused fence, a finished attempt, a
//! merge, a taken dedup key, a batch the server refused) is settled alone
//! by the contract's rules in [`taskforge_core::store::rules`], so the
//! answers are exactly those of one write at a time. A batch lost with its
//! connection is an error for each of its writes, as a lone write's would
//! be: the engine retries.
//!
//! # Enqueue in your transaction
//!
//! [`PostgresStore::insert_run_in`] and [`PostgresStore::insert_event_in`]
//! write into a host's own [`tokio_postgres::Transaction`], so a run
//! exists if and only if the host's commit succeeds.
//!
//! # Decisions where the contract is silent
//!
//! As the memory store: `insert_event` checks the dedup key before the
//! ids, `insert_version` the workflow, then the id, then the number; a
//! run is claimable if queued or running with no live lease; `commit`
//! keeps the stored `lease_epoch` and ORs in the stored `cancel_requested`.
//! A webhook path taken by another trigger is `AlreadyExists`.

#![warn(missing_docs)]

mod batch;
mod codec;
mod config;
mod conn;
mod error;
mod events;
mod logs;
mod notify;
mod runs;
mod schema;
mod secrets;
mod store;
mod tokens;
mod workflows;

pub use config::PostgresConfig;
pub use error::OpenError;
pub use notify::Notifications;
pub use schema::SCHEMA_VERSION;
pub use store::PostgresStore;
/// The PostgreSQL client this crate uses, for
/// [`PostgresStore::insert_run_in`] and [`PostgresStore::insert_event_in`].
pub use tokio_postgres;
