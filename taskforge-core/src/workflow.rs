//! Workflows, their immutable versions, and the validation of definitions.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::concurrency::{ConcurrencyLimit, RateLimit};
use crate::duration_ms;
use crate::id::{VersionId, WorkflowId};
use crate::retry::{Backoff, RetryPolicy};
use crate::trigger::filter::Filter;

/// The largest serialized `config` one step may carry, in bytes.
pub const MAX_STEP_CONFIG_BYTES: usize = 64 * 1024;
/// The most steps one definition may have.
pub const MAX_STEPS: usize = 1_000;
/// The longest step key, workflow or handler name, in bytes.
pub const MAX_NAME_LEN: usize = 128;
/// The longest timeout or retry delay a definition may set: a year and a
/// day. Longer ones are refused at publish time, so every deadline and
/// retry time the engine computes is a real timestamp.
pub const MAX_DURATION: Duration = Duration::from_secs(366 * 24 * 60 * 60);
/// How many steps of one run may run at once when its definition does not
/// say ([`WorkflowDefinition::max_parallel_steps`]).
pub const DEFAULT_MAX_PARALLEL_STEPS: u32 = 8;

/// A named automation: the stable identity that owns versions, triggers and
/// run history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Workflow {
    /// Its id.
    pub id: WorkflowId,
    /// Its name, unique in a store.
    pub name: String,
    /// Whether it takes new runs. Runs in flight finish either way.
    pub active: bool,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it was last changed.
    pub updated_at: DateTime<Utc>,
}

impl Workflow {
    /// A new, active workflow. The name must be 1 to
    /// [`MAX_NAME_LEN`] bytes of `[A-Za-z0-9_.-]`.
    pub fn new(name: impl Into<String>, now: DateTime<Utc>) -> Result<Self, NameError> {
        let name = name.into();
        validate_name("workflow", &name)?;
        Ok(Self {
            id: WorkflowId::new(),
            name,
            active: true,
            created_at: now,
            updated_at: now,
        })
    }
}

/// An immutable, numbered snapshot of a workflow's definition. A run always
/// points at one; publishing a newer one never changes what an older run means.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkflowVersion {
    /// Its id.
    pub id: VersionId,
    /// The workflow it belongs to.
    pub workflow_id: WorkflowId,
    /// 1, 2, 3, ... in publication order.
    pub number: u32,
    /// The definition, frozen.
    pub definition: WorkflowDefinition,
    /// The SHA-256 of the definition's canonical JSON, in hex.
    pub content_hash: String,
    /// When it was published.
    pub created_at: DateTime<Utc>,
}

impl WorkflowVersion {
    /// A version of `workflow_id` numbered `number`, with its content hash.
    #[must_use]
    pub fn new(
        workflow_id: WorkflowId,
        number: u32,
        definition: WorkflowDefinition,
        now: DateTime<Utc>,
    ) -> Self {
        let content_hash = definition.content_hash();
        Self {
            id: VersionId::new(),
            workflow_id,
            number,
            definition,
            content_hash,
            created_at: now,
        }
    }
}

/// What a workflow does: its steps and workflow-wide settings.
///
/// # Order of steps
///
/// When no step declares [`depends_on`](StepDefinition::depends_on), the
/// steps run one after another, in the order listed: each depends on the
/// one before it. Once any step declares `depends_on`, every step's
/// dependencies are exactly what it declares (a step without `depends_on`
/// is then a root, which starts at once), and steps whose dependencies
/// are done run in parallel, at most
/// [`max_parallel_steps`](Self::max_parallel_steps) of one run at a time.
/// See [`StepDefinition::depends_on`] and [`StepDefinition::condition`] for
/// when a step runs or is skipped, and [`output`](Self::output) for the
/// run's output.
///
/// Every field beyond `steps` is optional in JSON, and left out when
/// unset, so definitions stored by earlier releases parse, mean what they
/// meant, and keep their [content hash](Self::content_hash).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkflowDefinition {
    /// The steps: run in this order, unless a step declares
    /// [`depends_on`](StepDefinition::depends_on).
    pub steps: Vec<StepDefinition>,
    /// The retry policy of steps that name none. Without one, a step is tried once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetryPolicy>,
    /// The longest a whole run may take, from its start.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "duration_ms::option"
    )]
    pub timeout: Option<Duration>,
    /// The most steps of one run that may run at once; without it,
    /// [`DEFAULT_MAX_PARALLEL_STEPS`]. At least 1. Steps that are ready
    /// beyond it wait, and start lowest position first as slots free.
    /// (Runs themselves are bounded by
    /// [`EngineConfig::max_concurrent_runs`](crate::EngineConfig::max_concurrent_runs).)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_parallel_steps: Option<u32>,
    /// The key of the step whose output is the run's output. Without it,
    /// the run's output is that of its sink (the step nothing depends on;
    /// in a definition without dependencies, the last step), or, when
    /// there are several sinks, an object of the sinks' outputs by step
    /// key. A skipped step has no output: the run's output is then `null`
    /// for a declared or single sink, and the object leaves a skipped sink
    /// out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
    /// At most this many runs at once, of the whole workflow or per key
    /// (a value of the input); a trigger may override it. See
    /// [`concurrency`](crate::concurrency) for the rules.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<ConcurrencyLimit>,
    /// How long a run waits before it may start, during which a newer run
    /// of the same key supersedes it: only the last event of a burst
    /// starts a run. Per key of [`concurrency`](Self::concurrency) (the
    /// whole workflow without one).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "duration_ms::option"
    )]
    pub debounce: Option<Duration>,
    /// At most this many runs of the workflow start in any window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimit>,
}

/// One step of a definition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepDefinition {
    /// Unique in its definition; names the step in history and in
    /// [`StepContext::output`](crate::StepContext::output).
    pub key: String,
    /// The name the step's handler was registered under; empty (and left
    /// out of JSON) for a [wait step](Self::wait), which has none.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub handler: String,
    /// Handler-specific configuration.
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub config: Value,
    /// Overrides the workflow's retry policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetryPolicy>,
    /// The longest one attempt may take.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "duration_ms::option"
    )]
    pub timeout: Option<Duration>,
    /// The secrets the step may read with
    /// [`StepContext::secret`](crate::StepContext::secret), by name; it can
    /// read no other (least privilege). Each must exist in the engine's
    /// secret store when the version is published.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<String>,
    /// The keys of the steps this one waits for; see
    /// [`depends_on`](Self::depends_on) (the builder) for the rules.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub depends_on: Option<Vec<String>>,
    /// Runs the step only if this holds; see [`condition`](Self::condition)
    /// (the builder) for what it reads and what a false one does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub condition: Option<Filter>,
    /// Makes this a wait step: no handler runs; the step waits for a time,
    /// a signal, or both, without holding a worker (see [`Wait`] and
    /// [`wait_for_signal`](Self::wait_for_signal)).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait: Option<Wait>,
}

