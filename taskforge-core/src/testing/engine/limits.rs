//! Limits scenarios ([`concurrency`](crate::concurrency)): a key's runs
//! queued in order, each policy when the key is full (skip, cancel the
//! running, cancel the newest), a trigger's own limit, debounce and rate
//! limits on the manual clock, and a limited run resumed by a new engine
//! after a crash.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use parking_lot::Mutex;
use serde_json::json;
use tokio::sync::watch;

use crate::clock::ManualClock;
use crate::store::{EventQuery, OutcomeKind};
use crate::webhook::{Headers, WebhookRequest};
use crate::{
    ConcurrencyLimit, Delivery, EngineError, EventOutcome, LimitPolicy, RunStatus, StepDefinition,
    TriggerKind, WebhookConfig,
};

use super::*;

/// What the `work` handler saw: every start and end, in order, and the
/// most runs of each key in flight at once.
#[derive(Default)]
struct Tracker {
    log: Mutex<Vec<(String, bool)>>,
    in_flight: Mutex<HashMap<String, usize>>,
    most: Mutex<HashMap<String, usize>>,
}

impl Tracker {
    fn started(&self, key: &str, label: String) {
        let mut in_flight = self.in_flight.lock();
        let now = in_flight.entry(key.to_owned()).or_default();
        *now += 1;
        let most = *now;
        drop(in_flight);
        let mut peak = self.most.lock();
        let peak = peak.entry(key.to_owned()).or_default();
        *peak = (*peak).max(most);
        self.log.lock().push((label, true));
    }

    fn ended(&self, key: &str, label: String) {
        *self.in_flight.lock().entry(key.to_owned()).or_default() -= 1;
        self.log.lock().push((label, false));
    }

    fn most(&self, key: &str) -> usize {
        self.most.lock().get(key).copied().unwrap_or(0)
    }

    /// The labels that started, in order.
    fn starts(&self) -> Vec<String> {
        let log = self.log.lock();
        log.iter()
            .filter(|(_, start)| *start)
            .map(|(label, _)| label.clone())
            .collect()
    }

    /// Where `label` started and ended in the log.
    fn span(&self, label: &str) -> (Option<usize>, Option<usize>) {
        let log = self.log.lock();
        let at = |start: bool| log.iter().position(|(l, s)| l == label && *s == start);
        (at(true), at(false))
    }
}

/// Records the end of a `work` call when dropped.
struct End {
    tracker: Arc<Tracker>,
    key: String,
    label: String,
}

impl Drop for End {
    fn drop(&mut self) {
        self.tracker
            .ended(&self.key, std::mem::take(&mut self.label));
    }
}

/// A registry whose `work` handler records in `tracker` (key `/repo`,
/// label `<repo><n>`), sleeps a little, and, when its input says `hold`,
/// tells `entered` and waits until `release` turns true or the run is
/// cancelled.
fn work_registry(
    tracker: &Arc<Tracker>,
    entered: &Arc<Notify>,
    release: &watch::Receiver<bool>,
) -> StepRegistry {
    let (tracker, entered, release) = (Arc::clone(tracker), Arc::clone(entered), release.clone());
    let mut registry = StepRegistry::new();
    registry
        .step("work", move |ctx: StepContext, input: Value| {
            let (tracker, entered, mut release) =
                (Arc::clone(&tracker), Arc::clone(&entered), release.clone());
            async move {
                let key = input["repo"].as_str().unwrap_or_default().to_owned();
                let label = format!("{key}{}", input["n"]);
                tracker.started(&key, label.clone());
                // The end is recorded however the call ends: returned, or
                // dropped by a worker that stopped the run.
                let _end = End {
                    tracker: Arc::clone(&tracker),
                    key,
                    label,
                };
                tokio::time::sleep(Duration::from_millis(5)).await;
                if input["hold"] == json!(true) {
                    entered.notify_one();
                    tokio::select! {
                        _ = release.wait_for(|go| *go) => {}
                        () = ctx.cancelled() => return Err(StepError::terminal("cancelled")),
                    }
                }
                ok(input)
            }
        })
        .expect("register");
    registry
}

