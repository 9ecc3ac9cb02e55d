//! Scenarios from the hardening of issue 10: panicking handlers, durations
//! too long for timestamps, triggers declared at every launch, the default
//! step timeout, a cancel from an engine that does not own the run, and
//! runs that trace to an event.

use std::sync::atomic::{AtomicU32, Ordering};

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use serde_json::json;

use crate::clock::ManualClock;
use crate::error::DefinitionProblem;
use crate::limits::{DEFAULT_STEP_TIMEOUT, MAX_DURATION};
use crate::webhook::{Headers, WebhookRequest};
use crate::{
    CronConfig, Delivery, EngineConfig, EngineError, EventOutcome, EventQuery, EventSource,
    RetryPolicy, RunOptions, RunQuery, RunStatus, StepDefinition, StepStatus, Trigger, TriggerKind,
    WebhookConfig, WorkflowId,
};

use super::*;

/// Polls the run's step attempts until `done` says they are as expected,
/// for at most [`PATIENCE`].
async fn steps_until<S: Store>(
    engine: &Engine<S, StepRegistry>,
    id: RunId,
    what: &str,
    done: impl Fn(&[crate::StepRun]) -> bool,
) -> Vec<crate::StepRun> {
    let start = tokio::time::Instant::now();
    loop {
        let steps = engine.run(id).await.expect("details").steps;
        if done(&steps) {
            return steps;
        }
        assert!(
            start.elapsed() < PATIENCE,
            "{what}: not within {PATIENCE:?}; steps: {steps:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn panicking_registry(calls: Arc<AtomicU32>) -> StepRegistry {
    let mut registry = StepRegistry::new();
    registry
        .step("explode", move |_ctx: StepContext, _input: Value| {
            let calls = Arc::clone(&calls);
            async move {
                let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
                if n > 0 {
                    panic!("boom on attempt {n}");
                }
                ok(Value::Null)
            }
        })
        .expect("register")
        .step(
            "refuse",
            |_ctx: StepContext, _input: Value| -> std::future::Ready<Result<Value, StepError>> {
                panic!("refused before it started")
            },
        )
        .expect("register")
        .step("fine", |_ctx: StepContext, input: Value| async move {
            ok(json!({ "fine": input }))
        })
        .expect("register");
    registry
}

/// A handler that panics (inside its future, or before it returns one)
/// fails its attempt with an error carrying the panic message, the step's
/// retry policy applies as for any retryable error, the run fails and
/// `wait_for_run` returns. Handlers that always panic do not wedge the
/// engine: with a single run slot, a later run still succeeds.
pub async fn a_panicking_handler_fails_its_attempt<S: Store>(store: S) {
    let calls = Arc::new(AtomicU32::new(0));
    let engine = Engine::builder(store, panicking_registry(Arc::clone(&calls)))
        .lease_ttl(Duration::from_millis(500))
        .poll_interval(Duration::from_millis(20))
        .max_concurrent_runs(1)
        .build();
    engine.start();
    let retry = RetryPolicy::fixed(3, Duration::from_millis(5));
    let explosive = published(
        &engine,
        "explosive",
        WorkflowDefinition::new(vec![StepDefinition::new("explode", "explode")])
            .retry(retry.clone()),
    )
    .await;
    let run = engine
        .start_run(explosive.id, json!({}))
        .await
        .expect("start");
    let done = wait(&engine, run.id).await;
    assert_eq!(done.status, RunStatus::Failed, "{done:?}");
    assert_eq!(calls.load(Ordering::SeqCst), 3, "the retry policy applies");
    let error = done.error.expect("the run's error");
    assert!(
        error.message.contains("boom on attempt 3"),
        "the run's error carries the last panic message: {error:?}"
    );
    assert_eq!(error.step.as_deref(), Some("explode"));
    let steps = engine.run(run.id).await.expect("details").steps;
    assert_eq!(steps.len(), 3, "{steps:?}");
    for (i, step) in steps.iter().enumerate() {
        assert_eq!(step.status, StepStatus::Failed, "{step:?}");
        let failure = step.error.as_ref().expect("the attempt's error");
        assert!(
            failure
                .message
                .contains(&format!("boom on attempt {}", i + 1)),
            "attempt {}: {failure:?}",
            i + 1
        );
        assert!(!failure.terminal, "a panic is retryable: {failure:?}");
        assert_eq!(step.retry_at.is_some(), i < 2, "{step:?}");
    }

    let refusing = published(
        &engine,
        "refusing",
        WorkflowDefinition::new(vec![StepDefinition::new("refuse", "refuse")])
            .retry(RetryPolicy::fixed(2, Duration::from_millis(5))),
    )
    .await;
    let run = engine
        .start_run(refusing.id, json!({}))
        .await
        .expect("start");
    let done = wait(&engine, run.id).await;
    assert_eq!(done.status, RunStatus::Failed, "{done:?}");
    let steps = engine.run(run.id).await.expect("details").steps;
    assert_eq!(steps.len(), 2, "{steps:?}");
    assert!(steps.iter().all(|s| s.status == StepStatus::Failed
        && s.error
            .as_ref()
            .is_some_and(|e| e.message.contains("refused before it started"))));

    // More runs that panic on every attempt, then one that does not: the
    // engine's only slot was given back every time.
    let mut panicking = Vec::new();
    for _ in 0..3 {
        for workflow in [explosive.id, refusing.id] {
            let run = engine.start_run(workflow, json!({})).await.expect("start");
            panicking.push(run.id);
        }
    }
    let fine = published(
        &engine,
        "fine",
        WorkflowDefinition::new(vec![StepDefinition::new("fine", "fine")]),
    )
    .await;
    let run = engine
        .start_run(fine.id, json!("after the panics"))
        .await
        .expect("start");
    for id in panicking {
        assert_eq!(wait(&engine, id).await.status, RunStatus::Failed);
    }
    let done = wait(&engine, run.id).await;
    assert_eq!(done.status, RunStatus::Succeeded, "{done:?}");
    assert_eq!(done.output, Some(json!({ "fine": "after the panics" })));
}

/// 10^17 ms: about three billion years.
const FAR_TOO_LONG: Duration = Duration::from_millis(100_000_000_000_000_000);

/// A timeout or retry delay too long to add to a timestamp is refused at
/// publish time with a typed problem naming it (a step's and the
/// workflow's own); exactly [`MAX_DURATION`] is accepted. A handler's
/// retry hint of `Duration::MAX` does not panic the worker: the attempt
/// records a retry time at a real timestamp, at most `MAX_DURATION`
/// ahead, and the run waits for it until cancelled.
pub async fn durations_are_bounded_and_hints_clamped<S: Store>(store: S) {
    let mut registry = StepRegistry::new();
    registry
        .step("busy", |_ctx: StepContext, _input: Value| async move {
            Err::<Value, _>(StepError::retryable("rate limited").retry_after(Duration::MAX))
        })
        .expect("register");
    let engine = engine(store, registry);
    engine.start();
    let workflow = engine.create_workflow("bounded").await.expect("create");
    let step = || StepDefinition::new("busy", "busy");
    let refused = [
        (
            WorkflowDefinition::new(vec![step().timeout(FAR_TOO_LONG)]),
            Some("busy"),
            "timeout",
        ),
        (
            WorkflowDefinition::new(vec![step().retry(RetryPolicy::fixed(3, FAR_TOO_LONG))]),
            Some("busy"),
            "retry delay",
        ),
        (
            WorkflowDefinition::new(vec![step()]).timeout(FAR_TOO_LONG),
            None,
            "timeout",
        ),
        (
            WorkflowDefinition::new(vec![step()]).retry(RetryPolicy::fixed(3, FAR_TOO_LONG)),
            None,
            "retry delay",
        ),
        (
            WorkflowDefinition::new(vec![step()]).retry(RetryPolicy::exponential(
                3,
                Duration::from_secs(1),
                FAR_TOO_LONG,
            )),
            None,
            "maximum retry delay",
        ),
    ];
    for (definition, step_key, what) in refused {
        let result = engine.publish(workflow.id, definition).await;
        let Err(EngineError::InvalidDefinition(invalid)) = &result else {
            panic!("a {what} of 10^17 ms must be refused: {result:?}");
        };
        assert!(
            invalid.problems.iter().any(|problem| matches!(
                problem,
                DefinitionProblem::DurationTooLong { step, what: named, limit }
                    if step.as_deref() == step_key && named == what && *limit == MAX_DURATION
            )),
            "a {what} of 10^17 ms is named: {invalid:?}"
        );
    }
    assert!(
        engine.versions(workflow.id).await.expect("list").is_empty(),
        "nothing refused is published"
    );

    let longest = Duration::from_secs(60);
    let version = engine
        .publish(
            workflow.id,
            WorkflowDefinition::new(vec![step()
                .timeout(MAX_DURATION)
                .retry(RetryPolicy::fixed(3, longest))])
            .timeout(MAX_DURATION),
        )
        .await
        .expect("the longest durations are accepted");
    assert_eq!(version.number, 1);

    let run = engine
        .start_run(workflow.id, json!({}))
        .await
        .expect("start");
    let steps = steps_until(&engine, run.id, "the first attempt fails", |steps| {
        steps
            .first()
            .is_some_and(|s| s.status == StepStatus::Failed)
    })
    .await;
    assert_eq!(steps.len(), 1, "{steps:?}");
    let failed = &steps[0];
    let ended = failed.finished_at.expect("a failed attempt has ended");
    let retry_at = failed.retry_at.expect("a retry is scheduled");
    let max = TimeDelta::from_std(MAX_DURATION).expect("MAX_DURATION is a TimeDelta");
    assert!(
        retry_at > ended + TimeDelta::from_std(longest).expect("a TimeDelta")
            && retry_at <= ended + max,
        "the hint is honoured but clamped to {MAX_DURATION:?}: retry at {retry_at}, ended {ended}"
    );
    // A year-long backoff parks the run (it holds no slot meanwhile).
    let mut waiting = engine.run(run.id).await.expect("details").run;
    for _ in 0..2_000 {
        if waiting.status != RunStatus::Running {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
        waiting = engine.run(run.id).await.expect("details").run;
    }
    assert_eq!(waiting.status, RunStatus::Waiting, "{waiting:?}");
    // Until the retry, or the run's deadline if that comes first.
    let deadline = waiting.deadline.expect("a deadline");
    assert_eq!(waiting.wake_at, Some(retry_at.min(deadline)), "{waiting:?}");
    assert!(
        waiting.deadline.is_some_and(|d| d > ended),
        "a deadline MAX_DURATION ahead is a real timestamp: {waiting:?}"
    );

    engine.cancel_run(run.id).await.expect("cancel");
    let done = wait(&engine, run.id).await;
    assert_eq!(done.status, RunStatus::Cancelled, "{done:?}");
    let steps = engine.run(run.id).await.expect("details").steps;
    assert_eq!(steps.len(), 1, "no second attempt ran: {steps:?}");
}

fn echo_registry() -> StepRegistry {
    let mut registry = StepRegistry::new();
    registry
        .step("echo", |_ctx: StepContext, input: Value| async move {
            ok(input)
        })
        .expect("register");
    registry
}

const HOOK_TOKEN: &str = "launch-token-0123456789";

fn launch_hook(path: &str) -> TriggerKind {
    TriggerKind::Webhook(
        WebhookConfig::new(path)
            .with_token(HOOK_TOKEN)
            .expect("a strong token"),
    )
}

fn nightly(expression: &str) -> TriggerKind {
    TriggerKind::Cron(CronConfig::new(expression, "UTC"))
}

/// What a host does at every start-up, on a new engine: declare its
/// workflow, publish its definition, declare its triggers by name.
async fn launch<S: Store>(
    store: S,
    clock: &ManualClock,
    host: &str,
    hook_path: &str,
    cron: &str,
) -> (Engine<S, StepRegistry>, WorkflowId, Trigger, Trigger) {
    let engine = Engine::builder(store, echo_registry())
        .clock(clock.clone())
        .build();
    let workflow = engine.ensure_workflow(host).await.expect("workflow");
    engine
        .publish(
            workflow.id,
            WorkflowDefinition::new(vec![StepDefinition::new("echo", "echo")]),
        )
        .await
        .expect("publish");
    let hook = engine
        .ensure_trigger(workflow.id, "github", launch_hook(hook_path))
        .await
        .expect("ensure the webhook trigger");
    let cron = engine
        .ensure_trigger(workflow.id, "nightly", nightly(cron))
        .await
        .expect("ensure the cron trigger");
    (engine, workflow.id, hook, cron)
}

fn bearer(token: &str) -> WebhookRequest {
    let headers: Headers = [
        ("content-type", "application/json".to_owned()),
        ("authorization", format!("Bearer {token}")),
    ]
    .into_iter()
    .collect();
    WebhookRequest::new(headers, br#"{"ref":"main"}"#.to_vec())
}

fn june(day: u32, h: u32, m: u32, s: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 6, day, h, m, s)
        .single()
        .expect("a valid time")
}

/// A host launched four times (a new engine each time, on one store)
/// declaring its webhook and cron triggers by name keeps one trigger of
/// each, unchanged; a launch with a changed configuration updates that
/// trigger in place (same id, the old path freed). Four launches at once
/// also leave one of each.
pub async fn ensured_triggers_survive_relaunches<S: Store + Clone>(store: S) {
    let clock = ManualClock::new(june(1, 9, 0, 0));
    let mut first = None;
    for launch_number in 0..4 {
        let (engine, workflow, hook, cron) =
            launch(store.clone(), &clock, "host", "hooks/github", "0 3 * * *").await;
        let first = first.get_or_insert_with(|| (workflow, hook.clone(), cron.clone()));
        assert_eq!(workflow, first.0, "launch {launch_number}: one workflow");
        assert_eq!(
            hook, first.1,
            "launch {launch_number}: the webhook trigger unchanged"
        );
        assert_eq!(
            cron, first.2,
            "launch {launch_number}: the cron trigger unchanged"
        );
        let triggers = engine.triggers(workflow).await.expect("triggers");
        assert_eq!(triggers.len(), 2, "launch {launch_number}: {triggers:?}");
        assert_eq!(engine.versions(workflow).await.expect("versions").len(), 1);
        clock.advance(TimeDelta::minutes(1));
    }
    let (workflow, hook, cron) = first.expect("launched");

    // A new release of the host moves its webhook and reschedules its cron.
    let (engine, _, moved, rescheduled) = launch(
        store.clone(),
        &clock,
        "host",
        "hooks/github-v2",
        "0 4 * * *",
    )
    .await;
    assert_eq!(moved.id, hook.id, "the webhook trigger is updated in place");
    assert_eq!(
        rescheduled.id, cron.id,
        "the cron trigger is updated in place"
    );
    assert_eq!(moved.kind, launch_hook("hooks/github-v2"));
    assert_eq!(rescheduled.kind, nightly("0 4 * * *"));
    let mut stored = engine.triggers(workflow).await.expect("triggers");
    stored.sort_by(|a, b| a.name.cmp(&b.name));
    assert_eq!(stored, vec![moved.clone(), rescheduled.clone()]);
    assert!(
        matches!(
            engine
                .deliver_webhook("hooks/github-v2", &bearer(HOOK_TOKEN))
                .await
                .expect("deliver"),
            Delivery::Accepted { .. }
        ),
        "the new path delivers"
    );
    assert_eq!(
        engine
            .deliver_webhook("hooks/github", &bearer(HOOK_TOKEN))
            .await
            .expect("deliver"),
        Delivery::UnknownPath,
        "the old path is freed"
    );

    // Four replicas of a new host starting at the same moment.
    let launches = (0..4).map(|_| {
        let (store, clock) = (store.clone(), clock.clone());
        async move { launch(store, &clock, "replicas", "hooks/replicas", "0 5 * * *").await }
    });
    let launched = futures::future::join_all(launches).await;
    let (_, replicas, hook, cron) = &launched[0];
    for (_, workflow, other_hook, other_cron) in &launched {
        assert_eq!(workflow, replicas);
        assert_eq!(other_hook.id, hook.id, "{other_hook:?}");
        assert_eq!(other_cron.id, cron.id, "{other_cron:?}");
    }
    let mut triggers = engine.triggers(*replicas).await.expect("triggers");
    triggers.sort_by(|a, b| a.name.cmp(&b.name));
    assert_eq!(triggers, vec![hook.clone(), cron.clone()]);
}

/// A cron trigger declared by four launches of a host fires each due slot
/// once, even with all four engines firing.
pub async fn an_ensured_cron_fires_each_slot_once<S: Store + Clone>(store: S) {
    let clock = ManualClock::new(june(1, 11, 55, 20));
    let mut engines = Vec::new();
    let mut trigger_ids = Vec::new();
    let mut workflow = None;
    for _ in 0..4 {
        let (engine, wf, _, cron) = launch(
            store.clone(),
            &clock,
            "cron-host",
            "hooks/cron-host",
            "*/5 * * * *",
        )
        .await;
        workflow = Some(wf);
        trigger_ids.push(cron.id);
        engines.push(engine);
    }
    let workflow = workflow.expect("launched");
    trigger_ids.dedup();
    assert_eq!(trigger_ids.len(), 1, "one cron trigger");
    for _ in 0..6 {
        clock.advance(TimeDelta::minutes(5));
        let fired = futures::future::join_all(engines.iter().map(Engine::fire_due_cron)).await;
        for firing in fired {
            firing.expect("fire");
        }
    }
    let events = engines[0]
        .list_events(&EventQuery {
            workflow_id: Some(workflow),
            ..EventQuery::default()
        })
        .await
        .expect("events");
    let slots: Vec<_> = events
        .items
        .iter()
        .filter(|e| e.source == EventSource::Cron)
        .map(|e| {
            assert_eq!(e.trigger_id, trigger_ids.first().copied(), "{e:?}");
            e.received_at
        })
        .collect();
    assert_eq!(slots.len(), 6, "one event per slot: {:?}", events.items);
    let distinct: std::collections::BTreeSet<_> = slots.iter().collect();
    assert_eq!(distinct.len(), 6, "no slot twice");
    let runs = engines[0]
        .list_runs(&RunQuery {
            workflow_id: Some(workflow),
            ..RunQuery::default()
        })
        .await
        .expect("runs");
    assert_eq!(runs.items.len(), 6, "one run per slot");
}

/// An engine's default step timeout ends an attempt whose definition sets
/// no timeout (a handler that never returns), and yields to a step's own
/// longer timeout. The default engine has one, of an hour.
pub async fn default_step_timeout_applies_where_the_definition_sets_none<S: Store>(store: S) {
    assert_eq!(
        EngineConfig::default().default_step_timeout,
        Some(DEFAULT_STEP_TIMEOUT)
    );
    let mut registry = hanging_registry(Arc::new(Notify::new()));
    registry
        .step("slow", |_ctx: StepContext, _input: Value| async move {
            tokio::time::sleep(Duration::from_millis(400)).await;
            ok(json!("slow but done"))
        })
        .expect("register");
    let engine = Engine::builder(store, registry)
        .lease_ttl(Duration::from_millis(500))
        .poll_interval(Duration::from_millis(20))
        .default_step_timeout(Some(Duration::from_millis(200)))
        .build();
    engine.start();

    let forgotten = published(
        &engine,
        "forgotten-await",
        WorkflowDefinition::new(vec![
            StepDefinition::new("hang", "hang"),
            StepDefinition::new("never", "never"),
        ]),
    )
    .await;
    let run = engine
        .start_run(forgotten.id, json!({}))
        .await
        .expect("start");
    let done = wait(&engine, run.id).await;
    assert_eq!(done.status, RunStatus::TimedOut, "{done:?}");
    let steps = engine.run(run.id).await.expect("details").steps;
    assert_eq!(steps.len(), 1, "{steps:?}");
    assert_eq!(steps[0].status, StepStatus::TimedOut);
    assert!(
        steps[0]
            .error
            .as_ref()
            .is_some_and(|e| e.message.contains("timed out")),
        "{steps:?}"
    );

    let patient = published(
        &engine,
        "own-timeout",
        WorkflowDefinition::new(vec![
            StepDefinition::new("slow", "slow").timeout(Duration::from_secs(60 * 60))
        ]),
    )
    .await;
    let run = engine
        .start_run(patient.id, json!({}))
        .await
        .expect("start");
    let done = wait(&engine, run.id).await;
    assert_eq!(done.status, RunStatus::Succeeded, "{done:?}");
    assert_eq!(done.output, Some(json!("slow but done")));
}

/// A cancel asked for on an engine that does not own the run reaches the
/// owner through the store within about its cancel check interval, however
/// long the lease: with a ten-minute lease (renewed every two hundred
/// seconds), the run is cancelled well within the scenario's patience.
pub async fn a_cancel_from_another_engine_reaches_the_owner<S: Store + Clone>(store: S) {
    let started = Arc::new(Notify::new());
    let saw = Arc::new(AtomicU32::new(0));
    let mut registry = StepRegistry::new();
    {
        let (started, saw) = (Arc::clone(&started), Arc::clone(&saw));
        registry
            .step("watch", move |ctx: StepContext, _input: Value| {
                let (started, saw) = (Arc::clone(&started), Arc::clone(&saw));
                async move {
                    started.notify_one();
                    ctx.cancelled().await;
                    saw.fetch_add(1, Ordering::SeqCst);
                    Err::<Value, _>(StepError::terminal("stopped on cancellation"))
                }
            })
            .expect("register");
    }
    let owner = Engine::builder(store.clone(), registry)
        .lease_ttl(Duration::from_secs(600))
        .poll_interval(Duration::from_millis(20))
        .cancel_check_interval(Duration::from_millis(50))
        .build();
    let other = Engine::builder(store, StepRegistry::new())
        .lease_ttl(Duration::from_secs(600))
        .build();
    owner.start();
    let workflow = published(
        &owner,
        "cancelled-elsewhere",
        WorkflowDefinition::new(vec![StepDefinition::new("watch", "watch")]),
    )
    .await;
    let run = owner
        .start_run(workflow.id, json!({}))
        .await
        .expect("start");
    tokio::time::timeout(PATIENCE, started.notified())
        .await
        .expect("the step started");
    let requested = other.cancel_run(run.id).await.expect("cancel");
    assert!(requested.cancel_requested, "{requested:?}");
    let done = wait(&other, run.id).await;
    assert_eq!(done.status, RunStatus::Cancelled, "{done:?}");
    assert_eq!(saw.load(Ordering::SeqCst), 1, "the handler saw the cancel");
    let steps = owner.run(run.id).await.expect("details").steps;
    assert_eq!(steps.len(), 1, "{steps:?}");
    assert_eq!(steps[0].status, StepStatus::Cancelled);
}

/// The manual event of `run`, checked to be one that started it.
async fn manual_event_of<S: Store>(
    engine: &Engine<S, StepRegistry>,
    run: &WorkflowRun,
) -> crate::Event {
    let id = run.event_id.expect("every run traces to an event");
    let event = engine.event(id).await.expect("the run's event is stored");
    assert_eq!(event.source, EventSource::Manual, "{event:?}");
    assert_eq!(event.workflow_id, run.workflow_id, "{event:?}");
    assert_eq!(event.trigger_id, None, "{event:?}");
    assert_eq!(
        event.outcome,
        EventOutcome::RunStarted { run_id: run.id },
        "{event:?}"
    );
    event
}

/// The event a request stored for `run`, found by its outcome.
async fn request_event_of<S: Store>(
    engine: &Engine<S, StepRegistry>,
    run: &WorkflowRun,
) -> crate::Event {
    let events = engine
        .list_events(&EventQuery {
            workflow_id: Some(run.workflow_id),
            ..EventQuery::default()
        })
        .await
        .expect("events");
    let mut started: Vec<_> = events
        .items
        .into_iter()
        .filter(|e| e.outcome.run_id() == Some(run.id))
        .collect();
    assert_eq!(
        started.len(),
        1,
        "one event started run {}: {started:?}",
        run.id
    );
    started.pop().expect("one event")
}

/// Every run traces to a stored event: a manual start without an
/// idempotency key stores a manual event that started it (two such starts,
/// two events), with who asked under `requested_by`; a replay stays linked
/// to the event it replays and records its own manual event, with
/// `replay_of`.
pub async fn every_run_traces_to_an_event<S: Store>(store: S) {
    let engine = engine(store, echo_registry());
    engine.start();
    let workflow = published(
        &engine,
        "traced",
        WorkflowDefinition::new(vec![StepDefinition::new("echo", "echo")]),
    )
    .await;
    let input = json!({ "n": 1 });
    let first = engine
        .start_run(workflow.id, input.clone())
        .await
        .expect("start");
    let second = engine
        .start_run(workflow.id, input.clone())
        .await
        .expect("start");
    assert_ne!(first.id, second.id, "no key: two runs");
    let first_event = manual_event_of(&engine, &first).await;
    let second_event = manual_event_of(&engine, &second).await;
    assert_ne!(first_event.id, second_event.id, "no key: two events");
    for event in [&first_event, &second_event] {
        assert_eq!(*event.payload, input, "{event:?}");
        assert!(!event.metadata.contains_key("requested_by"), "{event:?}");
    }
    assert_eq!(
        engine.event_of_run(first.id).await.expect("event"),
        Some(first_event.clone())
    );

    let asked = engine
        .start_run_with(
            workflow.id,
            json!({ "n": 2 }),
            RunOptions::new().requested_by("alice"),
        )
        .await
        .expect("start");
    let asked_event = manual_event_of(&engine, &asked).await;
    assert_eq!(
        asked_event.metadata.get("requested_by").map(String::as_str),
        Some("alice"),
        "{asked_event:?}"
    );

    let replay = engine.replay_event(first_event.id).await.expect("replay");
    assert_eq!(
        replay.event_id,
        Some(first_event.id),
        "linked to the replayed event"
    );
    assert_eq!(replay.replay_of, Some(first.id));
    let request = request_event_of(&engine, &replay).await;
    assert_ne!(request.id, first_event.id);
    assert_eq!(request.source, EventSource::Manual, "{request:?}");
    assert_eq!(
        request.metadata.get("replay_of"),
        Some(&first_event.id.to_string()),
        "{request:?}"
    );
    let replay_by_bob = engine
        .replay_event_as(first_event.id, Some("bob"))
        .await
        .expect("replay");
    let request = request_event_of(&engine, &replay_by_bob).await;
    assert_eq!(
        request.metadata.get("requested_by").map(String::as_str),
        Some("bob"),
        "{request:?}"
    );
    assert_eq!(
        request.metadata.get("replay_of"),
        Some(&first_event.id.to_string()),
        "{request:?}"
    );

    let runs = engine
        .list_runs(&RunQuery {
            workflow_id: Some(workflow.id),
            ..RunQuery::default()
        })
        .await
        .expect("runs");
    assert_eq!(runs.items.len(), 5);
    for run in &runs.items {
        let event = engine
            .event_of_run(run.id)
            .await
            .expect("event")
            .expect("every run traces to an event");
        assert_eq!(event.workflow_id, workflow.id);
        assert_eq!(wait(&engine, run.id).await.status, RunStatus::Succeeded);
    }
}
