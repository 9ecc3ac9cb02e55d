//! What only the PostgreSQL store does: typed open errors, migrations,
//! unique webhook paths, enqueue in a host's transaction, notifications,
//! and index use on a large table. Built only when `TASKFORGE_PG_URL` is
//! set (see `build.rs`).

#![cfg(taskforge_pg)]

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use serde_json::json;
use taskforge_core::store::{EventInsert, EventStore, RunStore, StoreError, WorkflowStore};
use taskforge_core::{
    Event, EventId, EventOutcome, EventSource, StepDefinition, Trigger, TriggerKind, WebhookConfig,
    Workflow, WorkflowDefinition, WorkflowRun, WorkflowVersion,
};
use taskforge_store_postgres::{OpenError, PostgresConfig, PostgresStore, SCHEMA_VERSION};
use tokio_postgres::NoTls;

use common::{fixture, fresh_schema, open, url, DropSchema};

/// Generous bound for things that take milliseconds; only a broken
/// notification path comes near it.
const PATIENCE: Duration = Duration::from_secs(30);

async fn setup(store: &PostgresStore) -> WorkflowVersion {
    let now = Utc::now();
    let workflow = Workflow::new("orders", now).expect("name");
    store.insert_workflow(&workflow).await.expect("workflow");
    let definition = WorkflowDefinition::new(vec![StepDefinition::new("ship", "ship")]);
    let version = WorkflowVersion::new(workflow.id, 1, definition, now);
    store.insert_version(&version).await.expect("version");
    version
}

async fn host_client() -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(&url(), NoTls)
        .await
        .expect("connect as the host");
    tokio::spawn(connection);
    client
}

#[tokio::test]
async fn unreachable_server_is_a_typed_error_without_the_password() {
    let config = PostgresConfig::new("postgres://app:hunter2@127.0.0.1:1/app")
        .connect_timeout(Duration::from_secs(5));
    let error = PostgresStore::connect_with(config)
        .await
        .expect_err("nothing listens on port 1");
    let message = error.to_string();
    assert!(matches!(error, OpenError::Connect { .. }), "{error:?}");
    assert!(message.contains("127.0.0.1:1"), "{message}");
    assert!(!message.contains("hunter2"), "{message}");
    assert!(!format!("{error:?}").contains("hunter2"));
}

#[tokio::test]
async fn bad_urls_and_schema_names_are_typed_errors() {
    for url in [
        "postgres://app:hunter2@127.0.0.1:notaport/app",
        "nonsense=1",
        "",
    ] {
        match PostgresStore::connect(url).await {
            Err(error @ (OpenError::InvalidUrl { .. } | OpenError::Connect { .. })) => {
                assert!(!error.to_string().contains("hunter2"), "{error}");
            }
            other => panic!("{url:?}: expected a typed error, got {other:?}"),
        }
    }
    for schema in ["", "pg_catalog", &"x".repeat(64)] {
        let error = PostgresStore::connect_with(PostgresConfig::new(url()).schema(schema))
            .await
            .expect_err("bad schema name");
        assert!(
            matches!(error, OpenError::InvalidSchema { .. }),
            "{error:?}"
        );
    }
}

#[tokio::test]
async fn processes_opening_at_once_migrate_once() {
    let schema = fresh_schema("tf_migrate");
    let _drop = DropSchema(schema.clone());
    let opens: Vec<_> = (0..8)
        .map(|_| {
            let schema = schema.clone();
            tokio::spawn(async move { open(&schema).await })
        })
        .collect();
    for open in opens {
        open.await.expect("open task");
    }
    let client = host_client().await;
    let rows = client
        .query(
            &format!("SELECT version FROM \"{schema}\".taskforge_migrations ORDER BY version"),
            &[],
        )
        .await
        .expect("read migrations");
    let versions: Vec<i64> = rows.iter().map(|r| r.get(0)).collect();
    assert_eq!(versions, (1..=SCHEMA_VERSION).collect::<Vec<_>>());
}

