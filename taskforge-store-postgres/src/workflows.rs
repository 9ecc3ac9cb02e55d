//! [`WorkflowStore`]: workflows, versions and triggers.

use async_trait::async_trait;
use taskforge_core::store::rules;
use taskforge_core::store::{StoreError, WorkflowStore};
use taskforge_core::{Trigger, TriggerId, VersionId, Workflow, WorkflowId, WorkflowVersion};

use crate::codec::{big, doc, to_doc};
use crate::error::{backend, is_foreign_key_violation, unique_violation};
use crate::PostgresStore;

/// A unique violation of a trigger's keys, as the contract names it.
fn trigger_key_taken(trigger: &Trigger, constraint: Option<&str>) -> StoreError {
    match constraint {
        Some("triggers_webhook_path_key") => {
            rules::path_taken(trigger.webhook_path().unwrap_or_default())
        }
        Some("triggers_name_key") => rules::name_taken(trigger),
        _ => StoreError::already_exists("trigger", trigger.id),
    }
}

#[async_trait]
impl WorkflowStore for PostgresStore {
    async fn insert_workflow(&self, workflow: &Workflow) -> Result<(), StoreError> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached(&self.inner.sql.insert_workflow)
            .await
            .map_err(backend)?;
        let id = workflow.id.as_uuid();
        match client
            .execute(&statement, &[id, &workflow.name, &to_doc(workflow)?])
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => Err(match unique_violation(&e) {
                Some("workflows_name_key") => {
                    StoreError::already_exists("workflow", &workflow.name)
                }
                Some(_) => StoreError::already_exists("workflow", workflow.id),
                None => backend(e),
            }),
        }
    }

    async fn update_workflow(&self, workflow: &Workflow) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(backend)?;
        let lock = tx
            .prepare_cached(&self.inner.sql.lock_workflow)
            .await
            .map_err(backend)?;
        let row = tx
            .query_opt(&lock, &[workflow.id.as_uuid()])
            .await
            .map_err(backend)?
            .ok_or_else(|| StoreError::not_found("workflow", workflow.id))?;
        let stored: Workflow = doc(&row)?;
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
        let update = tx
            .prepare_cached(&self.inner.sql.update_workflow)
            .await
            .map_err(backend)?;
        tx.execute(&update, &[workflow.id.as_uuid(), &to_doc(workflow)?])
            .await
            .map_err(backend)?;
        tx.commit().await.map_err(backend)
    }

    async fn get_workflow(&self, id: WorkflowId) -> Result<Workflow, StoreError> {
        self.fetch_one(&self.inner.sql.get_workflow, &[id.as_uuid()])
            .await?
            .ok_or_else(|| StoreError::not_found("workflow", id))
    }

    async fn find_workflow(&self, name: &str) -> Result<Option<Workflow>, StoreError> {
        self.fetch_one(&self.inner.sql.find_workflow, &[&name])
            .await
    }

    async fn list_workflows(&self) -> Result<Vec<Workflow>, StoreError> {
        self.fetch_all(&self.inner.sql.list_workflows, &[]).await
    }

    async fn insert_version(&self, version: &WorkflowVersion) -> Result<(), StoreError> {
        let client = self.client().await?;
        let sql = &self.inner.sql;
        let statement = client
            .prepare_cached(&sql.insert_version)
            .await
            .map_err(backend)?;
        let (id, workflow_id) = (version.id.as_uuid(), version.workflow_id.as_uuid());
        let number = big(version.number)?;
        let next_number = || {
            StoreError::conflict(
                "workflow",
                version.workflow_id,
                format!("version number {} is not the next one", version.number),
            )
        };
        match client
            .execute(&statement, &[id, workflow_id, &number, &to_doc(version)?])
            .await
        {
            Ok(1) => Ok(()),
            Ok(_) => {
                // Not the next number; say why in the contract's order.
                let exists = client
                    .prepare_cached(&sql.workflow_exists)
                    .await
                    .map_err(backend)?;
                if client
                    .query_opt(&exists, &[workflow_id])
                    .await
                    .map_err(backend)?
                    .is_none()
                {
                    return Err(StoreError::not_found("workflow", version.workflow_id));
                }
                let taken = client
                    .prepare_cached(&sql.version_exists)
                    .await
                    .map_err(backend)?;
                if client
                    .query_opt(&taken, &[id])
                    .await
                    .map_err(backend)?
                    .is_some()
                {
                    return Err(StoreError::already_exists("version", version.id));
                }
                Err(next_number())
            }
            Err(e) if is_foreign_key_violation(&e) => {
                Err(StoreError::not_found("workflow", version.workflow_id))
            }
            Err(e) => Err(match unique_violation(&e) {
                Some("versions_number_key") => next_number(),
                Some(_) => StoreError::already_exists("version", version.id),
                None => backend(e),
            }),
        }
    }

    async fn get_version(&self, id: VersionId) -> Result<WorkflowVersion, StoreError> {
        self.fetch_one(&self.inner.sql.get_version, &[id.as_uuid()])
            .await?
            .ok_or_else(|| StoreError::not_found("version", id))
    }

    async fn get_version_by_number(
        &self,
        workflow_id: WorkflowId,
        number: u32,
    ) -> Result<WorkflowVersion, StoreError> {
        self.fetch_one(
            &self.inner.sql.get_version_by_number,
            &[workflow_id.as_uuid(), &i64::from(number)],
        )
        .await?
        .ok_or_else(|| StoreError::not_found("version", format!("{workflow_id}/v{number}")))
    }

    async fn latest_version(
        &self,
        workflow_id: WorkflowId,
    ) -> Result<Option<WorkflowVersion>, StoreError> {
        self.fetch_one(&self.inner.sql.latest_version, &[workflow_id.as_uuid()])
            .await
    }

    async fn list_versions(
        &self,
        workflow_id: WorkflowId,
    ) -> Result<Vec<WorkflowVersion>, StoreError> {
        self.fetch_all(&self.inner.sql.list_versions, &[workflow_id.as_uuid()])
            .await
    }

    async fn insert_trigger(&self, trigger: &Trigger) -> Result<(), StoreError> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached(&self.inner.sql.insert_trigger)
            .await
            .map_err(backend)?;
        let (name, path) = rules::trigger_keys(trigger);
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 5] = [
            trigger.id.as_uuid(),
            trigger.workflow_id.as_uuid(),
            &path,
            &name,
            &to_doc(trigger)?,
        ];
        match client.execute(&statement, &params).await {
            Ok(_) => Ok(()),
            Err(e) if is_foreign_key_violation(&e) => {
                Err(StoreError::not_found("workflow", trigger.workflow_id))
            }
            Err(e) => match unique_violation(&e) {
                // PostgreSQL reports the first index it finds violated, the
                // path's; the name is checked first, as by the other
                // stores, so that a host declaring its triggers by name
                // (racing another replica) learns the name is taken.
                Some("triggers_webhook_path_key") if name.is_some() => {
                    let taken = client
                        .prepare_cached(&self.inner.sql.trigger_name_taken)
                        .await
                        .map_err(backend)?;
                    let row = client
                        .query_opt(&taken, &[trigger.workflow_id.as_uuid(), &name])
                        .await
                        .map_err(backend)?;
                    Err(if row.is_some() {
                        rules::name_taken(trigger)
                    } else {
                        trigger_key_taken(trigger, Some("triggers_webhook_path_key"))
                    })
                }
                Some(constraint) => Err(trigger_key_taken(trigger, Some(constraint))),
                None => Err(backend(e)),
            },
        }
    }

    async fn update_trigger(&self, trigger: &Trigger) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(backend)?;
        let lock = tx
            .prepare_cached(&self.inner.sql.lock_trigger)
            .await
            .map_err(backend)?;
        let row = tx
            .query_opt(&lock, &[trigger.id.as_uuid()])
            .await
            .map_err(backend)?
            .ok_or_else(|| StoreError::not_found("trigger", trigger.id))?;
        let stored: Trigger = doc(&row)?;
        rules::check_trigger_update(&stored, trigger)?;
        let update = tx
            .prepare_cached(&self.inner.sql.update_trigger)
            .await
            .map_err(backend)?;
        let (name, path) = rules::trigger_keys(trigger);
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 4] =
            [trigger.id.as_uuid(), &path, &name, &to_doc(trigger)?];
        match tx.execute(&update, &params).await {
            Ok(_) => tx.commit().await.map_err(backend),
            Err(e) => Err(match unique_violation(&e) {
                Some(constraint) => trigger_key_taken(trigger, Some(constraint)),
                None => backend(e),
            }),
        }
    }

    async fn delete_trigger(&self, id: TriggerId) -> Result<(), StoreError> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached(&self.inner.sql.delete_trigger)
            .await
            .map_err(backend)?;
        match client.execute(&statement, &[id.as_uuid()]).await {
            Ok(0) => Err(StoreError::not_found("trigger", id)),
            Ok(_) => Ok(()),
            Err(e) => Err(backend(e)),
        }
    }

    async fn get_trigger(&self, id: TriggerId) -> Result<Trigger, StoreError> {
        self.fetch_one(&self.inner.sql.get_trigger, &[id.as_uuid()])
            .await?
            .ok_or_else(|| StoreError::not_found("trigger", id))
    }

    async fn list_triggers(
        &self,
        workflow_id: Option<WorkflowId>,
    ) -> Result<Vec<Trigger>, StoreError> {
        match workflow_id {
            None => self.fetch_all(&self.inner.sql.list_triggers, &[]).await,
            Some(id) => {
                self.fetch_all(&self.inner.sql.list_workflow_triggers, &[id.as_uuid()])
                    .await
            }
        }
    }
}

impl PostgresStore {
    /// The record in column 0 of the one row `sql` returns, if any.
    pub(crate) async fn fetch_one<T: serde::de::DeserializeOwned>(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<Option<T>, StoreError> {
        let client = self.client().await?;
        let statement = client.prepare_cached(sql).await.map_err(backend)?;
        match client
            .query_opt(&statement, params)
            .await
            .map_err(backend)?
        {
            Some(row) => doc(&row).map(Some),
            None => Ok(None),
        }
    }

    /// The records in column 0 of every row `sql` returns.
    pub(crate) async fn fetch_all<T: serde::de::DeserializeOwned>(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<Vec<T>, StoreError> {
        let client = self.client().await?;
        let statement = client.prepare_cached(sql).await.map_err(backend)?;
        let rows = client.query(&statement, params).await.map_err(backend)?;
        rows.iter().map(doc).collect()
    }
}
