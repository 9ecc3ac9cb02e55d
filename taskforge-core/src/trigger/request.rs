//! A webhook delivery as the HTTP layer hands it over, the delivery once
//! verified, and why a delivery may be refused.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// How deeply arrays and objects may nest in a payload. serde_json stops at
/// this depth anyway; checking first turns it into [`Rejection::TooDeep`].
pub const MAX_JSON_DEPTH: usize = 127;

/// The default Standard Webhooks timestamp tolerance: 5 minutes, as the
/// specification recommends.
pub const DEFAULT_TIMESTAMP_TOLERANCE: Duration = Duration::from_secs(5 * 60);

/// The header that carries a GitHub signature.
pub const GITHUB_SIGNATURE_HEADER: &str = "x-hub-signature-256";

/// The longest value of a kept header stored in event metadata, in bytes;
/// a longer one is cut at a character boundary and ends with
/// [`TRUNCATION_MARKER`].
pub const MAX_KEPT_HEADER_LEN: usize = 512;

/// The most headers a webhook trigger may keep as event metadata.
pub const MAX_KEPT_HEADERS: usize = 32;

/// What ends a value or message that was cut short.
pub const TRUNCATION_MARKER: &str = "...(truncated)";

/// The longest excerpt of its input (a header, a pointer, a name) an error
/// message quotes, in characters.
pub(crate) const MAX_EXCERPT_CHARS: usize = 64;

/// Parts of header names that mark a header as carrying credentials.
const CREDENTIAL_NAME_PARTS: [&str; 12] = [
    "authorization",
    "cookie",
    "signature",
    "token",
    "secret",
    "password",
    "credential",
    "hmac",
    "api-key",
    "apikey",
    "access-key",
    "private-key",
];

/// Whether the header `name` may carry a credential, whatever its case:
/// `Authorization`, `Proxy-Authorization`, `Cookie`, `Set-Cookie`, and any
/// name containing `signature` (`X-Hub-Signature-256`, `webhook-signature`,
/// `Stripe-Signature`, ...), `token` (`X-Gitlab-Token`), `secret`,
/// `password`, `credential`, `hmac` (`X-Shopify-Hmac-Sha256`), `api-key`,
/// `apikey`, `access-key` or `private-key`.
///
/// Such headers cannot be kept as event metadata or used as a dedup key,
/// and `Debug` of [`Headers`] does not print their values. The rule is by
/// name and errs on the side of caution; a credential under a name it
/// does not catch must not be configured as kept.
#[must_use]
pub fn is_credential_header(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    CREDENTIAL_NAME_PARTS.iter().any(|part| name.contains(part))
}

/// At most `max` bytes of `value`, cut at a character boundary and ended
/// with [`TRUNCATION_MARKER`] when it was longer.
pub(crate) fn bounded(value: &str, max: usize) -> String {
    if value.len() <= max {
        return value.to_owned();
    }
    let mut end = max;
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{TRUNCATION_MARKER}", &value[..end])
}

/// At most [`MAX_EXCERPT_CHARS`] characters of `input`, for an error
/// message, marked when cut: a message never echoes a large input.
pub(crate) fn excerpt(input: &str) -> String {
    match input.char_indices().nth(MAX_EXCERPT_CHARS) {
        Some((end, _)) => format!("{}{TRUNCATION_MARKER}", &input[..end]),
        None => input.to_owned(),
    }
}

/// Request headers, looked up case-insensitively.
///
/// Values are text: an HTTP layer drops (or lossily converts) header values
/// that are not valid UTF-8. `Debug` prints the values of
/// [credential headers](is_credential_header) as `<redacted>` and cuts long
/// values short.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Headers(Vec<(String, String)>);

impl fmt::Debug for Headers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut map = f.debug_map();
        for (name, value) in &self.0 {
            if is_credential_header(name) {
                map.entry(&excerpt(name), &format_args!("<redacted>"));
            } else {
                map.entry(&excerpt(name), &excerpt(value));
            }
        }
        map.finish()
    }
}

impl Headers {
    /// No headers.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a header; an earlier one of the same name is kept and wins lookups.
    pub fn append(&mut self, name: impl Into<String>, value: impl Into<String>) {
        self.0.push((name.into(), value.into()));
    }

    /// The first value of the header `name`, whatever its case.
    #[must_use]
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Every header, in the order added.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(n, v)| (n.as_str(), v.as_str()))
    }
}

impl<N: Into<String>, V: Into<String>> FromIterator<(N, V)> for Headers {
    fn from_iter<I: IntoIterator<Item = (N, V)>>(iter: I) -> Self {
        Self(
            iter.into_iter()
                .map(|(n, v)| (n.into(), v.into()))
                .collect(),
        )
    }
}

/// A delivery as the HTTP layer received it.
///
/// `Debug` redacts credential headers (see [`Headers`]) and prints only
/// the body's size.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct WebhookRequest {
    /// Its headers.
    pub headers: Headers,
    /// Its body, exactly as received: signatures are over these bytes.
    pub body: Vec<u8>,
}

impl fmt::Debug for WebhookRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookRequest")
            .field("headers", &self.headers)
            .field("body", &format_args!("<{} bytes>", self.body.len()))
            .finish()
    }
}

impl WebhookRequest {
    /// A request with these headers and body.
    #[must_use]
    pub fn new(headers: Headers, body: impl Into<Vec<u8>>) -> Self {
        Self {
            headers,
            body: body.into(),
        }
    }
}

