//! [`LogStore`]: the lines step attempts log.

use async_trait::async_trait;

use super::Page;
use crate::error::store::StoreError;
use crate::id::{RunId, StepRunId};
use crate::step::LogLine;

/// Which log lines to list: one attempt's, in order, a page at a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogQuery {
    /// The run.
    pub run_id: RunId,
    /// The step attempt.
    pub step_run_id: StepRunId,
    /// Start after this line (the `next` of the previous page).
    pub after: Option<u32>,
    /// The most lines to return, from 1 to [`MAX_PAGE_SIZE`](super::MAX_PAGE_SIZE);
    /// 0 means 100.
    pub limit: usize,
}

impl LogQuery {
    /// The first page of an attempt's log.
    #[must_use]
    pub fn new(run_id: RunId, step_run_id: StepRunId) -> Self {
        Self {
            run_id,
            step_run_id,
            after: None,
            limit: 0,
        }
    }
}

/// Step attempts' logs.
#[async_trait]
pub trait LogStore: Send + Sync + 'static {
    /// Appends lines to step attempts' logs.
    ///
    /// # Contract
    /// Atomic and durable. A line is keyed by its `step_run_id` and `seq`:
    /// a line whose key is stored already is left as it was, so a flush
    /// retried after a lost reply adds nothing. The attempt need not be
    /// stored yet (lines can be written before its record is). Lines are
    /// removed with their run where a backend removes runs.
    async fn append_logs(&self, lines: &[LogLine]) -> Result<(), StoreError>;

    /// A page of one attempt's lines, ordered by `seq`.
    ///
    /// # Contract
    /// Only lines with both `query.run_id` and `query.step_run_id`, with
    /// `seq` greater than `query.after`. An attempt without lines gives an
    /// empty page, not `NotFound`. The limit is read as
    /// [`rules::page_limit`](super::rules::page_limit) says.
    async fn list_logs(&self, query: &LogQuery) -> Result<Page<LogLine, u32>, StoreError>;
}
