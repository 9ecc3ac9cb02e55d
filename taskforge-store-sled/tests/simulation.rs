//! The seeded simulation of `taskforge-core` on sled: several engines,
//! injected store faults, failing, panicking and hanging steps, crashes
//! and restarts. Every scenario runs on one store in a temporary
//! directory, each with workflows of its own: opening a store per
//! scenario would add about a third to the run time.
//! `TASKFORGE_SIM_SEED=<n>` runs one seed alone; `TASKFORGE_SIM_SCENARIOS=<n>`
//! sets how many run.

use taskforge_core::testing::Fixture;
use taskforge_store_sled::SledStore;

taskforge_core::simulation!(shared: || async {
    let dir = tempfile::tempdir().expect("create a temporary directory");
    let store = SledStore::open(dir.path()).expect("open the store");
    Fixture::with_guard(store, dir)
});
