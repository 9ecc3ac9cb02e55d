//! The inspector: server-rendered HTML pages over the engine's history,
//! mounted where the host says ([`HttpOptions::ui`](crate::HttpOptions::ui)).
//!
//! # Tokens
//!
//! The inspector takes the same API tokens as `/api/v1`: the read scope to
//! look, the run scope for its buttons (cancel, retry, replay), and a token
//! limited to workflows sees only those. A token is entered once in a
//! login form (a POST, so it is never in a URL or a log) and kept in an
//! `HttpOnly`, `SameSite=Lax` cookie whose path is the mount, `Secure` when
//! the browser came over HTTPS: page scripts never see it. Under the mount
//! only, the cookie stands in for the `Authorization` header, so every page
//! and the live stream go through the API's own token check. Buttons are
//! forms posting a CSRF token derived from the token's digest; nothing
//! cross-site can post one.
//!
//! # Pages
//!
//! Workflows, a workflow (versions and their diff, triggers, runs), runs
//! (filtered, live), a run (timeline of every attempt, actions), events
//! and an event. Live pages hold an `EventSource` on the mount's `stream`
//! (the API's stream, through the cookie) and fetch their live part again,
//! server-rendered, when something happens. The stylesheet and script are
//! compiled in; pages load nothing from elsewhere.

mod diff;
mod events;
pub(crate) mod html;
mod runs;
mod workflows;

use std::fmt::Write as _;
use std::sync::OnceLock;

use axum::extract::{FromRequestParts, OriginalUri, Request, State};
use axum::http::header::{self, AUTHORIZATION, COOKIE};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use taskforge_core::store::Scope;
use taskforge_core::{StepExecutor, Store};

use self::html::{query, Esc};
use crate::auth::Caller;
use crate::options::Ctx;
use crate::Problem;

/// The cookie the token is kept in.
const COOKIE_NAME: &str = "taskforge_ui";
/// The request header by which the page script asks for a page's live part only.
const FRAGMENT_HEADER: &str = "x-taskforge-fragment";

const CSS: &str = include_str!("assets/app.css");
const JS: &str = include_str!("assets/app.js");

/// `routes` with the inspector nested at `mount` (such as `/ui`), and
/// `mount/` sent to `mount`.
pub(crate) fn mount<S: Store, X: StepExecutor>(
    routes: Router<Ctx<S, X>>,
    mount: &str,
) -> Router<Ctx<S, X>> {
    assert!(
        mount != "/",
        "HttpOptions::ui: mount the inspector under a path such as /ui, not at the root"
    );
    // Relative, so it holds wherever the host nests the router.
    let last = mount.rsplit('/').next().unwrap_or_default();
    let home = format!("../{last}");
    routes
        .route(
            &format!("{mount}/"),
            get(move || {
                let home = home.clone();
                async move { Redirect::permanent(&home) }
            }),
        )
        .nest(mount, self::routes::<S, X>())
}

/// The inspector's routes, to nest under the mount.
fn routes<S: Store, X: StepExecutor>() -> Router<Ctx<S, X>> {
    Router::new()
        .route("/", get(workflows::list::<S, X>))
        .route("/workflows/{id}", get(workflows::show::<S, X>))
        .route("/runs", get(runs::list::<S, X>))
        .route("/runs/{id}", get(runs::show::<S, X>))
        .route("/runs/{id}/cancel", post(runs::cancel::<S, X>))
        .route("/runs/{id}/retry", post(runs::retry::<S, X>))
        .route("/runs/{id}/resume", post(runs::resume::<S, X>))
        .route(
            "/runs/{id}/artifacts/{name}",
            get(crate::api::runs::artifact::<S, X>),
        )
        .route("/events", get(events::list::<S, X>))
        .route("/events/{id}", get(events::show::<S, X>))
        .route("/events/{id}/replay", post(events::replay::<S, X>))
        // The API's own stream, authenticated by the cookie.
        .route("/stream", get(crate::api::stream::stream::<S, X>))
        .route("/login", get(login_form).post(login::<S, X>))
        .route("/logout", post(logout))
        .route("/assets/app.css", get(css))
        .route("/assets/app.js", get(js))
        .layer(middleware::from_fn(cookie_as_bearer))
}

