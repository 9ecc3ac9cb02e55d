//! Trace context across the whole path: a webhook request's W3C
//! `traceparent` (or one given to `start_run`) is kept with its event, and
//! the `run` span of whichever engine executes the run records it, with
//! the workflow, version and run id; `step` spans (step key, attempt) sit
//! under it. (Its own test binary: the subscriber is global.)

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use serde_json::{json, Value};
use taskforge_core::telemetry::TRACEPARENT;
use taskforge_core::{
    Engine, RunId, RunOptions, RunStatus, StepContext, StepDefinition, StepError, StepRegistry,
    TriggerKind, WebhookConfig, WorkflowDefinition,
};
use taskforge_http::{router, HttpOptions};
use taskforge_store_memory::MemoryStore;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::Subscriber;
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;

const TRACEPARENT_A: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
const TRACEPARENT_B: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

/// A span as opened, with every field recorded on it since.
#[derive(Debug, Clone)]
struct Captured {
    id: u64,
    name: &'static str,
    parent: Option<u64>,
    fields: BTreeMap<String, String>,
}

/// Keeps every span the process opens.
#[derive(Clone, Default)]
struct Spans(Arc<Mutex<Vec<Captured>>>);

struct Fields<'a>(&'a mut BTreeMap<String, String>);

impl Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }
}

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Spans {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let parent = ctx
            .span(id)
            .and_then(|span| span.parent())
            .map(|parent| parent.id().into_u64());
        let mut fields = BTreeMap::new();
        attrs.record(&mut Fields(&mut fields));
        self.0.lock().unwrap().push(Captured {
            id: id.into_u64(),
            name: attrs.metadata().name(),
            parent,
            fields,
        });
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, _ctx: Context<'_, S>) {
        let mut spans = self.0.lock().unwrap();
        if let Some(span) = spans.iter_mut().rev().find(|s| s.id == id.into_u64()) {
            values.record(&mut Fields(&mut span.fields));
        }
    }
}

impl Spans {
    /// The process's span log, installed once.
    fn global() -> Self {
        static SPANS: OnceLock<Spans> = OnceLock::new();
        SPANS
            .get_or_init(|| {
                let spans = Spans::default();
                let subscriber = tracing_subscriber::registry().with(spans.clone());
                tracing::subscriber::set_global_default(subscriber).expect("one subscriber");
                spans
            })
            .clone()
    }

    /// The `run` spans of run `id`, and the `step` spans under each.
    fn of_run(&self, id: RunId) -> Vec<(Captured, Vec<Captured>)> {
        let spans = self.0.lock().unwrap();
        let id = id.to_string();
        spans
            .iter()
            .filter(|s| s.name == "run" && s.fields.get("run_id") == Some(&id))
            .map(|run| {
                let steps = spans
                    .iter()
                    .filter(|s| s.name == "step" && s.parent == Some(run.id))
                    .cloned()
                    .collect();
                (run.clone(), steps)
            })
            .collect()
    }
}

