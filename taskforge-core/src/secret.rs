//! Secrets at rest: named, versioned values (API keys, webhook signing
//! keys, passwords) that a store keeps only encrypted.
//!
//! - A [`MasterKey`] (32 bytes) encrypts them. The host brings it, from an
//!   environment variable or a file ([`MasterKey::from_env`],
//!   [`MasterKey::from_file`]); the store never sees it. A [`Keyring`]
//!   holds the current key and older ones, so that records sealed before a
//!   change of key stay readable until [`SecretVault::rotate_master_key`]
//!   has sealed them again under the current one.
//! - A [`SealedSecret`] is what a store keeps: the name, the version, the
//!   id of the key that sealed it, a nonce and the ciphertext.
//! - A [`SecretVault`] seals and opens them over any
//!   [`SecretStore`](crate::store::SecretStore): it is what a host uses.
//!
//! # Cryptography
//!
//! Each value is sealed with XChaCha20-Poly1305 (RustCrypto's
//! `chacha20poly1305`) under the master key, with a fresh 24-byte nonce
//! drawn from the operating system's random source. At 192 bits, nonces
//! drawn at random never repeat in practice, however many values a key
//! seals (a 96-bit nonce, as in AES-GCM or plain ChaCha20-Poly1305, would
//! need a counter or a bound on the number of values). The associated
//! data binds the ciphertext to its record's identity (a domain prefix,
//! the name and the version), so a ciphertext copied into another record
//! does not open. Poly1305's tag makes any change of the nonce, the
//! ciphertext or the tag an error ([`SecretError::Undecryptable`]), never
//! a wrong value.
//!
//! A key's id ([`MasterKey::key_id`]) is the first 8 bytes of a SHA-256
//! over a domain prefix and the key, in hex: it tells keys apart and
//! reveals nothing useful about them. Keys and opened values are zeroed
//! when dropped, and their `Debug` prints no byte of them.

mod vault;

pub use crate::step::redaction_marker;
use std::fmt;
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use base64::Engine as _;
use chacha20poly1305::aead::rand_core::RngCore;
use chacha20poly1305::aead::{Aead, OsRng, Payload};
use chacha20poly1305::{Key, KeyInit, XChaCha20Poly1305, XNonce};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::error::store::StoreError;
use crate::workflow::{NameError, MAX_NAME_LEN};

pub use vault::{SecretSummary, SecretVault};

/// The largest secret value, in bytes.
pub const MAX_SECRET_BYTES: usize = 64 * 1024;

/// The length of a nonce: XChaCha20-Poly1305's 192 bits.
pub const NONCE_LEN: usize = 24;

/// What precedes the key in the hash a key id is taken from.
const KEY_ID_DOMAIN: &[u8] = b"taskforge secret master key id v1\0";

/// What precedes a record's identity in its associated data.
const AAD_DOMAIN: &[u8] = b"taskforge secret v1\0";

/// A master key: 32 bytes that seal and open secrets.
///
/// Zeroed when dropped. `Debug` shows its [`key_id`](Self::key_id) only.
#[derive(Clone)]
pub struct MasterKey {
    bytes: Zeroizing<[u8; 32]>,
    id: String,
}