#[tokio::test]
async fn a_newer_schema_is_refused() {
    let schema = fresh_schema("tf_newer");
    let _drop = DropSchema(schema.clone());
    drop(open(&schema).await);
    let client = host_client().await;
    client
        .execute(
            &format!(
                "INSERT INTO \"{schema}\".taskforge_migrations (version, crate_version) \
                 VALUES ($1, '99.0.0')"
            ),
            &[&(SCHEMA_VERSION + 1)],
        )
        .await
        .expect("pretend a newer release migrated");
    let error = PostgresStore::connect_with(PostgresConfig::new(url()).schema(&schema))
        .await
        .expect_err("newer schema");
    assert!(
        matches!(error, OpenError::NewerSchema { found, supported, .. }
            if found == SCHEMA_VERSION + 1 && supported == SCHEMA_VERSION),
        "{error:?}"
    );
}

#[tokio::test]
async fn webhook_paths_are_unique() {
    let fixture = fixture().await;
    let store = fixture.store();
    let version = setup(store).await;
    // Each under a name of its own: only the path is shared.
    let webhook = |path: &str| {
        let config: WebhookConfig =
            serde_json::from_value(json!({ "path": path })).expect("webhook config");
        Trigger::new(
            version.workflow_id,
            TriggerKind::Webhook(config),
            Utc::now(),
        )
        .with_name(uuid::Uuid::now_v7().simple().to_string())
    };
    store
        .insert_trigger(&webhook("github"))
        .await
        .expect("first");
    match store.insert_trigger(&webhook("github")).await {
        Err(StoreError::AlreadyExists { kind, .. }) => assert_eq!(kind, "webhook path"),
        other => panic!("expected the path to be taken, got {other:?}"),
    }
    let mut other = webhook("gitlab");
    store.insert_trigger(&other).await.expect("another path");
    other.kind = webhook("github").kind;
    assert!(matches!(
        store.update_trigger(&other).await,
        Err(StoreError::AlreadyExists { .. })
    ));
}

#[tokio::test]
async fn a_run_enqueued_in_the_hosts_transaction_exists_iff_it_commits() {
    let fixture = fixture().await;
    let store = fixture.store();
    let version = setup(store).await;
    let mut host = host_client().await;
    let mut wakeups = store.notifications();

    let rolled_back = WorkflowRun::new(&version, json!({ "order": 1 }), Utc::now());
    let tx = host.transaction().await.expect("begin");
    store
        .insert_run_in(&tx, &rolled_back)
        .await
        .expect("insert");
    tx.rollback().await.expect("rollback");
    assert!(store
        .get_run(rolled_back.id)
        .await
        .is_err_and(|e| e.is_not_found()));

    let committed = WorkflowRun::new(&version, json!({ "order": 2 }), Utc::now());
    let tx = host.transaction().await.expect("begin");
    store.insert_run_in(&tx, &committed).await.expect("insert");
    // Not visible to the store before the host commits.
    assert!(store
        .get_run(committed.id)
        .await
        .is_err_and(|e| e.is_not_found()));
    tx.commit().await.expect("commit");
    assert_eq!(store.get_run(committed.id).await.expect("run"), committed);
    tokio::time::timeout(PATIENCE, wakeups.notified())
        .await
        .expect("the commit notifies listeners");

    // An event and its run, the same way.
    let run = WorkflowRun::new(&version, json!({ "order": 3 }), Utc::now());
    let event = Event {
        id: EventId::new(),
        workflow_id: version.workflow_id,
        trigger_id: None,
        source: EventSource::Manual,
        received_at: Utc::now(),
        dedup_key: Some("order-3".to_owned()),
        payload: Arc::new(json!({ "order": 3 })),
        metadata: BTreeMap::new(),
        outcome: EventOutcome::RunStarted { run_id: run.id },
    };
    let tx = host.transaction().await.expect("begin");
    let inserted = store.insert_event_in(&tx, &event, Some(&run)).await;
    assert!(
        matches!(inserted, Ok(EventInsert::Inserted)),
        "{inserted:?}"
    );
    tx.rollback().await.expect("rollback");
    assert!(store
        .get_event(event.id)
        .await
        .is_err_and(|e| e.is_not_found()));
    assert!(store.get_run(run.id).await.is_err_and(|e| e.is_not_found()));
    let tx = host.transaction().await.expect("begin");
    store
        .insert_event_in(&tx, &event, Some(&run))
        .await
        .expect("insert");
    tx.commit().await.expect("commit");
    assert_eq!(store.get_event(event.id).await.expect("event"), event);
    assert_eq!(store.get_run(run.id).await.expect("run"), run);
}

