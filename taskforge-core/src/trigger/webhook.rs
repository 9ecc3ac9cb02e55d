//! Webhook triggers: their configuration, and the verification of a delivery
//! before it becomes an event. See [`WebhookConfig::verify`] for the order of
//! the checks and the HTTP status codes.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::concurrency::ConcurrencyLimit;

use super::auth::{check_token, weak_token, SignatureScheme, TokenHash};
use super::filter::{self, Filter, FilterMiss, InputShape};
use super::request::{
    bounded, excerpt, is_credential_header, Headers, Rejection, VerifiedDelivery, WebhookRequest,
    MAX_JSON_DEPTH, MAX_KEPT_HEADERS, MAX_KEPT_HEADER_LEN,
};

/// The default [`WebhookConfig::max_body_bytes`]: 1 MiB.
pub const DEFAULT_MAX_BODY_BYTES: usize = 1024 * 1024;

/// Dedup keys longer than this (in bytes) are replaced by the hex SHA-256 of
/// the key, prefixed `sha256:`, so a sender cannot make store keys huge. A
/// shorter key that starts with `sha256:` is hashed too, so a key that
/// looks like a hash cannot collide with a hashed one.
pub const MAX_DEDUP_KEY_LEN: usize = 200;

/// The prefix of hashed dedup keys (body hashes, and keys hashed for their
/// length or their look).
const HASHED_KEY_PREFIX: &str = "sha256:";

/// How a webhook trigger receives and checks deliveries.
///
/// Build it with [`WebhookConfig::new`] and the `with_*` methods, and check
/// it with [`WebhookConfig::validate`] before storing it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct WebhookConfig {
    /// The path it is reachable under, unique among webhook triggers.
    pub path: String,
    /// A bearer token deliveries must carry in `Authorization: Bearer <token>`,
    /// stored only as its hash.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<TokenHash>,
    /// A signature deliveries must carry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<SignatureScheme>,
    /// Where a delivery's dedup key comes from.
    #[serde(default)]
    pub dedup: DedupSource,
    /// How long a dedup key is remembered: a repeat within the window is a
    /// duplicate. `None` remembers it as long as the event is stored. The
    /// engine applies the window (it compares `received_at` of the stored
    /// duplicate); verification does not look at it.
    #[serde(
        default,
        with = "crate::duration_ms::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub dedup_window: Option<Duration>,
    /// The largest body accepted, in bytes.
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: usize,
    /// What the payload must look like to be taken at all: a delivery that
    /// does not fit is refused (HTTP 422). Empty by default, and in
    /// triggers stored before it existed.
    #[serde(default, skip_serializing_if = "InputShape::is_empty")]
    pub input: InputShape,
    /// Conditions the payload must meet to start a run, all of them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub filters: Vec<Filter>,
    /// Request headers kept as event metadata (case-insensitive names; they
    /// are stored lowercase).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keep_headers: Vec<String>,
    /// The credentials a rotation replaced, still accepted until their
    /// overlap ends, so senders can switch without dropping deliveries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retired: Option<Box<RetiredCredentials>>,
    /// The concurrency limit of the runs this trigger starts, in place of
    /// the workflow version's (whose debounce window and rate limit still
    /// apply). See [`concurrency`](crate::concurrency).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<ConcurrencyLimit>,
}

/// Credentials of a webhook trigger replaced by a rotation, accepted beside
/// the new ones until `until`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetiredCredentials {
    /// The bearer token that was required, as its hash.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<TokenHash>,
    /// The signature that was required.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<SignatureScheme>,
    /// When they stop being accepted.
    pub until: DateTime<Utc>,
}

/// Checks a bearer token and a signature, where required.
fn check_credentials(
    auth: Option<&TokenHash>,
    signature: Option<&SignatureScheme>,
    request: &WebhookRequest,
    now: DateTime<Utc>,
) -> Result<(), Rejection> {
    if let Some(expected) = auth {
        check_token(expected, &request.headers)?;
    }
    if let Some(scheme) = signature {
        scheme.verify(&request.headers, &request.body, now)?;
    }
    Ok(())
}

fn default_max_body_bytes() -> usize {
    DEFAULT_MAX_BODY_BYTES
}

