//! [`TokenStore`] in memory: tokens by id, and an index by digest.

use std::collections::{BTreeMap, HashMap};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use taskforge_core::store::{ApiToken, TokenDigest, TokenId, TokenStore};
use taskforge_core::StoreError;

use crate::MemoryStore;

/// The tokens of one store.
#[derive(Debug, Default)]
pub(crate) struct Tokens {
    by_id: BTreeMap<TokenId, ApiToken>,
    by_digest: HashMap<TokenDigest, TokenId>,
}

impl Tokens {
    fn get_mut(&mut self, id: TokenId) -> Result<&mut ApiToken, StoreError> {
        self.by_id
            .get_mut(&id)
            .ok_or_else(|| StoreError::not_found("token", id))
    }
}

#[async_trait]
impl TokenStore for MemoryStore {
    async fn insert_token(&self, token: &ApiToken) -> Result<(), StoreError> {
        let token = token.clone();
        let mut tokens = self.inner.tokens.lock();
        if tokens.by_id.contains_key(&token.id) {
            return Err(StoreError::already_exists("token", token.id));
        }
        if tokens.by_digest.contains_key(&token.digest) {
            return Err(StoreError::already_exists("token", &token.prefix));
        }
        tokens.by_digest.insert(token.digest, token.id);
        tokens.by_id.insert(token.id, token);
        Ok(())
    }

    async fn get_token(&self, id: TokenId) -> Result<ApiToken, StoreError> {
        self.inner.tokens.lock().get_mut(id).map(|t| t.clone())
    }

    async fn find_token(&self, digest: &TokenDigest) -> Result<Option<ApiToken>, StoreError> {
        let tokens = self.inner.tokens.lock();
        Ok(tokens
            .by_digest
            .get(digest)
            .and_then(|id| tokens.by_id.get(id))
            .cloned())
    }

    async fn list_tokens(&self) -> Result<Vec<ApiToken>, StoreError> {
        Ok(self.inner.tokens.lock().by_id.values().cloned().collect())
    }

    async fn revoke_token(&self, id: TokenId, at: DateTime<Utc>) -> Result<ApiToken, StoreError> {
        let mut tokens = self.inner.tokens.lock();
        let token = tokens.get_mut(id)?;
        token.revoked_at.get_or_insert(at);
        Ok(token.clone())
    }

    async fn touch_token(&self, id: TokenId, at: DateTime<Utc>) -> Result<(), StoreError> {
        let mut tokens = self.inner.tokens.lock();
        let token = tokens.get_mut(id)?;
        if token.last_used_at.is_none_or(|last| last < at) {
            token.last_used_at = Some(at);
        }
        Ok(())
    }
}
