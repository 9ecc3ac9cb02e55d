//! Errors as [RFC 9457](https://www.rfc-editor.org/rfc/rfc9457) problem
//! details: every error this crate answers is `application/problem+json`
//! with a stable `type` per reason.

use std::time::Duration;

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::Value;
use taskforge_core::artifact::ArtifactError;
use taskforge_core::webhook::Rejection;
use taskforge_core::{EngineError, StoreError};
use utoipa::ToSchema;

/// The prefix of every problem `type`: a URN, stable across releases and
/// hosts, so clients can match on it.
pub const PROBLEM_TYPE_PREFIX: &str = "urn:taskforge:problem:";

/// The media type of a problem.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// A problem detail: what every error response of this crate carries.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Problem {
    /// `urn:taskforge:problem:` and a slug naming the reason, such as
    /// `unauthorized` or `webhook-signature`.
    #[serde(rename = "type")]
    pub kind: String,
    /// A short summary of the reason, the same for every occurrence.
    pub title: String,
    /// The HTTP status.
    pub status: u16,
    /// What went wrong this time.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// More members, such as the problems of a definition.
    #[serde(flatten, skip_serializing_if = "serde_json::Map::is_empty")]
    #[schema(value_type = Object)]
    pub extra: serde_json::Map<String, Value>,
    #[serde(skip)]
    retry_after: Option<Duration>,
}

impl Problem {
    /// A problem of `status`, with the slug `slug` and a `title`.
    #[must_use]
    pub fn new(status: StatusCode, slug: &str, title: &str) -> Self {
        Self {
            kind: format!("{PROBLEM_TYPE_PREFIX}{slug}"),
            title: title.to_owned(),
            status: status.as_u16(),
            detail: None,
            extra: serde_json::Map::new(),
            retry_after: None,
        }
    }

    /// With a `detail`.
    #[must_use]
    pub fn detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    /// With an extension member.
    #[must_use]
    pub fn with(mut self, name: &str, value: impl Serialize) -> Self {
        self.extra.insert(
            name.to_owned(),
            serde_json::to_value(value).unwrap_or(Value::Null),
        );
        self
    }

    /// Answered with a `Retry-After` header.
    #[must_use]
    pub fn retry_after(mut self, after: Duration) -> Self {
        self.retry_after = Some(after);
        self
    }

    /// The status as a [`StatusCode`].
    #[must_use]
    pub fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    /// 400: the request is malformed.
    #[must_use]
    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad-request", "Bad request").detail(detail)
    }

    /// 401: no valid token.
    #[must_use]
    pub fn unauthorized(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "Missing or invalid API token",
        )
        .detail(detail)
    }

    /// 403: the token lacks a scope or does not reach a workflow.
    #[must_use]
    pub fn forbidden(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "Not allowed for this token",
        )
        .detail(detail)
    }

    /// 404: nothing here.
    #[must_use]
    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not-found", "Not found").detail(detail)
    }

    /// 503: saturated or shutting down; try again after `after`.
    #[must_use]
    pub fn unavailable(detail: impl Into<String>, after: Duration) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "Service unavailable",
        )
        .detail(detail)
        .retry_after(after)
    }

    /// 500: something failed on our side; the detail is logged, not shown.
    #[must_use]
    pub fn internal(error: &dyn std::fmt::Display) -> Self {
        tracing::error!(%error, "request failed");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "Internal server error",
        )
    }

    /// The answer to a webhook delivery the engine refused.
    #[must_use]
    pub fn rejection(rejection: &Rejection) -> Self {
        let (status, slug, title) = match rejection {
            Rejection::TooLarge { .. } => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "webhook-too-large",
                "Webhook body too large",
            ),
            Rejection::Unauthorized(_) => (
                StatusCode::UNAUTHORIZED,
                "webhook-unauthorized",
                "Webhook delivery not authenticated",
            ),
            Rejection::UnsupportedMediaType(_) => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "webhook-media-type",
                "Webhook body is not JSON",
            ),
            Rejection::Malformed { .. } => (
                StatusCode::BAD_REQUEST,
                "webhook-malformed",
                "Webhook body is not well-formed JSON",
            ),
            Rejection::TooDeep => (
                StatusCode::BAD_REQUEST,
                "webhook-too-deep",
                "Webhook body nests too deeply",
            ),
            // Well-formed but unusable: the semantics, not the syntax, are wrong.
            Rejection::NotAnObject => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "webhook-not-an-object",
                "Webhook body is not a JSON object",
            ),
            Rejection::MissingDedupKey { .. } => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "webhook-missing-dedup-key",
                "Webhook delivery has no dedup key",
            ),
            Rejection::Misconfigured(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "webhook-misconfigured",
                "Webhook trigger misconfigured",
            ),
            other => (
                StatusCode::from_u16(other.http_status()).unwrap_or(StatusCode::BAD_REQUEST),
                "webhook-rejected",
                "Webhook delivery rejected",
            ),
        };
        // Rejection messages name what failed, never a token or signature.
        Self::new(status, slug, title).detail(rejection.to_string())
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = self.status_code();
        let retry_after = self.retry_after;
        let body = serde_json::to_vec(&self).unwrap_or_default();
        let mut response = (status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        if let Some(after) = retry_after {
            headers.insert(header::RETRY_AFTER, after.as_secs().max(1).into());
        }
        response
    }
}

