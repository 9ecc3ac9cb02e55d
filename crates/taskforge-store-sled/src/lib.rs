//! Sled store.
