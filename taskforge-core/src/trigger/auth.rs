//! Authenticating webhook deliveries: bearer tokens kept only as hashes,
//! and signatures over the raw body (GitHub's `X-Hub-Signature-256`,
//! Standard Webhooks), all compared in constant time.

use std::fmt;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::request::{Headers, Rejection, DEFAULT_TIMESTAMP_TOLERANCE, GITHUB_SIGNATURE_HEADER};

type HmacSha256 = Hmac<Sha256>;

/// The shortest bearer token a webhook trigger accepts, in bytes: 16 bytes
/// of a random token are 128 bits or more, out of reach of guessing.
pub const MIN_TOKEN_LEN: usize = 16;

/// The SHA-256 hash of a bearer token. The token itself is never stored.
///
/// Serialized as 64 lowercase hex digits; `Debug` does not print it.
#[derive(Clone, PartialEq, Eq)]
pub struct TokenHash([u8; 32]);

impl TokenHash {
    /// The hash of `token`, whatever it is: use
    /// [`WebhookConfig::with_token`](crate::WebhookConfig::with_token),
    /// which refuses a token too weak to configure.
    #[must_use]
    pub fn of(token: &str) -> Self {
        Self(Sha256::digest(token.as_bytes()).into())
    }

    /// Whether `token` hashes to this, compared in constant time.
    #[must_use]
    pub fn matches(&self, token: &str) -> bool {
        let presented: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        self.0.ct_eq(&presented).into()
    }
}

impl fmt::Debug for TokenHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenHash(<redacted>)")
    }
}

impl Serialize for TokenHash {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(self.0))
    }
}

impl<'de> Deserialize<'de> for TokenHash {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(&text, &mut bytes).map_err(|_| {
            serde::de::Error::custom("token hash must be 64 hex digits of a sha-256 digest")
        })?;
        Ok(Self(bytes))
    }
}

/// How a delivery's signature is checked.
///
/// The secrets are kept in plain text (an HMAC needs them) and are
/// serialized with the trigger; `Debug` does not print them.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "scheme", rename_all = "snake_case")]
#[non_exhaustive]
pub enum SignatureScheme {
    /// GitHub's: `X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the body>`.
    #[serde(rename = "github")]
    GitHub {
        /// The webhook secret, as entered in GitHub.
        secret: String,
    },
    /// [Standard Webhooks](https://www.standardwebhooks.com/): headers
    /// `webhook-id`, `webhook-timestamp` (Unix seconds) and
    /// `webhook-signature` (space-separated `v1,<base64 HMAC-SHA256>`), over
    /// `{id}.{timestamp}.{body}`.
    StandardWebhooks {
        /// The signing keys, base64, optionally prefixed `whsec_`. A
        /// signature made with any of them passes, so keys can be rotated.
        secrets: Vec<String>,
        /// How far the timestamp may be from now, either way.
        #[serde(with = "crate::duration_ms", default = "default_tolerance")]
        tolerance: Duration,
    },
}

fn default_tolerance() -> Duration {
    DEFAULT_TIMESTAMP_TOLERANCE
}

impl fmt::Debug for SignatureScheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::GitHub { .. } => f
                .debug_struct("GitHub")
                .field("secret", &"<redacted>")
                .finish(),
            Self::StandardWebhooks { secrets, tolerance } => f
                .debug_struct("StandardWebhooks")
                .field("secrets", &format_args!("<{} redacted>", secrets.len()))
                .field("tolerance", tolerance)
                .finish(),
        }
    }
}

/// What a stored trigger holds in place of a credential: this prefix, then
/// the name and version of the secret that holds it
/// (`secret-ref:trigger/<id>/signature/0@1`). The engine seals webhook
/// credentials into its secret store before a trigger is written, and
/// opens them again to verify deliveries.
pub const SECRET_REF_PREFIX: &str = "secret-ref:";

/// Whether `value` is a reference to a stored secret rather than a
/// credential itself.
#[must_use]
pub fn is_secret_ref(value: &str) -> bool {
    value.starts_with(SECRET_REF_PREFIX)
}

