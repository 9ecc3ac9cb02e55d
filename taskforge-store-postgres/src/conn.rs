//! One transaction to write in: the store's own (pooled, with cached
//! statements) or a host's.

use async_trait::async_trait;
use tokio_postgres::{Error, Statement, Transaction};

/// A transaction that the store's writes can join.
#[async_trait]
pub(crate) trait Tx: Sync {
    /// The transaction.
    fn tx(&self) -> &Transaction<'_>;

    /// `sql` prepared on its connection.
    async fn prepare(&self, sql: &str) -> Result<Statement, Error>;
}

#[async_trait]
impl Tx for deadpool_postgres::Transaction<'_> {
    fn tx(&self) -> &Transaction<'_> {
        self
    }

    async fn prepare(&self, sql: &str) -> Result<Statement, Error> {
        self.prepare_cached(sql).await
    }
}

#[async_trait]
impl Tx for Transaction<'_> {
    fn tx(&self) -> &Transaction<'_> {
        self
    }

    async fn prepare(&self, sql: &str) -> Result<Statement, Error> {
        Transaction::prepare(self, sql).await
    }
}