impl StepDefinition {
    /// A step `key` run by the handler registered as `handler`.
    #[must_use]
    pub fn new(key: impl Into<String>, handler: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            handler: handler.into(),
            config: Value::Null,
            retry: None,
            timeout: None,
            secrets: Vec::new(),
            depends_on: None,
            condition: None,
            wait: None,
        }
    }

    /// A wait step `key` that waits for `wait` (a time, a signal, or both)
    /// and has no handler. See [`Wait`] for the rules, and
    /// [`sleep`](Self::sleep) and [`wait_for_signal`](Self::wait_for_signal)
    /// for the usual cases.
    #[must_use]
    pub fn wait(key: impl Into<String>, wait: Wait) -> Self {
        let mut step = Self::new(key, "");
        step.wait = Some(wait);
        step
    }

    /// A wait step `key` that waits `duration` from when it starts, then
    /// succeeds with the output `null`. The run is parked meanwhile: it
    /// holds no worker, lease or engine slot, and survives restarts.
    ///
    /// ```
    /// use std::time::Duration;
    /// use taskforge_core::{StepDefinition, WorkflowDefinition};
    ///
    /// let definition = WorkflowDefinition::new(vec![
    ///     StepDefinition::new("remind", "send_reminder"),
    ///     StepDefinition::sleep("cool_down", Duration::from_secs(24 * 60 * 60)),
    ///     StepDefinition::new("remind_again", "send_reminder"),
    /// ]);
    /// assert!(definition.validate().is_ok());
    /// let json = serde_json::to_value(&definition.steps[1]).unwrap();
    /// assert_eq!(json, serde_json::json!({ "key": "cool_down", "wait": { "sleep": 86_400_000 } }));
    /// ```
    #[must_use]
    pub fn sleep(key: impl Into<String>, duration: Duration) -> Self {
        Self::wait(key, Wait::sleep(duration))
    }

    /// A wait step `key` that waits for the signal `signal`, sent to the
    /// run with [`Engine::signal_run`](crate::Engine::signal_run) (or
    /// `POST /api/v1/runs/{id}/signals/{name}`); its output is the
    /// signal's payload, which later steps read with
    /// [`StepContext::output`](crate::StepContext::output). A signal sent
    /// before the run reaches the step is kept and received when it gets
    /// there. With a `timeout` (counted from when the step starts), if no
    /// signal came by then, `on_timeout` decides: [`OnTimeout::Fail`]
    /// fails the step and the run, [`OnTimeout::Continue`] succeeds the
    /// step with the output `null`. While it waits, the run is parked: it
    /// holds no worker, lease or engine slot, survives restarts, and any
    /// engine on the store goes on with it.
    ///
    /// ```
    /// use std::time::Duration;
    /// use serde_json::{json, Value};
    /// use taskforge_core::{
    ///     Engine, OnTimeout, RunStatus, StepContext, StepDefinition, StepError, StepRegistry,
    ///     WorkflowDefinition,
    /// };
    /// use taskforge_store_memory::MemoryStore;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let mut registry = StepRegistry::new();
    /// registry.step("deploy", |ctx: StepContext, _input: Value| async move {
    ///     // The approval's payload is the wait step's output.
    ///     let approver = ctx.output("approval").and_then(|a| a["by"].as_str()).unwrap_or("nobody");
    ///     Ok::<_, StepError>(json!({ "approved_by": approver }))
    /// })?;
    /// let engine = Engine::builder(MemoryStore::new(), registry).build();
    /// engine.start();
    /// let workflow = engine.ensure_workflow("release").await?;
    /// engine
    ///     .publish(workflow.id, WorkflowDefinition::new(vec![
    ///         StepDefinition::wait_for_signal(
    ///             "approval",
    ///             "approved",
    ///             Some(Duration::from_secs(24 * 60 * 60)),
    ///             OnTimeout::Fail,
    ///         ),
    ///         StepDefinition::new("deploy", "deploy"),
    ///     ]))
    ///     .await?;
    ///
    /// let run = engine.start_run(workflow.id, json!({})).await?;
    /// engine.signal_run(run.id, "approved", json!({ "by": "ada" })).await?;
    /// let finished = engine.wait_for_run(run.id).await?;
    /// assert_eq!(finished.status, RunStatus::Succeeded);
    /// assert_eq!(finished.output, Some(json!({ "approved_by": "ada" })));
    /// # Ok(())
    /// # }
    /// ```
    #[must_use]
    pub fn wait_for_signal(
        key: impl Into<String>,
        signal: impl Into<String>,
        timeout: Option<Duration>,
        on_timeout: OnTimeout,
    ) -> Self {
        let mut wait = Wait::signal(signal);
        wait.timeout = timeout;
        wait.on_timeout = on_timeout;
        Self::wait(key, wait)
    }

    /// Whether this is a [wait step](Self::wait), which has no handler.
    #[must_use]
    pub fn is_wait(&self) -> bool {
        self.wait.is_some()
    }

    /// Makes the step wait for the steps `keys`: it starts once every one
    /// of them is finished, receiving their outputs through
    /// [`StepContext::output`](crate::StepContext::output).
    ///
    /// A definition in which no step declares dependencies runs its steps
    /// one after another, in order, as if each depended on the one before.
    /// Once any step declares them, every step's dependencies are exactly
    /// what it declares, and a step that declares none (or an empty list)
    /// is a root, which starts when the run does. Steps whose dependencies
    /// are finished run in parallel, at most
    /// [`WorkflowDefinition::max_parallel_steps`] at once.
    ///
    /// A step runs when all its dependencies are finished (succeeded or
    /// [skipped](Self::condition)) and at least one of them succeeded, and
    /// is skipped when all of them were skipped. When a step fails for good
    /// (its retries exhausted, or a terminal error), the run fails: no new
    /// step starts, and steps still running are cancelled.
    ///
    /// A handler sees the outputs of its step's ancestors (its
    /// dependencies, theirs, and so on) that succeeded, in step order; not
    /// those of other branches, whose timing would make them come and go.
    ///
    /// A fan-out from `checkout` to `test` and `lint`, joined by `report`;
    /// `deploy` runs only for the `main` branch:
    ///
    /// ```
    /// use serde_json::{json, Value};
    /// use taskforge_core::{
    ///     Engine, Filter, StepContext, StepDefinition, StepError, StepRegistry, StepStatus,
    ///     WorkflowDefinition,
    /// };
    /// use taskforge_store_memory::MemoryStore;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let mut registry = StepRegistry::new();
    /// registry
    ///     .step("checkout", |_ctx: StepContext, input: Value| async move {
    ///         Ok::<_, StepError>(json!({ "sha": "4f2a", "ref": input["ref"] }))
    ///     })?
    ///     .step("check", |ctx: StepContext, _input: Value| async move {
    ///         let sha = ctx.output("checkout").and_then(|o| o["sha"].as_str()).unwrap_or_default();
    ///         Ok::<_, StepError>(json!({ "ok": true, "sha": sha }))
    ///     })?
    ///     .step("report", |ctx: StepContext, _input: Value| async move {
    ///         // The outputs of `checkout`, `test` and `lint`, in step order.
    ///         let seen: Vec<&str> = ctx.outputs().iter().map(|(key, _)| key.as_str()).collect();
    ///         Ok::<_, StepError>(json!({ "ok": ctx.output("test").is_some(), "seen": seen }))
    ///     })?
    ///     .step("deploy", |_ctx: StepContext, _input: Value| async move {
    ///         Ok::<_, StepError>(json!("deployed"))
    ///     })?;
    /// let engine = Engine::builder(MemoryStore::new(), registry).build();
    /// engine.start();
    ///
    /// let definition = WorkflowDefinition::new(vec![
    ///     StepDefinition::new("checkout", "checkout"),
    ///     StepDefinition::new("test", "check").depends_on(["checkout"]),
    ///     StepDefinition::new("lint", "check").depends_on(["checkout"]),
    ///     StepDefinition::new("report", "report").depends_on(["test", "lint"]),
    ///     StepDefinition::new("deploy", "deploy")
    ///         .depends_on(["report"])
    ///         .condition(Filter::equals("/input/ref", "main")),
    /// ])
    /// .max_parallel_steps(4)
    /// .output("report");
    /// let workflow = engine.ensure_workflow("ci").await?;
    /// engine.publish(workflow.id, definition).await?;
    ///
    /// let run = engine.start_run(workflow.id, json!({ "ref": "feature-x" })).await?;
    /// let finished = engine.wait_for_run(run.id).await?;
    /// assert_eq!(
    ///     finished.output,
    ///     Some(json!({ "ok": true, "seen": ["checkout", "test", "lint"] }))
    /// );
    /// let steps = engine.run(run.id).await?.steps;
    /// let deploy = steps.iter().find(|s| s.step_key == "deploy").unwrap();
    /// assert_eq!(deploy.status, StepStatus::Skipped);
    /// # Ok(())
    /// # }
    /// ```
    #[must_use]
    pub fn depends_on<I, K>(mut self, keys: I) -> Self
    where
        I: IntoIterator<Item = K>,
        K: Into<String>,
    {
        self.depends_on = Some(keys.into_iter().map(Into::into).collect());
        self
    }

    /// Runs the step only if `condition` holds when its dependencies are
    /// finished; otherwise the step is recorded as
    /// [`Skipped`](crate::StepStatus::Skipped), its handler never called.
    ///
    /// The condition is a payload [`Filter`] (the language of webhook
    /// triggers), read over the JSON document
    /// `{"input": <the run's input>, "steps": {<key>: <output>, ...}}`:
    /// `/input/ref` is the input's `ref`, `/steps/build/ok` the `ok` of the
    /// output of step `build`. Its pointer must start with `/input` or
    /// `/steps/<key>`, where `key` is an ancestor of this step (a step it
    /// depends on, directly or through others; in a definition without
    /// dependencies, any earlier step), so that the value is settled when
    /// the condition is read. A skipped step has no output: a pointer into
    /// it finds nothing, so `exists`, `equals` and the others do not hold.
    ///
    /// **What follows a skipped step.** A step runs when all its
    /// dependencies are finished and at least one of them succeeded (or it
    /// has none); it is skipped, as its condition is not even read, when
    /// all of its dependencies were skipped. So a skip flows down a branch
    /// until it reaches a step that also depends on a step that ran: a
    /// join after an `if` runs whichever way the `if` went. In a
    /// definition without dependencies, a skipped step skips every step
    /// after it.
    #[must_use]
    pub fn condition(mut self, condition: Filter) -> Self {
        self.condition = Some(condition);
        self
    }

    /// Lets the step read these secrets (and only these).
    #[must_use]
    pub fn secrets<I, N>(mut self, names: I) -> Self
    where
        I: IntoIterator<Item = N>,
        N: Into<String>,
    {
        self.secrets = names.into_iter().map(Into::into).collect();
        self
    }

    /// With this configuration.
    #[must_use]
    pub fn config(mut self, config: Value) -> Self {
        self.config = config;
        self
    }

    /// With this retry policy.
    #[must_use]
    pub fn retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = Some(retry);
        self
    }

    /// With this per-attempt timeout.
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }
}

