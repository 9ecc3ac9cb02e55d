//! [`FsArtifactStore`]: artifacts in a local directory.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use super::{
    validate_artifact_name, Artifact, ArtifactBody, ArtifactError, ArtifactLimits, ArtifactMeter,
    ArtifactStore, ByteStream,
};
use crate::id::RunId;

const BACKEND: &str = "fs";

/// Puts to one run commit one at a time; runs share these locks by hash.
const RUN_LOCKS: usize = 64;

/// The size of the chunks [`FsArtifactStore::open`]'s stream yields.
const READ_CHUNK: usize = 64 * 1024;

/// Artifacts in a local directory: the default [`ArtifactStore`].
///
/// # Layout
///
/// - `blobs/<first 2 hex digits>/<sha256>`: the content, once per distinct
///   SHA-256;
/// - `runs/<run id>/<name>.json`: one manifest per artifact, its
///   [`Artifact`] record as JSON;
/// - `tmp/`: uploads and manifests being written.
///
/// A put streams the body into a file in `tmp/` on a blocking thread,
/// hashing it there, and fsyncs it; it then renames it to its blob path
/// (content addressing makes a second copy of the same content harmless),
/// and writes the manifest the same way (temporary file, fsync, rename,
/// fsync of the directory). The manifest's rename is what makes the
/// artifact visible, all at once. A crash before it leaves at worst a
/// temporary file or a blob no manifest refers to, both removed by
/// [`FsArtifactStore::open`].
///
/// Which blobs are referenced is counted in memory (counted from the
/// manifests on open), so deleting a run removes the blobs no other run
/// refers to at once. A root is therefore for one process at a time: open
/// it once and share the store (it is a cheap `Clone`, clones sharing
/// everything).
///
/// The commit of a put (checks, blob rename, manifest) and a run's deletion
/// run as tasks of their own: dropping a `put` future (a step timing out,
/// say) cancels its upload, which removes its temporary file, but never a
/// commit halfway.
#[derive(Clone)]
pub struct FsArtifactStore {
    inner: Arc<Inner>,
}

struct Inner {
    root: PathBuf,
    /// For each blob's SHA-256: how many manifests refer to it, plus the
    /// puts that are committing it. A blob is removed when this reaches 0.
    refs: tokio::sync::Mutex<HashMap<String, u64>>,
    /// Held while a put to the run commits or the run is deleted.
    run_locks: Vec<tokio::sync::Mutex<()>>,
    /// The files in `tmp/` being written, which garbage collection keeps.
    writing: parking_lot::Mutex<HashSet<PathBuf>>,
}

impl fmt::Debug for FsArtifactStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FsArtifactStore")
            .field("root", &self.inner.root)
            .finish_non_exhaustive()
    }
}

impl FsArtifactStore {
    /// Opens (creating it if needed) the artifact store in directory `root`.
    ///
    /// Removes what a crash may have left: temporary files, and blobs no
    /// manifest refers to. Counts the references of the others, reading
    /// every manifest.
    ///
    /// ```
    /// use taskforge_core::artifact::{ArtifactLimits, ArtifactStore, FsArtifactStore};
    /// use taskforge_core::RunId;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let dir = tempfile::tempdir()?;
    /// let store = FsArtifactStore::open(dir.path())?;
    /// let run = RunId::new();
    /// store
    ///     .put(run, "build", "out.txt", "hello".into(), &ArtifactLimits::default(), chrono::Utc::now())
    ///     .await?;
    /// drop(store);
    ///
    /// // Reopened, it holds the same artifacts.
    /// let store = FsArtifactStore::open(dir.path())?;
    /// let listed = store.list(run).await?;
    /// assert_eq!(listed[0].name, "out.txt");
    /// assert_eq!(
    ///     listed[0].sha256,
    ///     "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
    /// );
    /// assert_eq!(store.delete_run(run).await?, 1);
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// If a directory cannot be created or read, a leftover cannot be
    /// removed, or a manifest cannot be read or parsed.
    pub fn open(root: impl AsRef<Path>) -> io::Result<Self> {
        let root = root.as_ref().to_path_buf();
        for dir in ["blobs", "runs", "tmp"] {
            fs::create_dir_all(root.join(dir)).map_err(|e| at(&root.join(dir), e))?;
        }

        let tmp = root.join("tmp");
        let mut removed = false;
        for entry in read_dir(&tmp)? {
            let path = entry.path();
            if entry.file_type().map_err(|e| at(&path, e))?.is_dir() {
                fs::remove_dir_all(&path).map_err(|e| at(&path, e))?;
            } else {
                fs::remove_file(&path).map_err(|e| at(&path, e))?;
            }
            removed = true;
        }
        if removed {
            sync_dir(&tmp)?;
        }

        let mut refs = HashMap::new();
        for run in read_dir(&root.join("runs"))? {
            if !run.file_type().map_err(|e| at(&run.path(), e))?.is_dir() {
                continue;
            }
            for artifact in read_manifests(&run.path())? {
                *refs.entry(artifact.sha256).or_insert(0) += 1;
            }
        }

        for shard in read_dir(&root.join("blobs"))? {
            if !shard
                .file_type()
                .map_err(|e| at(&shard.path(), e))?
                .is_dir()
            {
                continue;
            }
            let mut removed = false;
            for blob in read_dir(&shard.path())? {
                let name = blob.file_name();
                if !name.to_str().is_some_and(|sha| refs.contains_key(sha)) {
                    fs::remove_file(blob.path()).map_err(|e| at(&blob.path(), e))?;
                    removed = true;
                }
            }
            if removed {
                sync_dir(&shard.path())?;
            }
        }

        Ok(Self {
            inner: Arc::new(Inner {
                root,
                refs: tokio::sync::Mutex::new(refs),
                run_locks: (0..RUN_LOCKS)
                    .map(|_| tokio::sync::Mutex::new(()))
                    .collect(),
                writing: parking_lot::Mutex::new(HashSet::new()),
            }),
        })
    }