impl WebhookConfig {
    /// A webhook at `path` with no authentication, dedup by body hash, a
    /// 1 MiB body limit and no filters.
    #[must_use]
    pub fn new(path: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            auth: None,
            signature: None,
            dedup: DedupSource::BodyHash,
            dedup_window: None,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            input: InputShape::new(),
            filters: Vec::new(),
            keep_headers: Vec::new(),
            retired: None,
            concurrency: None,
        }
    }

    /// With this concurrency limit for the runs it starts, in place of the
    /// version's.
    #[must_use]
    pub fn with_concurrency(mut self, limit: ConcurrencyLimit) -> Self {
        self.concurrency = Some(limit);
        self
    }

    /// Requires `Authorization: Bearer <token>`; only the token's hash is
    /// kept.
    ///
    /// # Errors
    ///
    /// An [`InvalidWebhookConfig`] on field `auth` if the token is empty,
    /// padded with whitespace, shorter than
    /// [`MIN_TOKEN_LEN`](crate::limits::MIN_TOKEN_LEN) bytes, or has
    /// a character other than visible ASCII. This is the only place the
    /// token is seen in clear, so [`validate`](Self::validate) cannot check
    /// it again (it refuses only the hash of the empty token).
    pub fn with_token(mut self, token: &str) -> Result<Self, InvalidWebhookConfig> {
        if let Some(reason) = weak_token(token) {
            return Err(InvalidWebhookConfig {
                field: "auth",
                reason,
            });
        }
        self.auth = Some(TokenHash::of(token));
        Ok(self)
    }

    /// The same configuration with its credentials replaced by `new`'s
    /// (bearer token and signature), the old ones still accepted until
    /// `until`. A rotation during an overlap ends the earlier overlap: only
    /// the credentials just replaced stay accepted.
    #[must_use]
    pub fn rotated(mut self, new: &WebhookConfig, until: DateTime<Utc>) -> Self {
        self.retired = Some(Box::new(RetiredCredentials {
            auth: self.auth.take(),
            signature: self.signature.take(),
            until,
        }));
        self.auth.clone_from(&new.auth);
        self.signature.clone_from(&new.signature);
        self
    }

    /// Requires a signature.
    #[must_use]
    pub fn with_signature(mut self, scheme: SignatureScheme) -> Self {
        self.signature = Some(scheme);
        self
    }

    /// Takes the dedup key from `source`.
    #[must_use]
    pub fn with_dedup(mut self, source: DedupSource) -> Self {
        self.dedup = source;
        self
    }

    /// Remembers dedup keys for `window` only.
    #[must_use]
    pub fn with_dedup_window(mut self, window: Duration) -> Self {
        self.dedup_window = Some(window);
        self
    }

    /// Accepts bodies of at most `limit` bytes.
    #[must_use]
    pub fn with_max_body_bytes(mut self, limit: usize) -> Self {
        self.max_body_bytes = limit;
        self
    }

    /// Refuses deliveries whose payload does not fit `shape`, with
    /// [`Rejection::Unprocessable`] (HTTP 422).
    #[must_use]
    pub fn with_input(mut self, shape: InputShape) -> Self {
        self.input = shape;
        self
    }

    /// Adds a filter the payload must pass.
    #[must_use]
    pub fn with_filter(mut self, filter: Filter) -> Self {
        self.filters.push(filter);
        self
    }

    /// Keeps the header `name` as event metadata, its value cut to
    /// [`MAX_KEPT_HEADER_LEN`] bytes. At most [`MAX_KEPT_HEADERS`] headers
    /// can be kept, and none that may carry a credential
    /// ([`is_credential_header`]): [`validate`](Self::validate) refuses them.
    #[must_use]
    pub fn keep_header(mut self, name: impl Into<String>) -> Self {
        self.keep_headers.push(name.into());
        self
    }

    /// Checks the configuration itself, so that a trigger that can never
    /// accept anything is refused when it is created rather than on its
    /// first delivery.
    pub fn validate(&self) -> Result<(), InvalidWebhookConfig> {
        let invalid = |field: &'static str, reason: String| InvalidWebhookConfig { field, reason };
        if self.path.is_empty() || self.path.len() > 256 {
            return Err(invalid(
                "path",
                format!("path must be 1 to 256 bytes, not {}", self.path.len()),
            ));
        }
        if self
            .path
            .chars()
            .any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(invalid(
                "path",
                format!("path {:?} contains whitespace", excerpt(&self.path)),
            ));
        }
        if self.auth.as_ref().is_some_and(|hash| hash.matches("")) {
            return Err(invalid("auth", "bearer token is empty".to_owned()));
        }
        if self.max_body_bytes == 0 {
            return Err(invalid("max_body_bytes", "body limit is zero".to_owned()));
        }
        if let Some(scheme) = &self.signature {
            scheme
                .validate()
                .map_err(|reason| invalid("signature", reason))?;
        }
        match &self.dedup {
            DedupSource::Header(name) => {
                check_header_name(name).map_err(|reason| invalid("dedup", reason))?;
            }
            DedupSource::JsonPointer(ptr) if !ptr.starts_with('/') => {
                return Err(invalid(
                    "dedup",
                    format!("dedup pointer {:?} must start with '/'", excerpt(ptr)),
                ));
            }
            _ => {}
        }
        self.input
            .validate()
            .map_err(|reason| invalid("input", reason))?;
        for f in &self.filters {
            f.validate().map_err(|reason| invalid("filters", reason))?;
        }
        if self.keep_headers.len() > MAX_KEPT_HEADERS {
            return Err(invalid(
                "keep_headers",
                format!(
                    "{} headers kept, more than {MAX_KEPT_HEADERS}",
                    self.keep_headers.len()
                ),
            ));
        }
        for name in &self.keep_headers {
            check_header_name(name).map_err(|reason| invalid("keep_headers", reason))?;
        }
        Ok(())
    }

    /// Verifies a delivery and extracts its payload, dedup key and metadata.
    ///
    /// Pure: no store access, no I/O; `now` is used only for the Standard
    /// Webhooks timestamp window. The checks run in this order, so that an
    /// unauthenticated sender cannot make the engine parse anything:
    /// 1. the body size, against [`WebhookConfig::max_body_bytes`];
    /// 2. the bearer token and the signature, over the raw bytes;
    /// 3. the `Content-Type`, when there is one (JSON only);
    /// 4. the JSON itself: well-formed, at most [`MAX_JSON_DEPTH`] deep, an
    ///    object;
    /// 5. its shape, against [`WebhookConfig::input`];
    /// 6. the dedup key.
    ///
    /// Filters are not applied here: a filtered delivery is still recorded,
    /// see [`WebhookConfig::matches`].
    ///
    /// # HTTP status codes
    ///
    /// An HTTP layer answers a rejection with [`Rejection::http_status`]:
    /// 401 unauthorized, 413 too large, 415 not JSON, 400 malformed, 422 a
    /// payload that does not fit the declared input, 500 a trigger
    /// misconfigured by its operator. Once a delivery is verified,
    /// the engine's outcome maps to:
    /// - accepted (an event stored, a run started or not yet): **202 Accepted**;
    /// - duplicate (an event with the same dedup key is stored already):
    ///   **200 OK**, so the sender stops retrying;
    /// - filtered (stored, but its payload missed a filter): **204 No Content**.
    pub fn verify(
        &self,
        request: &WebhookRequest,
        now: DateTime<Utc>,
    ) -> Result<VerifiedDelivery, Rejection> {
        let body = request.body.as_slice();
        if body.len() > self.max_body_bytes {
            return Err(Rejection::TooLarge {
                size: body.len(),
                limit: self.max_body_bytes,
            });
        }
        let current = check_credentials(self.auth.as_ref(), self.signature.as_ref(), request, now);
        if let Err(rejection) = current {
            // Within a rotation's overlap, the replaced credentials pass too.
            let retired = self.retired.as_ref().filter(|r| now < r.until);
            match retired {
                Some(r)
                    if check_credentials(r.auth.as_ref(), r.signature.as_ref(), request, now)
                        .is_ok() => {}
                _ => return Err(rejection),
            }
        }
        if let Some(content_type) = request.headers.get("content-type") {
            if !is_json_media_type(content_type) {
                return Err(Rejection::UnsupportedMediaType(excerpt(content_type)));
            }
        }
        let payload = parse_object(body)?;
        self.input.check(&payload)?;
        let dedup_key = self.dedup.key(&request.headers, &payload, body)?;
        let metadata = self
            .keep_headers
            .iter()
            .filter_map(|name| {
                let value = request.headers.get(name)?;
                Some((
                    name.to_ascii_lowercase(),
                    bounded(value, MAX_KEPT_HEADER_LEN),
                ))
            })
            .collect();
        Ok(VerifiedDelivery {
            payload,
            dedup_key,
            metadata,
        })
    }

    /// Whether a verified payload passes this trigger's filters.
    pub fn matches(&self, payload: &Value) -> Result<(), FilterMiss> {
        filter::check_all(&self.filters, payload)
    }
}

