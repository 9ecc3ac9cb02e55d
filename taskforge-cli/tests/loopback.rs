//! The built `taskforge` binary against a real server on loopback: the
//! `taskforge-http` router on an ephemeral port, on the memory store.

use std::process::{Output, Stdio};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use taskforge_core::{
    Engine, RetryPolicy, StepContext, StepDefinition, StepError, StepRegistry, TriggerKind,
    WebhookConfig, WorkflowDefinition,
};
use taskforge_http::{bootstrap, router, Bootstrap, HttpOptions};
use taskforge_store_memory::MemoryStore;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;
use tokio::sync::Semaphore;
use tokio_util_shim::Stop;

/// A server with three workflows: `greet` (one step), `gated` (a step
/// that waits for [`Server::gate`]) and `deploy` (two versions).
struct Server {
    base: String,
    admin: String,
    gate: Arc<Semaphore>,
    http: reqwest::Client,
    _stop: Stop,
}

impl Server {
    async fn start() -> Self {
        let gate = Arc::new(Semaphore::new(0));
        let permits = Arc::clone(&gate);
        let mut registry = StepRegistry::new();
        registry
            .step("greet", |_ctx: StepContext, input: Value| async move {
                Ok::<_, StepError>(json!({ "greeting": format!("hello, {}", input["name"].as_str().unwrap_or("you")) }))
            })
            .expect("greet")
            .step("gated", move |_ctx: StepContext, _input: Value| {
                let permits = Arc::clone(&permits);
                async move {
                    let _permit = permits.acquire().await.map_err(StepError::terminal)?;
                    Ok::<_, StepError>(json!({ "gated": true }))
                }
            })
            .expect("gated");
        let engine = Engine::builder(MemoryStore::new(), registry).build();
        engine.start();
        let greet = engine.ensure_workflow("greet").await.expect("workflow");
        engine
            .publish(
                greet.id,
                WorkflowDefinition::new(vec![StepDefinition::new("greet", "greet")]),
            )
            .await
            .expect("publish");
        engine
            .create_trigger(
                greet.id,
                TriggerKind::Webhook(
                    WebhookConfig::new("greetings")
                        .with_token("greet-s3cret-0123456789")
                        .expect("token"),
                ),
            )
            .await
            .expect("trigger");
        let gated = engine.ensure_workflow("gated").await.expect("workflow");
        engine
            .publish(
                gated.id,
                WorkflowDefinition::new(vec![
                    StepDefinition::new("prepare", "greet"),
                    StepDefinition::new("wait", "gated"),
                ]),
            )
            .await
            .expect("publish");
        let deploy = engine.ensure_workflow("deploy").await.expect("workflow");
        engine
            .publish(
                deploy.id,
                WorkflowDefinition::new(vec![StepDefinition::new("build", "greet")]),
            )
            .await
            .expect("publish");
        engine
            .publish(
                deploy.id,
                WorkflowDefinition::new(vec![
                    StepDefinition::new("build", "greet")
                        .retry(RetryPolicy::fixed(3, Duration::from_millis(10))),
                    StepDefinition::new("smoke-test", "greet"),
                ]),
            )
            .await
            .expect("publish");
        let Bootstrap::Created(admin) = bootstrap(engine.store(), None, chrono::Utc::now())
            .await
            .expect("bootstrap")
        else {
            panic!("a new store has no tokens");
        };
        let stop = Stop::new();
        let app = router(engine, HttpOptions::default());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("address"));
        let signal = stop.signal();
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(signal)
                .await
        });
        Self {
            base,
            admin: admin.expose().to_owned(),
            gate,
            http: reqwest::Client::new(),
            _stop: stop,
        }
    }

    /// `taskforge args...` with this server's URL and admin token.
    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_taskforge"));
        command
            .args(args)
            .env("TASKFORGE_URL", &self.base)
            .env("TASKFORGE_TOKEN", &self.admin)
            .env_remove("NO_COLOR")
            .stdin(Stdio::null())
            .kill_on_drop(true);
        command
    }

    async fn cli(&self, args: &[&str]) -> Output {
        tokio::time::timeout(Duration::from_secs(30), self.command(args).output())
            .await
            .expect("the CLI answers in time")
            .expect("the CLI runs")
    }

    /// Runs `args`, expecting success; its stdout.
    async fn ok(&self, args: &[&str]) -> String {
        let output = self.cli(args).await;
        let (stdout, stderr) = texts(&output);
        assert!(
            output.status.success(),
            "taskforge {args:?} failed: {stderr}\n{stdout}"
        );
        stdout
    }

    /// Runs `args --json`, expecting success; its JSON.
    async fn json(&self, args: &[&str]) -> Value {
        let mut args = args.to_vec();
        args.push("--json");
        let stdout = self.ok(&args).await;
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"))
    }

    /// Starts a run over HTTP, as `curl` would.
    async fn start_run(&self, workflow: &str, input: Value) -> String {
        let workflows: Value = self
            .http
            .get(format!("{}/api/v1/workflows", self.base))
            .bearer_auth(&self.admin)
            .send()
            .await
            .expect("list")
            .json()
            .await
            .expect("json");
        let id = workflows["items"]
            .as_array()
            .expect("items")
            .iter()
            .find(|w| w["name"] == workflow)
            .expect("the workflow")["id"]
            .as_str()
            .expect("id")
            .to_owned();
        let run: Value = self
            .http
            .post(format!("{}/api/v1/workflows/{id}/runs", self.base))
            .bearer_auth(&self.admin)
            .json(&json!({ "input": input }))
            .send()
            .await
            .expect("start")
            .json()
            .await
            .expect("json");
        run["id"].as_str().expect("a run id").to_owned()
    }

    async fn wait(&self, run: &str) -> Value {
        let view: Value = self
            .http
            .get(format!(
                "{}/api/v1/runs/{run}/wait?timeout_ms=10000",
                self.base
            ))
            .bearer_auth(&self.admin)
            .send()
            .await
            .expect("wait")
            .json()
            .await
            .expect("json");
        view["run"].clone()
    }
}

