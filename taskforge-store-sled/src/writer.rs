//! The writer thread: run and event writes from many callers, applied in
//! batches, one sled `apply_batch` per batch.
//!
//! In sled 0.34 every batch (and every transaction) seals and writes out
//! the current log buffer, so each one costs a write to the device however
//! small it is; and sled applies them one at a time anyway. So writes are
//! queued to one thread, which takes whatever has queued up (up to
//! [`MAX_BATCH`]) and applies it at once. Each queued write checks its
//! preconditions first and writes only if they hold; one that fails
//! returns its error and leaves nothing behind, while the others in the
//! batch go ahead. Writes in a batch apply in queue order, each seeing the
//! ones before it, so the outcome is the same as running them one by one.
//!
//! Everything the writer stores lives in one tree (`idx`, format 5), so a
//! batch is one atomic `Tree::apply_batch`: a crash keeps all of it or
//! none. The writes are staged in memory first and read back from there
//! (the writer is the only thread that writes these keys, so reading the
//! tree for the rest is safe); a sled transaction would also read every key
//! before writing it, which was a fifth of the thread's work.

use std::cell::{Cell, RefCell};
use std::collections::hash_map::{Entry, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;

use sled::transaction::UnabortableTransactionError;
use sled::{IVec, Tree};
use taskforge_core::{Event, StoreError, WorkflowRun};
use tokio::sync::oneshot;

use parking_lot::RwLock;

use crate::active::{ActiveRuns, Staged};
use crate::error::backend;
use crate::group_commit::Flushes;
use crate::keys::{self, tag};
use crate::stats::Counters;

/// The most writes one batch applies.
const MAX_BATCH: usize = 512;

/// The kinds of records a queued write may touch, as the batch left them.
pub(crate) struct Tx<'a> {
    pub(crate) events: TxTree<'a>,
    pub(crate) runs: TxTree<'a>,
    pub(crate) steps: TxTree<'a>,
    pub(crate) idx: TxTree<'a>,
    /// The unfinished runs, as the batch left them so far.
    pub(crate) active: &'a Staged<'a>,
}

/// What a batch has written so far, applied at its end in one
/// `apply_batch`.
struct Staging {
    tree: Tree,
    /// Each key written, with its latest value (`None`: removed).
    writes: RefCell<Vec<(IVec, Option<IVec>)>>,
    /// Where each key is in `writes`, for reads that follow writes.
    at: RefCell<HashMap<IVec, usize, foldhash::fast::RandomState>>,
    /// Keys and bytes written.
    written: Cell<(u64, u64)>,
}

impl Staging {
    fn new(tree: &Tree) -> Self {
        Self {
            tree: tree.clone(),
            writes: RefCell::default(),
            at: RefCell::default(),
            written: Cell::new((0, 0)),
        }
    }

    fn get(&self, key: &IVec) -> Option<Option<IVec>> {
        let at = *self.at.borrow().get(key)?;
        Some(self.writes.borrow()[at].1.clone())
    }

    fn set(&self, key: IVec, value: Option<IVec>) {
        let mut writes = self.writes.borrow_mut();
        match self.at.borrow_mut().entry(key) {
            Entry::Occupied(at) => writes[*at.get()].1 = value,
            Entry::Vacant(at) => {
                writes.push((at.key().clone(), value));
                at.insert(writes.len() - 1);
            }
        }
    }

    /// Whether nothing was written.
    fn is_empty(&self) -> bool {
        self.writes.borrow().is_empty()
    }

    /// What was written, as one sled batch.
    fn into_batch(self) -> sled::Batch {
        let mut batch = sled::Batch::default();
        for (key, value) in self.writes.into_inner() {
            match value {
                Some(value) => batch.insert(key, value),
                None => batch.remove(key),
            }
        }
        batch
    }
}

/// One kind of record (keys under a tag) or the index keys themselves,
/// as the batch left them.
pub(crate) struct TxTree<'a> {
    staging: &'a Staging,
    tag: Option<u8>,
}

