//! The schema: versioned migrations embedded in the crate, applied on open.

use tokio_postgres::Client;

use crate::error::OpenError;

/// Every migration, in order; the one at index `i` takes the schema from
/// version `i` to `i + 1`. Released migrations are never edited: a change
/// is a new file.
const MIGRATIONS: &[&str] = &[
    include_str!("../migrations/0001_initial.sql"),
    include_str!("../migrations/0002_batches.sql"),
    include_str!("../migrations/0003_fillfactor.sql"),
    include_str!("../migrations/0004_secrets.sql"),
    include_str!("../migrations/0005_step_logs.sql"),
    include_str!("../migrations/0006_limits.sql"),
    include_str!("../migrations/0007_waits.sql"),
];

/// What a migration writes where the store's schema (quoted) goes: function
/// bodies name their tables with it.
const SCHEMA_TOKEN: &str = "@schema@";

/// The schema version this release of the crate writes and reads.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// `name` as a quoted SQL identifier, after checking it can be one.
pub(crate) fn quote_identifier(name: &str) -> Result<String, OpenError> {
    let invalid = |reason: &str| OpenError::InvalidSchema {
        schema: name.to_owned(),
        reason: reason.to_owned(),
    };
    if name.is_empty() {
        return Err(invalid("it is empty"));
    }
    // PostgreSQL truncates longer identifiers (NAMEDATALEN - 1), which
    // would silently make two names one schema.
    if name.len() > 63 {
        return Err(invalid("it is longer than 63 bytes"));
    }
    if name.contains('\0') {
        return Err(invalid("it contains a NUL character"));
    }
    if name.starts_with("pg_") {
        return Err(invalid("names starting with pg_ are reserved"));
    }
    Ok(format!("\"{}\"", name.replace('"', "\"\"")))
}

/// Creates the schema if missing and applies the migrations it lacks, in
/// one transaction under an advisory lock keyed by the schema name, so
/// that processes opening one store at once apply each migration once.
/// Refuses a schema newer than [`SCHEMA_VERSION`].
pub(crate) async fn migrate(
    client: &mut Client,
    schema: &str,
    address: &str,
) -> Result<(), OpenError> {
    let quoted = quote_identifier(schema)?;
    let failed = |source| OpenError::Migrate {
        address: address.to_owned(),
        schema: schema.to_owned(),
        source,
    };
    let tx = client.transaction().await.map_err(failed)?;
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended('taskforge-migrate:' || $1, 0))",
        &[&schema],
    )
    .await
    .map_err(failed)?;
    tx.batch_execute(&format!(
        "CREATE SCHEMA IF NOT EXISTS {quoted};
         SET LOCAL search_path TO {quoted};
         CREATE TABLE IF NOT EXISTS taskforge_migrations (
             version bigint PRIMARY KEY,
             crate_version text NOT NULL,
             applied_at timestamptz NOT NULL DEFAULT now()
         );"
    ))
    .await
    .map_err(failed)?;
    let found: i64 = tx
        .query_one(
            "SELECT coalesce(max(version), 0) FROM taskforge_migrations",
            &[],
        )
        .await
        .map_err(failed)?
        .get(0);
    if found > SCHEMA_VERSION {
        return Err(OpenError::NewerSchema {
            address: address.to_owned(),
            schema: schema.to_owned(),
            found,
            supported: SCHEMA_VERSION,
        });
    }
    let pending = MIGRATIONS
        .iter()
        .enumerate()
        .skip(usize::try_from(found).unwrap_or(0));
    for (index, migration) in pending {
        let version = i64::try_from(index).unwrap_or(i64::MAX) + 1;
        tracing::info!(schema, version, "applying taskforge migration");
        tx.batch_execute(&migration.replace(SCHEMA_TOKEN, &quoted))
            .await
            .map_err(failed)?;
        tx.execute(
            "INSERT INTO taskforge_migrations (version, crate_version) VALUES ($1, $2)",
            &[&version, &env!("CARGO_PKG_VERSION")],
        )
        .await
        .map_err(failed)?;
    }
    tx.commit().await.map_err(failed)
}

