//! The engine-level scenarios, each in a fresh schema of the database at
//! `TASKFORGE_PG_URL`. Built only when it is set (see `build.rs`).

#![cfg(taskforge_pg)]

mod common;

taskforge_core::engine_conformance!(common::fixture);
