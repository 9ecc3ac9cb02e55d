//! Workflows, their immutable versions, and the validation of definitions.

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::duration_ms;
use crate::id::{VersionId, WorkflowId};
use crate::retry::{Backoff, RetryPolicy};

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

/// What a workflow does: its steps, in order, and workflow-wide settings.
///
/// Every field beyond `steps` is optional in JSON, so definitions stored
/// today still parse when later releases add fields (such as DAG
/// dependencies between steps).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkflowDefinition {
    /// The steps, run in this order.
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
}

/// One step of a definition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepDefinition {
    /// Unique in its definition; names the step in history and in
    /// [`StepContext::output`](crate::StepContext::output).
    pub key: String,
    /// The name the step's handler was registered under.
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
        }
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

impl WorkflowDefinition {
    /// A definition with these steps and no workflow-wide settings.
    #[must_use]
    pub fn new(steps: Vec<StepDefinition>) -> Self {
        Self {
            steps,
            retry: None,
            timeout: None,
        }
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
            if let Err(reason) = check_identifier(&step.handler) {
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
        if problems.is_empty() {
            Ok(())
        } else {
            Err(InvalidDefinition { problems })
        }
    }
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

fn check_identifier(s: &str) -> Result<(), String> {
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

    #[test]
    fn names_are_checked() {
        assert!(validate_name("workflow", "deploy-api_v2.1").is_ok());
        assert!(validate_name("workflow", "").is_err());
        assert!(validate_name("workflow", "héllo").is_err());
        assert!(validate_name("workflow", &"a".repeat(MAX_NAME_LEN + 1)).is_err());
    }
}
