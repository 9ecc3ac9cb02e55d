//! [`SecretVault`]: sealing and opening secrets over a [`SecretStore`].

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{check_value, validate_secret_name, Keyring, SealedSecret, SecretError, SecretValue};
use crate::error::store::StoreError;
use crate::store::SecretStore;

/// How many times [`SecretVault::put`] tries for a version number before
/// it gives up: each try loses only to another writer's new version.
const PUT_TRIES: usize = 32;

/// What a listing says of a secret: never its value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretSummary {
    /// Its name.
    pub name: String,
    /// Its latest version.
    pub version: u32,
    /// When its first version stored was put.
    pub created_at: DateTime<Utc>,
    /// When its latest version was put, if it has more than one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotated_at: Option<DateTime<Utc>>,
    /// The ids of the master keys its versions are sealed with.
    pub key_ids: BTreeSet<String>,
}

impl SecretSummary {
    /// The summary of a secret's versions, `None` if there are none.
    fn of(versions: &[SealedSecret]) -> Option<Self> {
        let first = versions.iter().min_by_key(|s| s.version)?;
        let latest = versions.iter().max_by_key(|s| s.version)?;
        Some(Self {
            name: latest.name.clone(),
            version: latest.version,
            created_at: first.created_at,
            rotated_at: (latest.version > 1).then_some(latest.created_at),
            key_ids: versions.iter().map(|s| s.key_id.clone()).collect(),
        })
    }
}

/// Named, versioned secrets, encrypted at rest: seals values under a
/// [`Keyring`]'s current key and keeps them in a [`SecretStore`].
///
/// Each [`put`](Self::put) stores a new version (1, 2, 3, ...); older
/// versions stay readable by number until the secret is deleted. Values
/// are sealed with XChaCha20-Poly1305 (see the [module docs](super)).
///
/// ```
/// use chrono::Utc;
/// use taskforge_core::secret::{Keyring, MasterKey, SecretVault};
/// use taskforge_store_memory::MemoryStore;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// // A host reads its key with MasterKey::from_env or MasterKey::from_file.
/// let key = MasterKey::generate();
/// let vault = SecretVault::new(MemoryStore::new(), Keyring::new(key));
/// // At start-up: fails if the store holds secrets this keyring cannot open.
/// vault.check().await?;
///
/// assert_eq!(vault.put("github-token", "ghp_first", Utc::now()).await?, 1);
/// assert_eq!(vault.put("github-token", "ghp_second", Utc::now()).await?, 2);
/// assert_eq!(vault.get("github-token").await?.as_str()?, "ghp_second");
/// assert_eq!(vault.get_version("github-token", 1).await?.as_str()?, "ghp_first");
///
/// // Listings never hold values, and neither does Debug.
/// let listed = vault.list().await?;
/// assert_eq!((listed[0].name.as_str(), listed[0].version), ("github-token", 2));
/// let value = vault.get("github-token").await?;
/// assert_eq!(format!("{value:?}"), "SecretValue(<redacted>)");
///
/// // A new master key: the old one opens what it sealed until the
/// // rotation has sealed everything again.
/// let vault = SecretVault::new(
///     vault.store().clone(),
///     Keyring::new(MasterKey::generate()).with_old(vault.keyring().current().clone()),
/// );
/// assert_eq!(vault.rotate_master_key().await?, 2);
/// assert_eq!(vault.get("github-token").await?.as_str()?, "ghp_second");
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct SecretVault<S> {
    store: S,
    keyring: Keyring,
}

impl<S: SecretStore> SecretVault<S> {
    /// A vault over `store`, sealing with `keyring`'s current key.
    #[must_use]
    pub fn new(store: S, keyring: Keyring) -> Self {
        Self { store, keyring }
    }

    /// The store.
    #[must_use]
    pub fn store(&self) -> &S {
        &self.store
    }

    /// The keyring.
    #[must_use]
    pub fn keyring(&self) -> &Keyring {
        &self.keyring
    }

    /// Checks, at start-up, that the keyring opens what the store holds:
    /// every stored version names a key the keyring has, and for each key
    /// named, one record sealed with it opens.
    ///
    /// # Errors
    /// [`SecretError::UnknownKey`] for the first record whose key the
    /// keyring lacks (most often: the wrong master key was given);
    /// [`SecretError::Undecryptable`] if a record does not open with its
    /// key; [`SecretError::Store`] if the store fails.
    pub async fn check(&self) -> Result<(), SecretError> {
        let mut opened = BTreeSet::new();
        for name in self.store.list_secret_names().await? {
            for sealed in self.store.list_secret_versions(&name).await? {
                if self.keyring.get(&sealed.key_id).is_none() {
                    return Err(SecretError::UnknownKey {
                        name: sealed.name,
                        version: sealed.version,
                        key_id: sealed.key_id,
                    });
                }
                if !opened.contains(&sealed.key_id) {
                    sealed.open(&self.keyring)?;
                    opened.insert(sealed.key_id);
                }
            }
        }
        Ok(())
    }

