//! [`StoreError`]: what a store answers when it cannot do what was asked.
//! A module of its own, importing nothing of the crate, so every layer
//! can name it without depending on the others through `error`.

/// What a store answers when it cannot do what was asked.
///
/// Every backend maps its own failures onto these variants, so the engine and
/// host applications can act on them without knowing the backend.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The record does not exist.
    #[error("{kind} {id} not found")]
    NotFound {
        /// What kind of record was looked for (`run`, `workflow`, ...).
        kind: &'static str,
        /// Its id or key.
        id: String,
    },
    /// A record with this id or unique key exists already.
    #[error("{kind} {id} already exists")]
    AlreadyExists {
        /// What kind of record collided.
        kind: &'static str,
        /// Its id or unique key.
        id: String,
    },
    /// A compare-and-set lost: the stored record is not in the state the
    /// caller expected (another writer won, the lease is stale, or the record
    /// is finished and immutable). Nothing was written.
    #[error("conflict on {kind} {id}: {reason}")]
    Conflict {
        /// What kind of record was contended.
        kind: &'static str,
        /// Its id.
        id: String,
        /// What did not match.
        reason: String,
    },
    /// The request itself is invalid (for example a page limit of zero).
    #[error("invalid store request: {0}")]
    Invalid(String),
    /// The backend failed (I/O, corruption, a closed database).
    #[error("{backend} backend error: {source}")]
    Backend {
        /// Which backend (`memory`, `sled`, ...).
        backend: &'static str,
        /// The underlying failure.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl StoreError {
    /// A [`StoreError::NotFound`].
    pub fn not_found(kind: &'static str, id: impl ToString) -> Self {
        Self::NotFound {
            kind,
            id: id.to_string(),
        }
    }

    /// A [`StoreError::AlreadyExists`].
    pub fn already_exists(kind: &'static str, id: impl ToString) -> Self {
        Self::AlreadyExists {
            kind,
            id: id.to_string(),
        }
    }

    /// A [`StoreError::Conflict`].
    pub fn conflict(kind: &'static str, id: impl ToString, reason: impl Into<String>) -> Self {
        Self::Conflict {
            kind,
            id: id.to_string(),
            reason: reason.into(),
        }
    }

    /// A [`StoreError::Backend`].
    pub fn backend(
        backend: &'static str,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        Self::Backend {
            backend,
            source: source.into(),
        }
    }

    /// Whether this is a [`StoreError::Conflict`].
    #[must_use]
    pub fn is_conflict(&self) -> bool {
        matches!(self, Self::Conflict { .. })
    }

    /// Whether this is a [`StoreError::NotFound`].
    #[must_use]
    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::NotFound { .. })
    }
}