impl MasterKey {
    /// The key made of these bytes.
    #[must_use]
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        let bytes = Zeroizing::new(bytes);
        let mut hash = Sha256::new();
        hash.update(KEY_ID_DOMAIN);
        hash.update(bytes.as_slice());
        let id = hex::encode(&hash.finalize()[..8]);
        Self { bytes, id }
    }

    /// A new random key, from the operating system's random source.
    ///
    /// # Panics
    /// If the operating system has no random source to read.
    #[must_use]
    pub fn generate() -> Self {
        let mut bytes = Zeroizing::new([0u8; 32]);
        OsRng.fill_bytes(bytes.as_mut_slice());
        Self::from_bytes(*bytes)
    }

    /// Reads a key from `text`: 32 raw bytes, or, once whitespace around
    /// it is trimmed, 64 hex digits or the base64 (standard or URL-safe,
    /// padded or not) of 32 bytes. `origin` names where it came from in
    /// the error.
    fn parse(text: &[u8], origin: String) -> Result<Self, MasterKeyError> {
        let trimmed = text.trim_ascii();
        if trimmed.len() == 64 && trimmed.iter().all(u8::is_ascii_hexdigit) {
            let mut bytes = Zeroizing::new([0u8; 32]);
            if hex::decode_to_slice(trimmed, bytes.as_mut_slice()).is_ok() {
                return Ok(Self::from_bytes(*bytes));
            }
        }
        if matches!(trimmed.len(), 43 | 44) {
            for engine in [&STANDARD, &STANDARD_NO_PAD, &URL_SAFE, &URL_SAFE_NO_PAD] {
                let mut bytes = Zeroizing::new([0u8; 33]);
                if let Ok(32) = engine.decode_slice(trimmed, bytes.as_mut_slice()) {
                    let mut key = Zeroizing::new([0u8; 32]);
                    key.copy_from_slice(&bytes[..32]);
                    return Ok(Self::from_bytes(*key));
                }
            }
        }
        if let Ok(raw) = <[u8; 32]>::try_from(text) {
            return Ok(Self::from_bytes(raw));
        }
        Err(MasterKeyError::Format {
            origin,
            found: text.len(),
        })
    }

    /// Reads a key from the environment variable `var`: 64 hex digits or
    /// the base64 of 32 bytes (whitespace around it is ignored), or 32
    /// raw bytes.
    ///
    /// # Errors
    /// [`MasterKeyError::MissingVar`] if it is unset,
    /// [`MasterKeyError::Format`] if it holds anything else (the message
    /// says what was expected, and never shows the value).
    pub fn from_env(var: &str) -> Result<Self, MasterKeyError> {
        let value = std::env::var_os(var).ok_or_else(|| MasterKeyError::MissingVar {
            var: var.to_owned(),
        })?;
        let bytes = Zeroizing::new(value.into_encoded_bytes());
        Self::parse(&bytes, format!("environment variable {var}"))
    }

    /// Reads a key from the file at `path`: 32 raw bytes, or 64 hex
    /// digits or the base64 of 32 bytes (whitespace around it, such as a
    /// final newline, is ignored).
    ///
    /// # Errors
    /// [`MasterKeyError::Read`] if the file cannot be read,
    /// [`MasterKeyError::Format`] if it holds anything else (the message
    /// says what was expected, and never shows the content).
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, MasterKeyError> {
        let path = path.as_ref();
        let bytes = Zeroizing::new(std::fs::read(path).map_err(|source| MasterKeyError::Read {
            path: path.to_owned(),
            source,
        })?);
        Self::parse(&bytes, format!("file {}", path.display()))
    }

    /// The key as base64 (standard alphabet, padded), which
    /// [`from_env`](Self::from_env) and [`from_file`](Self::from_file)
    /// read back: for a tool that makes keys. The string holds the key:
    /// treat it as the key itself.
    #[must_use]
    pub fn to_base64(&self) -> String {
        STANDARD.encode(self.bytes.as_slice())
    }

    /// A short, stable id of the key (16 hex digits), stored with each
    /// record it seals: it tells which key opens a record, and reveals
    /// nothing useful about the key.
    #[must_use]
    pub fn key_id(&self) -> &str {
        &self.id
    }

    fn cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new(Key::from_slice(self.bytes.as_slice()))
    }
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MasterKey")
            .field("key_id", &self.id)
            .finish_non_exhaustive()
    }
}

/// Why a master key could not be read.
///
/// No message shows the key, or what was found in its place.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MasterKeyError {
    /// The environment variable is not set.
    #[error("the master key variable {var} is not set")]
    MissingVar {
        /// The variable.
        var: String,
    },
    /// The key file could not be read.
    #[error("cannot read the master key file {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// What was read is not a key.
    #[error(
        "the master key from {origin} is not a key: expected 32 raw bytes, 64 hex digits \
         or the base64 of 32 bytes, found {found} bytes of something else"
    )]
    Format {
        /// Where it was read from (`file ...`, `environment variable ...`).
        origin: String,
        /// How many bytes were read.
        found: usize,
    },
}

/// The current master key, which seals, and older ones, which still open
/// what they sealed.
///
/// `Debug` shows the key ids only.
#[derive(Clone)]
pub struct Keyring {
    current: MasterKey,
    old: Vec<MasterKey>,
}

impl From<MasterKey> for Keyring {
    fn from(current: MasterKey) -> Self {
        Self::new(current)
    }
}

impl Keyring {
    /// A keyring whose current key is `current`.
    #[must_use]
    pub fn new(current: MasterKey) -> Self {
        Self {
            current,
            old: Vec::new(),
        }
    }

    /// Adds an older key, which opens records it sealed but seals nothing.
    /// A key the keyring holds already is not added twice.
    #[must_use]
    pub fn with_old(mut self, key: MasterKey) -> Self {
        if self.get(key.key_id()).is_none() {
            self.old.push(key);
        }
        self
    }

    /// The key that seals.
    #[must_use]
    pub fn current(&self) -> &MasterKey {
        &self.current
    }

    /// The key with this id, current or old.
    #[must_use]
    pub fn get(&self, key_id: &str) -> Option<&MasterKey> {
        std::iter::once(&self.current)
            .chain(&self.old)
            .find(|key| key.key_id() == key_id)
    }