impl SignatureScheme {
    /// GitHub's scheme with `secret`.
    #[must_use]
    pub fn github(secret: impl Into<String>) -> Self {
        Self::GitHub {
            secret: secret.into(),
        }
    }

    /// Standard Webhooks with these keys and the default 5 minute tolerance.
    #[must_use]
    pub fn standard_webhooks(secrets: impl IntoIterator<Item = impl Into<String>>) -> Self {
        Self::StandardWebhooks {
            secrets: secrets.into_iter().map(Into::into).collect(),
            tolerance: DEFAULT_TIMESTAMP_TOLERANCE,
        }
    }

    /// Its secrets, for sealing them into the secret store and opening
    /// them again.
    pub(crate) fn secrets_mut(&mut self) -> Vec<&mut String> {
        match self {
            Self::GitHub { secret } => vec![secret],
            Self::StandardWebhooks { secrets, .. } => secrets.iter_mut().collect(),
        }
    }

    pub(crate) fn validate(&self) -> Result<(), String> {
        match self {
            Self::GitHub { secret } if secret.is_empty() => Err("github secret is empty".into()),
            Self::GitHub { .. } => Ok(()),
            Self::StandardWebhooks { secrets, tolerance } => {
                if secrets.is_empty() {
                    return Err("standard webhooks needs at least one secret".into());
                }
                if tolerance.is_zero() {
                    return Err("standard webhooks tolerance is zero".into());
                }
                for (i, secret) in secrets.iter().enumerate() {
                    if is_secret_ref(secret) {
                        continue;
                    }
                    match decode_whsec(secret) {
                        Some(key) if !key.is_empty() => {}
                        _ => return Err(format!("standard webhooks secret {i} is not base64")),
                    }
                }
                Ok(())
            }
        }
    }

    pub(crate) fn verify(
        &self,
        headers: &Headers,
        body: &[u8],
        now: DateTime<Utc>,
    ) -> Result<(), Rejection> {
        match self {
            Self::GitHub { secret } => verify_github(secret, headers, body),
            Self::StandardWebhooks { secrets, tolerance } => {
                verify_standard(secrets, *tolerance, headers, body, now)
            }
        }
    }
}

/// The `X-Hub-Signature-256` value GitHub sends for `body` signed with
/// `secret`: `sha256=` and the hex HMAC-SHA256. For senders and tests.
pub fn github_signature(secret: &str, body: &[u8]) -> String {
    match hmac_sha256(secret.as_bytes()) {
        Ok(mut mac) => {
            mac.update(body);
            format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
        }
        // HMAC takes keys of any length; this arm is never taken.
        Err(_) => String::new(),
    }
}

fn verify_github(secret: &str, headers: &Headers, body: &[u8]) -> Result<(), Rejection> {
    let header = headers
        .get(GITHUB_SIGNATURE_HEADER)
        .ok_or_else(|| unauthorized("missing x-hub-signature-256 header"))?;
    let hex_sig = header
        .trim()
        .strip_prefix("sha256=")
        .ok_or_else(|| unauthorized("x-hub-signature-256 does not start with sha256="))?;
    let mut sig = [0u8; 32];
    hex::decode_to_slice(hex_sig, &mut sig)
        .map_err(|_| unauthorized("x-hub-signature-256 is not 64 hex digits"))?;
    let mut mac = hmac_sha256(secret.as_bytes())?;
    mac.update(body);
    // verify_slice compares in constant time.
    mac.verify_slice(&sig)
        .map_err(|_| unauthorized("x-hub-signature-256 does not match the body"))
}

