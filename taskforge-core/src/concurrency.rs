//! Flow control: concurrency limits (per workflow or per key), debounce
//! and rate limits, as a definition declares them ([`ConcurrencyLimit`],
//! [`RateLimit`]) and as a run carries them ([`RunLimits`]).
//!
//! # The rules
//!
//! - **Key.** A limit's [`key`](ConcurrencyLimit::key) is a JSON pointer
//!   into the run's input (`/repository`, `/customer/id`). The run's key
//!   is `<workflow id>/<JSON text of the value there>` (a string keeps its
//!   quotes, so `"1"` and `1` are different keys; a value of more than
//!   [`MAX_KEY_VALUE_LEN`] bytes of JSON is replaced by `#sha256:` and its
//!   digest). A run whose input has no value at the pointer gets the key
//!   `<workflow id>/`: every such run shares that one key, so the limit
//!   still holds for them. Without a pointer, the key is `<workflow id>`:
//!   one limit for the whole workflow.
//! - **Slots.** At most [`max`](ConcurrencyLimit::max) runs of a key hold
//!   a slot at once. A run takes a slot when it is first claimed and holds
//!   it until it finishes: also while a later engine resumes it after a
//!   crash, and while it is parked in a durable wait or a retry's backoff
//!   (which frees the engine's slot, not the key's: a key limits what is
//!   under way, such as deploys of one repository). The store enforces
//!   this in its claim, atomically
//!   ([`RunStore::claim_run`](crate::store::RunStore::claim_run)), so the
//!   limit holds across every engine on one store and across restarts.
//!   Waiting runs of a key start in creation order. A waiting run whose
//!   cancellation is asked for takes no slot: it is claimed only to be
//!   cancelled. A finished run's slot goes to the key's next run on the
//!   next look of any engine (at once on the engine that ran it; on the
//!   others at their next poll, or on PostgreSQL's notification).
//! - **Policy.** What admission does with a new run whose key already has
//!   `max` unfinished runs: [`LimitPolicy`].
//! - **Debounce.** With [`debounce`](crate::WorkflowDefinition::debounce),
//!   a run waits that long before it may start, and a newer run of the
//!   same key admitted meanwhile supersedes it (it is cancelled without
//!   running a step): only the last event of a burst starts a run, one
//!   window after it came. The window restarts with every event, so a key
//!   whose events never pause never runs. The key is the concurrency
//!   limit's (the workflow's without one).
//! - **Rate limit.** With [`rate_limit`](crate::WorkflowDefinition::rate_limit),
//!   at most [`runs`](RateLimit::runs) runs of the workflow start (are first
//!   claimed) in any window of [`per`](RateLimit::per); the others stay
//!   queued until the window allows them, and are then listed for claims
//!   oldest first, as many as it allows (engines take the runs of one
//!   window in any order). The store keeps the recent start times with
//!   the workflow, so the limit holds across engines and restarts.
//!
//! A [`Trigger`](crate::Trigger) may override the concurrency limit for
//! the runs it starts ([`WebhookConfig::concurrency`](crate::WebhookConfig::concurrency),
//! [`CronConfig::concurrency`](crate::CronConfig::concurrency)). Every
//! run records what it was admitted under ([`WorkflowRun::limits`](crate::WorkflowRun::limits)),
//! pinned like its version: publishing a new limit changes runs admitted
//! afterwards. Runs of one key may carry different maxima (a trigger's and
//! the version's); each claim compares the key's slots with its own run's.
//! Every way a run is created applies them: a manual start, a webhook
//! delivery, a cron tick, a replay, and a resumption (which keeps the
//! original's key and maximum, without a debounce window).
//!
//! The policies act at admission, from the key's unfinished runs as the
//! store holds them: two engines admitting runs of one key at the same
//! instant may both find room, and both queue a run (`skip`), or both
//! keep theirs (`cancel_running`); the claim rule still holds the limit.
//!
//! ```
//! use std::time::Duration;
//! use serde_json::{json, Value};
//! use taskforge_core::{
//!     ConcurrencyLimit, Engine, LimitPolicy, StepContext, StepDefinition, StepError, StepRegistry,
//!     WorkflowDefinition,
//! };
//! use taskforge_store_memory::MemoryStore;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let mut registry = StepRegistry::new();
//! registry.step("deploy", |_ctx: StepContext, input: Value| async move { Ok::<_, StepError>(input) })?;
//! let engine = Engine::builder(MemoryStore::new(), registry).build();
//! let workflow = engine.ensure_workflow("deploy").await?;
//!
//! // One deploy per repository at a time; a second one waits its turn.
//! let definition = WorkflowDefinition::new(vec![StepDefinition::new("deploy", "deploy")])
//!     .concurrency(ConcurrencyLimit::per_key("/repository", 1).policy(LimitPolicy::Queue))
//!     .rate_limit(100, Duration::from_secs(60));
//! engine.publish(workflow.id, definition).await?;
//!
//! let first = engine.start_run(workflow.id, json!({ "repository": "acme/web" })).await?;
//! let limits = first.limits.as_ref().expect("the run carries its limits");
//! assert_eq!(limits.key, format!("{}/\"acme/web\"", workflow.id));
//! assert_eq!(limits.max, Some(1));
//!
//! engine.start();
//! let second = engine.start_run(workflow.id, json!({ "repository": "acme/web" })).await?;
//! engine.wait_for_run(first.id).await?;
//! engine.wait_for_run(second.id).await?;
//! # Ok(())
//! # }
//! ```

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::duration_ms;
use crate::id::WorkflowId;
use crate::workflow::{DefinitionProblem, MAX_DURATION};

