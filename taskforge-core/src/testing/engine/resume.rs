//! Resuming a run that did not succeed: a new run on the pinned version
//! keeps the succeeded steps and runs only the others.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use serde_json::json;

use crate::error::EngineError;
use crate::{RunStatus, StepDefinition, StepStatus};

use super::*;

/// A fan-out whose one branch fails for good: resumed after the cause is
/// fixed, the new run carries the succeeded steps (naming the attempts
/// they come from), runs the failed branch and what follows it from a
/// first attempt, on the original's version even after a newer one is
/// published; the original stays as it was.
pub async fn a_failed_run_resumes_from_the_failed_step<S: Store>(store: S) {
    let broken = Arc::new(AtomicBool::new(true));
    let calls = Arc::new(AtomicU32::new(0));
    let mut registry = StepRegistry::new();
    let (flag, counter) = (Arc::clone(&broken), Arc::clone(&calls));
    registry
        .step_without_input("build", move |_ctx| {
            let counter = Arc::clone(&counter);
            async move {
                counter.fetch_add(1, Ordering::SeqCst);
                ok(json!("image-7"))
            }
        })
        .expect("register")
        .step_without_input("test", |_ctx| async { ok(json!("passed")) })
        .expect("register")
        .step_without_input("migrate", move |_ctx| {
            let broken = flag.load(Ordering::SeqCst);
            async move {
                if broken {
                    return Err(StepError::terminal("the database is read-only"));
                }
                ok(json!("migrated"))
            }
        })
        .expect("register")
        .step_without_input("deploy", |ctx| async move {
            ok(json!({ "image": ctx.output("build").cloned(), "migrated": ctx.output("migrate").cloned() }))
        })
        .expect("register");
    let engine = engine(store, registry);
    engine.start();
    let definition = WorkflowDefinition::new(vec![
        StepDefinition::new("build", "build"),
        StepDefinition::new("test", "test").depends_on(["build"]),
        StepDefinition::new("migrate", "migrate").depends_on(["build"]),
        StepDefinition::new("deploy", "deploy").depends_on(["test", "migrate"]),
    ]);
    let workflow = published(&engine, "resumable", definition).await;
    let run = engine
        .start_run(workflow.id, json!({ "tag": "v7" }))
        .await
        .expect("start");
    let failed = wait(&engine, run.id).await;
    assert_eq!(failed.status, RunStatus::Failed);
    let before = engine.run(run.id).await.expect("details");

    // A newer version does not change what the resumed run runs.
    engine
        .publish(
            workflow.id,
            WorkflowDefinition::new(vec![StepDefinition::new("build", "build")]),
        )
        .await
        .expect("publish v2");
    broken.store(false, Ordering::SeqCst);
    let resumed = engine.resume_run(run.id).await.expect("resume");
    assert_eq!(resumed.resumed_from, Some(run.id));
    assert_eq!(
        (resumed.version, resumed.version_id),
        (1, failed.version_id)
    );
    let done = wait(&engine, resumed.id).await;
    assert_eq!(done.status, RunStatus::Succeeded, "{done:?}");
    assert_eq!(
        done.output,
        Some(json!({ "image": "image-7", "migrated": "migrated" }))
    );
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "build ran once, in the original"
    );

    let steps = engine.run(resumed.id).await.expect("details").steps;
    let carried: Vec<(&str, bool)> = steps
        .iter()
        .map(|s| (s.step_key.as_str(), s.carried_from.is_some()))
        .collect();
    let mut carried = carried;
    carried.sort_unstable();
    assert_eq!(
        carried,
        [
            ("build", true),
            ("deploy", false),
            ("migrate", false),
            ("test", true)
        ]
    );
    let build = steps.iter().find(|s| s.step_key == "build").expect("build");
    let original_build = before
        .steps
        .iter()
        .find(|s| s.step_key == "build")
        .expect("build");
    assert_eq!(build.carried_from, Some(original_build.id));
    assert!(steps
        .iter()
        .all(|s| s.attempt == 1 && s.status == StepStatus::Succeeded));
    // The original is as it was.
    assert_eq!(engine.run(run.id).await.expect("details"), before);
}

/// A cancelled run can be resumed; a succeeded (or unfinished) one cannot.
pub async fn only_unsuccessful_finished_runs_resume<S: Store>(store: S) {
    let started = Arc::new(Notify::new());
    let engine = engine(store, hanging_registry(Arc::clone(&started)));
    engine.start();
    let definition = WorkflowDefinition::new(vec![StepDefinition::new("hang", "hang")]);
    let workflow = published(&engine, "cancelled-then-resumed", definition).await;
    let run = engine
        .start_run(workflow.id, Value::Null)
        .await
        .expect("start");
    tokio::time::timeout(PATIENCE, started.notified())
        .await
        .expect("the step started");
    assert!(matches!(
        engine.resume_run(run.id).await,
        Err(EngineError::NotResumable {
            status: RunStatus::Running,
            ..
        })
    ));
    engine.cancel_run(run.id).await.expect("cancel");
    assert_eq!(wait(&engine, run.id).await.status, RunStatus::Cancelled);
    let resumed = engine
        .resume_run(run.id)
        .await
        .expect("resume a cancelled run");
    tokio::time::timeout(PATIENCE, started.notified())
        .await
        .expect("the resumed run runs the step again");
    engine.cancel_run(resumed.id).await.expect("cancel");
    wait(&engine, resumed.id).await;
    let again = engine.resume_run(resumed.id).await.expect("resume again");
    assert_eq!(again.resumed_from, Some(resumed.id));
    engine.cancel_run(again.id).await.expect("cancel");
    wait(&engine, again.id).await;
}
