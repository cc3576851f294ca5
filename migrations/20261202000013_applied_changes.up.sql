-- The newest job that applied a change to one thing (a department's quota at a site, a
-- server's field), by the coalescing key of its kind. A job older than the one recorded here
-- does not apply: two changes of one thing that both got past coalescing (one was already
-- running) land in the order they were asked for, whichever runs last.
CREATE TABLE applied_changes (
    kind       text NOT NULL,
    key        text NOT NULL,
    job_id     uuid NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (kind, key)
);
