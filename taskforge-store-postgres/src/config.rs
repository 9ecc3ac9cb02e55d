//! How a store is opened: the server, the schema, the pool.

use std::fmt;
use std::time::Duration;

/// The settings of [`PostgresStore::connect_with`](crate::PostgresStore::connect_with).
///
/// ```
/// use std::time::Duration;
/// use taskforge_store_postgres::PostgresConfig;
///
/// let config = PostgresConfig::new("postgres://postgres@127.0.0.1:5432/app")
///     .schema("taskforge")
///     .pool_size(32)
///     .connect_timeout(Duration::from_secs(5));
/// assert_eq!(config.schema_name(), "taskforge");
/// ```
#[derive(Clone)]
#[must_use]
pub struct PostgresConfig {
    pub(crate) url: String,
    pub(crate) schema: String,
    pub(crate) pool_size: usize,
    pub(crate) connect_timeout: Duration,
    pub(crate) synchronous_commit: bool,
}

impl PostgresConfig {
    /// Settings for the server at `url`, a `postgres://` URL or a libpq
    /// key-value string (`host=... user=...`), with the defaults: schema
    /// `taskforge`, 16 pooled connections, a 10 s connect timeout (unless
    /// the URL sets `connect_timeout`).
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            schema: "taskforge".to_owned(),
            pool_size: 16,
            connect_timeout: Duration::from_secs(10),
            synchronous_commit: true,
        }
    }

    /// The PostgreSQL schema that holds the store's tables (created if
    /// missing). Stores on different schemas of one database are
    /// independent, so each test can have its own.
    pub fn schema(mut self, schema: impl Into<String>) -> Self {
        self.schema = schema.into();
        self
    }

    /// The most connections the store keeps open (at least 1), besides the
    /// one that listens for notifications.
    pub fn pool_size(mut self, size: usize) -> Self {
        self.pool_size = size.max(1);
        self
    }

    /// How long opening a connection may take, when the URL does not say.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Whether a write waits for the server to flush it to disk before it
    /// is acknowledged (`true`, the default, which the store contract's
    /// *durable* means).
    ///
    /// `false` sets PostgreSQL's `synchronous_commit = off` on the store's
    /// connections: writes are acknowledged before their WAL is flushed,
    /// which saves one disk flush per write (or per batch of writes) and
    /// most of a sequential run's latency. The database stays consistent,
    /// and an engine process that crashes loses nothing; but if the
    /// *server* crashes (or its machine loses power), the writes of about
    /// the last `3 × wal_writer_delay` (600 ms by default) are lost although
    /// they were acknowledged: a step that had finished may run again, a
    /// run that had been started may be missing. Choose it only where that
    /// is acceptable.
    pub fn synchronous_commit(mut self, on: bool) -> Self {
        self.synchronous_commit = on;
        self
    }

    /// The lanes of each batcher (claims, commits, admissions): a quarter
    /// of the pool each, so reads keep a quarter.
    pub(crate) fn lanes(&self) -> usize {
        (self.pool_size / 4).max(1)
    }

    /// The schema name.
    #[must_use]
    pub fn schema_name(&self) -> &str {
        &self.schema
    }
}

impl fmt::Debug for PostgresConfig {
    // The URL may hold a password: it is never printed.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresConfig")
            .field("url", &"<redacted>")
            .field("schema", &self.schema)
            .field("pool_size", &self.pool_size)
            .field("connect_timeout", &self.connect_timeout)
            .field("synchronous_commit", &self.synchronous_commit)
            .finish()
    }
}
