//! The store conformance suite of `taskforge-core`, on a fresh `MemoryStore` per case.

use taskforge_store_memory::MemoryStore;

taskforge_core::store_conformance!(|| async { MemoryStore::new() });
