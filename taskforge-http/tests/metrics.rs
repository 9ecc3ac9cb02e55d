//! The Prometheus endpoint after real runs: the recorder installed, runs
//! succeeding, failing and retrying, a rejected webhook, then a scrape of
//! `GET /metrics` over loopback. (Its own test binary: the recorder is
//! global to the process.)

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{json, Value};
use taskforge_core::{
    Engine, RetryPolicy, StepContext, StepDefinition, StepError, StepRegistry, TriggerKind,
    WebhookConfig, WorkflowDefinition,
};
use taskforge_http::{router, HttpOptions};
use taskforge_store_memory::MemoryStore;

/// One sample: its labels and value.
type Samples = Vec<(BTreeMap<String, String>, f64)>;

/// The samples of a scrape, by metric name (with `_bucket`, `_sum`,
/// `_count` suffixes as rendered).
fn parse(text: &str) -> BTreeMap<String, Samples> {
    let mut metrics: BTreeMap<String, Samples> = BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (series, value) = line.rsplit_once(' ').expect("a sample line");
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("a number: {line}"));
        let (name, labels) = match series.split_once('{') {
            Some((name, rest)) => (name, rest.trim_end_matches('}')),
            None => (series, ""),
        };
        let labels = labels
            .split("\",")
            .filter(|pair| !pair.is_empty())
            .map(|pair| {
                let (key, value) = pair.split_once("=\"").expect("key=\"value\"");
                (key.to_owned(), value.trim_end_matches('"').to_owned())
            })
            .collect();
        metrics
            .entry(name.to_owned())
            .or_default()
            .push((labels, value));
    }
    metrics
}

