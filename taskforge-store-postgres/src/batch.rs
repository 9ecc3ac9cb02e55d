//! Group commit: the claims, commits and admissions that callers make at
//! the same time go to the server together, as one statement in one
//! transaction, so they share one round trip and one WAL flush.
//!
//! A [`Batcher`] queues requests and runs them in batches on a few lanes
//! (each lane a pooled connection running one batch at a time). A request
//! that finds a lane free goes out at once, alone: batching adds no wait
//! to a quiet store. Under load, the requests that arrive while every lane
//! is busy go out together when the next lane frees up, so batches grow
//! with the load and the server's per-transaction costs (a round trip, a
//! commit record, a flush) are paid once per batch.

use std::future::Future;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot, Semaphore};

type Job<Req, Res> = (Req, oneshot::Sender<Res>);

/// Runs requests in batches; see the module docs.
pub(crate) struct Batcher<Req, Res> {
    queue: mpsc::UnboundedSender<Job<Req, Res>>,
}

impl<Req: Send + 'static, Res: Send + 'static> Batcher<Req, Res> {
    /// Starts a batcher on `runtime` that runs at most `lanes` batches at
    /// once, each of at most `max` requests, with `run`, which answers
    /// each request of a batch, in order. The batcher stops when it is
    /// dropped.
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
        let (queue, mut jobs) = mpsc::unbounded_channel::<Job<Req, Res>>();
        let lanes = Arc::new(Semaphore::new(lanes.max(1)));
        let run = Arc::new(run);
        let spawner = runtime.clone();
        runtime.spawn(async move {
            loop {
                // A lane first: while every lane is busy, requests queue up
                // and go out together.
                let Ok(lane) = Arc::clone(&lanes).acquire_owned().await else {
                    return;
                };
                let Some(first) = jobs.recv().await else {
                    return;
                };
                let mut batch = Vec::with_capacity(16);
                batch.push(first);
                while batch.len() < max {
                    match jobs.try_recv() {
                        Ok(job) => batch.push(job),
                        Err(_) => break,
                    }
                }
                let run = Arc::clone(&run);
                spawner.spawn(async move {
                    let (requests, replies): (Vec<Req>, Vec<oneshot::Sender<Res>>) =
                        batch.into_iter().unzip();
                    let answers = run(requests).await;
                    drop(lane);
                    for (reply, answer) in replies.into_iter().zip(answers) {
                        // The caller may have gone (its future was dropped).
                        let _ = reply.send(answer);
                    }
                });
            }
        });
        Self { queue }
    }

    /// Runs `request` in the next batch; `None` if the batcher stopped or
    /// the batch failed to answer (its task panicked).
    pub(crate) async fn call(&self, request: Req) -> Option<Res> {
        let (reply, answer) = oneshot::channel();
        self.queue.send((request, reply)).ok()?;
        answer.await.ok()
    }
}

impl<Req, Res> std::fmt::Debug for Batcher<Req, Res> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batcher").finish_non_exhaustive()
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
