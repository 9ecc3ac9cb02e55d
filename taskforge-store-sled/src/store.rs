//! The store handle: opening, the format check, and shared helpers.

use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::Serialize;
use sled::transaction::{
    ConflictableTransactionError, TransactionalTree, UnabortableTransactionError,
};
use sled::{IVec, Transactional, Tree};
use taskforge_core::StoreError;

use parking_lot::RwLock;

use crate::active::{ActiveRun, ActiveRuns};
use crate::config::{Durability, SledConfig};
use crate::error::{backend, OpenError};
use crate::group_commit::GroupCommit;
use crate::keys::{self, tag, RunHead, StepHead, ID};
use crate::recent::RecentEvents;
use crate::space::{Records, Space};
use crate::stats::{Counters, WriteStats};
use crate::writer::{Op, OpResult, Outcome, Tx, TxTree, Writer};

/// The format version this release writes and reads.
///
/// - 1: every run indexed by status, running runs by lease expiry.
/// - 2: unfinished runs marked by an `ACTIVE` index key and indexed by
///   status and lease in memory; finished runs indexed by status on disk.
/// - 3: the run an event started has no `event ++ run` index key (the
///   event's outcome names it), and finished runs no finish-time key
///   (retention goes by creation time).
/// - 4: a run's step attempts are kept in its record (see `record.rs`),
///   not each under a key of its own in the `steps` tree.
/// - 5: events, runs and attempts moved from trees of their own into the
///   `idx` tree, under tags (see `keys.rs`), so that the writer thread
///   stores a batch with one `apply_batch` instead of a transaction over
///   four trees; a finished run is indexed by its workflow and status, no
///   longer by its status alone (listings merge the workflows' indexes);
///   a run or event whose UUID v7 id carries the millisecond it was made in
///   has no creation-time key (listings by time and prune read such ids
///   from the records' own keys).
///
/// A store of format 1 is migrated to format 4 when opened, in one atomic
/// sled transaction (it keeps its format if interrupted). Formats 2 and 3
/// need no change of their records: the keys they have that format 4 does
/// not write (attempts in the `steps` tree, index keys) are read correctly
/// and removed with their runs. A store of format 1 to 4 then has its
/// records copied into `idx` (in batches; interrupted, it keeps its format
/// and copies them again on the next open), is marked format 5, and its
/// old trees are dropped.
pub const FORMAT_VERSION: u32 = 5;

/// The format before records moved into the `idx` tree.
const FORMAT_SEPARATE_TREES: u32 = 4;

/// The trees formats 1 to 4 kept events, runs and attempts in, and the
/// tags their records have in `idx` since format 5.
const MOVED_TREES: [(&str, u8); 3] = [
    ("events", tag::EVENT),
    ("runs", tag::RUN),
    ("steps", tag::STEP),
];

const META_TREE: &str = "meta";
const MARKER_KEY: &[u8] = b"marker";
const MARKER: &[u8] = b"taskforge";
const FORMAT_KEY: &[u8] = b"format";

/// A Taskforge store in a sled database: implements
/// [`WorkflowStore`](taskforge_core::store::WorkflowStore),
/// [`EventStore`](taskforge_core::store::EventStore) and
/// [`RunStore`](taskforge_core::store::RunStore).
///
/// Cloning is cheap and shares the database. The database closes when the
/// last clone is dropped, after a final flush. See the [crate docs](crate)
/// for the durability guarantee.
#[derive(Clone)]
pub struct SledStore {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    // Dropped first, in this order: the writer applies what is queued,
    // then the flusher stops. Both threads hold handles of the database,
    // and joining them lets a reopen of the path lock it again.
    writer: Option<Writer>,
    commit: Option<GroupCommit>,
    pub(crate) db: sled::Db,
    pub(crate) workflows: Tree,
    pub(crate) versions: Tree,
    pub(crate) triggers: Tree,
    pub(crate) events: Space,
    pub(crate) runs: Space,
    pub(crate) steps: Space,
    pub(crate) idx: Tree,
    /// The unfinished runs; only the writer thread changes them.
    pub(crate) active: Arc<RwLock<ActiveRuns>>,
    /// Recently stored events with dedup keys.
    pub(crate) recent: RecentEvents,
    counters: Arc<Counters>,
    path: Option<PathBuf>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        drop(self.writer.take());
        drop(self.commit.take());
        if let Err(e) = self.db.flush() {
            tracing::error!(error = %e, "final sled flush failed");
        }
    }
}