/// What a [wait step](StepDefinition::wait) waits for: a time
/// ([`sleep`](Self::sleep)), a signal ([`signal`](Self::signal)), or both.
///
/// - **Sleep.** The step waits `sleep` from when it starts.
/// - **Signal.** The step waits for a signal of this name sent to the run
///   ([`Engine::signal_run`](crate::Engine::signal_run)); its output is the
///   signal's payload. Signals are kept with the run in the order they
///   arrive, and each is received by one wait step at most: a wait step
///   receives the oldest signal of its name that no other wait step
///   received, also one sent before the step (or the run) started.
/// - **Timeout.** With a signal, `timeout` (counted from when the step
///   starts) bounds the wait: a signal received after it does not count
///   for this step, and when it passes without one, `on_timeout` decides
///   ([`OnTimeout`]). Without a timeout the step waits for its signal for
///   as long as the run lives (its [run timeout](WorkflowDefinition::timeout)
///   still applies, as does cancellation).
/// - **Both.** With a sleep and a signal, the step ends once the sleep has
///   passed and the signal has come (whichever is later).
///
/// A wait step takes part in the DAG like any step (dependencies,
/// conditions); it has no handler, retry policy, attempt timeout or
/// secrets, and does not count against
/// [`max_parallel_steps`](WorkflowDefinition::max_parallel_steps). While a
/// run has only waits left (nothing running, no retry due), its worker
/// parks it ([`RunStatus::Waiting`](crate::RunStatus::Waiting)): it holds
/// no worker, lease or engine slot until it is due again, and any engine
/// on the store goes on with it, from its stored history. (It keeps the
/// slot of its [concurrency key](crate::concurrency), if it holds one: a
/// key's limit counts its runs in progress, waiting ones included.)
///
/// In JSON: `{"sleep": 60000}` or `{"signal": "approved", "timeout":
/// 3600000, "on_timeout": "continue"}` (durations in milliseconds), as the
/// `wait` of a step that has no `handler`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Wait {
    /// How long the step waits from its start.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "duration_ms::option"
    )]
    pub sleep: Option<Duration>,
    /// The name of the signal it waits for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<String>,
    /// How long it waits for the signal, from its start.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "duration_ms::option"
    )]
    pub timeout: Option<Duration>,
    /// What happens when the timeout passes without the signal.
    #[serde(default, skip_serializing_if = "OnTimeout::is_fail")]
    pub on_timeout: OnTimeout,
}

impl Wait {
    /// Waits `duration`.
    #[must_use]
    pub fn sleep(duration: Duration) -> Self {
        Self {
            sleep: Some(duration),
            signal: None,
            timeout: None,
            on_timeout: OnTimeout::Fail,
        }
    }

    /// Waits for the signal `name`, with no timeout.
    #[must_use]
    pub fn signal(name: impl Into<String>) -> Self {
        Self {
            sleep: None,
            signal: Some(name.into()),
            timeout: None,
            on_timeout: OnTimeout::Fail,
        }
    }

    /// Gives up on the signal after `timeout`, as `on_timeout` says.
    #[must_use]
    pub fn timeout(mut self, timeout: Duration, on_timeout: OnTimeout) -> Self {
        self.timeout = Some(timeout);
        self.on_timeout = on_timeout;
        self
    }

    /// Also waits at least `duration` from the step's start.
    #[must_use]
    pub fn at_least(mut self, duration: Duration) -> Self {
        self.sleep = Some(duration);
        self
    }

    /// The checks of a wait step `key` (`step` is the whole step).
    fn check(&self, step: &StepDefinition, problems: &mut Vec<DefinitionProblem>) {
        let key = step.key.as_str();
        let mut invalid = |reason: String| {
            problems.push(DefinitionProblem::InvalidWait {
                step: key.to_owned(),
                reason,
            });
        };
        if !step.handler.is_empty() {
            invalid(format!(
                "a wait step has no handler, but it names {:?}: remove `handler` or `wait`",
                step.handler
            ));
        }
        if self.sleep.is_none() && self.signal.is_none() {
            invalid("it waits for nothing: give it a `sleep`, a `signal`, or both".into());
        }
        if self.sleep == Some(Duration::ZERO) {
            invalid("a sleep of 0 ms waits for nothing".into());
        }
        if let Some(name) = &self.signal {
            if let Err(reason) = check_identifier(name) {
                invalid(format!("its signal name {name:?} is invalid: {reason}"));
            }
        }
        match (&self.signal, self.timeout) {
            (None, Some(_)) => {
                invalid("a timeout bounds the wait for a signal, and it waits for none".into())
            }
            (_, Some(Duration::ZERO)) => {
                invalid("a timeout of 0 ms gives the signal no time".into())
            }
            (_, None) if self.on_timeout != OnTimeout::Fail => {
                invalid("on_timeout needs a timeout".into());
            }
            _ => {}
        }
        if step.retry.is_some() {
            invalid("a wait step has no handler to retry: remove `retry`".into());
        }
        if step.timeout.is_some() {
            invalid("a wait step's time limit is `wait.timeout`, not the step's `timeout`".into());
        }
        if !step.secrets.is_empty() {
            invalid("a wait step has no handler to read secrets: remove `secrets`".into());
        }
        check_duration(Some(key), "sleep", self.sleep, problems);
        check_duration(Some(key), "signal timeout", self.timeout, problems);
    }
}