    /// The directory the store is in.
    #[must_use]
    pub fn root(&self) -> &Path {
        &self.inner.root
    }

    /// Streams `body` into a temporary file, hashing it on a blocking
    /// thread, and counting it with `meter` (unless its length was counted
    /// already). Returns the file (removed when dropped unless installed),
    /// the size and the SHA-256.
    async fn upload(
        &self,
        body: ArtifactBody,
        meter: &mut ArtifactMeter,
    ) -> Result<(TempFile, u64, String), ArtifactError> {
        let temp = TempFile::new(&self.inner, "blob");
        let path = temp.path.clone();
        let file = blocking(move || File::create(&path).map_err(|e| at(&path, e))).await?;
        let (tx, rx) = mpsc::channel::<Option<Bytes>>(4);
        let writer = tokio::task::spawn_blocking(move || write_blob(file, rx));

        let fed: Result<(), ArtifactError> = async {
            match body.into_bytes() {
                Ok(bytes) => {
                    // Counted before the upload began.
                    let _ = tx.send(Some(bytes)).await;
                }
                Err(mut stream) => {
                    while let Some(chunk) = stream.next().await {
                        let chunk = chunk.map_err(ArtifactError::Body)?;
                        meter.add(chunk.len() as u64)?;
                        if !chunk.is_empty() && tx.send(Some(chunk)).await.is_err() {
                            // The writer failed; its error is reported below.
                            return Ok(());
                        }
                    }
                }
            }
            let _ = tx.send(None).await;
            Ok(())
        }
        .await;
        drop(tx);
        let written = writer.await.map_err(|e| ArtifactError::storage(BACKEND, e));
        fed?;
        let (size, sha256) = written?.map_err(|e| ArtifactError::storage(BACKEND, e))?;
        if size != meter.received() {
            return Err(ArtifactError::storage(
                BACKEND,
                format!("wrote {size} bytes of {}", meter.received()),
            ));
        }
        Ok((temp, size, sha256))
    }
}

impl Inner {
    fn run_lock(&self, run_id: RunId) -> &tokio::sync::Mutex<()> {
        &self.run_locks[usize::from(run_id.to_bytes()[15]) % RUN_LOCKS]
    }

    fn run_dir(&self, run_id: RunId) -> PathBuf {
        self.root.join("runs").join(run_id.to_string())
    }

    fn manifest_path(&self, run_id: RunId, name: &str) -> PathBuf {
        self.run_dir(run_id).join(format!("{name}.json"))
    }

    fn blob_path(&self, sha256: &str) -> PathBuf {
        self.root.join("blobs").join(&sha256[..2]).join(sha256)
    }

