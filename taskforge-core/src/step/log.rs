//! Step logs: the lines a handler writes with
//! [`StepContext::log`](crate::StepContext::log), or emits as `tracing`
//! events while it runs, kept with the attempt that wrote them.
//!
//! The worker gives each attempt an [`AttemptLog`]. It numbers the lines,
//! caps them (the first lines are kept; one marker line says how many more
//! were dropped), redacts them, announces each one on the engine's update
//! stream, and hands them to the store in batches: at the end of the
//! attempt, when a batch fills, and when the handler asks with
//! [`StepContext::flush_logs`](crate::StepContext::flush_logs). What was
//! flushed survives a crash of the process.

use std::fmt;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use super::redact::Redactor;
use crate::error::store::StoreError;
use crate::id::{RunId, StepRunId};

/// How much a log line matters, as in `tracing`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    /// Very verbose detail.
    Trace,
    /// Detail for debugging.
    Debug,
    /// Normal progress.
    Info,
    /// Something unexpected that the step got past.
    Warn,
    /// Something failed.
    Error,
}

impl LogLevel {
    /// The level's name, lowercase.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Trace => "trace",
            Self::Debug => "debug",
            Self::Info => "info",
            Self::Warn => "warn",
            Self::Error => "error",
        }
    }

    /// The level of a `tracing` event.
    #[must_use]
    pub fn from_tracing(level: tracing::Level) -> Self {
        match level {
            tracing::Level::TRACE => Self::Trace,
            tracing::Level::DEBUG => Self::Debug,
            tracing::Level::INFO => Self::Info,
            tracing::Level::WARN => Self::Warn,
            _ => Self::Error,
        }
    }
}

impl fmt::Display for LogLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// One line of a step attempt's log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLine {
    /// The run.
    pub run_id: RunId,
    /// The step attempt that wrote it.
    pub step_run_id: StepRunId,
    /// Its position in the attempt's log, from 0, without gaps.
    pub seq: u32,
    /// When it was written.
    #[serde(serialize_with = "crate::time_format::serialize")]
    pub at: DateTime<Utc>,
    /// How much it matters.
    pub level: LogLevel,
    /// The text, redacted, at most [`MAX_LOG_LINE_BYTES`] bytes.
    pub message: String,
}

/// The longest log line kept, in bytes; a longer one is cut at a character
/// boundary and ends with [`LINE_CUT_MARKER`].
pub const MAX_LOG_LINE_BYTES: usize = 8 * 1024;

/// Ends a log line that was cut to [`MAX_LOG_LINE_BYTES`].
pub const LINE_CUT_MARKER: &str = " [line cut]";

/// How many lines an attempt's log keeps by default.
pub const DEFAULT_MAX_LOG_LINES: u32 = 10_000;

/// How many bytes of messages an attempt's log keeps by default.
pub const DEFAULT_MAX_LOG_BYTES: usize = 1024 * 1024;

/// Lines buffered before the log flushes by itself.
const FLUSH_BATCH: usize = 256;

/// Where an [`AttemptLog`] gets the time and sends its lines: the engine.
pub(crate) trait LogSink: Send + Sync + 'static {
    /// The time a line is stamped with.
    fn now(&self) -> DateTime<Utc>;

    /// Announces a line as it is written.
    fn announce(&self, step_key: &str, attempt: u32, line: &LogLine);

    /// Writes a batch of lines to the store.
    fn store(self: Arc<Self>, lines: Vec<LogLine>) -> BoxFuture<'static, Result<(), StoreError>>;
}

/// The log of one step attempt while it runs.
pub(crate) struct AttemptLog {
    run_id: RunId,
    step_run_id: StepRunId,
    step_key: String,
    attempt: u32,
    max_lines: u32,
    max_bytes: usize,
    sink: Arc<dyn LogSink>,
    redact: Option<Arc<Redactor>>,
    state: Mutex<LogState>,
    /// Serializes flushes, so batches reach the store in order.
    flushing: tokio::sync::Mutex<()>,
}

