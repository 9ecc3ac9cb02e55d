//! Workflows, versions and triggers: small, read-mostly, behind their own lock.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use taskforge_core::store::rules;
use taskforge_core::{
    StoreError, Trigger, TriggerId, VersionId, Workflow, WorkflowId, WorkflowVersion,
};

const MIN_TRIGGER: TriggerId = TriggerId::from_bytes([0; 16]);
const MAX_TRIGGER: TriggerId = TriggerId::from_bytes([0xff; 16]);

#[derive(Debug, Default)]
pub(crate) struct Catalog {
    workflows: BTreeMap<WorkflowId, Workflow>,
    names: HashMap<String, WorkflowId>,
    versions: HashMap<VersionId, WorkflowVersion>,
    /// The versions of each workflow; the one numbered `n` is at `n - 1`.
    numbers: HashMap<WorkflowId, Vec<VersionId>>,
    triggers: BTreeMap<TriggerId, Trigger>,
    triggers_by_workflow: BTreeSet<(WorkflowId, TriggerId)>,
    /// Unique keys of triggers: `(workflow, name)` and webhook paths.
    trigger_names: HashMap<(WorkflowId, String), TriggerId>,
    webhook_paths: HashMap<String, TriggerId>,
}

impl Catalog {
    pub(crate) fn counts(&self) -> (usize, usize, usize) {
        (
            self.workflows.len(),
            self.versions.len(),
            self.triggers.len(),
        )
    }

    pub(crate) fn insert_workflow(&mut self, workflow: Workflow) -> Result<(), StoreError> {
        if self.workflows.contains_key(&workflow.id) {
            return Err(StoreError::already_exists("workflow", workflow.id));
        }
        if self.names.contains_key(&workflow.name) {
            return Err(StoreError::already_exists("workflow", &workflow.name));
        }
        self.names.insert(workflow.name.clone(), workflow.id);
        self.workflows.insert(workflow.id, workflow);
        Ok(())
    }

    pub(crate) fn update_workflow(&mut self, workflow: Workflow) -> Result<(), StoreError> {
        let stored = self
            .workflows
            .get_mut(&workflow.id)
            .ok_or_else(|| StoreError::not_found("workflow", workflow.id))?;
        if stored.name != workflow.name {
            return Err(StoreError::conflict(
                "workflow",
                workflow.id,
                format!(
                    "name is immutable: stored {:?}, given {:?}",
                    stored.name, workflow.name
                ),
            ));
        }
        if stored.created_at != workflow.created_at {
            return Err(StoreError::conflict(
                "workflow",
                workflow.id,
                "created_at is immutable",
            ));
        }
        *stored = workflow;
        Ok(())
    }

    pub(crate) fn workflow(&self, id: WorkflowId) -> Result<&Workflow, StoreError> {
        self.workflows
            .get(&id)
            .ok_or_else(|| StoreError::not_found("workflow", id))
    }

    pub(crate) fn find_workflow(&self, name: &str) -> Option<&Workflow> {
        self.names.get(name).and_then(|id| self.workflows.get(id))
    }

    pub(crate) fn workflows(&self) -> impl Iterator<Item = &Workflow> {
        self.workflows.values()
    }

    pub(crate) fn insert_version(&mut self, version: WorkflowVersion) -> Result<(), StoreError> {
        if !self.workflows.contains_key(&version.workflow_id) {
            return Err(StoreError::not_found("workflow", version.workflow_id));
        }
        // An id collision is reported before the number: a publisher
        // retrying the very same version learns that it is stored.
        if self.versions.contains_key(&version.id) {
            return Err(StoreError::already_exists("version", version.id));
        }
        let numbers = self.numbers.entry(version.workflow_id).or_default();
        let expected = numbers.len() + 1;
        if usize::try_from(version.number).ok() != Some(expected) {
            return Err(StoreError::conflict(
                "workflow",
                version.workflow_id,
                format!(
                    "version number {} is not the next one ({expected})",
                    version.number
                ),
            ));
        }
        numbers.push(version.id);
        self.versions.insert(version.id, version);
        Ok(())
    }

    pub(crate) fn version(&self, id: VersionId) -> Result<&WorkflowVersion, StoreError> {
        self.versions
            .get(&id)
            .ok_or_else(|| StoreError::not_found("version", id))
    }

    fn version_ids(&self, workflow_id: WorkflowId) -> &[VersionId] {
        self.numbers.get(&workflow_id).map_or(&[], Vec::as_slice)
    }

