//! One kind of record inside the `idx` tree: keys `tag ++ key`.
//!
//! Since format 5, events, runs and the attempts of earlier formats live in
//! the same sled tree as their indexes, so that the writer thread applies a
//! whole batch with one `Tree::apply_batch` (sled's multi-tree transactions
//! read every key before writing it). A `Space` reads one kind of record
//! with the keys it had in a tree of its own: the tag is added on the way
//! in and taken off on the way out.

use sled::{IVec, Tree};

use crate::keys;

/// The records under one tag of a tree.
#[derive(Debug, Clone)]
pub(crate) struct Space {
    tree: Tree,
    tag: u8,
}

impl Space {
    /// The records of `tree` under `tag`.
    pub(crate) fn new(tree: Tree, tag: u8) -> Self {
        Self { tree, tag }
    }

    /// The tree the records are in.
    pub(crate) fn tree(&self) -> &Tree {
        &self.tree
    }

    /// The tag their keys start with.
    pub(crate) fn tag(&self) -> u8 {
        self.tag
    }

    /// The key in the tree of the record at `key`.
    pub(crate) fn key(&self, key: &[u8]) -> Vec<u8> {
        keys::key(self.tag, &[key])
    }

    /// The record at `key`.
    pub(crate) fn get(&self, key: impl AsRef<[u8]>) -> sled::Result<Option<IVec>> {
        self.tree.get(self.key(key.as_ref()))
    }

    /// The records whose keys start with `prefix`, in key order, with their
    /// keys as they would be in a tree of their own.
    pub(crate) fn scan_prefix(
        &self,
        prefix: impl AsRef<[u8]>,
    ) -> impl DoubleEndedIterator<Item = sled::Result<(IVec, IVec)>> {
        self.tree
            .scan_prefix(self.key(prefix.as_ref()))
            .map(|entry| entry.map(|(key, value)| (IVec::from(&key[1..]), value)))
    }
}

/// Where records are read from: a tree of their own, or a [`Space`].
pub(crate) trait Records {
    /// The record at `key`.
    fn record(&self, key: &[u8]) -> sled::Result<Option<IVec>>;
}

impl Records for Tree {
    fn record(&self, key: &[u8]) -> sled::Result<Option<IVec>> {
        self.get(key)
    }
}

impl Records for Space {
    fn record(&self, key: &[u8]) -> sled::Result<Option<IVec>> {
        self.get(key)
    }
}
