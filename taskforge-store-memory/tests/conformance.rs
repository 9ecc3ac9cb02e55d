//! The store conformance suite of `taskforge-core`, on a fresh `MemoryStore` per case.

use taskforge_store_memory::MemoryStore;

taskforge_core::store_conformance!(|| async { MemoryStore::new() });

/// The same suite through `Arc<dyn Store>`, as a host that picks its
/// backend at run time holds it.
mod through_dyn_store {
    use std::sync::Arc;

    use taskforge_core::Store;
    use taskforge_store_memory::MemoryStore;

    taskforge_core::store_conformance!(|| async { Arc::new(MemoryStore::new()) as Arc<dyn Store> });
}