    /// The run's manifests.
    async fn manifests(&self, run_id: RunId) -> Result<Vec<Artifact>, ArtifactError> {
        let dir = self.run_dir(run_id);
        blocking(move || match read_manifests(&dir) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
            other => other,
        })
        .await
    }

    /// The manifest of artifact `name` of the run, if any.
    async fn manifest(&self, run_id: RunId, name: &str) -> Result<Artifact, ArtifactError> {
        let path = self.manifest_path(run_id, name);
        blocking(move || match fs::read(&path) {
            Ok(json) => parse_manifest(&path, &json).map(Some),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(at(&path, e)),
        })
        .await?
        .ok_or_else(|| ArtifactError::not_found(run_id, name))
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

    /// Counts a reference to the blob, before it is installed.
    async fn reserve(&self, sha256: &str) {
        *self.refs.lock().await.entry(sha256.to_owned()).or_insert(0) += 1;
    }

    /// Drops a reference to the blob, removing it if it was the last.
    async fn release(&self, sha256: &str) {
        let mut refs = self.refs.lock().await;
        let Some(count) = refs.get_mut(sha256) else {
            return;
        };
        *count -= 1;
        if *count > 0 {
            return;
        }
        refs.remove(sha256);
        let path = self.blob_path(sha256);
        // Under the lock, so that no put installs the blob again meanwhile.
        let removed = blocking(move || match fs::remove_file(&path) {
            Ok(()) => sync_dir(path.parent().expect("a blob has a directory")),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(at(&path, e)),
        })
        .await;
        if let Err(error) = removed {
            tracing::warn!(%error, sha256, "could not remove an artifact blob; collect_garbage will");
        }
    }

    /// The commit of a put: checks again under the run's lock, installs the
    /// blob and then the manifest.
    async fn commit(
        self: Arc<Self>,
        mut temp: TempFile,
        artifact: Artifact,
        mut meter: ArtifactMeter,
    ) -> Result<Artifact, ArtifactError> {
        let _run = self.run_lock(artifact.run_id).lock().await;
        let (existing, others) = self.run_state(artifact.run_id, &artifact.name).await?;
        check_owner(existing.as_ref(), &artifact)?;
        meter.recheck(others)?;

        self.reserve(&artifact.sha256).await;
        let installed = self.install(&mut temp, &artifact).await;
        match installed {
            Ok(()) => {
                if let Some(old) = existing {
                    self.release(&old.sha256).await;
                }
                Ok(artifact)
            }
            Err(e) => {
                self.release(&artifact.sha256).await;
                Err(e)
            }
        }
    }

    /// Renames the uploaded file to its blob path, then writes the manifest.
    async fn install(
        self: &Arc<Self>,
        temp: &mut TempFile,
        artifact: &Artifact,
    ) -> Result<(), ArtifactError> {
        let from = temp.path.clone();
        let blob = self.blob_path(&artifact.sha256);
        blocking(move || {
            let shard = blob.parent().expect("a blob has a directory");
            create_dir(shard)?;
            fs::rename(&from, &blob).map_err(|e| at(&blob, e))?;
            sync_dir(shard)
        })
        .await?;
        temp.installed();

        let json =
            serde_json::to_vec_pretty(artifact).map_err(|e| ArtifactError::storage(BACKEND, e))?;
        let mut manifest = TempFile::new(self, "json");
        let from = manifest.path.clone();
        let to = self.manifest_path(artifact.run_id, &artifact.name);
        blocking(move || {
            let mut file = File::create(&from).map_err(|e| at(&from, e))?;
            file.write_all(&json).map_err(|e| at(&from, e))?;
            file.sync_all().map_err(|e| at(&from, e))?;
            drop(file);
            let dir = to.parent().expect("a manifest has a directory");
            create_dir(dir)?;
            fs::rename(&from, &to).map_err(|e| at(&to, e))?;
            sync_dir(dir)
        })
        .await?;
        manifest.installed();
        Ok(())
    }

    async fn delete_run(self: Arc<Self>, run_id: RunId) -> Result<u64, ArtifactError> {
        let _run = self.run_lock(run_id).lock().await;
        let manifests = self.manifests(run_id).await?;
        let dir = self.run_dir(run_id);
        let paths: Vec<PathBuf> = manifests
            .iter()
            .map(|artifact| self.manifest_path(run_id, &artifact.name))
            .collect();
        blocking(move || {
            for path in &paths {
                match fs::remove_file(path) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(at(path, e)),
                    _ => {}
                }
            }
            if !paths.is_empty() {
                sync_dir(&dir)?;
            }
            // Gone already, or holding a stranger's file: left alone then.
            match fs::remove_dir(&dir) {
                Ok(()) => sync_dir(dir.parent().expect("a run has a directory")),
                Err(_) => Ok(()),
            }
        })
        .await?;
        for artifact in &manifests {
            self.release(&artifact.sha256).await;
        }
        Ok(manifests.len() as u64)
    }

    async fn collect_garbage(self: Arc<Self>) -> Result<u64, ArtifactError> {
        let refs = self.refs.lock().await;
        let referenced: HashSet<String> = refs
            .iter()
            .filter(|(_, count)| **count > 0)
            .map(|(sha, _)| sha.clone())
            .collect();
        let inner = Arc::clone(&self);
        let root = self.root.clone();
        let removed = blocking(move || {
            let mut removed = 0;
            for entry in read_dir(&root.join("tmp"))? {
                let path = entry.path();
                // A file is registered before it is created, and removed or
                // renamed away before it is unregistered: one that exists
                // unregistered is abandoned.
                if entry.file_type().is_ok_and(|t| t.is_file())
                    && !inner.writing.lock().contains(&path)
                {
                    fs::remove_file(&path).map_err(|e| at(&path, e))?;
                    removed += 1;
                }
            }
            for shard in read_dir(&root.join("blobs"))? {
                if !shard.file_type().is_ok_and(|t| t.is_dir()) {
                    continue;
                }
                for blob in read_dir(&shard.path())? {
                    let name = blob.file_name();
                    if !name.to_str().is_some_and(|sha| referenced.contains(sha)) {
                        fs::remove_file(blob.path()).map_err(|e| at(&blob.path(), e))?;
                        removed += 1;
                    }
                }
            }
            Ok(removed)
        })
        .await;
        drop(refs);
        removed
    }
}

