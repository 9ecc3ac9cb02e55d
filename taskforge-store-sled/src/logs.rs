//! [`LogStore`] over sled: a `step_logs` tree keyed by run id, step run id
//! and the line's seq (big-endian), so one attempt's lines are one ordered
//! range and a run's lines one prefix (removed with the run by `prune`).

use async_trait::async_trait;
use sled::{IVec, Tree};
use taskforge_core::store::{rules, LogQuery, LogStore};
use taskforge_core::{LogLine, Page, StoreError};

use crate::error::{backend, tx_error};
use crate::store::{decode, encode, SledStore};

const LOGS: &str = "step_logs";

/// The key of a line: run id, step run id, seq.
fn line_key(line: &LogLine) -> [u8; 36] {
    let mut key = [0; 36];
    key[..16].copy_from_slice(&line.run_id.to_bytes());
    key[16..32].copy_from_slice(&line.step_run_id.to_bytes());
    key[32..].copy_from_slice(&line.seq.to_be_bytes());
    key
}

impl SledStore {
    /// The log tree, opened by name on use (sled caches open trees).
    fn log_tree(&self) -> Result<Tree, StoreError> {
        self.inner.db.open_tree(LOGS).map_err(backend)
    }

    /// Removes every log line of `run_id`; for retention, once the run is
    /// gone.
    pub(crate) fn remove_logs(db: &sled::Db, run_id: &[u8]) -> Result<u64, StoreError> {
        let tree = db.open_tree(LOGS).map_err(backend)?;
        let mut batch = sled::Batch::default();
        let mut removed = 0;
        for key in tree.scan_prefix(run_id).keys() {
            batch.remove(key.map_err(backend)?);
            removed += 1;
        }
        tree.apply_batch(batch).map_err(backend)?;
        Ok(removed)
    }
}

#[async_trait]
impl LogStore for SledStore {
    async fn append_logs(&self, lines: &[LogLine]) -> Result<(), StoreError> {
        if lines.is_empty() {
            return Ok(());
        }
        let records = lines
            .iter()
            .map(|line| Ok((line_key(line), encode("log line", line)?)))
            .collect::<Result<Vec<([u8; 36], IVec)>, StoreError>>()?;
        let tree = self.log_tree()?;
        tree.transaction(|tree| {
            for (key, record) in &records {
                if tree.get(&key[..])?.is_none() {
                    tree.insert(&key[..], record.clone())?;
                }
            }
            Ok(())
        })
        .map_err(tx_error)?;
        self.durable().await
    }

    async fn list_logs(&self, query: &LogQuery) -> Result<Page<LogLine, u32>, StoreError> {
        let limit = rules::page_limit(query.limit);
        let Some(from) = query.after.map_or(Some(0), |after| after.checked_add(1)) else {
            return Ok(Page::new(Vec::new(), false, |line: &LogLine| line.seq));
        };
        let mut prefix = [0; 32];
        prefix[..16].copy_from_slice(&query.run_id.to_bytes());
        prefix[16..].copy_from_slice(&query.step_run_id.to_bytes());
        let mut start = [0; 36];
        start[..32].copy_from_slice(&prefix);
        start[32..].copy_from_slice(&from.to_be_bytes());
        let tree = self.log_tree()?;
        tokio::task::spawn_blocking(move || {
            let mut items = Vec::new();
            for entry in tree.range(start..) {
                let (key, value) = entry.map_err(backend)?;
                if !key.starts_with(&prefix) || items.len() > limit {
                    break;
                }
                items.push(decode::<LogLine>("log line", &value)?);
            }
            let more = items.len() > limit;
            items.truncate(limit);
            Ok(Page::new(items, more, |line| line.seq))
        })
        .await
        .map_err(backend)?
    }
}
