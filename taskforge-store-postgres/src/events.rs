//! [`EventStore`], and inserting events and runs in a host's transaction.

use async_trait::async_trait;
use taskforge_core::store::{
    rules::page_limit, EventInsert, EventQuery, EventStore, Order, Page, StoreError,
};
use taskforge_core::{Event, EventId, WorkflowId, WorkflowRun};
use tokio_postgres::types::ToSql;

use crate::codec::{
    big, doc, lease_columns, nanos, outcome_name, status_name, to_doc, LeaseColumns,
};
use crate::conn::Tx;
use crate::error::{backend, unique_violation};
use crate::schema::Sql;
use crate::PostgresStore;

/// The event of `workflow_id` stored with `key`, if any.
async fn find_event(
    tx: &impl Tx,
    sql: &Sql,
    workflow_id: WorkflowId,
    key: &str,
) -> Result<Option<Event>, StoreError> {
    let statement = tx.prepare(&sql.find_event).await.map_err(backend)?;
    match tx
        .tx()
        .query_opt(&statement, &[workflow_id.as_uuid(), &key])
        .await
        .map_err(backend)?
    {
        Some(row) => doc(&row).map(Some),
        None => Ok(None),
    }
}

/// Inserts `event` and `run` in `tx`, unless the event is a duplicate.
/// Checks the dedup key before the ids, so a caller retrying the very same
/// event learns it is stored (`Duplicate`) rather than `AlreadyExists`.
pub(crate) async fn insert_event(
    tx: &impl Tx,
    sql: &Sql,
    event: &Event,
    run: Option<&WorkflowRun>,
) -> Result<EventInsert, StoreError> {
    if let Some(key) = &event.dedup_key {
        if let Some(stored) = find_event(tx, sql, event.workflow_id, key).await? {
            return Ok(EventInsert::Duplicate(Box::new(stored)));
        }
    }
    let statement = tx.prepare(&sql.insert_event).await.map_err(backend)?;
    let trigger_id = event.trigger_id.map(|id| *id.as_uuid());
    let params: [&(dyn ToSql + Sync); 7] = [
        event.id.as_uuid(),
        event.workflow_id.as_uuid(),
        &trigger_id,
        &outcome_name(event.outcome.kind())?,
        &nanos(event.received_at),
        &event.dedup_key,
        &to_doc(event)?,
    ];
    match tx.tx().execute(&statement, &params).await {
        Ok(1) => {}
        Ok(_) => {
            // Another insert of the key committed first: it is the event.
            let key = event.dedup_key.as_deref().unwrap_or_default();
            let stored = find_event(tx, sql, event.workflow_id, key)
                .await?
                .ok_or_else(|| backend(format!("dedup key {key:?} taken by no event")))?;
            return Ok(EventInsert::Duplicate(Box::new(stored)));
        }
        Err(e) if unique_violation(&e).is_some() => {
            return Err(StoreError::already_exists("event", event.id))
        }
        Err(e) => return Err(backend(e)),
    }
    if let Some(run) = run {
        insert_run(tx, sql, run).await?;
    }
    Ok(EventInsert::Inserted)
}

/// Inserts `run` in `tx`, and notifies listeners when `tx` commits.
pub(crate) async fn insert_run(
    tx: &impl Tx,
    sql: &Sql,
    run: &WorkflowRun,
) -> Result<(), StoreError> {
    let statement = tx.prepare(&sql.insert_run).await.map_err(backend)?;
    match tx
        .tx()
        .execute(&statement, &run_params(run, sql)?.as_params())
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if unique_violation(&e).is_some() => Err(StoreError::already_exists("run", run.id)),
        Err(e) => Err(backend(e)),
    }
}

/// The parameters of `insert_run`, owned.
pub(crate) struct RunParams<'a> {
    run: &'a WorkflowRun,
    event_id: Option<uuid::Uuid>,
    status: &'static str,
    created_ns: i64,
    lease: LeaseColumns<'a>,
    epoch: i64,
    doc: String,
    channel: &'a str,
}

impl RunParams<'_> {
    fn as_params(&self) -> [&(dyn ToSql + Sync); 13] {
        [
            self.run.id.as_uuid(),
            self.run.workflow_id.as_uuid(),
            self.run.version_id.as_uuid(),
            &self.event_id,
            &self.status,
            &self.created_ns,
            &self.lease.owner,
            &self.lease.expires,
            &self.lease.expires_ns,
            &self.epoch,
            &self.run.cancel_requested,
            &self.doc,
            &self.channel,
        ]
    }
}

fn run_params<'a>(run: &'a WorkflowRun, sql: &'a Sql) -> Result<RunParams<'a>, StoreError> {
    Ok(RunParams {
        run,
        event_id: run.event_id.map(|id| *id.as_uuid()),
        status: status_name(run.status),
        created_ns: nanos(run.created_at),
        lease: lease_columns(run.lease.as_ref())?,
        epoch: big(run.lease_epoch)?,
        doc: to_doc(run)?,
        channel: &sql.channel,
    })
}

impl PostgresStore {
    /// Records `event` (and starts `run`, if given) inside the host's own
    /// transaction `tx`: they exist if and only if the host commits it, and
    /// engines listening on the store are woken when it does.
    ///
    /// `tx` may be on any connection to the store's database (the store's
    /// tables are named with their schema). Same contract as
    /// [`EventStore::insert_event`]; on an error, other than a duplicate,
    /// PostgreSQL has aborted `tx`, so the host rolls it back.
    ///
    /// # Errors
    /// As [`EventStore::insert_event`].
    pub async fn insert_event_in(
        &self,
        tx: &tokio_postgres::Transaction<'_>,
        event: &Event,
        run: Option<&WorkflowRun>,
    ) -> Result<EventInsert, StoreError> {
        insert_event(tx, &self.inner.sql, event, run).await
    }