struct Rig<S: Store> {
    engine: Engine<S, StepRegistry>,
    tracker: Arc<Tracker>,
    entered: Arc<Notify>,
    release: watch::Sender<bool>,
}

/// An engine over `store` with the `work` registry (on `clock`, if given).
fn rig<S: Store>(store: S, clock: Option<&ManualClock>) -> Rig<S> {
    let tracker = Arc::new(Tracker::default());
    let entered = Arc::new(Notify::new());
    let (release, rx) = watch::channel(false);
    let mut builder = Engine::builder(store, work_registry(&tracker, &entered, &rx))
        .lease_ttl(Duration::from_millis(500))
        .poll_interval(Duration::from_millis(20));
    if let Some(clock) = clock {
        builder = builder.clock(clock.clone());
    }
    Rig {
        engine: builder.build(),
        tracker,
        entered,
        release,
    }
}

fn work(definition: impl FnOnce(WorkflowDefinition) -> WorkflowDefinition) -> WorkflowDefinition {
    definition(WorkflowDefinition::new(vec![StepDefinition::new(
        "work", "work",
    )]))
}

async fn entered(rig: &Rig<impl Store>) {
    tokio::time::timeout(PATIENCE, rig.entered.notified())
        .await
        .expect("the held run's step started");
}

/// With a per-key limit of 1 and the default policy (queue), a key's runs
/// run one at a time, in the order they were started, while another key's
/// runs are not held up by them.
pub async fn a_key_runs_one_at_a_time_in_order<S: Store>(store: S) {
    let rig = rig(store, None);
    let wf = published(
        &rig.engine,
        "limits-queue",
        work(|d| d.concurrency(ConcurrencyLimit::per_key("/repo", 1))),
    )
    .await;
    let mut runs = Vec::new();
    for n in 0..4 {
        let run = rig
            .engine
            .start_run(wf.id, json!({"repo": "a", "n": n}))
            .await
            .expect("start");
        assert_eq!(run.status, RunStatus::Queued);
        runs.push(run);
    }
    for n in 0..2 {
        let run = rig
            .engine
            .start_run(wf.id, json!({"repo": "b", "n": n}))
            .await
            .expect("start");
        runs.push(run);
    }
    // Queued while no engine ran; one engine now takes them as it can.
    rig.engine.start();
    for run in &runs {
        assert_eq!(wait(&rig.engine, run.id).await.status, RunStatus::Succeeded);
    }
    assert_eq!(rig.tracker.most("a"), 1, "key a never ran two at once");
    assert_eq!(rig.tracker.most("b"), 1, "key b never ran two at once");
    let a: Vec<String> = rig
        .tracker
        .starts()
        .into_iter()
        .filter(|l| l.starts_with('a'))
        .collect();
    assert_eq!(
        a,
        ["a0", "a1", "a2", "a3"],
        "in the order they were started"
    );
    let (b0, _) = rig.tracker.span("b0");
    let (_, a3_end) = rig.tracker.span("a3");
    assert!(b0 < a3_end, "key b did not wait for key a's queue");
    let limits = runs[0]
        .limits
        .as_deref()
        .expect("the run records its limits");
    assert_eq!(limits.key, format!("{}/\"a\"", wf.id));
    assert_eq!(limits.max, Some(1));
}

