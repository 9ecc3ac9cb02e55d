//! [`WorkflowStore`] over sled: workflows, versions and triggers.

use async_trait::async_trait;
use sled::transaction::{ConflictableTransactionError, TransactionalTree};
use sled::Transactional;
use taskforge_core::store::rules;
use taskforge_core::store::WorkflowStore;
use taskforge_core::{
    StoreError, Trigger, TriggerId, VersionId, Workflow, WorkflowId, WorkflowVersion,
};

use crate::error::{abort, backend, tx_error};
use crate::keys::{self, tag};
use crate::store::{decode, encode, load, tx_load, SledStore};

#[async_trait]
impl WorkflowStore for SledStore {
    async fn insert_workflow(&self, workflow: &Workflow) -> Result<(), StoreError> {
        let bytes = encode("workflow", workflow)?;
        let id = workflow.id.to_bytes();
        let name = keys::key(tag::WORKFLOW_NAME, &[workflow.name.as_bytes()]);
        let inner = &self.inner;
        (&inner.workflows, &inner.idx)
            .transaction(|(workflows, idx)| {
                if workflows.get(id)?.is_some() {
                    return abort(StoreError::already_exists("workflow", workflow.id));
                }
                if idx.get(name.as_slice())?.is_some() {
                    return abort(StoreError::already_exists("workflow", &workflow.name));
                }
                workflows.insert(&id, bytes.clone())?;
                idx.insert(name.as_slice(), &id)?;
                Ok(())
            })
            .map_err(tx_error)?;
        self.durable().await
    }

    async fn update_workflow(&self, workflow: &Workflow) -> Result<(), StoreError> {
        let bytes = encode("workflow", workflow)?;
        let id = workflow.id.to_bytes();
        self.inner
            .workflows
            .transaction(|workflows| {
                let Some(stored) = tx_load::<Workflow>(workflows, "workflow", &id)? else {
                    return abort(StoreError::not_found("workflow", workflow.id));
                };
                if stored.name != workflow.name {
                    return abort(StoreError::conflict(
                        "workflow",
                        workflow.id,
                        "the name is immutable",
                    ));
                }
                if stored.created_at != workflow.created_at {
                    return abort(StoreError::conflict(
                        "workflow",
                        workflow.id,
                        "created_at is immutable",
                    ));
                }
                workflows.insert(&id, bytes.clone())?;
                Ok(())
            })
            .map_err(tx_error)?;
        self.durable().await
    }

    async fn get_workflow(&self, id: WorkflowId) -> Result<Workflow, StoreError> {
        load(&self.inner.workflows, "workflow", &id.to_bytes())?
            .ok_or_else(|| StoreError::not_found("workflow", id))
    }

    async fn find_workflow(&self, name: &str) -> Result<Option<Workflow>, StoreError> {
        let key = keys::key(tag::WORKFLOW_NAME, &[name.as_bytes()]);
        match self.inner.idx.get(key).map_err(backend)? {
            Some(id) => load(&self.inner.workflows, "workflow", &id),
            None => Ok(None),
        }
    }

    async fn list_workflows(&self) -> Result<Vec<Workflow>, StoreError> {
        self.blocking(|inner| {
            inner
                .workflows
                .iter()
                .values()
                .map(|v| decode("workflow", &v.map_err(backend)?))
                .collect()
        })
        .await
    }