impl fmt::Debug for SledStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SledStore")
            .field("path", &self.inner.path)
            .field(
                "durability",
                &if self.inner.commit.is_some() {
                    Durability::Durable
                } else {
                    Durability::Relaxed
                },
            )
            .finish_non_exhaustive()
    }
}

impl SledStore {
    /// Opens the store in directory `path`, creating it if absent, with
    /// the default [`SledConfig`] (durable writes).
    ///
    /// # Errors
    /// See [`open_with`](Self::open_with).
    pub fn open(path: impl AsRef<Path>) -> Result<Self, OpenError> {
        Self::open_with(path, SledConfig::default())
    }

    /// Opens the store in directory `path`, creating it if absent.
    ///
    /// # Errors
    /// [`OpenError::NotATaskforgeStore`] if the directory holds other files
    /// or another program's sled database (it is left untouched),
    /// [`OpenError::NewerFormat`] if a newer release wrote it,
    /// [`OpenError::Corrupt`] if sled cannot read it, and
    /// [`OpenError::Io`] if the file system fails or another process has
    /// it open.
    pub fn open_with(path: impl AsRef<Path>, config: SledConfig) -> Result<Self, OpenError> {
        let path = path.as_ref();
        if !check_directory(path)? {
            create(path, &config)?;
        }
        let sled_config = sled_config(&config).path(path);
        let db = open_db(&sled_config, path)?;
        Self::from_db(db, &config, Some(path.to_path_buf()), true)
    }

    /// A store in a temporary directory, removed when the store is dropped.
    /// For tests and experiments.
    ///
    /// # Errors
    /// [`OpenError::Io`] if the temporary directory cannot be made.
    pub fn temporary() -> Result<Self, OpenError> {
        let config = SledConfig::default();
        let sled_config = sled_config(&config).temporary(true);
        let db = open_db(&sled_config, Path::new("<temporary>"))?;
        Self::from_db(db, &config, None, false)
    }

    /// The size of the database's files, in bytes.
    ///
    /// # Errors
    /// [`StoreError::Backend`] if the files cannot be read.
    pub fn size_on_disk(&self) -> Result<u64, StoreError> {
        self.inner.db.size_on_disk().map_err(backend)
    }

    /// Flushes every write so far to disk, whatever the durability.
    ///
    /// # Errors
    /// [`StoreError::Backend`] if the flush fails.
    pub async fn flush(&self) -> Result<(), StoreError> {
        match &self.inner.commit {
            Some(commit) => commit.durable().await,
            None => {
                let db = self.inner.db.clone();
                tokio::task::spawn_blocking(move || db.flush())
                    .await
                    .map_err(backend)?
                    .map(drop)
                    .map_err(backend)
            }
        }
    }

    fn from_db(
        db: sled::Db,
        config: &SledConfig,
        path: Option<PathBuf>,
        existing: bool,
    ) -> Result<Self, OpenError> {
        let shown = path.clone().unwrap_or_else(|| PathBuf::from("<temporary>"));
        let format = check_format(&db, &shown, existing)?;
        let tree = |name: &str| db.open_tree(name).map_err(|e| sled_open_error(e, &shown));
        let counters = Arc::new(Counters::default());
        let commit = match config.durability {
            Durability::Durable => Some(GroupCommit::start(db.clone(), Arc::clone(&counters))?),
            Durability::Relaxed => None,
        };
        let idx = tree("idx")?;
        let triggers = tree("triggers")?;
        index_triggers(&triggers, &idx).map_err(|e| OpenError::Corrupt {
            path: shown.clone(),
            reason: format!("indexing triggers: {e}"),
        })?;
        let migrated = match format {
            1 => tree("runs").map(|runs| migrate_v1(&db, &runs, &idx))?,
            _ => Ok(()),
        }
        .and_then(|()| match format {
            FORMAT_VERSION => drop_moved_trees(&db),
            _ => move_records(&db, &idx),
        });
        migrated.map_err(|e| OpenError::Corrupt {
            path: shown.clone(),
            reason: format!("migrating format {format} to {FORMAT_VERSION}: {e}"),
        })?;
        let space = |tag| Space::new(idx.clone(), tag);
        let (events, runs, steps) = (space(tag::EVENT), space(tag::RUN), space(tag::STEP));
        let active = load_active(&runs, &steps, &idx).map_err(|e| OpenError::Corrupt {
            path: shown.clone(),
            reason: format!("loading the unfinished runs: {e}"),
        })?;
        let active = Arc::new(RwLock::new(active));
        let writer = Writer::start(
            idx.clone(),
            commit.as_ref().map(|c| c.flushes().clone()),
            Arc::clone(&counters),
            Arc::clone(&active),
        )?;
        let inner = Inner {
            workflows: tree("workflows")?,
            versions: tree("versions")?,
            triggers,
            events,
            runs,
            steps,
            idx,
            writer: Some(writer),
            commit,
            db,
            active,
            recent: RecentEvents::default(),
            counters,
            path,
        };
        Ok(Self {
            inner: Arc::new(inner),
        })
    }

