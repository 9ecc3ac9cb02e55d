//! The writer thread: run and event writes from many callers, applied in
//! batches, one sled transaction per batch.
//!
//! In sled 0.34 every transaction (and every `apply_batch`) seals and
//! writes out the current log buffer, so each one costs a write to the
//! device however small it is; and sled runs transactions one at a time
//! anyway. So writes that need a transaction are queued to one thread,
//! which takes whatever has queued up (up to [`MAX_BATCH`]) and applies it
//! in one transaction. Each queued write checks its preconditions first
//! and writes only if they hold; one that fails returns its error and
//! leaves nothing behind, while the others in the batch go ahead. Writes
//! in a batch apply in queue order, each seeing the ones before it, so
//! the outcome is the same as running them one by one.

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;

use sled::transaction::{
    ConflictableTransactionError, TransactionalTree, UnabortableTransactionError,
};
use sled::{IVec, Transactional, Tree};
use taskforge_core::{Event, StoreError, WorkflowRun};
use tokio::sync::oneshot;

use parking_lot::RwLock;

use crate::active::{ActiveRuns, Staged};
use crate::error::backend;
use crate::group_commit::Flushes;
use crate::stats::Counters;

/// The most writes one transaction applies.
const MAX_BATCH: usize = 512;

/// The trees a queued write may touch, inside the batch's transaction.
pub(crate) struct Tx<'a> {
    pub(crate) events: TxTree<'a>,
    pub(crate) runs: TxTree<'a>,
    pub(crate) steps: TxTree<'a>,
    pub(crate) idx: TxTree<'a>,
    /// The unfinished runs, as the batch left them so far.
    pub(crate) active: &'a Staged<'a>,
}

/// One tree in the batch's transaction, counting what is written to it.
pub(crate) struct TxTree<'a> {
    tree: &'a TransactionalTree,
    /// Keys and bytes written in this try of the transaction.
    written: &'a Cell<(u64, u64)>,
}

impl TxTree<'_> {
    /// The value at `key`, as this transaction sees it.
    pub(crate) fn get(
        &self,
        key: impl AsRef<[u8]>,
    ) -> Result<Option<IVec>, UnabortableTransactionError> {
        self.tree.get(key)
    }

    /// Sets `key` to `value`.
    pub(crate) fn insert(
        &self,
        key: &[u8],
        value: impl Into<IVec>,
    ) -> Result<(), UnabortableTransactionError> {
        let value = value.into();
        self.count(key.len() + value.len());
        self.tree.insert(key, value).map(drop)
    }

    /// Removes `key`.
    pub(crate) fn remove(&self, key: impl AsRef<[u8]>) -> Result<(), UnabortableTransactionError> {
        let key = key.as_ref();
        self.count(key.len());
        self.tree.remove(key).map(drop)
    }

    fn count(&self, bytes: usize) {
        let (keys, total) = self.written.get();
        self.written.set((keys + 1, total + bytes as u64));
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

/// A queued write. It may run more than once if sled retries the
/// transaction, so it must not change anything but the trees.
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
    /// Whether the thread is applying a batch: its transaction holds
    /// sled's global write lock, and any other sled call waits for it.
    busy: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Job")
    }
}

impl Writer {
    /// Starts the writer thread over these trees. With `flushes` (durable
    /// stores) it tells the flusher what it applies.
    pub(crate) fn start(
        events: Tree,
        runs: Tree,
        steps: Tree,
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
                    apply(
                        &events,
                        &runs,
                        &steps,
                        &idx,
                        flushes.as_ref(),
                        &counters,
                        &active,
                        batch,
                    );
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

// The writer thread's whole state, passed as it is: a struct would only
// rename it.
#[allow(clippy::too_many_arguments)]
fn apply(
    events: &Tree,
    runs: &Tree,
    steps: &Tree,
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
    let result = (events, runs, steps, idx).transaction(|(events, runs, steps, idx)| {
        let written = Cell::new((0, 0));
        let staged = Staged::new(&shared);
        let tree = |tree| TxTree {
            tree,
            written: &written,
        };
        let tx = Tx {
            events: tree(events),
            runs: tree(runs),
            steps: tree(steps),
            idx: tree(idx),
            active: &staged,
        };
        let mut outcomes = Vec::with_capacity(batch.len());
        for job in &batch {
            outcomes.push((job.op)(&tx)?);
        }
        Ok::<_, ConflictableTransactionError<()>>((outcomes, written.get(), staged.into_changes()))
    });
    drop(shared);
    // Asked for even if the batch failed: a failed batch wrote nothing,
    // but readers may have seen earlier ones, and the generation must be
    // recorded either way.
    let flush = batch.iter().any(|job| job.flush);
    let generation = flushes.map_or(0, |f| f.applied(flush));
    match result {
        Ok((outcomes, (keys, bytes), changes)) => {
            // Applied before anyone is answered, so a caller that reads
            // after its write sees it.
            if !changes.is_empty() {
                let mut active = active.write();
                for (id, run) in changes {
                    active.set(id, run);
                }
            }
            let durable = batch.iter().filter(|job| job.flush).count();
            counters.batch(batch.len(), durable, keys, bytes);
            for (job, outcome) in batch.into_iter().zip(outcomes) {
                // A caller that went away does not need its answer.
                let _ = job.reply.send((outcome, generation));
            }
        }
        Err(e) => {
            let reason = match e {
                sled::transaction::TransactionError::Storage(e) => e.to_string(),
                sled::transaction::TransactionError::Abort(()) => "transaction aborted".into(),
            };
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
