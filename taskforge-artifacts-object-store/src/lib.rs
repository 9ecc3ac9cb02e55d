//! Taskforge artifact storage on the [`object_store`] crate: S3, Google
//! Cloud Storage, Azure Blob Storage, local files or memory, behind one
//! [`ArtifactStore`].
//!
//! ```
//! use std::sync::Arc;
//!
//! use object_store::memory::InMemory;
//! use taskforge_artifacts_object_store::ObjectStoreArtifacts;
//! use taskforge_core::artifact::{ArtifactLimits, ArtifactStore};
//! use taskforge_core::RunId;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // With the `aws` feature of object_store: AmazonS3Builder::from_env().build()?, and
//! // so on for `gcp` and `azure`.
//! let artifacts = ObjectStoreArtifacts::new(Arc::new(InMemory::new()), "taskforge/artifacts");
//! let run = RunId::new();
//! let stored = artifacts
//!     .put(run, "render", "report.txt", "hello".into(), &ArtifactLimits::default(), chrono::Utc::now())
//!     .await?;
//! assert_eq!(stored.sha256, "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824");
//! let (_, content) = artifacts.get(run, "report.txt").await?;
//! assert_eq!(&content[..], b"hello");
//! assert_eq!(artifacts.delete_run(run).await?, 1);
//! # Ok(())
//! # }
//! ```
//!
//! This crate uses object_store with its default features only; an
//! application enables `aws`, `gcp` or `azure` on its own dependency on
//! object_store (the same version) and hands the store it builds to
//! [`ObjectStoreArtifacts::new`].
//!
//! # Layout
//!
//! Under the prefix given:
//!
//! - `blobs/<sha256>`: the content, once per distinct SHA-256;
//! - `runs/<run id>/<name>.json`: one manifest per artifact, its
//!   [`Artifact`] record as JSON;
//! - `refs/<sha256>/<run id>/<name>`: an empty object per artifact, saying
//!   that it refers to that blob, so whether a blob is still needed is one
//!   listing;
//! - `tmp/<uuid>`: uploads not yet moved to their blob path.
//!
//! # How a put works
//!
//! The SHA-256 is known only at the end of the body, so the body is first
//! uploaded to `tmp/<uuid>` while it is hashed and counted against the
//! limits: with one `put` if it fits in one part (8 MiB unless
//! [`with_part_size`](ObjectStoreArtifacts::with_part_size) says
//! otherwise), else as a multipart upload, one part at a time, aborted if
//! the body fails or crosses a limit (the limit is checked before each
//! part is sent, so an upload over the limit is never completed). Then, in
//! a task of its own (so that dropping the `put` future cannot stop it
//! halfway), the checks are made again under the run's lock; the ref
//! object is written, the upload is copied to its blob path, and the
//! manifest is written: that single `put` makes the artifact visible, all
//! at once. The temporary upload is deleted last, whatever happened.
//!
//! A crash leaves nothing visible: at worst a temporary upload, a ref
//! object without its manifest, or an unreferenced blob, which
//! [`collect_garbage`](ArtifactStore::collect_garbage) removes once they
//! are older than [`with_stale_after`](ObjectStoreArtifacts::with_stale_after)
//! (an hour by default). An interrupted multipart upload is never visible;
//! its parts are the store's to expire (on S3, a lifecycle rule for
//! incomplete multipart uploads).
//!
//! # Several processes
//!
//! Puts to one run are serialized within a process (the engine runs a
//! run's steps in the process holding its lease), and so is the decision to
//! delete a blob against a put of the same content. Several processes can
//! share one prefix; deleting a blob checks its refs first, and a put
//! checks its blob is still there after writing its manifest (copying it
//! again if not), which leaves one narrow race: a put of byte-identical
//! content in another process whose ref, copy, manifest and check all fall
//! between another process's check of that blob's refs and its delete.