/// A webhook configuration that cannot work.
///
/// The reason quotes at most a short excerpt of the configuration, and
/// never a token or secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid webhook {field}: {reason}")]
pub struct InvalidWebhookConfig {
    /// Which field is wrong.
    pub field: &'static str,
    /// What is wrong with it.
    pub reason: String,
}

fn is_json_media_type(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || essence
            .strip_prefix("application/")
            .is_some_and(|subtype| subtype.ends_with("+json"))
}

fn is_token(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// The longest header name a trigger reads a dedup key from or keeps, in
/// bytes.
const MAX_HEADER_NAME_LEN: usize = 256;

/// Why `name` cannot be a header read for a dedup key or kept as metadata.
fn check_header_name(name: &str) -> Result<(), String> {
    if name.len() > MAX_HEADER_NAME_LEN {
        Err(format!(
            "header name {:?} is {} bytes, more than {MAX_HEADER_NAME_LEN}",
            excerpt(name),
            name.len()
        ))
    } else if !is_token(name) {
        Err(format!("{:?} is not a valid header name", excerpt(name)))
    } else if is_credential_header(name) {
        Err(format!(
            "header {:?} may carry a credential and cannot be stored",
            excerpt(name)
        ))
    } else {
        Ok(())
    }
}

/// The deepest nesting of arrays and objects in `body`, counting only
/// brackets outside strings, and stopping as soon as it passes `limit`.
fn nesting_exceeds(body: &[u8], limit: usize) -> bool {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for &b in body {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > limit {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

fn parse_object(body: &[u8]) -> Result<Value, Rejection> {
    if nesting_exceeds(body, MAX_JSON_DEPTH) {
        return Err(Rejection::TooDeep);
    }
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        let message = e.to_string();
        // serde_json has no public error code for its recursion limit; the
        // pre-scan above should make this unreachable.
        if message.starts_with("recursion limit exceeded") {
            return Rejection::TooDeep;
        }
        let suffix = format!(" at line {} column {}", e.line(), e.column());
        Rejection::Malformed {
            line: e.line(),
            column: e.column(),
            message: excerpt(message.strip_suffix(&suffix).unwrap_or(&message)),
        }
    })?;
    if value.is_object() {
        Ok(value)
    } else {
        Err(Rejection::NotAnObject)
    }
}

/// Where a delivery's dedup key comes from.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(tag = "from", content = "name", rename_all = "snake_case")]
#[non_exhaustive]
pub enum DedupSource {
    /// A request header, such as `X-GitHub-Delivery` or `webhook-id`.
    Header(String),
    /// A string or number in the payload, at this JSON pointer. A number
    /// keys by its exact text in the body, so two integers beyond the range
    /// of `u64` that round to one `f64` are still two keys.
    JsonPointer(String),
    /// `sha256:` and the hex SHA-256 of the raw body: identical bodies are
    /// duplicates.
    #[default]
    BodyHash,
}

impl DedupSource {
    fn key(&self, headers: &Headers, payload: &Value, body: &[u8]) -> Result<String, Rejection> {
        let missing = |looked_for: String| Rejection::MissingDedupKey {
            looked_for: excerpt(&looked_for),
        };
        let key = match self {
            Self::BodyHash => return Ok(body_hash(body)),
            Self::Header(name) => headers
                .get(name)
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .ok_or_else(|| missing(format!("header {name}")))?
                .to_owned(),
            Self::JsonPointer(ptr) => match payload.pointer(ptr) {
                Some(Value::String(s)) if !s.is_empty() => s.clone(),
                Some(Value::Number(n)) if n.is_u64() || n.is_i64() => n.to_string(),
                // Beyond i64/u64 serde_json keeps the nearest f64 only:
                // read the number's own text instead.
                Some(Value::Number(_)) => raw_text_at(body, ptr)
                    .ok_or_else(|| missing(format!("pointer {ptr}")))?
                    .to_owned(),
                _ => return Err(missing(format!("pointer {ptr}"))),
            },
        };
        if key.len() > MAX_DEDUP_KEY_LEN || key.starts_with(HASHED_KEY_PREFIX) {
            Ok(body_hash(key.as_bytes()))
        } else {
            Ok(key)
        }
    }
}

fn body_hash(bytes: &[u8]) -> String {
    format!("{HASHED_KEY_PREFIX}{}", hex::encode(Sha256::digest(bytes)))
}

/// The text of the value at `pointer` in `body`, exactly as the sender
/// wrote it, resolved as [`Value::pointer`] resolves it (`~1` and `~0`
/// escapes, array indices without leading zeros, the last of duplicate
/// object keys). `body` is JSON that parsed already, so this only walks it.
///
/// serde_json's `arbitrary_precision` and `raw_value` features would give
/// the text too, but they change how every `Value` in the build parses: an
/// object whose first key is serde_json's private marker turns into a
/// number or into the JSON inside its string, payloads and stored records
/// included.
fn raw_text_at<'a>(body: &'a [u8], pointer: &str) -> Option<&'a str> {
    let mut scan = Scan { body, at: 0 };
    scan.whitespace();
    for token in pointer.split('/').skip(1) {
        let token = token.replace("~1", "/").replace("~0", "~");
        match scan.peek()? {
            b'{' => scan.enter_member(&token)?,
            b'[' => scan.enter_element(&token)?,
            _ => return None,
        }
    }
    let start = scan.at;
    scan.skip_value()?;
    std::str::from_utf8(body.get(start..scan.at)?).ok()
}