#[derive(Default)]
struct LogState {
    /// The next line's seq.
    next_seq: u32,
    /// Bytes of messages kept so far.
    bytes: usize,
    /// Lines kept but not yet flushed.
    buffer: Vec<LogLine>,
    /// Lines dropped over the cap.
    dropped_lines: u64,
    /// Their bytes.
    dropped_bytes: u64,
    /// The truncation marker was written.
    marked: bool,
}

/// What an [`AttemptLog`] is built from.
pub(crate) struct AttemptLogParts {
    pub(crate) run_id: RunId,
    pub(crate) step_run_id: StepRunId,
    pub(crate) step_key: String,
    pub(crate) attempt: u32,
    pub(crate) max_lines: u32,
    pub(crate) max_bytes: usize,
    pub(crate) sink: Arc<dyn LogSink>,
    pub(crate) redact: Option<Arc<Redactor>>,
}

impl AttemptLog {
    pub(crate) fn new(parts: AttemptLogParts) -> Self {
        Self {
            run_id: parts.run_id,
            step_run_id: parts.step_run_id,
            step_key: parts.step_key,
            attempt: parts.attempt,
            // Room for the truncation marker.
            max_lines: parts.max_lines.max(2),
            max_bytes: parts.max_bytes,
            sink: parts.sink,
            redact: parts.redact,
            state: Mutex::new(LogState::default()),
            flushing: tokio::sync::Mutex::new(()),
        }
    }

    /// Keeps a line, unless the cap is reached; returns whether a batch is
    /// full and should be flushed.
    pub(crate) fn write(&self, level: LogLevel, message: &str) -> bool {
        let mut message = match &self.redact {
            Some(redactor) => redactor.redact_str(message).into_owned(),
            None => message.to_owned(),
        };
        cut_line(&mut message);
        let line = {
            let mut state = self.state.lock();
            if state.marked
                || state.next_seq + 1 >= self.max_lines
                || state.bytes + message.len() > self.max_bytes
            {
                state.dropped_lines += 1;
                state.dropped_bytes += message.len() as u64;
                return false;
            }
            let line = self.line(&mut state, level, message);
            state.buffer.push(line.clone());
            line
        };
        self.sink.announce(&self.step_key, self.attempt, &line);
        self.state.lock().buffer.len() >= FLUSH_BATCH
    }

    /// Keeps a line, and flushes in the background when a batch is full
    /// (a failed flush keeps its lines for the next).
    pub(crate) fn append(self: &Arc<Self>, level: LogLevel, message: &str) {
        if self.write(level, message) {
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                let log = Arc::clone(self);
                runtime.spawn(async move {
                    let _ = log.flush(false).await;
                });
            }
        }
    }

    fn line(&self, state: &mut LogState, level: LogLevel, message: String) -> LogLine {
        let seq = state.next_seq;
        state.next_seq += 1;
        state.bytes += message.len();
        LogLine {
            run_id: self.run_id,
            step_run_id: self.step_run_id,
            seq,
            at: self.sink.now(),
            level,
            message,
        }
    }

    /// Writes the buffered lines to the store. With `last`, first adds the
    /// marker line saying how much was dropped over the cap, if anything
    /// was.
    pub(crate) async fn flush(&self, last: bool) -> Result<(), StoreError> {
        let _order = self.flushing.lock().await;
        let batch = {
            let mut state = self.state.lock();
            if last && state.dropped_lines > 0 && !state.marked {
                state.marked = true;
                let message = format!(
                    "log truncated: {} more lines ({} bytes) were dropped over this attempt's cap",
                    state.dropped_lines, state.dropped_bytes
                );
                let line = self.line(&mut state, LogLevel::Warn, message);
                state.buffer.push(line);
            }
            std::mem::take(&mut state.buffer)
        };
        if batch.is_empty() {
            return Ok(());
        }
        let result = Arc::clone(&self.sink).store(batch.clone()).await;
        if result.is_err() {
            // Put them back in front, to go with the next flush.
            let mut state = self.state.lock();
            let later = std::mem::replace(&mut state.buffer, batch);
            state.buffer.extend(later);
        }
        result
    }
}