#[tokio::test]
async fn a_run_inserted_through_one_store_wakes_another() {
    let fixture = fixture().await;
    let writer = fixture.store();
    let reader = open(writer.schema()).await;
    let version = setup(writer).await;
    let mut wakeups = reader.notifications();
    let run = WorkflowRun::new(&version, json!({}), Utc::now());
    writer.insert_run(&run).await.expect("insert");
    tokio::time::timeout(PATIENCE, wakeups.notified())
        .await
        .expect("woken by the other store's insert");
    assert_eq!(
        reader.list_claimable(Utc::now(), 10).await.expect("list"),
        vec![run.id]
    );
}

/// The hot queries use indexes on a table of 100k runs and events.
#[tokio::test]
async fn hot_queries_use_indexes_on_100k_runs() {
    let fixture = fixture().await;
    let store = fixture.store();
    let schema = format!("\"{}\"", store.schema());
    let client = host_client().await;
    // Rows straight from SQL: the planner only looks at the columns.
    client
        .batch_execute(&format!(
            "INSERT INTO {schema}.runs (id, workflow_id, version_id, event_id, status, created_ns,
                 lease_epoch, cancel_requested, doc)
             SELECT gen_random_uuid(), ('00000000-0000-0000-0000-0000000000' || lpad((i % 100)::text, 2, '0'))::uuid,
                 gen_random_uuid(), gen_random_uuid(),
                 CASE WHEN i % 100 = 0 THEN 'queued' ELSE 'succeeded' END, i, 1, false, '{{}}'
             FROM generate_series(1, 100000) AS i;
             INSERT INTO {schema}.events (id, workflow_id, trigger_id, outcome, received_ns, dedup_key, doc)
             SELECT gen_random_uuid(), ('00000000-0000-0000-0000-0000000000' || lpad((i % 100)::text, 2, '0'))::uuid,
                 gen_random_uuid(), 'run_started', i, 'key-' || i, '{{}}'
             FROM generate_series(1, 100000) AS i;
             INSERT INTO {schema}.step_runs (run_id, step_index, attempt, terminal, doc)
             SELECT id, 0, 1, true, '{{}}' FROM {schema}.runs;
             ANALYZE {schema}.runs; ANALYZE {schema}.events; ANALYZE {schema}.step_runs;"
        ))
        .await
        .expect("fill");
    let wf = "'00000000-0000-0000-0000-000000000007'";
    let id = "'00000000-0000-0000-0000-000000000001'";
    let queries = [
        format!("SELECT id FROM {schema}.runs WHERE status IN ('queued', 'running') AND (lease_owner IS NULL OR lease_expires_ns <= 5) ORDER BY id LIMIT 64"),
        format!("SELECT doc FROM {schema}.runs WHERE id = {id}"),
        format!("SELECT doc FROM {schema}.runs WHERE workflow_id = {wf} ORDER BY id LIMIT 101"),
        format!("SELECT doc FROM {schema}.runs WHERE status = 'queued' ORDER BY id DESC LIMIT 101"),
        format!("SELECT doc FROM {schema}.runs WHERE workflow_id = {wf} AND status = 'queued' ORDER BY id LIMIT 101"),
        format!("SELECT doc FROM {schema}.runs WHERE event_id = {id} ORDER BY id LIMIT 101"),
        format!("SELECT doc FROM {schema}.runs ORDER BY id LIMIT 101"),
        format!("SELECT doc FROM {schema}.step_runs WHERE run_id = {id} ORDER BY step_index, attempt"),
        format!("SELECT doc FROM {schema}.events WHERE workflow_id = {wf} ORDER BY id DESC LIMIT 101"),
        format!("SELECT doc FROM {schema}.events WHERE trigger_id = {id} ORDER BY id LIMIT 101"),
        format!("SELECT doc FROM {schema}.events WHERE workflow_id = {wf} AND dedup_key = 'key-7'"),
        format!("SELECT doc FROM {schema}.events ORDER BY id LIMIT 101"),
    ];
    for query in queries {
        let plan: Vec<String> = client
            .query(&format!("EXPLAIN {query}"), &[])
            .await
            .expect("explain")
            .iter()
            .map(|row| row.get(0))
            .collect();
        let plan = plan.join("\n");
        assert!(!plan.contains("Seq Scan"), "{query}\n{plan}");
    }
}

