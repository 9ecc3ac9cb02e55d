//! Counters of the write path, for benchmarks and tuning: how many batches
//! the writer thread applied, how many queued writes they held, how many
//! keys and bytes they wrote, and how many flushes made them durable.

use std::sync::atomic::{AtomicU64, Ordering};

/// How many histogram buckets [`WriteStats::batch_sizes`] has.
pub const BATCH_BUCKETS: usize = 11;

/// What the store's writer thread and flusher did since the store was
/// opened, from [`SledStore::write_stats`](crate::SledStore::write_stats).
/// Subtract two snapshots to count the work of what ran between them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct WriteStats {
    /// Batches applied (each one sled write).
    pub batches: u64,
    /// Queued writes applied, in all batches.
    pub writes: u64,
    /// Queued writes that waited for a flush.
    pub durable_writes: u64,
    /// Keys inserted or removed.
    pub keys: u64,
    /// Bytes of the keys inserted or removed and of the values inserted.
    pub bytes: u64,
    /// Flushes (each an `fsync` of sled's log) made for writers waiting.
    pub flushes: u64,
    /// The largest batch, in queued writes.
    pub max_batch: u64,
    /// Batches by size: bucket `i` counts batches of `2^i` to `2^(i+1) - 1`
    /// writes (the last one, 1,024 and more).
    pub batch_sizes: [u64; BATCH_BUCKETS],
}

impl WriteStats {
    /// What happened between `earlier` and `self` (counters subtracted;
    /// `max_batch` is the later one's).
    #[must_use]
    pub fn since(&self, earlier: &Self) -> Self {
        let mut batch_sizes = [0; BATCH_BUCKETS];
        for (i, slot) in batch_sizes.iter_mut().enumerate() {
            *slot = self.batch_sizes[i].saturating_sub(earlier.batch_sizes[i]);
        }
        Self {
            batches: self.batches.saturating_sub(earlier.batches),
            writes: self.writes.saturating_sub(earlier.writes),
            durable_writes: self.durable_writes.saturating_sub(earlier.durable_writes),
            keys: self.keys.saturating_sub(earlier.keys),
            bytes: self.bytes.saturating_sub(earlier.bytes),
            flushes: self.flushes.saturating_sub(earlier.flushes),
            max_batch: self.max_batch,
            batch_sizes,
        }
    }

    /// Mean queued writes per batch.
    #[must_use]
    pub fn mean_batch(&self) -> f64 {
        self.writes as f64 / self.batches.max(1) as f64
    }

    /// Mean durable writes made durable by one flush.
    #[must_use]
    pub fn writes_per_flush(&self) -> f64 {
        self.durable_writes as f64 / self.flushes.max(1) as f64
    }
}

/// The live counters, shared by the writer thread, the flusher and the
/// store handle.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    batches: AtomicU64,
    writes: AtomicU64,
    durable_writes: AtomicU64,
    keys: AtomicU64,
    bytes: AtomicU64,
    flushes: AtomicU64,
    max_batch: AtomicU64,
    batch_sizes: [AtomicU64; BATCH_BUCKETS],
}

impl Counters {
    /// Counts one applied batch.
    pub(crate) fn batch(&self, writes: usize, durable: usize, keys: u64, bytes: u64) {
        let writes = writes as u64;
        self.batches.fetch_add(1, Ordering::Relaxed);
        self.writes.fetch_add(writes, Ordering::Relaxed);
        self.durable_writes
            .fetch_add(durable as u64, Ordering::Relaxed);
        self.keys.fetch_add(keys, Ordering::Relaxed);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
        self.max_batch.fetch_max(writes, Ordering::Relaxed);
        let bucket = (writes.max(1).ilog2() as usize).min(BATCH_BUCKETS - 1);
        self.batch_sizes[bucket].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one flush.
    pub(crate) fn flush(&self) {
        self.flushes.fetch_add(1, Ordering::Relaxed);
    }

    /// A snapshot.
    pub(crate) fn snapshot(&self) -> WriteStats {
        let mut batch_sizes = [0; BATCH_BUCKETS];
        for (slot, counter) in batch_sizes.iter_mut().zip(&self.batch_sizes) {
            *slot = counter.load(Ordering::Relaxed);
        }
        WriteStats {
            batches: self.batches.load(Ordering::Relaxed),
            writes: self.writes.load(Ordering::Relaxed),
            durable_writes: self.durable_writes.load(Ordering::Relaxed),
            keys: self.keys.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
            flushes: self.flushes.load(Ordering::Relaxed),
            max_batch: self.max_batch.load(Ordering::Relaxed),
            batch_sizes,
        }
    }
}
