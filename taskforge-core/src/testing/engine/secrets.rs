//! Secrets: a step reads only the secrets its definition declares, and
//! whatever it leaves behind is redacted.

use base64::Engine as _;
use serde_json::json;

use crate::error::EngineError;
use crate::secret::MasterKey;
use crate::store::LogQuery;
use crate::workflow::DefinitionProblem;
use crate::{LogLevel, RetryPolicy, RunStatus, RunUpdate, StepDefinition};

use super::*;

const TOKEN: &str = "tok-5f2b9c81e0/d7";

fn keyed<S: Store + Clone>(store: S, registry: StepRegistry) -> Engine<S, StepRegistry> {
    Engine::builder(store, registry)
        .lease_ttl(Duration::from_millis(500))
        .poll_interval(Duration::from_millis(20))
        .master_key(MasterKey::generate())
        .build()
}

/// A step reads its declared secret; the secret's value, raw, in base64
/// and percent-encoded, is replaced by a marker in its output, its error,
/// its log lines, its progress, the run's output and the live updates.
pub async fn secrets_are_read_and_redacted_everywhere<S: Store + Clone>(store: S) {
    let mut registry = StepRegistry::new();
    registry
        .step_without_input("leak", |ctx| async move {
            let token = ctx.secret("DEPLOY_TOKEN")?.to_owned();
            let encoded = base64::engine::general_purpose::STANDARD.encode(&token);
            ctx.log(LogLevel::Info, format!("using {token}"));
            tracing::info!(header = %format!("Basic {encoded}"), "calling the API");
            ctx.progress(json!({ "token": token }));
            if ctx.attempt() == 1 {
                return Err(StepError::retryable(format!("401 for {token}"))
                    .with_detail(json!({ "sent": token })));
            }
            ok(json!({ "echo": token, "b64": encoded, "url": "https://x/?t=tok-5f2b9c81e0%2Fd7" }))
        })
        .expect("register");
    let engine = keyed(store.clone(), registry);
    let mut updates = engine.subscribe();
    engine.start();
    engine.put_secret("DEPLOY_TOKEN", TOKEN).await.expect("put");
    let definition = WorkflowDefinition::new(vec![StepDefinition::new("leak", "leak")
        .secrets(["DEPLOY_TOKEN"])
        .retry(RetryPolicy::fixed(2, Duration::from_millis(5)))]);
    let workflow = published(&engine, "leaky", definition).await;
    let run = engine
        .start_run(workflow.id, Value::Null)
        .await
        .expect("start");
    let done = wait(&engine, run.id).await;
    assert_eq!(done.status, RunStatus::Succeeded, "{done:?}");

    let marker = "[redacted:DEPLOY_TOKEN]";
    let details = engine.run(run.id).await.expect("details");
    let mut stored = serde_json::to_string(&details.run).expect("json");
    for attempt in &details.steps {
        stored.push_str(&serde_json::to_string(attempt).expect("json"));
        let lines = engine
            .step_logs(&LogQuery::new(run.id, attempt.id))
            .await
            .expect("logs");
        assert_eq!(lines.items.len(), 2, "{:?}", lines.items);
        stored.push_str(&serde_json::to_string(&lines.items).expect("json"));
    }
    while let Ok(update) = updates.try_recv() {
        stored.push_str(&format!("{update:?}"));
    }
    let encoded = base64::engine::general_purpose::STANDARD.encode(TOKEN);
    for form in [TOKEN, "tok-5f2b9c81e0%2Fd7", encoded.as_str()] {
        assert!(!stored.contains(form), "{form} leaked into {stored}");
    }
    assert_eq!(
        done.output,
        Some(json!({ "echo": marker, "b64": marker, "url": format!("https://x/?t={marker}") }))
    );
    let failure = details.steps[0].error.as_ref().expect("attempt 1 failed");
    assert_eq!(failure.message, format!("401 for {marker}"));
    assert_eq!(failure.detail, Some(json!({ "sent": marker })));
    assert!(stored.contains(&format!("using {marker}")));
    assert!(stored.contains(&format!("calling the API header=Basic {marker}")));
    let progress = format!(
        "{:?}",
        RunUpdate::StepProgress {
            run_id: run.id,
            step_key: "leak".into(),
            progress: json!({ "token": marker }),
        }
    );
    assert!(stored.contains(&progress), "progress is redacted");
}

/// A step can read only the secrets its definition declares.
pub async fn undeclared_secrets_cannot_be_read<S: Store + Clone>(store: S) {
    let mut registry = StepRegistry::new();
    registry
        .step_without_input("snoop", |ctx| async move {
            let token = ctx.secret("DEPLOY_TOKEN")?;
            ok(json!(token.len()))
        })
        .expect("register");
    let engine = keyed(store, registry);
    engine.start();
    engine.put_secret("DEPLOY_TOKEN", TOKEN).await.expect("put");
    engine
        .put_secret("OTHER", "other-value")
        .await
        .expect("put");
    let definition = WorkflowDefinition::new(vec![
        StepDefinition::new("snoop", "snoop").secrets(["OTHER"])
    ]);
    let workflow = published(&engine, "snoopy", definition).await;
    let run = engine
        .start_run(workflow.id, Value::Null)
        .await
        .expect("start");
    let done = wait(&engine, run.id).await;
    assert_eq!(done.status, RunStatus::Failed);
    let error = done.error.expect("an error");
    assert!(
        error
            .message
            .contains("does not declare the secret \"DEPLOY_TOKEN\""),
        "{error:?}"
    );
}

