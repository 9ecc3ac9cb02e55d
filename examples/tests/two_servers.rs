//! Two copies of the example server on one PostgreSQL schema share the
//! work: webhook deliveries sent to one are executed by either, and each
//! cron slot fires once across both.
//!
//! Needs the server at `TASKFORGE_PG_URL` (as the PostgreSQL store's
//! tests); without it the test says so and passes.

use std::collections::{BTreeMap, HashSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;
use taskforge::postgres::{PostgresConfig, PostgresStore};
use taskforge::store::{RunStore, WorkflowStore};
use taskforge::webhook::github_signature;
use taskforge::{RunQuery, RunStatus, WorkflowRun};

const SECRET: &str = "two-servers-secret";
const DELIVERIES: usize = 30;

/// A server process and the lines it printed.
struct Server {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    addr: String,
}

impl Server {
    /// Starts a server on `schema`, with its master key and artifacts in
    /// `data` (shared by both: what one seals the other opens).
    fn start(url: &str, schema: &str, data: &Path) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_server"))
            .env("TASKFORGE_DATA", data)
            .env("TASKFORGE_POSTGRES_URL", url)
            .env("TASKFORGE_POSTGRES_SCHEMA", schema)
            .env("TASKFORGE_ADDR", "127.0.0.1:0")
            // One run at a time each, so a burst of deliveries to one
            // server leaves work queued for the other.
            .env("TASKFORGE_MAX_CONCURRENT_RUNS", "1")
            // A report every second: both servers' cron loops race for
            // each slot.
            .env("TASKFORGE_REPORT_CRON", "* * * * * *")
            .env("GITHUB_WEBHOOK_SECRET", SECRET)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the server");
        let lines = Arc::new(Mutex::new(Vec::new()));
        for stream in [
            Box::new(child.stdout.take().expect("stdout")) as Box<dyn Read + Send>,
            Box::new(child.stderr.take().expect("stderr")),
        ] {
            let lines = Arc::clone(&lines);
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    lines.lock().expect("lines").push(line);
                }
            });
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        let addr = loop {
            let found = lines.lock().expect("lines").iter().find_map(|line| {
                let rest = line.split("taskforge server on http://").nth(1)?;
                rest.split_whitespace().next().map(str::to_owned)
            });
            if let Some(addr) = found {
                break addr;
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "the server exited ({status}):\n{}",
                    lines.lock().expect("lines").join("\n")
                );
            }
            assert!(Instant::now() < deadline, "the server did not start");
            std::thread::sleep(Duration::from_millis(50));
        };
        Self { child, lines, addr }
    }

    /// How many of `ids` this server logged as finished.
    fn finished(&self, ids: &HashSet<String>) -> Vec<String> {
        self.lines
            .lock()
            .expect("lines")
            .iter()
            .filter(|line| line.contains("run finished"))
            .filter_map(|line| {
                let id = line.split("run_id=").nth(1)?.get(..36)?.to_owned();
                ids.contains(&id).then_some(id)
            })
            .collect()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A GitHub release delivery to `addr`; the HTTP status.
fn deliver(addr: &str, n: usize) -> u16 {
    let body = json!({
        "action": "published",
        "release": { "tag_name": format!("v1.{n}.0") },
        "repository": { "full_name": "acme/api" },
    })
    .to_string();
    let request = format!(
        "POST /hooks/github/releases HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         X-GitHub-Event: release\r\nX-GitHub-Delivery: delivery-{n}\r\nX-Hub-Signature-256: {}\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        github_signature(SECRET, body.as_bytes()),
        body.len(),
    );
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream.write_all(request.as_bytes()).expect("send");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("receive");
    response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

async fn runs_of(store: &PostgresStore, workflow: &str) -> Vec<WorkflowRun> {
    let Some(workflow) = store.find_workflow(workflow).await.expect("find") else {
        return Vec::new();
    };
    let query = RunQuery {
        workflow_id: Some(workflow.id),
        limit: 1_000,
        ..RunQuery::default()
    };
    store.list_runs(&query).await.expect("list").items
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_on_one_database_share_the_work() {
    let Ok(url) = std::env::var("TASKFORGE_PG_URL") else {
        let _ = writeln!(
            std::io::stderr(),
            "two_servers: TASKFORGE_PG_URL is unset, so this test was skipped; run it with \
             TASKFORGE_PG_URL=postgres://postgres@127.0.0.1:5432/test cargo test -p taskforge-examples"
        );
        return;
    };
    let schema = format!("tf_two_servers_{}", std::process::id());
    let store = PostgresStore::connect_with(PostgresConfig::new(&url).schema(&schema))
        .await
        .expect("open the store");
    store.drop_schema().await.expect("a clean schema");

    // Not the default `./taskforge-data`, which would be the package's
    // source directory.
    let data = tempfile::tempdir().expect("a data directory");
    let a = Server::start(&url, &schema, data.path());
    let b = Server::start(&url, &schema, data.path());
    let started = Instant::now();

    // Every delivery goes to A.
    for n in 0..DELIVERIES {
        let status = deliver(&a.addr, n);
        assert!((200..300).contains(&status), "delivery {n}: HTTP {status}");
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    let deploys = loop {
        let runs = runs_of(&store, "deploy-api-on-github-release").await;
        if runs.len() == DELIVERIES && runs.iter().all(|r| r.status.is_terminal()) {
            break runs;
        }
        assert!(Instant::now() < deadline, "runs did not finish: {runs:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(deploys.iter().all(|r| r.status == RunStatus::Succeeded));

    // Each run was executed by one server, and B took its share of what
    // was delivered to A.
    let ids: HashSet<String> = deploys.iter().map(|r| r.id.to_string()).collect();
    let (by_a, by_b) = (a.finished(&ids), b.finished(&ids));
    let mut all: Vec<&String> = by_a.iter().chain(&by_b).collect();
    all.sort();
    all.dedup();
    assert_eq!(
        by_a.len() + by_b.len(),
        DELIVERIES,
        "each run finished once"
    );
    assert_eq!(all.len(), DELIVERIES, "each run finished once");
    assert!(
        !by_b.is_empty(),
        "B executed none of the runs delivered to A"
    );
    println!(
        "runs delivered to A: {} executed by A, {} by B",
        by_a.len(),
        by_b.len()
    );

    // A few more seconds of the every-second report: each slot once.
    tokio::time::sleep(Duration::from_secs(3).saturating_sub(started.elapsed())).await;
    let reports = runs_of(&store, "nightly-report").await;
    let mut slots = BTreeMap::new();
    for run in &reports {
        let slot = run.input["scheduled_at"]
            .as_str()
            .expect("a slot")
            .to_owned();
        *slots.entry(slot).or_insert(0) += 1;
    }
    assert!(slots.len() >= 2, "the report fired: {slots:?}");
    assert!(
        slots.values().all(|&n| n == 1),
        "a slot fired twice: {slots:?}"
    );

    drop((a, b));
    store.drop_schema().await.expect("drop the schema");
}
