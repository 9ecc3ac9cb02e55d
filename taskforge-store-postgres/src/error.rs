//! Why a store could not be opened, and how PostgreSQL failures map onto
//! [`StoreError`].

use taskforge_core::store::StoreError;
use tokio_postgres::error::SqlState;

/// The backend name carried by [`StoreError::Backend`].
pub(crate) const BACKEND: &str = "postgres";

/// Why [`PostgresStore::connect`](crate::PostgresStore::connect) failed.
///
/// Messages name the server's address (host and port) but never the
/// connection URL itself, so a password in it is not logged.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// The connection URL or key-value string does not parse.
    #[error("invalid postgres connection string: {reason}")]
    InvalidUrl {
        /// What is wrong with it (never the string itself).
        reason: String,
    },
    /// The schema name cannot be a PostgreSQL schema.
    #[error("invalid schema name {schema:?}: {reason}")]
    InvalidSchema {
        /// The name given.
        schema: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The server could not be reached, or refused the connection.
    #[error("could not connect to postgres at {address}: {source}")]
    Connect {
        /// The host(s) and port(s) tried.
        address: String,
        /// The client's error.
        #[source]
        source: tokio_postgres::Error,
    },
    /// The schema was migrated by a newer release of this crate; this
    /// release does not know what the newer migrations changed, so it
    /// refuses to read or write.
    #[error(
        "schema {schema:?} at {address} is at version {found}, newer than version \
         {supported} that this release of taskforge-store-postgres supports"
    )]
    NewerSchema {
        /// The server's address.
        address: String,
        /// The schema.
        schema: String,
        /// The version stored.
        found: i64,
        /// The newest version this release knows.
        supported: i64,
    },
    /// Creating or migrating the schema failed.
    #[error("could not migrate schema {schema:?} at {address}: {source}")]
    Migrate {
        /// The server's address.
        address: String,
        /// The schema.
        schema: String,
        /// The server's error.
        #[source]
        source: tokio_postgres::Error,
    },
    /// The store was opened outside a Tokio runtime, which its connections
    /// and notification listener run on.
    #[error("the postgres store must be opened within a Tokio runtime")]
    NoRuntime,
    /// The connection pool could not be built.
    #[error("could not build the connection pool for {address}: {reason}")]
    Pool {
        /// The server's address.
        address: String,
        /// Why.
        reason: String,
    },
}

/// A PostgreSQL or pool failure as a [`StoreError`].
pub(crate) fn backend(error: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> StoreError {
    StoreError::backend(BACKEND, error)
}

/// The name of the unique constraint `error` violated, if that is what it is.
pub(crate) fn unique_violation(error: &tokio_postgres::Error) -> Option<&str> {
    let db = error.as_db_error()?;
    (db.code() == &SqlState::UNIQUE_VIOLATION).then(|| db.constraint().unwrap_or(""))
}

/// Whether `error` is a foreign key violation (a version or trigger of a
/// missing workflow).
pub(crate) fn is_foreign_key_violation(error: &tokio_postgres::Error) -> bool {
    error.code() == Some(&SqlState::FOREIGN_KEY_VIOLATION)
}
