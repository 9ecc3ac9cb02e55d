//! The HTTP side: requests to the management API with a token, and every
//! way they fail turned into one line a person can act on.

use std::fmt;
use std::time::Duration;

use reqwest::{Method, Response, StatusCode};
use serde_json::Value;

/// How long a plain request may take (not a stream).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// Why a command failed; its `Display` is the one line printed on stderr.
#[derive(Debug)]
pub(crate) enum Error {
    /// The server answered with an error status.
    Status {
        status: StatusCode,
        /// The problem's `title`, or the body's first line.
        title: String,
        detail: Option<String>,
    },
    /// The server could not be reached (refused, unresolvable, timed out).
    Connect { url: String, cause: String },
    /// Something else, already worded.
    Other(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Status {
                status,
                title,
                detail,
            } => {
                write!(f, "{title}")?;
                if let Some(detail) = detail {
                    write!(f, ": {detail}")?;
                }
                write!(f, " (HTTP {})", status.as_u16())
            }
            Self::Connect { url, cause } => write!(f, "cannot reach {url}: {cause}"),
            Self::Other(message) => f.write_str(message),
        }
    }
}

impl Error {
    pub(crate) fn other(message: impl Into<String>) -> Self {
        Self::Other(message.into())
    }
}

/// A client of one server, with one token.
#[derive(Debug)]
pub(crate) struct Api {
    base: String,
    token: Option<String>,
    http: reqwest::Client,
}

impl Api {
    pub(crate) fn new(base: &str, token: Option<String>) -> Result<Self, Error> {
        let base = base.trim_end_matches('/').to_owned();
        let parsed = reqwest::Url::parse(&base)
            .map_err(|e| Error::other(format!("invalid server URL {base:?}: {e}")))?;
        if parsed.scheme() != "http" {
            return Err(Error::other(format!(
                "invalid server URL {base:?}: only http:// is supported by this build (put a TLS proxy in front, or reach the server over loopback)"
            )));
        }
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .user_agent(concat!("taskforge-cli/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Error::other(format!("cannot build the HTTP client: {e}")))?;
        let token = token.map(|t| t.trim().to_owned()).filter(|t| !t.is_empty());
        Ok(Self { base, token, http })
    }

    fn token(&self) -> Result<&str, Error> {
        self.token
            .as_deref()
            .ok_or_else(|| Error::other("no API token: set TASKFORGE_TOKEN or pass --token tf_..."))
    }

    /// Sends a request to `path` (which starts with `/`), failing on any
    /// status that is not a success.
    async fn send(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&Value>,
        timeout: Option<Duration>,
    ) -> Result<Response, Error> {
        self.send_accepting(method, path, query, body, timeout, "application/json")
            .await
    }

    /// [`send`](Self::send), asking for `accept` (errors still come back as
    /// problem JSON).
    async fn send_accepting(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&Value>,
        timeout: Option<Duration>,
        accept: &str,
    ) -> Result<Response, Error> {
        let url = format!("{}{path}", self.base);
        let mut request = self
            .http
            .request(method, &url)
            .bearer_auth(self.token()?)
            .header("accept", accept);
        if !query.is_empty() {
            request = request.query(query);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        if let Some(timeout) = timeout {
            request = request.timeout(timeout);
        }
        let response = request.send().await.map_err(|e| self.transport(&e))?;
        if response.status().is_success() {
            Ok(response)
        } else {
            Err(failure(response).await)
        }
    }

    /// `GET path?query`, as JSON.
    pub(crate) async fn get(&self, path: &str, query: &[(&str, String)]) -> Result<Value, Error> {
        let response = self
            .send(Method::GET, path, query, None, Some(REQUEST_TIMEOUT))
            .await?;
        self.json(response).await
    }

    /// `POST path` with an optional JSON body, as JSON.
    pub(crate) async fn post(&self, path: &str, body: Option<&Value>) -> Result<Value, Error> {
        let response = self
            .send(Method::POST, path, &[], body, Some(REQUEST_TIMEOUT))
            .await?;
        self.json(response).await
    }

    /// `PUT path` with a JSON body, as JSON.
    pub(crate) async fn put(&self, path: &str, body: &Value) -> Result<Value, Error> {
        let response = self
            .send(Method::PUT, path, &[], Some(body), Some(REQUEST_TIMEOUT))
            .await?;
        self.json(response).await
    }

    /// `DELETE path`; its answer, if any, as JSON (`null` for a 204).
    pub(crate) async fn delete(&self, path: &str) -> Result<Value, Error> {
        let response = self
            .send(Method::DELETE, path, &[], None, Some(REQUEST_TIMEOUT))
            .await?;
        self.json(response).await
    }

    /// `GET path` for bytes (not JSON), without a time limit: the caller
    /// reads the body as it comes, with its own idle limit.
    pub(crate) async fn download(&self, path: &str) -> Result<Response, Error> {
        self.send_accepting(
            Method::GET,
            path,
            &[],
            None,
            None,
            "application/octet-stream, application/problem+json",
        )
        .await
    }

    /// `GET path?query` without a time limit, for a stream read as it comes.
    pub(crate) async fn stream(
        &self,
        path: &str,
        query: &[(&str, String)],
    ) -> Result<Response, Error> {
        self.send(Method::GET, path, query, None, None).await
    }

    /// Every item of a paged listing (following `next`), up to `cap`.
    pub(crate) async fn all(
        &self,
        path: &str,
        query: &[(&str, String)],
        cap: usize,
    ) -> Result<Vec<Value>, Error> {
        let mut items = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let mut q = query.to_vec();
            q.push(("limit", "1000".to_owned()));
            if let Some(after) = &after {
                q.push(("after", after.clone()));
            }
            let page = self.get(path, &q).await?;
            if let Some(page_items) = page["items"].as_array() {
                items.extend(page_items.iter().cloned());
            }
            match page["next"].as_str() {
                Some(next) if items.len() < cap => after = Some(next.to_owned()),
                _ => return Ok(items),
            }
        }
    }

    async fn json(&self, response: Response) -> Result<Value, Error> {
        let bytes = response.bytes().await.map_err(|e| self.transport(&e))?;
        if bytes.is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&bytes)
            .map_err(|e| Error::other(format!("the server's answer is not JSON: {e}")))
    }

    /// A failure below HTTP: connection refused, DNS, timeout, reset.
    pub(crate) fn transport(&self, error: &reqwest::Error) -> Error {
        if error.is_timeout() {
            return Error::Connect {
                url: self.base.clone(),
                cause: "no answer in time".to_owned(),
            };
        }
        Error::Connect {
            url: self.base.clone(),
            cause: root_cause(error),
        }
    }
}

/// The innermost cause of an error: "connection refused" rather than
/// "error sending request for url (...)".
fn root_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut last = error;
    while let Some(source) = last.source() {
        last = source;
    }
    let text = last.to_string();
    // "Connection refused (os error 111)" -> "connection refused".
    let text = text.split(" (os error").next().unwrap_or(&text).to_owned();
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => "unknown error".to_owned(),
    }
}

