//! Paged listings over a primary tree or one of its indexes.

use std::ops::Bound;

use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use sled::{IVec, Tree};
use taskforge_core::{Order, StoreError};

use crate::error::backend;
use crate::keys::{self, ID};
use crate::space::Space;
use crate::store::{decode, load};

/// Where the ids of a listing come from.
pub(crate) enum Source {
    /// The primary tree itself, whose values are the records.
    Primary,
    /// An index of the `idx` tree whose keys are `prefix ++ id`.
    Index(Vec<u8>),
    /// A time index of the `idx` tree (`tag ++ time ++ id`) between two
    /// times. Its order is not id order, so the ids in range are gathered
    /// (keys only) and sorted.
    TimeRange {
        /// The index's tag.
        tag: u8,
        /// At or after this time.
        from: Option<DateTime<Utc>>,
        /// Before this time.
        until: Option<DateTime<Utc>>,
    },
    /// These ids, in ascending order (from an in-memory index).
    Ids(Vec<[u8; ID]>),
    /// Several indexes of the `idx` tree (keys `prefix ++ id`), merged
    /// into one listing in id order.
    Merged(Vec<Vec<u8>>),
}

type Entry = Result<([u8; ID], Option<IVec>), StoreError>;

/// Which page of a listing to read.
pub(crate) struct PageRequest {
    /// Where the ids come from.
    pub(crate) source: Source,
    /// The order of the listing.
    pub(crate) order: Order,
    /// Start after this id.
    pub(crate) after: Option<[u8; ID]>,
    /// The most records to return.
    pub(crate) limit: usize,
}

/// One page of records of `primary` that `keep` accepts, as `request`
/// says, and whether more follow. `fresh` gives the records held in memory
/// (unfinished runs), which are newer than their sled copies.
pub(crate) fn page<T: DeserializeOwned>(
    primary: &Space,
    idx: &Tree,
    kind: &'static str,
    request: PageRequest,
    keep: impl Fn(&T) -> bool,
    fresh: impl Fn(&[u8; ID]) -> Option<T>,
) -> Result<(Vec<T>, bool), StoreError> {
    let PageRequest {
        source,
        order,
        after,
        limit,
    } = request;
    let entries: Box<dyn Iterator<Item = Entry>> = match source {
        Source::Primary => ordered(primary.tree(), &[primary.tag()], order, after, true),
        Source::Index(prefix) => ordered(idx, &prefix, order, after, false),
        Source::Merged(prefixes) => Box::new(Merge {
            sources: prefixes
                .iter()
                .map(|prefix| ordered(idx, prefix, order, after, false).peekable())
                .collect(),
            order,
        }),
        Source::TimeRange { tag, from, until } => {
            let ids = time_range(primary, idx, tag, from, until, order, after)?;
            Box::new(ids.into_iter().map(|id| Ok((id, None))))
        }
        Source::Ids(mut ids) => {
            if let Some(after) = after {
                ids.retain(|id| match order {
                    Order::OldestFirst => *id > after,
                    Order::NewestFirst => *id < after,
                });
            }
            if order == Order::NewestFirst {
                ids.reverse();
            }
            Box::new(ids.into_iter().map(|id| Ok((id, None))))
        }
    };
    let mut items = Vec::with_capacity(limit.min(128) + 1);
    for entry in entries {
        let (id, value) = entry?;
        let record: Option<T> = match (fresh(&id), value) {
            (Some(record), _) => Some(record),
            (None, Some(bytes)) => Some(decode(kind, &bytes)?),
            // An index entry whose record is gone was pruned meanwhile.
            (None, None) => load(primary, kind, &id)?,
        };
        if let Some(record) = record.filter(|r| keep(r)) {
            items.push(record);
            if items.len() > limit {
                items.truncate(limit);
                return Ok((items, true));
            }
        }
    }
    Ok((items, false))
}

/// The entries of `tree` under `prefix` (keys `prefix ++ id`) in `order`,
/// starting after `after`.
fn ordered(
    tree: &Tree,
    prefix: &[u8],
    order: Order,
    after: Option<[u8; ID]>,
    values: bool,
) -> Box<dyn Iterator<Item = Entry>> {
    let with = |id: [u8; ID]| [prefix, &id].concat();
    let mut lo = Bound::Included(with([0; ID]));
    let mut hi = Bound::Included(with([0xff; ID]));
    if let Some(after) = after {
        match order {
            Order::OldestFirst => lo = Bound::Excluded(with(after)),
            Order::NewestFirst => hi = Bound::Excluded(with(after)),
        }
    }
    let range = tree.range::<Vec<u8>, _>((lo, hi));
    let entry = move |item: sled::Result<(IVec, IVec)>| -> Entry {
        let (key, value) = item.map_err(backend)?;
        let id = keys::trailing_id(&key).ok_or_else(|| backend("malformed index key"))?;
        Ok((id, values.then_some(value)))
    };
    match order {
        Order::OldestFirst => Box::new(range.map(entry)),
        Order::NewestFirst => Box::new(range.rev().map(entry)),
    }
}

