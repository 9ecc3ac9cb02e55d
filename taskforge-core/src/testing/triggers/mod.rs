//! Trigger scenarios, run on every backend: webhook deliveries (dedup,
//! rejection, filters, replay) and cron triggers on a manual clock.
//!
//! The cases live in one file per kind of trigger and are all re-exported
//! here, where [`engine_conformance!`](crate::engine_conformance) finds
//! them.

mod cron;
mod webhooks;

use serde_json::Value;

use crate::{
    Engine, StepContext, StepDefinition, StepError, StepRegistry, Store, WorkflowDefinition,
    WorkflowId,
};

pub use cron::*;
pub use webhooks::*;

/// A real GitHub `release` delivery body (`action: published`).
pub const GITHUB_RELEASE: &[u8] = include_bytes!("../../../tests/fixtures/release-published.json");

fn registry() -> StepRegistry {
    let mut registry = StepRegistry::new();
    registry
        .step("echo", |_ctx: StepContext, input: Value| async move {
            Ok::<_, StepError>(input)
        })
        .expect("register");
    registry
}

async fn workflow<S: Store>(engine: &Engine<S, StepRegistry>, name: &str) -> WorkflowId {
    let wf = engine.create_workflow(name).await.expect("create");
    engine
        .publish(
            wf.id,
            WorkflowDefinition::new(vec![StepDefinition::new("echo", "echo")]),
        )
        .await
        .expect("publish");
    wf.id
}
