//! Step handlers: the [`StepExecutor`] trait, the closure registry that
//! implements it, the [`StepContext`] a handler is called with (in
//! `context`), and the errors a handler returns (in `error`).

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::sync::Arc;

use futures::future::BoxFuture;
use futures::FutureExt;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

use crate::workflow::NameError;

mod capture;
mod context;
mod error;
mod log;
mod redact;

pub(crate) use self::capture::Captured;
pub use self::context::StepContext;
pub(crate) use self::context::{ArtifactAccess, StepContextParts};
pub use self::error::{ReadError, StepError};
pub(crate) use self::log::{AttemptLog, AttemptLogParts, LogSink};
pub use self::log::{
    LogLevel, LogLine, DEFAULT_MAX_LOG_BYTES, DEFAULT_MAX_LOG_LINES, LINE_CUT_MARKER,
    MAX_LOG_LINE_BYTES,
};
pub use self::redact::redaction_marker;
pub(crate) use self::redact::Redactor;

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
        let input = match ctx.input_as::<I>() {
            Ok(input) => input,
            Err(error) => return futures::future::ready(Err(error.into())).boxed(),
        };
        respond((self.f)(ctx, input))
    }
}

/// A closure handler of the context alone.
struct ContextHandler<F, O, E> {
    f: F,
    _types: PhantomData<fn() -> (O, E)>,
}

impl<F, Fut, O, E> ErasedHandler for ContextHandler<F, O, E>
where
    F: Fn(StepContext) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<O, E>> + Send + 'static,
    O: Serialize + 'static,
    E: Into<StepError> + 'static,
{
    fn call(&self, ctx: StepContext) -> StepFuture {
        respond((self.f)(ctx))
    }
}

/// A handler's future, with its error converted and its output serialized.
fn respond<Fut, O, E>(fut: Fut) -> StepFuture
where
    Fut: Future<Output = Result<O, E>> + Send + 'static,
    O: Serialize + 'static,
    E: Into<StepError> + 'static,
{
    async move {
        let output = fut.await.map_err(Into::into)?;
        serde_json::to_value(output)
            .map_err(|e| StepError::terminal(format!("output does not serialize: {e}")))
    }
    .boxed()
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
/// A handler is an async closure of the [`StepContext`] and the run's
/// input, deserialized into the type the closure names (`Value` takes it
/// as it is), or of the context alone with
/// [`step_without_input`](StepRegistry::step_without_input). It returns an
/// output that serializes, and an error that converts into [`StepError`]:
/// `StepError` itself, a std error, `Box<dyn Error + Send + Sync>` or
/// `anyhow::Error` (see [`StepError`]). Earlier steps' outputs are read
/// typed with [`StepContext::output_as`].
///
/// ```
/// use serde::Deserialize;
/// use serde_json::{json, Value};
/// use taskforge_core::{StepContext, StepError, StepExecutor, StepRegistry};
///
/// #[derive(Deserialize)]
/// struct Greet {
///     name: String,
/// }
///
/// let mut registry = StepRegistry::new();
/// registry
///     // The input, typed.
///     .step("greet", |ctx, input: Greet| async move {
///         Ok::<_, StepError>(json!({ "greeting": format!("hello, {}", input.name), "attempt": ctx.attempt() }))
///     })?
///     // The input as JSON.
///     .step("count", |_ctx, input: Value| async move {
///         Ok::<_, StepError>(input.as_object().map_or(0, |o| o.len()))
///     })?
///     // No input at all: any run input fits.
///     .step_without_input("ping", |ctx| async move {
///         Ok::<_, std::io::Error>(format!("pong from {}", ctx.step_key()))
///     })?;
/// assert!(registry.step_without_input("ping", |_ctx| async { Ok::<_, StepError>(()) }).is_err());
///
/// let ctx = StepContext::detached("ping", json!([1, 2, 3]));
/// let pong = futures::executor::block_on(registry.execute("ping", ctx));
/// assert_eq!(pong, Ok(json!("pong from ping")));
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
    /// context and the run's input, deserialized into `I` (a run input that
    /// does not fit fails the step, terminally), returning an output that
    /// serializes or an error that converts into [`StepError`]. A step that
    /// does not read the input can use
    /// [`step_without_input`](StepRegistry::step_without_input) instead of
    /// naming a type.
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
        self.insert(
            name,
            Box::new(Handler {
                f: handler,
                _types: PhantomData,
            }),
        )
    }

    /// Registers `handler` under `name`: an async closure of the step's
    /// context alone, for a step that does not read the run's input. The
    /// input is not deserialized, so every run input fits; the handler can
    /// still read it with [`StepContext::input`] or
    /// [`StepContext::input_as`]. Output and error as for
    /// [`step`](StepRegistry::step).
    pub fn step_without_input<F, Fut, O, E>(
        &mut self,
        name: &str,
        handler: F,
    ) -> Result<&mut Self, RegistryError>
    where
        F: Fn(StepContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<O, E>> + Send + 'static,
        O: Serialize + 'static,
        E: Into<StepError> + 'static,
    {
        self.insert(
            name,
            Box::new(ContextHandler {
                f: handler,
                _types: PhantomData,
            }),
        )
    }

    fn insert(
        &mut self,
        name: &str,
        handler: Box<dyn ErasedHandler>,
    ) -> Result<&mut Self, RegistryError> {
        crate::workflow::validate_name("step handler", name)?;
        if self.handlers.contains_key(name) {
            return Err(RegistryError::Duplicate(name.to_owned()));
        }
        self.handlers.insert(name.to_owned(), handler);
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
