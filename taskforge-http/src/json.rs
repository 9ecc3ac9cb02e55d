//! JSON bodies in and out, without axum's `json` feature: that feature
//! turns on serde_json's `raw_value`, which gives the object key
//! `$serde_json::private::RawValue` a meaning in every `Value` parsed
//! anywhere in the host's build, so a webhook payload carrying it would no
//! longer read back as it was sent.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::Problem;

/// A JSON body: read from a request (which must say it is JSON), or
/// written as a response.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Json<T>(pub(crate) T);

impl<T: Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        match serde_json::to_vec(&self.0) {
            Ok(bytes) => (
                [(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                )],
                bytes,
            )
                .into_response(),
            Err(error) => Problem::internal(&error).into_response(),
        }
    }
}

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Json<T> {
    type Rejection = Problem;

    async fn from_request(request: Request, state: &S) -> Result<Self, Problem> {
        let is_json = request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .is_some_and(is_json_media_type);
        if !is_json {
            return Err(Problem::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported-media-type",
                "Request body refused",
            )
            .detail("expected a body with Content-Type: application/json"));
        }
        let bytes = Bytes::from_request(request, state).await.map_err(|e| {
            Problem::new(e.status(), "too-large", "Request body refused").detail(e.body_text())
        })?;
        serde_json::from_slice(&bytes).map(Json).map_err(|error| {
            let (status, slug) = if error.is_data() {
                (StatusCode::UNPROCESSABLE_ENTITY, "invalid-body")
            } else {
                (StatusCode::BAD_REQUEST, "malformed-body")
            };
            Problem::new(status, slug, "Request body refused").detail(error.to_string())
        })
    }
}

/// `application/json`, or any `application/*+json`, parameters aside.
fn is_json_media_type(value: &str) -> bool {
    let essence = value.split(';').next().unwrap_or_default().trim();
    essence.eq_ignore_ascii_case("application/json")
        || essence.split_once('/').is_some_and(|(kind, subtype)| {
            kind.eq_ignore_ascii_case("application")
                && subtype.to_ascii_lowercase().ends_with("+json")
        })
}
