-- Taskforge schema, version 6: concurrency limits, debounce windows and
-- rate limits (taskforge_core::concurrency).
--
-- A run's limits are kept whole in its record (`doc`, field `limits`); the
-- columns below copy what claims and `list_claimable` compare, and are
-- NULL (or false) for runs without limits, so every stored run keeps its
-- meaning. They are written when the run is inserted; only `slot_held`
-- changes after, set by the claim that gives the run a slot of its key.
--
-- The rule itself is applied by the store in Rust (rules::claim_with_slot),
-- in a transaction that takes an advisory lock on the run's key (and one
-- on its workflow for a rate limit), so claims of one key by any number of
-- processes are decided one at a time on the rows as they are.
ALTER TABLE runs
    ADD COLUMN slot_key text,
    ADD COLUMN slot_max bigint,
    ADD COLUMN slot_held boolean NOT NULL DEFAULT false,
    ADD COLUMN debounce boolean NOT NULL DEFAULT false,
    ADD COLUMN not_before_ns bigint,
    ADD COLUMN rate_runs bigint,
    ADD COLUMN rate_per_ns bigint;

-- A key's unfinished runs (holding a slot or waiting), in creation order.
CREATE INDEX runs_slot_idx ON runs (slot_key, id)
    WHERE slot_key IS NOT NULL AND status NOT IN ('succeeded', 'failed', 'cancelled', 'timed_out');

-- The recent start times (nanoseconds since the Unix epoch, oldest first)
-- of each rate-limited workflow, rewritten by the claims that start its
-- runs; at most its limit's `runs` entries.
CREATE TABLE rate_starts (
    workflow_id uuid PRIMARY KEY,
    starts bigint[] NOT NULL
);

-- Batched claims leave out the runs whose first claim must take a slot or
-- a start (limits, never claimed, no cancellation asked for, queued): the
-- store claims those alone, under the limits' rules. Otherwise as in
-- version 2.
CREATE OR REPLACE FUNCTION taskforge_claim(
    c_id uuid[],
    c_owner text[],
    c_expires text[],
    c_expires_ns bigint[],
    c_now_ns bigint[]
) RETURNS TABLE (
    doc text,
    lease_owner text,
    lease_expires text,
    lease_epoch bigint,
    cancel_requested boolean,
    pos bigint
) LANGUAGE plpgsql AS $$
#variable_conflict use_column
BEGIN
    PERFORM 1 FROM @schema@.runs r WHERE r.id = ANY (c_id) ORDER BY r.id FOR NO KEY UPDATE;
    RETURN QUERY
    UPDATE @schema@.runs r
    SET lease_owner = c.owner, lease_expires = c.expires, lease_expires_ns = c.expires_ns,
        lease_epoch = r.lease_epoch + 1
    FROM unnest(c_id, c_owner, c_expires, c_expires_ns, c_now_ns)
        WITH ORDINALITY AS c (id, owner, expires, expires_ns, now_ns, pos)
    WHERE r.id = c.id AND r.status IN ('queued', 'running')
      AND (r.lease_owner IS NULL OR r.lease_expires_ns <= c.now_ns)
      AND (r.lease_epoch > 0 OR r.cancel_requested OR r.status <> 'queued'
           OR (r.slot_key IS NULL AND r.rate_runs IS NULL))
    RETURNING r.doc, r.lease_owner, r.lease_expires, r.lease_epoch, r.cancel_requested, c.pos;
END
$$;