/// The longest JSON text of a key's value kept as is in a run's key, in
/// bytes; a longer one is replaced by its SHA-256.
pub const MAX_KEY_VALUE_LEN: usize = 256;

/// The most runs a [`RateLimit`] may allow per period.
pub const MAX_RATE_RUNS: u32 = 10_000;

/// The longest key pointer, in bytes.
pub const MAX_KEY_POINTER_LEN: usize = 256;

/// What admission does with a new run whose key already has `max`
/// unfinished runs (queued or running).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum LimitPolicy {
    /// The run is queued and starts when a slot frees; a key's waiting
    /// runs start in creation order.
    #[default]
    Queue,
    /// No run: the event is recorded with the outcome
    /// [`Limited`](crate::EventOutcome::Limited) naming no run. A manual
    /// start gets [`EngineError::Limited`](crate::EngineError::Limited).
    Skip,
    /// The newest run wins: the key's oldest unfinished runs are cancelled
    /// (a running one stops at its next await point) so that, with the new
    /// run, `max` remain; the new run is queued and starts as soon as their
    /// slots are free.
    CancelRunning,
    /// The runs already there win: the new run is recorded, cancelled at
    /// once without running a step, and the event's outcome is
    /// [`Limited`](crate::EventOutcome::Limited) naming it.
    CancelNewest,
}

impl LimitPolicy {
    /// The policy's name in `snake_case`, as stored.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queue => "queue",
            Self::Skip => "skip",
            Self::CancelRunning => "cancel_running",
            Self::CancelNewest => "cancel_newest",
        }
    }

    fn is_queue(&self) -> bool {
        *self == Self::Queue
    }
}

/// At most `max` runs at once, of the whole workflow or per key; see the
/// [module docs](self) for the rules.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConcurrencyLimit {
    /// The most runs of one key holding a slot at once; at least 1.
    pub max: u32,
    /// A JSON pointer into the run's input naming the key (`/repository`);
    /// `None`: the whole workflow is one key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// What admission does when the key is full.
    #[serde(default, skip_serializing_if = "LimitPolicy::is_queue")]
    pub policy: LimitPolicy,
}

impl ConcurrencyLimit {
    /// At most `max` runs of the workflow at once, queued beyond.
    #[must_use]
    pub fn new(max: u32) -> Self {
        Self {
            max,
            key: None,
            policy: LimitPolicy::Queue,
        }
    }

    /// At most `max` runs at once per value of the input at `pointer` (a
    /// JSON pointer such as `/repository`), queued beyond.
    #[must_use]
    pub fn per_key(pointer: impl Into<String>, max: u32) -> Self {
        Self {
            max,
            key: Some(pointer.into()),
            policy: LimitPolicy::Queue,
        }
    }

