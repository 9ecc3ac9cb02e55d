//! Resuming a run that did not succeed: a new run on the same pinned
//! version that keeps the succeeded steps and goes on from the others.

use std::sync::Arc;

use super::{admit_requested, requester_metadata, Engine};
use crate::error::EngineError;
use crate::id::RunId;
use crate::run::{RunStatus, WorkflowRun};
use crate::step::StepExecutor;
use crate::store::Store;

impl<S: Store, X: StepExecutor> Engine<S, X> {
    /// Resumes a failed, timed-out or cancelled run from the steps that did
    /// not succeed: a new run on the same pinned version, with the same
    /// input, whose history carries the succeeded steps of `id` (their
    /// outputs kept, each naming the attempt it comes from in
    /// [`StepRun::carried_from`](crate::StepRun::carried_from)); the others
    /// run again from a first attempt. The new run names `id` in
    /// [`resumed_from`](WorkflowRun::resumed_from) and keeps its event; the
    /// request is recorded as a manual event of its own (metadata
    /// `resume_of`). The original run is not changed: history stays
    /// immutable. [`EngineError::NotResumable`] for a run that is queued,
    /// running, waiting or succeeded.
    ///
    /// ```
    /// # use std::sync::atomic::{AtomicBool, Ordering};
    /// # use std::sync::Arc;
    /// # use serde_json::{json, Value};
    /// # use taskforge_core::{Engine, RunStatus, StepDefinition, StepError, StepRegistry, WorkflowDefinition};
    /// # use taskforge_store_memory::MemoryStore;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let broken = Arc::new(AtomicBool::new(true));
    /// let mut registry = StepRegistry::new();
    /// let flag = Arc::clone(&broken);
    /// registry
    ///     .step_without_input("build", |_ctx| async { Ok::<_, StepError>(json!("image-7")) })?
    ///     .step_without_input("deploy", move |_ctx| {
    ///         let broken = flag.load(Ordering::SeqCst);
    ///         async move {
    ///             if broken {
    ///                 return Err(StepError::terminal("the cluster is down"));
    ///             }
    ///             Ok(json!("deployed"))
    ///         }
    ///     })?;
    /// let engine = Engine::builder(MemoryStore::new(), registry).build();
    /// engine.start();
    /// let workflow = engine.ensure_workflow("ship").await?;
    /// engine.publish(workflow.id, WorkflowDefinition::new(vec![
    ///     StepDefinition::new("build", "build"),
    ///     StepDefinition::new("deploy", "deploy"),
    /// ])).await?;
    /// let run = engine.start_run(workflow.id, Value::Null).await?;
    /// assert_eq!(engine.wait_for_run(run.id).await?.status, RunStatus::Failed);
    ///
    /// broken.store(false, Ordering::SeqCst); // the cluster is back
    /// let resumed = engine.resume_run(run.id).await?;
    /// assert_eq!(engine.wait_for_run(resumed.id).await?.status, RunStatus::Succeeded);
    /// let steps = engine.run(resumed.id).await?.steps;
    /// assert!(steps[0].carried_from.is_some(), "build is carried, not run again");
    /// assert_eq!(steps[1].attempt, 1);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn resume_run(&self, id: RunId) -> Result<WorkflowRun, EngineError> {
        self.resume_run_as(id, None).await
    }

    /// [`resume_run`](Self::resume_run), recording who asked on the
    /// request's event under `requested_by`.
    pub async fn resume_run_as(
        &self,
        id: RunId,
        requested_by: Option<&str>,
    ) -> Result<WorkflowRun, EngineError> {
        let shared = self.shared();
        let original = self.store().get_run(id).await?;
        if !matches!(
            original.status,
            RunStatus::Failed | RunStatus::TimedOut | RunStatus::Cancelled
        ) {
            return Err(EngineError::NotResumable {
                run: id,
                status: original.status,
            });
        }
        let workflow = self.store().get_workflow(original.workflow_id).await?;
        if !workflow.active {
            return Err(EngineError::WorkflowInactive(workflow.name));
        }
        let version = shared.version_of(&original).await?;
        let mut run = WorkflowRun::new(&version, Arc::clone(&original.input), shared.now());
        run.event_id = original.event_id;
        run.resumed_from = Some(original.id);
        super::limits::carry(&mut run, &original);
        let mut metadata = requester_metadata(requested_by);
        metadata.insert("resume_of".to_owned(), original.id.to_string());
        admit_requested(shared, run, metadata).await
    }
}