fn registry(hang: bool) -> StepRegistry {
    let mut registry = StepRegistry::new();
    registry
        .step("echo", |_ctx: StepContext, input: Value| async move {
            Ok::<_, StepError>(input)
        })
        .expect("echo")
        .step("slow", move |_ctx: StepContext, _input: Value| async move {
            if hang {
                std::future::pending::<()>().await;
            }
            Ok::<_, StepError>(json!({ "done": true }))
        })
        .expect("slow");
    registry
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_traceparent_reaches_the_run_and_its_steps() {
    let spans = Spans::global();
    let engine = Engine::builder(MemoryStore::new(), registry(false)).build();
    engine.start();
    let workflow = engine.ensure_workflow("traced").await.expect("workflow");
    engine
        .publish(
            workflow.id,
            WorkflowDefinition::new(vec![
                StepDefinition::new("first", "echo"),
                StepDefinition::new("second", "echo"),
            ]),
        )
        .await
        .expect("publish");
    engine
        .create_trigger(
            workflow.id,
            TriggerKind::Webhook(
                WebhookConfig::new("traced")
                    .with_token("traced-token-0123456789")
                    .expect("token"),
            ),
        )
        .await
        .expect("trigger");
    let app = router(engine.clone(), HttpOptions::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("address"));
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let client = reqwest::Client::new();
    let deliver = |traceparent: &'static str, n: u32| {
        client
            .post(format!("{base}/hooks/traced?wait=5000"))
            .bearer_auth("traced-token-0123456789")
            .header("traceparent", traceparent)
            .json(&json!({ "n": n }))
            .send()
    };

    let answer: Value = deliver(TRACEPARENT_A, 1)
        .await
        .expect("deliver")
        .json()
        .await
        .expect("json");
    assert_eq!(answer["run_status"], "succeeded", "{answer}");
    let event = engine
        .event(answer["event_id"].as_str().unwrap().parse().unwrap())
        .await
        .expect("event");
    assert_eq!(
        event.metadata.get(TRACEPARENT).map(String::as_str),
        Some(TRACEPARENT_A)
    );
    let run_id: RunId = answer["run_id"].as_str().unwrap().parse().unwrap();
    let runs = spans.of_run(run_id);
    assert_eq!(runs.len(), 1, "{runs:?}");
    let (run, steps) = &runs[0];
    assert_eq!(run.fields["trace_parent"], TRACEPARENT_A);
    assert_eq!(run.fields["workflow"], "traced");
    assert_eq!(run.fields["version"], "1");
    let keys: Vec<(&str, &str)> = steps
        .iter()
        .map(|s| (s.fields["step"].as_str(), s.fields["attempt"].as_str()))
        .collect();
    assert_eq!(keys, [("first", "1"), ("second", "1")]);
    assert!(steps
        .iter()
        .all(|s| s.fields["run_id"] == run_id.to_string() && s.fields["workflow"] == "traced"));

    // Anything but a valid traceparent is not kept.
    let answer: Value = deliver("00-not-a-trace-context", 2)
        .await
        .expect("deliver")
        .json()
        .await
        .expect("json");
    let event = engine
        .event(answer["event_id"].as_str().unwrap().parse().unwrap())
        .await
        .expect("event");
    assert!(!event.metadata.contains_key(TRACEPARENT), "{event:?}");
    let run_id: RunId = answer["run_id"].as_str().unwrap().parse().unwrap();
    assert!(!spans.of_run(run_id)[0]
        .0
        .fields
        .contains_key("trace_parent"));
    server.abort();
}

/// A run started with a traceparent on one engine, whose worker is lost
/// mid-step, is finished by another engine on the same store: both
/// engines' `run` spans carry the same trace context.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_engine_resumes_the_run_in_the_same_trace() {
    let spans = Spans::global();
    let store = MemoryStore::new();
    let first = Engine::builder(store.clone(), registry(true))
        .lease_ttl(Duration::from_millis(300))
        .owner("first")
        .build();
    first.start();
    let workflow = first.ensure_workflow("resumed").await.expect("workflow");
    first
        .publish(
            workflow.id,
            WorkflowDefinition::new(vec![
                StepDefinition::new("quick", "echo"),
                StepDefinition::new("slow", "slow"),
            ]),
        )
        .await
        .expect("publish");
    let run = first
        .start_run_with(
            workflow.id,
            json!({}),
            RunOptions::new().trace_parent(TRACEPARENT_B),
        )
        .await
        .expect("start");
    // Wait until the first engine is inside the slow step, then lose it.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while spans
        .of_run(run.id)
        .first()
        .is_none_or(|(_, steps)| steps.len() < 2)
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the slow step starts"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    drop(first);

    let second = Engine::builder(store, registry(false))
        .lease_ttl(Duration::from_millis(300))
        .poll_interval(Duration::from_millis(50))
        .owner("second")
        .build();
    second.start();
    let finished = tokio::time::timeout(Duration::from_secs(10), second.wait_for_run(run.id))
        .await
        .expect("the second engine finishes the run")
        .expect("wait");
    assert_eq!(finished.status, RunStatus::Succeeded);

    let runs = spans.of_run(run.id);
    assert_eq!(runs.len(), 2, "one run span per engine: {runs:?}");
    for (span, _) in &runs {
        assert_eq!(span.fields["trace_parent"], TRACEPARENT_B);
        assert_eq!(span.fields["workflow"], "resumed");
    }
    let resumed_steps: Vec<&str> = runs[1]
        .1
        .iter()
        .map(|s| s.fields["step"].as_str())
        .collect();
    assert_eq!(
        resumed_steps,
        ["slow"],
        "only the interrupted step runs again"
    );
    assert_eq!(runs[1].1[0].fields["attempt"], "2");
}
