-- Taskforge schema, version 5: step attempts' logs.
--
-- One row per line, keyed by its attempt and its seq in the attempt's log
-- (a flush retried after a lost reply inserts nothing twice). The line is
-- kept whole in `doc`, as every record is. Lines are read one attempt at a
-- time, in seq order: the primary key is that index.
CREATE TABLE step_logs (
    step_run_id uuid NOT NULL,
    seq bigint NOT NULL,
    run_id uuid NOT NULL,
    doc text NOT NULL,
    PRIMARY KEY (step_run_id, seq)
);
