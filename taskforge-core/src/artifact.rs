//! Artifacts: named binary outputs of a run's steps.
//!
//! A step stores an artifact under a name in its run, and later steps of
//! the run read it back. Each artifact is content-addressed (its SHA-256 is
//! kept with it and checked on [`ArtifactStore::get`]), bounded in size per
//! artifact and per run ([`ArtifactLimits`]), listed on its run
//! ([`Artifact`]: name, size, hash), and deleted with its run.
//!
//! The storage is pluggable through [`ArtifactStore`]:
//!
//! - [`FsArtifactStore`], on a local directory, is the default;
//! - the `taskforge-artifacts-object-store` crate implements it on the
//!   [`object_store`](https://docs.rs/object_store) crate, for S3, GCS,
//!   Azure or any other store that crate supports.
//!
//! Backends share the checks of this module: [`validate_artifact_name`]
//! and [`ArtifactMeter`] (the size limits), so every backend refuses the
//! same things with the same [`ArtifactError`]s. The conformance suite every
//! backend runs is `testing::artifacts` (feature `testing`).
//!
//! ```
//! use taskforge_core::artifact::{ArtifactLimits, ArtifactStore, FsArtifactStore};
//! use taskforge_core::RunId;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! let store = FsArtifactStore::open(dir.path())?;
//! let run = RunId::new();
//! let limits = ArtifactLimits::default();
//! let stored = store
//!     .put(run, "render", "report.pdf", b"%PDF-1.7".to_vec().into(), &limits, chrono::Utc::now())
//!     .await?;
//! assert_eq!(stored.size, 8);
//! let (artifact, bytes) = store.get(run, "report.pdf").await?;
//! assert_eq!((artifact, &bytes[..]), (stored, &b"%PDF-1.7"[..]));
//! # Ok(())
//! # }
//! ```

mod fs;

use std::fmt;
use std::io;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::stream::{BoxStream, Stream, StreamExt};
use serde::{Deserialize, Serialize};

use crate::id::RunId;
use crate::workflow::NameError;

pub use fs::FsArtifactStore;

/// The longest artifact name, in bytes.
pub const MAX_ARTIFACT_NAME_LEN: usize = 200;

/// The default of [`ArtifactLimits::max_artifact_bytes`]: 64 MiB.
pub const DEFAULT_MAX_ARTIFACT_BYTES: u64 = 64 * 1024 * 1024;

/// The default of [`ArtifactLimits::max_run_bytes`]: 256 MiB.
pub const DEFAULT_MAX_RUN_BYTES: u64 = 256 * 1024 * 1024;

/// A stream of bytes: the body of an artifact being stored, or one being
/// read back with [`ArtifactStore::open`].
pub type ByteStream = BoxStream<'static, Result<Bytes, io::Error>>;

/// A stored artifact, as listed on its run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Artifact {
    /// The run it belongs to.
    pub run_id: RunId,
    /// The key of the step that stored it.
    pub step_key: String,
    /// Its name, unique within the run (see [`validate_artifact_name`]).
    pub name: String,
    /// Its size in bytes.
    pub size: u64,
    /// The SHA-256 of its content, 64 lowercase hex digits.
    pub sha256: String,
    /// When it was stored (the `now` given to [`ArtifactStore::put`]).
    pub created_at: DateTime<Utc>,
}

/// Bounds on the bytes a run may store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArtifactLimits {
    /// The largest single artifact, in bytes.
    pub max_artifact_bytes: u64,
    /// The most bytes one run's artifacts may hold together, in bytes.
    pub max_run_bytes: u64,
}

impl Default for ArtifactLimits {
    /// [`DEFAULT_MAX_ARTIFACT_BYTES`] and [`DEFAULT_MAX_RUN_BYTES`].
    fn default() -> Self {
        Self {
            max_artifact_bytes: DEFAULT_MAX_ARTIFACT_BYTES,
            max_run_bytes: DEFAULT_MAX_RUN_BYTES,
        }
    }
}

