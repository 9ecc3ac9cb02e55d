//! The store conformance suite of `taskforge-core`, each case in a fresh
//! schema of the database at `TASKFORGE_PG_URL`, so cases run in parallel.
//!
//! Built only when `TASKFORGE_PG_URL` is set (see `build.rs`); otherwise
//! one test says how to run them.

#[cfg(taskforge_pg)]
mod common;

#[cfg(taskforge_pg)]
taskforge_core::store_conformance!(common::fixture);

#[cfg(not(taskforge_pg))]
#[test]
fn postgres_tests_skipped() {
    use std::io::Write;
    // Straight to stderr: the test harness captures `eprintln!` of passing tests.
    let _ = writeln!(
        std::io::stderr(),
        "taskforge-store-postgres: TASKFORGE_PG_URL is unset, so the PostgreSQL tests were \
         skipped; run them with: TASKFORGE_PG_URL=postgres://postgres@127.0.0.1:5432/test \
         cargo test -p taskforge-store-postgres"
    );
}
