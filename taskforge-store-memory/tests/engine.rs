//! The engine-level scenarios, on the memory store.

use taskforge_store_memory::MemoryStore;

taskforge_core::engine_conformance!(|| async { MemoryStore::new() });

/// The same scenarios through `Arc<dyn Store>`.
mod through_dyn_store {
    use std::sync::Arc;

    use taskforge_core::Store;
    use taskforge_store_memory::MemoryStore;

    taskforge_core::engine_conformance!(|| async {
        Arc::new(MemoryStore::new()) as Arc<dyn Store>
    });
}