/// What a [wait step](Wait) for a signal does when its timeout passes
/// without the signal.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum OnTimeout {
    /// The step fails for good (no retry), and so does the run (the
    /// default).
    #[default]
    Fail,
    /// The step succeeds with the output `null`, and the run goes on.
    Continue,
}

impl OnTimeout {
    fn is_fail(&self) -> bool {
        *self == Self::Fail
    }
}

impl WorkflowDefinition {
    /// A definition with these steps and no workflow-wide settings.
    #[must_use]
    pub fn new(steps: Vec<StepDefinition>) -> Self {
        Self {
            steps,
            retry: None,
            timeout: None,
            max_parallel_steps: None,
            output: None,
            concurrency: None,
            debounce: None,
            rate_limit: None,
        }
    }

    /// With this concurrency limit ([`ConcurrencyLimit::new`] for the whole
    /// workflow, [`ConcurrencyLimit::per_key`] per value of the input).
    #[must_use]
    pub fn concurrency(mut self, limit: ConcurrencyLimit) -> Self {
        self.concurrency = Some(limit);
        self
    }

    /// With this debounce window, per key of the concurrency limit.
    #[must_use]
    pub fn debounce(mut self, window: Duration) -> Self {
        self.debounce = Some(window);
        self
    }

    /// At most `runs` runs of the workflow start in any window of `per`.
    #[must_use]
    pub fn rate_limit(mut self, runs: u32, per: Duration) -> Self {
        self.rate_limit = Some(RateLimit::new(runs, per));
        self
    }

    /// At most `n` steps of one run at once (at least 1; validation refuses 0).
    #[must_use]
    pub fn max_parallel_steps(mut self, n: u32) -> Self {
        self.max_parallel_steps = Some(n);
        self
    }

    /// The output of step `key` is the run's output.
    #[must_use]
    pub fn output(mut self, key: impl Into<String>) -> Self {
        self.output = Some(key.into());
        self
    }

    /// Whether any step declares [`depends_on`](StepDefinition::depends_on).
    /// Without, the steps run one after another, in order.
    #[must_use]
    pub fn declares_dependencies(&self) -> bool {
        self.steps.iter().any(|step| step.depends_on.is_some())
    }

    /// The most steps of one run that may run at once: the definition's
    /// [`max_parallel_steps`](Self::max_parallel_steps), or
    /// [`DEFAULT_MAX_PARALLEL_STEPS`].
    #[must_use]
    pub fn parallel_limit(&self) -> u32 {
        self.max_parallel_steps
            .unwrap_or(DEFAULT_MAX_PARALLEL_STEPS)
            .max(1)
    }

    /// The positions of the steps that step `index` depends on, directly:
    /// the step before it when the definition
    /// [declares no dependencies](Self::declares_dependencies), else the
    /// steps its `depends_on` names (unknown keys, repeats and itself
    /// left out), in the order named.
    #[must_use]
    pub fn dependencies(&self, index: usize) -> Vec<usize> {
        dependency_graph(self)
            .into_iter()
            .nth(index)
            .unwrap_or_default()
    }

    /// The positions of the steps that step `index` depends on, directly
    /// or through others, in step order.
    #[must_use]
    pub fn ancestors(&self, index: usize) -> Vec<usize> {
        let graph = dependency_graph(self);
        let seen = ancestors(&graph, index);
        (0..seen.len()).filter(|&i| seen[i]).collect()
    }

    /// With this default retry policy.
    #[must_use]
    pub fn retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = Some(retry);
        self
    }

    /// With this run timeout.
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Parses a definition from JSON, then validates it.
    pub fn from_json(json: &[u8]) -> Result<Self, InvalidDefinition> {
        let definition: Self = serde_json::from_slice(json).map_err(|e| InvalidDefinition {
            problems: vec![DefinitionProblem::Malformed(e.to_string())],
        })?;
        definition.validate()?;
        Ok(definition)
    }

    /// The retry policy that applies to `step`.
    #[must_use]
    pub fn retry_policy<'a>(&'a self, step: &'a StepDefinition) -> Option<&'a RetryPolicy> {
        step.retry.as_ref().or(self.retry.as_ref())
    }

    /// The SHA-256 of this definition's canonical JSON, in hex. Equal
    /// definitions hash equal: object keys in `config` are sorted.
    #[must_use]
    pub fn content_hash(&self) -> String {
        // Struct fields serialize in declaration order and `Value` objects
        // are sorted maps, so this serialization is canonical.
        let bytes = serde_json::to_vec(self).unwrap_or_default();
        hex::encode(Sha256::digest(bytes))
    }

    /// Checks the definition on its own, reporting every problem found.
    pub fn validate(&self) -> Result<(), InvalidDefinition> {
        self.validate_with(|_| true)
    }

    /// Checks the definition and that every handler it names exists, as
    /// `has_handler` says. Reports every problem found.
    pub fn validate_with(
        &self,
        has_handler: impl Fn(&str) -> bool,
    ) -> Result<(), InvalidDefinition> {
        let mut problems = Vec::new();
        if self.steps.is_empty() {
            problems.push(DefinitionProblem::NoSteps);
        }
        if self.steps.len() > MAX_STEPS {
            problems.push(DefinitionProblem::TooManySteps {
                count: self.steps.len(),
                limit: MAX_STEPS,
            });
        }
        if let Some(policy) = &self.retry {
            check_policy(None, policy, &mut problems);
        }
        if self.timeout == Some(Duration::ZERO) {
            problems.push(DefinitionProblem::ZeroTimeout { step: None });
        }
        check_duration(None, "timeout", self.timeout, &mut problems);
        let mut seen: HashMap<&str, usize> = HashMap::new();
        for (index, step) in self.steps.iter().enumerate() {
            if let Err(reason) = check_identifier(&step.key) {
                problems.push(DefinitionProblem::InvalidStepKey {
                    index,
                    key: step.key.clone(),
                    reason,
                });
            } else if let Some(&first) = seen.get(step.key.as_str()) {
                problems.push(DefinitionProblem::DuplicateStepKey {
                    key: step.key.clone(),
                    first,
                    second: index,
                });
            } else {
                seen.insert(&step.key, index);
            }
            if let Some(wait) = &step.wait {
                wait.check(step, &mut problems);
            } else if step.handler.is_empty() {
                problems.push(DefinitionProblem::MissingHandler {
                    step: step.key.clone(),
                });
            } else if let Err(reason) = check_identifier(&step.handler) {
                problems.push(DefinitionProblem::InvalidHandlerName {
                    step: step.key.clone(),
                    handler: step.handler.clone(),
                    reason,
                });
            } else if !has_handler(&step.handler) {
                problems.push(DefinitionProblem::UnknownHandler {
                    step: step.key.clone(),
                    handler: step.handler.clone(),
                });
            }
            let size = serde_json::to_vec(&step.config).map_or(usize::MAX, |v| v.len());
            if size > MAX_STEP_CONFIG_BYTES {
                problems.push(DefinitionProblem::ConfigTooLarge {
                    step: step.key.clone(),
                    bytes: size,
                    limit: MAX_STEP_CONFIG_BYTES,
                });
            }
            if let Some(policy) = &step.retry {
                check_policy(Some(&step.key), policy, &mut problems);
            }
            if step.timeout == Some(Duration::ZERO) {
                problems.push(DefinitionProblem::ZeroTimeout {
                    step: Some(step.key.clone()),
                });
            }
            check_duration(Some(&step.key), "timeout", step.timeout, &mut problems);
            check_secret_names(step, &mut problems);
        }
        self.check_graph(&seen, &mut problems);
        if let Some(limit) = &self.concurrency {
            limit.check(&mut problems);
        }
        crate::concurrency::check_debounce(self.debounce, &mut problems);
        if let Some(rate) = &self.rate_limit {
            rate.check(&mut problems);
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(InvalidDefinition { problems })
        }
    }
}

