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
//! `db.flush()` runs on this dedicated thread, never on the async runtime,
//! and sled's `flush_async` is not used: in sled 0.34 it deadlocks when
//! several tasks call it at once (sled issue 1308).

use std::sync::Arc;
use std::thread::JoinHandle;

use parking_lot::{Condvar, Mutex};
use taskforge_core::StoreError;
use tokio::sync::watch;

use crate::error::backend;

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
}

#[derive(Debug)]
struct Shared {
    requests: Mutex<Requests>,
    wake: Condvar,
}

/// The handle writers use to wait until their writes are on disk.
#[derive(Debug)]
pub(crate) struct GroupCommit {
    shared: Arc<Shared>,
    flushed: watch::Receiver<Flushed>,
    thread: Option<JoinHandle<()>>,
}

impl GroupCommit {
    /// Starts the flusher thread of `db`.
    pub(crate) fn start(db: sled::Db) -> std::io::Result<Self> {
        let shared = Arc::new(Shared {
            requests: Mutex::new(Requests {
                next: 1,
                pending: false,
                shutdown: false,
            }),
            wake: Condvar::new(),
        });
        let (sender, flushed) = watch::channel(Flushed::default());
        let thread = std::thread::Builder::new()
            .name("taskforge-sled-flusher".into())
            .spawn({
                let shared = Arc::clone(&shared);
                move || flusher(&db, &shared, &sender)
            })?;
        Ok(Self {
            shared,
            flushed,
            thread: Some(thread),
        })
    }

    /// Returns once every write made before this call is on disk.
    pub(crate) async fn durable(&self) -> Result<(), StoreError> {
        let generation = {
            let mut requests = self.shared.requests.lock();
            if !requests.pending {
                requests.pending = true;
                self.shared.wake.notify_one();
            }
            requests.next
        };
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
        self.shared.requests.lock().shutdown = true;
        self.shared.wake.notify_one();
        if let Some(thread) = self.thread.take() {
            // The thread flushes once more if anyone waits, then returns.
            let _ = thread.join();
        }
    }
}

fn flusher(db: &sled::Db, shared: &Shared, sender: &watch::Sender<Flushed>) {
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
