//! The OpenAPI 3.1 document, generated from the handlers' annotations and
//! served at `/api/v1/openapi.json`.

use std::sync::OnceLock;

use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::api;

/// The document's description of the API.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Taskforge",
        description = "Webhooks and the management API of a Taskforge engine. Every `/api/v1` route takes `Authorization: Bearer tf_…`; errors are `application/problem+json` (RFC 9457)."
    ),
    paths(
        crate::health::healthz,
        crate::health::readyz,
        crate::hooks::deliver,
        document,
        api::workflows::list,
        api::workflows::create,
        api::workflows::get_one,
        api::workflows::activate,
        api::workflows::deactivate,
        api::workflows::versions,
        api::workflows::publish,
        api::workflows::version,
        api::workflows::diff,
        api::runs::start,
        api::runs::list,
        api::runs::get_one,
        api::runs::cancel,
        api::runs::resume,
        api::runs::signal,
        api::runs::wait,
        api::runs::logs,
        api::secrets::list,
        api::secrets::put,
        api::secrets::delete,
        api::runs::artifacts,
        api::runs::artifact,
        api::triggers::list,
        api::triggers::create,
        api::triggers::get_one,
        api::triggers::update,
        api::triggers::delete,
        api::triggers::ensure,
        api::triggers::enable,
        api::triggers::disable,
        api::triggers::rotate,
        api::events::list,
        api::events::get_one,
        api::events::runs,
        api::events::replay,
        api::stream::stream,
        api::tokens::list,
        api::tokens::create,
        api::tokens::get_one,
        api::tokens::revoke,
    ),
    components(schemas(crate::Problem)),
    modifiers(&BearerToken)
)]
pub(crate) struct ApiDoc;

struct BearerToken;

impl Modify for BearerToken {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "token",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("tf_…")
                    .description(Some(
                        "An API token: `tf_`, 43 base62 characters and a 6-character checksum",
                    ))
                    .build(),
            ),
        );
    }
}

/// The OpenAPI document, as JSON.
pub fn openapi_json() -> &'static str {
    static DOCUMENT: OnceLock<String> = OnceLock::new();
    DOCUMENT.get_or_init(|| ApiDoc::openapi().to_json().unwrap_or_default())
}

/// This document.
#[utoipa::path(get, path = "/api/v1/openapi.json", tag = "health",
    responses((status = 200, description = "The OpenAPI 3.1 document", body = Object)))]
pub(crate) async fn document() -> impl IntoResponse {
    ([(CONTENT_TYPE, "application/json")], openapi_json())
}