    /// What the writer thread and the flusher did since the store was
    /// opened: batches, writes, keys and bytes written, flushes. For
    /// benchmarks and tuning; subtract two snapshots with
    /// [`WriteStats::since`].
    #[must_use]
    pub fn write_stats(&self) -> WriteStats {
        self.inner.counters.snapshot()
    }

    /// Returns once the writes made so far are as durable as configured.
    pub(crate) async fn durable(&self) -> Result<(), StoreError> {
        match &self.inner.commit {
            Some(commit) => commit.durable().await,
            None => Ok(()),
        }
    }

    /// Applies `op` in the writer thread's next batch. Not waited for
    /// beyond that: for writes the contract lets go undurable.
    pub(crate) async fn write(&self, op: Op) -> OpResult {
        self.writer()?.write(op, false).await?.0
    }

    /// Applies `op` in the writer thread's next batch and, if it succeeds,
    /// returns once it is as durable as configured. The writer thread asks
    /// for the flush as soon as the batch is applied.
    pub(crate) async fn write_durable(&self, op: Op) -> OpResult {
        let (result, generation) = self.writer()?.write(op, true).await?;
        let outcome = result?;
        if let Some(commit) = &self.inner.commit {
            commit.flushes().wait(generation).await?;
        }
        Ok(outcome)
    }

    /// Whether the writer thread is applying a batch. Its transaction holds
    /// sled's global write lock, so a read made now would block the calling
    /// thread (an async worker) until it ends: optional reads skip then.
    pub(crate) fn writer_busy(&self) -> bool {
        self.inner.writer.as_ref().is_some_and(Writer::busy)
    }

    fn writer(&self) -> Result<&Writer, StoreError> {
        self.inner
            .writer
            .as_ref()
            .ok_or_else(|| backend("the store is closed"))
    }

    /// For a record the writer thread stored and the caller has just read:
    /// returns once it is as durable as configured. Waits for the batch
    /// that stored it to finish if it may still be under way, then for
    /// the flush that covers it, if that has not finished; returns at once
    /// if it has, without writing anything.
    pub(crate) async fn read_durable(&self) -> Result<(), StoreError> {
        let Some(commit) = &self.inner.commit else {
            return Ok(());
        };
        let generation = match commit.flushes().covered() {
            Some(generation) => generation,
            // Writes apply in queue order: once an empty write is applied,
            // so is every batch that began before this call.
            None => {
                let nothing: Op = Box::new(|_: &Tx<'_>| Ok(Ok(Outcome::Done)));
                self.writer()?.write(nothing, true).await?.1
            }
        };
        commit.flushes().wait(generation).await
    }

    /// Runs `f` on the blocking pool: for scans, which may read many records.
    pub(crate) async fn blocking<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Inner) -> Result<T, StoreError> + Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || f(&inner))
            .await
            .map_err(backend)?
    }
}

fn sled_config(config: &SledConfig) -> sled::Config {
    let flush_every_ms = match config.durability {
        // The group-commit flusher flushes as writers need it.
        Durability::Durable => None,
        Durability::Relaxed => Some(config.flush_every_ms.max(1)),
    };
    sled::Config::new()
        .cache_capacity(config.cache_capacity)
        .mode(sled::Mode::HighThroughput)
        .flush_every_ms(flush_every_ms)
}