use std::collections::BTreeSet;
use std::fmt;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::stream::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{
    CopyMode, CopyOptions, GetOptions, MultipartUpload, ObjectMeta, ObjectStore, PutOptions,
    PutPayload,
};
use sha2::{Digest, Sha256};
use taskforge_core::artifact::{
    sha256_hex, validate_artifact_name, Artifact, ArtifactBody, ArtifactError, ArtifactLimits,
    ArtifactMeter, ArtifactStore, ByteStream,
};
use taskforge_core::RunId;

const BACKEND: &str = "object_store";

/// Puts to one run commit one at a time; runs share these locks by hash.
const RUN_LOCKS: usize = 64;

/// Deleting a blob and storing it again are serialized by these, by hash.
const BLOB_LOCKS: usize = 64;

/// The default of [`ObjectStoreArtifacts::with_part_size`]: 8 MiB.
pub const DEFAULT_PART_SIZE: usize = 8 * 1024 * 1024;

/// The default of [`ObjectStoreArtifacts::with_stale_after`]: an hour.
pub const DEFAULT_STALE_AFTER: Duration = Duration::from_secs(3600);

/// How many manifests are read at once when a run is listed.
const CONCURRENT_READS: usize = 8;

/// An [`ArtifactStore`] on any [`ObjectStore`]. A cheap `Clone`; clones
/// share their locks. See the [crate docs](crate).
#[derive(Clone)]
pub struct ObjectStoreArtifacts {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn ObjectStore>,
    prefix: Path,
    part_size: usize,
    stale_after: Duration,
    run_locks: Vec<tokio::sync::Mutex<()>>,
    blob_locks: Vec<tokio::sync::Mutex<()>>,
}

impl fmt::Debug for ObjectStoreArtifacts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ObjectStoreArtifacts")
            .field("store", &format_args!("{}", self.inner.store))
            .field("prefix", &self.inner.prefix)
            .field("part_size", &self.inner.part_size)
            .field("stale_after", &self.inner.stale_after)
            .finish_non_exhaustive()
    }
}

impl ObjectStoreArtifacts {
    /// Artifacts in `store`, under `prefix` (`""` for the store's root).
    #[must_use]
    pub fn new(store: Arc<dyn ObjectStore>, prefix: impl Into<Path>) -> Self {
        Self {
            inner: Arc::new(Inner {
                store,
                prefix: prefix.into(),
                part_size: DEFAULT_PART_SIZE,
                stale_after: DEFAULT_STALE_AFTER,
                run_locks: (0..RUN_LOCKS)
                    .map(|_| tokio::sync::Mutex::new(()))
                    .collect(),
                blob_locks: (0..BLOB_LOCKS)
                    .map(|_| tokio::sync::Mutex::new(()))
                    .collect(),
            }),
        }
    }

    /// The size of the parts of a multipart upload, and so the most of a
    /// streamed body held in memory; a body no larger is uploaded with one
    /// `put`. S3 needs at least 5 MiB (every part but the last).
    ///
    /// # Panics
    ///
    /// If `bytes` is 0, or if the store has been cloned already.
    #[must_use]
    pub fn with_part_size(mut self, bytes: usize) -> Self {
        assert!(bytes > 0, "a part holds at least one byte");
        Arc::get_mut(&mut self.inner)
            .expect("configured before it is cloned")
            .part_size = bytes;
        self
    }

    /// How old a temporary upload, a ref without its manifest, or an
    /// unreferenced blob must be before
    /// [`collect_garbage`](ArtifactStore::collect_garbage) removes it: longer
    /// than any upload of another process may take to commit.
    ///
    /// # Panics
    ///
    /// If the store has been cloned already.
    #[must_use]
    pub fn with_stale_after(mut self, age: Duration) -> Self {
        Arc::get_mut(&mut self.inner)
            .expect("configured before it is cloned")
            .stale_after = age;
        self
    }

    /// The object store.
    #[must_use]
    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.inner.store
    }

    /// The prefix the artifacts are under.
    #[must_use]
    pub fn prefix(&self) -> &Path {
        &self.inner.prefix
    }
}

