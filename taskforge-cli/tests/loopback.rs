//! The built `taskforge` binary against a real server on loopback: the
//! `taskforge-http` router on an ephemeral port, on the memory store, with
//! a master key (for secrets) and an artifact store in a temporary
//! directory.

use std::process::{Output, Stdio};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use taskforge_core::artifact::FsArtifactStore;
use taskforge_core::secret::MasterKey;
use taskforge_core::{
    Engine, LogLevel, RetryPolicy, StepContext, StepDefinition, StepError, StepRegistry,
    TriggerKind, WebhookConfig, WorkflowDefinition,
};
use taskforge_http::{bootstrap, router, Bootstrap, HttpOptions};
use taskforge_store_memory::MemoryStore;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::Command;
use tokio::sync::Semaphore;
use tokio_util_shim::Stop;

/// A server with six workflows: `greet` (one step), `gated` (a step
/// that waits for [`Server::gate`]), `deploy` (two versions), `build`
/// (steps that log and store artifacts), `chatty` (a step that logs, waits
/// for [`Server::talk`], and logs again) and, once the secret
/// `deploy/token` exists, `keyed` (a step that reads it; see
/// [`Server::publish_keyed`]).
struct Server {
    engine: Engine<MemoryStore, StepRegistry>,
    base: String,
    admin: String,
    gate: Arc<Semaphore>,
    talk: Arc<Semaphore>,
    http: reqwest::Client,
    _artifacts: tempfile::TempDir,
    _stop: Stop,
}

/// What the `package` step of `build` stores as `bundle.bin`: big enough
/// to arrive in several chunks.
fn bundle() -> Vec<u8> {
    (0..300_000u32).map(|i| (i * 31 % 251) as u8).collect()
}

