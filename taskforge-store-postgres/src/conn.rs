//! Somewhere to write: the store's own pooled connection (with cached
//! statements), its own transaction, or a host's transaction.

use async_trait::async_trait;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Error, Row, Statement, Transaction};

/// A connection or transaction that the store's writes can run on.
#[async_trait]
pub(crate) trait Tx: Sync {
    /// `sql` prepared on its connection.
    async fn prepare(&self, sql: &str) -> Result<Statement, Error>;

    /// Runs `statement`; the number of rows it changed.
    async fn execute(
        &self,
        statement: &Statement,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<u64, Error>;

    /// Runs `statement`; its row, if any.
    async fn query_opt(
        &self,
        statement: &Statement,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Option<Row>, Error>;
}

macro_rules! impl_tx {
    ($ty:ty, $prepare:ident) => {
        #[async_trait]
        impl Tx for $ty {
            async fn prepare(&self, sql: &str) -> Result<Statement, Error> {
                self.$prepare(sql).await
            }

            async fn execute(
                &self,
                statement: &Statement,
                params: &[&(dyn ToSql + Sync)],
            ) -> Result<u64, Error> {
                tokio_postgres::GenericClient::execute(&**self, statement, params).await
            }

            async fn query_opt(
                &self,
                statement: &Statement,
                params: &[&(dyn ToSql + Sync)],
            ) -> Result<Option<Row>, Error> {
                tokio_postgres::GenericClient::query_opt(&**self, statement, params).await
            }
        }
    };
}

impl_tx!(deadpool_postgres::Transaction<'_>, prepare_cached);
impl_tx!(deadpool_postgres::ClientWrapper, prepare_cached);

#[async_trait]
impl Tx for Transaction<'_> {
    async fn prepare(&self, sql: &str) -> Result<Statement, Error> {
        Transaction::prepare(self, sql).await
    }

    async fn execute(
        &self,
        statement: &Statement,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<u64, Error> {
        Transaction::execute(self, statement, params).await
    }

    async fn query_opt(
        &self,
        statement: &Statement,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Option<Row>, Error> {
        Transaction::query_opt(self, statement, params).await
    }
}
