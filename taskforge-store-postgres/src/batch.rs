//! Group commit: the claims, commits and admissions that callers make at
//! the same time go to the server together, as one statement in one
//! transaction, so they share one round trip and one WAL flush.
//!
//! A [`Batcher`] queues requests and runs them in batches on a few lanes
//! (each lane a task on a pooled connection, running one batch at a time).
//! A request that finds a lane free goes out at once, alone: batching adds
//! no wait to a quiet store, and one task hand-off. Under load, the requests that arrive while every lane
//! is busy go out together when the next lane frees up, so batches grow
//! with the load and the server's per-transaction costs (a round trip, a
//! commit record, a flush) are paid once per batch.

use std::collections::VecDeque;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};

use futures::FutureExt;
use tokio::sync::{oneshot, OwnedSemaphorePermit, Semaphore};

type Job<Req, Res> = (Req, oneshot::Sender<Res>);
type Run<Req, Res> =
    dyn Fn(Vec<Req>) -> Pin<Box<dyn Future<Output = Vec<Res>> + Send>> + Send + Sync;

/// Runs requests in batches; see the module docs.
pub(crate) struct Batcher<Req, Res> {
    shared: Arc<Shared<Req, Res>>,
}

struct Shared<Req, Res> {
    queue: Mutex<VecDeque<Job<Req, Res>>>,
    lanes: Arc<Semaphore>,
    max: usize,
    run: Box<Run<Req, Res>>,
    runtime: tokio::runtime::Handle,
}

impl<Req: Send + 'static, Res: Send + 'static> Batcher<Req, Res> {
    /// A batcher that runs at most `lanes` batches at once on `runtime`,
    /// each of at most `max` requests, with `run`, which answers each
    /// request of a batch, in order.
    pub(crate) fn start<F, Fut>(
        runtime: &tokio::runtime::Handle,
        lanes: usize,
        max: usize,
        run: F,
    ) -> Self
    where
        F: Fn(Vec<Req>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Vec<Res>> + Send + 'static,
    {
        Self {
            shared: Arc::new(Shared {
                queue: Mutex::new(VecDeque::new()),
                lanes: Arc::new(Semaphore::new(lanes.max(1))),
                max: max.max(1),
                run: Box::new(move |requests| Box::pin(run(requests))),
                runtime: runtime.clone(),
            }),
        }
    }

    /// Runs `request` in the next batch; `None` if its batch failed to
    /// answer (the task running it panicked).
    pub(crate) async fn call(&self, request: Req) -> Option<Res> {
        let (reply, answer) = oneshot::channel();
        self.shared.push((request, reply));
        // A free lane takes the queue at once, this request first; with
        // every lane busy, the next lane to finish takes it.
        if let Ok(lane) = Arc::clone(&self.shared.lanes).try_acquire_owned() {
            let shared = Arc::clone(&self.shared);
            self.shared.runtime.spawn(shared.drive(lane));
        }
        answer.await.ok()
    }
}

impl<Req: Send + 'static, Res: Send + 'static> Shared<Req, Res> {
    fn push(&self, job: Job<Req, Res>) {
        self.queue
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push_back(job);
    }

    /// Up to `max` queued jobs, oldest first.
    fn take(&self) -> Vec<Job<Req, Res>> {
        let mut queue = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
        let n = queue.len().min(self.max);
        queue.drain(..n).collect()
    }

    /// A lane: runs batches while requests are queued.
    async fn drive(self: Arc<Self>, mut lane: OwnedSemaphorePermit) {
        loop {
            let batch = self.take();
            if batch.is_empty() {
                drop(lane);
                // A request queued after the look above, whose caller found
                // no free lane (this one was still held), is taken here.
                if self
                    .queue
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .is_empty()
                {
                    return;
                }
                match Arc::clone(&self.lanes).try_acquire_owned() {
                    Ok(again) => lane = again,
                    // Another lane is free and running: it will take them.
                    Err(_) => return,
                }
                continue;
            }
            let (requests, replies): (Vec<Req>, Vec<oneshot::Sender<Res>>) =
                batch.into_iter().unzip();
            // A panic fails this batch's callers (their replies are
            // dropped), not the lane: queued requests still go out.
            let Ok(answers) = AssertUnwindSafe((self.run)(requests)).catch_unwind().await else {
                continue;
            };
            for (reply, answer) in replies.into_iter().zip(answers) {
                // The caller may have gone (its future was dropped).
                let _ = reply.send(answer);
            }
        }
    }
}

impl<Req, Res> std::fmt::Debug for Batcher<Req, Res> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batcher").finish_non_exhaustive()
    }
}

/// Why a batch failed.
pub(crate) enum Failure {
    /// The server refused it (it rolled back): nothing was written.
    Refused,
    /// The connection failed: the batch may or may not have been applied.
    Lost(Box<dyn std::error::Error + Send + Sync>),
}

impl From<tokio_postgres::Error> for Failure {
    fn from(error: tokio_postgres::Error) -> Self {
        if error.as_db_error().is_some() {
            tracing::debug!(%error, "a batch was refused; its requests are settled one by one");
            Self::Refused
        } else {
            Self::Lost(Box::new(error))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn answers_each_request_in_order_and_batches_under_load() {
        let sizes = Arc::new(parking_lot_free::Sizes::default());
        let seen = Arc::clone(&sizes);
        let batcher = Arc::new(Batcher::start(
            &tokio::runtime::Handle::current(),
            1,
            64,
            move |requests: Vec<u32>| {
                let seen = Arc::clone(&seen);
                async move {
                    seen.push(requests.len());
                    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                    requests.into_iter().map(|r| r * 2).collect::<Vec<_>>()
                }
            },
        ));
        let calls: Vec<_> = (0..100u32)
            .map(|i| {
                let batcher = Arc::clone(&batcher);
                tokio::spawn(async move { (i, batcher.call(i).await) })
            })
            .collect();
        for call in calls {
            let (i, answer) = call.await.expect("task");
            assert_eq!(answer, Some(i * 2));
        }
        let sizes = sizes.take();
        assert_eq!(sizes.iter().sum::<usize>(), 100);
        assert!(sizes.len() < 100, "{sizes:?}");
        assert!(sizes.iter().all(|&n| n <= 64), "{sizes:?}");
    }

    mod parking_lot_free {
        #[derive(Default)]
        pub(super) struct Sizes(std::sync::Mutex<Vec<usize>>);

        impl Sizes {
            pub(super) fn push(&self, n: usize) {
                self.0.lock().expect("lock").push(n);
            }

            pub(super) fn take(&self) -> Vec<usize> {
                std::mem::take(&mut *self.0.lock().expect("lock"))
            }
        }
    }
}
