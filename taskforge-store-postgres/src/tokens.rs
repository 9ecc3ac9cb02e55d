//! [`TokenStore`]: API tokens, by id and by the digest of their secret.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use taskforge_core::store::{ApiToken, StoreError, TokenDigest, TokenId, TokenStore};

use crate::codec::{doc, to_doc};
use crate::error::{backend, unique_violation};
use crate::PostgresStore;

#[async_trait]
impl TokenStore for PostgresStore {
    async fn insert_token(&self, token: &ApiToken) -> Result<(), StoreError> {
        let client = self.client().await?;
        let sql = format!(
            "INSERT INTO {} (id, digest, doc) VALUES ($1, $2, $3)",
            self.inner.sql.tokens_table
        );
        let statement = client.prepare_cached(&sql).await.map_err(backend)?;
        let digest: &[u8] = token.digest.as_bytes();
        match client
            .execute(&statement, &[token.id.as_uuid(), &digest, &to_doc(token)?])
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => Err(match unique_violation(&e) {
                Some("tokens_digest_key") => StoreError::already_exists("token", &token.prefix),
                Some(_) => StoreError::already_exists("token", token.id),
                None => backend(e),
            }),
        }
    }

    async fn get_token(&self, id: TokenId) -> Result<ApiToken, StoreError> {
        let sql = format!(
            "SELECT doc FROM {} WHERE id = $1",
            self.inner.sql.tokens_table
        );
        self.fetch_one(&sql, &[id.as_uuid()])
            .await?
            .ok_or_else(|| StoreError::not_found("token", id))
    }

    async fn find_token(&self, digest: &TokenDigest) -> Result<Option<ApiToken>, StoreError> {
        let sql = format!(
            "SELECT doc FROM {} WHERE digest = $1",
            self.inner.sql.tokens_table
        );
        let digest: &[u8] = digest.as_bytes();
        self.fetch_one(&sql, &[&digest]).await
    }

    async fn list_tokens(&self) -> Result<Vec<ApiToken>, StoreError> {
        let sql = format!(
            "SELECT doc FROM {} ORDER BY id",
            self.inner.sql.tokens_table
        );
        self.fetch_all(&sql, &[]).await
    }

    async fn revoke_token(&self, id: TokenId, at: DateTime<Utc>) -> Result<ApiToken, StoreError> {
        self.update_token(id, |token| {
            token.revoked_at.get_or_insert(at);
        })
        .await
    }

    async fn touch_token(&self, id: TokenId, at: DateTime<Utc>) -> Result<(), StoreError> {
        self.update_token(id, |token| {
            if token.last_used_at.is_none_or(|last| last < at) {
                token.last_used_at = Some(at);
            }
        })
        .await
        .map(drop)
    }
}

impl PostgresStore {
    /// Rewrites a token under its row lock; `NotFound` if absent.
    async fn update_token(
        &self,
        id: TokenId,
        change: impl FnOnce(&mut ApiToken) + Send,
    ) -> Result<ApiToken, StoreError> {
        let table = &self.inner.sql.tokens_table;
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(backend)?;
        let lock = tx
            .prepare_cached(&format!("SELECT doc FROM {table} WHERE id = $1 FOR UPDATE"))
            .await
            .map_err(backend)?;
        let row = tx
            .query_opt(&lock, &[id.as_uuid()])
            .await
            .map_err(backend)?
            .ok_or_else(|| StoreError::not_found("token", id))?;
        let mut token: ApiToken = doc(&row)?;
        change(&mut token);
        let update = tx
            .prepare_cached(&format!("UPDATE {table} SET doc = $2 WHERE id = $1"))
            .await
            .map_err(backend)?;
        tx.execute(&update, &[id.as_uuid(), &to_doc(&token)?])
            .await
            .map_err(backend)?;
        tx.commit().await.map_err(backend)?;
        Ok(token)
    }
}