/// The value of `name` with exactly these labels (among others).
fn value(metrics: &BTreeMap<String, Samples>, name: &str, labels: &[(&str, &str)]) -> f64 {
    metrics
        .get(name)
        .unwrap_or_else(|| panic!("{name} is exported"))
        .iter()
        .find(|(have, _)| {
            labels
                .iter()
                .all(|(k, v)| have.get(*k).map(String::as_str) == Some(*v))
        })
        .unwrap_or_else(|| panic!("{name} has a sample with {labels:?}: {:?}", metrics[name]))
        .1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scrape_after_runs_shows_counters_and_histograms() {
    let handle = taskforge_http::metrics::install().expect("the recorder installs");
    // Installing again gives the same recorder.
    taskforge_http::metrics::install().expect("idempotent");

    let mut registry = StepRegistry::new();
    registry
        .step("sleep", |_ctx: StepContext, _input: Value| async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            Ok::<_, StepError>(json!({ "slept": true }))
        })
        .expect("sleep")
        .step("flaky", |ctx: StepContext, _input: Value| async move {
            if ctx.attempt() < 3 {
                return Err(StepError::retryable("not yet"));
            }
            Ok::<_, StepError>(json!({ "attempt": ctx.attempt() }))
        })
        .expect("flaky")
        .step("broken", |_ctx: StepContext, _input: Value| async move {
            Err::<Value, _>(StepError::terminal("broken for good"))
        })
        .expect("broken");
    let engine = Engine::builder(MemoryStore::new(), registry).build();
    engine.start();
    let sleepy = engine.ensure_workflow("sleepy").await.expect("workflow");
    engine
        .publish(
            sleepy.id,
            WorkflowDefinition::new(vec![StepDefinition::new("nap", "sleep")]),
        )
        .await
        .expect("publish");
    let retried = engine.ensure_workflow("retried").await.expect("workflow");
    engine
        .publish(
            retried.id,
            WorkflowDefinition::new(vec![StepDefinition::new("try", "flaky")
                .retry(RetryPolicy::fixed(5, Duration::from_millis(5)))]),
        )
        .await
        .expect("publish");
    let broken = engine.ensure_workflow("broken").await.expect("workflow");
    engine
        .publish(
            broken.id,
            WorkflowDefinition::new(vec![StepDefinition::new("fail", "broken")]),
        )
        .await
        .expect("publish");
    engine
        .create_trigger(
            sleepy.id,
            TriggerKind::Webhook(
                WebhookConfig::new("naps")
                    .with_token("nap-token-0123456789abcdef")
                    .expect("token"),
            ),
        )
        .await
        .expect("trigger");

    let app = router(engine.clone(), HttpOptions::default())
        .merge(taskforge_http::metrics::router(handle));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("address"));
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    let mut runs = Vec::new();
    for n in 0..3 {
        runs.push(
            engine
                .start_run(sleepy.id, json!({ "n": n }))
                .await
                .expect("start"),
        );
    }
    runs.push(
        engine
            .start_run(retried.id, json!({}))
            .await
            .expect("start"),
    );
    runs.push(engine.start_run(broken.id, json!({})).await.expect("start"));
    for run in &runs {
        tokio::time::timeout(Duration::from_secs(10), engine.wait_for_run(run.id))
            .await
            .expect("the run finishes in time")
            .expect("wait");
    }

    let client = reqwest::Client::new();
    let delivery = |token: &'static str| {
        client
            .post(format!("{base}/hooks/naps"))
            .bearer_auth(token)
            .json(&json!({ "nap": "long" }))
            .send()
    };
    assert_eq!(
        delivery("wrong-token-0123456789abcdef")
            .await
            .expect("deliver")
            .status(),
        401
    );
    let accepted = delivery("nap-token-0123456789abcdef")
        .await
        .expect("deliver");
    assert_eq!(accepted.status(), 202);
    let accepted: Value = accepted.json().await.expect("json");
    let run_id = accepted["run_id"]
        .as_str()
        .expect("a run")
        .parse()
        .expect("an id");
    engine.wait_for_run(run_id).await.expect("wait");

    let response = client
        .get(format!("{base}/metrics"))
        .send()
        .await
        .expect("scrape");
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    let text = response.text().await.expect("text");
    assert!(
        text.contains("# HELP taskforge_runs_finished_total"),
        "{text}"
    );
    assert!(
        text.contains("# TYPE taskforge_step_attempt_duration_seconds histogram"),
        "{text}"
    );
    let metrics = parse(&text);

    // Runs, by workflow and status: three started by hand, one by the hook.
    let started = "taskforge_runs_started_total";
    assert_eq!(value(&metrics, started, &[("workflow", "sleepy")]), 4.0);
    assert_eq!(value(&metrics, started, &[("workflow", "retried")]), 1.0);
    let finished = "taskforge_runs_finished_total";
    assert_eq!(
        value(
            &metrics,
            finished,
            &[("workflow", "sleepy"), ("status", "succeeded")]
        ),
        4.0
    );
    assert_eq!(
        value(
            &metrics,
            finished,
            &[("workflow", "retried"), ("status", "succeeded")]
        ),
        1.0
    );
    assert_eq!(
        value(
            &metrics,
            finished,
            &[("workflow", "broken"), ("status", "failed")]
        ),
        1.0
    );

    // Step attempts: two failures then a success, each timed.
    let attempts = "taskforge_step_attempt_duration_seconds_count";
    let flaky = [("workflow", "retried"), ("step", "try")];
    assert_eq!(
        value(
            &metrics,
            attempts,
            &[flaky[0], flaky[1], ("outcome", "failed")]
        ),
        2.0
    );
    assert_eq!(
        value(
            &metrics,
            attempts,
            &[flaky[0], flaky[1], ("outcome", "succeeded")]
        ),
        1.0
    );
    // The sleeping step took at least its 20 ms each time, and not seconds.
    let nap = [
        ("workflow", "sleepy"),
        ("step", "nap"),
        ("outcome", "succeeded"),
    ];
    let count = value(&metrics, attempts, &nap);
    let sum = value(
        &metrics,
        "taskforge_step_attempt_duration_seconds_sum",
        &nap,
    );
    assert_eq!(count, 4.0);
    assert!((4.0 * 0.019..4.0).contains(&sum), "sum {sum}");
    let buckets = "taskforge_step_attempt_duration_seconds_bucket";
    assert_eq!(
        value(&metrics, buckets, &[nap[0], nap[1], nap[2], ("le", "0.01")]),
        0.0
    );
    assert_eq!(
        value(&metrics, buckets, &[nap[0], nap[1], nap[2], ("le", "+Inf")]),
        4.0
    );
    let run_time = value(
        &metrics,
        "taskforge_run_duration_seconds_sum",
        &[("workflow", "sleepy"), ("status", "succeeded")],
    );
    assert!((0.0..10.0).contains(&run_time), "run time {run_time}");

    // Webhooks by outcome and reason.
    let deliveries = "taskforge_webhook_deliveries_total";
    assert_eq!(
        value(
            &metrics,
            deliveries,
            &[("outcome", "rejected"), ("reason", "unauthorized")]
        ),
        1.0
    );
    assert_eq!(value(&metrics, deliveries, &[("outcome", "accepted")]), 1.0);

    // Store writes: every run's commits and every admission, timed.
    let commits = value(
        &metrics,
        "taskforge_store_commit_duration_seconds_count",
        &[("op", "commit")],
    );
    assert!(commits >= 6.0, "commits {commits}");
    let admits = value(
        &metrics,
        "taskforge_store_commit_duration_seconds_count",
        &[("op", "admit")],
    );
    // Five manual starts, the accepted delivery and the rejected one.
    assert_eq!(admits, 7.0);
    let commit_time = value(
        &metrics,
        "taskforge_store_commit_duration_seconds_sum",
        &[("op", "commit")],
    );
    assert!(
        (0.0..5.0).contains(&commit_time),
        "commit time {commit_time}"
    );

    // The dispatcher's view: nothing waiting, nothing running now.
    assert!(metrics.contains_key("taskforge_queue_depth"), "{text}");
    assert!(metrics.contains_key("taskforge_runs_active"), "{text}");
    server.abort();
}
