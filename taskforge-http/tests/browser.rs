//! The inspector in a real browser: headless Chromium, driven through
//! chromedriver's W3C WebDriver API with plain HTTP calls (reqwest), against
//! the router served on loopback with real runs on the memory store.
//!
//! - the runs page shows a run that finishes after it was opened, without
//!   reloading;
//! - the run page shows every attempt of a retried step, with its errors;
//! - the cancel button cancels a running run;
//! - a read-only token sees no action buttons, and both the API and the
//!   inspector refuse its actions.
//!
//! Needs `chromedriver` and `chromium` (Debian: `apt-get install chromium
//! chromium-driver`; `CHROMEDRIVER` and `CHROME_BIN` override the paths).
//! Without them the test skips with one line, unless
//! `TASKFORGE_BROWSER_TESTS=1` (as CI sets it), which makes it fail.
//! `TASKFORGE_SCREENSHOTS=<dir>` saves PNGs of the main pages there
//! (`TASKFORGE_SCREENSHOTS=../docs` from this crate refreshes the
//! README's).

use std::io::Write as _;
use std::net::TcpListener as StdListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use futures::FutureExt as _;
use reqwest::{Client, StatusCode};
use serde_json::{json, Value};
use taskforge_core::artifact::FsArtifactStore;
use taskforge_core::store::Scope;
use taskforge_core::webhook::{github_signature, DedupSource, SignatureScheme};
use taskforge_core::{
    CronConfig, Engine, LogLevel, RetryPolicy, RunId, RunStatus, StepContext, StepDefinition,
    StepError, StepRegistry, TriggerKind, WebhookConfig, WorkflowDefinition, WorkflowId,
};
use taskforge_http::{bootstrap, issue_token, router, Bootstrap, HttpOptions, NewToken};
use taskforge_store_memory::MemoryStore;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

/// The key of an element reference in W3C WebDriver answers.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";
/// The longest any one DOM condition is waited for: generous, as CI
/// machines are slow; a condition is checked every 100 ms until then.
const PATIENCE: Duration = Duration::from_secs(60);
const RELEASE: &[u8] = include_bytes!("../../taskforge-core/tests/fixtures/release-published.json");
const SECRET: &str = "browser-test-secret";

fn on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|path| path.is_file())
    })
}

/// chromedriver, or why the test cannot run.
fn chromedriver() -> Result<PathBuf, String> {
    if let Some(path) = std::env::var_os("CHROMEDRIVER") {
        return Ok(PathBuf::from(path));
    }
    on_path("chromedriver").ok_or_else(|| {
        "chromedriver is not installed (Debian: apt-get install chromium chromium-driver)".into()
    })
}

fn chrome_binary() -> Option<PathBuf> {
    std::env::var_os("CHROME_BIN")
        .map(PathBuf::from)
        .or_else(|| {
            ["chromium", "chromium-browser"]
                .into_iter()
                .find_map(on_path)
        })
}

/// A chromedriver process on a free loopback port; killed on drop.
struct Driver {
    child: Child,
    url: String,
}