    /// Starts `run` inside the host's own transaction `tx`: the run exists
    /// if and only if the host commits it, and engines listening on the
    /// store are woken when it does.
    ///
    /// ```no_run
    /// # async fn example(
    /// #     store: taskforge_store_postgres::PostgresStore,
    /// #     client: &mut taskforge_store_postgres::tokio_postgres::Client,
    /// #     run: taskforge_core::WorkflowRun,
    /// # ) -> Result<(), Box<dyn std::error::Error>> {
    /// let tx = client.transaction().await?;
    /// tx.execute("INSERT INTO orders (id) VALUES (42)", &[]).await?;
    /// store.insert_run_in(&tx, &run).await?;
    /// tx.commit().await?; // the order and its run, or neither
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    /// `AlreadyExists` if the run's id is taken (PostgreSQL has then
    /// aborted `tx`); `Backend` if the server fails.
    pub async fn insert_run_in(
        &self,
        tx: &tokio_postgres::Transaction<'_>,
        run: &WorkflowRun,
    ) -> Result<(), StoreError> {
        insert_run(tx, &self.inner.sql, run).await
    }
}

#[async_trait]
impl EventStore for PostgresStore {
    async fn insert_event(
        &self,
        event: &Event,
        run: Option<&WorkflowRun>,
    ) -> Result<EventInsert, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(backend)?;
        let inserted = insert_event(&tx, &self.inner.sql, event, run).await?;
        if matches!(inserted, EventInsert::Inserted) {
            tx.commit().await.map_err(backend)?;
        }
        Ok(inserted)
    }

    async fn get_event(&self, id: EventId) -> Result<Event, StoreError> {
        self.fetch_one(&self.inner.sql.get_event, &[id.as_uuid()])
            .await?
            .ok_or_else(|| StoreError::not_found("event", id))
    }

    async fn find_event_by_dedup_key(
        &self,
        workflow_id: WorkflowId,
        dedup_key: &str,
    ) -> Result<Option<Event>, StoreError> {
        self.fetch_one(
            &self.inner.sql.find_event,
            &[workflow_id.as_uuid(), &dedup_key],
        )
        .await
    }

    async fn list_events(&self, q: &EventQuery) -> Result<Page<Event, EventId>, StoreError> {
        let mut filter = Filter::default();
        if let Some(id) = q.workflow_id {
            filter.push("workflow_id =", Box::new(*id.as_uuid()));
        }
        if let Some(id) = q.trigger_id {
            filter.push("trigger_id =", Box::new(*id.as_uuid()));
        }
        if let Some(kind) = q.outcome {
            filter.push("outcome =", Box::new(outcome_name(kind)?));
        }
        if let Some(t) = q.received_from {
            filter.push("received_ns >=", Box::new(nanos(t)));
        }
        if let Some(t) = q.received_until {
            filter.push("received_ns <", Box::new(nanos(t)));
        }
        let after = q.after.map(|id| *id.as_uuid());
        let (rows, more) = self
            .page(
                &self.inner.sql.events_table,
                "doc",
                filter,
                q.order,
                after,
                q.limit,
            )
            .await?;
        let events = rows.iter().map(doc).collect::<Result<Vec<Event>, _>>()?;
        Ok(Page::new(events, more, |e| e.id))
    }
}

/// The conditions of a listing, with their parameters.
#[derive(Default)]
pub(crate) struct Filter {
    conditions: Vec<String>,
    params: Vec<Box<dyn ToSql + Sync + Send>>,
}

impl Filter {
    /// Adds `<left> $n`, `n` being the parameter's number.
    pub(crate) fn push(&mut self, left: &str, param: Box<dyn ToSql + Sync + Send>) {
        self.params.push(param);
        self.conditions
            .push(format!("{left} ${}", self.params.len()));
    }
}

impl PostgresStore {
    /// One page of rows (`columns`) of `table` matching `filter`, by id in
    /// `order` after `after`, and whether more follow: keyset paging on the
    /// primary key, or on an `(x, id)` index when filtered by `x`.
    pub(crate) async fn page(
        &self,
        table: &str,
        columns: &str,
        mut filter: Filter,
        order: Order,
        after: Option<uuid::Uuid>,
        limit: usize,
    ) -> Result<(Vec<tokio_postgres::Row>, bool), StoreError> {
        let (cmp, direction) = match order {
            Order::OldestFirst => (">", "ASC"),
            Order::NewestFirst => ("<", "DESC"),
        };
        if let Some(after) = after {
            filter.push(&format!("id {cmp}"), Box::new(after));
        }
        let limit = page_limit(limit);
        filter.push("LIMIT", Box::new(big(limit + 1)?));
        let limit_param = filter.conditions.pop().unwrap_or_default();
        let conditions = if filter.conditions.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", filter.conditions.join(" AND "))
        };
        let sql = format!(
            "SELECT {columns} FROM {table} {conditions} ORDER BY id {direction} {limit_param}"
        );
        let client = self.client().await?;
        let statement = client.prepare_cached(&sql).await.map_err(backend)?;
        let params: Vec<&(dyn ToSql + Sync)> = filter
            .params
            .iter()
            .map(|p| &**p as &(dyn ToSql + Sync))
            .collect();
        let mut rows = client.query(&statement, &params).await.map_err(backend)?;
        let more = rows.len() > limit;
        rows.truncate(limit);
        Ok((rows, more))
    }
}