    pub(crate) fn version_by_number(
        &self,
        workflow_id: WorkflowId,
        number: u32,
    ) -> Result<&WorkflowVersion, StoreError> {
        usize::try_from(number)
            .ok()
            .and_then(|n| n.checked_sub(1))
            .and_then(|index| self.version_ids(workflow_id).get(index))
            .and_then(|id| self.versions.get(id))
            .ok_or_else(|| StoreError::not_found("version", format!("{workflow_id}/v{number}")))
    }

    pub(crate) fn latest_version(&self, workflow_id: WorkflowId) -> Option<&WorkflowVersion> {
        self.version_ids(workflow_id)
            .last()
            .and_then(|id| self.versions.get(id))
    }

    pub(crate) fn versions(
        &self,
        workflow_id: WorkflowId,
    ) -> impl Iterator<Item = &WorkflowVersion> {
        self.version_ids(workflow_id)
            .iter()
            .filter_map(|id| self.versions.get(id))
    }

    pub(crate) fn insert_trigger(&mut self, trigger: Trigger) -> Result<(), StoreError> {
        if !self.workflows.contains_key(&trigger.workflow_id) {
            return Err(StoreError::not_found("workflow", trigger.workflow_id));
        }
        if self.triggers.contains_key(&trigger.id) {
            return Err(StoreError::already_exists("trigger", trigger.id));
        }
        self.check_trigger_keys(&trigger)?;
        self.index_trigger(&trigger);
        self.triggers_by_workflow
            .insert((trigger.workflow_id, trigger.id));
        self.triggers.insert(trigger.id, trigger);
        Ok(())
    }

    pub(crate) fn update_trigger(&mut self, trigger: Trigger) -> Result<(), StoreError> {
        let stored = self
            .triggers
            .get(&trigger.id)
            .ok_or_else(|| StoreError::not_found("trigger", trigger.id))?;
        rules::check_trigger_update(stored, &trigger)?;
        self.check_trigger_keys(&trigger)?;
        let stored = stored.clone();
        self.unindex_trigger(&stored);
        self.index_trigger(&trigger);
        self.triggers.insert(trigger.id, trigger);
        Ok(())
    }

    pub(crate) fn delete_trigger(&mut self, id: TriggerId) -> Result<(), StoreError> {
        let stored = self
            .triggers
            .remove(&id)
            .ok_or_else(|| StoreError::not_found("trigger", id))?;
        self.unindex_trigger(&stored);
        self.triggers_by_workflow.remove(&(stored.workflow_id, id));
        Ok(())
    }

    /// `AlreadyExists` if another trigger holds `trigger`'s name or path.
    fn check_trigger_keys(&self, trigger: &Trigger) -> Result<(), StoreError> {
        let (name, path) = rules::trigger_keys(trigger);
        let taken_by_other =
            |holder: Option<&TriggerId>| holder.is_some_and(|&id| id != trigger.id);
        if let Some(name) = name {
            if taken_by_other(
                self.trigger_names
                    .get(&(trigger.workflow_id, name.to_owned())),
            ) {
                return Err(rules::name_taken(trigger));
            }
        }
        if let Some(path) = path {
            if taken_by_other(self.webhook_paths.get(path)) {
                return Err(rules::path_taken(path));
            }
        }
        Ok(())
    }

    fn index_trigger(&mut self, trigger: &Trigger) {
        let (name, path) = rules::trigger_keys(trigger);
        if let Some(name) = name {
            self.trigger_names
                .insert((trigger.workflow_id, name.to_owned()), trigger.id);
        }
        if let Some(path) = path {
            self.webhook_paths.insert(path.to_owned(), trigger.id);
        }
    }

    fn unindex_trigger(&mut self, trigger: &Trigger) {
        let (name, path) = rules::trigger_keys(trigger);
        if let Some(name) = name {
            self.trigger_names
                .remove(&(trigger.workflow_id, name.to_owned()));
        }
        if let Some(path) = path {
            self.webhook_paths.remove(path);
        }
    }

    pub(crate) fn trigger(&self, id: TriggerId) -> Result<&Trigger, StoreError> {
        self.triggers
            .get(&id)
            .ok_or_else(|| StoreError::not_found("trigger", id))
    }

    pub(crate) fn triggers(&self, workflow_id: Option<WorkflowId>) -> Vec<Trigger> {
        match workflow_id {
            None => self.triggers.values().cloned().collect(),
            Some(workflow_id) => self
                .triggers_by_workflow
                .range((workflow_id, MIN_TRIGGER)..=(workflow_id, MAX_TRIGGER))
                .filter_map(|(_, id)| self.triggers.get(id))
                .cloned()
                .collect(),
        }
    }
}
