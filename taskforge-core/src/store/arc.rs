//! The store traits for shared pointers: `Arc<T>` is a store whenever `T`
//! is, `Arc<dyn Store>` included, so a host can pick its backend at run
//! time.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::{
    EventInsert, EventQuery, EventStore, Fence, Page, RunQuery, RunStore, SecretStore, StoreError,
    WorkSignal, WorkflowStore,
};
use crate::event::Event;
use crate::id::{EventId, RunId, TriggerId, VersionId, WorkflowId};
use crate::run::{Signal, StepRun, WorkflowRun};
use crate::secret::SealedSecret;
use crate::token::{ApiToken, TokenDigest, TokenId, TokenStore};
use crate::trigger::Trigger;
use crate::workflow::{Workflow, WorkflowVersion};

#[async_trait]
impl<T: WorkflowStore + ?Sized> WorkflowStore for Arc<T> {
    async fn insert_workflow(&self, workflow: &Workflow) -> Result<(), StoreError> {
        (**self).insert_workflow(workflow).await
    }

    async fn update_workflow(&self, workflow: &Workflow) -> Result<(), StoreError> {
        (**self).update_workflow(workflow).await
    }

    async fn get_workflow(&self, id: WorkflowId) -> Result<Workflow, StoreError> {
        (**self).get_workflow(id).await
    }

    async fn find_workflow(&self, name: &str) -> Result<Option<Workflow>, StoreError> {
        (**self).find_workflow(name).await
    }

    async fn list_workflows(&self) -> Result<Vec<Workflow>, StoreError> {
        (**self).list_workflows().await
    }

    async fn insert_version(&self, version: &WorkflowVersion) -> Result<(), StoreError> {
        (**self).insert_version(version).await
    }

    async fn get_version(&self, id: VersionId) -> Result<WorkflowVersion, StoreError> {
        (**self).get_version(id).await
    }

    async fn get_version_by_number(
        &self,
        workflow_id: WorkflowId,
        number: u32,
    ) -> Result<WorkflowVersion, StoreError> {
        (**self).get_version_by_number(workflow_id, number).await
    }

    async fn latest_version(
        &self,
        workflow_id: WorkflowId,
    ) -> Result<Option<WorkflowVersion>, StoreError> {
        (**self).latest_version(workflow_id).await
    }

    async fn list_versions(
        &self,
        workflow_id: WorkflowId,
    ) -> Result<Vec<WorkflowVersion>, StoreError> {
        (**self).list_versions(workflow_id).await
    }

    async fn insert_trigger(&self, trigger: &Trigger) -> Result<(), StoreError> {
        (**self).insert_trigger(trigger).await
    }

    async fn update_trigger(&self, trigger: &Trigger) -> Result<(), StoreError> {
        (**self).update_trigger(trigger).await
    }

    async fn delete_trigger(&self, id: TriggerId) -> Result<(), StoreError> {
        (**self).delete_trigger(id).await
    }

    async fn get_trigger(&self, id: TriggerId) -> Result<Trigger, StoreError> {
        (**self).get_trigger(id).await
    }

    async fn list_triggers(
        &self,
        workflow_id: Option<WorkflowId>,
    ) -> Result<Vec<Trigger>, StoreError> {
        (**self).list_triggers(workflow_id).await
    }
}

#[async_trait]
impl<T: EventStore + ?Sized> EventStore for Arc<T> {
    async fn insert_event(
        &self,
        event: &Event,
        run: Option<&WorkflowRun>,
    ) -> Result<EventInsert, StoreError> {
        (**self).insert_event(event, run).await
    }

    async fn get_event(&self, id: EventId) -> Result<Event, StoreError> {
        (**self).get_event(id).await
    }

    async fn find_event_by_dedup_key(
        &self,
        workflow_id: WorkflowId,
        dedup_key: &str,
    ) -> Result<Option<Event>, StoreError> {
        (**self)
            .find_event_by_dedup_key(workflow_id, dedup_key)
            .await
    }

    async fn list_events(&self, query: &EventQuery) -> Result<Page<Event, EventId>, StoreError> {
        (**self).list_events(query).await
    }
}

#[async_trait]
impl<T: RunStore + ?Sized> RunStore for Arc<T> {
    async fn insert_run(&self, run: &WorkflowRun) -> Result<(), StoreError> {
        (**self).insert_run(run).await
    }