impl Driver {
    async fn start(path: &Path, log: &Path) -> Self {
        let client = Client::new();
        for _ in 0..5 {
            let port = StdListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("a free port")
                .port();
            let log_file = std::fs::File::create(log).expect("chromedriver log");
            let mut child = Command::new(path)
                .arg(format!("--port={port}"))
                .stdout(Stdio::null())
                .stderr(log_file)
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {}: {e}", path.display()));
            let url = format!("http://127.0.0.1:{port}");
            let deadline = Instant::now() + PATIENCE;
            while Instant::now() < deadline {
                if child.try_wait().ok().flatten().is_some() {
                    break; // the port was taken meanwhile: try another
                }
                let ready = client
                    .get(format!("{url}/status"))
                    .send()
                    .await
                    .ok()
                    .filter(|r| r.status().is_success());
                if let Some(ready) = ready {
                    let status: Value = ready.json().await.unwrap_or_default();
                    if status["value"]["ready"] == true {
                        return Self { child, url };
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("chromedriver did not come up; see {}", log.display());
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A browser session.
struct Browser {
    client: Client,
    session: String,
}

impl Browser {
    async fn open(driver: &Driver, profile: &Path) -> Self {
        let mut args = vec![
            "--headless".to_owned(),
            "--no-sandbox".to_owned(),
            "--disable-gpu".to_owned(),
            "--disable-quic".to_owned(),
            "--no-first-run".to_owned(),
            "--disable-background-networking".to_owned(),
            "--disable-component-update".to_owned(),
            "--disable-sync".to_owned(),
            "--disable-dev-shm-usage".to_owned(),
            "--window-size=1280,900".to_owned(),
            format!("--user-data-dir={}", profile.display()),
        ];
        args.sort();
        let mut options = json!({ "args": args });
        if let Some(binary) = chrome_binary() {
            options["binary"] = json!(binary);
        }
        let capabilities = json!({ "capabilities": { "alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": options,
        }}});
        let client = Client::new();
        let response = client
            .post(format!("{}/session", driver.url))
            .json(&capabilities)
            .send()
            .await
            .expect("new session");
        let body: Value = response.json().await.expect("session json");
        let session = body["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no browser session: {body}"))
            .to_owned();
        Self {
            client,
            session: format!("{}/session/{session}", driver.url),
        }
    }

    /// A WebDriver command; its `value`, or the error.
    async fn try_command(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, Value> {
        let mut request = self
            .client
            .request(method, format!("{}{path}", self.session));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("webdriver request");
        let ok = response.status().is_success();
        let body: Value = response.json().await.expect("webdriver json");
        if ok {
            Ok(body["value"].clone())
        } else {
            Err(body["value"].clone())
        }
    }

    async fn command(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        self.try_command(method, path, body)
            .await
            .unwrap_or_else(|e| panic!("webdriver {path}: {e}"))
    }

    async fn goto(&self, url: &str) {
        self.command(reqwest::Method::POST, "/url", Some(json!({ "url": url })))
            .await;
    }

    async fn find(&self, css: &str) -> Option<String> {
        let found = self
            .try_command(
                reqwest::Method::POST,
                "/element",
                Some(json!({ "using": "css selector", "value": css })),
            )
            .await
            .ok()?;
        found[ELEMENT].as_str().map(str::to_owned)
    }

    async fn click(&self, element: &str) {
        self.command(
            reqwest::Method::POST,
            &format!("/element/{element}/click"),
            Some(json!({})),
        )
        .await;
    }

    /// Clicks the element `css` selects. A live page may swap the element
    /// for a fresh copy between finding and clicking: then it is found
    /// again.
    async fn click_on(&self, css: &str) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(element) = self.find(css).await {
                let clicked = self
                    .try_command(
                        reqwest::Method::POST,
                        &format!("/element/{element}/click"),
                        Some(json!({})),
                    )
                    .await;
                match clicked {
                    Ok(_) => return,
                    Err(error) if error["error"] == "stale element reference" => {}
                    Err(error) => panic!("clicking {css}: {error}"),
                }
            }
            assert!(Instant::now() < deadline, "no {css} to click");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn type_into(&self, element: &str, text: &str) {
        self.command(
            reqwest::Method::POST,
            &format!("/element/{element}/value"),
            Some(json!({ "text": text })),
        )
        .await;
    }

    async fn script(&self, script: &str, args: Value) -> Value {
        self.command(
            reqwest::Method::POST,
            "/execute/sync",
            Some(json!({ "script": script, "args": args })),
        )
        .await
    }

    /// Waits until `script` returns something truthy, and returns it.
    async fn wait_for(&self, what: &str, script: &str, args: Value) -> Value {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let value = self.script(script, args.clone()).await;
            let truthy = match &value {
                Value::Null => false,
                Value::Bool(b) => *b,
                Value::Number(n) => n.as_f64() != Some(0.0),
                Value::String(s) => !s.is_empty(),
                _ => true,
            };
            if truthy {
                return value;
            }
            if Instant::now() > deadline {
                let page = self
                    .script(
                        "return document.body ? document.body.innerText : ''",
                        json!([]),
                    )
                    .await;
                panic!(
                    "waited {PATIENCE:?} for {what}; the page reads:\n{}",
                    page.as_str().unwrap_or("")
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn sign_in(&self, base: &str, token: &str) {
        self.command(reqwest::Method::DELETE, "/cookie", None).await;
        self.goto(&format!("{base}/ui/runs")).await;
        // Not signed in: the page leads to the login form, which comes back here.
        let field = self.find("#token").await.expect("the login form");
        self.type_into(&field, token).await;
        let button = self.find("#sign-in").await.expect("a sign-in button");
        self.click(&button).await;
        self.wait_for(
            "the runs page after signing in",
            "return location.pathname === '/ui/runs' && document.querySelector('h1').textContent === 'Runs'",
            json!([]),
        )
        .await;
    }

    /// A PNG of the page, as tall as its content (within reason).
    async fn screenshot(&self, dir: &Path, name: &str) {
        let height = self
            .script("return document.documentElement.scrollHeight", json!([]))
            .await
            .as_u64()
            .unwrap_or(900)
            .clamp(700, 2000);
        self.command(
            reqwest::Method::POST,
            "/window/rect",
            Some(json!({ "width": 1280, "height": height + 90 })),
        )
        .await;
        let png = self
            .command(reqwest::Method::GET, "/screenshot", None)
            .await;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(png.as_str().expect("base64"))
            .expect("a PNG");
        std::fs::create_dir_all(dir).expect("screenshot dir");
        std::fs::write(dir.join(format!("{name}.png")), bytes).expect("write screenshot");
        self.command(
            reqwest::Method::POST,
            "/window/rect",
            Some(json!({ "width": 1280, "height": 900 })),
        )
        .await;
    }

    async fn quit(&self) {
        let _ = self.try_command(reqwest::Method::DELETE, "", None).await;
    }
}

/// The server: an engine on the memory store with three workflows, the
/// router with the inspector at `/ui`, an admin and a read-only token.
struct Server {
    base: String,
    admin: String,
    reader: String,
    client: Client,
    engine: Engine<MemoryStore, StepRegistry>,
    deploy: WorkflowId,
    hold: WorkflowId,
    /// `gated` steps wait for a permit from here.
    gate: Arc<Semaphore>,
    stop: CancellationToken,
    /// Where the steps' artifacts are kept.
    _artifacts: tempfile::TempDir,
}

impl Server {
    async fn start() -> Self {
        let gate = Arc::new(Semaphore::new(0));
        let permits = Arc::clone(&gate);
        let mut registry = StepRegistry::new();
        registry
            // Each step takes a little while, so that the timeline has
            // something to show.
            .step("build", |_ctx: StepContext, input: Value| async move {
                tokio::time::sleep(Duration::from_millis(120)).await;
                let tag = input["release"]["tag_name"]
                    .as_str()
                    .or(input["tag"].as_str())
                    .unwrap_or("latest")
                    .to_owned();
                Ok::<_, StepError>(json!({ "image": format!("registry.local/acme/api:{tag}") }))
            })
            .expect("build")
            .step("migrate", |ctx: StepContext, _input: Value| async move {
                // Fails twice, as a flaky database would, then succeeds.
                tokio::time::sleep(Duration::from_millis(60)).await;
                ctx.log(LogLevel::Info, "connecting to db-primary:5432");
                if ctx.attempt() < 3 {
                    ctx.log(LogLevel::Error, "connection reset by peer");
                    return Err(StepError::retryable(format!(
                        "connection reset by db-primary (attempt {})",
                        ctx.attempt()
                    )));
                }
                Ok(json!({ "schema_version": 7, "attempt": ctx.attempt() }))
            })
            .expect("migrate")
            .step("deploy", |ctx: StepContext, input: Value| async move {
                tokio::time::sleep(Duration::from_millis(150)).await;
                if input["break"] == true {
                    return Err(StepError::terminal("registry.local refused the image: 403"));
                }
                let image = ctx.output("build").map(|b| b["image"].clone());
                ctx.log(LogLevel::Info, "rolling out 3 replicas");
                tracing::warn!(replica = 2, "slow to become ready");
                let manifest = json!({ "image": image, "replicas": 3 });
                ctx.put_artifact("deploy-manifest.json", manifest.to_string())
                    .await?;
                Ok::<_, StepError>(json!({ "deployed": image, "replicas": 3 }))
            })
            .expect("deploy")
            .step(
                "smoke-test",
                |_ctx: StepContext, _input: Value| async move {
                    tokio::time::sleep(Duration::from_millis(80)).await;
                    Ok::<_, StepError>(
                        json!({ "status": 200, "checks": ["health", "login", "search"] }),
                    )
                },
            )
            .expect("smoke-test")
            .step("gated", move |_ctx: StepContext, _input: Value| {
                let permits = Arc::clone(&permits);
                async move {
                    let _permit = permits.acquire().await.map_err(StepError::terminal)?;
                    Ok::<_, StepError>(json!({ "gated": true }))
                }
            })
            .expect("gated")
            .step("report", |ctx: StepContext, _input: Value| async move {
                Ok::<_, StepError>(json!({ "report": "nightly", "run": ctx.run_id() }))
            })
            .expect("report");
        let artifacts = tempfile::tempdir().expect("a directory for artifacts");
        let engine = Engine::builder(MemoryStore::new(), registry)
            .master_key(taskforge_core::secret::MasterKey::generate())
            .artifacts(FsArtifactStore::open(artifacts.path()).expect("artifacts"))
            .poll_interval(Duration::from_millis(50))
            .build();
        engine.start();

        let retry = RetryPolicy::fixed(3, Duration::from_millis(200));
        let deploy = engine
            .ensure_workflow("deploy-api")
            .await
            .expect("workflow");
        engine
            .publish(
                deploy.id,
                WorkflowDefinition::new(vec![
                    StepDefinition::new("build", "build"),
                    StepDefinition::new("migrate", "migrate").retry(retry.clone()),
                    StepDefinition::new("deploy", "deploy"),
                ]),
            )
            .await
            .expect("v1");
        engine
            .publish(
                deploy.id,
                WorkflowDefinition::new(vec![
                    StepDefinition::new("build", "build").timeout(Duration::from_secs(60)),
                    StepDefinition::new("migrate", "migrate")
                        .config(json!({ "target_schema": 7 }))
                        .retry(retry),
                    StepDefinition::new("deploy", "deploy"),
                    StepDefinition::new("smoke-test", "smoke-test"),
                ])
                .timeout(Duration::from_secs(300)),
            )
            .await
            .expect("v2");
        let webhook = WebhookConfig::new("github/releases")
            .with_signature(SignatureScheme::github(SECRET))
            .with_dedup(DedupSource::Header("X-GitHub-Delivery".into()))
            .keep_header("X-GitHub-Event");
        engine
            .create_trigger(deploy.id, TriggerKind::Webhook(webhook))
            .await
            .expect("webhook trigger");
        let hold = engine
            .ensure_workflow("hold-the-line")
            .await
            .expect("workflow");
        engine
            .publish(
                hold.id,
                WorkflowDefinition::new(vec![StepDefinition::new("wait", "gated")]),
            )
            .await
            .expect("hold v1");
        let nightly = engine
            .ensure_workflow("nightly-report")
            .await
            .expect("workflow");
        engine
            .publish(
                nightly.id,
                WorkflowDefinition::new(vec![StepDefinition::new("report", "report")]),
            )
            .await
            .expect("nightly v1");
        engine
            .create_trigger(
                nightly.id,
                TriggerKind::Cron(CronConfig::new("0 3 * * *", "Europe/Berlin")),
            )
            .await
            .expect("cron trigger");

        let now = chrono::Utc::now();
        let Bootstrap::Created(admin) = bootstrap(engine.store(), None, now)
            .await
            .expect("bootstrap")
        else {
            panic!("a new store has no tokens");
        };
        let (_, reader) = issue_token(
            engine.store(),
            NewToken::new("dashboard viewer", [Scope::Read]),
            now,
        )
        .await
        .expect("a read-only token");
        let stop = CancellationToken::new();
        let app = router(
            engine.clone(),
            HttpOptions::default().ui("/ui").shutdown(stop.clone()),
        );
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
            reader: reader.expose().to_owned(),
            client: Client::new(),
            engine,
            deploy: deploy.id,
            hold: hold.id,
            gate,
            stop,
            _artifacts: artifacts,
        }
    }

    /// Starts a run through the API, as a user would.
    async fn start_run(&self, workflow: WorkflowId, input: Value) -> RunId {
        let response = self
            .client
            .post(format!("{}/api/v1/workflows/{workflow}/runs", self.base))
            .bearer_auth(&self.admin)
            .json(&json!({ "input": input }))
            .send()
            .await
            .expect("start a run");
        assert_eq!(response.status(), StatusCode::CREATED);
        let run: Value = response.json().await.expect("a run");
        run["id"]
            .as_str()
            .expect("an id")
            .parse()
            .expect("a run id")
    }

    async fn finished(&self, run: RunId) -> RunStatus {
        tokio::time::timeout(PATIENCE, self.engine.wait_for_run(run))
            .await
            .expect("the run finishes")
            .expect("a run")
            .status
    }

    async fn deliver(&self, delivery: &str, secret: &str) -> StatusCode {
        self.client
            .post(format!("{}/hooks/github/releases", self.base))
            .header("content-type", "application/json")
            .header("x-github-event", "release")
            .header("x-github-delivery", delivery)
            .header("x-hub-signature-256", github_signature(secret, RELEASE))
            .body(RELEASE)
            .send()
            .await
            .expect("deliver")
            .status()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_inspector_in_a_real_browser() {
    let driver_path = match chromedriver() {
        Ok(path) => path,
        Err(why)
            if std::env::var("TASKFORGE_BROWSER_TESTS")
                .is_ok_and(|v| !v.is_empty() && v != "0") =>
        {
            panic!("TASKFORGE_BROWSER_TESTS is set but {why}")
        }
        Err(why) => {
            // Straight to stderr: the harness would swallow a println.
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED the_inspector_in_a_real_browser: {why}; set TASKFORGE_BROWSER_TESTS=1 to make this a failure"
            );
            return;
        }
    };
    let scratch = tempfile::tempdir().expect("a temporary directory");
    let driver = Driver::start(&driver_path, &scratch.path().join("chromedriver.log")).await;
    let server = Server::start().await;
    let browser = Browser::open(&driver, &scratch.path().join("profile")).await;
    let outcome = std::panic::AssertUnwindSafe(scenarios(&server, &browser))
        .catch_unwind()
        .await;
    browser.quit().await;
    drop(driver);
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

async fn scenarios(server: &Server, browser: &Browser) {
    let base = &server.base;

    // History to look at: a run whose migrate step is retried twice, a
    // webhook delivery, a forged one, a failed run.
    let retried = server
        .start_run(
            server.deploy,
            json!({ "tag": "v1.4.0", "repository": "acme/api" }),
        )
        .await;
    assert_eq!(server.finished(retried).await, RunStatus::Succeeded);
    assert_eq!(
        server.deliver("delivery-1", SECRET).await,
        StatusCode::ACCEPTED
    );
    assert_eq!(
        server.deliver("delivery-2", "forged").await,
        StatusCode::UNAUTHORIZED
    );
    let broken = server
        .start_run(server.deploy, json!({ "tag": "v1.4.1", "break": true }))
        .await;
    assert_eq!(server.finished(broken).await, RunStatus::Failed);

    // Signing in as admin leads back to the page asked for.
    browser.sign_in(base, &server.admin).await;

    // The run page shows every attempt of the retried step, with errors.
    browser.goto(&format!("{base}/ui/runs/{retried}")).await;
    let attempts = browser
        .wait_for(
            "three attempts of migrate",
            "const rows = [...document.querySelectorAll('tr.attempt[data-step=\"migrate\"]')];
             return rows.length === 3 ? rows.map(r => r.dataset.attempt + ':' + r.dataset.status) : null;",
            json!([]),
        )
        .await;
    assert_eq!(attempts, json!(["1:failed", "2:failed", "3:succeeded"]));
    let errors = browser
        .script(
            "return [...document.querySelectorAll('tbody[data-step=\"migrate\"] .attempt-error')].map(e => e.textContent)",
            json!([]),
        )
        .await;
    assert_eq!(errors.as_array().map(Vec::len), Some(2), "{errors}");
    assert!(errors[0]
        .as_str()
        .unwrap_or("")
        .contains("connection reset by db-primary (attempt 1)"));
    assert_eq!(
        browser
            .script(
                "return document.querySelector('#run-status').dataset.status",
                json!([])
            )
            .await,
        "succeeded"
    );
    assert!(
        browser.find("#retry-run").await.is_some(),
        "an admin may retry"
    );
    // Each attempt's log, and the deploy step's artifact with a download link.
    let logs = browser
        .script(
            "return [...document.querySelectorAll('tbody[data-step=\"migrate\"] details.log')].map(d => d.textContent)",
            json!([]),
        )
        .await;
    assert_eq!(logs.as_array().map(Vec::len), Some(3), "{logs}");
    assert!(logs[0]
        .as_str()
        .unwrap_or("")
        .contains("connection reset by peer"));
    let artifact = browser
        .script(
            "const a = document.querySelector('tr[data-artifact=\"deploy-manifest.json\"] a'); return a ? a.getAttribute('href') : null;",
            json!([]),
        )
        .await;
    assert_eq!(
        artifact,
        json!(format!("/ui/runs/{retried}/artifacts/deploy-manifest.json"))
    );

    // The runs page shows a run that finishes after it was opened, with no reload.
    browser.goto(&format!("{base}/ui/runs")).await;
    browser
        .wait_for(
            "the live stream",
            "return document.querySelector('#live-status').dataset.state === 'on'",
            json!([]),
        )
        .await;
    browser
        .script("window.__notReloaded = true", json!([]))
        .await;
    let live = server
        .start_run(server.deploy, json!({ "tag": "v1.5.0" }))
        .await;
    assert_eq!(server.finished(live).await, RunStatus::Succeeded);
    browser
        .wait_for(
            "the new run, succeeded, in the runs table",
            "return document.querySelector(`tr[data-run=\"${arguments[0]}\"][data-status=\"succeeded\"]`) !== null",
            json!([live.to_string()]),
        )
        .await;
    assert_eq!(
        browser
            .script("return window.__notReloaded === true", json!([]))
            .await,
        true,
        "the page was updated in place"
    );

    // The cancel button cancels a running run.
    let held = server
        .start_run(server.hold, json!({ "ticket": "OPS-1234" }))
        .await;
    browser.goto(&format!("{base}/ui/runs/{held}")).await;
    browser
        .wait_for(
            "the held run running",
            "return document.querySelector('#run-status').dataset.status === 'running'",
            json!([]),
        )
        .await;
    browser.click_on("#cancel-run").await;
    browser
        .wait_for(
            "the run cancelled",
            "return document.querySelector('#run-status').dataset.status === 'cancelled'",
            json!([]),
        )
        .await;
    assert_eq!(server.finished(held).await, RunStatus::Cancelled);
    assert!(
        browser.find("#cancel-run").await.is_none(),
        "a finished run has no cancel button"
    );

    // Screenshots of the main pages, if asked for.
    if let Some(dir) = std::env::var_os("TASKFORGE_SCREENSHOTS") {
        let dir = PathBuf::from(dir);
        // Something running, for the workflows and runs pages.
        let running = server
            .start_run(server.hold, json!({ "ticket": "OPS-1235" }))
            .await;
        for (name, path) in [
            ("inspector-workflows", "/ui".to_owned()),
            (
                "inspector-workflow",
                format!("/ui/workflows/{}", server.deploy),
            ),
            ("inspector-runs", "/ui/runs".to_owned()),
            ("inspector-run", format!("/ui/runs/{retried}")),
            ("inspector-events", "/ui/events".to_owned()),
        ] {
            browser.goto(&format!("{base}{path}")).await;
            browser
                .wait_for(
                    "the page",
                    "return document.readyState === 'complete'",
                    json!([]),
                )
                .await;
            if path.ends_with("/runs") || path.ends_with("/ui") {
                browser
                    .wait_for(
                        "the live stream",
                        "return document.querySelector('#live-status').dataset.state === 'on'",
                        json!([]),
                    )
                    .await;
            }
            browser.screenshot(&dir, name).await;
        }
        server.engine.cancel_run(running).await.expect("cancel");
    }

    // A read-only token sees no action buttons...
    let waiting = server
        .start_run(server.hold, json!({ "ticket": "OPS-1236" }))
        .await;
    browser.sign_in(base, &server.reader).await;
    for run in [retried, waiting] {
        browser.goto(&format!("{base}/ui/runs/{run}")).await;
        browser
            .wait_for(
                "the run page",
                "return document.querySelector('#run-status') !== null",
                json!([]),
            )
            .await;
        let buttons = browser
            .script(
                "return document.querySelectorAll('main form button, .actions').length",
                json!([]),
            )
            .await;
        assert_eq!(buttons, 0, "a read-only token sees no action buttons");
    }
    browser.goto(&format!("{base}/ui/events")).await;
    let replayable = browser
        .script(
            "const a = document.querySelector('tr[data-outcome=\"run_started\"] a'); return a && a.href",
            json!([]),
        )
        .await;
    browser
        .goto(replayable.as_str().expect("an event link"))
        .await;
    browser
        .wait_for(
            "the event page",
            "return document.querySelector('#payload-h') !== null",
            json!([]),
        )
        .await;
    assert!(
        browser.find("#replay-event").await.is_none(),
        "a read-only token sees no replay button"
    );
    browser.goto(&format!("{base}/ui/events")).await;
    let rejected = browser
        .wait_for(
            "the forged delivery, rejected",
            "const row = document.querySelector('tr[data-outcome=\"rejected\"]'); return row && row.textContent",
            json!([]),
        )
        .await;
    assert!(
        rejected.as_str().unwrap_or("").contains("HTTP 401"),
        "{rejected}"
    );
    // ...and the API and the inspector refuse its actions.
    let api = server
        .client
        .post(format!("{base}/api/v1/runs/{waiting}/cancel"))
        .bearer_auth(&server.reader)
        .send()
        .await
        .expect("cancel through the API");
    assert_eq!(api.status(), StatusCode::FORBIDDEN);
    let ui = server
        .client
        .post(format!("{base}/ui/runs/{waiting}/cancel"))
        .header("cookie", format!("taskforge_ui={}", server.reader))
        .form(&[("csrf", "0123456789abcdef0123456789abcdef")])
        .send()
        .await
        .expect("cancel through the inspector");
    assert_eq!(ui.status(), StatusCode::FORBIDDEN);
    let run = server.engine.run(waiting).await.expect("the run");
    assert!(!run.run.cancel_requested && !run.run.status.is_terminal());

    // The gated run may finish now.
    server.gate.add_permits(1);
    assert_eq!(server.finished(waiting).await, RunStatus::Succeeded);
}