#[async_trait]
impl ArtifactStore for FsArtifactStore {
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
        let (temp, size, sha256) = self.upload(body, &mut meter).await?;
        artifact.size = size;
        artifact.sha256 = sha256;
        // A task of its own, so that dropping this future cannot stop it
        // halfway.
        tokio::spawn(Arc::clone(&self.inner).commit(temp, artifact, meter))
            .await
            .map_err(|e| ArtifactError::storage(BACKEND, e))?
    }

    async fn get(&self, run_id: RunId, name: &str) -> Result<(Artifact, Bytes), ArtifactError> {
        validate_artifact_name(name)?;
        let mut tries = 0;
        loop {
            let artifact = self.inner.manifest(run_id, name).await?;
            let path = self.inner.blob_path(&artifact.sha256);
            let read = blocking(move || match fs::read(&path) {
                Ok(bytes) => {
                    let sha256 = hex::encode(Sha256::digest(&bytes));
                    Ok(Some((bytes, sha256)))
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(at(&path, e)),
            })
            .await?;
            match read {
                Some((bytes, sha256)) => {
                    check_content(&artifact, bytes.len() as u64, &sha256)?;
                    return Ok((artifact, Bytes::from(bytes)));
                }
                // Replaced or deleted between the two reads: read again.
                None if tries < 3 => tries += 1,
                None => return Err(missing_content(&artifact)),
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
            let path = self.inner.blob_path(&artifact.sha256);
            let file = blocking(move || match File::open(&path) {
                Ok(file) => Ok(Some(file)),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(at(&path, e)),
            })
            .await?;
            match file {
                Some(file) => {
                    let stream = read_stream(file, artifact.size);
                    return Ok((artifact, stream));
                }
                None if tries < 3 => tries += 1,
                None => return Err(missing_content(&artifact)),
            }
        }
    }

    async fn list(&self, run_id: RunId) -> Result<Vec<Artifact>, ArtifactError> {
        let mut artifacts = self.inner.manifests(run_id).await?;
        artifacts.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(artifacts)
    }

    async fn runs(&self) -> Result<Vec<RunId>, ArtifactError> {
        let dir = self.inner.root.join("runs");
        let mut runs = blocking(move || {
            let mut runs = Vec::new();
            for entry in read_dir(&dir)? {
                if let Some(run) = entry.file_name().to_str().and_then(|n| n.parse().ok()) {
                    runs.push(run);
                }
            }
            Ok(runs)
        })
        .await?;
        runs.sort();
        Ok(runs)
    }

    async fn delete_run(&self, run_id: RunId) -> Result<u64, ArtifactError> {
        tokio::spawn(Arc::clone(&self.inner).delete_run(run_id))
            .await
            .map_err(|e| ArtifactError::storage(BACKEND, e))?
    }

    async fn collect_garbage(&self) -> Result<u64, ArtifactError> {
        tokio::spawn(Arc::clone(&self.inner).collect_garbage())
            .await
            .map_err(|e| ArtifactError::storage(BACKEND, e))?
    }
}

/// A file in `tmp/`, removed when dropped unless it was installed.
struct TempFile {
    path: PathBuf,
    inner: Arc<Inner>,
    installed: bool,
}

impl TempFile {
    fn new(inner: &Arc<Inner>, extension: &str) -> Self {
        let path = inner
            .root
            .join("tmp")
            .join(format!("{}.{extension}", uuid::Uuid::now_v7()));
        inner.writing.lock().insert(path.clone());
        Self {
            path,
            inner: Arc::clone(inner),
            installed: false,
        }
    }

    fn installed(&mut self) {
        self.installed = true;
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.installed {
            let _ = fs::remove_file(&self.path);
        }
        self.inner.writing.lock().remove(&self.path);
    }
}

/// Writes the chunks received to `file`, hashing them, until `None` (then
/// syncs it and returns its size and SHA-256) or until the channel closes
/// (an abandoned upload: an error).
fn write_blob(mut file: File, mut rx: mpsc::Receiver<Option<Bytes>>) -> io::Result<(u64, String)> {
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    loop {
        match rx.blocking_recv() {
            Some(Some(chunk)) => {
                file.write_all(&chunk)?;
                hasher.update(&chunk);
                size += chunk.len() as u64;
            }
            Some(None) => break,
            None => {
                return Err(io::Error::new(
                    io::ErrorKind::Interrupted,
                    "upload abandoned",
                ))
            }
        }
    }
    file.sync_all()?;
    Ok((size, hex::encode(hasher.finalize())))
}

/// Reads `file` on a blocking thread into a stream of chunks, checking that
/// it holds `size` bytes.
fn read_stream(mut file: File, size: u64) -> ByteStream {
    let (tx, rx) = mpsc::channel::<io::Result<Bytes>>(4);
    tokio::task::spawn_blocking(move || {
        let mut total = 0u64;
        loop {
            let mut buf = vec![0; READ_CHUNK];
            match file.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    total += n as u64;
                    if total > size {
                        break;
                    }
                    buf.truncate(n);
                    if tx.blocking_send(Ok(Bytes::from(buf))).is_err() {
                        return;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    let _ = tx.blocking_send(Err(e));
                    return;
                }
            }
        }
        if total != size {
            let _ = tx.blocking_send(Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("artifact content is not the {size} bytes its manifest says"),
            )));
        }
    });
    futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    })
    .boxed()
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

