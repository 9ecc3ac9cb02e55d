//! [`SecretStore`] over sled: a `secrets` tree keyed by the name, a NUL
//! byte (which no secret name holds) and the version as 4 big-endian
//! bytes, so one name's versions are one prefix of the tree, in version
//! order. Records are JSON, with the sealed bytes in base64; no value or
//! key is ever written, only what the vault sealed.
//!
//! A new tree leaves the other trees as they were, so it needs no format
//! change: a store of this format without it simply has no secrets.

use async_trait::async_trait;
use sled::transaction::ConflictableTransactionError;
use sled::Tree;
use taskforge_core::store::{SealedSecret, SecretStore};
use taskforge_core::StoreError;

use crate::error::{abort, backend, tx_error};
use crate::store::{decode, encode, load, tx_load, SledStore};

const SECRETS: &str = "secrets";

/// The key of every version of `name`: its bytes and a NUL.
fn prefix(name: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(name.len() + 5);
    key.extend_from_slice(name.as_bytes());
    key.push(0);
    key
}

/// The key of version `version` of `name`.
fn key(name: &str, version: u32) -> Vec<u8> {
    let mut key = prefix(name);
    key.extend_from_slice(&version.to_be_bytes());
    key
}

/// How a record is named in errors.
fn shown(secret: &SealedSecret) -> String {
    format!("{} version {}", secret.name, secret.version)
}

impl SledStore {
    /// The secrets tree. Opened by name on use (sled caches open trees),
    /// so the store's opening path needs no change for it.
    fn secrets_tree(&self) -> Result<Tree, StoreError> {
        self.inner.db.open_tree(SECRETS).map_err(backend)
    }
}

#[async_trait]
impl SecretStore for SledStore {
    async fn insert_secret(&self, secret: &SealedSecret) -> Result<(), StoreError> {
        let bytes = encode("secret", secret)?;
        let tree = self.secrets_tree()?;
        let key = key(&secret.name, secret.version);
        // Insert-if-absent: of racing inserts of one key, exactly one swaps.
        match tree
            .compare_and_swap(&key, None as Option<&[u8]>, Some(bytes))
            .map_err(backend)?
        {
            Ok(()) => self.durable().await,
            Err(_) => Err(StoreError::already_exists("secret", shown(secret))),
        }
    }

    async fn get_secret(
        &self,
        name: &str,
        version: Option<u32>,
    ) -> Result<Option<SealedSecret>, StoreError> {
        let tree = self.secrets_tree()?;
        match version {
            Some(version) => load(&tree, "secret", &key(name, version)),
            None => match tree.scan_prefix(prefix(name)).next_back() {
                Some(entry) => decode("secret", &entry.map_err(backend)?.1).map(Some),
                None => Ok(None),
            },
        }
    }

    async fn list_secret_versions(&self, name: &str) -> Result<Vec<SealedSecret>, StoreError> {
        let tree = self.secrets_tree()?;
        let prefix = prefix(name);
        tokio::task::spawn_blocking(move || {
            tree.scan_prefix(prefix)
                .values()
                .map(|v| decode("secret", &v.map_err(backend)?))
                .collect()
        })
        .await
        .map_err(backend)?
    }

    async fn list_secret_names(&self) -> Result<Vec<String>, StoreError> {
        let tree = self.secrets_tree()?;
        tokio::task::spawn_blocking(move || {
            let mut names: Vec<String> = Vec::new();
            for key in tree.iter().keys() {
                let key = key.map_err(backend)?;
                let end = key.len().checked_sub(5).filter(|&at| key[at] == 0);
                let name = end
                    .and_then(|end| std::str::from_utf8(&key[..end]).ok())
                    .ok_or_else(|| backend("corrupt secret key"))?;
                if names.last().map(String::as_str) != Some(name) {
                    names.push(name.to_owned());
                }
            }
            Ok(names)
        })
        .await
        .map_err(backend)?
    }

    async fn reseal_secret(
        &self,
        secret: &SealedSecret,
        expected_key_id: &str,
    ) -> Result<(), StoreError> {
        let tree = self.secrets_tree()?;
        let key = key(&secret.name, secret.version);
        tree.transaction(|tree| {
            let Some(mut stored) = tx_load::<SealedSecret>(tree, "secret", &key)? else {
                return abort(StoreError::not_found("secret", shown(secret)));
            };
            if stored.key_id != expected_key_id {
                return abort(StoreError::conflict(
                    "secret",
                    shown(secret),
                    format!("sealed with key {}, not {expected_key_id}", stored.key_id),
                ));
            }
            stored.key_id.clone_from(&secret.key_id);
            stored.nonce.clone_from(&secret.nonce);
            stored.ciphertext.clone_from(&secret.ciphertext);
            let bytes = encode("secret", &stored).map_err(ConflictableTransactionError::Abort)?;
            tree.insert(key.as_slice(), bytes)?;
            Ok(())
        })
        .map_err(tx_error)?;
        self.durable().await
    }

    async fn delete_secret(&self, name: &str) -> Result<usize, StoreError> {
        let tree = self.secrets_tree()?;
        let keys = tree
            .scan_prefix(prefix(name))
            .keys()
            .collect::<Result<Vec<_>, _>>()
            .map_err(backend)?;
        if keys.is_empty() {
            return Ok(0);
        }
        // The versions found, removed at once; a version inserted since
        // the scan is ordered after this delete, and stays.
        let removed = tree
            .transaction(|tree| {
                let mut removed = 0;
                for key in &keys {
                    if tree.remove(key)?.is_some() {
                        removed += 1;
                    }
                }
                Ok::<_, ConflictableTransactionError<StoreError>>(removed)
            })
            .map_err(tx_error)?;
        self.durable().await?;
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use taskforge_core::secret::{Keyring, MasterKey, SecretVault};

    use super::*;

    /// Secrets survive a reopen, and the keys keep names that start alike
    /// apart.
    #[tokio::test]
    async fn secrets_survive_a_reopen() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let key = MasterKey::from_bytes([5; 32]);
        let store = SledStore::open(dir.path()).expect("open");
        let vault = SecretVault::new(store, Keyring::new(key.clone()));
        vault
            .put("a", "one", chrono::Utc::now())
            .await
            .expect("put");
        vault
            .put("a", "two", chrono::Utc::now())
            .await
            .expect("put");
        vault
            .put("a/b", "three", chrono::Utc::now())
            .await
            .expect("put");
        let before = vault.store().list_secret_versions("a").await.expect("list");
        drop(vault);

        let store = SledStore::open(dir.path()).expect("reopen");
        assert_eq!(store.list_secret_versions("a").await.expect("list"), before);
        let vault = SecretVault::new(store, Keyring::new(key));
        vault.check().await.expect("check");
        assert_eq!(vault.get("a").await.expect("get").as_str(), Ok("two"));
        assert_eq!(vault.get("a/b").await.expect("get").as_str(), Ok("three"));
        assert_eq!(
            vault.store().list_secret_names().await.expect("names"),
            ["a", "a/b"]
        );
    }

    #[test]
    fn keys_order_by_name_then_version() {
        assert!(key("a", u32::MAX) < key("a-", 0));
        assert!(key("a", 1) < key("a", 256));
        assert!(key("a", 255) < key("a", 256));
        assert!(key("a", 7).starts_with(&prefix("a")));
        assert!(!key("ab", 7).starts_with(&prefix("a")));
    }
}
