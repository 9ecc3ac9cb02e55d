//! Keyset paging over ordered indexes.

use std::collections::BTreeSet;
use std::ops::Bound;

use taskforge_core::store::rules::page_limit;
use taskforge_core::Order;

/// The range of an index to walk for a page: the whole prefix, cut at the
/// cursor on the side the order walks away from.
///
/// `min` and `max` are the smallest and largest ids, so the bounds hold
/// every id of the prefix, and `min <= after <= max` keeps the range valid
/// (a `BTreeSet::range` with start after end panics).
pub(crate) fn bounds<Id: Copy, K>(
    order: Order,
    after: Option<Id>,
    min: Id,
    max: Id,
    key: impl Fn(Id) -> K,
) -> (Bound<K>, Bound<K>) {
    match (order, after) {
        (_, None) => (Bound::Included(key(min)), Bound::Included(key(max))),
        (Order::OldestFirst, Some(after)) => {
            (Bound::Excluded(key(after)), Bound::Included(key(max)))
        }
        (Order::NewestFirst, Some(after)) => {
            (Bound::Included(key(min)), Bound::Excluded(key(after)))
        }
    }
}

/// Collects one page: up to `limit` accepted items, and whether more follow.
pub(crate) struct Pager<T> {
    items: Vec<T>,
    limit: usize,
    more: bool,
}

impl<T> Pager<T> {
    pub(crate) fn new(limit: usize) -> Self {
        let limit = page_limit(limit);
        Self {
            // The page is usually full; small limits are the common case,
            // and a cap keeps a huge limit from reserving for nothing.
            items: Vec::with_capacity(limit.min(128)),
            limit,
            more: false,
        }
    }

    /// Walks `ids` in `order`, offering each to `accept`, until the page is
    /// full and one more match proves a next page exists.
    pub(crate) fn fill<'a, K: Ord + 'a, Id>(
        &mut self,
        set: &'a BTreeSet<K>,
        range: (Bound<K>, Bound<K>),
        order: Order,
        id: impl Fn(&K) -> Id,
        accept: impl FnMut(Id) -> Option<T>,
    ) {
        let range = set.range(range);
        match order {
            Order::OldestFirst => self.take(range.map(id), accept),
            Order::NewestFirst => self.take(range.rev().map(id), accept),
        }
    }

    /// Offers `ids`, in the order given, to `accept`.
    pub(crate) fn take<Id>(
        &mut self,
        ids: impl Iterator<Item = Id>,
        mut accept: impl FnMut(Id) -> Option<T>,
    ) {
        for id in ids {
            if let Some(item) = accept(id) {
                if self.items.len() == self.limit {
                    self.more = true;
                    return;
                }
                self.items.push(item);
            }
        }
    }

    /// The page's items and whether another page follows.
    pub(crate) fn finish(self) -> (Vec<T>, bool) {
        (self.items, self.more)
    }
}