    /// Seals `value` as the next version of `name` (1 for a new name) at
    /// `now`, returning that version.
    ///
    /// Of concurrent puts of one name, each gets its own version: a put
    /// that loses a version number to another tries the next one.
    ///
    /// # Errors
    /// [`SecretError::InvalidName`], [`SecretError::EmptyValue`] or
    /// [`SecretError::TooLarge`] for an invalid name or value;
    /// [`SecretError::Store`] if the store fails, or if other writers kept
    /// taking the next version.
    pub async fn put(
        &self,
        name: &str,
        value: impl AsRef<[u8]>,
        now: DateTime<Utc>,
    ) -> Result<u32, SecretError> {
        let value = value.as_ref();
        validate_secret_name(name)?;
        check_value(name, value)?;
        let mut lost = None;
        for _ in 0..PUT_TRIES {
            let version = match self.store.get_secret(name, None).await? {
                Some(latest) => latest.version.checked_add(1).ok_or_else(|| {
                    StoreError::Invalid(format!("secret {name:?} has no version left"))
                })?,
                None => 1,
            };
            let sealed = SealedSecret::seal(self.keyring.current(), name, version, value, now)?;
            match self.store.insert_secret(&sealed).await {
                Ok(()) => return Ok(version),
                Err(e @ (StoreError::AlreadyExists { .. } | StoreError::Conflict { .. })) => {
                    lost = Some(e);
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(lost
            .unwrap_or_else(|| StoreError::conflict("secret", name, "no version was free"))
            .into())
    }

    /// The latest version of `name`, opened.
    ///
    /// # Errors
    /// [`SecretError::NotFound`] if it has none; [`SecretError::UnknownKey`]
    /// or [`SecretError::Undecryptable`] if it does not open;
    /// [`SecretError::Store`] if the store fails.
    pub async fn get(&self, name: &str) -> Result<SecretValue, SecretError> {
        self.open(name, None).await
    }

    /// Version `version` of `name`, opened.
    ///
    /// # Errors
    /// As for [`get`](Self::get).
    pub async fn get_version(&self, name: &str, version: u32) -> Result<SecretValue, SecretError> {
        self.open(name, Some(version)).await
    }

    async fn open(&self, name: &str, version: Option<u32>) -> Result<SecretValue, SecretError> {
        self.store
            .get_secret(name, version)
            .await?
            .ok_or_else(|| SecretError::NotFound {
                name: name.to_owned(),
                version,
            })?
            .open(&self.keyring)
    }

    /// What the vault holds of `name`, without its value.
    ///
    /// # Errors
    /// [`SecretError::NotFound`] if it has no version;
    /// [`SecretError::Store`] if the store fails.
    pub async fn summary(&self, name: &str) -> Result<SecretSummary, SecretError> {
        let versions = self.store.list_secret_versions(name).await?;
        SecretSummary::of(&versions).ok_or_else(|| SecretError::NotFound {
            name: name.to_owned(),
            version: None,
        })
    }

    /// Every secret, by name, without values.
    ///
    /// # Errors
    /// [`SecretError::Store`] if the store fails.
    pub async fn list(&self) -> Result<Vec<SecretSummary>, SecretError> {
        let mut summaries = BTreeMap::new();
        for name in self.store.list_secret_names().await? {
            let versions = self.store.list_secret_versions(&name).await?;
            // A name deleted since it was listed has no versions left.
            if let Some(summary) = SecretSummary::of(&versions) {
                summaries.insert(name, summary);
            }
        }
        Ok(summaries.into_values().collect())
    }

    /// Deletes every version of `name`.
    ///
    /// # Errors
    /// [`SecretError::NotFound`] if it had none; [`SecretError::Store`] if
    /// the store fails.
    pub async fn delete(&self, name: &str) -> Result<(), SecretError> {
        match self.store.delete_secret(name).await? {
            0 => Err(SecretError::NotFound {
                name: name.to_owned(),
                version: None,
            }),
            _ => Ok(()),
        }
    }

    /// Seals every version sealed under an older key again under the
    /// keyring's current key, in place (same name, version and
    /// `created_at`), returning how many this call re-sealed.
    ///
    /// Each record is replaced by a compare-and-set on its old key id, so
    /// a rotation running at the same time, or a record deleted meanwhile,
    /// is skipped, not overwritten. Records not yet re-sealed stay
    /// readable with the old key throughout; once this returns, the old
    /// key can leave the keyring. If it fails part-way, calling it again
    /// finishes the work.
    ///
    /// # Errors
    /// [`SecretError::UnknownKey`] or [`SecretError::Undecryptable`] for a
    /// record the keyring cannot open (nothing after it is re-sealed);
    /// [`SecretError::Store`] if the store fails.
    pub async fn rotate_master_key(&self) -> Result<usize, SecretError> {
        let current = self.keyring.current().key_id();
        let mut resealed = 0;
        for name in self.store.list_secret_names().await? {
            for sealed in self.store.list_secret_versions(&name).await? {
                if sealed.key_id == current {
                    continue;
                }
                let new = sealed.reseal(&self.keyring)?;
                match self.store.reseal_secret(&new, &sealed.key_id).await {
                    Ok(()) => resealed += 1,
                    Err(e) if e.is_conflict() || e.is_not_found() => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
        Ok(resealed)
    }
}