impl Inner {
    fn run_lock(&self, run_id: RunId) -> &tokio::sync::Mutex<()> {
        &self.run_locks[usize::from(run_id.to_bytes()[15]) % RUN_LOCKS]
    }

    fn blob_lock(&self, sha256: &str) -> &tokio::sync::Mutex<()> {
        let byte = u8::from_str_radix(&sha256[..2], 16).unwrap_or(0);
        &self.blob_locks[usize::from(byte) % BLOB_LOCKS]
    }

    fn dir(&self, name: &str) -> Path {
        self.prefix.clone().join(name)
    }

    fn blob_path(&self, sha256: &str) -> Path {
        self.dir("blobs").join(sha256)
    }

    fn run_dir(&self, run_id: RunId) -> Path {
        self.dir("runs").join(run_id.to_string())
    }

    fn manifest_path(&self, run_id: RunId, name: &str) -> Path {
        self.run_dir(run_id).join(format!("{name}.json"))
    }

    fn ref_path(&self, sha256: &str, run_id: RunId, name: &str) -> Path {
        self.dir("refs")
            .join(sha256)
            .join(run_id.to_string())
            .join(name)
    }

    /// Every object under `prefix`.
    async fn list(&self, prefix: &Path) -> Result<Vec<ObjectMeta>, ArtifactError> {
        self.store
            .list(Some(prefix))
            .try_collect()
            .await
            .map_err(storage)
    }

    /// The manifest at `path`, if there is one.
    async fn read_manifest(&self, path: &Path) -> Result<Option<Artifact>, ArtifactError> {
        match self.store.get_opts(path, GetOptions::default()).await {
            Ok(found) => {
                let json = found.bytes().await.map_err(storage)?;
                serde_json::from_slice(&json)
                    .map(Some)
                    .map_err(|e| ArtifactError::storage(BACKEND, format!("{path}: {e}")))
            }
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(storage(e)),
        }
    }

    async fn manifest(&self, run_id: RunId, name: &str) -> Result<Artifact, ArtifactError> {
        self.read_manifest(&self.manifest_path(run_id, name))
            .await?
            .ok_or_else(|| ArtifactError::not_found(run_id, name))
    }

    /// The run's manifests, in no order.
    async fn manifests(&self, run_id: RunId) -> Result<Vec<Artifact>, ArtifactError> {
        let objects = self.list(&self.run_dir(run_id)).await?;
        let read: Vec<Option<Artifact>> = futures::stream::iter(objects)
            .filter(|meta| {
                futures::future::ready(
                    meta.location
                        .filename()
                        .is_some_and(|f| f.ends_with(".json")),
                )
            })
            .map(|meta| async move { self.read_manifest(&meta.location).await })
            .buffer_unordered(CONCURRENT_READS)
            .try_collect()
            .await?;
        // A manifest listed and then deleted is no longer there.
        Ok(read.into_iter().flatten().collect())
    }

    /// The artifact `name` of the run, if any, and the bytes of its others.
    async fn run_state(
        &self,
        run_id: RunId,
        name: &str,
    ) -> Result<(Option<Artifact>, u64), ArtifactError> {
        let mut existing = None;
        let mut others = 0u64;
        for artifact in self.manifests(run_id).await? {
            if artifact.name == name {
                existing = Some(artifact);
            } else {
                others = others.saturating_add(artifact.size);
            }
        }
        Ok((existing, others))
    }

    async fn put_object(&self, path: &Path, payload: PutPayload) -> Result<(), ArtifactError> {
        self.store
            .put_opts(path, payload, PutOptions::default())
            .await
            .map(drop)
            .map_err(storage)
    }

    /// Deletes `path`; one already gone is not an error.
    async fn delete(&self, path: &Path) -> Result<(), ArtifactError> {
        let location = path.clone();
        let mut deleted = self
            .store
            .delete_stream(futures::stream::once(async move { Ok(location) }).boxed());
        while let Some(result) = deleted.next().await {
            match result {
                Ok(_) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(storage(e)),
            }
        }
        Ok(())
    }

