//! Group commit: one flusher thread makes writes durable in batches.
//!
//! A writer first applies its write to sled (in memory), then asks for a
//! flush and waits. The flusher thread runs one `db.flush()` at a time.
//! Each flush has a generation number; a writer waits for the generation
//! that had not started when it asked, so the flush it waits for began
//! after its write and covers it. Writers that ask while a flush is under
//! way are all served by the next one: with N concurrent writers, the
//! store pays about one fsync per flush duration instead of N.
//!
//! The writer thread asks for the flush itself, as soon as a batch that
//! needs one is applied, and hands its writers the generation to wait for:
//! they need not wake up first to ask. It also records, for each applied
//! batch, the generation that covers it, so a reader that finds a record
//! the writer stored can tell whether it is on disk yet without writing
//! anything (see [`Flushes::covered`]).
//!
//! `db.flush()` runs on this dedicated thread, never on the async runtime,
//! and sled's `flush_async` is not used: in sled 0.34 it deadlocks when
//! several tasks call it at once (sled issue 1308).

use std::sync::Arc;
use std::thread::JoinHandle;

use parking_lot::{Condvar, Mutex};
use taskforge_core::StoreError;
use tokio::sync::watch;

use crate::error::backend;
use crate::stats::Counters;

/// What the flusher reports after each flush.
#[derive(Debug, Clone, Default)]
struct Flushed {
    /// The generation of the last finished flush.
    generation: u64,
    /// Why that flush failed, if it did.
    error: Option<Arc<str>>,
}

#[derive(Debug, Default)]
struct Requests {
    /// The generation of the next flush to start.
    next: u64,
    /// Whether a writer waits for generation `next`.
    pending: bool,
    /// Whether the store is closing.
    shutdown: bool,
    /// Whether the writer thread is applying a batch now.
    applying: bool,
    /// The generation that covers every batch the writer has applied:
    /// the `next` of when the last one finished.
    applied: u64,
}

#[derive(Debug)]
struct Shared {
    requests: Mutex<Requests>,
    wake: Condvar,
}

/// The handle writers use to wait until their writes are on disk.
#[derive(Debug)]
pub(crate) struct GroupCommit {
    flushes: Flushes,
    thread: Option<JoinHandle<()>>,
}

/// What the writer thread and waiting callers share with the flusher.
#[derive(Debug, Clone)]
pub(crate) struct Flushes {
    shared: Arc<Shared>,
    flushed: watch::Receiver<Flushed>,
}

impl GroupCommit {
    /// Starts the flusher thread of `db`.
    pub(crate) fn start(db: sled::Db, counters: Arc<Counters>) -> std::io::Result<Self> {
        let shared = Arc::new(Shared {
            requests: Mutex::new(Requests {
                next: 1,
                pending: false,
                shutdown: false,
                applying: false,
                applied: 0,
            }),
            wake: Condvar::new(),
        });
        let (sender, flushed) = watch::channel(Flushed::default());
        let thread = std::thread::Builder::new()
            .name("taskforge-sled-flusher".into())
            .spawn({
                let shared = Arc::clone(&shared);
                move || flusher(&db, &shared, &sender, &counters)
            })?;
        Ok(Self {
            flushes: Flushes { shared, flushed },
            thread: Some(thread),
        })
    }

    /// The handle the writer thread and waiting callers use.
    pub(crate) fn flushes(&self) -> &Flushes {
        &self.flushes
    }

    /// Returns once every write made before this call is on disk.
    pub(crate) async fn durable(&self) -> Result<(), StoreError> {
        let generation = {
            let mut requests = self.flushes.shared.requests.lock();
            self.flushes.request(&mut requests);
            requests.next
        };
        self.flushes.wait(generation).await
    }
}

impl Flushes {
    /// Asks for flush `requests.next`, unless it is asked for already.
    fn request(&self, requests: &mut Requests) {
        if !requests.pending {
            requests.pending = true;
            self.shared.wake.notify_one();
        }
    }

    /// The writer thread is about to apply a batch.
    pub(crate) fn applying(&self) {
        self.shared.requests.lock().applying = true;
    }

    /// The writer thread applied a batch; `flush` asks for a flush of it.
    /// Returns the generation of the flush that covers it.
    pub(crate) fn applied(&self, flush: bool) -> u64 {
        let mut requests = self.shared.requests.lock();
        requests.applying = false;
        requests.applied = requests.next;
        if flush {
            self.request(&mut requests);
        }
        requests.next
    }

    /// For a record the writer thread stored and the caller has just read:
    /// `None` if the batch that stored it may still be being applied (its
    /// generation is not known yet), else the generation of the flush that
    /// covers it, asked for if it has not started. Waiting for a flush that
    /// has finished returns at once.
    pub(crate) fn covered(&self) -> Option<u64> {
        let mut requests = self.shared.requests.lock();
        if requests.applying {
            return None;
        }
        let generation = requests.applied;
        if generation == requests.next {
            self.request(&mut requests);
        }
        Some(generation)
    }

    /// Returns once flush `generation` (asked for already) has finished.
    pub(crate) async fn wait(&self, generation: u64) -> Result<(), StoreError> {
        let mut flushed = self.flushed.clone();
        let outcome = flushed
            .wait_for(|f| f.generation >= generation)
            .await
            .map_err(|_| backend("the flusher thread stopped; the store is closed"))?;
        match &outcome.error {
            None => Ok(()),
            Some(reason) => Err(backend(format!("flush failed: {reason}"))),
        }
    }
}

impl Drop for GroupCommit {
    fn drop(&mut self) {
        let shared = &self.flushes.shared;
        shared.requests.lock().shutdown = true;
        shared.wake.notify_one();
        if let Some(thread) = self.thread.take() {
            // The thread flushes once more if anyone waits, then returns.
            let _ = thread.join();
        }
    }
}

fn flusher(db: &sled::Db, shared: &Shared, sender: &watch::Sender<Flushed>, counters: &Counters) {
    loop {
        let generation = {
            let mut requests = shared.requests.lock();
            while !requests.pending && !requests.shutdown {
                shared.wake.wait(&mut requests);
            }
            if !requests.pending {
                return;
            }
            requests.pending = false;
            requests.next += 1;
            requests.next - 1
        };
        counters.flush();
        let error = match db.flush() {
            Ok(_) => None,
            Err(e) => {
                tracing::error!(error = %e, "sled flush failed");
                Some(Arc::from(e.to_string()))
            }
        };
        sender.send_replace(Flushed { generation, error });
    }
}
