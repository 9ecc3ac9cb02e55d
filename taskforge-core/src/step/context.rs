//! [`StepContext`]: everything a handler knows about the attempt it runs.

use std::fmt;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};

use super::log::{AttemptLog, LogLevel};
use super::ReadError;
use crate::artifact::{Artifact, ArtifactBody, ArtifactError, ArtifactLimits, ArtifactStore};
use crate::clock::Clock;
use crate::error::store::StoreError;
use crate::id::{RunId, VersionId, WorkflowId};
use crate::run::idempotency_key;
use crate::secret::SecretValue;

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
    /// The outputs of the step's ancestors that succeeded, in step order.
    pub(crate) outputs: Arc<Vec<(String, Value)>>,
    /// Cancelled when the run is cancelled.
    pub(crate) cancel: CancellationToken,
    /// Receives progress reports.
    pub(crate) progress: Option<Arc<dyn Fn(Value) + Send + Sync>>,
    /// The attempt's log; `None` outside a run.
    pub(crate) log: Option<Arc<AttemptLog>>,
    /// The secrets the step declares, opened.
    pub(crate) secrets: Arc<[(String, SecretValue)]>,
    /// The engine's artifact store, if it has one.
    pub(crate) artifacts: Option<Arc<ArtifactAccess>>,
}

/// What a step reaches artifacts through: the engine's store, its limits,
/// and the clock that stamps them.
pub(crate) struct ArtifactAccess {
    pub(crate) store: Arc<dyn ArtifactStore>,
    pub(crate) limits: ArtifactLimits,
    pub(crate) clock: Arc<dyn Clock>,
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
            log: None,
            secrets: Arc::new([]),
            artifacts: None,
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

    /// The run's input, deserialized: for a handler registered with
    /// [`StepRegistry::step_without_input`](crate::StepRegistry::step_without_input) that reads it after all. A
    /// mismatch is a [`ReadError`], terminal as a `StepError`: the run's
    /// input will not change on retry.
    pub fn input_as<T: DeserializeOwned>(&self) -> Result<T, ReadError> {
        T::deserialize(&*self.inner.input).map_err(|error| ReadError::Input { error })
    }

    /// This step's config from the definition (`null` if none).
    #[must_use]
    pub fn config(&self) -> &Value {
        &self.inner.config
    }

    /// This step's config, deserialized. A mismatch is a [`ReadError`],
    /// terminal as a `StepError`: the pinned definition will not change on
    /// retry.
    pub fn config_as<T: DeserializeOwned>(&self) -> Result<T, ReadError> {
        T::deserialize(&self.inner.config).map_err(|error| ReadError::Config { error })
    }

    /// The output of step `key`, if it succeeded and this step depends on
    /// it, directly or through others (see
    /// [`StepDefinition::depends_on`](crate::StepDefinition::depends_on));
    /// in a definition without dependencies, of any earlier step. A
    /// skipped step has no output.
    #[must_use]
    pub fn output(&self, key: &str) -> Option<&Value> {
        self.inner
            .outputs
            .iter()
            .find_map(|(k, v)| (k == key).then_some(v))
    }

    /// The output of step `key` (as [`output`](Self::output) finds it),
    /// deserialized. A missing or
    /// mismatched output is a [`ReadError`], terminal as a `StepError`.
    ///
    /// ```
    /// # use serde::{Deserialize, Serialize};
    /// # use taskforge_core::{StepError, StepRegistry};
    /// #[derive(Serialize, Deserialize)]
    /// struct Build {
    ///     artifact: String,
    /// }
    ///
    /// let mut registry = StepRegistry::new();
    /// registry
    ///     .step_without_input("build", |_ctx| async {
    ///         Ok::<_, StepError>(Build { artifact: "app-1.4.2.tar.gz".into() })
    ///     })?
    ///     .step_without_input("deploy", |ctx| async move {
    ///         let build: Build = ctx.output_as("build")?;
    ///         Ok::<_, StepError>(format!("deployed {}", build.artifact))
    ///     })?;
    /// # Ok::<(), taskforge_core::error::RegistryError>(())
    /// ```
    pub fn output_as<T: DeserializeOwned>(&self, key: &str) -> Result<T, ReadError> {
        let value = self.output(key).ok_or_else(|| ReadError::MissingOutput {
            key: key.to_owned(),
        })?;
        T::deserialize(value).map_err(|error| ReadError::Output {
            key: key.to_owned(),
            error,
        })
    }

    /// The outputs of the steps this step depends on, directly or through
    /// others, that succeeded, in step order: in a definition without
    /// dependencies, every earlier step's. Not those of other branches of
    /// a DAG, which may or may not have finished when this step started.
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

    /// The secret `name`, as text. The step's definition must declare it
    /// ([`StepDefinition::secrets`](crate::StepDefinition::secrets)); the
    /// engine reads the latest version when the attempt starts.
    ///
    /// Whatever the step leaves behind (its output, error, log lines,
    /// progress) is redacted: the secret's value, in base64 and
    /// percent-encoded too, is replaced by `[redacted:NAME]`.
    ///
    /// ```
    /// use taskforge_core::{StepError, StepRegistry};
    ///
    /// let mut registry = StepRegistry::new();
    /// registry.step_without_input("deploy", |ctx| async move {
    ///     let token = ctx.secret("DEPLOY_TOKEN")?;
    ///     // ... call the deploy API with `token` ...
    ///     # let _ = token;
    ///     Ok::<_, StepError>("deployed")
    /// })?;
    /// # Ok::<(), taskforge_core::error::RegistryError>(())
    /// ```
    ///
    /// # Errors
    /// [`ReadError::UndeclaredSecret`] if the definition does not declare
    /// it, [`ReadError::SecretNotText`] if it is not UTF-8 (see
    /// [`secret_bytes`](Self::secret_bytes)); both terminal as a
    /// `StepError`.
    pub fn secret(&self, name: &str) -> Result<&str, ReadError> {
        self.secret_bytes(name).and_then(|bytes| {
            std::str::from_utf8(bytes).map_err(|_| ReadError::SecretNotText {
                name: name.to_owned(),
            })
        })
    }

