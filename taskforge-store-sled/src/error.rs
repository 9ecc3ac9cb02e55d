//! Why a store could not be opened, and how sled failures map onto
//! [`StoreError`].

use std::path::PathBuf;

use taskforge_core::StoreError;

/// The backend name carried by [`StoreError::Backend`].
pub(crate) const BACKEND: &str = "sled";

/// Why [`SledStore::open`](crate::SledStore::open) failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// The directory holds a sled database whose files are damaged, or
    /// files sled cannot read at all.
    #[error("store at {path} is corrupt: {reason}")]
    Corrupt {
        /// The directory.
        path: PathBuf,
        /// What was found wrong.
        reason: String,
    },
    /// The store was written by a newer release of this crate, in a format
    /// this release cannot read.
    #[error("store format {found} is newer than the supported format {supported}")]
    NewerFormat {
        /// The format version stored.
        found: u32,
        /// The newest format version this release reads.
        supported: u32,
    },
    /// The directory holds something other than a Taskforge store: other
    /// files, or a sled database made by another program. It is left
    /// untouched.
    #[error("{path} is not a taskforge store: {reason}")]
    NotATaskforgeStore {
        /// The directory.
        path: PathBuf,
        /// What was found instead.
        reason: String,
    },
    /// The file system failed (permissions, a missing parent, a full disk,
    /// or the database is open in another process).
    #[error("i/o error opening store: {0}")]
    Io(#[from] std::io::Error),
}

/// A sled failure as a [`StoreError`].
pub(crate) fn backend(error: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> StoreError {
    StoreError::backend(BACKEND, error)
}

/// A transaction's failure as a [`StoreError`]: an abort carries ours.
pub(crate) fn tx_error(error: sled::transaction::TransactionError<StoreError>) -> StoreError {
    match error {
        sled::transaction::TransactionError::Abort(e) => e,
        sled::transaction::TransactionError::Storage(e) => backend(e),
    }
}

/// An abort of a transaction with `error`.
pub(crate) fn abort<T>(
    error: StoreError,
) -> Result<T, sled::transaction::ConflictableTransactionError<StoreError>> {
    Err(sled::transaction::ConflictableTransactionError::Abort(
        error,
    ))
}