/// Publishing checks the declared secrets: each must exist, and the engine
/// must have a master key; every problem is reported at once.
pub async fn publishing_checks_declared_secrets<S: Store + Clone>(store: S) {
    let engine = keyed(store.clone(), StepRegistry::new());
    let workflow = engine
        .create_workflow("needs-secrets")
        .await
        .expect("create");
    engine.put_secret("PRESENT", "value-1").await.expect("put");
    let mut registry = StepRegistry::new();
    registry
        .step_without_input("noop", |_ctx| async { ok(Value::Null) })
        .expect("register");
    let engine = keyed(store.clone(), registry);
    let definition = WorkflowDefinition::new(vec![
        StepDefinition::new("a", "noop").secrets(["PRESENT", "MISSING"]),
        StepDefinition::new("b", "noop").secrets(["bad name", "PRESENT", "PRESENT"]),
    ]);
    let Err(EngineError::InvalidDefinition(invalid)) =
        engine.publish(workflow.id, definition.clone()).await
    else {
        panic!("publishing with a missing secret must fail");
    };
    let names: Vec<String> = invalid
        .problems
        .iter()
        .map(|p| match p {
            DefinitionProblem::UnknownSecret { step, name } => format!("unknown {step}/{name}"),
            DefinitionProblem::InvalidSecret { step, name, .. } => format!("invalid {step}/{name}"),
            other => format!("{other}"),
        })
        .collect();
    assert_eq!(
        names,
        [
            "invalid b/bad name",
            "invalid b/PRESENT",
            "unknown a/MISSING"
        ],
        "{invalid}"
    );

    let mut registry = StepRegistry::new();
    registry
        .step_without_input("noop", |_ctx| async { ok(Value::Null) })
        .expect("register");
    let keyless = engine_without_key(store, registry);
    let definition =
        WorkflowDefinition::new(vec![StepDefinition::new("a", "noop").secrets(["PRESENT"])]);
    let Err(EngineError::InvalidDefinition(invalid)) =
        keyless.publish(workflow.id, definition).await
    else {
        panic!("an engine without a master key refuses declared secrets");
    };
    assert!(matches!(
        invalid.problems.as_slice(),
        [DefinitionProblem::NoMasterKey { .. }]
    ));
    assert!(matches!(
        keyless.put_secret("X", "y").await,
        Err(EngineError::NoMasterKey)
    ));
}

fn engine_without_key<S: Store>(store: S, registry: StepRegistry) -> Engine<S, StepRegistry> {
    engine(store, registry)
}

/// The master key is rotated while a run that reads a secret is in flight,
/// as an operator does it: engines get a keyring with the new key and the
/// old one, one of them re-seals every secret, then the old key goes. The
/// run's first attempt read the secret sealed with the old key, its second
/// reads it sealed with the new; after the rotation an engine with only the
/// new key opens everything, and one with only the old key is refused at
/// start-up, before it reads anything.
pub async fn master_key_rotation_with_runs_in_flight<S: Store + Clone>(store: S) {
    let old = MasterKey::generate();
    let new = MasterKey::generate();
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let started = Arc::new(Notify::new());
    let mut registry = StepRegistry::new();
    let (permits, signal) = (Arc::clone(&gate), Arc::clone(&started));
    registry
        .step_without_input("use", move |ctx| {
            let (permits, signal) = (Arc::clone(&permits), Arc::clone(&signal));
            async move {
                let token = ctx.secret("DEPLOY_TOKEN")?.to_owned();
                if ctx.attempt() == 1 {
                    signal.notify_one();
                    let _permit = permits.acquire().await.map_err(StepError::terminal)?;
                    return Err(StepError::retryable("the first attempt fails"));
                }
                ok(json!({ "length": token.len() }))
            }
        })
        .expect("register");
    // Sealed with the old key, by an engine that only has it.
    let before = Engine::builder(store.clone(), StepRegistry::new())
        .master_key(old.clone())
        .build();
    before.put_secret("DEPLOY_TOKEN", TOKEN).await.expect("put");

    let engine = Engine::builder(store.clone(), registry)
        .lease_ttl(Duration::from_millis(500))
        .poll_interval(Duration::from_millis(20))
        .master_key(crate::secret::Keyring::new(new.clone()).with_old(old.clone()))
        .build();
    engine
        .check_secrets()
        .await
        .expect("both keys open the store");
    engine.start();
    let definition = WorkflowDefinition::new(vec![StepDefinition::new("use", "use")
        .secrets(["DEPLOY_TOKEN"])
        .retry(RetryPolicy::fixed(2, Duration::from_millis(5)))]);
    let workflow = published(&engine, "rotating", definition).await;
    let run = engine
        .start_run(workflow.id, Value::Null)
        .await
        .expect("start");
    tokio::time::timeout(PATIENCE, started.notified())
        .await
        .expect("the first attempt started");

    // While the attempt runs, every secret moves to the new key.
    assert_eq!(engine.rotate_master_key().await.expect("rotate"), 1);
    assert_eq!(engine.rotate_master_key().await.expect("again"), 0);
    let listed = engine.secrets().await.expect("list");
    assert_eq!(listed[0].key_ids.iter().collect::<Vec<_>>(), [new.key_id()]);
    gate.add_permits(1);
    let done = wait(&engine, run.id).await;
    assert_eq!(done.status, RunStatus::Succeeded, "{done:?}");
    assert_eq!(done.output, Some(json!({ "length": TOKEN.len() })));

    let current = Engine::builder(store.clone(), StepRegistry::new())
        .master_key(new)
        .build();
    current
        .check_secrets()
        .await
        .expect("the new key opens everything");
    let stale = Engine::builder(store, StepRegistry::new())
        .master_key(old)
        .build();
    assert!(matches!(
        stale.check_secrets().await,
        Err(EngineError::Secret(
            crate::secret::SecretError::UnknownKey { .. }
        ))
    ));
}
