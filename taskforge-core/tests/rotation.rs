//! Rotating a webhook trigger's credentials: the old ones keep working for
//! the overlap, then stop; the new ones work at once.

use std::time::Duration;

use chrono::{TimeDelta, Utc};
use serde_json::Value;
use taskforge_core::clock::ManualClock;
use taskforge_core::webhook::{github_signature, Headers, SignatureScheme, WebhookRequest};
use taskforge_core::{
    Delivery, Engine, StepContext, StepDefinition, StepError, StepRegistry, TriggerKind,
    WebhookConfig, WorkflowDefinition,
};
use taskforge_store_memory::MemoryStore;

const OLD_TOKEN: &str = "old-token-0123456789abcdef";
const NEW_TOKEN: &str = "new-token-0123456789abcdef";

fn bearer(token: &str, body: &[u8]) -> WebhookRequest {
    let headers: Headers = [
        ("content-type", "application/json".to_owned()),
        ("authorization", format!("Bearer {token}")),
    ]
    .into_iter()
    .collect();
    WebhookRequest::new(headers, body.to_vec())
}

fn signed(secret: &str, body: &[u8]) -> WebhookRequest {
    let headers: Headers = [
        ("content-type", "application/json".to_owned()),
        ("x-hub-signature-256", github_signature(secret, body)),
    ]
    .into_iter()
    .collect();
    WebhookRequest::new(headers, body.to_vec())
}

async fn engine(
    clock: &ManualClock,
) -> (
    Engine<MemoryStore, StepRegistry>,
    taskforge_core::WorkflowId,
) {
    let mut registry = StepRegistry::new();
    registry
        .step("echo", |_ctx: StepContext, input: Value| async move {
            Ok::<_, StepError>(input)
        })
        .expect("register");
    let engine = Engine::builder(MemoryStore::new(), registry)
        .master_key(taskforge_core::secret::MasterKey::generate())
        .clock(clock.clone())
        .build();
    let workflow = engine.ensure_workflow("hooked").await.expect("workflow");
    engine
        .publish(
            workflow.id,
            WorkflowDefinition::new(vec![StepDefinition::new("echo", "echo")]),
        )
        .await
        .expect("publish");
    (engine, workflow.id)
}

#[tokio::test]
async fn a_rotated_token_overlaps_then_expires() {
    let clock = ManualClock::new(Utc::now());
    let (engine, workflow) = engine(&clock).await;
    let config = WebhookConfig::new("deploy")
        .with_token(OLD_TOKEN)
        .expect("token");
    let trigger = engine
        .create_trigger(workflow, TriggerKind::Webhook(config))
        .await
        .expect("trigger");

    engine
        .rotate_webhook_token(trigger.id, NEW_TOKEN, Duration::from_secs(3600))
        .await
        .expect("rotate");
    let status = |d: Delivery| d.http_status();
    let old = engine
        .deliver_webhook("deploy", &bearer(OLD_TOKEN, br#"{"n":1}"#))
        .await
        .expect("old");
    let new = engine
        .deliver_webhook("deploy", &bearer(NEW_TOKEN, br#"{"n":2}"#))
        .await
        .expect("new");
    assert_eq!(
        (status(old), status(new)),
        (202, 202),
        "both work during the overlap"
    );

    clock.advance(TimeDelta::hours(1));
    let old = engine
        .deliver_webhook("deploy", &bearer(OLD_TOKEN, br#"{"n":3}"#))
        .await
        .expect("old");
    let new = engine
        .deliver_webhook("deploy", &bearer(NEW_TOKEN, br#"{"n":4}"#))
        .await
        .expect("new");
    assert_eq!(
        (status(old), status(new)),
        (401, 202),
        "only the new one after it"
    );
    let wrong = engine
        .deliver_webhook("deploy", &bearer("neither-0123456789abcdef", b"{}"))
        .await
        .expect("wrong");
    assert_eq!(wrong.http_status(), 401);
}

#[tokio::test]
async fn a_rotated_signing_secret_overlaps_then_expires() {
    let clock = ManualClock::new(Utc::now());
    let (engine, workflow) = engine(&clock).await;
    let config = WebhookConfig::new("gh").with_signature(SignatureScheme::github("old-secret"));
    let trigger = engine
        .create_trigger(workflow, TriggerKind::Webhook(config))
        .await
        .expect("trigger");
    engine
        .rotate_webhook_signature(
            trigger.id,
            SignatureScheme::github("new-secret"),
            Duration::from_secs(60),
        )
        .await
        .expect("rotate");
    let old = engine
        .deliver_webhook("gh", &signed("old-secret", br#"{"n":1}"#))
        .await
        .expect("old");
    assert_eq!(old.http_status(), 202);
    clock.advance(TimeDelta::seconds(61));
    let old = engine
        .deliver_webhook("gh", &signed("old-secret", br#"{"n":2}"#))
        .await
        .expect("old");
    let new = engine
        .deliver_webhook("gh", &signed("new-secret", br#"{"n":3}"#))
        .await
        .expect("new");
    assert_eq!((old.http_status(), new.http_status()), (401, 202));

    // Only webhooks rotate.
    let cron = engine
        .create_trigger(
            workflow,
            TriggerKind::Cron(taskforge_core::CronConfig::new("0 * * * *", "UTC")),
        )
        .await
        .expect("cron");
    assert!(engine
        .rotate_webhook_token(cron.id, NEW_TOKEN, Duration::ZERO)
        .await
        .is_err());
}