/// A cursor over well-formed JSON. Every step is bounds-checked: on input
/// that is not JSON it stops with `None`, never panics.
struct Scan<'a> {
    body: &'a [u8],
    at: usize,
}

impl Scan<'_> {
    fn peek(&self) -> Option<u8> {
        self.body.get(self.at).copied()
    }

    fn whitespace(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.at += 1;
        }
    }

    /// Moves past `byte`, after whitespace.
    fn expect(&mut self, byte: u8) -> Option<()> {
        self.whitespace();
        (self.peek()? == byte).then(|| self.at += 1)
    }

    /// From an object's `{` to the value of its last member named `name`.
    fn enter_member(&mut self, name: &str) -> Option<()> {
        self.expect(b'{')?;
        let mut found = None;
        loop {
            self.whitespace();
            if self.peek()? == b'}' {
                break;
            }
            let key_start = self.at;
            self.skip_value()?;
            let key = self.body.get(key_start..self.at)?;
            self.expect(b':')?;
            self.whitespace();
            if key_is(key, name) {
                found = Some(self.at);
            }
            self.skip_value()?;
            self.whitespace();
            if self.peek()? == b',' {
                self.at += 1;
            }
        }
        self.at = found?;
        Some(())
    }

    /// From an array's `[` to its element at `index` (a pointer token).
    fn enter_element(&mut self, index: &str) -> Option<()> {
        if index.starts_with('+') || (index.starts_with('0') && index.len() > 1) {
            return None;
        }
        let index: usize = index.parse().ok()?;
        self.expect(b'[')?;
        for _ in 0..index {
            self.whitespace();
            if self.peek()? == b']' {
                return None;
            }
            self.skip_value()?;
            self.expect(b',')?;
        }
        self.whitespace();
        (self.peek()? != b']').then_some(())
    }

    /// Moves past one value (which starts here).
    fn skip_value(&mut self) -> Option<()> {
        match self.peek()? {
            b'"' => {
                self.at += 1;
                loop {
                    match self.peek()? {
                        b'\\' => self.at += 2,
                        b'"' => break,
                        _ => self.at += 1,
                    }
                }
                self.at += 1;
            }
            b'{' | b'[' => {
                let mut depth = 0usize;
                loop {
                    match self.peek()? {
                        b'"' => {
                            self.skip_value()?;
                            continue;
                        }
                        b'{' | b'[' => depth += 1,
                        b'}' | b']' => depth = depth.checked_sub(1)?,
                        _ => {}
                    }
                    self.at += 1;
                    if depth == 0 {
                        break;
                    }
                }
            }
            _ => {
                while !matches!(
                    self.peek(),
                    None | Some(b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r')
                ) {
                    self.at += 1;
                }
            }
        }
        Some(())
    }
}