/// Under the mount, a request without an `Authorization` header but with
/// the inspector's cookie is authenticated by the cookie's token.
async fn cookie_as_bearer(mut request: Request, next: Next) -> Response {
    if !request.headers().contains_key(AUTHORIZATION) {
        if let Some(token) = cookie(request.headers()) {
            if let Ok(value) = HeaderValue::from_str(&format!("Bearer {token}")) {
                request.headers_mut().insert(AUTHORIZATION, value);
            }
        }
    }
    next.run(request).await
}

/// The inspector's cookie, if the request has it.
fn cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, value)| *name == COOKIE_NAME && !value.is_empty())
        .map(|(_, value)| value.to_owned())
}

/// Where the inspector is mounted, as the browser sees it: the original
/// path minus the path the nested router got (`/ui`, `/taskforge/ui`, ...).
fn base_of(parts: &Parts) -> String {
    let inner = parts.uri.path();
    let original = parts
        .extensions
        .get::<OriginalUri>()
        .map_or(inner, |uri| uri.0.path());
    let base = original
        .strip_suffix(inner)
        .unwrap_or_else(|| original.trim_end_matches('/'));
    base.trim_end_matches('/').to_owned()
}

/// Who is looking, and where the inspector is: what every page starts from.
/// Without a valid token, a page answers with a redirect to the login form.
pub(crate) struct Viewer {
    pub(crate) caller: Caller,
    /// The mount, without a trailing slash.
    pub(crate) base: String,
    /// Whether the script asked for the live part only.
    pub(crate) fragment: bool,
}

impl<S: Store, X: StepExecutor> FromRequestParts<Ctx<S, X>> for Viewer {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, ctx: &Ctx<S, X>) -> Result<Self, Response> {
        let base = base_of(parts);
        let fragment = parts.headers.contains_key(FRAGMENT_HEADER);
        let caller = match Caller::from_request_parts(parts, ctx).await {
            Ok(caller) => caller,
            Err(problem) if problem.status == 401 && !fragment => {
                let here = parts
                    .extensions
                    .get::<OriginalUri>()
                    .map_or_else(|| parts.uri.to_string(), |uri| uri.0.to_string());
                let next = (parts.method == axum::http::Method::GET).then_some(here);
                let to = format!("{base}/login{}", query(&[("next", next)]));
                return Err(Redirect::to(&to).into_response());
            }
            Err(problem) => return Err(error_page(&base, &problem)),
        };
        let viewer = Self {
            caller,
            base,
            fragment,
        };
        if let Err(problem) = viewer.caller.require(Scope::Read) {
            return Err(error_page(&viewer.base, &problem));
        }
        Ok(viewer)
    }
}

impl Viewer {
    /// Whether the token holds the run scope (it may still not reach a
    /// given workflow: actions check that too).
    pub(crate) fn can_run(&self) -> bool {
        self.caller.token.allows(Scope::Run)
    }