    async fn exists(&self, path: &Path) -> Result<bool, ArtifactError> {
        match self
            .store
            .get_opts(path, GetOptions::new().with_head(true))
            .await
        {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(storage(e)),
        }
    }

    async fn copy(&self, from: &Path, to: &Path) -> Result<(), ArtifactError> {
        self.store
            .copy_opts(from, to, CopyOptions::new().with_mode(CopyMode::Overwrite))
            .await
            .map_err(storage)
    }

    /// Deletes the blob if no ref refers to it.
    async fn delete_blob_if_unreferenced(&self, sha256: &str) -> Result<bool, ArtifactError> {
        let _blob = self.blob_lock(sha256).lock().await;
        let refs = self.dir("refs").join(sha256);
        let mut listed = self.store.list(Some(&refs));
        if let Some(found) = listed.next().await {
            found.map_err(storage)?;
            return Ok(false);
        }
        self.delete(&self.blob_path(sha256)).await?;
        Ok(true)
    }

    /// [`Inner::delete_blob_if_unreferenced`], logging a failure (the blob
    /// is then left for garbage collection).
    async fn release(&self, sha256: &str) {
        if let Err(error) = self.delete_blob_if_unreferenced(sha256).await {
            tracing::warn!(%error, sha256, "could not delete an artifact blob; collect_garbage will");
        }
    }