/// The SQL the store runs, with table names qualified by the store's
/// schema (so statements work on any connection, whatever its
/// `search_path`, including a host's own transaction).
#[derive(Debug)]
pub(crate) struct Sql {
    pub(crate) channel: String,
    pub(crate) insert_workflow: String,
    pub(crate) lock_workflow: String,
    pub(crate) update_workflow: String,
    pub(crate) get_workflow: String,
    pub(crate) find_workflow: String,
    pub(crate) list_workflows: String,
    pub(crate) insert_version: String,
    pub(crate) workflow_exists: String,
    pub(crate) version_exists: String,
    pub(crate) get_version: String,
    pub(crate) get_version_by_number: String,
    pub(crate) latest_version: String,
    pub(crate) list_versions: String,
    pub(crate) insert_trigger: String,
    pub(crate) lock_trigger: String,
    pub(crate) trigger_name_taken: String,
    pub(crate) delete_trigger: String,
    pub(crate) update_trigger: String,
    pub(crate) get_trigger: String,
    pub(crate) list_triggers: String,
    pub(crate) list_workflow_triggers: String,
    pub(crate) insert_event: String,
    pub(crate) get_event: String,
    pub(crate) find_event: String,
    pub(crate) insert_run: String,
    pub(crate) notify: String,
    pub(crate) get_run: String,
    pub(crate) list_claimable: String,
    pub(crate) claim_run: String,
    pub(crate) lease_state: String,
    pub(crate) renew_lease: String,
    pub(crate) lock_run: String,
    pub(crate) upsert_steps: String,
    pub(crate) update_run: String,
    pub(crate) request_cancel: String,
    pub(crate) run_signals: String,
    pub(crate) signal_run: String,
    pub(crate) claim_batch: String,
    pub(crate) commit_batch: String,
    pub(crate) insert_batch: String,
    pub(crate) list_step_runs: String,
    pub(crate) lock_run_record: String,
    pub(crate) limit_lock: String,
    pub(crate) slot_state: String,
    pub(crate) key_books: String,
    pub(crate) rate_starts: String,
    pub(crate) rate_starts_of: String,
    pub(crate) put_rate_starts: String,
    pub(crate) claim_with_slot: String,
    pub(crate) events_table: String,
    pub(crate) runs_table: String,
    pub(crate) tokens_table: String,
    pub(crate) secrets_table: String,
    pub(crate) logs_table: String,
}

/// A run is unfinished (the predicate of the partial index on keys).
const UNFINISHED: &str = "status NOT IN ('succeeded', 'failed', 'cancelled', 'timed_out')";

/// The columns a run is read from, in the order `codec::run` expects (it
/// reads `signals` and `wake_ns` by name, so a row without them, such as
/// a batched claim's, still reads).
pub(crate) const RUN_COLUMNS: &str =
    "doc, lease_owner, lease_expires, lease_epoch, cancel_requested, signals, wake_ns";

