//! Step logs on the engine side: the [`LogSink`] the worker's attempt logs
//! write through.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;

use super::shared::Shared;
use super::update::RunUpdate;
use crate::error::StoreError;
use crate::step::{LogLine, LogSink, StepExecutor};
use crate::store::Store;

impl<S: Store, X: StepExecutor> LogSink for Shared<S, X> {
    fn now(&self) -> DateTime<Utc> {
        Shared::now(self)
    }

    fn announce(&self, step_key: &str, attempt: u32, line: &LogLine) {
        self.emit(|| RunUpdate::StepLog {
            step_key: step_key.to_owned(),
            attempt,
            line: line.clone(),
        });
    }

    fn store(self: Arc<Self>, lines: Vec<LogLine>) -> BoxFuture<'static, Result<(), StoreError>> {
        Box::pin(async move { self.store.append_logs(&lines).await })
    }
}