    /// Uploads `body` to `temp`, hashing and counting it. Returns its size
    /// and SHA-256.
    async fn upload(
        &self,
        temp: &TempObject,
        body: ArtifactBody,
        meter: &mut ArtifactMeter,
    ) -> Result<(u64, String), ArtifactError> {
        let mut stream = match body.into_bytes() {
            Ok(bytes) => {
                // Counted before the upload began.
                let for_hash = bytes.clone();
                let sha256 = tokio::task::spawn_blocking(move || sha256_hex(&for_hash))
                    .await
                    .map_err(storage)?;
                let size = bytes.len() as u64;
                self.put_object(&temp.path, bytes.into()).await?;
                return Ok((size, sha256));
            }
            Err(stream) => stream,
        };
        let mut hasher = Sha256::new();
        let mut part: Vec<Bytes> = Vec::new();
        let mut part_len = 0usize;
        let mut multipart: Option<Box<dyn MultipartUpload>> = None;
        let result = async {
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(ArtifactError::Body)?;
                meter.add(chunk.len() as u64)?;
                hasher.update(&chunk);
                part_len += chunk.len();
                part.push(chunk);
                if part_len >= self.part_size {
                    if multipart.is_none() {
                        multipart = Some(
                            self.store
                                .put_multipart_opts(&temp.path, Default::default())
                                .await
                                .map_err(storage)?,
                        );
                    }
                    let upload = multipart.as_mut().expect("started above");
                    let payload: PutPayload = std::mem::take(&mut part).into_iter().collect();
                    part_len = 0;
                    upload.put_part(payload).await.map_err(storage)?;
                }
            }
            let payload: PutPayload = std::mem::take(&mut part).into_iter().collect();
            match &mut multipart {
                None => self.put_object(&temp.path, payload).await,
                Some(upload) => {
                    if payload.content_length() > 0 {
                        upload.put_part(payload).await.map_err(storage)?;
                    }
                    upload.complete().await.map(drop).map_err(storage)
                }
            }
        }
        .await;
        if let Err(e) = result {
            if let Some(mut upload) = multipart {
                if let Err(error) = upload.abort().await {
                    tracing::warn!(%error, "could not abort a multipart artifact upload");
                }
            }
            return Err(e);
        }
        Ok((meter.received(), hex::encode(hasher.finalize())))
    }

    /// The commit of a put: checks again under the run's lock, then writes
    /// the ref, the blob and the manifest.
    async fn commit(
        self: Arc<Self>,
        temp: TempObject,
        artifact: Artifact,
        mut meter: ArtifactMeter,
    ) -> Result<Artifact, ArtifactError> {
        let committed = async {
            let _run = self.run_lock(artifact.run_id).lock().await;
            let (existing, others) = self.run_state(artifact.run_id, &artifact.name).await?;
            check_owner(existing.as_ref(), &artifact)?;
            meter.recheck(others)?;
            let replaced = existing.map(|old| old.sha256);
            let sha256 = &artifact.sha256;
            let reference = self.ref_path(sha256, artifact.run_id, &artifact.name);
            let blob = self.blob_path(sha256);

            let installed = async {
                {
                    let _blob = self.blob_lock(sha256).lock().await;
                    self.put_object(&reference, PutPayload::new()).await?;
                    self.copy(&temp.path, &blob).await?;
                }
                let json = serde_json::to_vec_pretty(&artifact).map_err(storage)?;
                self.put_object(
                    &self.manifest_path(artifact.run_id, &artifact.name),
                    json.into(),
                )
                .await?;
                Ok::<_, ArtifactError>(())
            }
            .await;
            if let Err(e) = installed {
                // The ref is the old manifest's too if it had this content.
                if replaced.as_deref() != Some(sha256.as_str()) {
                    let _ = self.delete(&reference).await;
                    self.release(sha256).await;
                }
                return Err(e);
            }

            // Another process may have deleted the blob meanwhile (see the
            // crate docs): store it again.
            if !self.exists(&blob).await? {
                let _blob = self.blob_lock(sha256).lock().await;
                self.copy(&temp.path, &blob).await?;
            }
            if let Some(old) = replaced.filter(|old| old != sha256) {
                let old_ref = self.ref_path(&old, artifact.run_id, &artifact.name);
                match self.delete(&old_ref).await {
                    Ok(()) => self.release(&old).await,
                    Err(error) => {
                        tracing::warn!(%error, "could not delete an artifact ref; collect_garbage will");
                    }
                }
            }
            Ok(artifact)
        }
        .await;
        temp.delete().await;
        committed
    }

    async fn delete_run(self: Arc<Self>, run_id: RunId) -> Result<u64, ArtifactError> {
        let _run = self.run_lock(run_id).lock().await;
        let manifests = self.manifests(run_id).await?;
        for artifact in &manifests {
            self.delete(&self.manifest_path(run_id, &artifact.name))
                .await?;
        }
        let mut shas = BTreeSet::new();
        for artifact in &manifests {
            self.delete(&self.ref_path(&artifact.sha256, run_id, &artifact.name))
                .await?;
            shas.insert(artifact.sha256.as_str());
        }
        for sha256 in shas {
            self.delete_blob_if_unreferenced(sha256).await?;
        }
        // Anything else under the run's prefix (a manifest of a name that
        // is not valid, left by hand) is the run's too.
        for stray in self.list(&self.run_dir(run_id)).await? {
            self.delete(&stray.location).await?;
        }
        Ok(manifests.len() as u64)
    }

    async fn collect_garbage(self: Arc<Self>) -> Result<u64, ArtifactError> {
        let stale = |meta: &ObjectMeta| {
            chrono::TimeDelta::from_std(self.stale_after)
                .ok()
                .and_then(|age| Utc::now().checked_sub_signed(age))
                .is_some_and(|before| meta.last_modified <= before)
        };
        let mut removed = 0;
        for upload in self.list(&self.dir("tmp")).await? {
            if stale(&upload) {
                self.delete(&upload.location).await?;
                removed += 1;
            }
        }

        // Refs whose manifest does not refer to their blob: a put that
        // crashed before its manifest, or a delete before its refs.
        let refs_dir = self.dir("refs");
        let mut referenced = BTreeSet::new();
        for reference in self.list(&refs_dir).await? {
            let parts: Vec<String> = reference
                .location
                .prefix_match(&refs_dir)
                .map(|parts| parts.map(|p| p.as_ref().to_owned()).collect())
                .unwrap_or_default();
            let [sha256, run, name] = parts.as_slice() else {
                continue;
            };
            let manifest = match run.parse::<RunId>() {
                Ok(run_id) if validate_artifact_name(name).is_ok() => {
                    self.read_manifest(&self.manifest_path(run_id, name))
                        .await?
                }
                _ => None,
            };
            if manifest.is_some_and(|m| &m.sha256 == sha256) || !stale(&reference) {
                referenced.insert(sha256.clone());
            } else {
                self.delete(&reference.location).await?;
                removed += 1;
            }
        }

        for blob in self.list(&self.dir("blobs")).await? {
            let Some(sha256) = blob.location.filename().map(str::to_owned) else {
                continue;
            };
            if !referenced.contains(&sha256)
                && stale(&blob)
                && self.delete_blob_if_unreferenced(&sha256).await?
            {
                removed += 1;
            }
        }
        Ok(removed)
    }
}