/// Refuses a directory that holds files but no sled database, so that
/// opening the wrong path never writes into someone else's files. Returns
/// whether a sled database with data was there already.
fn check_directory(path: &Path) -> Result<bool, OpenError> {
    let entries = match std::fs::read_dir(path) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) if path.is_file() => {
            return Err(OpenError::NotATaskforgeStore {
                path: path.to_path_buf(),
                reason: format!("it is a file, not a directory ({e})"),
            })
        }
        Err(e) => return Err(OpenError::Io(e)),
    };
    let mut any = false;
    let mut sled = false;
    for entry in entries {
        let name = entry?.file_name();
        sled |= name == "conf" || name == "db";
        any = true;
    }
    if any && !sled {
        return Err(OpenError::NotATaskforgeStore {
            path: path.to_path_buf(),
            reason: "the directory holds other files and no sled database".into(),
        });
    }
    // sled reads a damaged data file as an empty database: remembering
    // that there was one keeps a damaged store from being re-created empty.
    let db = path.join("db");
    Ok(db.is_file() && std::fs::metadata(db)?.len() > 0)
}

/// Creates a new, empty store at `path`, atomically: it is built and
/// flushed in a staging directory beside `path`, then renamed into place.
/// A crash mid-creation leaves only the staging directory, which the next
/// attempt replaces, never a half-made store that no longer opens.
fn create(path: &Path, config: &SledConfig) -> Result<(), OpenError> {
    let name = path
        .file_name()
        .ok_or_else(|| OpenError::NotATaskforgeStore {
            path: path.to_path_buf(),
            reason: "the path names no directory".into(),
        })?;
    let parent = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&parent)?;
    let mut staging_name = std::ffi::OsString::from(".");
    staging_name.push(name);
    staging_name.push(".creating");
    let staging = parent.join(staging_name);
    match std::fs::remove_dir_all(&staging) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.into()),
        _ => {}
    }
    {
        let db = open_db(&sled_config(config).path(&staging), &staging)?;
        check_format(&db, &staging, false)?;
        db.flush().map_err(|e| sled_open_error(e, &staging))?;
    }
    // An empty directory, or the sled files of a creation that never
    // wrote anything (checked by `check_directory`), gives way.
    if path.exists() {
        std::fs::remove_dir_all(path)?;
    }
    std::fs::rename(&staging, path)?;
    // The rename is durable once the parent directory is synced.
    std::fs::File::open(&parent)?.sync_all()?;
    Ok(())
}

/// How long opening waits for the file lock of a store that was just
/// closed: sled's background writes can hold the file a moment longer.
const LOCK_PATIENCE: Duration = Duration::from_secs(2);

/// Opens sled, turning its errors, and the panics some damaged files cause
/// in sled 0.34, into an [`OpenError`]. A lock held by a store closed a
/// moment ago is waited for, up to [`LOCK_PATIENCE`].
fn open_db(config: &sled::Config, path: &Path) -> Result<sled::Db, OpenError> {
    let start = Instant::now();
    let mut pause = Duration::from_millis(1);
    loop {
        match open_once(config, path) {
            Err(OpenError::Io(e))
                if e.to_string().contains("could not acquire lock")
                    && start.elapsed() < LOCK_PATIENCE =>
            {
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(100));
            }
            other => return other,
        }
    }
}

fn open_once(config: &sled::Config, path: &Path) -> Result<sled::Db, OpenError> {
    match catch_unwind(AssertUnwindSafe(|| config.open())) {
        Ok(Ok(db)) => Ok(db),
        Ok(Err(e)) => Err(sled_open_error(e, path)),
        Err(panic) => {
            let reason = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "sled panicked while reading it".into());
            Err(OpenError::Corrupt {
                path: path.to_path_buf(),
                reason,
            })
        }
    }
}

fn sled_open_error(error: sled::Error, path: &Path) -> OpenError {
    match error {
        sled::Error::Io(e) => OpenError::Io(e),
        other => OpenError::Corrupt {
            path: path.to_path_buf(),
            reason: other.to_string(),
        },
    }
}