fn texts(output: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Stops the server when the test ends.
mod tokio_util_shim {
    use tokio::sync::watch;

    pub(crate) struct Stop(watch::Sender<bool>);

    impl Stop {
        pub(crate) fn new() -> Self {
            Self(watch::channel(false).0)
        }

        pub(crate) fn signal(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
            let mut receiver = self.0.subscribe();
            async move {
                let _ = receiver.wait_for(|stop| *stop).await;
            }
        }
    }

    impl Drop for Stop {
        fn drop(&mut self) {
            let _ = self.0.send(true);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_list_show_start_retry() {
    let server = Server::start().await;
    let run = server.start_run("greet", json!({ "name": "cli" })).await;
    assert_eq!(server.wait(&run).await["status"], "succeeded");

    let table = server.ok(&["runs", "list"]).await;
    let header = table.lines().next().expect("a header");
    assert!(header.starts_with("RUN "), "{table}");
    assert!(header.contains("WORKFLOW") && header.contains("STATUS"));
    let row = table
        .lines()
        .find(|l| l.starts_with(&run))
        .unwrap_or_else(|| panic!("the run is listed: {table}"));
    assert!(row.contains("greet") && row.contains("succeeded") && row.contains("v1"));
    // Columns line up: every row's STATUS starts where the header's does.
    let column = header.find("STATUS").expect("STATUS");
    assert_eq!(&row[column..column + "succeeded".len()], "succeeded");
    assert!(!table.contains('\x1b'), "no colour into a pipe");

    let filtered = server
        .ok(&[
            "runs",
            "list",
            "--workflow",
            "gated",
            "--status",
            "succeeded",
        ])
        .await;
    assert_eq!(filtered, "no runs\n");

    let listed = server
        .json(&["runs", "list", "--workflow", "greet", "--limit", "5"])
        .await;
    assert_eq!(listed["items"][0]["id"], run.as_str());

    let shown = server.ok(&["runs", "show", &run]).await;
    assert!(shown.contains("status    succeeded"), "{shown}");
    assert!(shown.contains(r#"{"greeting":"hello, cli"}"#), "{shown}");
    assert!(shown.contains("STEP") && shown.contains("greet"), "{shown}");
    let view = server.json(&["runs", "show", &run]).await;
    assert_eq!(view["steps"][0]["status"], "succeeded");

    // Start through the CLI, following it to the end.
    let started = server
        .ok(&[
            "runs",
            "start",
            "deploy",
            "--input",
            r#"{"name":"v2"}"#,
            "--watch",
        ])
        .await;
    assert!(started.contains("(deploy v2)"), "{started}");
    assert!(
        started.contains("step smoke-test attempt 1 succeeded"),
        "{started}"
    );
    assert!(started.contains("run succeeded in"), "{started}");

    // A retry is a new run of the same version, with the same input.
    let retried = server.json(&["runs", "retry", &run]).await;
    assert_ne!(retried["id"], run.as_str());
    assert_eq!(retried["version"], 1);
    assert_eq!(retried["input"], json!({ "name": "cli" }));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_follows_a_run_to_success() {
    let server = Server::start().await;
    let run = server.start_run("gated", json!({})).await;
    let mut child = server
        .command(&["runs", "watch", &run])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("watch");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let mut seen = Vec::new();
    // Wait until the run is stuck on its gated step, then let it go.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let line = tokio::time::timeout_at(deadline, lines.next_line())
            .await
            .expect("watch prints in time")
            .expect("read")
            .unwrap_or_else(|| panic!("watch ended early: {seen:?}"));
        let waiting = line.contains("step wait attempt 1 running")
            || (line.contains(&format!("run {run} running")) && seen.is_empty());
        seen.push(line);
        if waiting {
            break;
        }
    }
    server.gate.add_permits(1);
    while let Some(line) = tokio::time::timeout_at(deadline, lines.next_line())
        .await
        .expect("watch ends in time")
        .expect("read")
    {
        seen.push(line);
    }
    let status = child.wait().await.expect("exit");
    assert!(status.success(), "{seen:?}");
    let text = seen.join("\n");
    assert!(text.contains("step wait attempt 1 succeeded"), "{text}");
    assert!(text.contains("run succeeded in"), "{text}");
    assert!(text.contains(r#"output: {"gated":true}"#), "{text}");

    // Watching a finished run answers at once.
    let again = server.ok(&["runs", "watch", &run]).await;
    assert!(again.contains("run succeeded"), "{again}");
    // As JSON lines, for scripts.
    let lines = server.ok(&["runs", "watch", &run, "--json"]).await;
    let first: Value = serde_json::from_str(lines.lines().next().expect("a line")).expect("json");
    assert_eq!(first["event"], "snapshot");
    assert_eq!(first["data"]["status"], "succeeded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_stops_a_run_and_watch_says_so() {
    let server = Server::start().await;
    let run = server.start_run("gated", json!({})).await;
    let cancelled = server.ok(&["runs", "cancel", &run]).await;
    assert!(cancelled.starts_with(&format!("run {run} ")), "{cancelled}");
    assert_eq!(server.wait(&run).await["status"], "cancelled");
    // Watching a run that did not succeed exits with 3.
    let output = server.cli(&["runs", "watch", &run]).await;
    assert_eq!(output.status.code(), Some(3));
    assert!(texts(&output).0.contains("run cancelled"));
    // Cancelling it again is a conflict the server explains.
    let output = server.cli(&["runs", "cancel", &run]).await;
    let (_, stderr) = texts(&output);
    assert_eq!(output.status.code(), Some(1));
    assert!(stderr.starts_with("error: "), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_are_one_line_and_fail() {
    let server = Server::start().await;
    let bad_token = server
        .cli(&[
            "runs",
            "list",
            "--token",
            "tf_notarealtokennotarealtokennotarealtoken",
        ])
        .await;
    let (stdout, stderr) = texts(&bad_token);
    assert_eq!(bad_token.status.code(), Some(1));
    assert!(stdout.is_empty(), "{stdout}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("error: Missing or invalid API token") && stderr.contains("(HTTP 401)"),
        "{stderr}"
    );

    let missing = server
        .cli(&["runs", "show", "0190c0de-0000-7000-8000-0123456789ab"])
        .await;
    let (_, stderr) = texts(&missing);
    assert_eq!(missing.status.code(), Some(1));
    assert!(stderr.contains("(HTTP 404)"), "{stderr}");

    let refused = server
        .cli(&["workflows", "list", "--url", "http://127.0.0.1:1"])
        .await;
    let (_, stderr) = texts(&refused);
    assert_eq!(refused.status.code(), Some(1));
    assert_eq!(
        stderr.trim_end(),
        "error: cannot reach http://127.0.0.1:1: connection refused"
    );

    let no_token = server
        .command(&["runs", "list"])
        .env_remove("TASKFORGE_TOKEN")
        .output()
        .await
        .expect("runs");
    let (_, stderr) = texts(&no_token);
    assert_eq!(no_token.status.code(), Some(1));
    assert!(stderr.contains("set TASKFORGE_TOKEN"), "{stderr}");

    let no_workflow = server.cli(&["runs", "list", "--workflow", "nope"]).await;
    assert_eq!(
        texts(&no_workflow).1.trim_end(),
        "error: no workflow named \"nope\""
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workflows_triggers_events_tokens() {
    let server = Server::start().await;

    let workflows = server.ok(&["workflows", "list"]).await;
    let deploy = workflows
        .lines()
        .find(|l| l.contains(" deploy "))
        .unwrap_or_else(|| panic!("{workflows}"));
    assert!(
        deploy.contains("yes") && deploy.contains("v2"),
        "{workflows}"
    );
    let shown = server.ok(&["workflows", "show", "deploy"]).await;
    assert!(shown.contains("build > smoke-test"), "{shown}");
    let version = server
        .json(&["workflows", "show", "deploy", "--version", "1"])
        .await;
    assert_eq!(version["number"], 1);
    let diff = server.ok(&["workflows", "diff", "deploy", "1", "2"]).await;
    assert!(diff.starts_with("v1 -> v2\n"), "{diff}");
    assert!(diff.contains("+ smoke-test  (added)"), "{diff}");
    assert!(diff.contains("~ build  (changed)"), "{diff}");
    assert!(diff.contains("retry: null -> "), "{diff}");

    let triggers = server.ok(&["triggers", "list"]).await;
    let row = triggers
        .lines()
        .find(|l| l.contains("POST /hooks/greetings"))
        .unwrap_or_else(|| panic!("{triggers}"));
    let trigger_id = row.split_whitespace().next().expect("an id");
    let shown = server.ok(&["triggers", "show", trigger_id]).await;
    assert!(shown.contains("<redacted>"), "secrets stay hidden: {shown}");

    // A delivery, then its event, then a replay of it.
    let delivered = server
        .http
        .post(format!("{}/hooks/greetings", server.base))
        .bearer_auth("greet-s3cret-0123456789")
        .json(&json!({ "name": "hook" }))
        .send()
        .await
        .expect("deliver");
    assert_eq!(delivered.status(), 202);
    let answer: Value = delivered.json().await.expect("json");
    let event = answer["event_id"].as_str().expect("event").to_owned();
    let events = server.ok(&["events", "list", "--workflow", "greet"]).await;
    assert!(
        events
            .lines()
            .any(|l| l.starts_with(&event) && l.contains("webhook") && l.contains("run_started")),
        "{events}"
    );
    let shown = server.ok(&["events", "show", &event]).await;
    assert!(shown.contains(r#"{"name":"hook"}"#), "{shown}");
    let replay = server.json(&["events", "replay", &event]).await;
    assert_eq!(
        server.wait(replay["id"].as_str().unwrap()).await["status"],
        "succeeded"
    );
    let shown = server.json(&["events", "show", &event]).await;
    assert_eq!(shown["runs"].as_array().map(Vec::len), Some(2), "{shown}");

    // Tokens: make a read-only one, use it, revoke it.
    let created = server
        .json(&["tokens", "create", "--name", "ci", "--scope", "read"])
        .await;
    let secret = created["secret"].as_str().expect("secret").to_owned();
    let id = created["token"]["id"].as_str().expect("id").to_owned();
    let listed = server.ok(&["tokens", "list"]).await;
    assert!(
        listed
            .lines()
            .any(|l| l.starts_with(&id) && l.contains("active")),
        "{listed}"
    );
    let read = server.cli(&["workflows", "list", "--token", &secret]).await;
    assert!(read.status.success());
    let refused = server
        .cli(&["runs", "start", "greet", "--token", &secret])
        .await;
    assert_eq!(refused.status.code(), Some(1));
    assert!(texts(&refused).1.contains("(HTTP 403)"));
    let revoked = server.ok(&["tokens", "revoke", &id]).await;
    assert!(revoked.contains("revoked"), "{revoked}");
    let after = server.cli(&["workflows", "list", "--token", &secret]).await;
    assert!(texts(&after).1.contains("(HTTP 401)"));
}
