//! Secrets at rest: a workload that puts credentials everywhere they could
//! leak into a store (a signed webhook's secrets, a rotation, a step that
//! echoes its secret in its output, error, logs and progress), for backend
//! tests that then search the store's own files or rows for them.

use std::time::Duration;

use base64::Engine as _;
use serde_json::{json, Value};

use crate::secret::MasterKey;
use crate::trigger::auth::{github_signature, SignatureScheme};
use crate::trigger::request::{Headers, WebhookRequest};
use crate::{
    Delivery, Engine, LogLevel, RetryPolicy, RunStatus, StepDefinition, StepError, StepRegistry,
    Store, TriggerKind, WebhookConfig, WorkflowDefinition,
};

/// The GitHub webhook secret the workload's trigger starts with.
const FIRST_SIGNING_SECRET: &str = "gh-signing-5e1f0c9a7d3b";
/// The secret a rotation replaces it with.
const SECOND_SIGNING_SECRET: &str = "gh-signing-rotated-28b4e6";
/// A Standard Webhooks key (base64 of `sw-signing-key-91c3`).
const STANDARD_KEY: &str = "whsec_c3ctc2lnbmluZy1rZXktOTFjMw==";
/// The secret a step reads and echoes.
const DEPLOY_TOKEN: &str = "deploy-token-4a7e29f1c0";

/// Runs the workload on `store` and returns every byte string that must
/// not appear in the store: each credential, raw and in base64. The engine
/// it ran is shut down when this returns, so the store can be closed and
/// its files read.
///
/// # Panics
/// If the workload does not go as planned (a delivery refused, a run that
/// does not finish as expected).
pub async fn leave_secrets_everywhere<S: Store + Clone>(store: S) -> Vec<Vec<u8>> {
    let mut registry = StepRegistry::new();
    registry
        .step(
            "echo",
            |ctx: crate::StepContext, _input: Value| async move {
                let token = ctx.secret("DEPLOY_TOKEN")?.to_owned();
                let encoded = base64::engine::general_purpose::STANDARD.encode(&token);
                ctx.log(LogLevel::Info, format!("token {token} / {encoded}"));
                tracing::warn!(%token, "echoing");
                ctx.progress(json!({ "token": token }));
                if ctx.attempt() == 1 {
                    return Err(StepError::retryable(format!("refused {token}"))
                        .with_detail(json!([token])));
                }
                Ok::<_, StepError>(json!({ "token": token, "b64": encoded }))
            },
        )
        .expect("register");
    let engine = Engine::builder(store, registry)
        .master_key(MasterKey::generate())
        .build();
    engine
        .check_secrets()
        .await
        .expect("a fresh key opens a fresh store");
    let mut updates = engine.subscribe();
    engine.start();
    engine
        .put_secret("DEPLOY_TOKEN", DEPLOY_TOKEN)
        .await
        .expect("put a secret");
    let workflow = engine.create_workflow("at-rest").await.expect("workflow");
    engine
        .publish(
            workflow.id,
            WorkflowDefinition::new(vec![StepDefinition::new("echo", "echo")
                .secrets(["DEPLOY_TOKEN"])
                .retry(RetryPolicy::fixed(2, Duration::from_millis(5)))]),
        )
        .await
        .expect("publish");
    let trigger = engine
        .create_trigger(
            workflow.id,
            TriggerKind::Webhook(
                WebhookConfig::new("at-rest/github")
                    .with_signature(SignatureScheme::github(FIRST_SIGNING_SECRET)),
            ),
        )
        .await
        .expect("a signed webhook");
    engine
        .create_trigger(
            workflow.id,
            TriggerKind::Webhook(
                WebhookConfig::new("at-rest/standard")
                    .with_signature(SignatureScheme::standard_webhooks([STANDARD_KEY])),
            ),
        )
        .await
        .expect("a Standard Webhooks trigger");
    engine
        .rotate_webhook_signature(
            trigger.id,
            SignatureScheme::github(SECOND_SIGNING_SECRET),
            Duration::from_secs(3600),
        )
        .await
        .expect("rotate");
    // Both the rotated secret and the one it replaced still verify.
    for (n, secret) in [SECOND_SIGNING_SECRET, FIRST_SIGNING_SECRET]
        .into_iter()
        .enumerate()
    {
        let body = format!(r#"{{"delivery":{n}}}"#);
        let headers: Headers = [
            ("Content-Type", "application/json".to_owned()),
            (
                "X-Hub-Signature-256",
                github_signature(secret, body.as_bytes()),
            ),
        ]
        .into_iter()
        .collect();
        let delivery = engine
            .deliver_webhook(
                "at-rest/github",
                &WebhookRequest::new(headers, body.as_bytes()),
            )
            .await
            .expect("deliver");
        let Delivery::Accepted { run_id, .. } = delivery else {
            panic!("a delivery signed with a current secret is accepted: {delivery:?}");
        };
        let run = engine.wait_for_run(run_id).await.expect("finish");
        assert_eq!(run.status, RunStatus::Succeeded, "{run:?}");
    }
    while updates.try_recv().is_ok() {}
    engine.shutdown(Duration::from_secs(5)).await;

    let b64 = base64::engine::general_purpose::STANDARD;
    [
        FIRST_SIGNING_SECRET,
        SECOND_SIGNING_SECRET,
        "sw-signing-key-91c3",
        DEPLOY_TOKEN,
    ]
    .iter()
    .flat_map(|secret| [secret.as_bytes().to_vec(), b64.encode(secret).into_bytes()])
    .chain([STANDARD_KEY.as_bytes().to_vec()])
    .collect()
}

/// The first of `forbidden` found in `haystack`, if any.
#[must_use]
pub fn find_any<'a>(haystack: &[u8], forbidden: &'a [Vec<u8>]) -> Option<&'a [u8]> {
    forbidden
        .iter()
        .find(|needle| {
            haystack
                .windows(needle.len())
                .any(|w| w == needle.as_slice())
        })
        .map(Vec::as_slice)
}