impl WorkflowDefinition {
    /// The checks of dependencies, conditions, the output and the parallel
    /// limit, after the steps' own: `positions` holds each valid key's
    /// first position.
    fn check_graph(&self, positions: &HashMap<&str, usize>, problems: &mut Vec<DefinitionProblem>) {
        for step in &self.steps {
            let declared = step.depends_on.as_deref().unwrap_or_default();
            for (i, dependency) in declared.iter().enumerate() {
                let problem = if *dependency == step.key {
                    DefinitionProblem::SelfDependency {
                        step: step.key.clone(),
                    }
                } else if declared[..i].contains(dependency) {
                    DefinitionProblem::DuplicateDependency {
                        step: step.key.clone(),
                        dependency: dependency.clone(),
                    }
                } else if !positions.contains_key(dependency.as_str()) {
                    DefinitionProblem::UnknownDependency {
                        step: step.key.clone(),
                        dependency: dependency.clone(),
                    }
                } else {
                    continue;
                };
                problems.push(problem);
            }
        }
        let graph = dependency_graph(self);
        for cycle in cycles(&graph) {
            problems.push(DefinitionProblem::DependencyCycle {
                steps: cycle.iter().map(|&i| self.steps[i].key.clone()).collect(),
            });
        }
        for (index, step) in self.steps.iter().enumerate() {
            let Some(condition) = &step.condition else {
                continue;
            };
            let invalid = |reason: String| DefinitionProblem::InvalidCondition {
                step: step.key.clone(),
                reason,
            };
            if let Err(reason) = condition.validate() {
                problems.push(invalid(reason));
                continue;
            }
            match condition_source(&condition.pointer) {
                None => problems.push(invalid(format!(
                    "its pointer {:?} must be /input, /steps/<key>, or start with one of them \
                     and a '/'",
                    crate::trigger::request::excerpt(&condition.pointer)
                ))),
                Some((ConditionSource::Input, _)) => {}
                Some((ConditionSource::Step(key), _)) => {
                    let upstream = positions
                        .get(key)
                        .is_some_and(|&at| at != index && ancestors(&graph, index)[at]);
                    if !upstream {
                        problems.push(DefinitionProblem::ConditionNotUpstream {
                            step: step.key.clone(),
                            referenced: key.to_owned(),
                        });
                    }
                }
            }
        }
        if let Some(key) = &self.output {
            if !positions.contains_key(key.as_str()) {
                problems.push(DefinitionProblem::UnknownOutputStep { key: key.clone() });
            }
        }
        if self.max_parallel_steps == Some(0) {
            problems.push(DefinitionProblem::ZeroMaxParallelSteps);
        }
    }
}

/// Each step's direct dependencies, by position: the step before it in a
/// definition that declares none, else what its `depends_on` names that
/// exists (its first position), without repeats or itself.
pub(crate) fn dependency_graph(definition: &WorkflowDefinition) -> Vec<Vec<usize>> {
    let steps = &definition.steps;
    if !definition.declares_dependencies() {
        return (0..steps.len())
            .map(|i| if i == 0 { Vec::new() } else { vec![i - 1] })
            .collect();
    }
    let mut positions: HashMap<&str, usize> = HashMap::with_capacity(steps.len());
    for (i, step) in steps.iter().enumerate() {
        positions.entry(step.key.as_str()).or_insert(i);
    }
    steps
        .iter()
        .enumerate()
        .map(|(i, step)| {
            let mut dependencies = Vec::new();
            for key in step.depends_on.iter().flatten() {
                if let Some(&at) = positions.get(key.as_str()) {
                    if at != i && !dependencies.contains(&at) {
                        dependencies.push(at);
                    }
                }
            }
            dependencies
        })
        .collect()
}

/// Which steps `index` depends on, directly or not, in `graph` (each
/// step's direct dependencies), as a flag per position. A step in a cycle
/// is among its own ancestors.
pub(crate) fn ancestors(graph: &[Vec<usize>], index: usize) -> Vec<bool> {
    let mut seen = vec![false; graph.len()];
    let mut stack: Vec<usize> = graph.get(index).cloned().unwrap_or_default();
    while let Some(at) = stack.pop() {
        if !std::mem::replace(&mut seen[at], true) {
            stack.extend(&graph[at]);
        }
    }
    seen
}

/// One cycle per group of steps that depend on each other (a strongly
/// connected component of more than one step), as positions in
/// depends-on order starting from the group's first step: each depends on
/// the next, and the last on the first. Groups in order of their first
/// step.
fn cycles(graph: &[Vec<usize>]) -> Vec<Vec<usize>> {
    let mut components = strongly_connected(graph);
    components.retain(|c| c.len() > 1);
    for component in &mut components {
        component.sort_unstable();
    }
    components.sort_unstable();
    components
        .iter()
        .map(|component| {
            let mut member = vec![false; graph.len()];
            for &at in component {
                member[at] = true;
            }
            shortest_cycle(graph, component[0], &member)
        })
        .collect()
}

/// Tarjan's strongly connected components, without recursion (a
/// definition may hold a thousand steps in a chain).
fn strongly_connected(graph: &[Vec<usize>]) -> Vec<Vec<usize>> {
    const UNSEEN: usize = usize::MAX;
    let n = graph.len();
    let (mut order, mut low) = (vec![UNSEEN; n], vec![0; n]);
    let mut on_stack = vec![false; n];
    let (mut stack, mut components, mut next) = (Vec::new(), Vec::new(), 0);
    for root in 0..n {
        if order[root] != UNSEEN {
            continue;
        }
        order[root] = next;
        low[root] = next;
        next += 1;
        stack.push(root);
        on_stack[root] = true;
        let mut calls: Vec<(usize, usize)> = vec![(root, 0)];
        while let Some(top) = calls.last_mut() {
            let (v, edge) = *top;
            if let Some(&w) = graph[v].get(edge) {
                top.1 += 1;
                if order[w] == UNSEEN {
                    order[w] = next;
                    low[w] = next;
                    next += 1;
                    stack.push(w);
                    on_stack[w] = true;
                    calls.push((w, 0));
                } else if on_stack[w] {
                    low[v] = low[v].min(order[w]);
                }
                continue;
            }
            calls.pop();
            if let Some(&(parent, _)) = calls.last() {
                low[parent] = low[parent].min(low[v]);
            }
            if low[v] == order[v] {
                let mut component = Vec::new();
                while let Some(w) = stack.pop() {
                    on_stack[w] = false;
                    component.push(w);
                    if w == v {
                        break;
                    }
                }
                components.push(component);
            }
        }
    }
    components
}