/// Claims and commits made at the same time go to the server in batches;
/// within a batch each keeps the contract: of racing claims of a run one
/// wins, a stale fence is refused, a repeated commit is accepted once
/// applied, and a refused commit writes nothing.
#[tokio::test]
async fn batched_claims_and_commits_keep_the_contract() {
    use taskforge_core::store::{Fence, RunTransition, StepTransition};
    use taskforge_core::{RunStatus, StepRun};

    let fixture = fixture().await;
    let store = Arc::new(fixture.store().clone());
    let version = setup(&store).await;
    let now = Utc::now();
    let mut runs = Vec::new();
    for i in 0..40 {
        let run = WorkflowRun::new(&version, json!({ "i": i }), now);
        store.insert_run(&run).await.expect("insert");
        runs.push(run);
    }
    // Eight claimers per run, all at once.
    let mut claims = Vec::new();
    for run in &runs {
        for k in 0..8 {
            let (store, id) = (Arc::clone(&store), run.id);
            claims.push(tokio::spawn(async move {
                let owner = format!("engine-{k}");
                (
                    id,
                    store
                        .claim_run(id, &owner, now, now + chrono::TimeDelta::seconds(60))
                        .await,
                )
            }));
        }
    }
    let mut claimed = BTreeMap::new();
    for claim in claims {
        let (id, result) = claim.await.expect("task");
        match result {
            Ok(run) => assert!(claimed.insert(id, run).is_none(), "run {id} claimed twice"),
            Err(error) => assert!(error.is_conflict(), "{error:?}"),
        }
    }
    assert_eq!(claimed.len(), runs.len(), "every run claimed once");

    // Per run, at once: the owner's commit, the same commit again (a retry
    // after a lost reply), and a commit under a stale fence.
    let mut commits = Vec::new();
    for run in claimed.values() {
        let fence = run.fence();
        let mut started = run.clone();
        started
            .transition(RunTransition::Start, now)
            .expect("start");
        let step = StepRun::start(run.id, "ship", 0, 1, now);
        let stale = Fence {
            epoch: fence.epoch - 1,
            ..fence
        };
        for (label, fence) in [("owner", fence), ("retry", fence), ("stale", stale)] {
            let (store, started, step) = (Arc::clone(&store), started.clone(), step.clone());
            commits.push(tokio::spawn(async move {
                let result = store.commit(fence, Some(&started), &[step]).await;
                (label, result)
            }));
        }
    }
    for commit in commits {
        let (label, result) = commit.await.expect("task");
        match label {
            "stale" => assert!(
                matches!(&result, Err(e) if e.is_conflict()),
                "stale: {result:?}"
            ),
            _ => assert!(result.is_ok(), "{label}: {result:?}"),
        }
    }
    for run in claimed.values() {
        let stored = store.get_run(run.id).await.expect("get");
        assert_eq!(stored.status, RunStatus::Running);
        assert_eq!(stored.lease_epoch, run.lease_epoch);
        let steps = store.list_step_runs(run.id).await.expect("steps");
        assert_eq!(steps.len(), 1);
    }

    // A finished attempt is never rewritten, even in a batch with others.
    let mut finishes = Vec::new();
    for run in claimed.values() {
        let mut running = store.get_run(run.id).await.expect("get");
        let fence = running.fence();
        let mut step = StepRun::start(run.id, "ship", 0, 1, now);
        step.transition(StepTransition::Succeed, now)
            .expect("succeed");
        running
            .transition(RunTransition::Succeed, now)
            .expect("finish");
        let store = Arc::clone(&store);
        finishes.push(tokio::spawn(async move {
            store
                .commit(fence, Some(&running), &[step])
                .await
                .expect("finish");
            let rewrite = StepRun::start(running.id, "ship", 0, 1, now);
            let fence = Fence {
                status: RunStatus::Running,
                ..fence
            };
            store.commit(fence, None, &[rewrite]).await
        }));
    }
    for finish in finishes {
        let result = finish.await.expect("task");
        assert!(matches!(&result, Err(e) if e.is_conflict()), "{result:?}");
    }
}
