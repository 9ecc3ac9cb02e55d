//! [`EventStore`], and inserting events and runs in a host's transaction.

use async_trait::async_trait;
use taskforge_core::store::{
    rules::page_limit, EventInsert, EventQuery, EventStore, Order, Page, StoreError,
};
use taskforge_core::{Event, EventId, WorkflowId, WorkflowRun};
use tokio_postgres::types::ToSql;

use crate::batch::Failure;
use crate::codec::{
    big, doc, lease_columns, limit_columns, nanos, outcome_name, status_name, to_doc, LeaseColumns,
    LimitColumns,
};
use crate::conn::Tx;
use crate::error::{backend, unique_violation};
use crate::notify::Notifier;
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
    match tx.execute(&statement, &params).await {
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
    limits: LimitColumns,
}

impl RunParams<'_> {
    fn as_params(&self) -> [&(dyn ToSql + Sync); 20] {
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
            &self.limits.slot_key,
            &self.limits.slot_max,
            &self.limits.slot_held,
            &self.limits.debounce,
            &self.limits.not_before_ns,
            &self.limits.rate_runs,
            &self.limits.rate_per_ns,
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
        limits: limit_columns(run),
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
        let request = AdmitRequest::new(event, run, &self.inner.sql)?;
        match self.inner.batches.admissions.call(request).await {
            Some(Ok(true)) => return Ok(EventInsert::Inserted),
            // Left out of the batch (a taken dedup key, or a batch the
            // server refused): settled alone, which finds the duplicate or
            // says what is wrong.
            Some(Ok(false)) => {}
            Some(Err(error)) => return Err(error),
            None => return Err(backend("the admission batcher stopped")),
        }
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

/// An event and the run it starts, as the batch statement takes them.
pub(crate) struct AdmitRequest {
    id: uuid::Uuid,
    workflow_id: uuid::Uuid,
    trigger_id: Option<uuid::Uuid>,
    outcome: String,
    received_ns: i64,
    dedup_key: Option<String>,
    doc: String,
    run: Option<RunRow>,
}

/// The columns of a run to insert.
struct RunRow {
    id: uuid::Uuid,
    workflow_id: uuid::Uuid,
    version_id: uuid::Uuid,
    event_id: Option<uuid::Uuid>,
    status: &'static str,
    created_ns: i64,
    owner: Option<String>,
    expires: Option<String>,
    expires_ns: Option<i64>,
    epoch: i64,
    cancel_requested: bool,
    doc: String,
    limits: LimitColumns,
}

impl AdmitRequest {
    fn new(event: &Event, run: Option<&WorkflowRun>, sql: &Sql) -> Result<Self, StoreError> {
        let run = match run {
            None => None,
            Some(run) => {
                let p = run_params(run, sql)?;
                Some(RunRow {
                    id: *run.id.as_uuid(),
                    workflow_id: *run.workflow_id.as_uuid(),
                    version_id: *run.version_id.as_uuid(),
                    event_id: p.event_id,
                    status: p.status,
                    created_ns: p.created_ns,
                    owner: p.lease.owner.map(str::to_owned),
                    expires: p.lease.expires,
                    expires_ns: p.lease.expires_ns,
                    epoch: p.epoch,
                    cancel_requested: run.cancel_requested,
                    doc: p.doc,
                    limits: p.limits,
                })
            }
        };
        Ok(Self {
            id: *event.id.as_uuid(),
            workflow_id: *event.workflow_id.as_uuid(),
            trigger_id: event.trigger_id.map(|id| *id.as_uuid()),
            outcome: outcome_name(event.outcome.kind())?,
            received_ns: nanos(event.received_at),
            dedup_key: event.dedup_key.clone(),
            doc: to_doc(event)?,
            run,
        })
    }
}

/// What a batched admission answers: `true` if the event (and its run) was
/// stored, `false` if the batch left it out (the store then settles it
/// alone).
pub(crate) type AdmitAnswer = Result<bool, StoreError>;

/// Stores a batch of events and their runs as one statement: one round
/// trip, one transaction; then wakes other processes' engines if a run
/// was stored.
pub(crate) async fn run_admissions(
    pool: &deadpool_postgres::Pool,
    sql: &Sql,
    notifier: &Notifier,
    requests: Vec<AdmitRequest>,
) -> Vec<AdmitAnswer> {
    let n = requests.len();
    // Inserted in dedup-key order, so that two batches racing for the same
    // keys wait for each other instead of deadlocking.
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| {
        let (a, b) = (&requests[a], &requests[b]);
        (a.workflow_id, &a.dedup_key).cmp(&(b.workflow_id, &b.dedup_key))
    });
    let mut e_id = Vec::with_capacity(n);
    let mut e_workflow = Vec::with_capacity(n);
    let mut e_trigger = Vec::with_capacity(n);
    let mut e_outcome = Vec::with_capacity(n);
    let mut e_received = Vec::with_capacity(n);
    let mut e_key = Vec::with_capacity(n);
    let mut e_doc = Vec::with_capacity(n);
    let mut r_with = Vec::with_capacity(n);
    let mut r_id = Vec::with_capacity(n);
    let mut r_workflow = Vec::with_capacity(n);
    let mut r_version = Vec::with_capacity(n);
    let mut r_event = Vec::with_capacity(n);
    let mut r_status = Vec::with_capacity(n);
    let mut r_created = Vec::with_capacity(n);
    let mut r_owner = Vec::with_capacity(n);
    let mut r_expires = Vec::with_capacity(n);
    let mut r_expires_ns = Vec::with_capacity(n);
    let mut r_epoch = Vec::with_capacity(n);
    let mut r_cancel = Vec::with_capacity(n);
    let mut r_doc = Vec::with_capacity(n);
    let mut r_slot_key = Vec::with_capacity(n);
    let mut r_slot_max = Vec::with_capacity(n);
    let mut r_slot_held = Vec::with_capacity(n);
    let mut r_debounce = Vec::with_capacity(n);
    let mut r_not_before = Vec::with_capacity(n);
    let mut r_rate_runs = Vec::with_capacity(n);
    let mut r_rate_per = Vec::with_capacity(n);
    for &i in &order {
        let request = &requests[i];
        e_id.push(request.id);
        e_workflow.push(request.workflow_id);
        e_trigger.push(request.trigger_id);
        e_outcome.push(request.outcome.as_str());
        e_received.push(request.received_ns);
        e_key.push(request.dedup_key.as_deref());
        e_doc.push(request.doc.as_str());
        if let Some(run) = &request.run {
            r_with.push(request.id);
            r_id.push(run.id);
            r_workflow.push(run.workflow_id);
            r_version.push(run.version_id);
            r_event.push(run.event_id);
            r_status.push(run.status);
            r_created.push(run.created_ns);
            r_owner.push(run.owner.as_deref());
            r_expires.push(run.expires.as_deref());
            r_expires_ns.push(run.expires_ns);
            r_epoch.push(run.epoch);
            r_cancel.push(run.cancel_requested);
            r_doc.push(run.doc.as_str());
            r_slot_key.push(run.limits.slot_key.as_deref());
            r_slot_max.push(run.limits.slot_max);
            r_slot_held.push(run.limits.slot_held);
            r_debounce.push(run.limits.debounce);
            r_not_before.push(run.limits.not_before_ns);
            r_rate_runs.push(run.limits.rate_runs);
            r_rate_per.push(run.limits.rate_per_ns);
        }
    }
    let inserted = async {
        let client = pool.get().await.map_err(|e| Failure::Lost(Box::new(e)))?;
        let statement = client
            .prepare_cached(&sql.insert_batch)
            .await
            .map_err(Failure::from)?;
        let params: [&(dyn ToSql + Sync); 27] = [
            &e_id,
            &e_workflow,
            &e_trigger,
            &e_outcome,
            &e_received,
            &e_key,
            &e_doc,
            &r_with,
            &r_id,
            &r_workflow,
            &r_version,
            &r_event,
            &r_status,
            &r_created,
            &r_owner,
            &r_expires,
            &r_expires_ns,
            &r_epoch,
            &r_cancel,
            &r_doc,
            &r_slot_key,
            &r_slot_max,
            &r_slot_held,
            &r_debounce,
            &r_not_before,
            &r_rate_runs,
            &r_rate_per,
        ];
        let rows = client
            .query(&statement, &params)
            .await
            .map_err(Failure::from)?;
        Ok::<_, Failure>(
            rows.iter()
                .filter_map(|row| row.try_get::<_, Option<uuid::Uuid>>(0).ok().flatten())
                .collect::<std::collections::HashSet<_>>(),
        )
    }
    .await;
    match inserted {
        Ok(inserted) => {
            if requests
                .iter()
                .any(|r| r.run.is_some() && inserted.contains(&r.id))
            {
                notifier.wake_others();
            }
            requests
                .iter()
                .map(|r| Ok(inserted.contains(&r.id)))
                .collect()
        }
        Err(Failure::Refused) => (0..n).map(|_| Ok(false)).collect(),
        Err(Failure::Lost(error)) => {
            let message = error.to_string();
            (0..n).map(|_| Err(backend(message.clone()))).collect()
        }
    }
}