#[async_trait]
impl ArtifactStore for ObjectStoreArtifacts {
    async fn put(
        &self,
        run_id: RunId,
        step_key: &str,
        name: &str,
        body: ArtifactBody,
        limits: &ArtifactLimits,
        now: DateTime<Utc>,
    ) -> Result<Artifact, ArtifactError> {
        validate_artifact_name(name)?;
        let (existing, others) = self.inner.run_state(run_id, name).await?;
        let mut artifact = Artifact {
            run_id,
            step_key: step_key.to_owned(),
            name: name.to_owned(),
            size: 0,
            sha256: String::new(),
            created_at: now,
        };
        check_owner(existing.as_ref(), &artifact)?;
        let mut meter = ArtifactMeter::new(run_id, name, limits, others);
        if let Some(len) = body.known_len() {
            meter.add(len)?;
        }
        let temp = TempObject::new(&self.inner);
        let uploaded = self.inner.upload(&temp, body, &mut meter).await;
        let (size, sha256) = match uploaded {
            Ok(uploaded) => uploaded,
            Err(e) => {
                temp.delete().await;
                return Err(e);
            }
        };
        artifact.size = size;
        artifact.sha256 = sha256;
        tokio::spawn(Arc::clone(&self.inner).commit(temp, artifact, meter))
            .await
            .map_err(storage)?
    }

    async fn get(&self, run_id: RunId, name: &str) -> Result<(Artifact, Bytes), ArtifactError> {
        validate_artifact_name(name)?;
        let mut tries = 0;
        loop {
            let artifact = self.inner.manifest(run_id, name).await?;
            let blob = self.inner.blob_path(&artifact.sha256);
            match self
                .inner
                .store
                .get_opts(&blob, GetOptions::default())
                .await
            {
                Ok(found) => {
                    let bytes = found.bytes().await.map_err(storage)?;
                    let for_hash = bytes.clone();
                    let sha256 = tokio::task::spawn_blocking(move || sha256_hex(&for_hash))
                        .await
                        .map_err(storage)?;
                    if bytes.len() as u64 != artifact.size || sha256 != artifact.sha256 {
                        return Err(ArtifactError::storage(
                            BACKEND,
                            format!("{blob} does not match the manifest of {name:?}"),
                        ));
                    }
                    return Ok((artifact, bytes));
                }
                // Replaced or deleted between the two reads: read again.
                Err(object_store::Error::NotFound { .. }) if tries < 3 => tries += 1,
                Err(e) => return Err(storage(e)),
            }
        }
    }

    async fn open(
        &self,
        run_id: RunId,
        name: &str,
    ) -> Result<(Artifact, ByteStream), ArtifactError> {
        validate_artifact_name(name)?;
        let mut tries = 0;
        loop {
            let artifact = self.inner.manifest(run_id, name).await?;
            let blob = self.inner.blob_path(&artifact.sha256);
            match self
                .inner
                .store
                .get_opts(&blob, GetOptions::default())
                .await
            {
                Ok(found) => {
                    let stream = sized(found.into_stream(), artifact.size);
                    return Ok((artifact, stream));
                }
                Err(object_store::Error::NotFound { .. }) if tries < 3 => tries += 1,
                Err(e) => return Err(storage(e)),
            }
        }
    }