/// An error answer: a problem's title and detail, or the body's start.
async fn failure(response: Response) -> Error {
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    match serde_json::from_str::<Value>(&text) {
        Ok(problem) if problem["title"].is_string() => Error::Status {
            status,
            title: problem["title"].as_str().unwrap_or_default().to_owned(),
            detail: problem["detail"].as_str().map(str::to_owned),
        },
        _ => {
            let first = text.lines().next().unwrap_or("").trim();
            let title = status.canonical_reason().unwrap_or("error").to_owned();
            Error::Status {
                status,
                title,
                detail: (!first.is_empty()).then(|| first.chars().take(200).collect()),
            }
        }
    }
}

/// `text` as one URL path segment: ids come from the command line, so a
/// `/` or `?` in them must not change which route is asked.
pub(crate) fn segment(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// A secret's name as the rest of a URL path: each `/`-separated part
/// escaped as a [`segment`], the `/` kept (the route takes the rest of the
/// path). Parts that are empty, `.` or `..` are refused, since a URL would
/// resolve them to another route (`%2E` too counts as a dot there); the
/// server refuses such names anyway.
pub(crate) fn segments(name: &str) -> Result<String, String> {
    let mut parts = Vec::new();
    for part in name.split('/') {
        if part.is_empty() || part == "." || part == ".." {
            return Err(format!(
                "invalid name {name:?}: '/' must separate non-empty parts other than '.' and '..'"
            ));
        }
        parts.push(segment(part));
    }
    Ok(parts.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multi_part_names_keep_their_slashes() {
        assert_eq!(segments("deploy/token").unwrap(), "deploy/token");
        assert_eq!(segments("a b/c?d").unwrap(), "a%20b/c%3Fd");
        for bad in ["", "/a", "a/", "a//b", "a/../b", "..", "./a"] {
            assert!(segments(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn segments_are_escaped() {
        assert_eq!(segment("0190-ab_c.d~"), "0190-ab_c.d~");
        assert_eq!(segment("../a?b"), "..%2Fa%3Fb");
        assert_eq!(segment("é"), "%C3%A9");
    }

    #[test]
    fn errors_read_as_one_line() {
        let problem = Error::Status {
            status: StatusCode::UNAUTHORIZED,
            title: "Missing or invalid API token".into(),
            detail: Some("unknown token".into()),
        };
        assert_eq!(
            problem.to_string(),
            "Missing or invalid API token: unknown token (HTTP 401)"
        );
        let refused = Error::Connect {
            url: "http://127.0.0.1:9".into(),
            cause: "connection refused".into(),
        };
        assert_eq!(
            refused.to_string(),
            "cannot reach http://127.0.0.1:9: connection refused"
        );
    }

    #[test]
    fn only_http_urls() {
        assert!(Api::new("http://127.0.0.1:8080/", None).is_ok());
        assert!(Api::new("https://example.invalid", None).is_err());
        assert!(Api::new("not a url", None).is_err());
    }
}