    /// With this policy for a new run whose key is full.
    #[must_use]
    pub fn policy(mut self, policy: LimitPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// The key of a run of `workflow_id` with `input` under this limit.
    #[must_use]
    pub fn key_of(&self, workflow_id: WorkflowId, input: &Value) -> String {
        run_key(workflow_id, self.key.as_deref(), input)
    }

    /// The problems of this limit, if any.
    pub(crate) fn check(&self, problems: &mut Vec<DefinitionProblem>) {
        let mut invalid = |reason: String| {
            problems.push(DefinitionProblem::InvalidConcurrencyLimit { reason });
        };
        if self.max == 0 {
            invalid("max must be at least 1".to_owned());
        }
        if let Some(pointer) = &self.key {
            if let Err(reason) = check_pointer(pointer) {
                invalid(format!("key {pointer:?} is not a JSON pointer: {reason}"));
            }
        }
    }
}

/// At most `runs` runs of a workflow start in any window of `per`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    /// The most starts per window, from 1 to [`MAX_RATE_RUNS`].
    pub runs: u32,
    /// The window, in milliseconds in JSON; more than zero, at most
    /// [`MAX_DURATION`].
    #[serde(with = "duration_ms")]
    pub per: Duration,
}

impl RateLimit {
    /// At most `runs` starts in any window of `per`.
    #[must_use]
    pub fn new(runs: u32, per: Duration) -> Self {
        Self { runs, per }
    }

    /// The window as a [`TimeDelta`] (capped at [`MAX_DURATION`]).
    #[must_use]
    pub fn window(&self) -> TimeDelta {
        TimeDelta::from_std(self.per.min(MAX_DURATION)).unwrap_or(TimeDelta::MAX)
    }

    /// The problems of this limit, if any.
    pub(crate) fn check(&self, problems: &mut Vec<DefinitionProblem>) {
        let reason = if self.runs == 0 {
            Some("runs must be at least 1".to_owned())
        } else if self.runs > MAX_RATE_RUNS {
            Some(format!("runs must be at most {MAX_RATE_RUNS}"))
        } else if self.per.is_zero() {
            Some("the period must be longer than zero".to_owned())
        } else if self.per > MAX_DURATION {
            Some(format!(
                "the period is longer than the limit of {} days",
                MAX_DURATION.as_secs() / 86_400
            ))
        } else {
            None
        };
        if let Some(reason) = reason {
            problems.push(DefinitionProblem::InvalidRateLimit { reason });
        }
    }
}

/// The checks of a debounce window.
pub(crate) fn check_debounce(window: Option<Duration>, problems: &mut Vec<DefinitionProblem>) {
    let reason = match window {
        Some(window) if window.is_zero() => "the window must be longer than zero".to_owned(),
        Some(window) if window > MAX_DURATION => format!(
            "the window is longer than the limit of {} days",
            MAX_DURATION.as_secs() / 86_400
        ),
        _ => return,
    };
    problems.push(DefinitionProblem::InvalidDebounce { reason });
}

/// Whether `pointer` is a JSON pointer (RFC 6901): empty, or `/` then
/// reference tokens in which `~` is followed by `0` or `1`.
fn check_pointer(pointer: &str) -> Result<(), String> {
    if pointer.len() > MAX_KEY_POINTER_LEN {
        return Err(format!("longer than {MAX_KEY_POINTER_LEN} bytes"));
    }
    if !pointer.is_empty() && !pointer.starts_with('/') {
        return Err("it must start with '/'".to_owned());
    }
    let mut chars = pointer.chars();
    while let Some(c) = chars.next() {
        if c == '~' && !matches!(chars.next(), Some('0' | '1')) {
            return Err("'~' must be followed by '0' or '1'".to_owned());
        }
    }
    Ok(())
}

