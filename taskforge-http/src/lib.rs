//! HTTP for the Taskforge workflow engine: an [axum] [`Router`] a host
//! application mounts in its own app (`nest` or `merge`), on any store.
//!
//! - `POST /hooks/{path}`: webhook deliveries, verified by the engine over
//!   the raw body bytes and every header; 202 accepted, 200 duplicate, 204
//!   filtered, and rejections as `application/problem+json`
//!   ([RFC 9457](https://www.rfc-editor.org/rfc/rfc9457)). `?wait=<ms>`
//!   holds the answer until the run finishes.
//! - `/api/v1/...`: workflows, versions, triggers, runs, events, tokens, and
//!   a server-sent event stream of run updates; JSON in and out, cursor
//!   pagination, and API tokens (`Authorization: Bearer tf_…`) with scopes
//!   as the only way in.
//! - `/api/v1/openapi.json`: the OpenAPI 3.1 document, generated from the
//!   handlers.
//! - `/healthz`, `/readyz`.
//! - The inspector web UI, where [`HttpOptions::ui`] mounts it.
//!
//! Every error is a [`Problem`] with a stable `type`
//! (`urn:taskforge:problem:<reason>`).
//!
//! # Example
//!
//! A router on the in-memory store, its first admin token, and one request
//! served without a socket, with [`tower::ServiceExt::oneshot`]:
//!
//! ```
//! use axum::body::Body;
//! use axum::http::{Request, StatusCode};
//! use taskforge_core::{Engine, StepRegistry};
//! use taskforge_http::{bootstrap, router, Bootstrap, HttpOptions};
//! use taskforge_store_memory::MemoryStore;
//! use tower::ServiceExt;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let engine = Engine::builder(MemoryStore::new(), StepRegistry::new()).build();
//! engine.start();
//! let Bootstrap::Created(admin) = bootstrap(engine.store(), None, chrono::Utc::now()).await? else {
//!     unreachable!("a new store has no tokens");
//! };
//! let app = router(engine, HttpOptions::default());
//!
//! let request = Request::post("/api/v1/workflows")
//!     .header("authorization", format!("Bearer {}", admin.expose()))
//!     .header("content-type", "application/json")
//!     .body(Body::from(r#"{"name": "deploy-api"}"#))?;
//! let response = app.oneshot(request).await?;
//! assert_eq!(response.status(), StatusCode::CREATED);
//! # Ok(())
//! # }
//! ```
//!
//! # Security
//!
//! Token secrets are `tf_` + 32 random bytes from the OS in base62 + a
//! checksum; a mistyped token is refused before any store lookup. Stores
//! keep the SHA-256 and a public prefix only. Unknown, expired and revoked
//! tokens get the same 401; a missing scope is 403. Nothing logged carries
//! a token, a signature or a body: the per-request span records the
//! method, path, request id, and the event and run ids.

#![warn(missing_docs)]

mod api;
mod auth;
mod health;
mod hooks;
mod json;
mod layers;
pub mod metrics;
mod openapi;
mod options;
mod problem;
mod secret;
mod ui;

use std::sync::Arc;

use axum::http::StatusCode;
use axum::Router;
use taskforge_core::{Engine, StepExecutor, Store};
use tokio::sync::Semaphore;

pub use auth::{bootstrap, issue_token, Bootstrap, NewToken, TokenError};
pub use hooks::EVENT_ID_HEADER;
pub use layers::REQUEST_ID_HEADER;
pub use openapi::openapi_json;
pub use options::HttpOptions;
pub use problem::{Problem, PROBLEM_JSON, PROBLEM_TYPE_PREFIX};
pub use secret::{MalformedToken, TokenSecret, TOKEN_PREFIX};

use crate::options::{Ctx, Shared};

/// The routes of an engine, with the production layers, ready to serve,
/// `nest` under a prefix, or `merge` into a host's router.
///
/// The engine should be [started](Engine::start) for runs to execute. The
/// token store starts empty: give it its first token with [`bootstrap`].
///
/// ```
/// use taskforge_core::{Engine, StepRegistry};
/// use taskforge_http::{router, HttpOptions};
/// use taskforge_store_memory::MemoryStore;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let engine = Engine::builder(MemoryStore::new(), StepRegistry::new()).build();
/// let app = axum::Router::new()
///     .route("/", axum::routing::get(|| async { "the host's own page" }))
///     .nest("/taskforge", router(engine, HttpOptions::default()));
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
/// let server = tokio::spawn(async move { axum::serve(listener, app).await });
/// # server.abort();
/// # Ok(())
/// # }
/// ```
pub fn router<S: Store, X: StepExecutor>(engine: Engine<S, X>, options: HttpOptions) -> Router {
    let ctx = Ctx(Arc::new(Shared {
        permits: Arc::new(Semaphore::new(options.max_concurrent_requests.max(1))),
        engine,
        options,
    }));
    let mut routes = routes::<S, X>().router();
    if let Some(mount) = ctx.options.ui.as_deref() {
        routes = ui::mount(routes, mount);
    }
    let routes = routes
        .fallback(|| async { Problem::not_found("no route here") })
        .method_not_allowed_fallback(|| async {
            Problem::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method-not-allowed",
                "Method not allowed",
            )
        });
    layers::apply(routes, &ctx).with_state(ctx)
}

/// Every route: the API's, and the OpenAPI document that describes them
/// (added here, above both, so neither module imports the other).
fn routes<S: Store, X: StepExecutor>() -> api::Routes<S, X> {
    api::Routes::all().get("/api/v1/openapi.json", openapi::document)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use taskforge_core::StepRegistry;
    use taskforge_store_memory::MemoryStore;

    use super::*;

    /// Every route is in the OpenAPI document, and every documented route
    /// is routed.
    #[test]
    fn openapi_documents_exactly_the_routes() {
        let routes = super::routes::<MemoryStore, StepRegistry>();
        let routed: BTreeSet<(String, String)> = routes
            .table()
            .iter()
            .map(|(method, path)| (method.to_string(), path.replace("{*", "{")))
            .collect();
        let document: serde_json::Value =
            serde_json::from_str(openapi_json()).expect("the document is JSON");
        assert!(document["openapi"]
            .as_str()
            .is_some_and(|v| v.starts_with("3.1")));
        let mut documented = BTreeSet::new();
        for (path, item) in document["paths"].as_object().expect("paths") {
            for method in item.as_object().expect("a path item").keys() {
                if ["get", "post", "put", "patch", "delete"].contains(&method.as_str()) {
                    documented.insert((method.clone(), path.clone()));
                }
            }
        }
        let undocumented: Vec<_> = routed.difference(&documented).collect();
        let unrouted: Vec<_> = documented.difference(&routed).collect();
        assert!(
            undocumented.is_empty(),
            "routes not documented: {undocumented:?}"
        );
        assert!(
            unrouted.is_empty(),
            "documented routes not routed: {unrouted:?}"
        );
    }
}
