//! Handlers written the way Rust users write them: `?` on std errors,
//! boxed errors and anyhow errors; a step that names no input type; typed
//! reads of the input, config and earlier outputs; and, run by an engine,
//! typed outputs read by later steps and an anyhow failure stored and
//! retried.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use taskforge_core::error::RegistryError;
use taskforge_core::{
    Engine, RetryPolicy, RunStatus, StepContext, StepDefinition, StepError, StepExecutor,
    StepRegistry, StepStatus, WorkflowDefinition,
};
use taskforge_store_memory::MemoryStore;

#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct Build {
    artifact: String,
    size: u64,
}

#[derive(Debug, Deserialize)]
struct Release {
    version: String,
}

#[tokio::test]
async fn later_steps_read_earlier_outputs_typed() {
    let flaky = Arc::new(AtomicU32::new(0));
    let mut registry = StepRegistry::new();
    let calls = Arc::clone(&flaky);
    registry
        .step("build", |_ctx, release: Release| async move {
            Ok::<_, StepError>(Build {
                artifact: format!("app-{}.tar.gz", release.version),
                size: 1_024,
            })
        })
        .expect("register build")
        // Fails its first attempt through `?` on an anyhow error.
        .step_without_input("upload", move |ctx| {
            let calls = Arc::clone(&calls);
            async move {
                let build: Build = ctx.output_as("build")?;
                let attempt = calls.fetch_add(1, Ordering::SeqCst) + 1;
                let bucket: u32 = if attempt == 1 { "eu-1" } else { "1" }
                    .parse()
                    .context("choosing a bucket")?;
                Ok::<_, anyhow::Error>(
                    json!({ "url": format!("s3://{bucket}/{}", build.artifact) }),
                )
            }
        })
        .expect("register upload")
        .step_without_input("announce", |ctx| async move {
            let build: Build = ctx.output_as("build")?;
            let url: String = ctx.output_as::<serde_json::Value>("upload")?["url"]
                .as_str()
                .map(str::to_owned)
                .ok_or("upload gave no url")?;
            Ok::<_, StepError>(format!(
                "{} ({} bytes) at {url}",
                build.artifact, build.size
            ))
        })
        .expect("register announce");

    let engine = Engine::builder(MemoryStore::new(), registry).build();
    engine.start();
    let workflow = engine.ensure_workflow("release").await.expect("workflow");
    engine
        .publish(
            workflow.id,
            WorkflowDefinition::new(vec![
                StepDefinition::new("build", "build"),
                StepDefinition::new("upload", "upload")
                    .retry(RetryPolicy::fixed(2, Duration::from_millis(10))),
                StepDefinition::new("announce", "announce"),
            ]),
        )
        .await
        .expect("publish");
    let run = engine
        .start_run(workflow.id, json!({ "version": "1.4.2" }))
        .await
        .expect("start");
    let finished = tokio::time::timeout(Duration::from_secs(60), engine.wait_for_run(run.id))
        .await
        .expect("the run finishes")
        .expect("wait");
    assert_eq!(finished.status, RunStatus::Succeeded, "{finished:?}");
    assert_eq!(
        finished.output,
        Some(json!(
            "app-1.4.2.tar.gz (1024 bytes) at s3://1/app-1.4.2.tar.gz"
        ))
    );

    let details = engine.run(run.id).await.expect("details");
    let uploads: Vec<_> = details
        .steps
        .iter()
        .filter(|s| s.step_key == "upload")
        .collect();
    assert_eq!(uploads.len(), 2, "{uploads:?}");
    assert_eq!(uploads[0].status, StepStatus::Failed);
    let failure = uploads[0].error.as_ref().expect("the failure is stored");
    assert_eq!(
        failure.message,
        "choosing a bucket: invalid digit found in string"
    );
    assert!(!failure.terminal, "an anyhow error is retryable");
    assert_eq!(uploads[1].status, StepStatus::Succeeded);
}

#[derive(Deserialize)]
struct Count {
    n: u64,
}

fn run(registry: &StepRegistry, name: &str, input: Value) -> Result<Value, StepError> {
    futures::executor::block_on(registry.execute(name, StepContext::detached(name, input)))
}

#[derive(Debug, thiserror::Error)]
#[error("deploy failed")]
struct DeployFailed {
    #[source]
    cause: std::io::Error,
}

fn boxed(fail: bool) -> Result<u32, Box<dyn std::error::Error + Send + Sync>> {
    if fail {
        Err("quota exceeded".into())
    } else {
        Ok(1)
    }
}

fn any(fail: bool) -> anyhow::Result<u32> {
    use anyhow::Context;
    let n: u32 = if fail { "x" } else { "2" }
        .parse()
        .context("reading the count")?;
    Ok(n)
}

fn io(fail: bool) -> Result<u32, DeployFailed> {
    if fail {
        let cause = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        Err(DeployFailed { cause })
    } else {
        Ok(4)
    }
}