/// The key of a run of `workflow_id` with `input`, its limit reading the
/// value at `pointer` (see the [module docs](self)).
#[must_use]
pub fn run_key(workflow_id: WorkflowId, pointer: Option<&str>, input: &Value) -> String {
    // Written straight into one buffer: this runs for every run admitted
    // under a limit.
    let mut key = Vec::with_capacity(64);
    let mut id = [0; uuid::fmt::Hyphenated::LENGTH];
    key.extend_from_slice(
        workflow_id
            .as_uuid()
            .hyphenated()
            .encode_lower(&mut id)
            .as_bytes(),
    );
    if let Some(pointer) = pointer {
        key.push(b'/');
        if let Some(value) = at_pointer(input, pointer) {
            let start = key.len();
            // Writing JSON to a Vec cannot fail.
            let _ = serde_json::to_writer(&mut key, value);
            if key.len() - start > MAX_KEY_VALUE_LEN {
                let digest = hex::encode(Sha256::digest(&key[start..]));
                key.truncate(start);
                key.extend_from_slice(b"#sha256:");
                key.extend_from_slice(digest.as_bytes());
            }
        }
    }
    // UUID text and JSON text are UTF-8.
    String::from_utf8(key).unwrap_or_default()
}

/// The value at JSON pointer `pointer` in `value`, as
/// [`Value::pointer`], without its allocations for pointers with no
/// escapes (the usual case).
fn at_pointer<'a>(value: &'a Value, pointer: &str) -> Option<&'a Value> {
    if pointer.contains('~') {
        return value.pointer(pointer);
    }
    if pointer.is_empty() {
        return Some(value);
    }
    let mut at = value;
    for token in pointer.strip_prefix('/')?.split('/') {
        at = match at {
            Value::Object(map) => map.get(token)?,
            Value::Array(items) => {
                // As RFC 6901: digits, no leading zero (but "0").
                if token.is_empty()
                    || (token.len() > 1 && token.starts_with('0'))
                    || !token.bytes().all(|b| b.is_ascii_digit())
                {
                    return None;
                }
                items.get(token.parse::<usize>().ok()?)?
            }
            _ => return None,
        };
    }
    Some(at)
}

fn is_false(flag: &bool) -> bool {
    !*flag
}

/// The flow control a run was admitted under, copied onto the run (see
/// [`WorkflowRun::limits`](crate::WorkflowRun::limits)) so that a store
/// enforces it when the run is claimed without reading its definition.
/// See the [module docs](self) for the rules and
/// [`store::rules`](crate::store::rules) for how stores apply them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunLimits {
    /// The run's key: `<workflow id>`, or `<workflow id>/<value>` for a
    /// limit with a key pointer.
    pub key: String,
    /// The most runs of `key` holding a slot at once; `None` when only a
    /// debounce window or a rate limit applies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<u32>,
    /// What admission did when the key was full.
    #[serde(default, skip_serializing_if = "LimitPolicy::is_queue")]
    pub policy: LimitPolicy,
    /// Whether the key is debounced: a newer run of the key that is still
    /// waiting supersedes this one while it waits.
    #[serde(default, skip_serializing_if = "is_false")]
    pub debounce: bool,
    /// The run is not started before this time (the end of its debounce
    /// window).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "crate::time_format::serialize_opt"
    )]
    pub not_before: Option<DateTime<Utc>>,
    /// The workflow's rate limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<RateLimit>,
    /// Whether the run holds a slot of its key: set by the claim that gave
    /// it one (see [`rules::claim_with_slot`](crate::store::rules::claim_with_slot)),
    /// kept until it finishes. A run claimed only to be cancelled never
    /// gets one.
    #[serde(default, skip_serializing_if = "is_false")]
    pub holds_slot: bool,
}

impl RunLimits {
    /// The limits of a run of `workflow_id` with `input`, admitted at
    /// `now`: `limit` (a trigger's, or the version's), the version's
    /// `debounce` window and `rate` limit. `None` when none applies.
    #[must_use]
    pub fn new(
        workflow_id: WorkflowId,
        input: &Value,
        limit: Option<&ConcurrencyLimit>,
        debounce: Option<Duration>,
        rate: Option<&RateLimit>,
        now: DateTime<Utc>,
    ) -> Option<Self> {
        if limit.is_none() && debounce.is_none() && rate.is_none() {
            return None;
        }
        let not_before = debounce
            .and_then(|d| TimeDelta::from_std(d.min(MAX_DURATION)).ok())
            .and_then(|d| now.checked_add_signed(d));
        Some(Self {
            key: run_key(workflow_id, limit.and_then(|l| l.key.as_deref()), input),
            max: limit.map(|l| l.max),
            policy: limit.map(|l| l.policy).unwrap_or_default(),
            debounce: debounce.is_some(),
            not_before,
            rate: rate.cloned(),
            holds_slot: false,
        })
    }