/// Why an artifact could not be stored or read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ArtifactError {
    /// The name is not a valid artifact name (see [`validate_artifact_name`]).
    #[error(transparent)]
    InvalidName(#[from] NameError),
    /// The artifact is larger than [`ArtifactLimits::max_artifact_bytes`].
    /// Nothing was stored.
    #[error("artifact {name:?} is larger than its limit of {limit} bytes (refused after {received} bytes)")]
    TooLarge {
        /// The artifact's name.
        name: String,
        /// The limit.
        limit: u64,
        /// How many bytes of the body had been received when it was
        /// refused: more than `limit`; the body's length if it was known
        /// up front.
        received: u64,
    },
    /// Storing the artifact would take its run past
    /// [`ArtifactLimits::max_run_bytes`]. Nothing was stored.
    #[error("artifact {name:?} would take run {run_id} past its limit of {limit} bytes ({others} bytes in its other artifacts, refused after {received} bytes of this one)")]
    RunOverLimit {
        /// The run.
        run_id: RunId,
        /// The artifact's name.
        name: String,
        /// The limit.
        limit: u64,
        /// The bytes of the run's other artifacts (not counting one this
        /// one would replace).
        others: u64,
        /// How many bytes of this artifact had been received when it was
        /// refused.
        received: u64,
    },
    /// The run has no artifact of that name.
    #[error("run {run_id} has no artifact {name:?}")]
    NotFound {
        /// The run.
        run_id: RunId,
        /// The name asked for.
        name: String,
    },
    /// Another step of the run stored an artifact of that name already; a
    /// step may only replace its own. Nothing was stored.
    #[error("artifact {name:?} of run {run_id} belongs to step {owner:?}")]
    TakenByAnotherStep {
        /// The run.
        run_id: RunId,
        /// The artifact's name.
        name: String,
        /// The key of the step that stored it.
        owner: String,
    },
    /// Reading the body given to [`ArtifactStore::put`] failed. Nothing was
    /// stored.
    #[error("reading the artifact's body failed: {0}")]
    Body(#[source] io::Error),
    /// The engine has no artifact store
    /// ([`EngineBuilder::artifacts`](crate::EngineBuilder::artifacts)).
    #[error("the engine has no artifact store")]
    NoStore,
    /// The storage failed (I/O, the network, damaged data).
    #[error("{backend} artifact storage failed: {source}")]
    Storage {
        /// Which backend (`fs`, `object_store`, ...).
        backend: &'static str,
        /// The underlying failure.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl ArtifactError {
    /// Whether trying again would meet the same refusal: an invalid name,
    /// a limit, a name another step holds, no artifact store, or a missing
    /// artifact. Storage and body failures may pass.
    #[must_use]
    pub fn is_permanent(&self) -> bool {
        matches!(
            self,
            Self::InvalidName(_)
                | Self::TooLarge { .. }
                | Self::RunOverLimit { .. }
                | Self::TakenByAnotherStep { .. }
                | Self::NotFound { .. }
                | Self::NoStore
        )
    }

    /// An [`ArtifactError::Storage`].
    pub fn storage(
        backend: &'static str,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        Self::Storage {
            backend,
            source: source.into(),
        }
    }

    /// An [`ArtifactError::NotFound`].
    pub fn not_found(run_id: RunId, name: impl Into<String>) -> Self {
        Self::NotFound {
            run_id,
            name: name.into(),
        }
    }
}

/// Checks an artifact name: 1 to [`MAX_ARTIFACT_NAME_LEN`] bytes of
/// `[A-Za-z0-9_.-]`, not starting with a dot (so a name is never `.` or
/// `..`, nor a hidden file, and is safe as a file or object name).
///
/// # Errors
///
/// A [`NameError`] (kind `artifact`) saying what is wrong.
pub fn validate_artifact_name(name: &str) -> Result<(), NameError> {
    let reason = if name.is_empty() {
        Some("must not be empty".to_owned())
    } else if name.len() > MAX_ARTIFACT_NAME_LEN {
        Some(format!("longer than {MAX_ARTIFACT_NAME_LEN} bytes"))
    } else if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')))
    {
        Some(format!("character {c:?} is not one of [A-Za-z0-9_.-]"))
    } else if name.starts_with('.') {
        Some("must not start with a dot".to_owned())
    } else {
        None
    };
    match reason {
        Some(reason) => Err(NameError {
            kind: "artifact",
            name: name.to_owned(),
            reason,
        }),
        None => Ok(()),
    }
}

/// The body of an artifact to store: bytes in memory, or a stream of
/// chunks for large ones (read once, while it is hashed and counted).
pub struct ArtifactBody(Body);

enum Body {
    Bytes(Bytes),
    Stream(ByteStream),
}

impl ArtifactBody {
    /// A body read from a stream of chunks. An `Err` from the stream fails
    /// the upload with [`ArtifactError::Body`], and nothing is stored.
    pub fn stream(stream: impl Stream<Item = Result<Bytes, io::Error>> + Send + 'static) -> Self {
        Self(Body::Stream(stream.boxed()))
    }

    /// The length, when it is known before reading (a body of bytes).
    #[must_use]
    pub fn known_len(&self) -> Option<u64> {
        match &self.0 {
            Body::Bytes(bytes) => Some(bytes.len() as u64),
            Body::Stream(_) => None,
        }
    }

    /// The body as bytes if it is bytes, or else as a stream.
    ///
    /// # Errors
    ///
    /// The stream, when the body is one.
    pub fn into_bytes(self) -> Result<Bytes, ByteStream> {
        match self.0 {
            Body::Bytes(bytes) => Ok(bytes),
            Body::Stream(stream) => Err(stream),
        }
    }

    /// The body as a stream (of one chunk, if it is bytes).
    #[must_use]
    pub fn into_stream(self) -> ByteStream {
        match self.0 {
            Body::Bytes(bytes) => futures::stream::once(async move { Ok(bytes) }).boxed(),
            Body::Stream(stream) => stream,
        }
    }
}

impl fmt::Debug for ArtifactBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Body::Bytes(bytes) => f.debug_tuple("Bytes").field(&bytes.len()).finish(),
            Body::Stream(_) => f.write_str("Stream"),
        }
    }
}