#[test]
fn question_mark_works_on_the_errors_rust_code_returns() {
    let mut registry = StepRegistry::new();
    registry
        // Into a handler returning StepError.
        .step("into-step-error", |_ctx, input: Value| async move {
            let which = input["fail"].as_str().unwrap_or("");
            let total = boxed(which == "boxed")?
                + any(which == "anyhow")?
                + io(which == "std")?
                + match which {
                    "string" => Err(format!("bad input {input}"))?,
                    "str" => Err("plain words")?,
                    _ => 0,
                };
            Ok::<_, StepError>(total)
        })
        .expect("register")
        // Handlers returning those error types themselves.
        .step("returns-anyhow", |_ctx, input: Value| async move {
            let n = any(input["fail"] == true)?;
            anyhow::ensure!(n < 10, "too many: {n}");
            Ok::<_, anyhow::Error>(n)
        })
        .expect("register")
        .step("returns-boxed", |_ctx, input: Value| async move {
            let n: u32 = input["n"].as_str().unwrap_or("").parse()?;
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(n + boxed(false)?)
        })
        .expect("register")
        .step_without_input("returns-std", |_ctx| async { io(true) })
        .expect("register");

    assert_eq!(run(&registry, "into-step-error", json!({})), Ok(json!(7)));
    for (fail, message) in [
        ("boxed", "quota exceeded"),
        ("anyhow", "reading the count: invalid digit found in string"),
        ("std", "deploy failed: refused"),
        ("string", "bad input {\"fail\":\"string\"}"),
        ("str", "plain words"),
    ] {
        let err = run(&registry, "into-step-error", json!({ "fail": fail }))
            .expect_err("the handler fails");
        assert_eq!(err.message(), message, "{fail}");
        assert!(!err.is_terminal(), "{fail}: converted errors are retryable");
        assert_eq!(err.retry_after_hint(), None);
    }

    assert_eq!(run(&registry, "returns-anyhow", json!({})), Ok(json!(2)));
    let err = run(&registry, "returns-anyhow", json!({ "fail": true })).expect_err("fails");
    assert_eq!(
        err.message(),
        "reading the count: invalid digit found in string"
    );
    assert!(!err.is_terminal());
    assert_eq!(
        run(&registry, "returns-boxed", json!({ "n": "4" })),
        Ok(json!(5))
    );
    let err = run(&registry, "returns-boxed", json!({ "n": "-" })).expect_err("fails");
    assert_eq!(err.message(), "invalid digit found in string");
    let err = run(&registry, "returns-std", json!(null)).expect_err("fails");
    assert_eq!(err.message(), "deploy failed: refused");
}

#[test]
fn terminal_errors_and_retry_hints_survive_the_conversions() {
    let mut registry = StepRegistry::new();
    registry
        .step("terminal", |_ctx, _input: Value| async {
            boxed(false)?;
            Err::<(), _>(StepError::terminal("bad credentials"))
        })
        .expect("register")
        .step_without_input("later", |_ctx| async {
            any(false)?;
            Err::<(), _>(
                StepError::retryable("rate limited")
                    .retry_after(Duration::from_secs(30))
                    .with_detail(json!({ "limit": 10 })),
            )
        })
        .expect("register");
    let err = run(&registry, "terminal", json!({})).expect_err("fails");
    assert!(err.is_terminal());
    assert_eq!(err.message(), "bad credentials");
    let err = run(&registry, "later", json!({})).expect_err("fails");
    assert!(!err.is_terminal());
    assert_eq!(err.retry_after_hint(), Some(Duration::from_secs(30)));
    assert_eq!(err.to_failure().detail, Some(json!({ "limit": 10 })));
}

#[test]
fn read_errors_are_std_errors_and_terminal_as_step_errors() {
    let mut registry = StepRegistry::new();
    registry
        .step_without_input("step-error", |ctx| async move {
            let n: u64 = ctx.output_as("build")?;
            Ok::<_, StepError>(n)
        })
        .expect("register")
        .step_without_input("boxed", |ctx| async move {
            let n: u64 = ctx.config_as()?;
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(n)
        })
        .expect("register")
        .step_without_input("anyhow", |ctx| async move {
            use anyhow::Context;
            let n: u64 = ctx.input_as().context("reading n")?;
            Ok::<_, anyhow::Error>(n)
        })
        .expect("register");
    let err = run(&registry, "step-error", json!({})).expect_err("no output");
    assert_eq!(err.message(), "no output from step \"build\"");
    assert!(err.is_terminal());
    let err = run(&registry, "boxed", json!({})).expect_err("no config");
    assert_eq!(
        err.message(),
        "invalid config: invalid type: null, expected u64"
    );
    assert!(err.is_terminal(), "boxed, the type is still seen");
    let err = run(&registry, "anyhow", json!("x")).expect_err("bad input");
    assert_eq!(
        err.message(),
        "reading n: invalid input: invalid type: string \"x\", expected u64"
    );
    assert!(!err.is_terminal(), "anyhow hides the type");
}

#[test]
fn a_step_without_input_takes_any_input() {
    let mut registry = StepRegistry::new();
    registry
        .step_without_input("ping", |ctx| async move {
            Ok::<_, StepError>(json!({ "pong": ctx.attempt() }))
        })
        .expect("register")
        .step_without_input("peek", |ctx| async move {
            let input: Count = ctx.input_as()?;
            Ok::<_, StepError>(input.n)
        })
        .expect("register");
    for input in [
        json!(null),
        json!([1, 2]),
        json!({ "n": "not a number" }),
        json!("x"),
    ] {
        assert_eq!(
            run(&registry, "ping", input.clone()),
            Ok(json!({ "pong": 1 })),
            "{input}"
        );
    }
    assert_eq!(run(&registry, "peek", json!({ "n": 3 })), Ok(json!(3)));
    let err = run(&registry, "peek", json!({ "n": "x" })).expect_err("bad input");
    assert!(err.is_terminal());
    assert!(err.message().starts_with("invalid input"), "{err}");
    // One namespace for both forms.
    assert_eq!(
        registry
            .step("ping", |_ctx, _: Value| async { Ok::<_, StepError>(()) })
            .err(),
        Some(RegistryError::Duplicate("ping".into()))
    );
    assert!(matches!(
        registry
            .step_without_input("bad name!", |_ctx| async { Ok::<_, StepError>(()) })
            .err(),
        Some(RegistryError::InvalidName { .. })
    ));
}
