//! Secrets on the engine: the master key, the API to keep secrets, the
//! publish-time check of the secrets a definition declares, and opening a
//! step's secrets for an attempt.

use std::sync::Arc;

use super::shared::Shared;
use super::{Engine, EngineBuilder};
use crate::error::{EngineError, StoreError};
use crate::secret::{Keyring, SecretSummary, SecretValue, SecretVault};
use crate::step::{StepError, StepExecutor};
use crate::store::Store;
use crate::workflow::{DefinitionProblem, WorkflowDefinition};

impl<S: Store + Clone, X: StepExecutor> EngineBuilder<S, X> {
    /// Seals secrets with this master key (and opens those sealed with the
    /// keyring's older keys, until [`Engine::rotate_master_key`] has moved
    /// them). Without one, the engine keeps no secrets and refuses
    /// definitions that declare any. Call [`Engine::check_secrets`] at
    /// start-up to learn at once that a wrong key was given.
    ///
    /// ```
    /// use taskforge_core::secret::MasterKey;
    /// use taskforge_core::{Engine, StepRegistry};
    /// use taskforge_store_memory::MemoryStore;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// // In production: MasterKey::from_env("TASKFORGE_MASTER_KEY")? or from_file.
    /// let key = MasterKey::generate();
    /// let engine = Engine::builder(MemoryStore::new(), StepRegistry::new())
    ///     .master_key(key)
    ///     .build();
    /// engine.check_secrets().await?;
    /// engine.put_secret("DEPLOY_TOKEN", "tok-8c1f0e").await?;
    /// assert_eq!(engine.secrets().await?[0].name, "DEPLOY_TOKEN");
    /// # Ok(())
    /// # }
    /// ```
    pub fn master_key(mut self, keyring: impl Into<Keyring>) -> Self {
        self.vault = Some(SecretVault::new(self.store.clone(), keyring.into()));
        self
    }
}

impl<S: Store, X: StepExecutor> Engine<S, X> {
    fn vault(&self) -> Result<&SecretVault<S>, EngineError> {
        self.shared().vault.as_ref().ok_or(EngineError::NoMasterKey)
    }

    /// Checks that the master key opens the secrets the store holds: a
    /// wrong key is [`SecretError::UnknownKey`](crate::secret::SecretError::UnknownKey)
    /// here, not garbage later. Without a master key there is nothing to
    /// check.
    ///
    /// With a master key, it then seals into the secret store any webhook
    /// credential a stored trigger still holds in plaintext (written by an
    /// earlier release, or by an engine without a key): after it, no store
    /// holds a credential in plaintext.
    pub async fn check_secrets(&self) -> Result<(), EngineError> {
        match &self.shared().vault {
            Some(vault) => {
                vault.check().await?;
                let sealed = super::credentials::seal_stored(self.shared()).await?;
                if sealed > 0 {
                    tracing::info!(
                        triggers = sealed,
                        "sealed plaintext webhook credentials into the secret store"
                    );
                }
                Ok(())
            }
            None => Ok(()),
        }
    }

    /// Stores `value` as the next version of the secret `name` (version 1
    /// for a new name), sealed with the master key; returns the version.
    /// Attempts that start from now on read it.
    pub async fn put_secret(
        &self,
        name: &str,
        value: impl AsRef<[u8]>,
    ) -> Result<u32, EngineError> {
        Ok(self.vault()?.put(name, value, self.shared().now()).await?)
    }

    /// Every secret, by name: versions and dates, never values.
    pub async fn secrets(&self) -> Result<Vec<SecretSummary>, EngineError> {
        Ok(self.vault()?.list().await?)
    }

    /// Removes every version of the secret `name`. Versions published
    /// since that declare it will fail their attempts until it is put
    /// again.
    pub async fn delete_secret(&self, name: &str) -> Result<(), EngineError> {
        Ok(self.vault()?.delete(name).await?)
    }

    /// Re-seals every secret sealed with an older key of the keyring with
    /// the current one, returning how many versions it moved. Old keys
    /// open what they sealed until this is done; drop them from the
    /// keyring only after.
    pub async fn rotate_master_key(&self) -> Result<usize, EngineError> {
        Ok(self.vault()?.rotate_master_key().await?)
    }
}

/// The problems of `definition`'s declared secrets against the store: one
/// per secret that does not exist, or one per step that declares any when
/// there is no master key.
pub(super) async fn secret_problems<S: Store, X>(
    shared: &Shared<S, X>,
    definition: &WorkflowDefinition,
) -> Result<Vec<DefinitionProblem>, StoreError> {
    let mut problems = Vec::new();
    for step in definition.steps.iter().filter(|s| !s.secrets.is_empty()) {
        if shared.vault.is_none() {
            problems.push(DefinitionProblem::NoMasterKey {
                step: step.key.clone(),
            });
            continue;
        }
        for name in &step.secrets {
            if crate::secret::validate_secret_name(name).is_ok()
                && shared.store.get_secret(name, None).await?.is_none()
            {
                problems.push(DefinitionProblem::UnknownSecret {
                    step: step.key.clone(),
                    name: name.clone(),
                });
            }
        }
    }
    Ok(problems)
}

/// Opens the latest version of each secret in `names`, for one attempt. A
/// secret that is gone, or that does not open, fails the attempt: terminal,
/// since retrying will not bring it back.
pub(super) async fn open_step_secrets<S: Store, X>(
    shared: &Shared<S, X>,
    names: &[String],
) -> Result<Arc<[(String, SecretValue)]>, StepError> {
    if names.is_empty() {
        return Ok(Arc::new([]));
    }
    let Some(vault) = &shared.vault else {
        return Err(StepError::terminal(
            "the step declares secrets, but the engine has no master key",
        ));
    };
    let mut opened = Vec::with_capacity(names.len());
    for name in names {
        match vault.get(name).await {
            Ok(value) => opened.push((name.clone(), value)),
            Err(error) if error.is_not_found() => {
                return Err(StepError::terminal(format!(
                    "the secret {name:?} the step declares does not exist"
                )))
            }
            // A store failure may pass; a key problem will not.
            Err(crate::secret::SecretError::Store(error)) => {
                return Err(StepError::retryable(format!(
                    "could not read the secret {name:?}: {error}"
                )))
            }
            Err(error) => {
                return Err(StepError::terminal(format!(
                    "could not open the secret {name:?}: {error}"
                )))
            }
        }
    }
    Ok(opened.into())
}