/// Checks the format marker of an existing store, or writes it into a
/// fresh database, and returns the store's format version. `existing`
/// says whether a data file was there before sled opened it.
fn check_format(db: &sled::Db, path: &Path, existing: bool) -> Result<u32, OpenError> {
    let corrupt = |e: sled::Error| sled_open_error(e, path);
    let has_meta = db.tree_names().iter().any(|n| n == META_TREE.as_bytes());
    let fresh = || -> Result<bool, OpenError> {
        for name in db.tree_names() {
            if !db.open_tree(&name).map_err(corrupt)?.is_empty() {
                return Ok(false);
            }
        }
        Ok(true)
    };
    let meta = if has_meta {
        Some(db.open_tree(META_TREE).map_err(corrupt)?)
    } else {
        None
    };
    let marker = match &meta {
        Some(meta) => meta.get(MARKER_KEY).map_err(corrupt)?,
        None => None,
    };
    let Some(marker) = marker else {
        if !fresh()? {
            return Err(OpenError::NotATaskforgeStore {
                path: path.to_path_buf(),
                reason: "a sled database without the taskforge marker".into(),
            });
        }
        if existing {
            return Err(OpenError::Corrupt {
                path: path.to_path_buf(),
                reason: "its data file holds nothing sled can read (damaged, or the store's \
                         creation was interrupted; if it holds nothing of value, remove it)"
                    .into(),
            });
        }
        let meta = db.open_tree(META_TREE).map_err(corrupt)?;
        let mut batch = sled::Batch::default();
        batch.insert(FORMAT_KEY, &FORMAT_VERSION.to_be_bytes());
        batch.insert(MARKER_KEY, MARKER);
        meta.apply_batch(batch).map_err(corrupt)?;
        db.flush().map_err(corrupt)?;
        return Ok(FORMAT_VERSION);
    };
    if marker != MARKER {
        return Err(OpenError::NotATaskforgeStore {
            path: path.to_path_buf(),
            reason: "its meta tree has another program's marker".into(),
        });
    }
    let format = meta
        .as_ref()
        .map(|meta| meta.get(FORMAT_KEY))
        .transpose()
        .map_err(corrupt)?
        .flatten()
        .and_then(|v| <[u8; 4]>::try_from(v.as_ref()).ok())
        .map(u32::from_be_bytes)
        .ok_or_else(|| OpenError::Corrupt {
            path: path.to_path_buf(),
            reason: "the format version is missing or malformed".into(),
        })?;
    if format > FORMAT_VERSION {
        return Err(OpenError::NewerFormat {
            found: format,
            supported: FORMAT_VERSION,
        });
    }
    if format == 0 {
        return Err(OpenError::Corrupt {
            path: path.to_path_buf(),
            reason: "format version 0 does not exist".into(),
        });
    }
    Ok(format)
}

/// Marks the store as of `format`, durably.
fn set_format(db: &sled::Db, format: u32) -> Result<(), StoreError> {
    let meta = db.open_tree(META_TREE).map_err(backend)?;
    meta.insert(FORMAT_KEY, &format.to_be_bytes())
        .map_err(backend)?;
    db.flush().map_err(backend)?;
    Ok(())
}

/// How many records [`move_records`] copies per batch.
const MOVE_BATCH: usize = 1_024;

/// Moves the records of a store of format 1 to 4 (migrated to format 4's
/// keys already) into the `idx` tree, marks it format 5 and drops the old
/// trees. Copies are idempotent and the format is set only once all are
/// made and flushed, so an interrupted move is made again on the next open.
fn move_records(db: &sled::Db, idx: &Tree) -> Result<(), StoreError> {
    let mut moved = 0u64;
    for (name, tag) in MOVED_TREES {
        if !db.tree_names().iter().any(|n| n == name.as_bytes()) {
            continue;
        }
        let tree = db.open_tree(name).map_err(backend)?;
        let mut batch = sled::Batch::default();
        let mut in_batch = 0;
        for entry in tree.iter() {
            let (key, value) = entry.map_err(backend)?;
            batch.insert(keys::key(tag, &[&key]), value);
            in_batch += 1;
            moved += 1;
            if in_batch == MOVE_BATCH {
                idx.apply_batch(std::mem::take(&mut batch))
                    .map_err(backend)?;
                in_batch = 0;
            }
        }
        idx.apply_batch(batch).map_err(backend)?;
    }
    db.flush().map_err(backend)?;
    set_format(db, FORMAT_VERSION)?;
    drop_moved_trees(db)?;
    tracing::info!(
        moved,
        "moved events and runs into one tree (format {FORMAT_VERSION})"
    );
    Ok(())
}