    /// The secret `name`, as bytes; see [`secret`](Self::secret).
    ///
    /// # Errors
    /// [`ReadError::UndeclaredSecret`] if the definition does not declare it.
    pub fn secret_bytes(&self, name: &str) -> Result<&[u8], ReadError> {
        self.inner
            .secrets
            .iter()
            .find_map(|(n, value)| (n == name).then(|| value.expose()))
            .ok_or_else(|| ReadError::UndeclaredSecret {
                name: name.to_owned(),
            })
    }

    /// Stores `body` (bytes, a string, or a stream of `Bytes`) as the run's
    /// artifact `name`, content-addressed by its SHA-256, and returns its
    /// record. A later attempt of this step writing the same name replaces
    /// it; another step's name is refused. Refused when over the engine's
    /// limits ([`EngineBuilder::artifact_limits`](crate::EngineBuilder::artifact_limits)),
    /// with nothing stored. Artifacts are not redacted: do not put secrets
    /// in them.
    ///
    /// ```
    /// use taskforge_core::{StepError, StepRegistry};
    ///
    /// let mut registry = StepRegistry::new();
    /// registry
    ///     .step_without_input("build", |ctx| async move {
    ///         let artifact = ctx.put_artifact("app.tar.gz", b"...".to_vec()).await?;
    ///         Ok::<_, StepError>(artifact.sha256)
    ///     })?
    ///     .step_without_input("deploy", |ctx| async move {
    ///         let (_record, bytes) = ctx.artifact("app.tar.gz").await?;
    ///         Ok::<_, StepError>(bytes.len())
    ///     })?;
    /// # Ok::<(), taskforge_core::error::RegistryError>(())
    /// ```
    ///
    /// # Errors
    /// An [`ArtifactError`]; as a `StepError` it is terminal when another
    /// attempt would meet it again ([`ArtifactError::is_permanent`]).
    pub async fn put_artifact(
        &self,
        name: &str,
        body: impl Into<ArtifactBody>,
    ) -> Result<Artifact, ArtifactError> {
        let access = self
            .inner
            .artifacts
            .as_ref()
            .ok_or(ArtifactError::NoStore)?;
        access
            .store
            .put(
                self.inner.run_id,
                &self.inner.step_key,
                name,
                body.into(),
                &access.limits,
                access.clock.now(),
            )
            .await
    }

    /// The run's artifact `name` (stored by this step or an earlier one),
    /// whole, with its record.
    ///
    /// # Errors
    /// [`ArtifactError::NotFound`] if the run has none of that name.
    pub async fn artifact(&self, name: &str) -> Result<(Artifact, bytes::Bytes), ArtifactError> {
        let access = self
            .inner
            .artifacts
            .as_ref()
            .ok_or(ArtifactError::NoStore)?;
        access.store.get(self.inner.run_id, name).await
    }

    /// The run's artifacts so far, by name.
    ///
    /// # Errors
    /// If the artifact store fails.
    pub async fn artifacts(&self) -> Result<Vec<Artifact>, ArtifactError> {
        let access = self
            .inner
            .artifacts
            .as_ref()
            .ok_or(ArtifactError::NoStore)?;
        access.store.list(self.inner.run_id).await
    }

    /// Writes a line to this attempt's log.
    ///
    /// The line is redacted, kept with the attempt (subject to the
    /// engine's caps: [`EngineConfig::max_log_lines`](crate::EngineConfig::max_log_lines)
    /// and [`max_log_bytes`](crate::EngineConfig::max_log_bytes)), and
    /// announced at once to subscribers as
    /// [`RunUpdate::StepLog`](crate::RunUpdate::StepLog). Lines reach the
    /// store in batches: when the attempt ends, every 256 lines, and on
    /// [`flush_logs`](Self::flush_logs). `tracing` events the handler emits
    /// while it runs are written here too, at their level. Outside a run
    /// ([`detached`](Self::detached)) lines are dropped.
    ///
    /// ```
    /// use taskforge_core::{LogLevel, StepError, StepRegistry};
    ///
    /// let mut registry = StepRegistry::new();
    /// registry.step_without_input("deploy", |ctx| async move {
    ///     ctx.log(LogLevel::Info, "uploading 3 files");
    ///     tracing::warn!(host = "eu-1", "slow upload"); // captured too
    ///     Ok::<_, StepError>("deployed")
    /// })?;
    /// # Ok::<(), taskforge_core::error::RegistryError>(())
    /// ```
    pub fn log(&self, level: LogLevel, message: impl AsRef<str>) {
        if let Some(log) = &self.inner.log {
            log.append(level, message.as_ref());
        }
    }

    /// Writes the lines logged so far to the store, so they survive a crash
    /// of this process. The engine flushes at the end of every attempt
    /// anyway; this is for long steps whose progress should be durable.
    pub async fn flush_logs(&self) -> Result<(), StoreError> {
        match &self.inner.log {
            Some(log) => log.flush(false).await,
            None => Ok(()),
        }
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
