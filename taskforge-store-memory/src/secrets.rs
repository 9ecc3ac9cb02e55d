//! [`SecretStore`] in memory: sealed secrets keyed by `(name, version)`.

use std::collections::BTreeMap;

use async_trait::async_trait;
use taskforge_core::store::{SealedSecret, SecretStore};
use taskforge_core::StoreError;

use crate::MemoryStore;

/// The sealed secrets of one store, by name then version, so one name's
/// versions are one range of the map.
#[derive(Debug, Default)]
pub(crate) struct Secrets {
    by_key: BTreeMap<(String, u32), SealedSecret>,
}

impl Secrets {
    /// Every version of `name`, by version.
    fn versions<'a>(&'a self, name: &str) -> impl DoubleEndedIterator<Item = &'a SealedSecret> {
        self.by_key
            .range((name.to_owned(), 0)..=(name.to_owned(), u32::MAX))
            .map(|(_, secret)| secret)
    }
}

#[async_trait]
impl SecretStore for MemoryStore {
    async fn insert_secret(&self, secret: &SealedSecret) -> Result<(), StoreError> {
        let secret = secret.clone();
        let key = (secret.name.clone(), secret.version);
        let mut secrets = self.inner.secrets.lock();
        if secrets.by_key.contains_key(&key) {
            return Err(StoreError::already_exists(
                "secret",
                format!("{} version {}", secret.name, secret.version),
            ));
        }
        secrets.by_key.insert(key, secret);
        Ok(())
    }

    async fn get_secret(
        &self,
        name: &str,
        version: Option<u32>,
    ) -> Result<Option<SealedSecret>, StoreError> {
        let secrets = self.inner.secrets.lock();
        Ok(match version {
            Some(version) => secrets.by_key.get(&(name.to_owned(), version)).cloned(),
            None => secrets.versions(name).next_back().cloned(),
        })
    }

    async fn list_secret_versions(&self, name: &str) -> Result<Vec<SealedSecret>, StoreError> {
        Ok(self.inner.secrets.lock().versions(name).cloned().collect())
    }

    async fn list_secret_names(&self) -> Result<Vec<String>, StoreError> {
        let secrets = self.inner.secrets.lock();
        let mut names: Vec<String> = Vec::new();
        for (name, _) in secrets.by_key.keys() {
            if names.last() != Some(name) {
                names.push(name.clone());
            }
        }
        Ok(names)
    }

    async fn reseal_secret(
        &self,
        secret: &SealedSecret,
        expected_key_id: &str,
    ) -> Result<(), StoreError> {
        let id = || format!("{} version {}", secret.name, secret.version);
        let mut secrets = self.inner.secrets.lock();
        let stored = secrets
            .by_key
            .get_mut(&(secret.name.clone(), secret.version))
            .ok_or_else(|| StoreError::not_found("secret", id()))?;
        if stored.key_id != expected_key_id {
            return Err(StoreError::conflict(
                "secret",
                id(),
                format!("sealed with key {}, not {expected_key_id}", stored.key_id),
            ));
        }
        stored.key_id.clone_from(&secret.key_id);
        stored.nonce.clone_from(&secret.nonce);
        stored.ciphertext.clone_from(&secret.ciphertext);
        Ok(())
    }

    async fn delete_secret(&self, name: &str) -> Result<usize, StoreError> {
        let mut secrets = self.inner.secrets.lock();
        let versions: Vec<u32> = secrets.versions(name).map(|s| s.version).collect();
        for version in &versions {
            secrets.by_key.remove(&(name.to_owned(), *version));
        }
        Ok(versions.len())
    }
}