/// Drops the trees whose records moved into `idx`, if they are left (a
/// move interrupted after the format was set).
fn drop_moved_trees(db: &sled::Db) -> Result<(), StoreError> {
    let names = db.tree_names();
    let mut dropped = false;
    for (name, _) in MOVED_TREES {
        if names.iter().any(|n| n == name.as_bytes()) {
            dropped |= db.drop_tree(name).map_err(backend)?;
        }
    }
    if dropped {
        db.flush().map_err(backend)?;
    }
    Ok(())
}

/// Migrates a format-1 store to the current format, in one sled
/// transaction (a crash leaves it format 1, migrated again on the next
/// open): the status and lease index keys of unfinished runs give way to
/// one `ACTIVE` key each.
fn migrate_v1(db: &sled::Db, runs: &Tree, idx: &Tree) -> Result<(), StoreError> {
    let meta = db.open_tree(META_TREE).map_err(backend)?;
    let mut unfinished = Vec::new();
    for entry in idx.scan_prefix([tag::RUN_BY_STATUS]).keys() {
        let key = entry.map_err(backend)?;
        // Format 1 kept queued (0), running (1) and unknown (0xff) runs
        // here beside the finished ones.
        if !matches!(key.get(1), Some(0 | 1 | 0xff)) {
            continue;
        }
        let Some(id) = keys::trailing_id(&key) else {
            continue;
        };
        if let Some(head) = load::<RunHead>(runs, "run", &id)? {
            if keys::is_active(head.status) {
                unfinished.push(head);
            }
        }
    }
    let leases = idx
        .scan_prefix([tag::LEASE_V1])
        .keys()
        .collect::<Result<Vec<IVec>, _>>()
        .map_err(backend)?;
    (idx, &meta)
        .transaction(|(idx, meta)| {
            for head in &unfinished {
                for key in keys::v1_active_index(head) {
                    idx.remove(key)?;
                }
                idx.insert(keys::key(tag::ACTIVE, &[&head.id.to_bytes()]), &[])?;
            }
            for key in &leases {
                idx.remove(key)?;
            }
            meta.insert(FORMAT_KEY, &FORMAT_SEPARATE_TREES.to_be_bytes())?;
            Ok::<_, ConflictableTransactionError<()>>(())
        })
        .map_err(|e| backend(format!("{e:?}")))?;
    db.flush().map_err(backend)?;
    tracing::info!(
        unfinished = unfinished.len(),
        "migrated the store from format 1 to {FORMAT_SEPARATE_TREES}"
    );
    Ok(())
}

/// The unfinished runs of a store, with their attempts' statuses, from its
/// `ACTIVE` index.
fn load_active(runs: &Space, steps: &Space, idx: &Tree) -> Result<ActiveRuns, StoreError> {
    let mut active = ActiveRuns::default();
    for entry in idx.scan_prefix([tag::ACTIVE]).keys() {
        let key = entry.map_err(backend)?;
        let Some(id) = keys::trailing_id(&key) else {
            continue;
        };
        let Some(stored) = runs.get(id).map_err(backend)? else {
            return Err(backend("an ACTIVE index key names a missing run"));
        };
        let run: taskforge_core::WorkflowRun = decode("run", &stored)?;
        let run_bytes = crate::record::run_json(&stored)
            .map(IVec::from)
            .map_err(backend)?;
        let mut loaded = ActiveRun::new(Arc::new(run), run_bytes);
        // Attempts of earlier formats, in the steps tree...
        for step in steps.scan_prefix(id) {
            let (key, value) = step.map_err(backend)?;
            let (Some(index), Some(attempt)) = (
                key.get(ID..ID + 4)
                    .and_then(|b| <[u8; 4]>::try_from(b).ok()),
                key.get(ID + 4..ID + 8)
                    .and_then(|b| <[u8; 4]>::try_from(b).ok()),
            ) else {
                return Err(backend("malformed step attempt key"));
            };
            let head: StepHead = decode("step run", &value)?;
            loaded.set_step(
                u32::from_be_bytes(index),
                u32::from_be_bytes(attempt),
                head.status,
                value,
            );
        }
        // ...and those in the run's record, which supersede them.
        for (index, attempt, json) in crate::record::attempts(&stored).map_err(backend)? {
            let head: StepHead = decode("step run", json)?;
            loaded.set_step(index, attempt, head.status, IVec::from(json));
        }
        active.set(id, Some(loaded));
    }
    Ok(active)
}