/// The shortest cycle from `start` back to it through the steps marked in
/// `member`, following dependencies: `start` first, each step depending
/// on the next.
fn shortest_cycle(graph: &[Vec<usize>], start: usize, member: &[bool]) -> Vec<usize> {
    let mut previous = vec![usize::MAX; graph.len()];
    let mut queue = VecDeque::from([start]);
    while let Some(v) = queue.pop_front() {
        for &w in &graph[v] {
            if !member[w] {
                continue;
            }
            if w == start {
                let mut path = vec![v];
                let mut at = v;
                while at != start {
                    at = previous[at];
                    path.push(at);
                }
                path.reverse();
                return path;
            }
            if previous[w] == usize::MAX && w != start {
                previous[w] = v;
                queue.push_back(w);
            }
        }
    }
    // A strongly connected group of two or more always has such a cycle.
    vec![start]
}

/// What a condition's pointer reads: the run's input, or a step's output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ConditionSource<'a> {
    /// The run's input.
    Input,
    /// The output of the step with this key.
    Step(&'a str),
}

/// Where a condition's pointer reads (`/input...` or `/steps/<key>...`),
/// and the rest of the pointer, to follow inside that value; `None` for
/// any other pointer.
pub(crate) fn condition_source(pointer: &str) -> Option<(ConditionSource<'_>, &str)> {
    if let Some(rest) = pointer.strip_prefix("/input") {
        return (rest.is_empty() || rest.starts_with('/'))
            .then_some((ConditionSource::Input, rest));
    }
    let rest = pointer.strip_prefix("/steps/")?;
    let (key, rest) = rest.find('/').map_or((rest, ""), |at| rest.split_at(at));
    (!key.is_empty()).then_some((ConditionSource::Step(key), rest))
}

fn check_duration(
    step: Option<&str>,
    what: &str,
    duration: Option<Duration>,
    problems: &mut Vec<DefinitionProblem>,
) {
    if duration.is_some_and(|d| d > MAX_DURATION) {
        problems.push(DefinitionProblem::DurationTooLong {
            step: step.map(str::to_owned),
            what: what.to_owned(),
            limit: MAX_DURATION,
        });
    }
}

fn check_policy(step: Option<&str>, policy: &RetryPolicy, problems: &mut Vec<DefinitionProblem>) {
    match policy.backoff {
        Backoff::Fixed { delay } => check_duration(step, "retry delay", Some(delay), problems),
        Backoff::Exponential { initial, max, .. } => {
            check_duration(step, "initial retry delay", Some(initial), problems);
            check_duration(step, "maximum retry delay", Some(max), problems);
        }
    }
    let reason = if policy.max_attempts == 0 {
        Some("max_attempts must be at least 1")
    } else {
        match &policy.backoff {
            Backoff::Exponential { factor: 0, .. } => Some("backoff factor must be at least 1"),
            Backoff::Exponential { jitter_percent, .. } if *jitter_percent > 100 => {
                Some("jitter_percent must be at most 100")
            }
            Backoff::Exponential { initial, max, .. } if initial > max => {
                Some("initial backoff must not exceed max")
            }
            _ => None,
        }
    };
    if let Some(reason) = reason {
        problems.push(DefinitionProblem::InvalidRetryPolicy {
            step: step.map(str::to_owned),
            reason: reason.to_owned(),
        });
    }
}

/// One thing wrong with a definition.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DefinitionProblem {
    /// The JSON does not parse into a definition.
    #[error("malformed definition: {0}")]
    Malformed(String),
    /// There are no steps.
    #[error("the definition has no steps")]
    NoSteps,
    /// There are more steps than [`MAX_STEPS`].
    #[error("{count} steps, more than the limit of {limit}")]
    TooManySteps {
        /// How many there are.
        count: usize,
        /// The limit.
        limit: usize,
    },
    /// A step key is empty, too long or has characters outside `[A-Za-z0-9_.-]`.
    #[error("step {index} has an invalid key {key:?}: {reason}")]
    InvalidStepKey {
        /// The step's position.
        index: usize,
        /// The key.
        key: String,
        /// What is wrong.
        reason: String,
    },
    /// Two steps share a key.
    #[error("steps {first} and {second} share the key {key:?}")]
    DuplicateStepKey {
        /// The key.
        key: String,
        /// The first step's position.
        first: usize,
        /// The second step's position.
        second: usize,
    },
    /// A handler name is empty, too long or has characters outside `[A-Za-z0-9_.-]`.
    #[error("step {step:?} names an invalid handler {handler:?}: {reason}")]
    InvalidHandlerName {
        /// The step's key.
        step: String,
        /// The handler name.
        handler: String,
        /// What is wrong.
        reason: String,
    },
    /// A step has neither a handler nor a [`wait`](StepDefinition::wait).
    #[error("step {step:?} has no handler: name one, or make it a wait step with `wait`")]
    MissingHandler {
        /// The step's key.
        step: String,
    },
    /// A [wait step](StepDefinition::wait) is unusable: it waits for
    /// nothing, names a handler, an invalid signal, a timeout without a
    /// signal, or carries settings only a handler has (`retry`, `timeout`,
    /// `secrets`).
    #[error("step {step:?} is an invalid wait step: {reason}")]
    InvalidWait {
        /// The step's key.
        step: String,
        /// What is wrong.
        reason: String,
    },
    /// No handler is registered under this name.
    #[error("step {step:?} names the unknown handler {handler:?}")]
    UnknownHandler {
        /// The step's key.
        step: String,
        /// The handler name.
        handler: String,
    },
    /// A step declares a secret name that is not a valid one, twice, or
    /// more than [`MAX_STEP_SECRETS`] secrets.
    #[error("step {step:?} declares the secret {name:?}, which {reason}")]
    InvalidSecret {
        /// The step's key.
        step: String,
        /// The secret's name.
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// A step declares a secret the engine's secret store does not hold
    /// (checked at publish time).
    #[error("step {step:?} declares the secret {name:?}, which does not exist")]
    UnknownSecret {
        /// The step's key.
        step: String,
        /// The secret's name.
        name: String,
    },
    /// A step declares secrets, but the engine has no master key to read
    /// them with ([`EngineBuilder::master_key`](crate::EngineBuilder::master_key)).
    #[error("step {step:?} declares secrets, but the engine has no master key")]
    NoMasterKey {
        /// The step's key.
        step: String,
    },
    /// A step's config is larger than [`MAX_STEP_CONFIG_BYTES`].
    #[error("step {step:?} has a config of {bytes} bytes, more than the limit of {limit}")]
    ConfigTooLarge {
        /// The step's key.
        step: String,
        /// Its serialized size.
        bytes: usize,
        /// The limit.
        limit: usize,
    },
    /// A retry policy is unusable.
    #[error("invalid retry policy{}: {reason}", step_suffix(.step))]
    InvalidRetryPolicy {
        /// The step's key, or `None` for the workflow default.
        step: Option<String>,
        /// What is wrong.
        reason: String,
    },
    /// A timeout of zero would fail every attempt.
    #[error("zero timeout{}", step_suffix(.step))]
    ZeroTimeout {
        /// The step's key, or `None` for the run timeout.
        step: Option<String>,
    },
    /// A step depends on a step the definition does not have.
    #[error("step {step:?} depends on {dependency:?}, which is no step of this definition")]
    UnknownDependency {
        /// The step's key.
        step: String,
        /// The key it names.
        dependency: String,
    },
    /// A step depends on itself.
    #[error("step {step:?} depends on itself")]
    SelfDependency {
        /// The step's key.
        step: String,
    },
    /// A step names the same dependency twice.
    #[error("step {step:?} names the dependency {dependency:?} twice")]
    DuplicateDependency {
        /// The step's key.
        step: String,
        /// The key named twice.
        dependency: String,
    },
    /// Steps depend on each other in a cycle, so none of them could ever
    /// start. One cycle is named per group of steps caught in cycles.
    #[error(
        "steps depend on each other in a cycle: {} -> {} (each depends on the next)",
        .steps.join(" -> "),
        .steps.first().map_or("", String::as_str)
    )]
    DependencyCycle {
        /// The steps of the cycle, from the group's first step in the
        /// definition: each depends on the next, the last on the first.
        steps: Vec<String>,
    },
    /// A step's condition is malformed: its pointer reads neither the
    /// input nor a step's output, or its filter is invalid.
    #[error("step {step:?} has an invalid condition: {reason}")]
    InvalidCondition {
        /// The step's key.
        step: String,
        /// What is wrong.
        reason: String,
    },
    /// A step's condition reads the output of a step that is not one of
    /// its ancestors (the steps it depends on, directly or through
    /// others), or of no step at all: that output can never be settled,
    /// or could be missing, when the condition is read.
    #[error(
        "step {step:?} has a condition on the output of {referenced:?}, which is not a step \
         it depends on (directly or through others), so that output is unreachable from it"
    )]
    ConditionNotUpstream {
        /// The step's key.
        step: String,
        /// The key its condition names.
        referenced: String,
    },
    /// The definition's [`output`](WorkflowDefinition::output) names a step
    /// it does not have.
    #[error("the run's output is the output of {key:?}, which is no step of this definition")]
    UnknownOutputStep {
        /// The key named.
        key: String,
    },
    /// [`max_parallel_steps`](WorkflowDefinition::max_parallel_steps) is
    /// zero: no step could ever start.
    #[error("max_parallel_steps is 0; no step could start")]
    ZeroMaxParallelSteps,
    /// The [concurrency limit](WorkflowDefinition::concurrency) (or a
    /// trigger's) is unusable: a max of 0, or a key that is no JSON
    /// pointer.
    #[error("invalid concurrency limit: {reason}")]
    InvalidConcurrencyLimit {
        /// What is wrong.
        reason: String,
    },
    /// The [debounce window](WorkflowDefinition::debounce) is zero or
    /// longer than [`MAX_DURATION`].
    #[error("invalid debounce window: {reason}")]
    InvalidDebounce {
        /// What is wrong.
        reason: String,
    },
    /// The [rate limit](WorkflowDefinition::rate_limit) is unusable: no
    /// runs, too many, or a period of zero or longer than [`MAX_DURATION`].
    #[error("invalid rate limit: {reason}")]
    InvalidRateLimit {
        /// What is wrong.
        reason: String,
    },
    /// A timeout or retry delay is longer than [`MAX_DURATION`].
    #[error("{what}{} is longer than the limit of {} days", step_suffix(.step), .limit.as_secs() / 86_400)]
    DurationTooLong {
        /// The step's key, or `None` for the workflow's own settings.
        step: Option<String>,
        /// Which duration (`timeout`, `retry delay`, ...).
        what: String,
        /// The limit.
        limit: Duration,
    },
}