    /// The key the run takes part in, if it has a concurrency maximum or a
    /// debounce window (a run with only a rate limit takes part in none).
    #[must_use]
    pub fn slot_key(&self) -> Option<&str> {
        (self.max.is_some() || self.debounce).then_some(self.key.as_str())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn keys_are_injective_and_bounded() {
        let wf = WorkflowId::new();
        let input =
            json!({"s": "1", "n": 1, "o": {"b": 2, "a": 1}, "e": "", "big": "x".repeat(400)});
        let key = |p: &str| run_key(wf, Some(p), &input);
        assert_eq!(key("/s"), format!("{wf}/\"1\""));
        assert_eq!(key("/n"), format!("{wf}/1"));
        assert_eq!(key("/o"), format!("{wf}/{{\"a\":1,\"b\":2}}"));
        assert_eq!(key("/e"), format!("{wf}/\"\""));
        assert_eq!(key("/missing"), format!("{wf}/"));
        assert!(key("/big").starts_with(&format!("{wf}/#sha256:")));
        assert!(key("/big").len() < 128);
        assert_eq!(run_key(wf, None, &input), wf.to_string());
    }

    #[test]
    fn pointers_read_as_serde_json_reads_them() {
        let input = json!({"a": {"b": [10, {"c~d/e": 1}], "": 2}, "0": 3, "x": [1]});
        for pointer in [
            "",
            "/a",
            "/a/b",
            "/a/b/0",
            "/a/b/1",
            "/a/b/01",
            "/a/b/9",
            "/a/b/-",
            "/a/",
            "/0",
            "/x/0",
            "/x/00",
            "/missing",
            "/a/b/1/c~0d~1e",
            "a",
            "/a/b/0/z",
        ] {
            assert_eq!(
                at_pointer(&input, pointer),
                input.pointer(pointer),
                "{pointer:?}"
            );
        }
    }

    #[test]
    fn pointers_are_checked() {
        assert!(check_pointer("").is_ok());
        assert!(check_pointer("/a~0b/~1/c").is_ok());
        assert!(check_pointer("a").is_err());
        assert!(check_pointer("/a~2").is_err());
        assert!(check_pointer("/a~").is_err());
    }

    #[test]
    fn definitions_declare_limits_in_json_and_validation_names_each_problem() {
        use crate::workflow::WorkflowDefinition;

        let json = br#"{
            "steps": [{"key": "deploy", "handler": "deploy"}],
            "concurrency": {"max": 2, "key": "/repo", "policy": "cancel_running"},
            "debounce": 5000,
            "rate_limit": {"runs": 10, "per": 60000}
        }"#;
        let definition = WorkflowDefinition::from_json(json).expect("a valid definition");
        assert_eq!(
            definition.concurrency,
            Some(ConcurrencyLimit::per_key("/repo", 2).policy(LimitPolicy::CancelRunning))
        );
        assert_eq!(definition.debounce, Some(Duration::from_secs(5)));
        assert_eq!(
            definition.rate_limit,
            Some(RateLimit::new(10, Duration::from_secs(60)))
        );
        let back = serde_json::to_value(&definition).expect("serialize");
        assert_eq!(
            back["concurrency"],
            json!({"max": 2, "key": "/repo", "policy": "cancel_running"})
        );

        let bad = WorkflowDefinition::new(vec![crate::StepDefinition::new("a", "a")])
            .concurrency(ConcurrencyLimit::per_key("repo", 0))
            .debounce(Duration::ZERO)
            .rate_limit(0, Duration::from_secs(1));
        let problems = bad.validate().expect_err("invalid").problems;
        let limits: Vec<_> = problems
            .iter()
            .filter(|p| {
                matches!(
                    p,
                    DefinitionProblem::InvalidConcurrencyLimit { .. }
                        | DefinitionProblem::InvalidDebounce { .. }
                        | DefinitionProblem::InvalidRateLimit { .. }
                )
            })
            .collect();
        assert_eq!(
            limits.len(),
            4,
            "max 0, the pointer, the window, the runs: {problems:?}"
        );
        let too_long = WorkflowDefinition::new(vec![crate::StepDefinition::new("a", "a")])
            .rate_limit(MAX_RATE_RUNS + 1, MAX_DURATION + Duration::from_secs(1));
        assert_eq!(too_long.validate().expect_err("invalid").problems.len(), 1);

        // A trigger's limit is checked when the trigger is.
        let kind = crate::TriggerKind::Cron(
            crate::CronConfig::new("0 * * * *", "UTC")
                .with_concurrency(ConcurrencyLimit::per_key("/a~2", 1)),
        );
        assert!(matches!(
            kind.validate(),
            Err(crate::trigger::InvalidTrigger::Concurrency(
                DefinitionProblem::InvalidConcurrencyLimit { .. }
            ))
        ));
    }

