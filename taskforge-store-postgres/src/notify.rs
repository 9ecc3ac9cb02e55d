//! LISTEN/NOTIFY: waking idle engines when another process adds work.
//!
//! Every write that makes a run claimable (a new run, with or without its
//! event; a commit that gives a run back unleased) notifies the store's
//! channel once it committed, so the notification goes out only if the
//! write commits. Writes made in a host's transaction call `pg_notify` in
//! it (PostgreSQL sends it at the host's commit); the store's own batches
//! hand it to a [`Notifier`], which sends it from a transaction of its
//! own, right after: a transaction that notifies holds PostgreSQL's global
//! notification lock through its commit, flush included, so notifying in
//! the batches would make every batch wait for the previous one's flush.
//! One connection per store (opened by the first subscriber) listens and
//! bumps a counter that subscribers watch.

use std::time::Duration;

use futures::StreamExt;
use tokio::sync::{mpsc, watch};
use tokio_postgres::{AsyncMessage, NoTls};

use crate::PostgresStore;

/// A subscription to the store's work notifications, from
/// [`PostgresStore::notifications`].
///
/// Notifications are hints, not messages: several may arrive as one, and
/// while the listening connection is down (a server restart) they are
/// lost. A reconnect counts as a notification, since work may have arrived
/// meanwhile; still, keep a slow poll as a fallback.
#[derive(Debug, Clone)]
pub struct Notifications {
    rx: watch::Receiver<u64>,
}

impl Notifications {
    /// The same subscription as the engine's dispatcher takes it (see
    /// `RunStore::work_signal`).
    #[must_use]
    pub fn into_signal(self) -> taskforge_core::store::WorkSignal {
        taskforge_core::store::WorkSignal::new(self.rx)
    }

    /// Waits until work may have been added since this subscription was
    /// made or this method last returned. Never returns if the listener
    /// stopped (it stops only when the runtime shuts down), so race it with
    /// a poll interval.
    pub async fn notified(&mut self) {
        if self.rx.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

impl PostgresStore {
    /// Subscribes to work notifications: [`Notifications::notified`]
    /// returns when a run was inserted, or given back unfinished, in any
    /// process using this store's schema, after the subscription was made.
    ///
    /// Subscribe before looking for work, so that nothing added in between
    /// is missed:
    ///
    /// ```no_run
    /// # use std::time::Duration;
    /// # use chrono::Utc;
    /// # use taskforge_core::store::RunStore;
    /// # async fn dispatch(store: taskforge_store_postgres::PostgresStore) -> Result<(), taskforge_core::StoreError> {
    /// let mut wakeups = store.notifications();
    /// loop {
    ///     let claimable = store.list_claimable(Utc::now(), 64).await?;
    ///     // ... claim and run them ...
    ///     if claimable.is_empty() {
    ///         // Woken within milliseconds of new work; the timeout is the
    ///         // fallback for a lost notification.
    ///         let _ = tokio::time::timeout(Duration::from_secs(5), wakeups.notified()).await;
    ///     }
    /// }
    /// # }
    /// ```
    ///
    /// The first subscription of a store (and its clones) opens one more
    /// connection, kept until the store and every subscription are dropped.
    #[must_use]
    pub fn notifications(&self) -> Notifications {
        let mut rx = self
            .inner
            .wakeups
            .get_or_init(|| {
                let (tx, rx) = watch::channel(0);
                let config = self.inner.pg_config.clone();
                let channel = self.inner.sql.channel.clone();
                self.inner.runtime.spawn(listen(config, channel, tx));
                rx
            })
            .clone();
        rx.mark_unchanged();
        Notifications { rx }
    }

    /// Waits until work may have been added (see
    /// [`notifications`](Self::notifications)) or `timeout` passes;
    /// `true` if woken by a notification. Work added just before the call
    /// is not seen: a loop should hold a [`Notifications`] instead.
    pub async fn wait_for_work(&self, timeout: Duration) -> bool {
        let mut wakeups = self.notifications();
        tokio::time::timeout(timeout, wakeups.notified())
            .await
            .is_ok()
    }
}

/// Sends the store's notification after writes that committed: one at a
/// time, and one for all the writes that asked while it was being sent.
pub(crate) struct Notifier {
    asks: mpsc::Sender<()>,
}

impl Notifier {
    /// Starts the sender on `runtime`; it stops when the notifier is dropped.
    pub(crate) fn start(
        runtime: &tokio::runtime::Handle,
        pool: deadpool_postgres::Pool,
        channel: String,
    ) -> Self {
        // One ask waits while one is sent: later asks join it.
        let (asks, mut asked) = mpsc::channel(1);
        runtime.spawn(async move {
            while asked.recv().await.is_some() {
                if let Err(error) = send(&pool, &channel).await {
                    // Listeners poll as a fallback; the next write notifies again.
                    tracing::debug!(%error, "sending a work notification failed");
                }
            }
        });
        Self { asks }
    }

    /// Asks for one notification to be sent soon.
    pub(crate) fn wake_others(&self) {
        let _ = self.asks.try_send(());
    }
}

async fn send(
    pool: &deadpool_postgres::Pool,
    channel: &str,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let client = pool.get().await?;
    let statement = client.prepare_cached("SELECT pg_notify($1, '')").await?;
    client.execute(&statement, &[&channel]).await?;
    Ok(())
}

fn wake(tx: &watch::Sender<u64>) {
    tx.send_modify(|n| *n = n.wrapping_add(1));
}

/// Listens on `channel` until every subscriber is gone, reconnecting with
/// a growing pause (100 ms to 5 s) when the connection fails.
async fn listen(config: tokio_postgres::Config, channel: String, tx: watch::Sender<u64>) {
    let mut pause = Duration::from_millis(100);
    loop {
        tokio::select! {
            () = tx.closed() => return,
            result = listen_once(&config, &channel, &tx, &mut pause) => {
                if let Err(error) = result {
                    tracing::warn!(%error, channel, "taskforge notification listener lost its connection");
                }
            }
        }
        tokio::select! {
            () = tx.closed() => return,
            () = tokio::time::sleep(pause) => {}
        }
        pause = (pause * 2).min(Duration::from_secs(5));
    }
}

async fn listen_once(
    config: &tokio_postgres::Config,
    channel: &str,
    tx: &watch::Sender<u64>,
    pause: &mut Duration,
) -> Result<(), tokio_postgres::Error> {
    let (client, mut connection) = config.connect(NoTls).await?;
    let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
    let quoted = format!("\"{}\"", channel.replace('"', "\"\""));
    let sql = format!("LISTEN {quoted}");
    let listen = client.batch_execute(&sql);
    tokio::pin!(listen);
    let mut listening = false;
    loop {
        tokio::select! {
            result = &mut listen, if !listening => {
                result?;
                listening = true;
                *pause = Duration::from_millis(100);
                // Work may have been added while nobody listened.
                wake(tx);
            }
            message = messages.next() => match message {
                Some(Ok(AsyncMessage::Notification(_))) => wake(tx),
                Some(Ok(_)) => {}
                Some(Err(error)) => return Err(error),
                None => return Ok(()),
            },
        }
    }
}