    /// The ids of every key, the current one first.
    pub fn key_ids(&self) -> impl Iterator<Item = &str> {
        std::iter::once(&self.current)
            .chain(&self.old)
            .map(MasterKey::key_id)
    }
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyring")
            .field("current", &self.current.key_id())
            .field(
                "old",
                &self.old.iter().map(MasterKey::key_id).collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// A secret as a store keeps it: one version of one name, encrypted.
///
/// Made by [`seal`](Self::seal) and read by [`open`](Self::open); a store
/// keeps it as it is. `nonce` and `ciphertext` are serialized as base64.
/// `Debug` shows their lengths only.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedSecret {
    /// The secret's name (see [`validate_secret_name`]).
    pub name: String,
    /// 1, 2, 3, ... in the order values were put.
    pub version: u32,
    /// The id of the master key that sealed it ([`MasterKey::key_id`]).
    pub key_id: String,
    /// The XChaCha20-Poly1305 nonce: [`NONCE_LEN`] random bytes.
    #[serde(with = "base64_bytes")]
    pub nonce: Vec<u8>,
    /// The encrypted value followed by its 16-byte Poly1305 tag.
    #[serde(with = "base64_bytes")]
    pub ciphertext: Vec<u8>,
    /// When this version was put.
    pub created_at: DateTime<Utc>,
}

mod base64_bytes {
    use base64::engine::general_purpose::STANDARD;
    use base64::Engine as _;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(bytes))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        STANDARD.decode(text).map_err(serde::de::Error::custom)
    }
}

impl SealedSecret {
    /// Seals `value` as version `version` of `name` under `key`, with a
    /// fresh random nonce.
    ///
    /// # Errors
    /// [`SecretError::InvalidName`] if the name is invalid (see
    /// [`validate_secret_name`]); [`SecretError::EmptyValue`] or
    /// [`SecretError::TooLarge`] unless the value has 1 to
    /// [`MAX_SECRET_BYTES`] bytes.
    pub fn seal(
        key: &MasterKey,
        name: &str,
        version: u32,
        value: &[u8],
        created_at: DateTime<Utc>,
    ) -> Result<Self, SecretError> {
        validate_secret_name(name)?;
        check_value(name, value)?;
        let mut nonce = XNonce::default();
        OsRng.fill_bytes(&mut nonce);
        let aad = associated_data(name, version);
        let ciphertext = key
            .cipher()
            .encrypt(
                &nonce,
                Payload {
                    msg: value,
                    aad: &aad,
                },
            )
            .map_err(|_| SecretError::Undecryptable {
                name: name.to_owned(),
                version,
                key_id: key.key_id().to_owned(),
            })?;
        Ok(Self {
            name: name.to_owned(),
            version,
            key_id: key.key_id().to_owned(),
            nonce: nonce.to_vec(),
            ciphertext,
            created_at,
        })
    }

    /// Opens it with the key of `keyring` that sealed it.
    ///
    /// # Errors
    /// [`SecretError::UnknownKey`] if the keyring lacks that key;
    /// [`SecretError::Undecryptable`] if the record was changed (nonce,
    /// ciphertext, tag, name or version) since it was sealed.
    pub fn open(&self, keyring: &Keyring) -> Result<SecretValue, SecretError> {
        let key = keyring
            .get(&self.key_id)
            .ok_or_else(|| SecretError::UnknownKey {
                name: self.name.clone(),
                version: self.version,
                key_id: self.key_id.clone(),
            })?;
        self.open_with(key)
    }

    /// Opens it with `key`.
    ///
    /// # Errors
    /// [`SecretError::UnknownKey`] if `key` is not the key that sealed it;
    /// [`SecretError::Undecryptable`] as for [`open`](Self::open).
    pub fn open_with(&self, key: &MasterKey) -> Result<SecretValue, SecretError> {
        if key.key_id() != self.key_id {
            return Err(SecretError::UnknownKey {
                name: self.name.clone(),
                version: self.version,
                key_id: self.key_id.clone(),
            });
        }
        let undecryptable = || SecretError::Undecryptable {
            name: self.name.clone(),
            version: self.version,
            key_id: self.key_id.clone(),
        };
        if self.nonce.len() != NONCE_LEN {
            return Err(undecryptable());
        }
        let aad = associated_data(&self.name, self.version);
        let value = key
            .cipher()
            .decrypt(
                XNonce::from_slice(&self.nonce),
                Payload {
                    msg: &self.ciphertext,
                    aad: &aad,
                },
            )
            .map_err(|_| undecryptable())?;
        Ok(SecretValue::new(value))
    }

    /// The same record sealed again under `keyring`'s current key, with a
    /// fresh nonce: same name, version and `created_at`.
    ///
    /// # Errors
    /// As for [`open`](Self::open).
    pub fn reseal(&self, keyring: &Keyring) -> Result<Self, SecretError> {
        let value = self.open(keyring)?;
        Self::seal(
            keyring.current(),
            &self.name,
            self.version,
            value.expose(),
            self.created_at,
        )
    }
}

impl fmt::Debug for SealedSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SealedSecret")
            .field("name", &self.name)
            .field("version", &self.version)
            .field("key_id", &self.key_id)
            .field("nonce_len", &self.nonce.len())
            .field("ciphertext_len", &self.ciphertext.len())
            .field("created_at", &self.created_at)
            .finish()
    }
}

/// The associated data of a record: the domain prefix, the name, a NUL
/// (which no name holds) and the version, big-endian.
fn associated_data(name: &str, version: u32) -> Vec<u8> {
    let mut aad = Vec::with_capacity(AAD_DOMAIN.len() + name.len() + 5);
    aad.extend_from_slice(AAD_DOMAIN);
    aad.extend_from_slice(name.as_bytes());
    aad.push(0);
    aad.extend_from_slice(&version.to_be_bytes());
    aad
}

