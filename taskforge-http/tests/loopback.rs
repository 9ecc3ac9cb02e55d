//! The router over real HTTP on loopback (an ephemeral port, reqwest), on
//! the memory and the sled store: every scenario runs on both.

use std::sync::Arc;
use std::time::Duration;

use chrono::{TimeDelta, TimeZone, Utc};
use reqwest::{Client, Method, Response, StatusCode};
use serde_json::{json, Value};
use taskforge_core::clock::ManualClock;
use taskforge_core::webhook::github_signature;
use taskforge_core::{Engine, StepContext, StepError, StepRegistry, Store};
use taskforge_http::{bootstrap, router, Bootstrap, HttpOptions};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

/// The GitHub `release` fixture; the same bytes as
/// `../shared/fixtures/github/release-published.json`.
const RELEASE: &[u8] = include_bytes!("../../taskforge-core/tests/fixtures/release-published.json");
const SECRET: &str = "fixture-secret";

struct Server {
    base: String,
    admin: String,
    client: Client,
    clock: ManualClock,
    /// Steps named `gated` wait for a permit from here.
    gate: Arc<Semaphore>,
    stop: CancellationToken,
}

impl Server {
    async fn start<S: Store + Clone>(store: S, options: HttpOptions) -> Self {
        let clock = ManualClock::new(Utc.with_ymd_and_hms(2025, 1, 1, 0, 0, 0).unwrap());
        let gate = Arc::new(Semaphore::new(0));
        let mut registry = StepRegistry::new();
        let permits = Arc::clone(&gate);
        registry
            .step("echo", |ctx: StepContext, input: Value| async move {
                Ok::<_, StepError>(
                    json!({ "tag": input["release"]["tag_name"], "attempt": ctx.attempt() }),
                )
            })
            .expect("register echo")
            .step("gated", move |_ctx: StepContext, _input: Value| {
                let permits = Arc::clone(&permits);
                async move {
                    let _permit = permits.acquire().await.map_err(StepError::terminal)?;
                    Ok::<_, StepError>(json!({ "gated": true }))
                }
            })
            .expect("register gated");
        let engine = Engine::builder(store, registry)
            .master_key(taskforge_core::secret::MasterKey::generate())
            .clock(clock.clone())
            .build();
        engine.start();
        let Bootstrap::Created(admin) = bootstrap(engine.store(), None, clock.now_utc())
            .await
            .expect("bootstrap")
        else {
            panic!("a new store has no tokens");
        };
        let stop = CancellationToken::new();
        let app = router(engine, options.clock(clock.clone()).shutdown(stop.clone()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("address"));
        let shutdown = stop.clone();
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(shutdown.cancelled_owned())
                .await
        });
        Self {
            base,
            admin: admin.expose().to_owned(),
            client: Client::new(),
            clock,
            gate,
            stop,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn call(&self, method: Method, path: &str, token: &str, body: Option<Value>) -> Response {
        let mut request = self
            .client
            .request(method, self.url(path))
            .bearer_auth(token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        request.send().await.expect("request")
    }

    async fn json(&self, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let response = self.call(method, path, &self.admin, body).await;
        let status = response.status();
        let body = response.json().await.unwrap_or(Value::Null);
        (status, body)
    }

    /// A workflow of `handler`, published, with a GitHub webhook at `path`.
    async fn workflow(&self, name: &str, handler: &str, path: &str) -> String {
        let (status, workflow) = self
            .json(
                Method::POST,
                "/api/v1/workflows",
                Some(json!({ "name": name })),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{workflow}");
        let id = workflow["id"].as_str().expect("an id").to_owned();
        let (status, version) = self
            .json(
                Method::POST,
                &format!("/api/v1/workflows/{id}/versions"),
                Some(json!({ "steps": [{ "key": "only", "handler": handler }] })),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{version}");
        let (status, trigger) = self
            .json(
                Method::POST,
                "/api/v1/triggers",
                Some(json!({ "workflow_id": id, "config": {
                    "kind": "webhook", "path": path,
                    "signature": { "scheme": "github", "secret": SECRET },
                    "dedup": { "from": "header", "name": "X-GitHub-Delivery" },
                }})),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{trigger}");
        assert_eq!(trigger["kind"]["signature"]["secret"], "<redacted>");
        id
    }

    async fn deliver(&self, path: &str, delivery: &str, secret: &str) -> Response {
        self.client
            .post(self.url(&format!("/hooks/{path}")))
            .header("content-type", "application/json")
            .header("x-github-event", "release")
            .header("x-github-delivery", delivery)
            .header("x-hub-signature-256", github_signature(secret, RELEASE))
            .body(RELEASE)
            .send()
            .await
            .expect("deliver")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

trait NowUtc {
    fn now_utc(&self) -> chrono::DateTime<Utc>;
}

impl NowUtc for ManualClock {
    fn now_utc(&self) -> chrono::DateTime<Utc> {
        taskforge_core::clock::Clock::now(self)
    }
}

async fn problem(response: Response, status: StatusCode, kind: &str) -> Value {
    assert_eq!(response.status(), status);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    let body: Value = response.json().await.expect("a problem body");
    assert_eq!(
        body["type"],
        format!("urn:taskforge:problem:{kind}"),
        "{body}"
    );
    assert_eq!(body["status"], status.as_u16());
    body
}

/// The GitHub fixture with its real signature: accepted, then a duplicate,
/// then forged and odd deliveries refused; `wait` returns the output.
async fn github_delivery<S: Store + Clone>(store: S) {
    let server = Server::start(store, HttpOptions::default()).await;
    server.workflow("release", "echo", "github/releases").await;

    let response = server.deliver("github/releases", "d-1", SECRET).await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    assert!(response.headers().contains_key("x-request-id"));
    let accepted: Value = response.json().await.expect("json");
    assert_eq!(accepted["status"], "accepted");

    let response = server.deliver("github/releases", "d-1", SECRET).await;
    assert_eq!(response.status(), StatusCode::OK);
    let duplicate: Value = response.json().await.expect("json");
    assert_eq!(duplicate["status"], "duplicate");
    assert_eq!(duplicate["event_id"], accepted["event_id"]);
    assert_eq!(duplicate["run_id"], accepted["run_id"]);

    let forged = server.deliver("github/releases", "d-2", "wrong").await;
    problem(forged, StatusCode::UNAUTHORIZED, "webhook-unauthorized").await;
    let unknown = server.deliver("nowhere", "d-3", SECRET).await;
    problem(unknown, StatusCode::NOT_FOUND, "webhook-unknown-path").await;
    let traversal = server.deliver("github/..%2Freleases", "d-4", SECRET).await;
    problem(traversal, StatusCode::BAD_REQUEST, "webhook-invalid-path").await;
    let not_json = server
        .client
        .post(server.url("/hooks/github/releases"))
        .header("content-type", "text/plain")
        .header("x-github-delivery", "d-5")
        .header("x-hub-signature-256", github_signature(SECRET, b"hi"))
        .body("hi")
        .send()
        .await
        .expect("deliver");
    problem(
        not_json,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "webhook-media-type",
    )
    .await;

    let waited = server
        .client
        .post(server.url("/hooks/github/releases?wait=20000"))
        .header("content-type", "application/json")
        .header("x-github-delivery", "d-6")
        .header("x-hub-signature-256", github_signature(SECRET, RELEASE))
        .body(RELEASE)
        .send()
        .await
        .expect("deliver");
    assert_eq!(waited.status(), StatusCode::OK);
    let waited: Value = waited.json().await.expect("json");
    assert_eq!(waited["run_status"], "succeeded", "{waited}");
    assert_eq!(waited["output"]["tag"], "0.0.1");

    // The event and its run, through the API.
    let event_id = accepted["event_id"].as_str().expect("event id");
    let (status, event) = server
        .json(Method::GET, &format!("/api/v1/events/{event_id}"), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(event["outcome"]["run_id"], accepted["run_id"]);
    let (status, replayed) = server
        .json(
            Method::POST,
            &format!("/api/v1/events/{event_id}/replay"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{replayed}");
    let (_, runs) = server
        .json(
            Method::GET,
            &format!("/api/v1/events/{event_id}/runs"),
            None,
        )
        .await;
    assert_eq!(runs.as_array().map(Vec::len), Some(2));
}

/// The SSE stream of one workflow sees its run go queued → succeeded.
async fn stream_sees_a_run_finish<S: Store + Clone>(store: S) {
    use futures::StreamExt;

    let server = Server::start(store, HttpOptions::default()).await;
    let workflow = server.workflow("streamed", "gated", "streamed").await;
    let response = server
        .call(
            Method::GET,
            &format!("/api/v1/stream?workflow_id={workflow}"),
            &server.admin,
            None,
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let mut body = response.bytes_stream();

    let (status, run) = server
        .json(
            Method::POST,
            &format!("/api/v1/workflows/{workflow}/runs"),
            Some(json!({ "input": { "n": 1 } })),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{run}");
    assert_eq!(run["status"], "queued");
    server.gate.add_permits(1);

    let mut text = String::new();
    let mut seen = Vec::new();
    while !seen.contains(&"run_finished".to_owned()) {
        let chunk = tokio::time::timeout(Duration::from_secs(20), body.next())
            .await
            .expect("an update within 20 s")
            .expect("the stream stays open")
            .expect("a chunk");
        text.push_str(&String::from_utf8_lossy(&chunk));
        seen = text
            .lines()
            .filter_map(|l| l.strip_prefix("event: "))
            .map(str::to_owned)
            .collect();
    }
    assert_eq!(
        seen.first().map(String::as_str),
        Some("run_queued"),
        "{text}"
    );
    assert!(text.contains(r#""status":"succeeded""#), "{text}");
    assert!(text.contains(run["id"].as_str().expect("run id")));
}

/// Scopes, workflow restriction, expiry and revocation, each taking
/// effect on the next request.
async fn token_rules<S: Store + Clone>(store: S) {
    let server = Server::start(store, HttpOptions::default()).await;
    let mine = server.workflow("mine", "echo", "mine").await;
    let theirs = server.workflow("theirs", "echo", "theirs").await;

    let (status, created) = server
        .json(
            Method::POST,
            "/api/v1/tokens",
            Some(json!({ "name": "reader", "scopes": ["read"], "workflows": ["mine"], "expires_in_secs": 60 })),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let reader = created["secret"].as_str().expect("a secret").to_owned();
    assert!(reader.starts_with("tf_"));
    assert!(created["token"].get("digest").is_none());

    let ok = server
        .call(
            Method::GET,
            &format!("/api/v1/workflows/{mine}"),
            &reader,
            None,
        )
        .await;
    assert_eq!(ok.status(), StatusCode::OK);
    let other = server
        .call(
            Method::GET,
            &format!("/api/v1/workflows/{theirs}"),
            &reader,
            None,
        )
        .await;
    problem(other, StatusCode::FORBIDDEN, "forbidden").await;
    let write = server
        .call(
            Method::POST,
            &format!("/api/v1/workflows/{mine}/runs"),
            &reader,
            Some(json!({})),
        )
        .await;
    problem(write, StatusCode::FORBIDDEN, "forbidden").await;
    let escalate = server
        .call(
            Method::POST,
            "/api/v1/tokens",
            &reader,
            Some(json!({ "name": "x", "scopes": ["read"] })),
        )
        .await;
    problem(escalate, StatusCode::FORBIDDEN, "forbidden").await;

    // A typo is caught by the checksum; a missing header is 401 too.
    let mut typo = reader.clone().into_bytes();
    typo[5] = if typo[5] == b'A' { b'B' } else { b'A' };
    let typo = String::from_utf8(typo).expect("ascii");
    let response = server
        .call(Method::GET, "/api/v1/workflows", &typo, None)
        .await;
    let body = problem(response, StatusCode::UNAUTHORIZED, "unauthorized").await;
    assert!(body["detail"]
        .as_str()
        .unwrap_or_default()
        .contains("checksum"));
    let anonymous = server
        .client
        .get(server.url("/api/v1/workflows"))
        .send()
        .await
        .expect("request");
    problem(anonymous, StatusCode::UNAUTHORIZED, "unauthorized").await;

    // Expiry: the next request after the deadline is refused.
    server.clock.advance(TimeDelta::seconds(61));
    let expired = server
        .call(
            Method::GET,
            &format!("/api/v1/workflows/{mine}"),
            &reader,
            None,
        )
        .await;
    problem(expired, StatusCode::UNAUTHORIZED, "unauthorized").await;

    // Revocation: likewise.
    let (_, created) = server
        .json(
            Method::POST,
            "/api/v1/tokens",
            Some(json!({ "name": "runner", "scopes": ["read", "run"] })),
        )
        .await;
    let runner = created["secret"].as_str().expect("a secret").to_owned();
    let id = created["token"]["id"].as_str().expect("an id").to_owned();
    let ok = server
        .call(Method::GET, "/api/v1/runs", &runner, None)
        .await;
    assert_eq!(ok.status(), StatusCode::OK);
    let (status, revoked) = server
        .json(Method::POST, &format!("/api/v1/tokens/{id}/revoke"), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(revoked["revoked_at"].is_string());
    let refused = server
        .call(Method::GET, "/api/v1/runs", &runner, None)
        .await;
    problem(refused, StatusCode::UNAUTHORIZED, "unauthorized").await;

    let (status, listed) = server.json(Method::GET, "/api/v1/tokens", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(listed.as_array().map(Vec::len), Some(3));
    assert!(!listed.to_string().contains(&runner));
}

/// Bad input of every kind is a problem with the right status, and the
/// run API's idempotency and details work.
async fn bad_input_and_runs<S: Store + Clone>(store: S) {
    let server = Server::start(store, HttpOptions::default()).await;
    let workflow = server.workflow("runs", "echo", "runs").await;

    let malformed = server
        .client
        .post(server.url("/api/v1/workflows"))
        .bearer_auth(&server.admin)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .expect("request");
    problem(malformed, StatusCode::BAD_REQUEST, "malformed-body").await;
    let unknown_field = server
        .call(
            Method::POST,
            "/api/v1/workflows",
            &server.admin,
            Some(json!({ "name": "x", "nmae": "y" })),
        )
        .await;
    problem(
        unknown_field,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid-body",
    )
    .await;
    let bad_cursor = server
        .call(Method::GET, "/api/v1/runs?after=nope", &server.admin, None)
        .await;
    problem(bad_cursor, StatusCode::BAD_REQUEST, "invalid-cursor").await;
    let bad_param = server
        .call(
            Method::GET,
            "/api/v1/runs?stauts=queued",
            &server.admin,
            None,
        )
        .await;
    problem(bad_param, StatusCode::BAD_REQUEST, "invalid-query").await;
    let bad_cursor = server
        .call(
            Method::GET,
            "/api/v1/workflows?after=nope",
            &server.admin,
            None,
        )
        .await;
    problem(bad_cursor, StatusCode::BAD_REQUEST, "invalid-cursor").await;
    let unknown = server
        .call(
            Method::GET,
            &format!("/api/v1/runs/{}", uuid::Uuid::now_v7()),
            &server.admin,
            None,
        )
        .await;
    problem(unknown, StatusCode::NOT_FOUND, "not-found").await;
    let bad_id = server
        .call(Method::GET, "/api/v1/runs/not-a-uuid", &server.admin, None)
        .await;
    problem(bad_id, StatusCode::BAD_REQUEST, "invalid-path").await;
    let wrong_method = server
        .call(Method::DELETE, "/api/v1/workflows", &server.admin, None)
        .await;
    problem(
        wrong_method,
        StatusCode::METHOD_NOT_ALLOWED,
        "method-not-allowed",
    )
    .await;
    let nowhere = server
        .call(Method::GET, "/api/v2/x", &server.admin, None)
        .await;
    problem(nowhere, StatusCode::NOT_FOUND, "not-found").await;
    let invalid = server
        .call(
            Method::POST,
            &format!("/api/v1/workflows/{workflow}/versions"),
            &server.admin,
            Some(json!({ "steps": [{ "key": "a", "handler": "unregistered" }] })),
        )
        .await;
    problem(
        invalid,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid-definition",
    )
    .await;

    // Idempotent start, details with attempts, paging, cancel of a finished run.
    let start = json!({ "input": { "release": { "tag_name": "v9" } }, "idempotency_key": "k-1" });
    let path = format!("/api/v1/workflows/{workflow}/runs");
    let (status, first) = server.json(Method::POST, &path, Some(start.clone())).await;
    assert_eq!(status, StatusCode::CREATED, "{first}");
    let (_, second) = server.json(Method::POST, &path, Some(start)).await;
    assert_eq!(first["id"], second["id"]);
    let run_id = first["id"].as_str().expect("run id");
    let (status, waited) = server
        .json(
            Method::GET,
            &format!("/api/v1/runs/{run_id}/wait?timeout_ms=20000"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{waited}");
    assert_eq!(waited["run"]["status"], "succeeded");
    assert_eq!(waited["steps"][0]["output"]["tag"], "v9");
    let cancel = server
        .call(
            Method::POST,
            &format!("/api/v1/runs/{run_id}/cancel"),
            &server.admin,
            None,
        )
        .await;
    problem(cancel, StatusCode::CONFLICT, "run-finished").await;
    for _ in 0..2 {
        server.json(Method::POST, &path, Some(json!({}))).await;
    }
    let (_, page) = server
        .json(
            Method::GET,
            &format!("/api/v1/runs?workflow_id={workflow}&limit=2"),
            None,
        )
        .await;
    let next = page["next"].as_str().expect("a next page").to_owned();
    let (_, last) = server
        .json(
            Method::GET,
            &format!("/api/v1/runs?workflow_id={workflow}&limit=2&after={next}"),
            None,
        )
        .await;
    assert_eq!(last["items"].as_array().map(Vec::len), Some(1));
    assert!(last.get("next").is_none());

    let (status, diff) = server
        .json(Method::POST, &format!("/api/v1/workflows/{workflow}/versions"),
            Some(json!({ "steps": [{ "key": "only", "handler": "echo" }, { "key": "more", "handler": "gated" }] })))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{diff}");
    let (status, diff) = server
        .json(
            Method::GET,
            &format!("/api/v1/workflows/{workflow}/versions/2/diff"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(diff["added"], json!(["more"]));

    let (status, doc) = server.json(Method::GET, "/api/v1/openapi.json", None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(doc["openapi"]
        .as_str()
        .is_some_and(|v| v.starts_with("3.1")));
    let (status, _) = server.json(Method::GET, "/readyz", None).await;
    assert_eq!(status, StatusCode::OK);
}

/// A run waiting for a signal is parked (`waiting`, no lease); a signal
/// posted with a JSON payload wakes it, and the wait step's output is the
/// payload. A finished run refuses signals, and so does a bad name.
async fn signals_wake_a_waiting_run<S: Store + Clone>(store: S) {
    let server = Server::start(store, HttpOptions::default()).await;
    let (status, workflow) = server
        .json(
            Method::POST,
            "/api/v1/workflows",
            Some(json!({ "name": "approvals" })),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{workflow}");
    let workflow = workflow["id"].as_str().expect("an id").to_owned();
    let (status, version) = server
        .json(
            Method::POST,
            &format!("/api/v1/workflows/{workflow}/versions"),
            Some(json!({ "steps": [
                { "key": "approval", "wait": { "signal": "approved", "timeout": 86_400_000 } },
            ] })),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{version}");
    let (status, run) = server
        .json(
            Method::POST,
            &format!("/api/v1/workflows/{workflow}/runs"),
            Some(json!({ "input": {} })),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{run}");
    let run_id = run["id"].as_str().expect("run id").to_owned();

    let mut parked = Value::Null;
    for _ in 0..2_000 {
        let (_, details) = server
            .json(Method::GET, &format!("/api/v1/runs/{run_id}"), None)
            .await;
        if details["run"]["status"] == "waiting" {
            parked = details;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(parked["run"]["status"], "waiting", "{parked}");
    assert!(parked["run"].get("lease").is_none(), "{parked}");
    assert_eq!(parked["steps"][0]["status"], "running");
    let (_, listed) = server
        .json(
            Method::GET,
            &format!("/api/v1/runs?workflow_id={workflow}&status=waiting"),
            None,
        )
        .await;
    assert_eq!(listed["items"][0]["id"], run_id.as_str(), "{listed}");

    let (status, signalled) = server
        .json(
            Method::POST,
            &format!("/api/v1/runs/{run_id}/signals/approved"),
            Some(json!({ "by": "ada" })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{signalled}");
    assert_eq!(signalled["signals"][0]["name"], "approved");
    assert_eq!(signalled["signals"][0]["payload"], json!({ "by": "ada" }));
    let (status, waited) = server
        .json(
            Method::GET,
            &format!("/api/v1/runs/{run_id}/wait?timeout_ms=20000"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{waited}");
    assert_eq!(waited["run"]["status"], "succeeded");
    assert_eq!(waited["run"]["output"], json!({ "by": "ada" }));
    assert_eq!(waited["steps"][0]["signal"], 0);

    let late = server
        .call(
            Method::POST,
            &format!("/api/v1/runs/{run_id}/signals/approved"),
            &server.admin,
            Some(json!(true)),
        )
        .await;
    problem(late, StatusCode::CONFLICT, "run-finished").await;
    let bad_name = server
        .call(
            Method::POST,
            &format!("/api/v1/runs/{run_id}/signals/not%20a%20name"),
            &server.admin,
            Some(json!(true)),
        )
        .await;
    problem(bad_name, StatusCode::UNPROCESSABLE_ENTITY, "invalid-input").await;
}

/// A saturated server sheds load with 503 and `Retry-After`; a shutting
/// down one refuses deliveries and fails readiness.
async fn load_shedding_and_drain<S: Store + Clone>(store: S) {
    let server = Server::start(store, HttpOptions::default().max_concurrent_requests(1)).await;
    let workflow = server.workflow("slow", "gated", "slow").await;
    let (_, run) = server
        .json(
            Method::POST,
            &format!("/api/v1/workflows/{workflow}/runs"),
            Some(json!({})),
        )
        .await;
    let run_id = run["id"].as_str().expect("run id").to_owned();
    let waiting = {
        let (client, url, admin) = (
            server.client.clone(),
            server.url(&format!("/api/v1/runs/{run_id}/wait")),
            server.admin.clone(),
        );
        tokio::spawn(async move { client.get(url).bearer_auth(admin).send().await })
    };
    // Until the waiting request holds the only slot, health answers 200.
    let mut shed = None;
    for _ in 0..200 {
        let response = server
            .client
            .get(server.url("/healthz"))
            .send()
            .await
            .expect("request");
        if response.status() == StatusCode::SERVICE_UNAVAILABLE {
            shed = Some(response);
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let shed = shed.expect("a request is shed while the only slot is taken");
    assert_eq!(shed.headers()["retry-after"], "1");
    problem(shed, StatusCode::SERVICE_UNAVAILABLE, "unavailable").await;
    server.gate.add_permits(1);
    let waited = waiting.await.expect("join").expect("response");
    assert_eq!(waited.status(), StatusCode::OK);

    server.stop.cancel();
}

/// Tokens leave no plaintext in the sled directory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sled_keeps_no_token_plaintext() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let store = taskforge_store_sled::SledStore::open(dir.path()).expect("open");
    let server = Server::start(store.clone(), HttpOptions::default()).await;
    let mut secrets = vec![server.admin.clone()];
    for i in 0..5 {
        let (status, created) = server
            .json(
                Method::POST,
                "/api/v1/tokens",
                Some(json!({ "name": format!("t{i}"), "scopes": ["read"] })),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED);
        secrets.push(created["secret"].as_str().expect("a secret").to_owned());
    }
    store.flush().await.expect("flush");
    let mut files = vec![dir.path().to_path_buf()];
    let mut scanned = 0;
    while let Some(path) = files.pop() {
        if path.is_dir() {
            files.extend(
                std::fs::read_dir(&path)
                    .expect("read dir")
                    .map(|e| e.expect("entry").path()),
            );
            continue;
        }
        let bytes = std::fs::read(&path).expect("read file");
        scanned += bytes.len();
        for secret in &secrets {
            // The part after the public prefix must appear nowhere.
            let hidden = &secret.as_bytes()[11..];
            assert!(
                !bytes.windows(hidden.len()).any(|w| w == hidden),
                "{} holds a token's secret",
                path.display()
            );
        }
    }
    assert!(scanned > 0);
}

#[test]
fn fixture_matches_the_shared_one() {
    let shared = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/fixtures/github/release-published.json");
    if let Ok(bytes) = std::fs::read(shared) {
        assert_eq!(bytes, RELEASE);
    }
}

macro_rules! on_every_store {
    ($($case:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::$case(taskforge_store_memory::MemoryStore::new()).await;
                }
            )*
        }
        mod sled {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let dir = tempfile::tempdir().expect("a temporary directory");
                    let store = taskforge_store_sled::SledStore::open(dir.path()).expect("open");
                    super::$case(store).await;
                }
            )*
        }
    };
}

on_every_store!(
    github_delivery,
    stream_sees_a_run_finish,
    token_rules,
    bad_input_and_runs,
    load_shedding_and_drain,
    signals_wake_a_waiting_run,
);