impl TxTree<'_> {
    fn full_key(&self, key: &[u8]) -> IVec {
        match self.tag {
            Some(tag) => IVec::from(keys::key(tag, &[key])),
            None => IVec::from(key),
        }
    }

    /// The value at `key`, as this batch sees it.
    pub(crate) fn get(
        &self,
        key: impl AsRef<[u8]>,
    ) -> Result<Option<IVec>, UnabortableTransactionError> {
        let key = self.full_key(key.as_ref());
        if let Some(staged) = self.staging.get(&key) {
            return Ok(staged);
        }
        self.staging
            .tree
            .get(key)
            .map_err(UnabortableTransactionError::Storage)
    }

    /// Sets `key` to `value`.
    pub(crate) fn insert(
        &self,
        key: &[u8],
        value: impl Into<IVec>,
    ) -> Result<(), UnabortableTransactionError> {
        let (key, value) = (self.full_key(key), value.into());
        self.count(key.len() + value.len());
        self.staging.set(key, Some(value));
        Ok(())
    }

    /// Removes `key`.
    pub(crate) fn remove(&self, key: impl AsRef<[u8]>) -> Result<(), UnabortableTransactionError> {
        let key = self.full_key(key.as_ref());
        self.count(key.len());
        self.staging.set(key, None);
        Ok(())
    }

    fn count(&self, bytes: usize) {
        let (keys, total) = self.staging.written.get();
        self.staging.written.set((keys + 1, total + bytes as u64));
    }
}

/// What [`SledStore::prune`](crate::SledStore::prune) removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PruneReport {
    /// Finished runs removed.
    pub runs: u64,
    /// Step attempts of those runs removed.
    pub step_runs: u64,
    /// Events removed.
    pub events: u64,
}

/// What a queued write returns.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// It was applied.
    Done,
    /// An event with its dedup key is stored already; nothing was written.
    Duplicate(Box<Event>),
    /// The run as stored afterwards.
    Run(Box<WorkflowRun>),
    /// What a prune write removed.
    Pruned(PruneReport),
}

/// The result of a write's own checks: `Err` means it wrote nothing.
pub(crate) type OpResult = Result<Outcome, StoreError>;

/// A queued write. It runs once, in the writer thread; it must change
/// nothing but what it writes through the [`Tx`]. An `Err` is a storage
/// failure of the whole batch.
pub(crate) type Op = Box<dyn Fn(&Tx<'_>) -> Result<OpResult, UnabortableTransactionError> + Send>;

struct Job {
    op: Op,
    /// Whether the write waits for a flush: the writer thread asks for it.
    flush: bool,
    reply: oneshot::Sender<(OpResult, u64)>,
}

/// The handle of the writer thread.
#[derive(Debug)]
pub(crate) struct Writer {
    queue: Option<mpsc::Sender<Job>>,
    /// Whether the thread is applying a batch: `apply_batch` holds sled's
    /// global write lock, and any other sled call waits for it.
    busy: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Job")
    }
}

impl Writer {
    /// Starts the writer thread over the `idx` tree, which holds events,
    /// runs and their indexes. With `flushes` (durable stores) it tells the
    /// flusher what it applies.
    pub(crate) fn start(
        idx: Tree,
        flushes: Option<Flushes>,
        counters: Arc<Counters>,
        active: Arc<RwLock<ActiveRuns>>,
    ) -> std::io::Result<Self> {
        let (queue, jobs) = mpsc::channel::<Job>();
        let busy = Arc::new(AtomicBool::new(false));
        let applying = Arc::clone(&busy);
        let thread = std::thread::Builder::new()
            .name("taskforge-sled-writer".into())
            .spawn(move || {
                while let Ok(first) = jobs.recv() {
                    let mut batch = vec![first];
                    while batch.len() < MAX_BATCH {
                        match jobs.try_recv() {
                            Ok(job) => batch.push(job),
                            Err(_) => break,
                        }
                    }
                    applying.store(true, Ordering::Relaxed);
                    apply(&idx, flushes.as_ref(), &counters, &active, batch);
                    applying.store(false, Ordering::Relaxed);
                }
            })?;
        Ok(Self {
            queue: Some(queue),
            busy,
            thread: Some(thread),
        })
    }

