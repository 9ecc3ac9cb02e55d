-- Taskforge schema, version 2: the server-side halves of batched claims
-- and commits, so that the writes of many workers go to the server as one
-- statement, one transaction and one WAL flush.
--
-- `@schema@` stands for the store's schema, quoted; the migration runner
-- puts it in before running this file. Function bodies name every table
-- with it, so they run the same whatever the caller's search_path.
--
-- Both functions lock the runs they touch in id order before reading them,
-- so two batches (of one process or of several) cannot deadlock, and every
-- check reads the rows after the locks are taken (PL/pgSQL takes a fresh
-- snapshot per statement under READ COMMITTED). Neither ever raises for a
-- refused claim or commit: it leaves it out of its answer, and the store
-- settles it on its own, one at a time, with the contract's rules in Rust.

-- Claims: each run of `c_id` whose status is queued or running and whose
-- lease is absent or lapsed at its `c_now_ns` gets the lease of its
-- `c_owner` until `c_expires` and the next epoch. Returns the claimed runs
-- (the columns the store reads a run from) with their positions in
-- the arrays (from 1).
CREATE FUNCTION taskforge_claim(
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
    RETURNING r.doc, r.lease_owner, r.lease_expires, r.lease_epoch, r.cancel_requested, c.pos;
END
$$;

-- Commits: commit `i` (1-based) is fenced on run `c_id[i]` at epoch
-- `c_epoch[i]` and status `c_status[i]`. If `c_has_run[i]`, it rewrites
-- the run (status, creation time, lease, cancel flag ORed in, record) and
-- the run's workflow, version and event must be the stored ones, and its
-- lease epoch and cancel flag must need no merge. Its step attempts are
-- the entries of the `s_` arrays whose `s_commit` is `i`; none may be
-- stored as finished. A commit that passes every check is applied whole;
-- the others write nothing. Returns, per commit, whether it was applied.
-- (It notifies nobody: a transaction that notifies holds PostgreSQL's
-- global notification lock through its commit's flush, which would make
-- batches wait for each other; the store notifies after the commit.)
CREATE FUNCTION taskforge_commit(
    c_id uuid[],
    c_epoch bigint[],
    c_status text[],
    c_has_run boolean[],
    c_workflow uuid[],
    c_version uuid[],
    c_event uuid[],
    c_run_epoch bigint[],
    c_new_status text[],
    c_created_ns bigint[],
    c_owner text[],
    c_expires text[],
    c_expires_ns bigint[],
    c_cancel boolean[],
    c_doc text[],
    s_commit integer[],
    s_index bigint[],
    s_attempt bigint[],
    s_terminal boolean[],
    s_doc text[]
) RETURNS boolean[] LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    ok boolean[];
    refused integer;
BEGIN
    PERFORM 1 FROM @schema@.runs r WHERE r.id = ANY (c_id) ORDER BY r.id FOR NO KEY UPDATE;
    -- The fences, on the rows as locked.
    SELECT array_agg(
        r.id IS NOT NULL
        AND r.lease_epoch = c.epoch
        AND r.status = c.status
        AND (NOT c.has_run OR (
            r.workflow_id = c.workflow
            AND r.version_id = c.version
            AND r.event_id IS NOT DISTINCT FROM c.event
            AND r.lease_epoch = c.run_epoch
            AND (c.cancel OR NOT r.cancel_requested)))
        ORDER BY c.pos)
    INTO ok
    FROM unnest(c_id, c_epoch, c_status, c_has_run, c_workflow, c_version, c_event, c_run_epoch, c_cancel)
        WITH ORDINALITY AS c (id, epoch, status, has_run, workflow, version, event, run_epoch, cancel, pos)
    LEFT JOIN @schema@.runs r ON r.id = c.id;
    -- No finished attempt is rewritten.
    FOR refused IN
        SELECT DISTINCT s.n
        FROM unnest(s_commit, s_index, s_attempt) AS s (n, step_index, attempt)
        JOIN @schema@.step_runs t
          ON t.run_id = c_id[s.n] AND t.step_index = s.step_index AND t.attempt = s.attempt
        WHERE t.terminal
    LOOP
        ok[refused] := false;
    END LOOP;
    INSERT INTO @schema@.step_runs (run_id, step_index, attempt, terminal, doc)
    SELECT c_id[s.n], s.step_index, s.attempt, s.terminal, s.doc
    FROM unnest(s_commit, s_index, s_attempt, s_terminal, s_doc)
        AS s (n, step_index, attempt, terminal, doc)
    WHERE ok[s.n]
    ON CONFLICT (run_id, step_index, attempt) DO UPDATE
    SET terminal = excluded.terminal, doc = excluded.doc;
    UPDATE @schema@.runs r
    SET status = c.new_status, created_ns = c.created_ns, lease_owner = c.owner,
        lease_expires = c.expires, lease_expires_ns = c.expires_ns,
        cancel_requested = r.cancel_requested OR c.cancel, doc = c.doc
    FROM unnest(c_id, c_has_run, c_new_status, c_created_ns, c_owner, c_expires, c_expires_ns, c_cancel, c_doc)
        WITH ORDINALITY AS c (id, has_run, new_status, created_ns, owner, expires, expires_ns, cancel, doc, pos)
    WHERE r.id = c.id AND c.has_run AND ok[c.pos];
    RETURN ok;
END
$$;