impl fmt::Debug for AttemptLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AttemptLog")
            .field("step_run_id", &self.step_run_id)
            .finish_non_exhaustive()
    }
}

/// Cuts `message` to [`MAX_LOG_LINE_BYTES`] at a character boundary.
fn cut_line(message: &mut String) {
    if message.len() <= MAX_LOG_LINE_BYTES {
        return;
    }
    let mut end = MAX_LOG_LINE_BYTES - LINE_CUT_MARKER.len();
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    message.truncate(end);
    message.push_str(LINE_CUT_MARKER);
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;

    #[derive(Default)]
    struct Sink {
        stored: Mutex<Vec<LogLine>>,
        failing: AtomicBool,
    }

    impl LogSink for Sink {
        fn now(&self) -> DateTime<Utc> {
            Utc::now()
        }

        fn announce(&self, _step_key: &str, _attempt: u32, _line: &LogLine) {}

        fn store(
            self: Arc<Self>,
            lines: Vec<LogLine>,
        ) -> BoxFuture<'static, Result<(), StoreError>> {
            let result = if self.failing.load(Ordering::SeqCst) {
                Err(StoreError::backend("memory", "down"))
            } else {
                self.stored.lock().extend(lines);
                Ok(())
            };
            Box::pin(async move { result })
        }
    }

    fn log(max_lines: u32, max_bytes: usize, sink: &Arc<Sink>) -> AttemptLog {
        AttemptLog::new(AttemptLogParts {
            run_id: RunId::new(),
            step_run_id: StepRunId::new(),
            step_key: "deploy".into(),
            attempt: 1,
            max_lines,
            max_bytes,
            sink: Arc::clone(sink) as Arc<dyn LogSink>,
            redact: Redactor::new([("PW", b"hunter2".as_slice())]).map(Arc::new),
        })
    }

    #[tokio::test]
    async fn lines_are_numbered_redacted_and_capped_with_a_marker() {
        let sink = Arc::new(Sink::default());
        let log = log(4, usize::MAX, &sink);
        for i in 0..10 {
            log.write(LogLevel::Info, &format!("line {i} hunter2"));
        }
        log.flush(true).await.unwrap();
        let lines = sink.stored.lock().clone();
        let seqs: Vec<u32> = lines.iter().map(|l| l.seq).collect();
        assert_eq!(seqs, [0, 1, 2, 3]);
        assert_eq!(lines[0].message, "line 0 [redacted:PW]");
        assert_eq!(lines[3].level, LogLevel::Warn);
        assert!(
            lines[3].message.contains("7 more lines"),
            "{}",
            lines[3].message
        );
    }

    #[tokio::test]
    async fn the_byte_cap_counts_messages() {
        let sink = Arc::new(Sink::default());
        let log = log(100, 10, &sink);
        log.write(LogLevel::Info, "12345");
        log.write(LogLevel::Info, "12345");
        log.write(LogLevel::Info, "1");
        log.flush(true).await.unwrap();
        let lines = sink.stored.lock().clone();
        assert_eq!(lines.len(), 3);
        assert!(lines[2].message.contains("1 more lines (1 bytes)"));
    }

    #[test]
    fn long_lines_are_cut_at_a_character_boundary() {
        let mut message = "é".repeat(MAX_LOG_LINE_BYTES);
        cut_line(&mut message);
        assert!(message.len() <= MAX_LOG_LINE_BYTES);
        assert!(message.ends_with(LINE_CUT_MARKER));
    }

    #[tokio::test]
    async fn a_failed_flush_keeps_its_lines_for_the_next() {
        let sink = Arc::new(Sink::default());
        let log = log(100, usize::MAX, &sink);
        sink.failing.store(true, Ordering::SeqCst);
        log.write(LogLevel::Info, "a");
        assert!(log.flush(false).await.is_err());
        log.write(LogLevel::Info, "b");
        sink.failing.store(false, Ordering::SeqCst);
        log.flush(true).await.unwrap();
        let messages: Vec<String> = sink
            .stored
            .lock()
            .iter()
            .map(|l| l.message.clone())
            .collect();
        assert_eq!(messages, ["a", "b"]);
    }
}