impl From<StoreError> for Problem {
    fn from(error: StoreError) -> Self {
        match &error {
            StoreError::NotFound { .. } => Self::not_found(error.to_string()),
            StoreError::AlreadyExists { .. } => {
                Self::new(StatusCode::CONFLICT, "already-exists", "Already exists")
                    .detail(error.to_string())
            }
            StoreError::Conflict { .. } => {
                Self::new(StatusCode::CONFLICT, "conflict", "Conflict").detail(error.to_string())
            }
            StoreError::Invalid(_) => Self::bad_request(error.to_string()),
            _ => Self::internal(&error),
        }
    }
}

impl From<EngineError> for Problem {
    fn from(error: EngineError) -> Self {
        let error = match error {
            EngineError::Store(store) => return store.into(),
            other => other,
        };
        let unprocessable = |slug: &str, title: &str| {
            Self::new(StatusCode::UNPROCESSABLE_ENTITY, slug, title).detail(error.to_string())
        };
        let conflict = |slug: &str, title: &str| {
            Self::new(StatusCode::CONFLICT, slug, title).detail(error.to_string())
        };
        match &error {
            EngineError::InvalidDefinition(invalid) => {
                let problems: Vec<String> =
                    invalid.problems.iter().map(ToString::to_string).collect();
                unprocessable("invalid-definition", "Invalid workflow definition")
                    .with("problems", problems)
            }
            EngineError::InvalidName { .. } => {
                unprocessable("invalid-name", "Invalid workflow name")
            }
            EngineError::InvalidInput(_) => unprocessable("invalid-input", "Invalid input"),
            EngineError::InvalidTrigger(_) => {
                unprocessable("invalid-trigger", "Invalid trigger configuration")
            }
            EngineError::IllegalTransition(_) => {
                conflict("illegal-transition", "Illegal state transition")
            }
            EngineError::WorkflowInactive(_) => {
                conflict("workflow-inactive", "Workflow is inactive")
            }
            EngineError::NoVersion(_) => conflict("no-version", "Workflow has no version"),
            EngineError::RunFinished { .. } => conflict("run-finished", "Run is already finished"),
            EngineError::NotResumable { .. } => conflict("not-resumable", "Run cannot be resumed"),
            EngineError::Artifact(ArtifactError::NotFound { .. }) => {
                Self::not_found(error.to_string())
            }
            EngineError::Artifact(ArtifactError::InvalidName(_)) => {
                Self::bad_request(error.to_string())
            }
            EngineError::Artifact(ArtifactError::NoStore) => {
                Self::not_found("this server keeps no artifacts")
            }
            EngineError::NoMasterKey => conflict("no-master-key", "The server keeps no secrets"),
            EngineError::Limited { key, event_id } => {
                conflict("limited", "Concurrency limit reached")
                    .with("key", key)
                    .with("event_id", event_id.to_string())
            }
            EngineError::Secret(secret) if secret.is_not_found() => {
                Self::not_found(error.to_string())
            }
            _ => Self::internal(&error),
        }
    }
}

impl From<QueryRejection> for Problem {
    fn from(rejection: QueryRejection) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid-query",
            "Invalid query string",
        )
        .detail(rejection.body_text())
    }
}

impl From<PathRejection> for Problem {
    fn from(rejection: PathRejection) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid-path",
            "Invalid path parameter",
        )
        .detail(rejection.body_text())
    }
}