    /// The CSRF token of this viewer's forms: derived from the token's
    /// digest, which no other site can read.
    pub(crate) fn csrf(&self) -> String {
        let mut hash = Sha256::new();
        hash.update(b"taskforge-ui-csrf\0");
        hash.update(self.caller.token.digest.as_bytes());
        hash.finalize()[..16]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// 403 unless `given` is this viewer's CSRF token.
    pub(crate) fn check_csrf(&self, given: &str) -> Result<(), Problem> {
        let expected = self.csrf();
        let same = expected.len() == given.len()
            && expected
                .bytes()
                .zip(given.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0;
        if same {
            Ok(())
        } else {
            Err(Problem::forbidden(
                "the form is stale or came from another site; reload the page and try again",
            ))
        }
    }

    /// A form with one button posting to `action`, with the CSRF token.
    pub(crate) fn button(&self, action: &str, label: &str, class: &str, id: &str) -> String {
        format!(
            "<form method=\"post\" action=\"{}\" class=\"inline\"><input type=\"hidden\" name=\"csrf\" value=\"{}\"><button type=\"submit\" class=\"{}\" id=\"{}\">{}</button></form>",
            Esc(action),
            Esc(&self.csrf()),
            Esc(class),
            Esc(id),
            Esc(label)
        )
    }

    /// A page (or, when the script asked, its live part only).
    pub(crate) fn page(&self, page: Page) -> Response {
        if self.fragment {
            return html_response(StatusCode::OK, page.live.unwrap_or_default());
        }
        html_response(StatusCode::OK, layout(&self.base, Some(self), page))
    }
}

/// An action's form: its CSRF token.
#[derive(Debug, Deserialize)]
pub(crate) struct ActionForm {
    csrf: String,
}

impl ActionForm {
    pub(crate) fn csrf(&self) -> &str {
        &self.csrf
    }
}

/// What a page is made of.
#[derive(Default)]
pub(crate) struct Page {
    /// The `<title>` and `<h1>`.
    pub(crate) title: String,
    /// Which navigation entry is current: `workflows`, `runs` or `events`.
    pub(crate) nav: &'static str,
    /// What goes before the live part (filters, headings).
    pub(crate) head: String,
    /// The part refreshed on updates, if the page is live.
    pub(crate) live: Option<String>,
    /// What goes after.
    pub(crate) tail: String,
    /// The stream URL the live part follows.
    pub(crate) stream: Option<String>,
    /// The URL the live part is fetched from again.
    pub(crate) refresh: Option<String>,
}

fn asset_version() -> &'static str {
    static VERSION: OnceLock<String> = OnceLock::new();
    VERSION.get_or_init(|| {
        let digest = Sha256::new().chain_update(CSS).chain_update(JS).finalize();
        digest[..6].iter().map(|b| format!("{b:02x}")).collect()
    })
}

/// The whole document around a page.
fn layout(base: &str, viewer: Option<&Viewer>, page: Page) -> String {
    let mut out = String::with_capacity(16 * 1024);
    let version = asset_version();
    let _ = write!(
        out,
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{title} · Taskforge</title>\
         <link rel=\"stylesheet\" href=\"{base}/assets/app.css?v={version}\">\
         <script src=\"{base}/assets/app.js?v={version}\" defer></script></head>",
        title = Esc(&page.title),
        base = Esc(base),
    );
    out.push_str("<body");
    if let (Some(stream), Some(refresh)) = (&page.stream, &page.refresh) {
        let _ = write!(
            out,
            " data-stream=\"{}\" data-refresh=\"{}\"",
            Esc(stream),
            Esc(refresh)
        );
    }
    out.push('>');
    out.push_str("<a class=\"skip\" href=\"#main\">Skip to content</a><header class=\"top\"><nav aria-label=\"Inspector\">");
    let _ = write!(
        out,
        "<a class=\"brand\" href=\"{}\">Taskforge</a>",
        Esc(base)
    );
    if viewer.is_some() {
        for (key, label, path) in [
            ("workflows", "Workflows", ""),
            ("runs", "Runs", "/runs"),
            ("events", "Events", "/events"),
        ] {
            let current = if page.nav == key {
                " aria-current=\"page\""
            } else {
                ""
            };
            let _ = write!(
                out,
                "<a href=\"{}{}\"{}>{}</a>",
                Esc(base),
                path,
                current,
                label
            );
        }
    }
    out.push_str("</nav>");
    if page.stream.is_some() {
        out.push_str(
            "<span id=\"live-status\" class=\"live\" role=\"status\" aria-live=\"polite\">Connecting…</span>",
        );
    }
    if let Some(viewer) = viewer {
        let token = &viewer.caller.token;
        let scopes: Vec<&str> = token.scopes.iter().map(|s| s.as_str()).collect();
        let _ = write!(
            out,
            "<div class=\"who\"><span title=\"token {prefix}…\">{name} <span class=\"muted\">({scopes})</span></span>\
             <form method=\"post\" action=\"{base}/logout\" class=\"inline\"><button type=\"submit\" class=\"link\" id=\"logout\">Sign out</button></form></div>",
            prefix = Esc(&token.prefix),
            name = Esc(&token.name),
            scopes = Esc(&scopes.join(", ")),
            base = Esc(base),
        );
    }
    let _ = write!(
        out,
        "</header><main id=\"main\" tabindex=\"-1\"><h1>{}</h1>",
        Esc(&page.title)
    );
    out.push_str(&page.head);
    if let Some(live) = &page.live {
        out.push_str("<div id=\"live\">");
        out.push_str(live);
        out.push_str("</div>");
    }
    out.push_str(&page.tail);
    out.push_str("</main></body></html>\n");
    out
}

/// An HTML answer with the inspector's security headers: nothing cached,
/// no framing, scripts and styles only from the mount.
fn html_response(status: StatusCode, body: String) -> Response {
    (
        status,
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "same-origin"),
            (header::X_FRAME_OPTIONS, "DENY"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                 connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
            ),
        ],
        body,
    )
        .into_response()
}