impl From<Bytes> for ArtifactBody {
    fn from(bytes: Bytes) -> Self {
        Self(Body::Bytes(bytes))
    }
}

impl From<Vec<u8>> for ArtifactBody {
    fn from(bytes: Vec<u8>) -> Self {
        Bytes::from(bytes).into()
    }
}

impl From<&'static [u8]> for ArtifactBody {
    fn from(bytes: &'static [u8]) -> Self {
        Bytes::from_static(bytes).into()
    }
}

impl From<String> for ArtifactBody {
    fn from(text: String) -> Self {
        Bytes::from(text).into()
    }
}

impl From<&'static str> for ArtifactBody {
    fn from(text: &'static str) -> Self {
        Bytes::from_static(text.as_bytes()).into()
    }
}

/// Counts the bytes of an upload against its [`ArtifactLimits`], for
/// backends: every backend refuses at the same byte with the same error.
#[derive(Debug, Clone)]
pub struct ArtifactMeter {
    run_id: RunId,
    name: String,
    limits: ArtifactLimits,
    others: u64,
    received: u64,
}

impl ArtifactMeter {
    /// A meter for artifact `name` of `run_id`, whose other artifacts (not
    /// counting one of the same name, which this one replaces) hold
    /// `others` bytes.
    #[must_use]
    pub fn new(run_id: RunId, name: &str, limits: &ArtifactLimits, others: u64) -> Self {
        Self {
            run_id,
            name: name.to_owned(),
            limits: *limits,
            others,
            received: 0,
        }
    }

    /// Counts `len` more bytes.
    ///
    /// # Errors
    ///
    /// [`ArtifactError::TooLarge`] or [`ArtifactError::RunOverLimit`] as
    /// soon as the bytes received cross a limit.
    pub fn add(&mut self, len: u64) -> Result<(), ArtifactError> {
        self.received = self.received.saturating_add(len);
        self.check()
    }

    /// Checks the bytes received so far again, against a new count of the
    /// run's other artifacts (taken when the upload is committed, as other
    /// uploads to the run may have landed meanwhile).
    ///
    /// # Errors
    ///
    /// As [`ArtifactMeter::add`].
    pub fn recheck(&mut self, others: u64) -> Result<(), ArtifactError> {
        self.others = others;
        self.check()
    }

    /// The bytes counted so far.
    #[must_use]
    pub fn received(&self) -> u64 {
        self.received
    }

    fn check(&self) -> Result<(), ArtifactError> {
        if self.received > self.limits.max_artifact_bytes {
            return Err(ArtifactError::TooLarge {
                name: self.name.clone(),
                limit: self.limits.max_artifact_bytes,
                received: self.received,
            });
        }
        if self.others.saturating_add(self.received) > self.limits.max_run_bytes {
            return Err(ArtifactError::RunOverLimit {
                run_id: self.run_id,
                name: self.name.clone(),
                limit: self.limits.max_run_bytes,
                others: self.others,
                received: self.received,
            });
        }
        Ok(())
    }
}