fn check_content(artifact: &Artifact, size: u64, sha256: &str) -> Result<(), ArtifactError> {
    if size != artifact.size || sha256 != artifact.sha256 {
        return Err(ArtifactError::storage(
            BACKEND,
            format!(
                "the content of artifact {:?} of run {} does not match its manifest",
                artifact.name, artifact.run_id
            ),
        ));
    }
    Ok(())
}

fn missing_content(artifact: &Artifact) -> ArtifactError {
    ArtifactError::storage(
        BACKEND,
        format!(
            "the content of artifact {:?} of run {} is missing",
            artifact.name, artifact.run_id
        ),
    )
}

/// Every manifest in a run's directory.
fn read_manifests(dir: &Path) -> io::Result<Vec<Artifact>> {
    let mut artifacts = Vec::new();
    for entry in read_dir(dir)? {
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "json") {
            match fs::read(&path) {
                Ok(json) => artifacts.push(parse_manifest(&path, &json)?),
                // Deleted meanwhile.
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(at(&path, e)),
            }
        }
    }
    Ok(artifacts)
}

fn parse_manifest(path: &Path, json: &[u8]) -> io::Result<Artifact> {
    serde_json::from_slice(json).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{}: not an artifact manifest: {e}", path.display()),
        )
    })
}

/// The entries of `dir`, with its path in any error.
fn read_dir(dir: &Path) -> io::Result<Vec<fs::DirEntry>> {
    fs::read_dir(dir)
        .and_then(|entries| entries.collect())
        .map_err(|e| at(dir, e))
}

/// Creates `dir` if it is missing, syncing its parent so that it lasts.
fn create_dir(dir: &Path) -> io::Result<()> {
    match fs::create_dir(dir) {
        Ok(()) => sync_dir(dir.parent().expect("not the root")),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(at(dir, e)),
    }
}

/// Makes the entries of `dir` (a rename into it, a removal) durable.
fn sync_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    File::open(dir)
        .and_then(|dir| dir.sync_all())
        .map_err(|e| at(dir, e))?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

/// `error`, saying which path it was about.
fn at(path: &Path, error: io::Error) -> io::Error {
    io::Error::new(error.kind(), format!("{}: {error}", path.display()))
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> Result<T, ArtifactError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ArtifactError::storage(BACKEND, e))?
        .map_err(|e| ArtifactError::storage(BACKEND, e))
}