fn verify_standard(
    secrets: &[String],
    tolerance: Duration,
    headers: &Headers,
    body: &[u8],
    now: DateTime<Utc>,
) -> Result<(), Rejection> {
    let id = headers
        .get("webhook-id")
        .ok_or_else(|| unauthorized("missing webhook-id header"))?;
    let timestamp = headers
        .get("webhook-timestamp")
        .ok_or_else(|| unauthorized("missing webhook-timestamp header"))?;
    let signatures = headers
        .get("webhook-signature")
        .ok_or_else(|| unauthorized("missing webhook-signature header"))?;
    let sent: i64 = timestamp
        .trim()
        .parse()
        .map_err(|_| unauthorized("webhook-timestamp is not a unix timestamp"))?;
    let tolerance = i64::try_from(tolerance.as_secs()).unwrap_or(i64::MAX);
    // Checked before the signature too: a replayed old delivery is refused
    // whatever it carries.
    if now.timestamp().abs_diff(sent) > tolerance.unsigned_abs() {
        return Err(unauthorized(
            "webhook-timestamp is outside the tolerance window",
        ));
    }
    let presented: Vec<Vec<u8>> = signatures
        .split_ascii_whitespace()
        .filter_map(|entry| entry.strip_prefix("v1,"))
        .filter_map(|b64| BASE64.decode(b64).ok())
        .collect();
    if presented.is_empty() {
        return Err(unauthorized("webhook-signature has no v1 signature"));
    }
    let mut usable_key = false;
    for key in secrets.iter().filter_map(|s| decode_whsec(s)) {
        usable_key = true;
        let mut mac = hmac_sha256(&key)?;
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.as_bytes());
        mac.update(b".");
        mac.update(body);
        let expected = mac.finalize().into_bytes();
        if presented
            .iter()
            .any(|sig| bool::from(expected.as_slice().ct_eq(sig.as_slice())))
        {
            return Ok(());
        }
    }
    if !usable_key {
        return Err(Rejection::Misconfigured(
            "no standard webhooks secret is valid base64".to_owned(),
        ));
    }
    Err(unauthorized("webhook-signature does not match"))
}

fn decode_whsec(secret: &str) -> Option<Vec<u8>> {
    let b64 = secret.strip_prefix("whsec_").unwrap_or(secret);
    BASE64.decode(b64).ok()
}

fn hmac_sha256(key: &[u8]) -> Result<HmacSha256, Rejection> {
    // HMAC takes keys of any length, so this does not fail in practice.
    <HmacSha256 as Mac>::new_from_slice(key)
        .map_err(|_| Rejection::Misconfigured("hmac key rejected".to_owned()))
}

/// Why `token` cannot be a trigger's bearer token, if it cannot: empty,
/// padded with whitespace, shorter than [`MIN_TOKEN_LEN`] bytes, or with a
/// character other than visible ASCII (which could not travel in an
/// `Authorization` header as sent). The reason never quotes the token.
pub(crate) fn weak_token(token: &str) -> Option<String> {
    if token.is_empty() {
        Some("bearer token is empty".to_owned())
    } else if token.trim() != token {
        Some("bearer token has leading or trailing whitespace".to_owned())
    } else if token.len() < MIN_TOKEN_LEN {
        Some(format!(
            "bearer token is {} bytes, shorter than {MIN_TOKEN_LEN}",
            token.len()
        ))
    } else if !token.bytes().all(|b| b.is_ascii_graphic()) {
        Some("bearer token has a character other than visible ascii".to_owned())
    } else {
        None
    }
}

/// Checks `Authorization: Bearer <token>`. The scheme is matched whatever
/// its case (RFC 7235), and may be followed by more than one space.
pub(crate) fn check_token(expected: &TokenHash, headers: &Headers) -> Result<(), Rejection> {
    let header = headers
        .get("authorization")
        .ok_or_else(|| unauthorized("missing authorization header"))?
        .trim();
    let (scheme, token) = header.split_once([' ', '\t']).unwrap_or((header, ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(unauthorized("authorization is not a bearer token"));
    }
    let token = token.trim();
    if token.is_empty() {
        return Err(unauthorized("empty bearer token"));
    }
    if expected.matches(token) {
        Ok(())
    } else {
        Err(unauthorized("wrong bearer token"))
    }
}

fn unauthorized(reason: &str) -> Rejection {
    Rejection::Unauthorized(reason.to_owned())
}