    async fn insert_version(&self, version: &WorkflowVersion) -> Result<(), StoreError> {
        let bytes = encode("version", version)?;
        let id = version.id.to_bytes();
        let wf = version.workflow_id.to_bytes();
        let latest_key = keys::key(tag::LATEST_VERSION, &[&wf]);
        let number_key = keys::key(
            tag::VERSION_BY_NUMBER,
            &[&wf, &version.number.to_be_bytes()],
        );
        let inner = &self.inner;
        (&inner.workflows, &inner.versions, &inner.idx)
            .transaction(|(workflows, versions, idx)| {
                if workflows.get(wf)?.is_none() {
                    return abort(StoreError::not_found("workflow", version.workflow_id));
                }
                if versions.get(id)?.is_some() {
                    return abort(StoreError::already_exists("version", version.id));
                }
                let latest = idx
                    .get(latest_key.as_slice())?
                    .and_then(|v| <[u8; 4]>::try_from(v.as_ref()).ok())
                    .map_or(0, u32::from_be_bytes);
                if Some(version.number) != latest.checked_add(1) {
                    return abort(StoreError::conflict(
                        "workflow",
                        version.workflow_id,
                        format!(
                            "version {} is not the next after version {latest}",
                            version.number
                        ),
                    ));
                }
                versions.insert(&id, bytes.clone())?;
                idx.insert(number_key.as_slice(), &id)?;
                idx.insert(latest_key.as_slice(), &version.number.to_be_bytes())?;
                Ok(())
            })
            .map_err(tx_error)?;
        self.durable().await
    }

    async fn get_version(&self, id: VersionId) -> Result<WorkflowVersion, StoreError> {
        load(&self.inner.versions, "version", &id.to_bytes())?
            .ok_or_else(|| StoreError::not_found("version", id))
    }

    async fn get_version_by_number(
        &self,
        workflow_id: WorkflowId,
        number: u32,
    ) -> Result<WorkflowVersion, StoreError> {
        let key = keys::key(
            tag::VERSION_BY_NUMBER,
            &[&workflow_id.to_bytes(), &number.to_be_bytes()],
        );
        let found = match self.inner.idx.get(key).map_err(backend)? {
            Some(id) => load(&self.inner.versions, "version", &id)?,
            None => None,
        };
        found.ok_or_else(|| StoreError::not_found("version", format!("{workflow_id}/{number}")))
    }

    async fn latest_version(
        &self,
        workflow_id: WorkflowId,
    ) -> Result<Option<WorkflowVersion>, StoreError> {
        let prefix = keys::key(tag::VERSION_BY_NUMBER, &[&workflow_id.to_bytes()]);
        match self.inner.idx.scan_prefix(prefix).next_back() {
            Some(entry) => {
                let (_, id) = entry.map_err(backend)?;
                load(&self.inner.versions, "version", &id)
            }
            None => Ok(None),
        }
    }

    async fn list_versions(
        &self,
        workflow_id: WorkflowId,
    ) -> Result<Vec<WorkflowVersion>, StoreError> {
        self.blocking(move |inner| {
            let prefix = keys::key(tag::VERSION_BY_NUMBER, &[&workflow_id.to_bytes()]);
            let mut versions = Vec::new();
            for entry in inner.idx.scan_prefix(prefix).values() {
                let id = entry.map_err(backend)?;
                versions.extend(load(&inner.versions, "version", &id)?);
            }
            Ok(versions)
        })
        .await
    }

    async fn insert_trigger(&self, trigger: &Trigger) -> Result<(), StoreError> {
        let bytes = encode("trigger", trigger)?;
        let id = trigger.id.to_bytes();
        let wf = trigger.workflow_id.to_bytes();
        let by_workflow = keys::key(tag::TRIGGER_BY_WORKFLOW, &[&wf, &id]);
        let unique = keys::trigger_unique(trigger);
        let inner = &self.inner;
        (&inner.workflows, &inner.triggers, &inner.idx)
            .transaction(|(workflows, triggers, idx)| {
                if workflows.get(wf)?.is_none() {
                    return abort(StoreError::not_found("workflow", trigger.workflow_id));
                }
                if triggers.get(id)?.is_some() {
                    return abort(StoreError::already_exists("trigger", trigger.id));
                }
                claim_unique(idx, trigger, &unique)?;
                triggers.insert(&id, bytes.clone())?;
                idx.insert(by_workflow.as_slice(), &[])?;
                Ok(())
            })
            .map_err(tx_error)?;
        self.durable().await
    }