impl Server {
    async fn start() -> Self {
        let gate = Arc::new(Semaphore::new(0));
        let permits = Arc::clone(&gate);
        let talk = Arc::new(Semaphore::new(0));
        let talk_permits = Arc::clone(&talk);
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
            .expect("gated")
            .step_without_input("compile", |ctx: StepContext| async move {
                ctx.log(LogLevel::Info, "compiling 3 crates");
                ctx.log(LogLevel::Warn, "the disk is slow");
                ctx.log(LogLevel::Info, "compiled");
                ctx.put_artifact("report.txt", "all green\n").await?;
                Ok::<_, StepError>(json!({ "compiled": true }))
            })
            .expect("compile")
            .step_without_input("package", |ctx: StepContext| async move {
                ctx.log(LogLevel::Error, "a warning treated as an error, then ignored");
                ctx.put_artifact("bundle.bin", bundle()).await?;
                Ok::<_, StepError>(json!({ "packaged": true }))
            })
            .expect("package")
            .step_without_input("talk", move |ctx: StepContext| {
                let permits = Arc::clone(&talk_permits);
                async move {
                    ctx.log(LogLevel::Info, "before the gate");
                    ctx.flush_logs().await?;
                    let _permit = permits.acquire().await.map_err(StepError::terminal)?;
                    ctx.log(LogLevel::Warn, "after the gate");
                    Ok::<_, StepError>(json!({ "talked": true }))
                }
            })
            .expect("talk")
            .step_without_input("check", |ctx: StepContext| async move {
                let token = ctx.secret("deploy/token")?;
                Ok::<_, StepError>(json!({ "length": token.len(), "trimmed": !token.ends_with('\n') }))
            })
            .expect("check");
        let artifacts = tempfile::tempdir().expect("a temporary directory");
        let engine = Engine::builder(MemoryStore::new(), registry)
            .master_key(MasterKey::generate())
            .artifacts(FsArtifactStore::open(artifacts.path()).expect("an artifact store"))
            .build();
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
        for (name, steps) in [
            (
                "build",
                vec![
                    StepDefinition::new("compile", "compile"),
                    StepDefinition::new("package", "package"),
                ],
            ),
            ("chatty", vec![StepDefinition::new("talk", "talk")]),
        ] {
            let workflow = engine.ensure_workflow(name).await.expect("workflow");
            engine
                .publish(workflow.id, WorkflowDefinition::new(steps))
                .await
                .expect("publish");
        }
        let Bootstrap::Created(admin) = bootstrap(engine.store(), None, chrono::Utc::now())
            .await
            .expect("bootstrap")
        else {
            panic!("a new store has no tokens");
        };
        let stop = Stop::new();
        let app = router(engine.clone(), HttpOptions::default());
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
            engine,
            base,
            admin: admin.expose().to_owned(),
            gate,
            talk,
            http: reqwest::Client::new(),
            _artifacts: artifacts,
            _stop: stop,
        }
    }

    /// Publishes `keyed`, whose step declares the secret `deploy/token`
    /// (a definition may only name secrets that exist).
    async fn publish_keyed(&self) {
        let keyed = self
            .engine
            .ensure_workflow("keyed")
            .await
            .expect("workflow");
        self.engine
            .publish(
                keyed.id,
                WorkflowDefinition::new(vec![
                    StepDefinition::new("check", "check").secrets(["deploy/token"])
                ]),
            )
            .await
            .expect("publish");
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

    /// Runs `args` with `input` on its stdin.
    async fn cli_with_stdin(&self, args: &[&str], input: &[u8]) -> Output {
        let mut child = self
            .command(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the CLI runs");
        let mut stdin = child.stdin.take().expect("stdin");
        stdin.write_all(input).await.expect("write stdin");
        drop(stdin);
        tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
            .await
            .expect("the CLI answers in time")
            .expect("the CLI runs")
    }

    /// `GET path` of the API, as JSON.
    async fn api(&self, path: &str) -> Value {
        self.http
            .get(format!("{}{path}", self.base))
            .bearer_auth(&self.admin)
            .send()
            .await
            .expect("get")
            .json()
            .await
            .expect("json")
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
async fn signal_wakes_a_waiting_run() {
    let server = Server::start().await;
    let approval = server
        .engine
        .ensure_workflow("approval")
        .await
        .expect("workflow");
    server
        .engine
        .publish(
            approval.id,
            WorkflowDefinition::new(vec![StepDefinition::wait_for_signal(
                "approval",
                "approved",
                None,
                taskforge_core::OnTimeout::Fail,
            )]),
        )
        .await
        .expect("publish");
    let run = server.start_run("approval", json!({})).await;
    let mut listed = Value::Null;
    for _ in 0..1_000 {
        listed = server.json(&["runs", "list", "--status", "waiting"]).await;
        if listed.to_string().contains(&run) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(listed.to_string().contains(&run), "{listed}");
    let sent = server
        .ok(&[
            "runs",
            "signal",
            &run,
            "approved",
            "--payload",
            r#"{"by":"ada"}"#,
        ])
        .await;
    assert!(sent.contains("signal approved sent"), "{sent}");
    let done = server.wait(&run).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["output"], json!({ "by": "ada" }));
    // A bad name is refused before any request; a finished run by the server.
    let output = server.cli(&["runs", "signal", &run, "not a name"]).await;
    assert_eq!(output.status.code(), Some(2));
    let output = server.cli(&["runs", "signal", &run, "approved"]).await;
    assert_eq!(output.status.code(), Some(1));
    assert!(texts(&output).1.starts_with("error: "));
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_set_list_delete() {
    let server = Server::start().await;
    let set = server
        .cli_with_stdin(
            &["secrets", "set", "deploy/token", "--stdin"],
            b"tok-4f9a1c\n",
        )
        .await;
    let (stdout, stderr) = texts(&set);
    assert!(set.status.success(), "{stderr}");
    assert_eq!(stdout, "stored deploy/token version 1\n");

    let table = server.ok(&["secrets", "list"]).await;
    let header = table.lines().next().expect("a header");
    assert_eq!(
        header.split_whitespace().collect::<Vec<_>>(),
        ["NAME", "VERSION", "CREATED", "ROTATED"],
        "{table}"
    );
    let row = table
        .lines()
        .find(|l| l.starts_with("deploy/token "))
        .unwrap_or_else(|| panic!("{table}"));
    let column = header.find("VERSION").expect("VERSION");
    assert_eq!(&row[column..column + 2], "1 ", "{table}");
    assert!(!table.contains("tok-4f9a1c"), "never a value: {table}");
    let listed = server.json(&["secrets", "list"]).await;
    assert_eq!(listed[0]["name"], "deploy/token");
    assert_eq!(listed[0]["version"], 1);
    assert!(!listed.to_string().contains("tok-"), "{listed}");

    // A step reads what was put, without the newline that ended stdin.
    server.publish_keyed().await;
    let run = server.start_run("keyed", json!({})).await;
    let finished = server.wait(&run).await;
    assert_eq!(finished["status"], "succeeded", "{finished}");
    assert_eq!(finished["output"], json!({ "length": 10, "trimmed": true }));

    // A second version, from a file (its CRLF dropped).
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("token.txt");
    std::fs::write(&file, "tok-second\r\n").expect("write");
    let set = server
        .ok(&[
            "secrets",
            "set",
            "deploy/token",
            "--from-file",
            file.to_str().expect("utf-8"),
        ])
        .await;
    assert_eq!(set, "stored deploy/token version 2\n");
    let listed = server.json(&["secrets", "list"]).await;
    assert_eq!(listed[0]["version"], 2);
    assert!(listed[0]["rotated_at"].is_string(), "{listed}");
    let set = server
        .json(&["secrets", "set", "pager", "--value", "pg-1"])
        .await;
    assert_eq!(set, json!({ "name": "pager", "version": 1 }));

    let deleted = server.ok(&["secrets", "delete", "deploy/token"]).await;
    assert_eq!(deleted, "deleted deploy/token\n");
    let table = server.ok(&["secrets", "list"]).await;
    assert!(!table.contains("deploy/token"), "{table}");
    assert!(table.contains("pager"), "{table}");
    let again = server.cli(&["secrets", "delete", "deploy/token"]).await;
    assert_eq!(again.status.code(), Some(1));
    assert!(
        texts(&again).1.contains("(HTTP 404)"),
        "{:?}",
        texts(&again)
    );

    // Trigger-owned names are refused, with the server's words.
    for args in [
        &["secrets", "set", "trigger/x/signature/0", "--value", "x"][..],
        &["secrets", "delete", "trigger/x/signature/0"][..],
    ] {
        let refused = server.cli(args).await;
        let (stdout, stderr) = texts(&refused);
        assert_eq!(refused.status.code(), Some(1), "{args:?}");
        assert!(stdout.is_empty(), "{stdout}");
        assert_eq!(
            stderr,
            "error: The secret belongs to a trigger: secrets under trigger/ change with their trigger (rotate-secret) (HTTP 409)\n"
        );
    }

    // Usage errors: no value source, two of them, a name a URL would bend.
    for args in [
        &["secrets", "set", "x"][..],
        &["secrets", "set", "x", "--stdin", "--value", "v"][..],
        &["secrets", "set", "a/../b", "--stdin"][..],
        &["secrets", "delete", "../tokens"][..],
    ] {
        assert_eq!(server.cli(args).await.status.code(), Some(2), "{args:?}");
    }
    let empty = server
        .cli_with_stdin(&["secrets", "set", "x", "--stdin"], b"\n")
        .await;
    assert_eq!(empty.status.code(), Some(1));
    assert!(texts(&empty).1.contains("is empty"), "{:?}", texts(&empty));
}

/// `HH:MM:SS.mmm LEVEL step#attempt message` as its parts.
fn log_line(line: &str) -> (String, String, String) {
    let (time, rest) = line.split_at(12);
    let bytes = time.as_bytes();
    assert!(
        time.chars().enumerate().all(|(i, c)| match i {
            2 | 5 => c == ':',
            8 => c == '.',
            _ => c.is_ascii_digit(),
        }) && bytes.len() == 12,
        "{line}"
    );
    let mut parts = rest.trim_start().splitn(2, char::is_whitespace);
    let level = parts.next().expect("a level").to_owned();
    let rest = parts.next().expect("a step").trim_start();
    let (step, message) = rest.split_once(' ').expect("a message");
    (level, step.to_owned(), message.to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_logs_prints_each_attempts_lines() {
    let server = Server::start().await;
    let run = server.start_run("build", json!({})).await;
    assert_eq!(server.wait(&run).await["status"], "succeeded");

    let text = server.ok(&["runs", "logs", &run]).await;
    assert!(!text.contains('\x1b'), "no colour into a pipe");
    let lines: Vec<_> = text.lines().map(log_line).collect();
    let expected = [
        ("INFO", "compile#1", "compiling 3 crates"),
        ("WARN", "compile#1", "the disk is slow"),
        ("INFO", "compile#1", "compiled"),
        (
            "ERROR",
            "package#1",
            "a warning treated as an error, then ignored",
        ),
    ];
    assert_eq!(
        lines,
        expected
            .iter()
            .map(|(l, s, m)| (l.to_string(), s.to_string(), m.to_string()))
            .collect::<Vec<_>>(),
        "{text}"
    );
    // The level column is as wide as its widest word.
    assert!(text.contains(" INFO  compile#1 "), "{text}");

    let one = server
        .ok(&["runs", "logs", &run, "--step", "package"])
        .await;
    assert_eq!(one.lines().count(), 1, "{one}");
    assert!(one.contains("ERROR package#1 "), "{one}");
    let none = server.cli(&["runs", "logs", &run, "--attempt", "2"]).await;
    assert!(none.status.success());
    assert_eq!(texts(&none), (String::new(), "no log lines\n".to_owned()));
    let typo = server.cli(&["runs", "logs", &run, "--step", "nope"]).await;
    assert!(
        texts(&typo).1.contains("has no attempt of step \"nope\""),
        "{:?}",
        texts(&typo)
    );

    let json_lines = server.ok(&["runs", "logs", &run, "--json"]).await;
    let parsed: Vec<Value> = json_lines
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert_eq!(parsed.len(), 4, "{json_lines}");
    for (i, line) in parsed.iter().take(3).enumerate() {
        assert_eq!(line["seq"], i, "{line}");
        assert_eq!(line["step_key"], "compile");
        assert_eq!(line["attempt"], 1);
        assert_eq!(line["run_id"], run.as_str());
        assert!(line["step_run_id"].is_string() && line["at"].is_string());
    }
    assert_eq!(parsed[1]["level"], "warn");
    assert_eq!(parsed[3]["message"], expected[3].2);

    let missing = server
        .cli(&["runs", "logs", "0190c0de-0000-7000-8000-0123456789ab"])
        .await;
    assert_eq!(missing.status.code(), Some(1));
    assert!(texts(&missing).1.contains("(HTTP 404)"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_logs_follow_prints_new_lines_until_the_run_ends() {
    let server = Server::start().await;
    let run = server.start_run("chatty", json!({})).await;
    // Wait until the first line is stored (the step flushes it, then
    // waits for `talk`).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let view = server.api(&format!("/api/v1/runs/{run}")).await;
        if let Some(step) = view["steps"][0]["id"].as_str() {
            let page = server
                .api(&format!("/api/v1/runs/{run}/steps/{step}/logs"))
                .await;
            if page["items"].as_array().is_some_and(|i| !i.is_empty()) {
                break;
            }
        }
        assert!(tokio::time::Instant::now() < deadline, "no stored line");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut child = server
        .command(&["runs", "logs", &run, "--follow"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("follow");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let first = tokio::time::timeout_at(deadline, lines.next_line())
        .await
        .expect("the stored line in time")
        .expect("read")
        .expect("a line");
    assert_eq!(
        log_line(&first),
        ("INFO".into(), "talk#1".into(), "before the gate".into())
    );
    server.talk.add_permits(1);
    let mut rest = Vec::new();
    while let Some(line) = tokio::time::timeout_at(deadline, lines.next_line())
        .await
        .expect("follow ends in time")
        .expect("read")
    {
        rest.push(line);
    }
    let output = child.wait_with_output().await.expect("exit");
    assert!(output.status.success(), "{rest:?}");
    // The live line once, though the store has it too by the end.
    assert_eq!(rest.len(), 1, "{rest:?}");
    assert_eq!(
        log_line(&rest[0]),
        ("WARN".into(), "talk#1".into(), "after the gate".into())
    );
    assert_eq!(
        String::from_utf8_lossy(&output.stderr),
        format!("run {run} succeeded\n")
    );

    // Following a finished run prints what is stored and ends.
    let json_lines = server
        .ok(&["runs", "logs", &run, "--follow", "--json"])
        .await;
    let seqs: Vec<Value> = json_lines
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).expect("json")["seq"].clone())
        .collect();
    assert_eq!(seqs, [json!(0), json!(1)], "{json_lines}");
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// The names in `dir`, sorted.
fn names_in(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("read dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_artifacts_list_and_download() {
    let server = Server::start().await;
    let run = server.start_run("build", json!({})).await;
    assert_eq!(server.wait(&run).await["status"], "succeeded");

    let table = server.ok(&["runs", "artifacts", &run]).await;
    let header = table.lines().next().expect("a header");
    assert_eq!(
        header.split_whitespace().collect::<Vec<_>>(),
        ["NAME", "STEP", "SIZE", "SHA256", "CREATED"],
        "{table}"
    );
    let report = table
        .lines()
        .find(|l| l.starts_with("report.txt "))
        .unwrap_or_else(|| panic!("{table}"));
    let report_sha = sha256_hex(b"all green\n");
    assert!(report.contains(" compile "), "{table}");
    assert!(report.contains(" 10 B "), "{table}");
    assert!(
        report.contains(&format!(" {} ", &report_sha[..12])),
        "{table}"
    );
    assert!(!report.contains(&report_sha[..13]), "{table}");
    let bundle_row = table
        .lines()
        .find(|l| l.starts_with("bundle.bin "))
        .unwrap_or_else(|| panic!("{table}"));
    assert!(
        bundle_row.contains(" package ") && bundle_row.contains(" 293.0 KiB "),
        "{table}"
    );
    let listed = server.json(&["runs", "artifacts", &run]).await;
    let sizes: Vec<(Value, Value)> = listed
        .as_array()
        .expect("a list")
        .iter()
        .map(|a| (a["name"].clone(), a["size"].clone()))
        .collect();
    assert!(
        sizes.contains(&(json!("bundle.bin"), json!(300_000))),
        "{listed}"
    );

    // Into the current directory, under its own name.
    let dir = tempfile::tempdir().expect("tempdir");
    let download = |args: &[&str]| {
        let mut command = server.command(args);
        command.current_dir(dir.path());
        command
    };
    let output = download(&["runs", "artifact", &run, "bundle.bin"])
        .output()
        .await
        .expect("runs");
    let (stdout, stderr) = texts(&output);
    assert!(output.status.success(), "{stderr}");
    assert_eq!(
        stdout,
        format!(
            "wrote bundle.bin (293.0 KiB, sha256 {} checked)\n",
            &sha256_hex(&bundle())[..12]
        )
    );
    assert!(std::fs::read(dir.path().join("bundle.bin")).expect("read") == bundle());

    // Not over an existing file, unless forced.
    std::fs::write(dir.path().join("report.txt"), "mine").expect("write");
    let refused = download(&["runs", "artifact", &run, "report.txt"])
        .output()
        .await
        .expect("runs");
    assert_eq!(refused.status.code(), Some(1));
    assert_eq!(
        texts(&refused).1,
        "error: report.txt exists; pass --force to replace it\n"
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("report.txt")).expect("read"),
        "mine"
    );
    let forced = download(&["runs", "artifact", &run, "report.txt", "--force"])
        .output()
        .await
        .expect("runs");
    assert!(forced.status.success(), "{:?}", texts(&forced));
    assert_eq!(
        std::fs::read_to_string(dir.path().join("report.txt")).expect("read"),
        "all green\n"
    );

    // To a chosen file, into a directory, to stdout, as JSON.
    let sub = dir.path().join("sub");
    std::fs::create_dir(&sub).expect("mkdir");
    let chosen = sub.join("r.txt");
    let chosen = chosen.to_str().expect("utf-8");
    server
        .ok(&["runs", "artifact", &run, "report.txt", "-o", chosen])
        .await;
    assert_eq!(
        std::fs::read_to_string(chosen).expect("read"),
        "all green\n"
    );
    let described = server
        .json(&[
            "runs",
            "artifact",
            &run,
            "report.txt",
            "--output",
            sub.to_str().expect("utf-8"),
        ])
        .await;
    assert_eq!(described["size"], 10);
    assert_eq!(described["sha256"], report_sha.as_str());
    assert_eq!(names_in(&sub), ["r.txt", "report.txt"]);
    let piped = server
        .cli(&["runs", "artifact", &run, "bundle.bin", "-o", "-"])
        .await;
    assert!(piped.status.success(), "{:?}", texts(&piped).1);
    assert!(piped.stdout == bundle(), "stdout is the artifact's bytes");

    // A missing artifact fails and leaves nothing.
    let missing = download(&["runs", "artifact", &run, "nope.txt"])
        .output()
        .await
        .expect("runs");
    assert_eq!(missing.status.code(), Some(1));
    assert!(
        texts(&missing).1.contains("(HTTP 404)"),
        "{:?}",
        texts(&missing)
    );
    assert_eq!(names_in(dir.path()), ["bundle.bin", "report.txt", "sub"]);
    // Names that are not plain file names are usage errors.
    let bad = server.cli(&["runs", "artifact", &run, "../x"]).await;
    assert_eq!(bad.status.code(), Some(2));
}

/// A server whose artifact bytes do not match the SHA-256 it sends: the
/// download fails and leaves no file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_download_that_does_not_match_its_sha256_leaves_nothing() {
    let app = axum::Router::new().route(
        "/api/v1/runs/{id}/artifacts/{name}",
        axum::routing::get(|| async {
            (
                [
                    ("content-type", "application/octet-stream"),
                    ("x-taskforge-sha256", &*sha256_hex(b"the real bytes").leak()),
                ],
                "tampered bytes",
            )
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("address"));
    let stop = Stop::new();
    let signal = stop.signal();
    tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(signal)
            .await
    });
    let dir = tempfile::tempdir().expect("tempdir");
    for output in [None, Some("-")] {
        let mut command = Command::new(env!("CARGO_BIN_EXE_taskforge"));
        command
            .args(["runs", "artifact", "r", "a.bin"])
            .args(output.map(|o| vec!["-o", o]).unwrap_or_default())
            .env("TASKFORGE_URL", &base)
            .env("TASKFORGE_TOKEN", "tf_any")
            .current_dir(dir.path())
            .stdin(Stdio::null());
        let result = command.output().await.expect("runs");
        let (stdout, stderr) = texts(&result);
        assert_eq!(result.status.code(), Some(1), "{stderr}");
        assert!(
            stdout.is_empty(),
            "nothing written to stdout either: {stdout}"
        );
        assert!(
            stderr.starts_with("error: the download of a.bin does not match its SHA-256"),
            "{stderr}"
        );
        assert_eq!(names_in(dir.path()), Vec::<String>::new());
    }
    drop(stop);
}
