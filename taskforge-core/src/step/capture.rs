//! Captures the `tracing` events a step handler emits into its attempt's
//! log, while still handing them to the host's subscriber.
//!
//! While the worker polls a handler's future, it makes [`Capture`] the
//! current `tracing` dispatcher and remembers, in a thread-local, the
//! attempt's log and the dispatcher that was current before (the host's).
//! `Capture` forwards every call to the host's dispatcher, so spans,
//! filters and formatting behave as if it were not there, and it also
//! writes each event at or above the capture level into the log.
//!
//! `Capture` is one dispatcher for the whole process, made once: making a
//! `tracing` dispatcher rebuilds the interest of every callsite, which is
//! too slow to do per attempt. Events of tasks a handler spawns are not
//! captured: they are not polled inside the handler's future.

use std::cell::RefCell;
use std::fmt::{self, Write as _};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::subscriber::Interest;
use tracing::{Dispatch, Event, Metadata, Subscriber};

use super::log::{AttemptLog, LogLevel};

/// What the thread is polling: the attempt's log and the host's dispatcher.
struct Frame {
    log: Arc<AttemptLog>,
    level: LogLevel,
    host: Dispatch,
}

thread_local! {
    static FRAME: RefCell<Option<Frame>> = const { RefCell::new(None) };
}

/// The process-wide capturing dispatcher.
fn capture() -> &'static Dispatch {
    static CAPTURE: OnceLock<Dispatch> = OnceLock::new();
    CAPTURE.get_or_init(|| Dispatch::new(Capture))
}

/// The host's dispatcher of the current frame or, outside a frame (a span
/// made in a handler and dropped after it), the thread's default one.
fn with_host<T>(f: impl FnOnce(&Dispatch) -> T) -> T {
    let host = FRAME.with(|frame| {
        frame
            .try_borrow()
            .ok()
            .and_then(|frame| frame.as_ref().map(|frame| frame.host.clone()))
    });
    match host {
        Some(host) => f(&host),
        None => {
            let mut f = Some(f);
            tracing::dispatcher::get_default(|current| {
                let f = f.take().expect("get_default calls its closure once");
                if current.is::<Capture>() {
                    f(&Dispatch::none())
                } else {
                    f(current)
                }
            })
        }
    }
}

/// A future whose `tracing` events are also written to an attempt's log.
pub(crate) struct Captured<F> {
    inner: Pin<Box<F>>,
    log: Arc<AttemptLog>,
    level: LogLevel,
}

impl<F> Captured<F> {
    pub(crate) fn new(inner: F, log: Arc<AttemptLog>, level: LogLevel) -> Self {
        Self {
            inner: Box::pin(inner),
            log,
            level,
        }
    }
}

impl<F: Future> Future for Captured<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.get_mut();
        let host = tracing::dispatcher::get_default(Dispatch::clone);
        let outer = FRAME.with(|frame| {
            frame.borrow_mut().replace(Frame {
                log: Arc::clone(&this.log),
                level: this.level,
                host,
            })
        });
        let poll = tracing::dispatcher::with_default(capture(), || this.inner.as_mut().poll(cx));
        FRAME.with(|frame| *frame.borrow_mut() = outer);
        poll
    }
}

/// The capturing subscriber; see the module docs.
struct Capture;

impl Capture {
    /// Whether the current frame's log takes an event of this level.
    fn captures(metadata: &Metadata<'_>) -> bool {
        metadata.is_event()
            && FRAME.with(|frame| {
                frame.try_borrow().is_ok_and(|frame| {
                    frame.as_ref().is_some_and(|frame| {
                        LogLevel::from_tracing(*metadata.level()) >= frame.level
                    })
                })
            })
    }
}

impl Subscriber for Capture {
    fn register_callsite(&self, _metadata: &'static Metadata<'static>) -> Interest {
        // Whether a callsite is wanted depends on the frame: ask each time.
        Interest::sometimes()
    }

    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        Self::captures(metadata) || with_host(|host| host.enabled(metadata))
    }

    fn max_level_hint(&self) -> Option<tracing::level_filters::LevelFilter> {
        Some(tracing::level_filters::LevelFilter::TRACE)
    }

    fn new_span(&self, span: &Attributes<'_>) -> Id {
        with_host(|host| host.new_span(span))
    }

    fn record(&self, span: &Id, values: &Record<'_>) {
        with_host(|host| host.record(span, values));
    }

    fn record_follows_from(&self, span: &Id, follows: &Id) {
        with_host(|host| host.record_follows_from(span, follows));
    }

    fn event(&self, event: &Event<'_>) {
        let metadata = event.metadata();
        if Self::captures(metadata) {
            let mut message = MessageVisitor::default();
            event.record(&mut message);
            let log = FRAME.with(|frame| {
                frame
                    .try_borrow()
                    .ok()
                    .and_then(|frame| frame.as_ref().map(|frame| Arc::clone(&frame.log)))
            });
            if let Some(log) = log {
                log.append(LogLevel::from_tracing(*metadata.level()), &message.finish());
            }
        }
        with_host(|host| {
            if host.enabled(metadata) {
                host.event(event);
            }
        });
    }

    fn enter(&self, span: &Id) {
        with_host(|host| host.enter(span));
    }

    fn exit(&self, span: &Id) {
        with_host(|host| host.exit(span));
    }

    fn clone_span(&self, id: &Id) -> Id {
        with_host(|host| host.clone_span(id))
    }

    fn try_close(&self, id: Id) -> bool {
        with_host(|host| host.try_close(id))
    }

    fn current_span(&self) -> tracing_core::span::Current {
        with_host(Dispatch::current_span)
    }
}

/// Formats an event as its message followed by `field=value` pairs.
#[derive(Default)]
struct MessageVisitor {
    message: String,
    fields: String,
}

impl MessageVisitor {
    fn finish(self) -> String {
        match (self.message.is_empty(), self.fields.is_empty()) {
            (_, true) => self.message,
            (true, false) => self.fields,
            (false, false) => format!("{} {}", self.message, self.fields),
        }
    }
}

impl Visit for MessageVisitor {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            self.record_debug(field, &value);
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            if !self.fields.is_empty() {
                self.fields.push(' ');
            }
            let _ = write!(self.fields, "{}={value:?}", field.name());
        }
    }
}