/// A delivery that passed verification, ready to become an event.
#[derive(Debug, Clone, PartialEq)]
pub struct VerifiedDelivery {
    /// The body, parsed; always a JSON object.
    pub payload: Value,
    /// The key that makes a repeat of this delivery a duplicate.
    pub dedup_key: String,
    /// The configured headers that were present, names lowercase, values
    /// cut to [`MAX_KEPT_HEADER_LEN`] bytes.
    pub metadata: BTreeMap<String, String>,
}

/// Why a delivery was refused.
///
/// Messages quote at most a short excerpt of the input they are about
/// (see [`TRUNCATION_MARKER`]), never a credential.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Rejection {
    /// The body is larger than the trigger accepts. HTTP 413.
    #[error("body of {size} bytes is larger than the limit of {limit}")]
    TooLarge {
        /// The body's size in bytes.
        size: usize,
        /// The limit in bytes.
        limit: usize,
    },
    /// A token or signature is missing or wrong, or the timestamp is
    /// stale. HTTP 401.
    #[error("unauthorized: {0}")]
    Unauthorized(String),
    /// The `Content-Type` is not JSON. HTTP 415.
    #[error("unsupported content type {0:?}, expected application/json")]
    UnsupportedMediaType(String),
    /// The body is not well-formed JSON. HTTP 400.
    #[error("malformed json at line {line} column {column}: {message}")]
    Malformed {
        /// The line of the error, from 1.
        line: usize,
        /// The column of the error, from 1.
        column: usize,
        /// What is wrong.
        message: String,
    },
    /// The body is JSON but not an object. HTTP 400.
    #[error("payload is not a json object")]
    NotAnObject,
    /// Arrays and objects nest deeper than [`MAX_JSON_DEPTH`]. HTTP 400.
    #[error("payload nests deeper than {MAX_JSON_DEPTH} levels")]
    TooDeep,
    /// The configured dedup source is absent from the delivery. HTTP 400.
    #[error("dedup key missing: no {looked_for}")]
    MissingDedupKey {
        /// Which header or pointer was looked for.
        looked_for: String,
    },
    /// The payload does not fit the trigger's declared
    /// [`InputShape`](crate::webhook::InputShape): a required value is
    /// missing or of another type. HTTP 422.
    #[error(
        "payload does not fit the trigger's input: {pointer:?} must be {expected}, found {}",
        found.map_or_else(|| "nothing".to_owned(), |found| found.to_string())
    )]
    Unprocessable {
        /// The pointer of the first required value that does not fit (at
        /// most an excerpt of it).
        pointer: String,
        /// The type required there.
        expected: JsonType,
        /// The type found there; `None` when there is no value at all.
        found: Option<JsonType>,
    },
    /// The trigger's own configuration makes verification impossible (for
    /// example no signing key decodes). HTTP 500: not the sender's fault.
    #[error("webhook trigger misconfigured: {0}")]
    Misconfigured(String),
}

impl Rejection {
    /// The HTTP status an HTTP layer should answer with.
    #[must_use]
    pub fn http_status(&self) -> u16 {
        match self {
            Self::TooLarge { .. } => 413,
            Self::Unauthorized(_) => 401,
            Self::UnsupportedMediaType(_) => 415,
            Self::Malformed { .. }
            | Self::NotAnObject
            | Self::TooDeep
            | Self::MissingDedupKey { .. } => 400,
            Self::Unprocessable { .. } => 422,
            Self::Misconfigured(_) => 500,
        }
    }
}

/// A JSON type, as an input shape requires it and a refusal names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum JsonType {
    /// Any value, `null` included: the value only has to be there.
    Any,
    /// `null`.
    Null,
    /// `true` or `false`.
    Boolean,
    /// Any number.
    Number,
    /// A number without a fractional part, whatever its size or notation
    /// (`7`, `7.0`, `1e3`, a 30-digit id), as JSON Schema's `integer`.
    Integer,
    /// A string.
    String,
    /// An array.
    Array,
    /// An object.
    Object,
}

impl JsonType {
    /// The most specific type of `value`: [`Integer`](Self::Integer) for
    /// a number without a fractional part, never [`Any`](Self::Any).
    #[must_use]
    pub fn of(value: &Value) -> Self {
        match value {
            Value::Null => Self::Null,
            Value::Bool(_) => Self::Boolean,
            Value::Number(n) if is_integral(n) => Self::Integer,
            Value::Number(_) => Self::Number,
            Value::String(_) => Self::String,
            Value::Array(_) => Self::Array,
            Value::Object(_) => Self::Object,
        }
    }

    /// Whether `value` is of this type.
    #[must_use]
    pub fn accepts(self, value: &Value) -> bool {
        match (self, Self::of(value)) {
            (Self::Any, _) | (Self::Number, Self::Integer) => true,
            (expected, found) => expected == found,
        }
    }
}

impl std::fmt::Display for JsonType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Any => "any value",
            Self::Null => "null",
            Self::Boolean => "a boolean",
            Self::Number => "a number",
            Self::Integer => "an integer",
            Self::String => "a string",
            Self::Array => "an array",
            Self::Object => "an object",
        })
    }
}

fn is_integral(n: &serde_json::Number) -> bool {
    n.is_i64()
        || n.is_u64()
        || n.as_f64()
            .is_some_and(|f| f.is_finite() && f.fract() == 0.0)
}
