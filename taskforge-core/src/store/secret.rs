//! [`SecretStore`]: where sealed secrets are kept.

use async_trait::async_trait;

use crate::error::store::StoreError;
use crate::secret::SealedSecret;

/// Sealed secrets: every version of every name, as
/// [`SealedSecret`] records keyed by `(name, version)`.
///
/// A store never sees a value or a key: it keeps the records it is given,
/// byte for byte. Sealing, opening, numbering versions and checking names
/// is the [`SecretVault`](crate::secret::SecretVault)'s business.
#[async_trait]
pub trait SecretStore: Send + Sync + 'static {
    /// Stores one version of a secret.
    ///
    /// # Contract
    /// Atomic and durable. `AlreadyExists` if `(name, version)` is taken;
    /// of concurrent inserts of one `(name, version)`, exactly one wins
    /// and the others write nothing. The vault inserts a name's versions
    /// in increasing order (latest + 1), but the store need not check
    /// that: any version not taken is accepted.
    async fn insert_secret(&self, secret: &SealedSecret) -> Result<(), StoreError>;

    /// Version `version` of the secret `name`, or its highest version if
    /// `version` is `None`; `None` if there is no such record.
    ///
    /// # Contract
    /// A point lookup: its cost does not depend on how many secrets or
    /// versions exist (a lookup of the latest version reads one name's
    /// keys at most).
    async fn get_secret(
        &self,
        name: &str,
        version: Option<u32>,
    ) -> Result<Option<SealedSecret>, StoreError>;

    /// Every version of the secret `name`, by version; empty if it has
    /// none.
    async fn list_secret_versions(&self, name: &str) -> Result<Vec<SealedSecret>, StoreError>;

    /// The name of every secret with at least one version, sorted by
    /// bytes, each once.
    async fn list_secret_names(&self) -> Result<Vec<String>, StoreError>;

    /// Replaces the sealed value of a stored version: its `key_id`,
    /// `nonce` and `ciphertext` become `secret`'s, if its `key_id` is
    /// `expected_key_id`. For re-sealing under a new master key.
    ///
    /// # Contract
    /// Atomic and durable compare-and-set on the stored `key_id`:
    /// `Conflict` if it is not `expected_key_id` (another rotation got
    /// there first), and nothing is written. `NotFound` if
    /// `(secret.name, secret.version)` is absent. Nothing else of the
    /// record changes: the stored `created_at` is kept, whatever `secret`
    /// says.
    async fn reseal_secret(
        &self,
        secret: &SealedSecret,
        expected_key_id: &str,
    ) -> Result<(), StoreError>;

    /// Removes every version of the secret `name`, returning how many
    /// there were.
    ///
    /// # Contract
    /// Atomic and durable: afterwards no version of the name is found or
    /// listed, and a new insert may take version 1 again. Idempotent:
    /// removing an absent name removes nothing and returns 0.
    async fn delete_secret(&self, name: &str) -> Result<usize, StoreError>;
}
