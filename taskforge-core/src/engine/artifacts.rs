//! Artifacts on the engine: reading a run's artifacts, and retention (the
//! artifacts of runs the store no longer holds are removed).

use super::Engine;
use crate::artifact::{Artifact, ArtifactError, ByteStream};
use crate::error::EngineError;
use crate::id::RunId;
use crate::step::StepExecutor;
use crate::store::Store;

impl<S: Store, X: StepExecutor> Engine<S, X> {
    fn artifact_store(&self) -> Result<&dyn crate::artifact::ArtifactStore, EngineError> {
        self.shared()
            .artifacts
            .as_ref()
            .map(|access| &*access.store)
            .ok_or(EngineError::Artifact(ArtifactError::NoStore))
    }

    /// The artifacts a run's steps stored, by name, with size and SHA-256.
    /// Empty for an engine without an artifact store.
    pub async fn run_artifacts(&self, run_id: RunId) -> Result<Vec<Artifact>, EngineError> {
        match &self.shared().artifacts {
            Some(access) => Ok(access.store.list(run_id).await?),
            None => Ok(Vec::new()),
        }
    }

    /// A run's artifact `name` as a stream, with its record.
    pub async fn open_artifact(
        &self,
        run_id: RunId,
        name: &str,
    ) -> Result<(Artifact, ByteStream), EngineError> {
        Ok(self.artifact_store()?.open(run_id, name).await?)
    }

    /// Retention for artifacts: removes the artifacts of every run the
    /// store no longer holds (a backend's retention removed it), then the
    /// content no artifact refers to. Returns how many artifacts it
    /// removed. Run it after pruning runs, or on a schedule.
    pub async fn sweep_artifacts(&self) -> Result<u64, EngineError> {
        let store = self.artifact_store()?;
        let mut removed = 0;
        for run_id in store.runs().await? {
            match self.store().get_run(run_id).await {
                Ok(_) => {}
                Err(error) if error.is_not_found() => removed += store.delete_run(run_id).await?,
                Err(error) => return Err(error.into()),
            }
        }
        store.collect_garbage().await?;
        Ok(removed)
    }
}
