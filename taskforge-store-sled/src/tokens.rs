//! [`TokenStore`] over sled: a `tokens` tree keyed by token id, and a
//! `token_digests` tree from each secret's SHA-256 to its token's id. No
//! secret is ever written; only digests and public prefixes are.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sled::{Transactional, Tree};
use taskforge_core::store::{ApiToken, TokenDigest, TokenId, TokenStore};
use taskforge_core::StoreError;

use crate::error::{abort, backend, tx_error};
use crate::store::{decode, encode, load, tx_load, SledStore};

const TOKENS: &str = "tokens";
const DIGESTS: &str = "token_digests";

impl SledStore {
    /// The two token trees. Opened by name on use (sled caches open trees),
    /// so the store's opening path needs no change for them.
    fn token_trees(&self) -> Result<(Tree, Tree), StoreError> {
        let db = &self.inner.db;
        Ok((
            db.open_tree(TOKENS).map_err(backend)?,
            db.open_tree(DIGESTS).map_err(backend)?,
        ))
    }

    /// Rewrites one token with `change`, atomically; returns it as stored.
    async fn update_token(
        &self,
        id: TokenId,
        durable: bool,
        change: impl Fn(&mut ApiToken),
    ) -> Result<ApiToken, StoreError> {
        let (tokens, _) = self.token_trees()?;
        let key = id.to_bytes();
        let token = tokens
            .transaction(|tokens| {
                let Some(mut token) = tx_load::<ApiToken>(tokens, "token", &key)? else {
                    return abort(StoreError::not_found("token", id));
                };
                change(&mut token);
                let bytes = encode("token", &token)
                    .map_err(sled::transaction::ConflictableTransactionError::Abort)?;
                tokens.insert(&key, bytes)?;
                Ok(token)
            })
            .map_err(tx_error)?;
        if durable {
            self.durable().await?;
        }
        Ok(token)
    }
}

#[async_trait]
impl TokenStore for SledStore {
    async fn insert_token(&self, token: &ApiToken) -> Result<(), StoreError> {
        let bytes = encode("token", token)?;
        let id = token.id.to_bytes();
        let digest = *token.digest.as_bytes();
        let (tokens, digests) = self.token_trees()?;
        (&tokens, &digests)
            .transaction(|(tokens, digests)| {
                if tokens.get(id)?.is_some() {
                    return abort(StoreError::already_exists("token", token.id));
                }
                if digests.get(digest)?.is_some() {
                    return abort(StoreError::already_exists("token", &token.prefix));
                }
                tokens.insert(&id, bytes.clone())?;
                digests.insert(&digest, &id)?;
                Ok(())
            })
            .map_err(tx_error)?;
        self.durable().await
    }

    async fn get_token(&self, id: TokenId) -> Result<ApiToken, StoreError> {
        let (tokens, _) = self.token_trees()?;
        load(&tokens, "token", &id.to_bytes())?.ok_or_else(|| StoreError::not_found("token", id))
    }

    async fn find_token(&self, digest: &TokenDigest) -> Result<Option<ApiToken>, StoreError> {
        let (tokens, digests) = self.token_trees()?;
        match digests.get(digest.as_bytes()).map_err(backend)? {
            Some(id) => load(&tokens, "token", &id),
            None => Ok(None),
        }
    }

    async fn list_tokens(&self) -> Result<Vec<ApiToken>, StoreError> {
        let (tokens, _) = self.token_trees()?;
        tokio::task::spawn_blocking(move || {
            tokens
                .iter()
                .values()
                .map(|v| decode("token", &v.map_err(backend)?))
                .collect()
        })
        .await
        .map_err(backend)?
    }

    async fn revoke_token(&self, id: TokenId, at: DateTime<Utc>) -> Result<ApiToken, StoreError> {
        self.update_token(id, true, |token| {
            token.revoked_at.get_or_insert(at);
        })
        .await
    }

    async fn touch_token(&self, id: TokenId, at: DateTime<Utc>) -> Result<(), StoreError> {
        self.update_token(id, false, |token| {
            if token.last_used_at.is_none_or(|last| last < at) {
                token.last_used_at = Some(at);
            }
        })
        .await
        .map(drop)
    }
}
