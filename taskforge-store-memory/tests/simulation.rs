//! The seeded simulation of `taskforge-core` on the memory store: several
//! engines, injected store faults, failing, panicking and hanging steps,
//! crashes and restarts. `TASKFORGE_SIM_SEED=<n>` runs one seed alone;
//! `TASKFORGE_SIM_SCENARIOS=<n>` sets how many run.

use taskforge_store_memory::MemoryStore;

taskforge_core::simulation!(|| async { MemoryStore::new() });