    async fn list(&self, run_id: RunId) -> Result<Vec<Artifact>, ArtifactError> {
        let mut artifacts = self.inner.manifests(run_id).await?;
        artifacts.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(artifacts)
    }

    async fn runs(&self) -> Result<Vec<RunId>, ArtifactError> {
        // Listing the manifests rather than the "directories": a store on
        // local files keeps a run's empty directory after its manifests go.
        let runs_dir = self.inner.dir("runs");
        let runs: BTreeSet<RunId> = self
            .inner
            .list(&runs_dir)
            .await?
            .iter()
            .filter_map(|meta| {
                meta.location
                    .prefix_match(&runs_dir)?
                    .next()?
                    .as_ref()
                    .parse()
                    .ok()
            })
            .collect();
        Ok(runs.into_iter().collect())
    }

    async fn delete_run(&self, run_id: RunId) -> Result<u64, ArtifactError> {
        tokio::spawn(Arc::clone(&self.inner).delete_run(run_id))
            .await
            .map_err(storage)?
    }

    async fn collect_garbage(&self) -> Result<u64, ArtifactError> {
        tokio::spawn(Arc::clone(&self.inner).collect_garbage())
            .await
            .map_err(storage)?
    }
}

/// An upload's temporary object, deleted by [`TempObject::delete`] or,
/// if the `put` future is dropped first, by a task spawned when dropped.
struct TempObject {
    path: Path,
    inner: Arc<Inner>,
    deleted: bool,
}

impl TempObject {
    fn new(inner: &Arc<Inner>) -> Self {
        Self {
            path: inner.dir("tmp").join(uuid::Uuid::now_v7().to_string()),
            inner: Arc::clone(inner),
            deleted: false,
        }
    }

    async fn delete(mut self) {
        self.deleted = true;
        if let Err(error) = self.inner.delete(&self.path).await {
            tracing::warn!(%error, "could not delete a temporary artifact upload; collect_garbage will");
        }
    }
}

impl Drop for TempObject {
    fn drop(&mut self) {
        if self.deleted {
            return;
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let inner = Arc::clone(&self.inner);
            let path = self.path.clone();
            runtime.spawn(async move {
                let _ = inner.delete(&path).await;
            });
        }
    }
}

/// `stream` as a [`ByteStream`] that ends in an error unless it yields
/// exactly `size` bytes.
fn sized(
    stream: futures::stream::BoxStream<'static, object_store::Result<Bytes>>,
    size: u64,
) -> ByteStream {
    futures::stream::unfold(Some((stream, 0u64)), move |state| async move {
        let (mut stream, seen) = state?;
        match stream.next().await {
            Some(Ok(chunk)) => {
                let seen = seen + chunk.len() as u64;
                if seen > size {
                    return Some((Err(wrong_size(size)), None));
                }
                Some((Ok(chunk), Some((stream, seen))))
            }
            Some(Err(e)) => Some((Err(io::Error::other(e)), None)),
            None if seen != size => Some((Err(wrong_size(size)), None)),
            None => None,
        }
    })
    .boxed()
}

fn wrong_size(size: u64) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("artifact content is not the {size} bytes its manifest says"),
    )
}

fn check_owner(existing: Option<&Artifact>, artifact: &Artifact) -> Result<(), ArtifactError> {
    match existing {
        Some(existing) if existing.step_key != artifact.step_key => {
            Err(ArtifactError::TakenByAnotherStep {
                run_id: artifact.run_id,
                name: artifact.name.clone(),
                owner: existing.step_key.clone(),
            })
        }
        _ => Ok(()),
    }
}

fn storage(e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> ArtifactError {
    ArtifactError::storage(BACKEND, e)
}