fn step_suffix(step: &Option<String>) -> String {
    step.as_ref()
        .map_or_else(String::new, |key| format!(" on step {key:?}"))
}

/// A name (of a workflow, a step handler) was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {kind} name {name:?}: {reason}")]
pub struct NameError {
    /// What the name was for (`workflow`, `step handler`).
    pub kind: &'static str,
    /// The name given.
    pub name: String,
    /// What is wrong.
    pub reason: String,
}

/// The most secrets one step may declare.
pub const MAX_STEP_SECRETS: usize = 32;

/// Checks the secret names a step declares.
fn check_secret_names(step: &StepDefinition, problems: &mut Vec<DefinitionProblem>) {
    let problem = |name: &str, reason: String| DefinitionProblem::InvalidSecret {
        step: step.key.clone(),
        name: name.to_owned(),
        reason,
    };
    if step.secrets.len() > MAX_STEP_SECRETS {
        problems.push(problem(
            &step.secrets[MAX_STEP_SECRETS],
            format!("is one more than the limit of {MAX_STEP_SECRETS} per step"),
        ));
    }
    for (i, name) in step.secrets.iter().enumerate() {
        if let Err(error) = crate::secret::validate_secret_name(name) {
            problems.push(problem(name, format!("is invalid: {}", error.reason)));
        } else if step.secrets[..i].contains(name) {
            problems.push(problem(name, "is declared twice".to_owned()));
        }
    }
}

/// Checks a name: 1 to [`MAX_NAME_LEN`] bytes of `[A-Za-z0-9_.-]`.
pub(crate) fn validate_name(kind: &'static str, name: &str) -> Result<(), NameError> {
    check_identifier(name).map_err(|reason| NameError {
        kind,
        name: name.to_owned(),
        reason,
    })
}

pub(crate) fn check_identifier(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err("must not be empty".into());
    }
    if s.len() > MAX_NAME_LEN {
        return Err(format!("longer than {MAX_NAME_LEN} bytes"));
    }
    if let Some(c) = s
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')))
    {
        return Err(format!("character {c:?} is not one of [A-Za-z0-9_.-]"));
    }
    Ok(())
}

impl fmt::Display for WorkflowVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "v{}", self.number)
    }
}

/// A workflow definition was rejected; every problem found is listed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid workflow definition: {}", join(.problems))]
pub struct InvalidDefinition {
    /// Every problem found, in definition order.
    pub problems: Vec<DefinitionProblem>,
}