    async fn get_run(&self, id: RunId) -> Result<WorkflowRun, StoreError> {
        (**self).get_run(id).await
    }

    async fn list_runs(&self, query: &RunQuery) -> Result<Page<WorkflowRun, RunId>, StoreError> {
        (**self).list_runs(query).await
    }

    async fn list_claimable(
        &self,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<RunId>, StoreError> {
        (**self).list_claimable(now, limit).await
    }

    async fn claim_run(
        &self,
        id: RunId,
        owner: &str,
        now: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    ) -> Result<WorkflowRun, StoreError> {
        (**self).claim_run(id, owner, now, expires_at).await
    }

    async fn renew_lease(
        &self,
        id: RunId,
        epoch: u64,
        expires_at: DateTime<Utc>,
    ) -> Result<WorkflowRun, StoreError> {
        (**self).renew_lease(id, epoch, expires_at).await
    }

    async fn commit(
        &self,
        fence: Fence,
        run: Option<&WorkflowRun>,
        steps: &[StepRun],
    ) -> Result<(), StoreError> {
        (**self).commit(fence, run, steps).await
    }

    async fn request_cancel(&self, id: RunId) -> Result<WorkflowRun, StoreError> {
        (**self).request_cancel(id).await
    }

    async fn signal_run(&self, id: RunId, signal: &Signal) -> Result<WorkflowRun, StoreError> {
        (**self).signal_run(id, signal).await
    }

    fn work_signal(&self) -> Option<WorkSignal> {
        (**self).work_signal()
    }

    async fn list_step_runs(&self, run_id: RunId) -> Result<Vec<StepRun>, StoreError> {
        (**self).list_step_runs(run_id).await
    }
}

#[async_trait]
impl<T: TokenStore + ?Sized> TokenStore for Arc<T> {
    async fn insert_token(&self, token: &ApiToken) -> Result<(), StoreError> {
        (**self).insert_token(token).await
    }

    async fn get_token(&self, id: TokenId) -> Result<ApiToken, StoreError> {
        (**self).get_token(id).await
    }

    async fn find_token(&self, digest: &TokenDigest) -> Result<Option<ApiToken>, StoreError> {
        (**self).find_token(digest).await
    }

    async fn list_tokens(&self) -> Result<Vec<ApiToken>, StoreError> {
        (**self).list_tokens().await
    }

    async fn revoke_token(&self, id: TokenId, at: DateTime<Utc>) -> Result<ApiToken, StoreError> {
        (**self).revoke_token(id, at).await
    }

    async fn touch_token(&self, id: TokenId, at: DateTime<Utc>) -> Result<(), StoreError> {
        (**self).touch_token(id, at).await
    }
}

#[async_trait]
impl<T: SecretStore + ?Sized> SecretStore for Arc<T> {
    async fn insert_secret(&self, secret: &SealedSecret) -> Result<(), StoreError> {
        (**self).insert_secret(secret).await
    }

    async fn get_secret(
        &self,
        name: &str,
        version: Option<u32>,
    ) -> Result<Option<SealedSecret>, StoreError> {
        (**self).get_secret(name, version).await
    }

    async fn list_secret_versions(&self, name: &str) -> Result<Vec<SealedSecret>, StoreError> {
        (**self).list_secret_versions(name).await
    }

    async fn list_secret_names(&self) -> Result<Vec<String>, StoreError> {
        (**self).list_secret_names().await
    }

    async fn reseal_secret(
        &self,
        secret: &SealedSecret,
        expected_key_id: &str,
    ) -> Result<(), StoreError> {
        (**self).reseal_secret(secret, expected_key_id).await
    }

    async fn delete_secret(&self, name: &str) -> Result<usize, StoreError> {
        (**self).delete_secret(name).await
    }
}

#[async_trait]
impl<T: super::LogStore + ?Sized> super::LogStore for Arc<T> {
    async fn append_logs(&self, lines: &[crate::step::LogLine]) -> Result<(), StoreError> {
        (**self).append_logs(lines).await
    }

    async fn list_logs(
        &self,
        query: &super::LogQuery,
    ) -> Result<Page<crate::step::LogLine, u32>, StoreError> {
        (**self).list_logs(query).await
    }
}
