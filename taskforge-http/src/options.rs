//! The settings of [`router`](crate::router), and the state its handlers share.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use taskforge_core::clock::{Clock, SystemClock};
use taskforge_core::Engine;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

/// Settings of the HTTP layer.
#[derive(Clone)]
#[non_exhaustive]
#[must_use]
pub struct HttpOptions {
    /// The largest request body read, in bytes (default 2 MiB). A webhook
    /// trigger's own, usually smaller, limit applies first.
    pub max_body_bytes: usize,
    /// How long a request may take before it is answered 503 (default
    /// 30 s). Server-sent event streams are not cut by it.
    pub request_timeout: Duration,
    /// How many requests are served at once; more get 503 with
    /// `Retry-After` at once instead of queueing (default 1024).
    pub max_concurrent_requests: usize,
    /// The longest `wait` a caller may ask for (default 25 s).
    pub max_wait: Duration,
    /// The `Retry-After` of a 503 (default 1 s).
    pub retry_after: Duration,
    /// The clock token expiry is judged by (default: the system clock).
    /// Tests share a `ManualClock` with the engine.
    pub clock: Arc<dyn Clock>,
    /// Cancelled when the host shuts down: from then on, webhook
    /// deliveries and run starts get 503, and `/readyz` fails.
    pub shutdown: CancellationToken,
    /// Where the inspector web UI is mounted (e.g. `/ui`), if anywhere
    /// (default: nowhere). See [`HttpOptions::ui`].
    pub ui: Option<String>,
}

impl Default for HttpOptions {
    fn default() -> Self {
        Self {
            max_body_bytes: 2 * 1024 * 1024,
            request_timeout: Duration::from_secs(30),
            max_concurrent_requests: 1024,
            max_wait: Duration::from_secs(25),
            retry_after: Duration::from_secs(1),
            clock: Arc::new(SystemClock),
            shutdown: CancellationToken::new(),
            ui: None,
        }
    }
}

impl fmt::Debug for HttpOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpOptions")
            .field("max_body_bytes", &self.max_body_bytes)
            .field("request_timeout", &self.request_timeout)
            .field("max_concurrent_requests", &self.max_concurrent_requests)
            .field("max_wait", &self.max_wait)
            .field("retry_after", &self.retry_after)
            .field("clock", &self.clock)
            .field("shutting_down", &self.shutdown.is_cancelled())
            .field("ui", &self.ui)
            .finish()
    }
}

impl HttpOptions {
    /// The default settings.
    pub fn new() -> Self {
        Self::default()
    }

    /// Reads bodies of at most `bytes`.
    pub fn max_body_bytes(mut self, bytes: usize) -> Self {
        self.max_body_bytes = bytes;
        self
    }

    /// Answers 503 to requests that take longer than `timeout`.
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// Serves at most `n` requests at once (at least 1).
    pub fn max_concurrent_requests(mut self, n: usize) -> Self {
        self.max_concurrent_requests = n.max(1);
        self
    }

    /// Caps the `wait` parameter at `max`.
    pub fn max_wait(mut self, max: Duration) -> Self {
        self.max_wait = max;
        self
    }

    /// Judges token expiry by `clock`.
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// Refuses new work once `token` is cancelled.
    pub fn shutdown(mut self, token: CancellationToken) -> Self {
        self.shutdown = token;
        self
    }

    /// Serves the inspector web UI under `path` (such as `/ui`): pages over
    /// workflows, runs and events behind the same API tokens (read scope
    /// to look, run scope to cancel, retry and replay), with live updates.
    /// The path is normalized to one leading and no trailing slash; it must
    /// not be `/` nor collide with `/api`, `/hooks` or the health routes.
    ///
    /// # Panics
    /// [`router`](crate::router) panics on the mount `/`.
    pub fn ui(mut self, path: impl Into<String>) -> Self {
        self.ui = Some(format!("/{}", path.into().trim_matches('/')));
        self
    }
}

/// What every handler gets: the engine and the settings.
pub(crate) struct Shared<S, X> {
    pub(crate) engine: Engine<S, X>,
    pub(crate) options: HttpOptions,
    pub(crate) permits: Arc<Semaphore>,
}

/// The router's state: a cheap handle on [`Shared`].
pub(crate) struct Ctx<S, X>(pub(crate) Arc<Shared<S, X>>);

impl<S, X> Clone for Ctx<S, X> {
    fn clone(&self) -> Self {
        Self(Arc::clone(&self.0))
    }
}

impl<S, X> std::ops::Deref for Ctx<S, X> {
    type Target = Shared<S, X>;

    fn deref(&self) -> &Shared<S, X> {
        &self.0
    }
}

impl<S, X> Shared<S, X> {
    pub(crate) fn now(&self) -> chrono::DateTime<chrono::Utc> {
        self.options.clock.now()
    }

    /// 503 once the host is shutting down.
    pub(crate) fn refuse_if_draining(&self) -> Result<(), crate::Problem> {
        if self.options.shutdown.is_cancelled() {
            return Err(crate::Problem::unavailable(
                "the server is shutting down",
                self.options.retry_after,
            ));
        }
        Ok(())
    }
}
