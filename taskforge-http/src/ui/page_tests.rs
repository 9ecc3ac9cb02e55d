//! The inspector without a browser: requests through the router with
//! `oneshot`, checking escaping, sign-in, scopes, CSRF and the mount.

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use axum::response::Response;
use axum::Router;
use http_body_util::BodyExt as _;
use serde_json::{json, Value};
use taskforge_core::store::Scope;
use taskforge_core::{
    Engine, RunId, RunStatus, StepContext, StepDefinition, StepError, StepRegistry,
    WorkflowDefinition,
};
use taskforge_store_memory::MemoryStore;
use tower::ServiceExt as _;

use crate::{bootstrap, issue_token, router, Bootstrap, HttpOptions, NewToken};

const HOSTILE_INPUT: &str = "</pre><script>alert(1)</script>";
const HOSTILE_ERROR: &str = "<img src=x onerror=alert(2)>";

struct App {
    router: Router,
    admin: String,
    reader: String,
    run: RunId,
}

/// A router with the inspector at `/ui`, an admin and a read-only token,
/// and one run: finished (failed, with hostile input and error) if
/// `started`, else queued forever.
async fn app(started: bool) -> App {
    let mut registry = StepRegistry::new();
    registry
        .step("boom", |_ctx: StepContext, _input: Value| async move {
            Err::<Value, _>(StepError::terminal(HOSTILE_ERROR))
        })
        .expect("a step");
    let engine = Engine::builder(MemoryStore::new(), registry).build();
    let workflow = engine.ensure_workflow("deploy").await.expect("workflow");
    engine
        .publish(
            workflow.id,
            WorkflowDefinition::new(vec![StepDefinition::new("explode", "boom")]),
        )
        .await
        .expect("publish");
    let now = chrono::Utc::now();
    let Bootstrap::Created(admin) = bootstrap(engine.store(), None, now).await.expect("admin")
    else {
        panic!("a new store has no tokens");
    };
    let (_, reader) = issue_token(engine.store(), NewToken::new("viewer", [Scope::Read]), now)
        .await
        .expect("reader");
    let run = engine
        .start_run(workflow.id, json!({ "note": HOSTILE_INPUT }))
        .await
        .expect("run")
        .id;
    if started {
        engine.start();
        let finished = engine.wait_for_run(run).await.expect("finished");
        assert_eq!(finished.status, RunStatus::Failed);
    }
    App {
        router: router(engine, HttpOptions::default().ui("/ui")),
        admin: admin.expose().to_owned(),
        reader: reader.expose().to_owned(),
        run,
    }
}

async fn send(router: &Router, request: Request<Body>) -> Response {
    router.clone().oneshot(request).await.expect("an answer")
}

fn get(path: &str, token: Option<&str>) -> Request<Body> {
    let mut request = Request::get(path);
    if let Some(token) = token {
        request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    request.body(Body::empty()).expect("a request")
}

fn form(path: &str, cookie: Option<&str>, body: &str) -> Request<Body> {
    let mut request =
        Request::post(path).header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
    if let Some(token) = cookie {
        request = request.header(header::COOKIE, format!("taskforge_ui={token}"));
    }
    request
        .body(Body::from(body.to_owned()))
        .expect("a request")
}

async fn text(response: Response) -> String {
    let bytes = response
        .into_body()
        .collect()
        .await
        .expect("a body")
        .to_bytes();
    String::from_utf8(bytes.to_vec()).expect("UTF-8")
}

fn header_of(response: &Response, name: header::HeaderName) -> &str {
    response
        .headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

#[tokio::test]
async fn pages_escape_what_runs_carry() {
    let app = app(true).await;
    let response = send(
        &app.router,
        get(&format!("/ui/runs/{}", app.run), Some(&app.admin)),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        header_of(&response, header::CONTENT_TYPE),
        "text/html; charset=utf-8"
    );
    assert!(header_of(&response, header::CONTENT_SECURITY_POLICY).contains("script-src 'self'"));
    assert_eq!(header_of(&response, header::CACHE_CONTROL), "no-store");
    let page = text(response).await;
    assert!(!page.contains("<script>alert"), "{page}");
    assert!(!page.contains("<img src=x"), "{page}");
    assert!(page.contains("&lt;/pre&gt;&lt;script&gt;alert(1)&lt;/script&gt;"));
    assert!(page.contains("&lt;img src=x onerror=alert(2)&gt;"));
    assert!(page.contains("data-status=\"failed\""));
    // Every page of the inspector renders for the admin.
    for path in ["/ui", "/ui/runs?status=failed", "/ui/events"] {
        let response = send(&app.router, get(path, Some(&app.admin))).await;
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        let page = text(response).await;
        assert!(!page.contains("<script>alert"), "{path}");
    }
}

#[tokio::test]
async fn without_a_token_pages_lead_to_the_login_form() {
    let app = app(false).await;
    let response = send(&app.router, get("/ui/runs?status=queued", None)).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        header_of(&response, header::LOCATION),
        "/ui/login?next=%2Fui%2Fruns%3Fstatus%3Dqueued"
    );
    let response = send(&app.router, get("/ui/login", None)).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(text(response).await.contains("type=\"password\""));
    let response = send(&app.router, get("/ui/", None)).await;
    assert_eq!(response.status(), StatusCode::PERMANENT_REDIRECT);
    assert_eq!(header_of(&response, header::LOCATION), "../ui");
    // Assets are public, and compiled in.
    let response = send(&app.router, get("/ui/assets/app.js", None)).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(text(response).await.contains("EventSource"));
}

#[tokio::test]
async fn signing_in_sets_an_http_only_cookie_and_refuses_bad_tokens() {
    let app = app(false).await;
    let body = format!("token={}&next=%2Fui%2Fruns", app.admin);
    let response = send(&app.router, form("/ui/login", None, &body)).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(header_of(&response, header::LOCATION), "/ui/runs");
    let cookie = header_of(&response, header::SET_COOKIE);
    assert!(cookie.starts_with(&format!("taskforge_ui={};", app.admin)));
    assert!(cookie.contains("HttpOnly") && cookie.contains("Path=/ui"));

    // The cookie opens the pages and the stream.
    let mut request = get("/ui/runs", None);
    request.headers_mut().insert(
        header::COOKIE,
        format!("taskforge_ui={}", app.admin)
            .parse()
            .expect("a header"),
    );
    assert_eq!(send(&app.router, request).await.status(), StatusCode::OK);
    let mut request = get("/ui/stream", None);
    request.headers_mut().insert(
        header::COOKIE,
        format!("taskforge_ui={}", app.reader)
            .parse()
            .expect("a header"),
    );
    let response = send(&app.router, request).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        header_of(&response, header::CONTENT_TYPE),
        "text/event-stream"
    );

    // A wrong token: refused, not echoed, no cookie; an open redirect is
    // not followed.
    let wrong = "tf_thisIsNotARealTokenAtAll0000000000000000000000";
    let body = format!("token={wrong}&next=https%3A%2F%2Fevil.example%2F");
    let response = send(&app.router, form("/ui/login", None, &body)).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert!(response.headers().get(header::SET_COOKIE).is_none());
    let page = text(response).await;
    assert!(!page.contains(wrong));
    assert!(!page.contains("evil.example"));
}