/// Listings in `order` merged into one: each step takes the first head.
struct Merge {
    sources: Vec<std::iter::Peekable<Box<dyn Iterator<Item = Entry>>>>,
    order: Order,
}

impl Iterator for Merge {
    type Item = Entry;

    fn next(&mut self) -> Option<Entry> {
        let mut first: Option<(usize, [u8; ID])> = None;
        for (at, source) in self.sources.iter_mut().enumerate() {
            let id = match source.peek() {
                // This one is done; the others may not be.
                None => continue,
                Some(Ok((id, _))) => *id,
                // An error is reported at once.
                Some(Err(_)) => return source.next(),
            };
            let better = first.is_none_or(|(_, best)| match self.order {
                Order::OldestFirst => id < best,
                Order::NewestFirst => id > best,
            });
            if better {
                first = Some((at, id));
            }
        }
        let (at, _) = first?;
        self.sources[at].next()
    }
}

/// The ids of the records made between `from` and `until`, sorted in
/// `order`, after `after`: those in time index `tag`, and those of
/// `primary` whose UUID v7 ids carry a millisecond in the range (records
/// dated by their ids have no time key; see `keys::dated_by_id`). Times
/// are stored to the microsecond and ids to the millisecond, so the range
/// is widened and the caller filters exactly.
pub(crate) fn time_range(
    primary: &Space,
    idx: &Tree,
    tag: u8,
    from: Option<DateTime<Utc>>,
    until: Option<DateTime<Utc>>,
    order: Order,
    after: Option<[u8; ID]>,
) -> Result<Vec<[u8; ID]>, StoreError> {
    let lo = keys::key(tag, &[&from.map_or(keys::TIME_MIN, keys::time)]);
    let hi = match until {
        Some(until) => Bound::Included(keys::key(tag, &[&keys::time(until), &[0xff; ID]])),
        None => Bound::Excluded(vec![tag + 1]),
    };
    let wanted = |id: &[u8; ID]| match (after, order) {
        (None, _) => true,
        (Some(after), Order::OldestFirst) => *id > after,
        (Some(after), Order::NewestFirst) => *id < after,
    };
    let mut ids = Vec::new();
    for item in idx.range::<Vec<u8>, _>((Bound::Included(lo), hi)) {
        let (key, _) = item.map_err(backend)?;
        if let Some(id) = keys::trailing_id(&key).filter(wanted) {
            ids.push(id);
        }
    }
    // No UUID v7 carries a time before the Unix epoch.
    if until.is_none_or(|until| until.timestamp_millis() >= 0) {
        let first = from.map_or([0; ID], |from| keys::id_bounds(from.timestamp_millis()).0);
        let last = until.map_or([0xff; ID], |until| {
            keys::id_bounds(until.timestamp_millis()).1
        });
        for key in primary
            .tree()
            .range(primary.key(&first)..=primary.key(&last))
            .keys()
        {
            let key = key.map_err(backend)?;
            let id = keys::trailing_id(&key).ok_or_else(|| backend("malformed record key"))?;
            if keys::id_millis(&id).is_some() && wanted(&id) {
                ids.push(id);
            }
        }
    }
    match order {
        Order::OldestFirst => ids.sort_unstable(),
        Order::NewestFirst => ids.sort_unstable_by(|a, b| b.cmp(a)),
    }
    // A record may be found both ways (a time key written by an earlier
    // format, or an id of the range's edge milliseconds).
    ids.dedup();
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> [u8; ID] {
        let mut id = [0; ID];
        id[ID - 1] = n;
        id
    }

    /// Sources holding these ids, each already in `order`.
    fn merge(sources: &[&[u8]], order: Order) -> Vec<u8> {
        let sources = sources
            .iter()
            .map(|ids| {
                let mut ids: Vec<Entry> = ids.iter().map(|&n| Ok((id(n), None))).collect();
                if order == Order::NewestFirst {
                    ids.reverse();
                }
                (Box::new(ids.into_iter()) as Box<dyn Iterator<Item = Entry>>).peekable()
            })
            .collect();
        Merge { sources, order }
            .map(|entry| entry.expect("no error").0[ID - 1])
            .collect()
    }

    #[test]
    fn merged_listings_keep_id_order_past_exhausted_sources() {
        let sources: &[&[u8]] = &[&[1, 4], &[], &[2, 3, 7, 9], &[5]];
        assert_eq!(merge(sources, Order::OldestFirst), [1, 2, 3, 4, 5, 7, 9]);
        assert_eq!(merge(sources, Order::NewestFirst), [9, 7, 5, 4, 3, 2, 1]);
        assert!(merge(&[], Order::OldestFirst).is_empty());
    }

    #[test]
    fn a_merged_listing_reports_an_error() {
        let failing: Box<dyn Iterator<Item = Entry>> =
            Box::new(std::iter::once(Err(backend("broken"))));
        let fine: Box<dyn Iterator<Item = Entry>> = Box::new(std::iter::once(Ok((id(1), None))));
        let mut merged = Merge {
            sources: vec![fine.peekable(), failing.peekable()],
            order: Order::OldestFirst,
        };
        assert!(merged.next().expect("an entry").is_err());
    }
}
