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
            .finish()
    }
}
