//! How a store is opened: durability and cache settings.

/// When a write is on disk, relative to the call that made it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// Every write the contract calls durable is flushed to disk (written
    /// and fsynced) before its call returns. Concurrent writers share one
    /// flush (group commit), so the cost of an fsync is paid once per batch
    /// of writes, not once per write.
    #[default]
    Durable,
    /// Calls return once the write is in sled's memory; sled flushes to
    /// disk on its own every [`SledConfig::flush_every_ms`]. A crash can
    /// lose the writes of the last interval, but never leaves half of a
    /// write behind.
    Relaxed,
}

/// The settings of [`SledStore::open_with`](crate::SledStore::open_with).
///
/// Build it with struct update syntax over the defaults:
///
/// ```
/// use taskforge_store_sled::{Durability, SledConfig};
///
/// let config = SledConfig {
///     durability: Durability::Relaxed,
///     ..SledConfig::default()
/// };
/// assert_eq!(config.flush_every_ms, 500);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SledConfig {
    /// When writes reach the disk. Defaults to [`Durability::Durable`].
    pub durability: Durability,
    /// The most memory, in bytes, sled's page cache may use. Defaults to
    /// 256 MiB.
    pub cache_capacity: u64,
    /// With [`Durability::Relaxed`], how often sled flushes on its own, in
    /// milliseconds. Ignored with [`Durability::Durable`], where the store
    /// flushes as writes need it. Defaults to 500.
    pub flush_every_ms: u64,
}

impl Default for SledConfig {
    fn default() -> Self {
        Self {
            durability: Durability::Durable,
            cache_capacity: 256 * 1024 * 1024,
            flush_every_ms: 500,
        }
    }
}