    async fn update_trigger(&self, trigger: &Trigger) -> Result<(), StoreError> {
        let bytes = encode("trigger", trigger)?;
        let id = trigger.id.to_bytes();
        let unique = keys::trigger_unique(trigger);
        let inner = &self.inner;
        (&inner.triggers, &inner.idx)
            .transaction(|(triggers, idx)| {
                let Some(stored) = tx_load::<Trigger>(triggers, "trigger", &id)? else {
                    return abort(StoreError::not_found("trigger", trigger.id));
                };
                if let Err(e) = rules::check_trigger_update(&stored, trigger) {
                    return abort(e);
                }
                release_unique(idx, &stored, &keys::trigger_unique(&stored))?;
                claim_unique(idx, trigger, &unique)?;
                triggers.insert(&id, bytes.clone())?;
                Ok(())
            })
            .map_err(tx_error)?;
        self.durable().await
    }

    async fn delete_trigger(&self, id: TriggerId) -> Result<(), StoreError> {
        let key = id.to_bytes();
        let inner = &self.inner;
        (&inner.triggers, &inner.idx)
            .transaction(|(triggers, idx)| {
                let Some(stored) = tx_load::<Trigger>(triggers, "trigger", &key)? else {
                    return abort(StoreError::not_found("trigger", id));
                };
                release_unique(idx, &stored, &keys::trigger_unique(&stored))?;
                let wf = stored.workflow_id.to_bytes();
                idx.remove(keys::key(tag::TRIGGER_BY_WORKFLOW, &[&wf, &key]))?;
                triggers.remove(&key)?;
                Ok(())
            })
            .map_err(tx_error)?;
        self.durable().await
    }

    async fn get_trigger(&self, id: TriggerId) -> Result<Trigger, StoreError> {
        load(&self.inner.triggers, "trigger", &id.to_bytes())?
            .ok_or_else(|| StoreError::not_found("trigger", id))
    }

    async fn list_triggers(
        &self,
        workflow_id: Option<WorkflowId>,
    ) -> Result<Vec<Trigger>, StoreError> {
        self.blocking(move |inner| match workflow_id {
            None => inner
                .triggers
                .iter()
                .values()
                .map(|v| decode("trigger", &v.map_err(backend)?))
                .collect(),
            Some(wf) => {
                let prefix = keys::key(tag::TRIGGER_BY_WORKFLOW, &[&wf.to_bytes()]);
                let mut triggers = Vec::new();
                for entry in inner.idx.scan_prefix(prefix).keys() {
                    let key = entry.map_err(backend)?;
                    if let Some(id) = keys::trailing_id(&key) {
                        triggers.extend(load(&inner.triggers, "trigger", &id)?);
                    }
                }
                Ok(triggers)
            }
        })
        .await
    }
}

/// Takes a trigger's unique keys (name, webhook path) in the index, or
/// aborts with `AlreadyExists` if another trigger holds one.
fn claim_unique(
    idx: &TransactionalTree,
    trigger: &Trigger,
    unique: &keys::TriggerUnique,
) -> Result<(), ConflictableTransactionError<StoreError>> {
    let id = trigger.id.to_bytes();
    let taken = |key: &[u8]| -> Result<bool, ConflictableTransactionError<StoreError>> {
        Ok(idx.get(key)?.is_some_and(|holder| holder.as_ref() != id))
    };
    if let Some(key) = &unique.name {
        if taken(key)? {
            return abort(rules::name_taken(trigger));
        }
    }
    if let (Some(key), Some(path)) = (&unique.path, trigger.webhook_path()) {
        if taken(key)? {
            return abort(rules::path_taken(path));
        }
    }
    for key in unique.name.iter().chain(&unique.path) {
        idx.insert(key.as_slice(), &id)?;
    }
    Ok(())
}

/// Frees a stored trigger's unique keys, where it still holds them.
fn release_unique(
    idx: &TransactionalTree,
    stored: &Trigger,
    unique: &keys::TriggerUnique,
) -> Result<(), ConflictableTransactionError<StoreError>> {
    let id = stored.id.to_bytes();
    for key in unique.name.iter().chain(&unique.path) {
        if idx.get(key)?.is_some_and(|holder| holder.as_ref() == id) {
            idx.remove(key.as_slice())?;
        }
    }
    Ok(())
}
