//! A webhook delivery as the HTTP layer hands it over, the delivery once
//! verified, and why a delivery may be refused.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;

/// How deeply arrays and objects may nest in a payload. serde_json stops at
/// this depth anyway; checking first turns it into [`Rejection::TooDeep`].
pub const MAX_JSON_DEPTH: usize = 127;

/// The default Standard Webhooks timestamp tolerance: 5 minutes, as the
/// specification recommends.
pub const DEFAULT_TIMESTAMP_TOLERANCE: Duration = Duration::from_secs(5 * 60);

/// The header that carries a GitHub signature.
pub const GITHUB_SIGNATURE_HEADER: &str = "x-hub-signature-256";

/// Request headers, looked up case-insensitively.
///
/// Values are text: an HTTP layer drops (or lossily converts) header values
/// that are not valid UTF-8.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers(Vec<(String, String)>);

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
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WebhookRequest {
    /// Its headers.
    pub headers: Headers,
    /// Its body, exactly as received: signatures are over these bytes.
    pub body: Vec<u8>,
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
    /// The configured headers that were present, names lowercase.
    pub metadata: BTreeMap<String, String>,
}

/// Why a delivery was refused. Nothing is stored for a rejected delivery.
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
            Self::Misconfigured(_) => 500,
        }
    }
}
