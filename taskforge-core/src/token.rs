//! API tokens: the records an HTTP layer authenticates callers with, and
//! the [`TokenStore`] contract every backend implements.
//!
//! A token's secret is shown once, when it is made, and never stored: a
//! store keeps its SHA-256 ([`TokenDigest`]) and a short public prefix that
//! identifies it in listings. Making and parsing the secret itself is the
//! HTTP layer's business; core only knows the digest.

use std::collections::BTreeSet;
use std::fmt;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::error::store::StoreError;
pub use crate::id::TokenId;

/// The SHA-256 of a token's secret: what a store keeps instead of the secret.
///
/// Serialized as 64 lowercase hex digits; `Debug` does not print it.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TokenDigest([u8; 32]);

impl TokenDigest {
    /// The digest of `secret`.
    #[must_use]
    pub fn of(secret: &str) -> Self {
        Self(Sha256::digest(secret.as_bytes()).into())
    }

    /// The digest from its 32 bytes.
    #[must_use]
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// Its 32 bytes, for a backend to key records by.
    #[must_use]
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Whether two digests are equal, compared in constant time.
    #[must_use]
    pub fn ct_eq(&self, other: &Self) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl fmt::Debug for TokenDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenDigest(<redacted>)")
    }
}

impl Serialize for TokenDigest {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(self.0))
    }
}

impl<'de> Deserialize<'de> for TokenDigest {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(&text, &mut bytes)
            .map_err(|_| serde::de::Error::custom("token digest must be 64 hex digits"))?;
        Ok(Self(bytes))
    }
}

/// What a token allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Scope {
    /// Read workflows, versions, triggers, runs and events, and stream updates.
    Read,
    /// Start, cancel and replay runs.
    Run,
    /// Create and change workflows, versions and triggers.
    Manage,
    /// Create, list and revoke tokens.
    Tokens,
}

impl Scope {
    /// Every scope: what an admin token holds.
    pub const ALL: [Self; 4] = [Self::Read, Self::Run, Self::Manage, Self::Tokens];

    /// Its name, as serialized.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Run => "run",
            Self::Manage => "manage",
            Self::Tokens => "tokens",
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A stored API token: everything about it but its secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiToken {
    /// Its id.
    pub id: TokenId,
    /// A label chosen by whoever made it.
    pub name: String,
    /// The first characters of the secret, safe to show, to tell tokens apart.
    pub prefix: String,
    /// The SHA-256 of the secret.
    pub digest: TokenDigest,
    /// What it allows.
    pub scopes: BTreeSet<Scope>,
    /// If set, it reaches only the workflows with these names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workflows: Option<BTreeSet<String>>,
    /// When it was made.
    pub created_at: DateTime<Utc>,
    /// When it stops working, if ever.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
    /// When it was last used, as far as the store knows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_used_at: Option<DateTime<Utc>>,
    /// When it was revoked; a revoked token never works again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<DateTime<Utc>>,
}

impl ApiToken {
    /// Whether it works at `now`: not revoked, not expired.
    #[must_use]
    pub fn is_live(&self, now: DateTime<Utc>) -> bool {
        self.revoked_at.is_none() && self.expires_at.is_none_or(|at| now < at)
    }

    /// Whether it holds `scope`.
    #[must_use]
    pub fn allows(&self, scope: Scope) -> bool {
        self.scopes.contains(&scope)
    }

    /// Whether it reaches the workflow named `name`.
    #[must_use]
    pub fn reaches(&self, name: &str) -> bool {
        self.workflows
            .as_ref()
            .is_none_or(|names| names.contains(name))
    }
}

/// API tokens.
#[async_trait]
pub trait TokenStore: Send + Sync + 'static {
    /// Stores a new token.
    ///
    /// # Contract
    /// Atomic and durable. `AlreadyExists` if the id or the digest is taken.
    async fn insert_token(&self, token: &ApiToken) -> Result<(), StoreError>;

    /// The token with this id.
    ///
    /// # Contract
    /// `NotFound` if absent.
    async fn get_token(&self, id: TokenId) -> Result<ApiToken, StoreError>;

    /// The token whose secret has this digest, if any, revoked or not.
    ///
    /// # Contract
    /// A point lookup: its cost does not depend on how many tokens exist.
    async fn find_token(&self, digest: &TokenDigest) -> Result<Option<ApiToken>, StoreError>;

    /// Every token, revoked ones included, ordered by id.
    async fn list_tokens(&self) -> Result<Vec<ApiToken>, StoreError>;

    /// Revokes a token at `at`, returning it.
    ///
    /// # Contract
    /// Atomic and durable: once it returns, [`find_token`](Self::find_token)
    /// sees `revoked_at`. Revoking a revoked token keeps the first
    /// `revoked_at`. `NotFound` if absent.
    async fn revoke_token(&self, id: TokenId, at: DateTime<Utc>) -> Result<ApiToken, StoreError>;

    /// Records that a token was used at `at`.
    ///
    /// # Contract
    /// Changes nothing but `last_used_at`, and only moves it forward. Need
    /// not be durable: a lost update only makes the token look older.
    /// `NotFound` if absent.
    async fn touch_token(&self, id: TokenId, at: DateTime<Utc>) -> Result<(), StoreError>;
}
