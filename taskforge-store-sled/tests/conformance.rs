//! The store conformance suite of `taskforge-core`, on a sled store in a
//! fresh temporary directory per case.

use taskforge_core::testing::Fixture;
use taskforge_store_sled::SledStore;

taskforge_core::store_conformance!(|| async {
    let dir = tempfile::tempdir().expect("create a temporary directory");
    let store = SledStore::open(dir.path()).expect("open the store");
    Fixture::with_guard(store, dir)
});

/// The same suite through `Arc<dyn Store>`, as a host that picks its
/// backend at run time holds it.
mod through_dyn_store {
    use std::sync::Arc;

    use taskforge_core::testing::Fixture;
    use taskforge_core::Store;
    use taskforge_store_sled::SledStore;

    taskforge_core::store_conformance!(|| async {
        let dir = tempfile::tempdir().expect("create a temporary directory");
        let store = SledStore::open(dir.path()).expect("open the store");
        Fixture::with_guard(Arc::new(store) as Arc<dyn Store>, dir)
    });
}