fn join(problems: &[DefinitionProblem]) -> String {
    problems
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn step(key: &str) -> StepDefinition {
        StepDefinition::new(key, "noop")
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let definition = WorkflowDefinition::new(vec![
            step("build"),
            step("build"),
            step(""),
            StepDefinition::new("deploy", "no such handler!"),
            step("big").config(json!("x".repeat(MAX_STEP_CONFIG_BYTES))),
            step("never").retry(RetryPolicy::fixed(0, Duration::ZERO)),
        ]);
        let err = definition.validate().err().map(|e| e.problems);
        let problems = err.unwrap_or_default();
        assert_eq!(problems.len(), 5, "{problems:?}");
        assert!(matches!(
            &problems[0],
            DefinitionProblem::DuplicateStepKey { key, first: 0, second: 1 } if key == "build"
        ));
        assert!(matches!(
            &problems[1],
            DefinitionProblem::InvalidStepKey { index: 2, .. }
        ));
        assert!(matches!(
            &problems[2],
            DefinitionProblem::InvalidHandlerName { .. }
        ));
        assert!(matches!(
            &problems[3],
            DefinitionProblem::ConfigTooLarge { .. }
        ));
        assert!(matches!(
            &problems[4],
            DefinitionProblem::InvalidRetryPolicy { .. }
        ));
    }

    #[test]
    fn unknown_handlers_are_found_against_a_registry() {
        let definition = WorkflowDefinition::new(vec![step("a"), StepDefinition::new("b", "x")]);
        let err = definition.validate_with(|h| h == "noop").err();
        assert_eq!(
            err.map(|e| e.problems),
            Some(vec![DefinitionProblem::UnknownHandler {
                step: "b".into(),
                handler: "x".into()
            }])
        );
    }

    #[test]
    fn empty_and_malformed_definitions_are_rejected() {
        let empty = WorkflowDefinition::from_json(br#"{"steps": []}"#).err();
        assert_eq!(
            empty.map(|e| e.problems),
            Some(vec![DefinitionProblem::NoSteps])
        );
        let malformed = WorkflowDefinition::from_json(b"{\"steps\": [{\"key\": 1}]}").err();
        assert!(matches!(
            malformed.map(|e| e.problems).as_deref(),
            Some([DefinitionProblem::Malformed(_)])
        ));
    }

    #[test]
    fn json_round_trip_keeps_the_hash() {
        let definition = WorkflowDefinition::new(vec![step("a")
            .config(json!({"b": 1, "a": [true]}))
            .timeout(Duration::from_secs(3))])
        .retry(RetryPolicy::exponential(
            3,
            Duration::from_millis(10),
            Duration::from_secs(1),
        ));
        let json = serde_json::to_vec(&definition).unwrap_or_default();
        let parsed = WorkflowDefinition::from_json(&json).ok();
        assert_eq!(parsed.as_ref(), Some(&definition));
        assert_eq!(
            parsed.map(|p| p.content_hash()),
            Some(definition.content_hash())
        );
    }

    fn problems(definition: &WorkflowDefinition) -> Vec<DefinitionProblem> {
        definition
            .validate()
            .err()
            .map(|e| e.problems)
            .unwrap_or_default()
    }

    #[test]
    fn every_graph_problem_is_reported_at_once() {
        let definition = WorkflowDefinition::new(vec![
            step("a").depends_on(["c"]),
            step("b").depends_on(["a", "a", "ghost"]),
            step("c").depends_on(["b"]),
            step("d").depends_on(["d"]),
            step("e")
                .depends_on(["a"])
                .condition(Filter::equals("/steps/d/ok", true)),
            step("f").condition(Filter::exists("/payload/x")),
            step("g").condition(Filter::glob("/input/ref", "*".repeat(2_000))),
        ])
        .max_parallel_steps(0)
        .output("nowhere");
        let problems = problems(&definition);
        let messages: Vec<String> = problems.iter().map(ToString::to_string).collect();
        assert_eq!(problems.len(), 9, "{messages:#?}");
        assert_eq!(
            problems[..3],
            [
                DefinitionProblem::DuplicateDependency {
                    step: "b".into(),
                    dependency: "a".into()
                },
                DefinitionProblem::UnknownDependency {
                    step: "b".into(),
                    dependency: "ghost".into()
                },
                DefinitionProblem::SelfDependency { step: "d".into() },
            ]
        );
        assert_eq!(
            problems[3],
            DefinitionProblem::DependencyCycle {
                steps: vec!["a".into(), "c".into(), "b".into()]
            }
        );
        assert_eq!(
            messages[3],
            "steps depend on each other in a cycle: a -> c -> b -> a (each depends on the next)"
        );
        assert_eq!(
            problems[4],
            DefinitionProblem::ConditionNotUpstream {
                step: "e".into(),
                referenced: "d".into()
            }
        );
        assert!(
            matches!(&problems[5], DefinitionProblem::InvalidCondition { step, .. } if step == "f")
        );
        assert!(
            matches!(&problems[6], DefinitionProblem::InvalidCondition { step, .. } if step == "g")
        );
        assert_eq!(
            problems[7..],
            [
                DefinitionProblem::UnknownOutputStep {
                    key: "nowhere".into()
                },
                DefinitionProblem::ZeroMaxParallelSteps,
            ]
        );
    }

    #[test]
    fn conditions_read_the_input_and_ancestors_only() {
        // Without dependencies, every earlier step is an ancestor.
        let linear = WorkflowDefinition::new(vec![
            step("a"),
            step("b").condition(Filter::equals("/steps/a", 1)),
            step("c").condition(Filter::exists("/input")),
            step("d").condition(Filter::exists("/steps/d/x")),
            step("e").condition(Filter::exists("/steps/f")),
            step("f"),
        ]);
        assert_eq!(
            problems(&linear),
            [
                DefinitionProblem::ConditionNotUpstream {
                    step: "d".into(),
                    referenced: "d".into()
                },
                DefinitionProblem::ConditionNotUpstream {
                    step: "e".into(),
                    referenced: "f".into()
                },
            ]
        );
        // In a DAG, through a dependency of a dependency, and not a sibling.
        let dag = WorkflowDefinition::new(vec![
            step("a").depends_on(Vec::<String>::new()),
            step("b").depends_on(["a"]),
            step("c").depends_on(["a"]),
            step("d")
                .depends_on(["b"])
                .condition(Filter::exists("/steps/a/x")),
            step("e")
                .depends_on(["b"])
                .condition(Filter::exists("/steps/c/x")),
        ]);
        assert_eq!(
            problems(&dag),
            [DefinitionProblem::ConditionNotUpstream {
                step: "e".into(),
                referenced: "c".into()
            }]
        );
        for pointer in ["/inputs", "/steps/", "/steps", "", "/"] {
            let definition =
                WorkflowDefinition::new(vec![step("a").condition(Filter::exists(pointer))]);
            assert!(
                matches!(
                    problems(&definition)[..],
                    [DefinitionProblem::InvalidCondition { .. }]
                ),
                "{pointer:?}"
            );
        }
    }

    #[test]
    fn two_cycles_are_named_apart_and_dependencies_resolve() {
        let definition = WorkflowDefinition::new(vec![
            step("a").depends_on(["b"]),
            step("b").depends_on(["a"]),
            step("c").depends_on(["a", "e"]),
            step("d").depends_on(["c"]),
            step("e").depends_on(["d"]),
        ]);
        assert_eq!(
            problems(&definition),
            [
                DefinitionProblem::DependencyCycle {
                    steps: vec!["a".into(), "b".into()]
                },
                DefinitionProblem::DependencyCycle {
                    steps: vec!["c".into(), "e".into(), "d".into()]
                },
            ]
        );
        assert_eq!(definition.dependencies(2), [0, 4]);
        assert_eq!(definition.ancestors(3), [0, 1, 2, 3, 4]);
        let linear = WorkflowDefinition::new(vec![step("a"), step("b"), step("c")]);
        assert_eq!(linear.dependencies(0), Vec::<usize>::new());
        assert_eq!(linear.dependencies(2), [1]);
        assert_eq!(linear.ancestors(2), [0, 1]);
    }

    #[test]
    fn a_thousand_steps_in_a_chain_validate_without_recursion() {
        let steps: Vec<StepDefinition> = (0..MAX_STEPS)
            .map(|i| {
                let s = step(&format!("s{i}"));
                if i == 0 {
                    s.depends_on([format!("s{}", MAX_STEPS - 1)])
                } else {
                    s.depends_on([format!("s{}", i - 1)])
                }
            })
            .collect();
        let definition = WorkflowDefinition::new(steps);
        match &problems(&definition)[..] {
            [DefinitionProblem::DependencyCycle { steps }] => assert_eq!(steps.len(), MAX_STEPS),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn new_fields_are_left_out_of_the_json_when_unset() {
        let definition = WorkflowDefinition::new(vec![step("a")]);
        assert_eq!(
            serde_json::to_value(&definition).ok(),
            Some(json!({"steps": [{"key": "a", "handler": "noop"}]}))
        );
        let full = WorkflowDefinition::new(vec![
            step("a"),
            step("b")
                .depends_on(["a"])
                .condition(Filter::equals("/input/ref", "main")),
        ])
        .max_parallel_steps(2)
        .output("b");
        let json = serde_json::to_vec(&full).unwrap_or_default();
        assert_eq!(WorkflowDefinition::from_json(&json).ok(), Some(full));
    }

    #[test]
    fn names_are_checked() {
        assert!(validate_name("workflow", "deploy-api_v2.1").is_ok());
        assert!(validate_name("workflow", "").is_err());
        assert!(validate_name("workflow", "héllo").is_err());
        assert!(validate_name("workflow", &"a".repeat(MAX_NAME_LEN + 1)).is_err());
    }
}