/// A problem as a page.
pub(crate) fn error_page(base: &str, problem: &Problem) -> Response {
    let mut body = String::new();
    let _ = write!(
        body,
        "<p class=\"error-box\">{}</p><p><a href=\"{}\">Back to the workflows</a></p>",
        Esc(problem.detail.as_deref().unwrap_or(&problem.title)),
        Esc(base)
    );
    let page = Page {
        title: problem.title.clone(),
        head: body,
        ..Page::default()
    };
    html_response(problem.status_code(), layout(base, None, page))
}

/// A page's answer: the page, or its error as a page.
pub(crate) fn answer(viewer: &Viewer, page: Result<Page, Problem>) -> Response {
    match page {
        Ok(page) => viewer.page(page),
        Err(problem) => error_page(&viewer.base, &problem),
    }
}

/// After an action: to `to`, as a GET.
pub(crate) fn see_other(to: &str) -> Response {
    Redirect::to(to).into_response()
}

async fn css() -> Response {
    asset("text/css; charset=utf-8", CSS)
}

async fn js() -> Response {
    asset("text/javascript; charset=utf-8", JS)
}

fn asset(kind: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, kind),
            (header::CACHE_CONTROL, "public, max-age=86400"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
        .into_response()
}

/// Where to go after logging in: a path under the mount, never elsewhere.
fn safe_next(base: &str, next: Option<&str>) -> String {
    next.filter(|next| {
        (next == &base || next.starts_with(&format!("{base}/")))
            && !next.contains("//")
            && !next.contains('\\')
    })
    .map_or_else(|| base.to_owned(), ToOwned::to_owned)
}

#[derive(Debug, Deserialize)]
struct LoginQuery {
    next: Option<String>,
}

fn login_page(base: &str, next: Option<&str>, message: Option<&str>) -> String {
    let mut body = String::new();
    if let Some(message) = message {
        let _ = write!(
            body,
            "<p class=\"error-box\" role=\"alert\">{}</p>",
            html::escape(message)
        );
    }
    let _ = write!(
        body,
        "<form method=\"post\" action=\"{base}/login\" class=\"login\">\
         <p>Sign in with an API token: the <em>read</em> scope shows everything, the <em>run</em> \
         scope adds the cancel, retry and replay buttons.</p>\
         <label for=\"token\">API token</label>\
         <input id=\"token\" name=\"token\" type=\"password\" autocomplete=\"off\" spellcheck=\"false\" \
         required autofocus placeholder=\"tf_…\">\
         <input type=\"hidden\" name=\"next\" value=\"{next}\">\
         <button type=\"submit\" class=\"primary\" id=\"sign-in\">Sign in</button>\
         <p class=\"muted\">The token is kept in an HttpOnly cookie for this browser session only.</p>\
         </form>",
        base = Esc(base),
        next = Esc(&safe_next(base, next)),
    );
    layout(
        base,
        None,
        Page {
            title: "Sign in".into(),
            head: body,
            ..Page::default()
        },
    )
}

async fn login_form(
    parts: Requester,
    axum::extract::Query(q): axum::extract::Query<LoginQuery>,
) -> Response {
    html_response(
        StatusCode::OK,
        login_page(&parts.base, q.next.as_deref(), None),
    )
}

/// What the login and logout handlers need of a request: the mount, and
/// how the browser came.
struct Requester {
    base: String,
    https: bool,
    cross_site: bool,
}

impl<S: Send + Sync> FromRequestParts<S> for Requester {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let header = |name: &str| {
            parts
                .headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_ascii_lowercase)
        };
        let https = header("origin").is_some_and(|o| o.starts_with("https://"))
            || header("x-forwarded-proto").is_some_and(|p| p == "https")
            || parts.uri.scheme_str() == Some("https");
        Ok(Self {
            base: base_of(parts),
            https,
            cross_site: header("sec-fetch-site").is_some_and(|s| s == "cross-site"),
        })
    }
}

#[derive(Deserialize)]
struct LoginForm {
    token: String,
    next: Option<String>,
}

impl std::fmt::Debug for LoginForm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginForm")
            .field("token", &"<redacted>")
            .field("next", &self.next)
            .finish()
    }
}

