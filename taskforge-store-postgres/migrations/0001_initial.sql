-- Taskforge schema, version 1. Applied inside one transaction, with the
-- search_path set to the store's schema, under an advisory lock.
--
-- Every record is kept whole as serde JSON text in `doc` (text, not jsonb:
-- jsonb rejects \u0000 and rewrites numbers, and the store promises an
-- exact round trip). The other columns are copies of the fields that
-- queries filter, order or lock on, or that change without a rewrite of
-- the record (a run's lease, lease epoch and cancel flag). Times that
-- queries compare are nanoseconds since the Unix epoch (bigint), so
-- comparisons are exactly those of the Rust values.

CREATE TABLE workflows (
    id uuid PRIMARY KEY,
    name text NOT NULL,
    doc text NOT NULL,
    CONSTRAINT workflows_name_key UNIQUE (name)
);

CREATE TABLE versions (
    id uuid PRIMARY KEY,
    workflow_id uuid NOT NULL REFERENCES workflows (id),
    number bigint NOT NULL,
    doc text NOT NULL,
    CONSTRAINT versions_number_key UNIQUE (workflow_id, number)
);

CREATE TABLE triggers (
    id uuid PRIMARY KEY,
    workflow_id uuid NOT NULL REFERENCES workflows (id),
    -- The path of a webhook trigger (NULL for other kinds): unique, so two
    -- processes creating one path at once cannot both succeed.
    webhook_path text,
    -- The trigger's name, unique within its workflow (NULL for a trigger
    -- stored without one).
    name text,
    doc text NOT NULL,
    CONSTRAINT triggers_webhook_path_key UNIQUE (webhook_path),
    CONSTRAINT triggers_name_key UNIQUE (workflow_id, name)
);
CREATE INDEX triggers_workflow_idx ON triggers (workflow_id, id);

CREATE TABLE events (
    id uuid PRIMARY KEY,
    workflow_id uuid NOT NULL,
    trigger_id uuid,
    outcome text NOT NULL,
    received_ns bigint NOT NULL,
    -- Unique per workflow: of racing inserts of one key exactly one wins
    -- (cron slots are dedup keys too, so each slot fires once).
    dedup_key text,
    doc text NOT NULL,
    CONSTRAINT events_dedup_key UNIQUE (workflow_id, dedup_key)
);
CREATE INDEX events_workflow_idx ON events (workflow_id, id);
CREATE INDEX events_trigger_idx ON events (trigger_id, id) WHERE trigger_id IS NOT NULL;

CREATE TABLE runs (
    id uuid PRIMARY KEY,
    workflow_id uuid NOT NULL,
    version_id uuid NOT NULL,
    event_id uuid,
    status text NOT NULL,
    created_ns bigint NOT NULL,
    -- The lease: owner, expiry as serde JSON (exact), expiry in nanoseconds
    -- (compared by claims). All NULL when the run holds no lease.
    lease_owner text,
    lease_expires text,
    lease_expires_ns bigint,
    lease_epoch bigint NOT NULL,
    cancel_requested boolean NOT NULL,
    doc text NOT NULL
);
CREATE INDEX runs_workflow_idx ON runs (workflow_id, id);
CREATE INDEX runs_status_idx ON runs (status, id);
CREATE INDEX runs_workflow_status_idx ON runs (workflow_id, status, id);
CREATE INDEX runs_event_idx ON runs (event_id, id) WHERE event_id IS NOT NULL;
-- Claims and list_claimable read only unfinished runs.
CREATE INDEX runs_claimable_idx ON runs (id) WHERE status IN ('queued', 'running');

CREATE TABLE step_runs (
    run_id uuid NOT NULL,
    step_index bigint NOT NULL,
    attempt bigint NOT NULL,
    terminal boolean NOT NULL,
    doc text NOT NULL,
    PRIMARY KEY (run_id, step_index, attempt)
);

-- API tokens: only the SHA-256 of a token's secret is kept, unique.
CREATE TABLE tokens (
    id uuid PRIMARY KEY,
    digest bytea NOT NULL,
    doc text NOT NULL,
    CONSTRAINT tokens_digest_key UNIQUE (digest)
);
