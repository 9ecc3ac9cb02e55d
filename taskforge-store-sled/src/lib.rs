//! A [sled](https://docs.rs/sled/0.34) storage backend for Taskforge.
//!
//! [`SledStore`] keeps workflows, versions, triggers, events, runs and step
//! attempts in one embedded sled database, and implements the three store
//! traits of `taskforge-core` ([`WorkflowStore`](taskforge_core::store::WorkflowStore),
//! [`EventStore`](taskforge_core::store::EventStore),
//! [`RunStore`](taskforge_core::store::RunStore)) with their contracts.
//!
//! # Layout
//!
//! Each kind of record has a tree keyed by its id: 16 bytes of UUID v7,
//! so byte order is creation order. Records are JSON (they hold
//! `serde_json::Value`s). Events, runs and their secondary indexes share
//! one `idx` tree; each key is a one-byte tag, fixed-width parts and the id
//! pointed to, so listing one workflow's runs, finished runs in one status,
//! one event's runs, or one trigger's events reads only matching keys.
//! Writes that belong together (an event, its run and their index
//! entries; a run, its step attempts and its index entries) are applied
//! in one sled `apply_batch`: other callers see all of them or none, and
//! so does a reopen after a crash. Compare-and-set writes (`claim_run`,
//! fenced `commit`, dedup of events) are checked and staged by the one
//! thread that writes these keys, one after the other, so of two racing
//! writers exactly one wins.
//!
//! Unfinished runs are also held in memory (sled lets one process open a
//! database, and one thread writes runs, so that copy is the truth): with
//! their attempts' statuses, indexed by status and by lease expiry. A
//! claim or a fenced commit checks against that copy and reads nothing; a
//! claim or a lease renewal (which need not be durable) writes nothing,
//! and the run's next write carries it; starting a run writes no index
//! key; claimable runs and runs in unfinished statuses are listed from
//! memory. On disk an unfinished run has one `ACTIVE` index key, from which
//! opening the store loads them back. A run's step attempts are kept in
//! its record, so a commit that finishes one step and starts the next
//! writes one key; the run an event started needs no index key of its own
//! (the event names it); a run or event whose UUID v7 id carries its
//! creation time (to the millisecond, as with the system clock) has no
//! time-index key, its id is one. A durable three-step run writes 11 keys
//! (format 1: 29); see `benches/README.md`.
//!
//! In sled 0.34 each batch writes out sled's log buffer, however small, so
//! run and event writes are queued to one writer thread that applies
//! whatever has queued up in a single batch. Each write
//! checks its preconditions before it writes anything, so one that fails
//! (a conflict, a taken id) leaves nothing behind and does not affect the
//! others in its batch; they apply in queue order, each seeing the ones
//! before it, exactly as if run one by one. Sled calls thus never run on
//! the async runtime's threads, except point reads.
//!
//! A `meta` tree holds a marker and a format version, checked on open:
//! another program's database, a newer format, or damaged files give an
//! [`OpenError`], never a panic. A store of an earlier format is migrated
//! when opened (see [`FORMAT_VERSION`]).
//!
//! # Durability
//!
//! With [`Durability::Durable`] (the default), a write the contract calls
//! durable is on disk (written and fsynced by `sled::Db::flush`) before its
//! call returns `Ok`: after a crash, a reopened store holds it. Writes go
//! to sled's memory first; the writer then asks a single flusher thread
//! for a flush that began after its write, and waits. Writers that ask
//! while a flush runs share the next one (group commit), so 64 concurrent
//! writers cost a handful of fsyncs, not 64. Flushing never runs on the
//! async runtime.
//!
//! Two things are weaker, by design. A lease renewal is not waited for
//! (the contract allows it: a lost renewal only shortens the lease). And
//! a reader may see a write whose writer is still waiting for its flush;
//! if the process crashes in that window the write is lost although it
//! was read, just as the writer never saw `Ok`.
//!
//! With [`Durability::Relaxed`], calls return once the write is in memory
//! and sled flushes every [`SledConfig::flush_every_ms`]: a crash loses at
//! most the last interval's writes, and never half of a write.
//!
//! # Example
//!
//! ```
//! use chrono::Utc;
//! use taskforge_core::store::WorkflowStore;
//! use taskforge_core::Workflow;
//! use taskforge_store_sled::SledStore;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = std::env::temp_dir().join(format!("taskforge-doc-{}", std::process::id()));
//! # let _ = std::fs::remove_dir_all(&dir);
//! let store = SledStore::open(&dir)?;
//! let workflow = Workflow::new("nightly-report", Utc::now())?;
//! store.insert_workflow(&workflow).await?;
//! drop(store);
//!
//! // Everything written is there after a reopen.
//! let store = SledStore::open(&dir)?;
//! assert_eq!(store.find_workflow("nightly-report").await?, Some(workflow));
//! # drop(store);
//! # std::fs::remove_dir_all(&dir)?;
//! # Ok(())
//! # }
//! ```

#![warn(missing_docs)]

mod active;
mod config;
mod error;
mod events;
mod group_commit;
mod keys;
mod logs;
mod prune;
mod recent;
mod record;
mod runs;
mod scan;
mod secrets;
mod space;
mod stats;
mod store;
mod tokens;
mod workflows;
mod writer;

pub use config::{Durability, SledConfig};
pub use error::OpenError;
pub use stats::{WriteStats, BATCH_BUCKETS};
pub use store::{SledStore, FORMAT_VERSION};
pub use writer::PruneReport;
