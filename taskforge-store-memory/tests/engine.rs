//! The engine-level scenarios, on the memory store.

use taskforge_store_memory::MemoryStore;

taskforge_core::engine_conformance!(|| async { MemoryStore::new() });