impl Sql {
    pub(crate) fn new(schema: &str) -> Result<Self, OpenError> {
        let s = quote_identifier(schema)?;
        let run_columns = RUN_COLUMNS;
        Ok(Self {
            channel: channel(schema),
            insert_workflow: format!("INSERT INTO {s}.workflows (id, name, doc) VALUES ($1, $2, $3)"),
            lock_workflow: format!("SELECT doc FROM {s}.workflows WHERE id = $1 FOR UPDATE"),
            update_workflow: format!("UPDATE {s}.workflows SET doc = $2 WHERE id = $1"),
            get_workflow: format!("SELECT doc FROM {s}.workflows WHERE id = $1"),
            find_workflow: format!("SELECT doc FROM {s}.workflows WHERE name = $1"),
            list_workflows: format!("SELECT doc FROM {s}.workflows ORDER BY id"),
            // The number must follow the latest one; of racing publishers of
            // one number, the unique (workflow_id, number) lets one win.
            insert_version: format!(
                "INSERT INTO {s}.versions (id, workflow_id, number, doc)
                 SELECT $1, $2, $3, $4
                 WHERE $3 = (SELECT coalesce(max(number), 0) + 1
                             FROM {s}.versions WHERE workflow_id = $2)"
            ),
            workflow_exists: format!("SELECT 1 FROM {s}.workflows WHERE id = $1"),
            version_exists: format!("SELECT 1 FROM {s}.versions WHERE id = $1"),
            get_version: format!("SELECT doc FROM {s}.versions WHERE id = $1"),
            get_version_by_number: format!(
                "SELECT doc FROM {s}.versions WHERE workflow_id = $1 AND number = $2"
            ),
            latest_version: format!(
                "SELECT doc FROM {s}.versions WHERE workflow_id = $1 ORDER BY number DESC LIMIT 1"
            ),
            list_versions: format!(
                "SELECT doc FROM {s}.versions WHERE workflow_id = $1 ORDER BY number"
            ),
            insert_trigger: format!(
                "INSERT INTO {s}.triggers (id, workflow_id, webhook_path, name, doc) VALUES ($1, $2, $3, $4, $5)"
            ),
            trigger_name_taken: format!(
                "SELECT 1 FROM {s}.triggers WHERE workflow_id = $1 AND name = $2"
            ),
            lock_trigger: format!("SELECT doc FROM {s}.triggers WHERE id = $1 FOR UPDATE"),
            delete_trigger: format!("DELETE FROM {s}.triggers WHERE id = $1"),
            update_trigger: format!(
                "UPDATE {s}.triggers SET webhook_path = $2, name = $3, doc = $4 WHERE id = $1"
            ),
            get_trigger: format!("SELECT doc FROM {s}.triggers WHERE id = $1"),
            list_triggers: format!("SELECT doc FROM {s}.triggers ORDER BY id"),
            list_workflow_triggers: format!(
                "SELECT doc FROM {s}.triggers WHERE workflow_id = $1 ORDER BY id"
            ),
            // A racing insert of one dedup key waits for the winner and then
            // inserts nothing; the caller reads the winner's event.
            insert_event: format!(
                "INSERT INTO {s}.events (id, workflow_id, trigger_id, outcome, received_ns, dedup_key, doc)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)
                 ON CONFLICT (workflow_id, dedup_key) DO NOTHING"
            ),
            get_event: format!("SELECT doc FROM {s}.events WHERE id = $1"),
            find_event: format!(
                "SELECT doc FROM {s}.events WHERE workflow_id = $1 AND dedup_key = $2"
            ),
            // The notification goes out when (and only if) the insert commits.
            insert_run: format!(
                "WITH inserted AS (
                     INSERT INTO {s}.runs (id, workflow_id, version_id, event_id, status, created_ns,
                         lease_owner, lease_expires, lease_expires_ns, lease_epoch, cancel_requested, doc,
                         slot_key, slot_max, slot_held, debounce, not_before_ns, rate_runs, rate_per_ns)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12,
                         $14, $15, $16, $17, $18, $19, $20)
                     RETURNING id)
                 SELECT pg_notify($13, '') FROM inserted"
            ),
            notify: "SELECT pg_notify($1, '')".to_owned(),
            get_run: format!("SELECT {run_columns} FROM {s}.runs WHERE id = $1"),
            // A page of claimable runs (by status and lease), with what the
            // limits' picker reads of them.
            list_claimable: format!(
                "SELECT id, workflow_id, lease_epoch, cancel_requested, status, slot_key, slot_max,
                     slot_held, debounce, not_before_ns, rate_runs, rate_per_ns
                 FROM {s}.runs
                 WHERE (status IN ('queued', 'running')
                        OR (status = 'waiting' AND wake_ns <= $1)
                        OR (status = 'waiting' AND cancel_requested))
                   AND (lease_owner IS NULL OR lease_expires_ns <= $1)
                   AND id > $3
                 ORDER BY id LIMIT $2"
            ),
            // One conditional UPDATE: the row lock makes racing claims wait,
            // and a waiter re-checks the condition on the winner's row, so
            // exactly one claim matches. A first claim under limits is not
            // made here (see `claim_with_slot`).
            claim_run: format!(
                "UPDATE {s}.runs
                 SET lease_owner = $2, lease_expires = $3, lease_expires_ns = $4,
                     lease_epoch = lease_epoch + 1
                 WHERE id = $1
                   AND (status IN ('queued', 'running')
                        OR (status = 'waiting' AND (wake_ns <= $5 OR cancel_requested)))
                   AND (lease_owner IS NULL OR lease_expires_ns <= $5)
                   AND (lease_epoch > 0 OR cancel_requested OR status <> 'queued'
                        OR (slot_key IS NULL AND rate_runs IS NULL))
                 RETURNING {run_columns}"
            ),
            lease_state: format!(
                "SELECT status, lease_owner, lease_expires, lease_epoch,
                     (slot_key IS NOT NULL OR rate_runs IS NOT NULL) AND lease_epoch = 0
                         AND NOT cancel_requested AND status = 'queued'
                 FROM {s}.runs WHERE id = $1"
            ),
            renew_lease: format!(
                "UPDATE {s}.runs SET lease_expires = $3, lease_expires_ns = $4
                 WHERE id = $1 AND lease_epoch = $2 AND status IN ('queued', 'running', 'waiting')
                   AND lease_owner IS NOT NULL
                 RETURNING {run_columns}"
            ),
            lock_run: format!(
                "SELECT workflow_id, version_id, event_id, status, lease_epoch, cancel_requested
                 FROM {s}.runs WHERE id = $1 FOR UPDATE"
            ),
            // A stored attempt in a terminal status is left alone; the
            // caller compares the rows written with the rows given.
            upsert_steps: format!(
                "INSERT INTO {s}.step_runs (run_id, step_index, attempt, terminal, doc)
                 SELECT $1, * FROM unnest($2::bigint[], $3::bigint[], $4::boolean[], $5::text[])
                 ON CONFLICT (run_id, step_index, attempt) DO UPDATE
                 SET terminal = excluded.terminal, doc = excluded.doc
                 WHERE NOT {s}.step_runs.terminal"
            ),
            update_run: format!(
                "UPDATE {s}.runs
                 SET status = $2, created_ns = $3, lease_owner = $4, lease_expires = $5,
                     lease_expires_ns = $6, cancel_requested = cancel_requested OR $7, doc = $8,
                     wake_ns = $9
                 WHERE id = $1"
            ),
            request_cancel: format!(
                "UPDATE {s}.runs
                 SET cancel_requested = cancel_requested OR status IN ('queued', 'running', 'waiting')
                 WHERE id = $1
                 RETURNING {run_columns}"
            ),
            run_signals: format!("SELECT signals FROM {s}.runs WHERE id = $1"),
            // A signal changes only these (see migration 7).
            signal_run: format!("UPDATE {s}.runs SET signals = $2, wake_ns = $3 WHERE id = $1"),
            claim_batch: format!(
                "SELECT * FROM {s}.taskforge_claim($1::uuid[], $2::text[], $3::text[], $4::bigint[], $5::bigint[])"
            ),
            commit_batch: format!(
                "SELECT {s}.taskforge_commit($1::uuid[], $2::bigint[], $3::text[], $4::boolean[],
                     $5::uuid[], $6::uuid[], $7::uuid[], $8::bigint[], $9::text[], $10::bigint[],
                     $11::text[], $12::text[], $13::bigint[], $14::boolean[], $15::text[],
                     $16::integer[], $17::bigint[], $18::bigint[], $19::boolean[], $20::text[])"
            ),
            // Events and the runs they start, many at once: a run is inserted
            // only with its event (`with_event`), and an event whose dedup
            // key is taken is left out (the caller settles it alone).
            // Listeners are notified after the commit (see `notify`).
            insert_batch: format!(
                "WITH ev AS (
                     INSERT INTO {s}.events (id, workflow_id, trigger_id, outcome, received_ns, dedup_key, doc)
                     SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::text[], $5::bigint[],
                         $6::text[], $7::text[])
                     ON CONFLICT (workflow_id, dedup_key) DO NOTHING
                     RETURNING id),
                 ru AS (
                     INSERT INTO {s}.runs (id, workflow_id, version_id, event_id, status, created_ns,
                         lease_owner, lease_expires, lease_expires_ns, lease_epoch, cancel_requested, doc,
                         slot_key, slot_max, slot_held, debounce, not_before_ns, rate_runs, rate_per_ns)
                     SELECT r.id, r.workflow_id, r.version_id, r.event_id, r.status, r.created_ns,
                         r.lease_owner, r.lease_expires, r.lease_expires_ns, r.lease_epoch,
                         r.cancel_requested, r.doc, r.slot_key, r.slot_max, r.slot_held, r.debounce,
                         r.not_before_ns, r.rate_runs, r.rate_per_ns
                     FROM unnest($8::uuid[], $9::uuid[], $10::uuid[], $11::uuid[], $12::uuid[],
                         $13::text[], $14::bigint[], $15::text[], $16::text[], $17::bigint[],
                         $18::bigint[], $19::boolean[], $20::text[], $21::text[], $22::bigint[],
                         $23::boolean[], $24::boolean[], $25::bigint[], $26::bigint[], $27::bigint[])
                         AS r (with_event, id, workflow_id, version_id, event_id, status, created_ns,
                             lease_owner, lease_expires, lease_expires_ns, lease_epoch,
                             cancel_requested, doc, slot_key, slot_max, slot_held, debounce,
                             not_before_ns, rate_runs, rate_per_ns)
                     WHERE r.with_event IN (SELECT id FROM ev)
                     RETURNING 1)
                 SELECT id FROM ev"
            ),
            list_step_runs: format!(
                "SELECT doc FROM {s}.step_runs WHERE run_id = $1 ORDER BY step_index, attempt"
            ),
            lock_run_record: format!("SELECT {run_columns} FROM {s}.runs WHERE id = $1 FOR UPDATE"),
            // Orders the first claims of one key (or one rate-limited
            // workflow) by every process, to the end of the transaction.
            limit_lock: "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))".to_owned(),
            // What rules::check_slot reads of key $1 for run $2 at $3:
            // its runs holding a slot, the waiting runs ahead of it (at most
            // $4), and whether a waiting run is behind it.
            slot_state: format!(
                "SELECT
                     (SELECT count(*) FROM {s}.runs
                      WHERE slot_key = $1 AND {UNFINISHED} AND slot_held AND id <> $2),
                     (SELECT count(*) FROM (
                          SELECT 1 FROM {s}.runs
                          WHERE slot_key = $1 AND {UNFINISHED} AND NOT slot_held
                            AND lease_epoch = 0 AND id < $2 AND NOT cancel_requested
                            AND coalesce(not_before_ns, $3) <= $3
                          LIMIT $4) ahead),
                     EXISTS (SELECT 1 FROM {s}.runs
                             WHERE slot_key = $1 AND {UNFINISHED} AND NOT slot_held
                               AND lease_epoch = 0 AND id > $2 AND NOT cancel_requested)"
            ),
            // Per key of $1: its runs holding a slot, and its newest waiting
            // run with no cancellation asked for.
            key_books: format!(
                "SELECT k,
                     (SELECT count(*) FROM {s}.runs
                      WHERE slot_key = k AND {UNFINISHED} AND slot_held),
                     (SELECT id FROM {s}.runs
                      WHERE slot_key = k AND {UNFINISHED} AND NOT slot_held
                        AND lease_epoch = 0 AND NOT cancel_requested
                      ORDER BY id DESC LIMIT 1)
                 FROM unnest($1::text[]) AS k"
            ),
            rate_starts: format!("SELECT starts FROM {s}.rate_starts WHERE workflow_id = $1"),
            rate_starts_of: format!(
                "SELECT workflow_id, starts FROM {s}.rate_starts WHERE workflow_id = ANY($1)"
            ),
            put_rate_starts: format!(
                "INSERT INTO {s}.rate_starts (workflow_id, starts) VALUES ($1, $2)
                 ON CONFLICT (workflow_id) DO UPDATE SET starts = excluded.starts"
            ),
            // The claim of `claim_with_slot`, decided in Rust: the record is
            // rewritten too, for the slot it records.
            claim_with_slot: format!(
                "UPDATE {s}.runs
                 SET lease_owner = $2, lease_expires = $3, lease_expires_ns = $4, lease_epoch = $5,
                     cancel_requested = $6, slot_held = $7, doc = $8
                 WHERE id = $1"
            ),
            events_table: format!("{s}.events"),
            runs_table: format!("{s}.runs"),
            tokens_table: format!("{s}.tokens"),
            secrets_table: format!("{s}.secrets"),
            logs_table: format!("{s}.step_logs"),
        })
    }
}

/// The LISTEN/NOTIFY channel of a schema: a channel name is at most 63
/// bytes, so a long schema name is cut (two schemas sharing a channel only
/// wake each other's engines for nothing).
fn channel(schema: &str) -> String {
    let mut channel = format!("taskforge:{schema}");
    while channel.len() > 63 {
        channel.pop();
    }
    channel
}