    /// Whether the thread is applying a batch now. A sled call made
    /// meanwhile would block until the batch is applied.
    pub(crate) fn busy(&self) -> bool {
        self.busy.load(Ordering::Relaxed)
    }

    /// Queues `op` and waits until its batch is applied (not flushed).
    /// With `flush`, the writer thread asks for a flush of the batch at
    /// once. Returns the write's result and the generation of the flush
    /// that covers it (0 for a store without flushes).
    pub(crate) async fn write(&self, op: Op, flush: bool) -> Result<(OpResult, u64), StoreError> {
        let (reply, answer) = oneshot::channel();
        self.queue
            .as_ref()
            .ok_or_else(|| backend("the store is closed"))?
            .send(Job { op, flush, reply })
            .map_err(|_| backend("the writer thread stopped; the store is closed"))?;
        answer
            .await
            .map_err(|_| backend("the writer thread stopped before answering"))
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        // Closing the queue ends the thread once it has applied the rest.
        drop(self.queue.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn apply(
    idx: &Tree,
    flushes: Option<&Flushes>,
    counters: &Counters,
    active: &RwLock<ActiveRuns>,
    batch: Vec<Job>,
) {
    if let Some(flushes) = flushes {
        flushes.applying();
    }
    // Only this thread changes the unfinished runs: reading them while
    // readers do needs no more than a read lock.
    let shared = active.read();
    let staging = Staging::new(idx);
    let staged = Staged::new(&shared);
    let result = (|| {
        let tree = |tag| TxTree {
            staging: &staging,
            tag,
        };
        let tx = Tx {
            events: tree(Some(tag::EVENT)),
            runs: tree(Some(tag::RUN)),
            steps: tree(Some(tag::STEP)),
            idx: tree(None),
            active: &staged,
        };
        let mut outcomes = Vec::with_capacity(batch.len());
        for job in &batch {
            outcomes.push((job.op)(&tx).map_err(|e| match e {
                UnabortableTransactionError::Storage(e) => e.to_string(),
                UnabortableTransactionError::Conflict => "write conflict".to_owned(),
            })?);
        }
        Ok::<_, String>(outcomes)
    })();
    let written = staging.written.get();
    let result = result.and_then(|outcomes| {
        // A batch of claims and renewals alone writes nothing (they are
        // held in memory until the run's next write): sled is not asked
        // to seal and write out a log buffer for it.
        if staging.is_empty() {
            return Ok(outcomes);
        }
        idx.apply_batch(staging.into_batch())
            .map_err(|e| e.to_string())?;
        Ok(outcomes)
    });
    let changes = staged.into_changes();
    drop(shared);
    // Asked for even if the batch failed: a failed batch wrote nothing,
    // but readers may have seen earlier ones, and the generation must be
    // recorded either way.
    let flush = batch.iter().any(|job| job.flush);
    let generation = flushes.map_or(0, |f| f.applied(flush));
    match result {
        Ok(outcomes) => {
            // Applied before anyone is answered, so a caller that reads
            // after its write sees it.
            if !changes.is_empty() {
                let mut active = active.write();
                for (id, run) in changes {
                    active.set(id, run);
                }
            }
            let (keys, bytes) = written;
            let durable = batch.iter().filter(|job| job.flush).count();
            counters.batch(batch.len(), durable, keys, bytes);
            for (job, outcome) in batch.into_iter().zip(outcomes) {
                // A caller that went away does not need its answer.
                let _ = job.reply.send((outcome, generation));
            }
        }
        Err(reason) => {
            tracing::error!(error = %reason, "sled write batch failed");
            for job in batch {
                let _ = job.reply.send((
                    Err(backend(format!("write batch failed: {reason}"))),
                    generation,
                ));
            }
        }
    }
}
