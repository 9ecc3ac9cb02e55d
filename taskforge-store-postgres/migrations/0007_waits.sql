-- Taskforge schema, version 7: durable waits.
--
-- A parked run (status 'waiting') is due at `wake_ns` (nanoseconds since
-- the Unix epoch; NULL while it waits for a signal alone), or at once when
-- a cancel is asked for. `signals` holds the signals sent to a run, as the
-- serde JSON array of its record's `signals`, appended by `signal_run`
-- under the row lock; NULL for none. Both change without a rewrite of the
-- record (a signal needs no lease, and the owner's copy of the record may
-- predate it), so a run is read with them taken from these columns, as
-- its lease is. `wake_ns` is written when a run is parked (by the commit
-- that parks it, never batched) and when a signal makes it due; it means
-- nothing once the run is no longer waiting.
ALTER TABLE runs ADD COLUMN wake_ns bigint, ADD COLUMN signals text;

-- Claims and list_claimable read parked runs by when they are due, and
-- those to cancel, without a scan of every parked run.
CREATE INDEX runs_waking_idx ON runs (wake_ns, id) WHERE status = 'waiting';
CREATE INDEX runs_waiting_cancel_idx ON runs (id) WHERE status = 'waiting' AND cancel_requested;