/// Whether the JSON string `raw` (quotes included) spells `name`.
fn key_is(raw: &[u8], name: &str) -> bool {
    if raw.contains(&b'\\') {
        serde_json::from_slice::<String>(raw).is_ok_and(|key| key == name)
    } else {
        raw.get(1..raw.len().saturating_sub(1)) == Some(name.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nesting_scan_ignores_strings() {
        assert!(!nesting_exceeds(br#"{"a": "[[[[[[[["}"#, 2));
        assert!(!nesting_exceeds(br#"{"a": "\"[[[[["}"#, 2));
        assert!(nesting_exceeds(b"[[[", 2));
    }

    #[test]
    fn serde_json_limit_agrees_with_max_depth() {
        let at_limit = format!(
            "{{\"a\":{}{}}}",
            "[".repeat(MAX_JSON_DEPTH - 1),
            "]".repeat(MAX_JSON_DEPTH - 1)
        );
        assert!(serde_json::from_str::<Value>(&at_limit).is_ok());
        assert!(parse_object(at_limit.as_bytes()).is_ok());
        let over = format!(
            "{{\"a\":{}{}}}",
            "[".repeat(MAX_JSON_DEPTH),
            "]".repeat(MAX_JSON_DEPTH)
        );
        assert_eq!(parse_object(over.as_bytes()), Err(Rejection::TooDeep));
    }

    #[test]
    fn serde_json_gives_no_key_a_meaning() {
        // With serde_json's raw_value or arbitrary_precision feature on
        // anywhere in the build, these would parse as a list and a number.
        for body in [
            &br#"{"$serde_json::private::RawValue":"[1]"}"#[..],
            br#"{"$serde_json::private::Number":"1"}"#,
        ] {
            let value: Value = serde_json::from_slice(body).expect("parses");
            assert!(value.is_object(), "{value}");
        }
    }

    #[test]
    fn raw_text_follows_the_pointer() {
        let body = br#" {"a" : [1, {"b" : 2.50 }, "x,]}"], "a\u0062": -1e400 , "a~/" : {}} "#;
        assert_eq!(raw_text_at(body, "/a/1/b"), Some("2.50"));
        assert_eq!(raw_text_at(body, "/a/2"), Some(r#""x,]}""#));
        assert_eq!(raw_text_at(body, "/ab"), Some("-1e400"));
        assert_eq!(raw_text_at(body, "/a~0~1"), Some("{}"));
        assert_eq!(raw_text_at(body, "/a/01"), None);
        assert_eq!(raw_text_at(body, "/a/3"), None);
        assert_eq!(raw_text_at(body, "/a/1/b/c"), None);
        assert_eq!(raw_text_at(body, "/nope"), None);
        for cut in 0..body.len() {
            let _ = raw_text_at(&body[..cut], "/a/1/b");
        }
    }

    #[test]
    fn media_types() {
        assert!(is_json_media_type("application/json"));
        assert!(is_json_media_type("Application/JSON; charset=utf-8"));
        assert!(is_json_media_type("application/vnd.github+json"));
        assert!(!is_json_media_type("application/x-www-form-urlencoded"));
        assert!(!is_json_media_type("text/plain"));
    }

    #[test]
    fn debug_redacts() {
        let scheme = SignatureScheme::github("hunter2");
        assert!(!format!("{scheme:?}").contains("hunter2"));
        let config = WebhookConfig::new("/hook")
            .with_token("tok-secret-0123456789")
            .expect("strong token")
            .with_signature(SignatureScheme::standard_webhooks(["whsec_c2VjcmV0"]));
        let debug = format!("{config:?}");
        assert!(!debug.contains("tok-secret"));
        assert!(!debug.contains("c2VjcmV0"));
        assert!(!debug.contains(&hex::encode(Sha256::digest(b"tok-secret-0123456789"))));
    }
}