    #[test]
    fn the_picker_lists_only_what_a_claim_would_take() {
        use crate::store::rules::{self, ClaimablePicker, SlotState};
        use crate::workflow::{StepDefinition, WorkflowDefinition, WorkflowVersion};
        use crate::WorkflowRun;

        let now = Utc::now();
        let version = WorkflowVersion::new(
            WorkflowId::new(),
            1,
            WorkflowDefinition::new(vec![StepDefinition::new("a", "a")]),
            now,
        );
        let run = |max: u32, rate: Option<RateLimit>| {
            let mut run = WorkflowRun::new(&version, json!({}), now);
            run.limits = Some(std::sync::Arc::new(RunLimits {
                key: "k".into(),
                max: Some(max),
                policy: LimitPolicy::Queue,
                debounce: false,
                not_before: None,
                rate,
                holds_slot: false,
            }));
            run
        };
        // Runs of one key with different maxima (a trigger's and the
        // version's), 2 slots held: each is judged by its own maximum,
        // and counts as ahead of the next.
        let (wide, narrow, wide_again) = (run(5, None), run(1, None), run(4, None));
        let mut picker = ClaimablePicker::new();
        let mut pick = |run: &WorkflowRun| picker.pick(run, now, || false, |_| 2, |_| Vec::new());
        assert!(pick(&wide));
        assert!(!pick(&narrow));
        assert!(!pick(&wide_again), "2 held + 2 ahead of 4");
        let held = SlotState {
            holding: 2,
            ..SlotState::default()
        };
        assert!(rules::check_slot(&wide, now, &held).is_ok());
        assert!(rules::check_slot(
            &narrow,
            now,
            &SlotState {
                ahead: 1,
                ..held.clone()
            }
        )
        .is_err());

        // Rate limits of different sizes: one start recorded in the window.
        let two = Some(RateLimit::new(2, Duration::from_secs(60)));
        let three = Some(RateLimit::new(3, Duration::from_secs(60)));
        let (a, b, c) = (run(10, two.clone()), run(10, two), run(10, three));
        let mut picker = ClaimablePicker::new();
        let mut pick = |run: &WorkflowRun| picker.pick(run, now, || false, |_| 0, |_| vec![now]);
        assert!(pick(&a));
        assert!(!pick(&b), "a took the second start of 2");
        assert!(pick(&c), "3 allow one more");
    }

    #[test]
    fn limits_serialize_compactly() {
        let wf = WorkflowId::new();
        let limits = RunLimits::new(
            wf,
            &json!({}),
            Some(&ConcurrencyLimit::new(2)),
            None,
            None,
            Utc::now(),
        )
        .expect("a limit");
        let text = serde_json::to_value(&limits).expect("serialize");
        assert_eq!(text, json!({"key": wf.to_string(), "max": 2}));
        let back: RunLimits = serde_json::from_value(text).expect("deserialize");
        assert_eq!(back, limits);
        assert_eq!(
            RunLimits::new(wf, &json!({}), None, None, None, Utc::now()),
            None
        );
    }
}