fn check_value(name: &str, value: &[u8]) -> Result<(), SecretError> {
    if value.is_empty() {
        return Err(SecretError::EmptyValue {
            name: name.to_owned(),
        });
    }
    if value.len() > MAX_SECRET_BYTES {
        return Err(SecretError::TooLarge {
            name: name.to_owned(),
            size: value.len(),
            max: MAX_SECRET_BYTES,
        });
    }
    Ok(())
}

/// Checks a secret's name: 1 to [`MAX_NAME_LEN`] bytes of
/// `[A-Za-z0-9_.-/]`, where `/` separates non-empty parts other than `.`
/// and `..` (so `trigger/<id>/signing` is a name, `/a`, `a//b` and
/// `a/../b` are not).
///
/// # Errors
/// A [`NameError`] of kind `secret` saying what is wrong.
pub fn validate_secret_name(name: &str) -> Result<(), NameError> {
    let invalid = |reason: String| NameError {
        kind: "secret",
        name: name.to_owned(),
        reason,
    };
    if name.is_empty() {
        return Err(invalid("must not be empty".into()));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(invalid(format!("longer than {MAX_NAME_LEN} bytes")));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '/')))
    {
        return Err(invalid(format!(
            "character {c:?} is not one of [A-Za-z0-9_.-/]"
        )));
    }
    if name
        .split('/')
        .any(|part| part.is_empty() || part == "." || part == "..")
    {
        return Err(invalid(
            "'/' must separate non-empty parts other than '.' and '..'".into(),
        ));
    }
    Ok(())
}

/// An opened secret value.
///
/// Zeroed when dropped; `Debug` prints no byte of it. Read it with
/// [`expose`](Self::expose) or [`as_str`](Self::as_str), as late as
/// possible.
#[derive(Clone)]
pub struct SecretValue(Zeroizing<Vec<u8>>);

impl SecretValue {
    /// A value of these bytes.
    #[must_use]
    pub fn new(bytes: impl Into<Vec<u8>>) -> Self {
        Self(Zeroizing::new(bytes.into()))
    }

    /// The bytes.
    #[must_use]
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    /// The bytes as text.
    ///
    /// # Errors
    /// If they are not UTF-8.
    pub fn as_str(&self) -> Result<&str, std::str::Utf8Error> {
        std::str::from_utf8(&self.0)
    }

    /// How many bytes it has.
    #[must_use]
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether it has no byte.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretValue(<redacted>)")
    }
}

