//! The engine-level scenarios, on a durable sled store in a temporary directory.

use taskforge_core::testing::Fixture;
use taskforge_store_sled::SledStore;

taskforge_core::engine_conformance!(|| async {
    let dir = tempfile::tempdir().expect("create a temporary directory");
    let store = SledStore::open(dir.path()).expect("open the store");
    Fixture::with_guard(store, dir)
});