/// The SHA-256 of `bytes`, in lowercase hex, as [`Artifact::sha256`] holds it.
#[must_use]
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// Where a step's artifacts are kept. Implemented by [`FsArtifactStore`]
/// and by backend crates; the engine holds one as `Arc<dyn ArtifactStore>`.
///
/// Every method is checked by the conformance suite in
/// `testing::artifacts` (feature `testing`).
#[async_trait]
pub trait ArtifactStore: Send + Sync + 'static {
    /// Stores `body` as artifact `name` of `run_id`, written by the step
    /// `step_key`, and returns its record.
    ///
    /// # Contract
    ///
    /// - `name` is checked with [`validate_artifact_name`] first
    ///   ([`ArtifactError::InvalidName`]).
    /// - If the run has an artifact of that name stored by another step, it
    ///   is refused with [`ArtifactError::TakenByAnotherStep`]. If the same
    ///   step stored it (an earlier attempt of the step), it is replaced:
    ///   readers see the old artifact or the new one, never neither.
    /// - The body is read once, hashed (SHA-256) and counted as it streams,
    ///   with an [`ArtifactMeter`]: as soon as it crosses
    ///   [`ArtifactLimits::max_artifact_bytes`] it is refused with
    ///   [`ArtifactError::TooLarge`], or, counted with the run's other
    ///   artifacts (not counting the one it replaces), as soon as it crosses
    ///   [`ArtifactLimits::max_run_bytes`], with
    ///   [`ArtifactError::RunOverLimit`]; a body of known length is refused
    ///   before anything is written. A stream that yields an error fails it
    ///   with [`ArtifactError::Body`].
    /// - The artifact becomes visible to [`get`](Self::get),
    ///   [`open`](Self::open) and [`list`](Self::list) only once it is
    ///   completely and durably stored, all at once. A put that fails, for
    ///   any reason, changes nothing visible (an artifact it would have
    ///   replaced is still there) and leaves no stored content behind; one
    ///   interrupted by a crash leaves nothing visible, and at worst
    ///   temporary data that [`collect_garbage`](Self::collect_garbage) (or
    ///   the backend on opening) removes.
    /// - Content is stored once per distinct SHA-256, whichever runs hold it.
    /// - The returned record has the body's size and SHA-256, and `now` as
    ///   its `created_at`.
    /// - Puts to one run through one store value (and its clones) are
    ///   serialized where they commit, so concurrent puts of different
    ///   names all land and the run limit holds for them together.
    async fn put(
        &self,
        run_id: RunId,
        step_key: &str,
        name: &str,
        body: ArtifactBody,
        limits: &ArtifactLimits,
        now: DateTime<Utc>,
    ) -> Result<Artifact, ArtifactError>;

    /// Reads artifact `name` of `run_id` whole.
    ///
    /// # Contract
    ///
    /// - [`ArtifactError::NotFound`] if the run has no artifact of that
    ///   name, [`ArtifactError::InvalidName`] if it cannot be one.
    /// - Otherwise the record and the content as stored; content whose size
    ///   or SHA-256 differs from the record's is an
    ///   [`ArtifactError::Storage`], never returned.
    async fn get(&self, run_id: RunId, name: &str) -> Result<(Artifact, Bytes), ArtifactError>;

    /// Reads artifact `name` of `run_id` as a stream, for large ones.
    ///
    /// # Contract
    ///
    /// - Errors as [`get`](Self::get) for a missing artifact or an invalid
    ///   name, reported by this call, not by the stream.
    /// - The stream yields the content as stored, even if the artifact is
    ///   replaced or deleted while it is read, or an error. Its size is
    ///   checked (a short or long content ends in an error); its hash is
    ///   not: a reader that needs it checks the record's `sha256`.
    async fn open(
        &self,
        run_id: RunId,
        name: &str,
    ) -> Result<(Artifact, ByteStream), ArtifactError>;

    /// The artifacts of `run_id`.
    ///
    /// # Contract
    ///
    /// - Ordered by name; empty (not an error) for a run without any.
    /// - Holds exactly the artifacts completely stored and not deleted.
    async fn list(&self, run_id: RunId) -> Result<Vec<Artifact>, ArtifactError>;

    /// The runs that have artifacts, for the engine's retention sweep,
    /// which deletes the artifacts of runs that no longer exist.
    ///
    /// # Contract
    ///
    /// - Ordered by id; each run once.
    /// - Every run with an artifact is listed. A run without any may be
    ///   listed too (one whose only put failed at its very end, say):
    ///   deleting it returns 0 and then it is not listed.
    async fn runs(&self) -> Result<Vec<RunId>, ArtifactError>;

    /// Deletes every artifact of `run_id` and returns how many there were.
    ///
    /// # Contract
    ///
    /// - Afterwards the run's artifacts are neither listed nor readable, and
    ///   the run is not in [`runs`](Self::runs); deleting a run without
    ///   artifacts returns 0.
    /// - Content no other artifact refers to is removed too; content
    ///   another run's artifact refers to stays readable there.
    async fn delete_run(&self, run_id: RunId) -> Result<u64, ArtifactError>;

    /// Removes what crashes and races left behind: content no artifact
    /// refers to, and abandoned temporary uploads. Returns how many objects
    /// or files it removed.
    ///
    /// # Contract
    ///
    /// - Never removes anything a stored artifact needs, nor an upload in
    ///   progress in this process; the engine may call it at any time, for
    ///   example after a retention sweep.
    async fn collect_garbage(&self) -> Result<u64, ArtifactError>;
}