fn cookie_header(base: &str, value: &str, https: bool, clear: bool) -> String {
    let path = if base.is_empty() { "/" } else { base };
    format!(
        "{COOKIE_NAME}={value}; Path={path}; HttpOnly; SameSite=Lax{}{}",
        if https { "; Secure" } else { "" },
        if clear { "; Max-Age=0" } else { "" }
    )
}

async fn login<S: Store, X: StepExecutor>(
    State(ctx): State<Ctx<S, X>>,
    parts: Requester,
    Form(form): Form<LoginForm>,
) -> Response {
    let base = &parts.base;
    let refuse = |status: StatusCode, message: &str| {
        html_response(
            status,
            login_page(base, form.next.as_deref(), Some(message)),
        )
    };
    if parts.cross_site {
        return refuse(StatusCode::FORBIDDEN, "Sign-in from another site refused.");
    }
    let token = form.token.trim();
    // The API's own check, on a request made of the token alone.
    let Ok(value) = HeaderValue::from_str(&format!("Bearer {token}")) else {
        return refuse(StatusCode::UNAUTHORIZED, "That is not an API token.");
    };
    let (mut request, ()) = axum::http::Request::new(()).into_parts();
    request.headers.insert(AUTHORIZATION, value);
    let caller = match Caller::from_request_parts(&mut request, &ctx).await {
        Ok(caller) => caller,
        Err(problem) => {
            return refuse(
                problem.status_code(),
                problem.detail.as_deref().unwrap_or(&problem.title),
            )
        }
    };
    if let Err(problem) = caller.require(Scope::Read) {
        return refuse(
            StatusCode::FORBIDDEN,
            problem.detail.as_deref().unwrap_or(&problem.title),
        );
    }
    let Ok(cookie) = HeaderValue::from_str(&cookie_header(base, token, parts.https, false)) else {
        return refuse(StatusCode::UNAUTHORIZED, "That is not an API token.");
    };
    let mut response = see_other(&safe_next(base, form.next.as_deref()));
    response.headers_mut().insert(header::SET_COOKIE, cookie);
    response
}

/// Drops the cookie. No CSRF check: signing out is harmless, and a
/// cookie that no longer works must be droppable too.
async fn logout(parts: Requester) -> Response {
    let base = parts.base;
    let mut response = see_other(&format!("{base}/login"));
    if let Ok(cookie) = HeaderValue::from_str(&cookie_header(&base, "", parts.https, true)) {
        response.headers_mut().insert(header::SET_COOKIE, cookie);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_stays_under_the_mount() {
        assert_eq!(safe_next("/ui", Some("/ui/runs?x=1")), "/ui/runs?x=1");
        assert_eq!(safe_next("/ui", Some("/ui")), "/ui");
        assert_eq!(safe_next("/ui", Some("https://evil.example/")), "/ui");
        assert_eq!(safe_next("/ui", Some("//evil.example/ui/")), "/ui");
        assert_eq!(safe_next("/ui", Some("/ui//evil.example")), "/ui");
        assert_eq!(safe_next("/ui", Some("/uix")), "/ui");
        assert_eq!(safe_next("/ui", Some("/ui/\\evil")), "/ui");
        assert_eq!(safe_next("/ui", None), "/ui");
    }

    #[test]
    fn the_cookie_is_http_only_and_scoped_to_the_mount() {
        let set = cookie_header("/taskforge/ui", "tf_x", false, false);
        assert_eq!(
            set,
            "taskforge_ui=tf_x; Path=/taskforge/ui; HttpOnly; SameSite=Lax"
        );
        assert!(cookie_header("/ui", "tf_x", true, false).ends_with("; Secure"));
        assert!(cookie_header("/ui", "", false, true).ends_with("Max-Age=0"));
    }

    #[test]
    fn the_cookie_is_found_among_others() {
        let mut headers = HeaderMap::new();
        headers.insert(
            COOKIE,
            HeaderValue::from_static("a=1; taskforge_ui=tf_abc; b=2"),
        );
        assert_eq!(cookie(&headers).as_deref(), Some("tf_abc"));
        headers.insert(COOKIE, HeaderValue::from_static("taskforge_ui="));
        assert_eq!(cookie(&headers), None);
    }
}

#[cfg(test)]
mod page_tests;