#[tokio::test]
async fn actions_need_the_run_scope_and_the_csrf_token() {
    let app = app(false).await;
    let path = format!("/ui/runs/{}", app.run);
    let cancel = format!("{path}/cancel");

    // The reader sees no buttons, and may not act.
    let page = text(send(&app.router, get(&path, Some(&app.reader))).await).await;
    assert!(!page.contains("cancel-run") && !page.contains("name=\"csrf\" value"));
    let response = send(&app.router, form(&cancel, Some(&app.reader), "csrf=x")).await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);

    // The admin sees the button; a form without its CSRF token is refused.
    let page = text(send(&app.router, get(&path, Some(&app.admin))).await).await;
    assert!(page.contains("id=\"cancel-run\""));
    let csrf = page
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("a CSRF token")
        .to_owned();
    let response = send(&app.router, form(&cancel, Some(&app.admin), "csrf=0000")).await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let response = send(&app.router, form(&cancel, Some(&app.admin), "")).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);

    let response = send(
        &app.router,
        form(&cancel, Some(&app.admin), &format!("csrf={csrf}")),
    )
    .await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(header_of(&response, header::LOCATION), path);
    let page = text(send(&app.router, get(&path, Some(&app.admin))).await).await;
    assert!(page.contains("id=\"run-status\" data-status=\"cancelled\""));

    // Retry starts a new run with the same input.
    let retry = format!("{path}/retry");
    let response = send(
        &app.router,
        form(&retry, Some(&app.admin), &format!("csrf={csrf}")),
    )
    .await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let to = header_of(&response, header::LOCATION).to_owned();
    assert!(to.starts_with("/ui/runs/") && to != path, "{to}");
    let page = text(send(&app.router, get(&to, Some(&app.admin))).await).await;
    assert!(page.contains("&lt;/pre&gt;&lt;script&gt;"));
}

#[tokio::test]
async fn links_follow_the_mount_wherever_the_host_nests_it() {
    let app = app(false).await;
    let host = Router::new().nest("/taskforge", app.router.clone());
    let response = send(&host, get("/taskforge/ui/runs", Some(&app.admin))).await;
    assert_eq!(response.status(), StatusCode::OK);
    let page = text(response).await;
    assert!(page.contains("href=\"/taskforge/ui/assets/app.css"));
    assert!(page.contains(&format!("href=\"/taskforge/ui/runs/{}\"", app.run)));
    assert!(page.contains("data-stream=\"/taskforge/ui/stream\""));
    let response = send(&host, get("/taskforge/ui/runs", None)).await;
    assert_eq!(
        header_of(&response, header::LOCATION),
        "/taskforge/ui/login?next=%2Ftaskforge%2Fui%2Fruns"
    );
}

#[tokio::test]
async fn a_token_limited_to_workflows_sees_only_those() {
    let app = app(false).await;
    let response = send(
        &app.router,
        Request::post("/api/v1/tokens")
            .header(header::AUTHORIZATION, format!("Bearer {}", app.admin))
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(
                json!({ "name": "other-team", "scopes": ["read", "run"], "workflows": ["elsewhere"] })
                    .to_string(),
            ))
            .expect("a request"),
    )
    .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let created: Value = serde_json::from_str(&text(response).await).expect("json");
    let limited = created["secret"].as_str().expect("a secret").to_owned();

    // Lists answer, without what the token does not reach, and without a
    // stream it may not open.
    for path in ["/ui", "/ui/runs", "/ui/events"] {
        let response = send(&app.router, get(path, Some(&limited))).await;
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        let page = text(response).await;
        assert!(!page.contains("deploy"), "{path}: {page}");
        assert!(!page.contains("data-stream"), "{path}");
    }
    // The run of a workflow it does not reach is refused, and so is acting on it.
    let path = format!("/ui/runs/{}", app.run);
    let response = send(&app.router, get(&path, Some(&limited))).await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let response = send(
        &app.router,
        form(&format!("{path}/cancel"), Some(&limited), "csrf=x"),
    )
    .await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
}
