//! How a step attempt fails: [`StepError`], what every error converts
//! into, and [`ReadError`], why a handler could not read what it was given.

use std::fmt;
use std::time::Duration;

use serde_json::Value;

use crate::run::StepFailure;

/// Why a step attempt failed.
///
/// Every error a Rust program usually returns converts into a *retryable*
/// `StepError` with `?`: anything that converts into a
/// `Box<dyn std::error::Error + Send + Sync>`, so every
/// `std::error::Error + Send + Sync + 'static`, `Box<dyn Error + Send +
/// Sync>` itself, `anyhow::Error` (without this crate depending on
/// `anyhow`), and a `String` or `&str` message. The stored message is the
/// error and its chain of sources, joined by `": "`.
///
/// [`StepError::terminal`] makes one that is never retried. A handler may
/// also hint how long to wait before the next attempt
/// ([`StepError::retry_after`]).
///
/// A handler may return `StepError` itself, or any of those error types
/// (the registry converts it): both of these work.
///
/// ```
/// use std::error::Error;
/// use std::time::Duration;
/// use serde_json::{json, Value};
/// use taskforge_core::{StepContext, StepError, StepExecutor, StepRegistry};
///
/// fn lookup(name: &str) -> Result<u64, Box<dyn Error + Send + Sync>> {
///     match name {
///         "answer" => Ok(42),
///         _ => Err(format!("no value named {name:?}").into()),
///     }
/// }
///
/// let mut registry = StepRegistry::new();
/// registry
///     // `?` on a std error, a boxed error and anyhow::Error, in a handler
///     // returning `StepError`.
///     .step("sum", |_ctx, input: Value| async move {
///         let a: u64 = input["a"].as_str().unwrap_or("").parse()?;
///         let b = lookup(input["b"].as_str().unwrap_or(""))?;
///         let c: u64 = anyhow::Context::context(
///             input["c"].as_str().unwrap_or("").parse::<u64>(),
///             "reading c",
///         )?;
///         if a + b + c > 1_000 {
///             return Err(StepError::terminal("too large; retrying will not help"));
///         }
///         Ok(a + b + c)
///     })?
///     // A handler returning anyhow::Error.
///     .step("fetch", |_ctx, input: Value| async move {
///         let url = input["url"].as_str().ok_or_else(|| anyhow::anyhow!("no url"))?;
///         anyhow::ensure!(url.starts_with("https://"), "{url} is not https");
///         Ok::<_, anyhow::Error>(json!({ "fetched": url }))
///     })?
///     .step("busy", |_ctx, _input: Value| async move {
///         Err::<(), _>(StepError::retryable("rate limited").retry_after(Duration::from_secs(30)))
///     })?;
///
/// let run = |name: &str, input: Value| {
///     futures::executor::block_on(registry.execute(name, StepContext::detached(name, input)))
/// };
/// assert_eq!(run("sum", json!({ "a": "1", "b": "answer", "c": "3" })), Ok(json!(46)));
/// let bad = run("sum", json!({ "a": "1", "b": "answer", "c": "x" })).unwrap_err();
/// assert_eq!(bad.message(), "reading c: invalid digit found in string");
/// assert!(!bad.is_terminal());
/// let missing = run("sum", json!({ "a": "1", "b": "question", "c": "3" })).unwrap_err();
/// assert_eq!(missing.message(), "no value named \"question\"");
/// assert!(run("sum", json!({ "a": "999", "b": "answer", "c": "0" })).unwrap_err().is_terminal());
/// assert_eq!(
///     run("fetch", json!({ "url": "http://x" })).unwrap_err().message(),
///     "http://x is not https"
/// );
/// let busy = run("busy", json!({})).unwrap_err();
/// assert_eq!(busy.retry_after_hint(), Some(Duration::from_secs(30)));
/// # Ok::<(), taskforge_core::error::RegistryError>(())
/// ```
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

/// A retryable failure from any error that converts into a
/// `Box<dyn Error + Send + Sync>`: std errors, boxed errors,
/// `anyhow::Error`, `String` and `&str`.
///
/// A [`ReadError`], and an [`ArtifactError`](crate::artifact::ArtifactError)
/// that another attempt would meet again (an invalid name, a limit, a name
/// another step holds, no artifact store), stay terminal, converted
/// directly or from a `Box<dyn Error + Send + Sync>`, but not through
/// `anyhow::Error`, which hides the type it wraps.
impl<E: Into<Box<dyn std::error::Error + Send + Sync>>> From<E> for StepError {
    fn from(error: E) -> Self {
        let error: Box<dyn std::error::Error + Send + Sync> = error.into();
        // The pinned input, config and outputs read the same on every
        // attempt: retrying cannot help.
        let terminal = error.is::<ReadError>()
            || error
                .downcast_ref::<crate::artifact::ArtifactError>()
                .is_some_and(crate::artifact::ArtifactError::is_permanent);
        // Keep the whole chain: the stored message is all an operator sees.
        let mut message = error.to_string();
        let mut source = error.source();
        while let Some(cause) = source {
            message.push_str(": ");
            message.push_str(&cause.to_string());
            source = cause.source();
        }
        Self {
            terminal,
            ..Self::retryable(message)
        }
    }
}

/// Why a handler could not read the run's input, its config or an earlier
/// step's output ([`input_as`](crate::StepContext::input_as),
/// [`config_as`](crate::StepContext::config_as),
/// [`output_as`](crate::StepContext::output_as) on the step's context).
///
/// It is a `std::error::Error`, so `?` works on it in a handler returning
/// `StepError`, `anyhow::Error` or `Box<dyn Error + Send + Sync>`. Converted
/// into a [`StepError`] directly it is *terminal*, since the pinned input,
/// config and outputs will not change on retry; a handler returning another
/// error type decides for itself (through `anyhow::Error` every failure is
/// retryable).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReadError {
    /// The run's input does not deserialize into the type asked for.
    #[error("invalid input: {error}")]
    Input {
        /// Why.
        error: serde_json::Error,
    },
    /// The step's config does not deserialize into the type asked for.
    #[error("invalid config: {error}")]
    Config {
        /// Why.
        error: serde_json::Error,
    },
    /// No earlier step with this key has an output (no such step, or it
    /// comes later).
    #[error("no output from step {key:?}")]
    MissingOutput {
        /// The step key asked for.
        key: String,
    },
    /// The step's definition does not declare this secret, so it may not
    /// read it.
    #[error("step does not declare the secret {name:?} (StepDefinition::secrets)")]
    UndeclaredSecret {
        /// The secret asked for.
        name: String,
    },
    /// The secret is not UTF-8 text; read it with
    /// [`StepContext::secret_bytes`](crate::StepContext::secret_bytes).
    #[error("the secret {name:?} is not UTF-8 text")]
    SecretNotText {
        /// The secret asked for.
        name: String,
    },
    /// The earlier step's output does not deserialize into the type asked
    /// for.
    #[error("invalid output of step {key:?}: {error}")]
    Output {
        /// The step key asked for.
        key: String,
        /// Why.
        error: serde_json::Error,
    },
}