/// Why a secret could not be sealed, opened, stored or found.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SecretError {
    /// The record was sealed with a master key the keyring does not hold.
    #[error(
        "secret {name:?} version {version} is sealed with master key {key_id}, which the \
         keyring does not hold (wrong master key?)"
    )]
    UnknownKey {
        /// The secret's name.
        name: String,
        /// Its version.
        version: u32,
        /// The id of the key that sealed it.
        key_id: String,
    },
    /// The record does not open with the key that sealed it: its nonce,
    /// ciphertext or tag was changed, or it was copied from another name
    /// or version.
    #[error(
        "secret {name:?} version {version} does not open with master key {key_id}: \
         the record was tampered with or moved"
    )]
    Undecryptable {
        /// The secret's name.
        name: String,
        /// Its version.
        version: u32,
        /// The id of the key it names.
        key_id: String,
    },
    /// The name is invalid (see [`validate_secret_name`]).
    #[error(transparent)]
    InvalidName(#[from] NameError),
    /// The value is empty.
    #[error("the value of secret {name:?} is empty")]
    EmptyValue {
        /// The secret's name.
        name: String,
    },
    /// The value is larger than [`MAX_SECRET_BYTES`].
    #[error("the value of secret {name:?} has {size} bytes, more than the {max} allowed")]
    TooLarge {
        /// The secret's name.
        name: String,
        /// The value's size, in bytes.
        size: usize,
        /// The most allowed.
        max: usize,
    },
    /// No such secret, or no such version of it.
    #[error(
        "secret {name:?}{} not found",
        .version.map_or_else(String::new, |v| format!(" version {v}"))
    )]
    NotFound {
        /// The name asked for.
        name: String,
        /// The version asked for, if one was.
        version: Option<u32>,
    },
    /// The store failed or refused.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl SecretError {
    /// Whether this is a [`SecretError::NotFound`].
    #[must_use]
    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::NotFound { .. })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};
    use std::sync::Arc;

    use async_trait::async_trait;
    use parking_lot::Mutex;

    use super::*;
    use crate::store::SecretStore;

    /// A bare [`SecretStore`] for the vault's tests (the memory store's
    /// impl is of another build of this crate, so it cannot be used here).
    #[derive(Debug, Clone, Default)]
    struct TestStore(Arc<Mutex<BTreeMap<(String, u32), SealedSecret>>>);

    impl TestStore {
        fn record(&self, name: &str, version: u32) -> SealedSecret {
            self.0.lock()[&(name.to_owned(), version)].clone()
        }

        fn replace(&self, secret: SealedSecret) {
            self.0
                .lock()
                .insert((secret.name.clone(), secret.version), secret);
        }
    }

    #[async_trait]
    impl SecretStore for TestStore {
        async fn insert_secret(&self, secret: &SealedSecret) -> Result<(), StoreError> {
            let mut map = self.0.lock();
            let key = (secret.name.clone(), secret.version);
            if map.contains_key(&key) {
                return Err(StoreError::already_exists("secret", &secret.name));
            }
            map.insert(key, secret.clone());
            Ok(())
        }

        async fn get_secret(
            &self,
            name: &str,
            version: Option<u32>,
        ) -> Result<Option<SealedSecret>, StoreError> {
            let map = self.0.lock();
            let mut versions = map
                .range((name.to_owned(), 0)..=(name.to_owned(), u32::MAX))
                .map(|(_, s)| s);
            Ok(match version {
                Some(v) => versions.find(|s| s.version == v).cloned(),
                None => versions.next_back().cloned(),
            })
        }

        async fn list_secret_versions(&self, name: &str) -> Result<Vec<SealedSecret>, StoreError> {
            let map = self.0.lock();
            Ok(map
                .range((name.to_owned(), 0)..=(name.to_owned(), u32::MAX))
                .map(|(_, s)| s.clone())
                .collect())
        }

        async fn list_secret_names(&self) -> Result<Vec<String>, StoreError> {
            let mut names: Vec<_> = self.0.lock().keys().map(|(n, _)| n.clone()).collect();
            names.dedup();
            Ok(names)
        }

        async fn reseal_secret(
            &self,
            secret: &SealedSecret,
            expected_key_id: &str,
        ) -> Result<(), StoreError> {
            let mut map = self.0.lock();
            let stored = map
                .get_mut(&(secret.name.clone(), secret.version))
                .ok_or_else(|| StoreError::not_found("secret", &secret.name))?;
            if stored.key_id != expected_key_id {
                return Err(StoreError::conflict("secret", &secret.name, "key id"));
            }
            stored.key_id.clone_from(&secret.key_id);
            stored.nonce.clone_from(&secret.nonce);
            stored.ciphertext.clone_from(&secret.ciphertext);
            Ok(())
        }

        async fn delete_secret(&self, name: &str) -> Result<usize, StoreError> {
            let mut map = self.0.lock();
            let before = map.len();
            map.retain(|(n, _), _| n != name);
            Ok(before - map.len())
        }
    }

    fn t0() -> DateTime<Utc> {
        DateTime::from_timestamp(1_704_067_200, 0).expect("a valid timestamp")
    }

    fn key(byte: u8) -> MasterKey {
        MasterKey::from_bytes([byte; 32])
    }

    fn vault(keyring: Keyring) -> SecretVault<TestStore> {
        SecretVault::new(TestStore::default(), keyring)
    }

    #[track_caller]
    fn assert_undecryptable<T: fmt::Debug>(result: Result<T, SecretError>) {
        assert!(
            matches!(result, Err(SecretError::Undecryptable { .. })),
            "expected undecryptable, got {result:?}"
        );
    }

    #[test]
    fn seal_and_open_round_trip() {
        let key = MasterKey::generate();
        let keyring = Keyring::new(key.clone());
        let sealed = SealedSecret::seal(&key, "api.key", 3, b"hunter2", t0()).expect("seal");
        assert_eq!(sealed.key_id, key.key_id());
        assert_eq!(sealed.nonce.len(), NONCE_LEN);
        assert_eq!(sealed.ciphertext.len(), b"hunter2".len() + 16);
        assert_ne!(&sealed.ciphertext[..7], b"hunter2");
        assert_eq!(sealed.open(&keyring).expect("open").expose(), b"hunter2");
        // Each seal draws its own nonce.
        let again = SealedSecret::seal(&key, "api.key", 3, b"hunter2", t0()).expect("seal");
        assert_ne!(again.nonce, sealed.nonce);
        assert_ne!(again.ciphertext, sealed.ciphertext);
        // A record survives serialization, nonce and ciphertext as base64.
        let json = serde_json::to_value(&sealed).expect("serialize");
        assert!(json["ciphertext"].is_string());
        let back: SealedSecret = serde_json::from_value(json).expect("deserialize");
        assert_eq!(back, sealed);
    }

    #[test]
    fn key_ids_are_stable_and_distinct() {
        assert_eq!(key(1).key_id(), key(1).key_id());
        assert_eq!(key(1).key_id().len(), 16);
        assert_ne!(key(1).key_id(), key(2).key_id());
    }

    #[test]
    fn names_and_values_are_checked() {
        let k = key(1);
        for good in ["a", "API_KEY", "db.password-2", "trigger/0190/signing"] {
            validate_secret_name(good).unwrap_or_else(|e| panic!("{good}: {e}"));
        }
        let long = "a".repeat(MAX_NAME_LEN + 1);
        for bad in [
            "", "a b", "é", "/a", "a/", "a//b", "a/../b", "./a", "a\0b", &long,
        ] {
            assert!(
                matches!(
                    SealedSecret::seal(&k, bad, 1, b"v", t0()),
                    Err(SecretError::InvalidName(NameError { kind: "secret", .. }))
                ),
                "{bad:?} is not a name"
            );
        }
        assert!(matches!(
            SealedSecret::seal(&k, "a", 1, b"", t0()),
            Err(SecretError::EmptyValue { .. })
        ));
        let max = vec![7u8; MAX_SECRET_BYTES];
        let sealed = SealedSecret::seal(&k, "a", 1, &max, t0()).expect("the largest value");
        assert_eq!(sealed.open_with(&k).expect("open").expose(), &max[..]);
        assert!(matches!(
            SealedSecret::seal(&k, "a", 1, &[7u8; MAX_SECRET_BYTES + 1], t0()),
            Err(SecretError::TooLarge { size, max: MAX_SECRET_BYTES, .. })
                if size == MAX_SECRET_BYTES + 1
        ));
    }

    #[test]
    fn tampered_records_do_not_open() {
        let key = key(1);
        let keyring = Keyring::new(key.clone());
        let sealed = SealedSecret::seal(&key, "token", 1, b"the value", t0()).expect("seal");
        let last = sealed.ciphertext.len() - 1;
        for (what, change) in [
            (
                "ciphertext",
                Box::new(|s: &mut SealedSecret| s.ciphertext[0] ^= 1)
                    as Box<dyn Fn(&mut SealedSecret)>,
            ),
            (
                "tag",
                Box::new(move |s: &mut SealedSecret| s.ciphertext[last] ^= 0x80),
            ),
            ("nonce", Box::new(|s: &mut SealedSecret| s.nonce[5] ^= 1)),
            (
                "short nonce",
                Box::new(|s: &mut SealedSecret| s.nonce.truncate(12)),
            ),
            (
                "cut tag",
                Box::new(|s: &mut SealedSecret| s.ciphertext.truncate(4)),
            ),
            (
                "name",
                Box::new(|s: &mut SealedSecret| s.name = "other".into()),
            ),
            ("version", Box::new(|s: &mut SealedSecret| s.version = 2)),
        ] {
            let mut tampered = sealed.clone();
            change(&mut tampered);
            assert!(
                matches!(
                    tampered.open(&keyring),
                    Err(SecretError::Undecryptable { .. })
                ),
                "a changed {what} must not open"
            );
        }
        assert_eq!(sealed.open(&keyring).expect("open").expose(), b"the value");
    }

    #[tokio::test]
    async fn a_ciphertext_moved_to_another_record_does_not_open() {
        let vault = vault(Keyring::new(key(1)));
        vault.put("first", "one", t0()).await.expect("put");
        vault.put("first", "two", t0()).await.expect("put");
        vault.put("second", "three", t0()).await.expect("put");
        let store = vault.store();
        // Version 1's sealed bytes in version 2.
        let mut moved = store.record("first", 2);
        let v1 = store.record("first", 1);
        moved.nonce = v1.nonce.clone();
        moved.ciphertext = v1.ciphertext.clone();
        store.replace(moved);
        assert_undecryptable(vault.get("first").await);
        assert_eq!(
            vault.get_version("first", 1).await.expect("v1").expose(),
            b"one"
        );
        // And into another name.
        let mut moved = store.record("second", 1);
        moved.nonce = v1.nonce;
        moved.ciphertext = v1.ciphertext;
        store.replace(moved);
        assert_undecryptable(vault.get("second").await);
    }

    #[tokio::test]
    async fn vault_round_trip() {
        let vault = vault(Keyring::new(key(1)));
        vault.check().await.expect("an empty store checks");
        assert_eq!(
            vault.put("db/password", "first", t0()).await.expect("put"),
            1
        );
        assert_eq!(
            vault
                .put(
                    "db/password",
                    b"second".as_slice(),
                    t0() + chrono::TimeDelta::seconds(5)
                )
                .await
                .expect("put"),
            2
        );
        assert_eq!(
            vault
                .put("api", String::from("key"), t0())
                .await
                .expect("put"),
            1
        );
        assert_eq!(
            vault.get("db/password").await.expect("get").as_str(),
            Ok("second")
        );
        assert_eq!(
            vault
                .get_version("db/password", 1)
                .await
                .expect("get")
                .expose(),
            b"first"
        );
        let missing = vault.get_version("db/password", 3).await;
        assert!(
            matches!(
                &missing,
                Err(SecretError::NotFound {
                    version: Some(3),
                    ..
                })
            ),
            "{missing:?}"
        );
        assert!(vault.get("nothing").await.is_err_and(|e| e.is_not_found()));

        let listed = vault.list().await.expect("list");
        assert_eq!(
            listed
                .iter()
                .map(|s| (s.name.as_str(), s.version))
                .collect::<Vec<_>>(),
            [("api", 1), ("db/password", 2)]
        );
        assert_eq!(listed[0].rotated_at, None);
        assert_eq!(listed[1].created_at, t0());
        assert_eq!(
            listed[1].rotated_at,
            Some(t0() + chrono::TimeDelta::seconds(5))
        );
        assert_eq!(
            listed[1].key_ids,
            BTreeSet::from([key(1).key_id().to_owned()])
        );
        assert_eq!(vault.summary("api").await.expect("summary"), listed[0]);

        vault.delete("db/password").await.expect("delete");
        assert!(vault
            .delete("db/password")
            .await
            .is_err_and(|e| e.is_not_found()));
        assert!(vault
            .get("db/password")
            .await
            .is_err_and(|e| e.is_not_found()));
        assert_eq!(
            vault.put("db/password", "again", t0()).await.expect("put"),
            1
        );
        vault.check().await.expect("check");
    }

    #[tokio::test]
    async fn puts_that_race_get_their_own_versions() {
        let vault = vault(Keyring::new(key(1)));
        let puts = (0..8).map(|i| {
            let vault = vault.clone();
            tokio::spawn(async move { vault.put("shared", format!("value {i}"), t0()).await })
        });
        let mut versions: Vec<u32> = Vec::new();
        for put in puts {
            versions.push(put.await.expect("no panic").expect("put"));
        }
        versions.sort_unstable();
        assert_eq!(versions, (1..=8).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn check_refuses_a_wrong_master_key() {
        let store = TestStore::default();
        let first = SecretVault::new(store.clone(), Keyring::new(key(1)));
        first.put("token", "value", t0()).await.expect("put");
        let wrong = SecretVault::new(store.clone(), Keyring::new(key(2)));
        let error = wrong.check().await.expect_err("the wrong key");
        assert!(
            matches!(&error, SecretError::UnknownKey { key_id, .. } if key_id == key(1).key_id()),
            "{error:?}"
        );
        assert!(error.to_string().contains("wrong master key?"), "{error}");
        assert!(matches!(
            wrong.get("token").await,
            Err(SecretError::UnknownKey { .. })
        ));
        // A record naming a known key that does not open with it.
        let mut forged = store.record("token", 1);
        forged.ciphertext = vec![0; 32];
        store.replace(forged);
        assert_undecryptable(first.check().await);
    }

    #[tokio::test]
    async fn rotation_reseals_in_place_and_old_keys_read_until_done() {
        let (old, new) = (key(1), key(2));
        let store = TestStore::default();
        let before = SecretVault::new(store.clone(), Keyring::new(old.clone()));
        for (name, value) in [("a", "1"), ("a", "2"), ("b", "3"), ("c", "4")] {
            before.put(name, value, t0()).await.expect("put");
        }
        let vault = SecretVault::new(
            store.clone(),
            Keyring::new(new.clone()).with_old(old.clone()),
        );
        vault.check().await.expect("both keys are held");
        // Mid-way: one record re-sealed, as a rotation that stopped would leave it.
        let resealed = store
            .record("a", 1)
            .reseal(vault.keyring())
            .expect("reseal");
        store
            .reseal_secret(&resealed, old.key_id())
            .await
            .expect("reseal one");
        // A stale compare-and-set changes nothing.
        let stale = store
            .record("b", 1)
            .reseal(vault.keyring())
            .expect("reseal");
        assert!(store
            .reseal_secret(&stale, new.key_id())
            .await
            .is_err_and(|e| e.is_conflict()));
        vault.check().await.expect("a half-rotated store checks");
        for (name, version, value) in [("a", 1, "1"), ("a", 2, "2"), ("b", 1, "3"), ("c", 1, "4")] {
            assert_eq!(
                vault
                    .get_version(name, version)
                    .await
                    .expect("get")
                    .as_str(),
                Ok(value)
            );
        }
        let summary = vault.summary("a").await.expect("summary");
        assert_eq!(summary.key_ids.len(), 2);

        assert_eq!(vault.rotate_master_key().await.expect("rotate"), 3);
        assert_eq!(vault.rotate_master_key().await.expect("again"), 0);
        let record = store.record("b", 1);
        assert_eq!(record.key_id, new.key_id());
        assert_eq!(record.created_at, t0());
        // Without the old key now.
        let after = SecretVault::new(store.clone(), Keyring::new(new));
        after
            .check()
            .await
            .expect("every record is under the new key");
        assert_eq!(after.get("a").await.expect("get").as_str(), Ok("2"));
        assert_eq!(after.get("c").await.expect("get").as_str(), Ok("4"));
        // And the old key alone no longer reads them.
        assert!(matches!(
            before.check().await,
            Err(SecretError::UnknownKey { .. })
        ));
    }

    #[tokio::test]
    async fn concurrent_rotations_reseal_each_record_once() {
        let (old, new) = (key(1), key(2));
        let store = TestStore::default();
        let before = SecretVault::new(store.clone(), Keyring::new(old.clone()));
        for i in 0..20 {
            before.put(&format!("s{i}"), "v", t0()).await.expect("put");
        }
        let vault = SecretVault::new(store, Keyring::new(new).with_old(old));
        let (one, two) = tokio::join!(vault.rotate_master_key(), vault.rotate_master_key());
        assert_eq!(one.expect("rotate") + two.expect("rotate"), 20);
        vault.check().await.expect("check");
    }

    #[test]
    fn master_keys_parse_from_hex_base64_and_raw_bytes() {
        let bytes: [u8; 32] = std::array::from_fn(|i| u8::try_from(i * 7 + 3).expect("a byte"));
        let expected = MasterKey::from_bytes(bytes);
        let origin = || "test".to_owned();
        let forms: Vec<Vec<u8>> = vec![
            hex::encode(bytes).into_bytes(),
            format!("  {}\n", hex::encode_upper(bytes)).into_bytes(),
            STANDARD.encode(bytes).into_bytes(),
            format!("{}\r\n", STANDARD_NO_PAD.encode(bytes)).into_bytes(),
            URL_SAFE.encode(bytes).into_bytes(),
            URL_SAFE_NO_PAD.encode(bytes).into_bytes(),
            bytes.to_vec(),
            expected.to_base64().into_bytes(),
        ];
        for form in forms {
            let parsed = MasterKey::parse(&form, origin()).expect("a key");
            assert_eq!(parsed.key_id(), expected.key_id());
        }
        // Raw bytes are never trimmed: a key may start with a space.
        let mut spaced = bytes;
        spaced[0] = b' ';
        assert_eq!(
            MasterKey::parse(&spaced, origin()).expect("raw").key_id(),
            MasterKey::from_bytes(spaced).key_id()
        );
        let bad: Vec<Vec<u8>> = vec![
            Vec::new(),
            b"too short".to_vec(),
            vec![1; 31],
            vec![1; 33],
            hex::encode([1u8; 31]).into_bytes(),
            format!("{}zz", &hex::encode(bytes)[..62]).into_bytes(),
            STANDARD.encode([1u8; 31]).into_bytes(),
            STANDARD.encode([1u8; 33]).into_bytes(),
        ];
        for form in bad {
            let error = MasterKey::parse(&form, origin()).expect_err("not a key");
            let text = error.to_string();
            assert!(
                text.contains("expected 32 raw bytes, 64 hex digits or the base64 of 32 bytes"),
                "{text}"
            );
            assert!(matches!(error, MasterKeyError::Format { found, .. } if found == form.len()));
        }
    }

    #[test]
    fn master_keys_load_from_files_and_the_environment() {
        let dir = std::env::temp_dir().join(format!(
            "taskforge-secret-test-{}-{}",
            std::process::id(),
            fastrand::u64(..)
        ));
        std::fs::create_dir_all(&dir).expect("create a directory");
        let key = MasterKey::generate();
        let path = dir.join("master.key");
        std::fs::write(&path, format!("{}\n", key.to_base64())).expect("write");
        assert_eq!(
            MasterKey::from_file(&path).expect("load").key_id(),
            key.key_id()
        );
        std::fs::write(&path, "not a key\n").expect("write");
        let error = MasterKey::from_file(&path).expect_err("not a key");
        assert!(error.to_string().contains("master.key"), "{error}");
        assert!(!error.to_string().contains("not a key\n"), "{error}");
        let missing = MasterKey::from_file(dir.join("missing")).expect_err("no file");
        assert!(
            matches!(missing, MasterKeyError::Read { .. }),
            "{missing:?}"
        );
        std::fs::remove_dir_all(&dir).expect("clean up");

        let var = format!("TASKFORGE_TEST_MASTER_KEY_{}", fastrand::u64(..));
        assert!(matches!(
            MasterKey::from_env(&var),
            Err(MasterKeyError::MissingVar { .. })
        ));
        std::env::set_var(&var, hex::encode([9u8; 32]));
        assert_eq!(
            MasterKey::from_env(&var).expect("load").key_id(),
            self::key(9).key_id()
        );
        std::env::set_var(&var, "garbage");
        let error = MasterKey::from_env(&var).expect_err("not a key");
        assert!(error.to_string().contains(&var), "{error}");
        assert!(!error.to_string().contains("garbage"), "{error}");
        std::env::remove_var(&var);
    }

    #[test]
    fn debug_shows_no_key_or_value_bytes() {
        let key = MasterKey::from_bytes([0xab; 32]);
        let keyring = Keyring::new(key.clone()).with_old(self::key(0xcd));
        let value = SecretValue::new("hunter2");
        for text in [
            format!("{key:?}"),
            format!("{keyring:?}"),
            format!("{value:?}"),
        ] {
            for leak in [
                "abab", "cdcd", "171, 171", "205, 205", "hunter2", "104, 117",
            ] {
                assert!(!text.contains(leak), "{text} shows {leak}");
            }
        }
        assert!(format!("{key:?}").contains(key.key_id()));
        assert_eq!(format!("{value:?}"), "SecretValue(<redacted>)");
        let sealed = SealedSecret::seal(&key, "n", 1, b"hunter2", t0()).expect("seal");
        let text = format!("{sealed:?}");
        assert!(text.contains("ciphertext_len: 23"), "{text}");
        assert!(
            !text.contains(&format!("{:?}", sealed.ciphertext)),
            "{text}"
        );
    }
}