/// Serializes a record.
pub(crate) fn encode<T: Serialize>(kind: &'static str, value: &T) -> Result<IVec, StoreError> {
    serde_json::to_vec(value)
        .map(IVec::from)
        .map_err(|e| backend(format!("cannot serialize {kind}: {e}")))
}

/// Deserializes a record (of a run kept with its attempts, the run's part:
/// see `record.rs`).
pub(crate) fn decode<T: DeserializeOwned>(
    kind: &'static str,
    bytes: &[u8],
) -> Result<T, StoreError> {
    let json = crate::record::run_json(bytes)
        .map_err(|e| backend(format!("corrupt {kind} record: {e}")))?;
    serde_json::from_slice(json).map_err(|e| backend(format!("corrupt {kind} record: {e}")))
}

/// Reads and deserializes the record at `key` of `records`.
pub(crate) fn load<T: DeserializeOwned>(
    records: &impl Records,
    kind: &'static str,
    key: &[u8],
) -> Result<Option<T>, StoreError> {
    match records.record(key).map_err(backend)? {
        Some(bytes) => decode(kind, &bytes).map(Some),
        None => Ok(None),
    }
}

/// Reads and deserializes the record at `key` of `tree` in a transaction.
pub(crate) fn tx_load<T: DeserializeOwned>(
    tree: &TransactionalTree,
    kind: &'static str,
    key: &[u8],
) -> Result<Option<T>, ConflictableTransactionError<StoreError>> {
    match tree.get(key)? {
        Some(bytes) => decode(kind, &bytes)
            .map(Some)
            .map_err(ConflictableTransactionError::Abort),
        None => Ok(None),
    }
}

/// [`tx_load`] for a queued write: a record that does not parse is that
/// write's error, not the batch's.
pub(crate) fn op_load<T: DeserializeOwned>(
    tree: &TxTree<'_>,
    kind: &'static str,
    key: &[u8],
) -> Result<Result<Option<T>, StoreError>, UnabortableTransactionError> {
    Ok(match tree.get(key)? {
        Some(bytes) => decode(kind, &bytes).map(Some),
        None => Ok(None),
    })
}

/// Replaces the index keys `old` with `new` in a transaction, touching only
/// the keys that differ.
pub(crate) fn tx_reindex(
    idx: &TxTree<'_>,
    old: &[Vec<u8>],
    new: &[Vec<u8>],
) -> Result<(), UnabortableTransactionError> {
    for key in old.iter().filter(|k| !new.contains(k)) {
        idx.remove(key.as_slice())?;
    }
    for key in new.iter().filter(|k| !old.contains(k)) {
        idx.insert(key.as_slice(), &[])?;
    }
    Ok(())
}

/// Indexes the unique keys of triggers stored by an earlier release, which
/// did not index them. Idempotent, and cheap (triggers are few): run on
/// every open. A key held already is left to its holder.
pub(crate) fn index_triggers(triggers: &sled::Tree, idx: &sled::Tree) -> Result<(), StoreError> {
    for entry in triggers.iter().values() {
        let trigger: taskforge_core::Trigger = decode("trigger", &entry.map_err(backend)?)?;
        let unique = crate::keys::trigger_unique(&trigger);
        let id = trigger.id.to_bytes();
        for key in unique.name.iter().chain(&unique.path) {
            idx.compare_and_swap(key.as_slice(), None as Option<&[u8]>, Some(&id[..]))
                .map_err(backend)?
                .ok();
        }
    }
    Ok(())
}
