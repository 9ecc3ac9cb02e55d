//! Step handlers: the [`StepExecutor`] trait, the closure registry that
//! implements it, and the [`StepContext`] a handler is called with.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::FutureExt;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;
use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};

use crate::id::{RunId, VersionId, WorkflowId};
use crate::run::{idempotency_key, StepFailure};
use crate::workflow::NameError;

/// Why a step attempt failed.
///
/// Any `std::error::Error` converts into a *retryable* `StepError` with `?`;
/// [`StepError::terminal`] makes one that is never retried. A handler may
/// also hint how long to wait before the next attempt.
///
/// `StepError` deliberately does not implement `std::error::Error`, so that
/// the blanket conversion from every error type stays coherent.
#[derive(Debug, Clone, PartialEq)]
pub struct StepError {
    message: String,
    terminal: bool,
    retry_after: Option<Duration>,
    detail: Option<Value>,
}

impl StepError {
    /// A failure that the step's retry policy may retry.
    pub fn retryable(message: impl fmt::Display) -> Self {
        Self {
            message: message.to_string(),
            terminal: false,
            retry_after: None,
            detail: None,
        }
    }

    /// A failure that retrying cannot fix: the step fails at once.
    pub fn terminal(message: impl fmt::Display) -> Self {
        Self {
            terminal: true,
            ..Self::retryable(message)
        }
    }

    /// Asks that the next attempt wait at least `delay`.
    #[must_use]
    pub fn retry_after(mut self, delay: Duration) -> Self {
        self.retry_after = Some(delay);
        self
    }

    /// Attaches structured detail, stored with the failure.
    #[must_use]
    pub fn with_detail(mut self, detail: Value) -> Self {
        self.detail = Some(detail);
        self
    }

    /// What went wrong.
    #[must_use]
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Whether retrying cannot help.
    #[must_use]
    pub fn is_terminal(&self) -> bool {
        self.terminal
    }

    /// The handler's hint for the next attempt's delay.
    #[must_use]
    pub fn retry_after_hint(&self) -> Option<Duration> {
        self.retry_after
    }

    /// The stored form of this failure.
    #[must_use]
    pub fn to_failure(&self) -> StepFailure {
        StepFailure {
            message: self.message.clone(),
            terminal: self.terminal,
            detail: self.detail.clone(),
        }
    }
}

impl fmt::Display for StepError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl<E: std::error::Error + Send + Sync + 'static> From<E> for StepError {
    fn from(error: E) -> Self {
        // Keep the whole chain: the stored message is all an operator sees.
        let mut message = error.to_string();
        let mut source = error.source();
        while let Some(cause) = source {
            message.push_str(": ");
            message.push_str(&cause.to_string());
            source = cause.source();
        }
        Self::retryable(message)
    }
}

/// Everything a handler knows about the step attempt it runs. Owned and
/// cheap to clone.
#[derive(Clone)]
pub struct StepContext {
    inner: Arc<StepContextParts>,
}

/// The parts of a [`StepContext`], filled in by the worker.
#[derive(Clone)]
pub(crate) struct StepContextParts {
    /// The run.
    pub(crate) run_id: RunId,
    /// Its workflow.
    pub(crate) workflow_id: WorkflowId,
    /// Its pinned version.
    pub(crate) version_id: VersionId,
    /// That version's number.
    pub(crate) version: u32,
    /// The step's key.
    pub(crate) step_key: String,
    /// The attempt, from 1.
    pub(crate) attempt: u32,
    /// The run's input.
    pub(crate) input: Arc<Value>,
    /// The step's config.
    pub(crate) config: Value,
    /// Earlier steps' outputs, in step order.
    pub(crate) outputs: Arc<Vec<(String, Value)>>,
    /// Cancelled when the run is cancelled.
    pub(crate) cancel: CancellationToken,
    /// Receives progress reports.
    pub(crate) progress: Option<Arc<dyn Fn(Value) + Send + Sync>>,
}

impl fmt::Debug for StepContextParts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StepContextParts")
            .field("run_id", &self.run_id)
            .field("step_key", &self.step_key)
            .field("attempt", &self.attempt)
            .finish_non_exhaustive()
    }
}

impl StepContext {
    /// A context from its parts.
    #[must_use]
    pub(crate) fn new(parts: StepContextParts) -> Self {
        Self {
            inner: Arc::new(parts),
        }
    }

    /// A context for calling a handler outside any run, with this input:
    /// for tests and benchmarks.
    #[must_use]
    pub fn detached(step_key: &str, input: Value) -> Self {
        Self::new(StepContextParts {
            run_id: RunId::new(),
            workflow_id: WorkflowId::new(),
            version_id: VersionId::new(),
            version: 1,
            step_key: step_key.to_owned(),
            attempt: 1,
            input: Arc::new(input),
            config: Value::Null,
            outputs: Arc::default(),
            cancel: CancellationToken::new(),
            progress: None,
        })
    }

    /// The run.
    #[must_use]
    pub fn run_id(&self) -> RunId {
        self.inner.run_id
    }

