//! The management API under `/api/v1`: JSON in and out, every route
//! authenticated by an API token, errors as problem details.

pub(crate) mod events;
pub(crate) mod runs;
pub(crate) mod secrets;
pub(crate) mod stream;
pub(crate) mod tokens;
pub(crate) mod triggers;
pub(crate) mod workflows;

use axum::extract::{FromRequest, FromRequestParts};
use axum::handler::Handler;
use axum::routing::{delete, get, post, put};
use axum::Router;
use serde::Serialize;
use utoipa::ToSchema;

use crate::options::Ctx;
use crate::Problem;
use taskforge_core::{StepExecutor, Store};

/// A JSON body; malformed JSON, a wrong media type and unknown fields are
/// problem details.
#[derive(Debug, FromRequest)]
#[from_request(via(crate::json::Json), rejection(Problem))]
pub(crate) struct Body<T>(pub(crate) T);

/// A query string; unknown or malformed parameters are problem details.
#[derive(Debug, FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(Problem))]
pub(crate) struct Params<T>(pub(crate) T);

/// Path parameters; malformed ids are problem details.
#[derive(Debug, FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(Problem))]
pub(crate) struct Ids<T>(pub(crate) T);

/// One page of a listing.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Page<T> {
    /// The items.
    pub(crate) items: Vec<T>,
    /// Pass as `after` for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) next: Option<String>,
}

impl<T> Page<T> {
    pub(crate) fn from_store<U, C: ToString>(
        page: taskforge_core::Page<U, C>,
        map: impl FnMut(U) -> T,
    ) -> Self {
        Self {
            items: page.items.into_iter().map(map).collect(),
            next: page.next.map(|c| c.to_string()),
        }
    }

    /// A page of `items` (sorted by `key`), after `after`, at most `limit`.
    pub(crate) fn slice<K: Ord + ToString>(
        items: Vec<T>,
        key: impl Fn(&T) -> K,
        after: Option<K>,
        limit: usize,
    ) -> Self {
        let limit = taskforge_core::store::rules::page_limit(limit);
        let mut rest = items
            .into_iter()
            .filter(|item| after.as_ref().is_none_or(|after| key(item) > *after));
        let items: Vec<T> = rest.by_ref().take(limit).collect();
        let more = rest.next().is_some();
        let next = if more {
            items.last().map(|last| key(last).to_string())
        } else {
            None
        };
        Self { items, next }
    }
}

/// The API's routes, and a table of them (method, path) that the OpenAPI
/// test compares with the document.
pub(crate) struct Routes<S, X> {
    router: Router<Ctx<S, X>>,
    #[cfg_attr(not(test), allow(dead_code))]
    table: Vec<(&'static str, &'static str)>,
}

macro_rules! verb {
    ($name:ident, $method:literal, $make:path) => {
        pub(crate) fn $name<H, T>(mut self, path: &'static str, handler: H) -> Self
        where
            H: Handler<T, Ctx<S, X>>,
            T: 'static,
        {
            self.router = self.router.route(path, $make(handler));
            self.table.push(($method, path));
            self
        }
    };
}

impl<S: Store, X: StepExecutor> Routes<S, X> {
    verb!(get, "get", get);
    verb!(post, "post", post);
    verb!(put, "put", put);
    verb!(delete, "delete", delete);

    /// Every route of the crate: the API, webhooks, health and the document.
    pub(crate) fn all() -> Self {
        let routes = Self {
            router: Router::new(),
            table: Vec::new(),
        };
        routes
            .get("/healthz", crate::health::healthz)
            .get("/readyz", crate::health::readyz::<S, X>)
            .post("/hooks/{*path}", crate::hooks::deliver::<S, X>)
            .get("/api/v1/workflows", workflows::list::<S, X>)
            .post("/api/v1/workflows", workflows::create::<S, X>)
            .get("/api/v1/workflows/{id}", workflows::get_one::<S, X>)
            .post(
                "/api/v1/workflows/{id}/activate",
                workflows::activate::<S, X>,
            )
            .post(
                "/api/v1/workflows/{id}/deactivate",
                workflows::deactivate::<S, X>,
            )
            .get(
                "/api/v1/workflows/{id}/versions",
                workflows::versions::<S, X>,
            )
            .post(
                "/api/v1/workflows/{id}/versions",
                workflows::publish::<S, X>,
            )
            .get(
                "/api/v1/workflows/{id}/versions/{number}",
                workflows::version::<S, X>,
            )
            .get(
                "/api/v1/workflows/{id}/versions/{number}/diff",
                workflows::diff::<S, X>,
            )
            .post("/api/v1/workflows/{id}/runs", runs::start::<S, X>)
            .get("/api/v1/triggers", triggers::list::<S, X>)
            .post("/api/v1/triggers", triggers::create::<S, X>)
            .get("/api/v1/triggers/{id}", triggers::get_one::<S, X>)
            .put("/api/v1/triggers/{id}", triggers::update::<S, X>)
            .delete("/api/v1/triggers/{id}", triggers::delete::<S, X>)
            .put(
                "/api/v1/workflows/{id}/triggers/{name}",
                triggers::ensure::<S, X>,
            )
            .post("/api/v1/triggers/{id}/enable", triggers::enable::<S, X>)
            .post("/api/v1/triggers/{id}/disable", triggers::disable::<S, X>)
            .post(
                "/api/v1/triggers/{id}/rotate-secret",
                triggers::rotate::<S, X>,
            )
            .get("/api/v1/runs", runs::list::<S, X>)
            .get("/api/v1/runs/{id}", runs::get_one::<S, X>)
            .post("/api/v1/runs/{id}/cancel", runs::cancel::<S, X>)
            .post("/api/v1/runs/{id}/resume", runs::resume::<S, X>)
            .post("/api/v1/runs/{id}/signals/{name}", runs::signal::<S, X>)
            .get("/api/v1/runs/{id}/wait", runs::wait::<S, X>)
            .get("/api/v1/runs/{id}/artifacts", runs::artifacts::<S, X>)
            .get("/api/v1/runs/{id}/artifacts/{name}", runs::artifact::<S, X>)
            .get(
                "/api/v1/runs/{id}/steps/{step_run_id}/logs",
                runs::logs::<S, X>,
            )
            .get("/api/v1/events", events::list::<S, X>)
            .get("/api/v1/events/{id}", events::get_one::<S, X>)
            .get("/api/v1/events/{id}/runs", events::runs::<S, X>)
            .post("/api/v1/events/{id}/replay", events::replay::<S, X>)
            .get("/api/v1/stream", stream::stream::<S, X>)
            .get("/api/v1/secrets", secrets::list::<S, X>)
            .put("/api/v1/secrets/{*name}", secrets::put::<S, X>)
            .delete("/api/v1/secrets/{*name}", secrets::delete::<S, X>)
            .get("/api/v1/tokens", tokens::list::<S, X>)
            .post("/api/v1/tokens", tokens::create::<S, X>)
            .get("/api/v1/tokens/{id}", tokens::get_one::<S, X>)
            .post("/api/v1/tokens/{id}/revoke", tokens::revoke::<S, X>)
    }

    /// The router.
    pub(crate) fn router(self) -> Router<Ctx<S, X>> {
        self.router
    }

    /// `(method, path)` of every route, paths as axum writes them.
    #[cfg(test)]
    pub(crate) fn table(&self) -> &[(&'static str, &'static str)] {
        &self.table
    }
}