/// With the policy `skip`, a request while the key is full starts no run:
/// a manual start gets `EngineError::Limited` (and an idempotent repeat
/// the same), a webhook delivery is `Recorded` (HTTP 202), and both are
/// stored as events with the outcome `Limited`. A trigger's own limit
/// applies to the runs it starts. Once the run holding the key finishes,
/// runs start again.
pub async fn skip_records_the_event_as_limited<S: Store>(store: S) {
    let rig = rig(store, None);
    rig.engine.start();
    let wf = published(
        &rig.engine,
        "limits-skip",
        work(|d| d.concurrency(ConcurrencyLimit::new(1).policy(LimitPolicy::Skip))),
    )
    .await;
    let holder = rig
        .engine
        .start_run(wf.id, json!({"repo": "r", "n": 0, "hold": true}))
        .await
        .expect("start");
    entered(&rig).await;

    let refused = rig
        .engine
        .start_run_with(
            wf.id,
            json!({"repo": "r", "n": 1}),
            crate::RunOptions::default().idempotency_key("once"),
        )
        .await;
    let Err(EngineError::Limited { key, event_id }) = refused else {
        panic!("a full key with policy skip refuses the run, got {refused:?}");
    };
    assert_eq!(key, wf.id.to_string());
    let event = rig
        .engine
        .event(event_id)
        .await
        .expect("the request is an event");
    assert_eq!(
        event.outcome,
        EventOutcome::Limited {
            key: key.clone(),
            run_id: None
        }
    );
    let again = rig
        .engine
        .start_run_with(
            wf.id,
            json!({"repo": "r", "n": 1}),
            crate::RunOptions::default().idempotency_key("once"),
        )
        .await;
    assert!(
        matches!(again, Err(EngineError::Limited { event_id: e, .. }) if e == event_id),
        "a repeat of a skipped request is the same refusal: {again:?}"
    );

    // A trigger with its own limit (per key of the payload, skip).
    rig.engine
        .create_trigger(
            wf.id,
            TriggerKind::Webhook(
                WebhookConfig::new("limits-skip")
                    .with_token("limits-skip-token-0123456789")
                    .expect("a strong token")
                    .with_concurrency(
                        ConcurrencyLimit::per_key("/repo", 1).policy(LimitPolicy::Skip),
                    ),
            ),
        )
        .await
        .expect("trigger");
    let delivery = |body: &'static str| {
        let headers: Headers = [
            ("content-type", "application/json".to_owned()),
            (
                "authorization",
                "Bearer limits-skip-token-0123456789".to_owned(),
            ),
        ]
        .into_iter()
        .collect();
        WebhookRequest::new(headers, body.as_bytes().to_vec())
    };
    let first = rig
        .engine
        .deliver_webhook(
            "limits-skip",
            &delivery(r#"{"repo": "w", "n": 0, "hold": true}"#),
        )
        .await
        .expect("deliver");
    let Delivery::Accepted { run_id: hooked, .. } = first else {
        panic!("the trigger's key w is free: {first:?}");
    };
    entered(&rig).await;
    let second = rig
        .engine
        .deliver_webhook("limits-skip", &delivery(r#"{"repo": "w", "n": 1}"#))
        .await
        .expect("deliver");
    assert_eq!(second.http_status(), 202);
    let Delivery::Recorded {
        outcome: EventOutcome::Limited { key, run_id: None },
        ..
    } = second
    else {
        panic!("the trigger's key w is full: {second:?}");
    };
    assert_eq!(key, format!("{}/\"w\"", wf.id));

    let limited = rig
        .engine
        .list_events(&EventQuery {
            workflow_id: Some(wf.id),
            outcome: Some(OutcomeKind::Limited),
            ..EventQuery::default()
        })
        .await
        .expect("events");
    assert_eq!(limited.items.len(), 2, "both refusals are recorded");

    rig.release.send_replace(true);
    assert_eq!(
        wait(&rig.engine, holder.id).await.status,
        RunStatus::Succeeded
    );
    assert_eq!(wait(&rig.engine, hooked).await.status, RunStatus::Succeeded);
    let next = rig
        .engine
        .start_run(wf.id, json!({"repo": "r", "n": 2}))
        .await
        .expect("the key is free again");
    assert_eq!(
        wait(&rig.engine, next.id).await.status,
        RunStatus::Succeeded
    );
}

/// With the policy `cancel_running`, a new run of a full key cancels the
/// key's oldest runs (the running one stops) and starts once their slots
/// are free.
pub async fn cancel_running_makes_room_for_the_newest<S: Store>(store: S) {
    let rig = rig(store, None);
    rig.engine.start();
    let wf = published(
        &rig.engine,
        "limits-cancel-running",
        work(|d| {
            d.concurrency(ConcurrencyLimit::per_key("/repo", 1).policy(LimitPolicy::CancelRunning))
        }),
    )
    .await;
    let old = rig
        .engine
        .start_run(wf.id, json!({"repo": "r", "n": 0, "hold": true}))
        .await
        .expect("start");
    entered(&rig).await;
    let new = rig
        .engine
        .start_run(wf.id, json!({"repo": "r", "n": 1}))
        .await
        .expect("start");
    let old = wait(&rig.engine, old.id).await;
    assert_eq!(old.status, RunStatus::Cancelled);
    let new = wait(&rig.engine, new.id).await;
    assert_eq!(new.status, RunStatus::Succeeded);
    assert_eq!(rig.tracker.most("r"), 1);
    let (_, old_end) = rig.tracker.span("r0");
    let (new_start, _) = rig.tracker.span("r1");
    assert!(
        old_end < new_start,
        "the new run started once the old one stopped"
    );
}

/// With the policy `cancel_newest`, a new run of a full key is recorded
/// cancelled at once, without running a step, and its event's outcome is
/// `Limited` naming it; the run holding the key goes on.
pub async fn cancel_newest_records_the_newcomer_cancelled<S: Store>(store: S) {
    let rig = rig(store, None);
    rig.engine.start();
    let wf = published(
        &rig.engine,
        "limits-cancel-newest",
        work(|d| d.concurrency(ConcurrencyLimit::new(1).policy(LimitPolicy::CancelNewest))),
    )
    .await;
    let holder = rig
        .engine
        .start_run(wf.id, json!({"repo": "r", "n": 0, "hold": true}))
        .await
        .expect("start");
    entered(&rig).await;
    let newest = rig
        .engine
        .start_run(wf.id, json!({"repo": "r", "n": 1}))
        .await
        .expect("start");
    assert_eq!(newest.status, RunStatus::Cancelled);
    let stored = wait(&rig.engine, newest.id).await;
    assert_eq!(stored.status, RunStatus::Cancelled);
    assert!(stored
        .error
        .as_ref()
        .is_some_and(|e| e.message.contains("cancel_newest")));
    let event = rig
        .engine
        .event_of_run(newest.id)
        .await
        .expect("event")
        .expect("a run traces to its event");
    assert_eq!(
        event.outcome,
        EventOutcome::Limited {
            key: wf.id.to_string(),
            run_id: Some(newest.id)
        }
    );
    rig.release.send_replace(true);
    assert_eq!(
        wait(&rig.engine, holder.id).await.status,
        RunStatus::Succeeded
    );
    assert_eq!(rig.tracker.span("r1"), (None, None), "the newest never ran");
}

fn t0() -> DateTime<Utc> {
    DateTime::from_timestamp(1_767_225_600, 0).expect("2026-01-01 is a valid timestamp")
}

/// Whether `run` is still queued after a while of real time (many polls).
async fn still_queued<S: Store>(engine: &Engine<S, StepRegistry>, run: RunId) -> bool {
    tokio::time::sleep(Duration::from_millis(150)).await;
    engine.run(run).await.expect("run").run.status == RunStatus::Queued
}

/// With a debounce window, a run waits the window before it may start, and
/// a newer run of its key supersedes it (cancelled at once, no step run):
/// of a burst, only the last run starts, one window after it came. Keys
/// are debounced apart. On the manual clock.
pub async fn debounce_starts_the_last_run_of_a_burst<S: Store>(store: S) {
    let clock = ManualClock::new(t0());
    let rig = rig(store, Some(&clock));
    rig.engine.start();
    let wf = published(
        &rig.engine,
        "limits-debounce",
        work(|d| {
            d.concurrency(ConcurrencyLimit::per_key("/repo", 4))
                .debounce(Duration::from_secs(10))
        }),
    )
    .await;
    let start = |repo: &'static str, n: u32| {
        let engine = rig.engine.clone();
        async move {
            engine
                .start_run(wf.id, json!({"repo": repo, "n": n}))
                .await
                .expect("start")
        }
    };
    let a1 = start("a", 1).await;
    clock.advance(TimeDelta::seconds(2));
    let a2 = start("a", 2).await;
    clock.advance(TimeDelta::seconds(1));
    let b1 = start("b", 1).await;
    clock.advance(TimeDelta::seconds(1));
    let a3 = start("a", 3).await;
    assert_eq!(
        a3.limits.as_deref().and_then(|l| l.not_before),
        Some(t0() + TimeDelta::seconds(14))
    );
    for superseded in [a1.id, a2.id] {
        assert_eq!(
            wait(&rig.engine, superseded).await.status,
            RunStatus::Cancelled,
            "a newer run of the key superseded it"
        );
    }
    clock.advance(TimeDelta::seconds(8)); // t0 + 12 s
    assert!(
        still_queued(&rig.engine, b1.id).await,
        "b1's window ends at 13 s"
    );
    clock.advance(TimeDelta::seconds(1)); // t0 + 13 s
    assert_eq!(wait(&rig.engine, b1.id).await.status, RunStatus::Succeeded);
    assert!(
        still_queued(&rig.engine, a3.id).await,
        "a3's window ends at 14 s"
    );
    clock.advance(TimeDelta::seconds(1)); // t0 + 14 s
    assert_eq!(wait(&rig.engine, a3.id).await.status, RunStatus::Succeeded);
    assert_eq!(
        rig.tracker.starts(),
        ["b1", "a3"],
        "only the last run of each burst ran"
    );
}

/// With a rate limit of 2 runs per minute, 5 runs started at once run 2
/// now, 2 a minute later and the last one a minute after that; the others
/// wait queued meanwhile. On the manual clock.
pub async fn a_rate_limit_spreads_starts_over_windows<S: Store>(store: S) {
    let clock = ManualClock::new(t0());
    let rig = rig(store, Some(&clock));
    rig.engine.start();
    let wf = published(
        &rig.engine,
        "limits-rate",
        work(|d| d.rate_limit(2, Duration::from_secs(60))),
    )
    .await;
    let mut runs = Vec::new();
    for n in 0..5 {
        runs.push(
            rig.engine
                .start_run(wf.id, json!({"repo": "r", "n": n}))
                .await
                .expect("start"),
        );
    }
    for (window, expected) in [(0, 2), (1, 4), (2, 5)] {
        for run in &runs[..expected] {
            let done =
                tokio::time::timeout(Duration::from_secs(20), rig.engine.wait_for_run(run.id))
                    .await;
            if done.is_err() {
                let mut state = Vec::new();
                for run in &runs {
                    state.push(rig.engine.run(run.id).await.expect("run").run);
                }
                panic!(
                    "window {window}: run {} did not finish: now {} runs {state:#?} log {:?}",
                    run.id,
                    crate::clock::Clock::now(&clock),
                    rig.tracker.log.lock()
                );
            }
        }
        if let Some(next) = runs.get(expected) {
            assert!(
                still_queued(&rig.engine, next.id).await,
                "window {window} is full"
            );
        }
        clock.advance(TimeDelta::seconds(60));
    }
    let mut starts = rig.tracker.starts();
    // Runs claimed in one window run at once, so start in any order.
    starts[..2].sort();
    starts[2..4].sort();
    assert_eq!(
        starts,
        ["r0", "r1", "r2", "r3", "r4"],
        "window by window, in order"
    );
}

/// A run holding a key's only slot when its engine crashes keeps it: a new
/// engine on the store resumes it once its lease lapses, and the key's
/// waiting run starts only after it finished. The slots are the store's.
pub async fn a_limited_run_resumes_after_a_restart<S: Store + Clone>(store: S) {
    let first = rig(store.clone(), None);
    first.engine.start();
    let wf = published(
        &first.engine,
        "limits-restart",
        work(|d| d.concurrency(ConcurrencyLimit::new(1))),
    )
    .await;
    let holder = first
        .engine
        .start_run(wf.id, json!({"repo": "r", "n": 0, "hold": true}))
        .await
        .expect("start");
    entered(&first).await;
    let waiting = first
        .engine
        .start_run(wf.id, json!({"repo": "r", "n": 1}))
        .await
        .expect("start");
    assert!(still_queued(&first.engine, waiting.id).await);
    // A crash: the first engine stops where it is.
    drop(first);

    let second = rig(store, None);
    second.release.send_replace(true);
    second.engine.start();
    let holder = wait(&second.engine, holder.id).await;
    assert_eq!(holder.status, RunStatus::Succeeded);
    assert_eq!(
        wait(&second.engine, waiting.id).await.status,
        RunStatus::Succeeded
    );
    assert_eq!(second.tracker.most("r"), 1);
    let (_, holder_end) = second.tracker.span("r0");
    let (waiting_start, _) = second.tracker.span("r1");
    assert!(
        holder_end.is_some() && holder_end < waiting_start,
        "the waiting run started after the resumed one finished: {:?}",
        second.tracker.log.lock()
    );
}

/// Limits under contention: 200 runs of one key with a limit of 2, started
/// at once and executed by two engines on one store, all finish, and never
/// do more than 2 run at once. Each step's start and end take a number
/// from one counter, so overlaps are read from the order of events, not
/// from clocks.
pub async fn two_engines_never_run_more_of_a_key_than_its_limit<S: Store + Clone>(store: S) {
    use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

    const RUNS: usize = 200;
    #[derive(Default)]
    struct Seen {
        seq: AtomicU64,
        in_flight: AtomicUsize,
        most: AtomicUsize,
        spans: Mutex<Vec<(u64, u64)>>,
    }
    let seen = Arc::new(Seen::default());
    let registry = |seen: &Arc<Seen>| {
        let seen = Arc::clone(seen);
        let mut registry = StepRegistry::new();
        registry
            .step("work", move |_ctx: StepContext, _input: Value| {
                let seen = Arc::clone(&seen);
                async move {
                    let began = seen.seq.fetch_add(1, Ordering::SeqCst);
                    let now = seen.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                    seen.most.fetch_max(now, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(2)).await;
                    seen.in_flight.fetch_sub(1, Ordering::SeqCst);
                    let ended = seen.seq.fetch_add(1, Ordering::SeqCst);
                    seen.spans.lock().push((began, ended));
                    ok(Value::Null)
                }
            })
            .expect("register");
        registry
    };
    // Long leases: a lease lapsing under load would let a run's step run
    // twice, which is not what this counts.
    let engines: Vec<Engine<S, StepRegistry>> = (0..2)
        .map(|i| {
            Engine::builder(store.clone(), registry(&seen))
                .owner(format!("contender-{i}"))
                .lease_ttl(Duration::from_secs(10))
                .poll_interval(Duration::from_millis(10))
                .build()
        })
        .collect();
    let wf = published(
        &engines[0],
        "limits-contention",
        work(|d| d.concurrency(ConcurrencyLimit::per_key("/repo", 2))),
    )
    .await;
    let mut runs = Vec::with_capacity(RUNS);
    for n in 0..RUNS {
        let engine = &engines[n % 2];
        runs.push(
            engine
                .start_run(wf.id, json!({"repo": "hot", "n": n}))
                .await
                .expect("start"),
        );
    }
    for engine in &engines {
        engine.start();
    }
    for (n, run) in runs.iter().enumerate() {
        let done = wait(&engines[n % 2], run.id).await;
        assert_eq!(done.status, RunStatus::Succeeded, "{done:?}");
    }
    let spans = seen.spans.lock().clone();
    assert_eq!(spans.len(), RUNS, "each run's step ran once");
    let mut events: Vec<(u64, i32)> = spans
        .iter()
        .flat_map(|&(began, ended)| [(began, 1), (ended, -1)])
        .collect();
    events.sort_unstable();
    let (mut now, mut most) = (0, 0);
    for (_, delta) in events {
        now += delta;
        most = most.max(now);
    }
    assert!(most <= 2, "{most} runs of a 2-slot key ran at once");
    assert!(
        seen.most.load(Ordering::SeqCst) <= 2,
        "the in-flight counter saw more than 2"
    );
}