    /// The run's workflow.
    #[must_use]
    pub fn workflow_id(&self) -> WorkflowId {
        self.inner.workflow_id
    }

    /// The run's pinned version.
    #[must_use]
    pub fn version_id(&self) -> VersionId {
        self.inner.version_id
    }

    /// That version's number.
    #[must_use]
    pub fn version(&self) -> u32 {
        self.inner.version
    }

    /// This step's key.
    #[must_use]
    pub fn step_key(&self) -> &str {
        &self.inner.step_key
    }

    /// This attempt's number, from 1.
    #[must_use]
    pub fn attempt(&self) -> u32 {
        self.inner.attempt
    }

    /// A key for making side effects idempotent: the same for every attempt
    /// of this step in this run, across retries and restarts.
    #[must_use]
    pub fn idempotency_key(&self) -> String {
        idempotency_key(self.inner.run_id, &self.inner.step_key)
    }

    /// The run's input.
    #[must_use]
    pub fn input(&self) -> &Value {
        &self.inner.input
    }

    /// This step's config from the definition (`null` if none).
    #[must_use]
    pub fn config(&self) -> &Value {
        &self.inner.config
    }

    /// This step's config, deserialized. A mismatch is a terminal error:
    /// the pinned definition will not change on retry.
    pub fn config_as<T: DeserializeOwned>(&self) -> Result<T, StepError> {
        T::deserialize(&self.inner.config)
            .map_err(|e| StepError::terminal(format!("invalid config: {e}")))
    }

    /// The output of the earlier step `key`, if it ran.
    #[must_use]
    pub fn output(&self, key: &str) -> Option<&Value> {
        self.inner
            .outputs
            .iter()
            .find_map(|(k, v)| (k == key).then_some(v))
    }

    /// The output of the earlier step `key`, deserialized. A missing or
    /// mismatched output is a terminal error.
    pub fn output_as<T: DeserializeOwned>(&self, key: &str) -> Result<T, StepError> {
        let value = self
            .output(key)
            .ok_or_else(|| StepError::terminal(format!("no output from step {key:?}")))?;
        T::deserialize(value)
            .map_err(|e| StepError::terminal(format!("invalid output of step {key:?}: {e}")))
    }

    /// Every earlier step's output, in step order.
    #[must_use]
    pub fn outputs(&self) -> &[(String, Value)] {
        &self.inner.outputs
    }

    /// Whether the run has been cancelled.
    #[must_use]
    pub fn is_cancelled(&self) -> bool {
        self.inner.cancel.is_cancelled()
    }

    /// Completes when the run is cancelled. The engine drops the handler's
    /// future soon after anyway; this lets a handler clean up first.
    pub fn cancelled(&self) -> WaitForCancellationFuture<'_> {
        self.inner.cancel.cancelled()
    }

    /// Reports progress; subscribers see it as
    /// [`RunUpdate::StepProgress`](crate::RunUpdate::StepProgress).
    pub fn progress(&self, progress: Value) {
        if let Some(report) = &self.inner.progress {
            report(progress);
        }
    }
}

impl fmt::Debug for StepContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StepContext")
            .field("run_id", &self.inner.run_id)
            .field("version", &self.inner.version)
            .field("step_key", &self.inner.step_key)
            .field("attempt", &self.inner.attempt)
            .finish_non_exhaustive()
    }
}

/// The future a [`StepExecutor`] returns.
pub type StepFuture = BoxFuture<'static, Result<Value, StepError>>;

/// Runs step handlers by name.
///
/// The engine is generic over it; [`StepRegistry`] is the implementation
/// for closures. The trait is object-safe (`Arc<dyn StepExecutor>` works).
pub trait StepExecutor: Send + Sync + 'static {
    /// Whether a handler is registered under `name`. Checked when a
    /// version is published.
    fn has_handler(&self, name: &str) -> bool;

    /// Calls the handler `name` for one attempt. An unknown name is a
    /// terminal error.
    fn execute(&self, name: &str, ctx: StepContext) -> StepFuture;
}

impl<T: StepExecutor + ?Sized> StepExecutor for Arc<T> {
    fn has_handler(&self, name: &str) -> bool {
        (**self).has_handler(name)
    }

    fn execute(&self, name: &str, ctx: StepContext) -> StepFuture {
        (**self).execute(name, ctx)
    }
}

/// A registered handler with its types erased.
trait ErasedHandler: Send + Sync {
    fn call(&self, ctx: StepContext) -> StepFuture;
}

/// A closure handler and the types it takes and returns.
struct Handler<F, I, O, E> {
    f: F,
    _types: PhantomData<fn(I) -> (O, E)>,
}

impl<F, Fut, I, O, E> ErasedHandler for Handler<F, I, O, E>
where
    F: Fn(StepContext, I) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<O, E>> + Send + 'static,
    I: DeserializeOwned + 'static,
    O: Serialize + 'static,
    E: Into<StepError> + 'static,
{
    fn call(&self, ctx: StepContext) -> StepFuture {
        // A run input that does not fit `I` will not fit on retry either.
        let input = match I::deserialize(ctx.input()) {
            Ok(input) => input,
            Err(e) => {
                let error = StepError::terminal(format!("invalid input: {e}"));
                return futures::future::ready(Err(error)).boxed();
            }
        };
        let fut = (self.f)(ctx, input);
        async move {
            let output = fut.await.map_err(Into::into)?;
            serde_json::to_value(output)
                .map_err(|e| StepError::terminal(format!("output does not serialize: {e}")))
        }
        .boxed()
    }
}

