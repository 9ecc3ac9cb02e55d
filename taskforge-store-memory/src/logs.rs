//! [`LogStore`] in memory: lines by attempt and seq.

use std::collections::BTreeMap;

use async_trait::async_trait;
use taskforge_core::store::{rules, LogQuery, LogStore};
use taskforge_core::{LogLine, Page, StepRunId, StoreError};

use crate::MemoryStore;

/// The log lines of one store, by attempt and seq.
pub(crate) type Logs = BTreeMap<(StepRunId, u32), LogLine>;

#[async_trait]
impl LogStore for MemoryStore {
    async fn append_logs(&self, lines: &[LogLine]) -> Result<(), StoreError> {
        let mut logs = self.inner.logs.lock();
        for line in lines {
            logs.entry((line.step_run_id, line.seq))
                .or_insert_with(|| line.clone());
        }
        Ok(())
    }

    async fn list_logs(&self, query: &LogQuery) -> Result<Page<LogLine, u32>, StoreError> {
        let limit = rules::page_limit(query.limit);
        let from = query.after.map_or(0, |after| after.saturating_add(1));
        let logs = self.inner.logs.lock();
        if query.after == Some(u32::MAX) {
            return Ok(Page::new(Vec::new(), false, |line: &LogLine| line.seq));
        }
        let mut items: Vec<LogLine> = logs
            .range((query.step_run_id, from)..=(query.step_run_id, u32::MAX))
            .map(|(_, line)| line)
            .filter(|line| line.run_id == query.run_id)
            .take(limit + 1)
            .cloned()
            .collect();
        let more = items.len() > limit;
        items.truncate(limit);
        Ok(Page::new(items, more, |line| line.seq))
    }
}
