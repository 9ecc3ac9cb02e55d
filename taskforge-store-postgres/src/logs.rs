//! [`LogStore`]: step attempts' log lines, one row each.

use async_trait::async_trait;
use taskforge_core::store::{rules, LogQuery, LogStore, StoreError};
use taskforge_core::{LogLine, Page};
use uuid::Uuid;

use crate::codec::to_doc;
use crate::error::backend;
use crate::PostgresStore;

#[async_trait]
impl LogStore for PostgresStore {
    async fn append_logs(&self, lines: &[LogLine]) -> Result<(), StoreError> {
        if lines.is_empty() {
            return Ok(());
        }
        let mut step_run_ids = Vec::with_capacity(lines.len());
        let mut seqs = Vec::with_capacity(lines.len());
        let mut run_ids = Vec::with_capacity(lines.len());
        let mut docs = Vec::with_capacity(lines.len());
        for line in lines {
            step_run_ids.push(*line.step_run_id.as_uuid());
            seqs.push(i64::from(line.seq));
            run_ids.push(*line.run_id.as_uuid());
            docs.push(to_doc(line)?);
        }
        let sql = format!(
            "INSERT INTO {} (step_run_id, seq, run_id, doc)
             SELECT * FROM unnest($1::uuid[], $2::bigint[], $3::uuid[], $4::text[])
             ON CONFLICT DO NOTHING",
            self.inner.sql.logs_table
        );
        let client = self.client().await?;
        let statement = client.prepare_cached(&sql).await.map_err(backend)?;
        client
            .execute(&statement, &[&step_run_ids, &seqs, &run_ids, &docs])
            .await
            .map_err(backend)?;
        Ok(())
    }

    async fn list_logs(&self, query: &LogQuery) -> Result<Page<LogLine, u32>, StoreError> {
        let limit = rules::page_limit(query.limit);
        let sql = format!(
            "SELECT doc FROM {} WHERE step_run_id = $1 AND run_id = $2 AND seq > $3
             ORDER BY seq LIMIT $4",
            self.inner.sql.logs_table
        );
        let after = query.after.map_or(-1, i64::from);
        let step_run_id: &Uuid = query.step_run_id.as_uuid();
        let run_id: &Uuid = query.run_id.as_uuid();
        let mut items: Vec<LogLine> = self
            .fetch_all(&sql, &[step_run_id, run_id, &after, &(limit as i64 + 1)])
            .await?;
        let more = items.len() > limit;
        items.truncate(limit);
        Ok(Page::new(items, more, |line| line.seq))
    }
}