/// An `Arc` of a store is a store, so `Arc<dyn ArtifactStore>` can be
/// passed where one is expected.
#[async_trait]
impl<S: ArtifactStore + ?Sized> ArtifactStore for std::sync::Arc<S> {
    async fn put(
        &self,
        run_id: RunId,
        step_key: &str,
        name: &str,
        body: ArtifactBody,
        limits: &ArtifactLimits,
        now: DateTime<Utc>,
    ) -> Result<Artifact, ArtifactError> {
        (**self)
            .put(run_id, step_key, name, body, limits, now)
            .await
    }

    async fn get(&self, run_id: RunId, name: &str) -> Result<(Artifact, Bytes), ArtifactError> {
        (**self).get(run_id, name).await
    }

    async fn open(
        &self,
        run_id: RunId,
        name: &str,
    ) -> Result<(Artifact, ByteStream), ArtifactError> {
        (**self).open(run_id, name).await
    }

    async fn list(&self, run_id: RunId) -> Result<Vec<Artifact>, ArtifactError> {
        (**self).list(run_id).await
    }

    async fn runs(&self) -> Result<Vec<RunId>, ArtifactError> {
        (**self).runs().await
    }

    async fn delete_run(&self, run_id: RunId) -> Result<u64, ArtifactError> {
        (**self).delete_run(run_id).await
    }

    async fn collect_garbage(&self) -> Result<u64, ArtifactError> {
        (**self).collect_garbage().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for good in ["a", "report.pdf", "A-b_c.9", "a..b", &"x".repeat(200)] {
            validate_artifact_name(good).expect(good);
        }
        for bad in [
            "",
            ".",
            "..",
            ".hidden",
            "a/b",
            "a b",
            "é",
            &"x".repeat(201),
        ] {
            let err = validate_artifact_name(bad).expect_err(bad);
            assert_eq!(err.kind, "artifact");
        }
    }

    #[test]
    fn meter_refuses_at_the_crossing_byte() {
        let run = RunId::new();
        let limits = ArtifactLimits {
            max_artifact_bytes: 10,
            max_run_bytes: 15,
        };
        let mut meter = ArtifactMeter::new(run, "a", &limits, 0);
        meter.add(10).expect("at the limit");
        assert!(matches!(
            meter.add(1),
            Err(ArtifactError::TooLarge {
                limit: 10,
                received: 11,
                ..
            })
        ));
        let mut meter = ArtifactMeter::new(run, "a", &limits, 6);
        meter.add(9).expect("at the run limit");
        assert!(matches!(
            meter.add(1),
            Err(ArtifactError::RunOverLimit {
                limit: 15,
                others: 6,
                received: 10,
                ..
            })
        ));
        let mut meter = ArtifactMeter::new(run, "a", &limits, 0);
        meter.add(9).expect("under both");
        assert!(matches!(
            meter.recheck(7),
            Err(ArtifactError::RunOverLimit { others: 7, .. })
        ));
    }

    #[test]
    fn sha256_of_a_known_text() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn the_trait_is_object_safe() {
        fn takes(_: &dyn ArtifactStore) {}
        let _ = takes;
    }
}
