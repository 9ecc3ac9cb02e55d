//! The most recently stored events with a dedup key, in memory, so that a
//! repeated delivery (a webhook sender retrying) is answered without
//! reading sled or queueing a write.
//!
//! Only stored events are kept: an event enters once its write is applied
//! (by the caller that stored it, or one that found it stored), and prune,
//! the only thing that removes events, empties the cache when it begins and
//! again when it ends; an entry made by a caller that read the event before
//! a prune began is refused (the generation it read under has passed). A
//! key not found here is looked up in sled as before, so the cache only
//! ever answers "duplicate", and only with the stored original.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use parking_lot::Mutex;
use taskforge_core::Event;

/// How many events the cache keeps.
const CAPACITY: usize = 4096;

#[derive(Debug, Default)]
struct Inner {
    /// Dedup index key → the stored event.
    events: HashMap<Vec<u8>, Arc<Event>>,
    /// Keys, oldest first, for eviction.
    order: VecDeque<Vec<u8>>,
    /// Bumped by every prune.
    generation: u64,
}

/// The cache of recently stored events, by dedup index key.
#[derive(Debug, Default)]
pub(crate) struct RecentEvents {
    inner: Mutex<Inner>,
}

impl RecentEvents {
    /// The stored event with dedup index key `key`, if cached.
    pub(crate) fn get(&self, key: &[u8]) -> Option<Arc<Event>> {
        self.inner.lock().events.get(key).cloned()
    }

    /// The generation to pass to [`insert`](Self::insert) for an event
    /// found stored after this call.
    pub(crate) fn generation(&self) -> u64 {
        self.inner.lock().generation
    }

    /// Keeps `event`, found stored under `key` after [`generation`]
    /// returned `generation`, unless a prune began since.
    pub(crate) fn insert(&self, generation: u64, key: Vec<u8>, event: Arc<Event>) {
        let mut inner = self.inner.lock();
        if inner.generation != generation {
            return;
        }
        if inner.events.insert(key.clone(), event).is_none() {
            inner.order.push_back(key);
        }
        while inner.order.len() > CAPACITY {
            if let Some(old) = inner.order.pop_front() {
                inner.events.remove(&old);
            }
        }
    }

    /// Forgets everything: events may be removed.
    pub(crate) fn clear(&self) {
        let mut inner = self.inner.lock();
        inner.generation += 1;
        inner.events.clear();
        inner.order.clear();
    }
}