/// Why a handler could not be registered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RegistryError {
    /// A handler is registered under this name already.
    #[error("a step handler named {0:?} is registered already")]
    Duplicate(String),
    /// The name is empty, too long or has characters outside `[A-Za-z0-9_.-]`.
    #[error(transparent)]
    InvalidName(#[from] NameError),
}

/// Step handlers registered as closures, by name.
///
/// ```
/// use taskforge_core::{StepError, StepRegistry};
/// use serde_json::{json, Value};
///
/// let mut registry = StepRegistry::new();
/// registry
///     .step("greet", |ctx, input: Value| async move {
///         let name = input["name"].as_str().unwrap_or("world").to_owned();
///         Ok::<_, StepError>(json!({ "greeting": format!("hello, {name}"), "attempt": ctx.attempt() }))
///     })?
///     .step("noop", |_ctx, _input: Value| async { Ok::<_, StepError>(()) })?;
/// assert!(registry.step("noop", |_ctx, _input: Value| async { Ok::<_, StepError>(()) }).is_err());
/// # Ok::<(), taskforge_core::error::RegistryError>(())
/// ```
#[derive(Default)]
pub struct StepRegistry {
    handlers: HashMap<String, Box<dyn ErasedHandler>>,
}

impl StepRegistry {
    /// An empty registry.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers `handler` under `name`: an async closure of the step's
    /// context and the run's input, deserialized into `I`, returning an
    /// output that serializes or an error that converts into [`StepError`].
    pub fn step<F, Fut, I, O, E>(
        &mut self,
        name: &str,
        handler: F,
    ) -> Result<&mut Self, RegistryError>
    where
        F: Fn(StepContext, I) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<O, E>> + Send + 'static,
        I: DeserializeOwned + 'static,
        O: Serialize + 'static,
        E: Into<StepError> + 'static,
    {
        crate::workflow::validate_name("step handler", name)?;
        if self.handlers.contains_key(name) {
            return Err(RegistryError::Duplicate(name.to_owned()));
        }
        self.handlers.insert(
            name.to_owned(),
            Box::new(Handler {
                f: handler,
                _types: PhantomData,
            }),
        );
        Ok(self)
    }

    /// The names registered, sorted.
    #[must_use]
    pub fn names(&self) -> Vec<&str> {
        let mut names: Vec<_> = self.handlers.keys().map(String::as_str).collect();
        names.sort_unstable();
        names
    }
}

impl StepExecutor for StepRegistry {
    fn has_handler(&self, name: &str) -> bool {
        self.handlers.contains_key(name)
    }

    fn execute(&self, name: &str, ctx: StepContext) -> StepFuture {
        match self.handlers.get(name) {
            Some(handler) => handler.call(ctx),
            None => {
                let error = StepError::terminal(format!("no step handler named {name:?}"));
                futures::future::ready(Err(error)).boxed()
            }
        }
    }
}

impl fmt::Debug for StepRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StepRegistry")
            .field("handlers", &self.names())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use serde_json::json;

    #[derive(Deserialize)]
    struct Input {
        n: u64,
    }

    #[tokio::test]
    async fn typed_closures_run_and_errors_convert() {
        let mut registry = StepRegistry::new();
        registry
            .step("double", |_ctx, input: Input| async move {
                Ok::<_, StepError>(input.n * 2)
            })
            .expect("register double")
            .step("parse", |_ctx, _input: Value| async move {
                let n: u64 = "x".parse()?;
                Ok::<_, StepError>(n)
            })
            .expect("register parse");
        let out = registry
            .execute("double", StepContext::detached("d", json!({"n": 21})))
            .await;
        assert_eq!(out, Ok(json!(42)));

        let err = registry
            .execute("parse", StepContext::detached("p", json!({})))
            .await
            .expect_err("parse fails");
        assert!(!err.is_terminal());
        assert!(err.message().contains("invalid digit"), "{err}");

        let err = registry
            .execute("double", StepContext::detached("d", json!({"n": "no"})))
            .await
            .expect_err("bad input");
        assert!(err.is_terminal());

        let err = registry
            .execute("missing", StepContext::detached("m", json!({})))
            .await
            .expect_err("unknown handler");
        assert!(err.is_terminal());
    }

    #[test]
    fn duplicate_and_invalid_names_are_errors() {
        let mut registry = StepRegistry::new();
        let noop = |_ctx: StepContext, _: Value| async { Ok::<_, StepError>(()) };
        assert!(registry.step("a", noop).is_ok());
        assert_eq!(
            registry.step("a", noop).err(),
            Some(RegistryError::Duplicate("a".into()))
        );
        assert!(matches!(
            registry.step("", noop).err(),
            Some(RegistryError::InvalidName { .. })
        ));
    }
}
