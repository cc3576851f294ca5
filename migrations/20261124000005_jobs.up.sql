-- Durable jobs. One row is both the record the API reports and the queue entry workers claim:
-- `status`, `run_at` and the lease decide who runs what, `attempts` fences late completions.

CREATE TABLE jobs (
    id                uuid PRIMARY KEY,
    -- Stable kind name (never a Rust type name), e.g. `sync_servers`.
    kind              text NOT NULL CHECK (kind ~ '^[a-z][a-z0-9_]{0,62}$'),
    status            text NOT NULL DEFAULT 'queued'
                      CHECK (status IN ('queued', 'running', 'retrying', 'succeeded', 'failed', 'cancelled')),
    payload           jsonb NOT NULL DEFAULT '{}'::jsonb,
    -- What the job is about, e.g. ('project', '<uuid>'); visibility follows its scope.
    subject_type      text,
    subject_id        text,
    scope_field_id    uuid,
    scope_department_id uuid,
    submitted_by      uuid,
    submitted_by_name text NOT NULL,
    -- Attempts used; a re-scheduled poll gives its attempt back.
    attempts          integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    -- Bumped by every claim and never given back: a worker may finish the job only while the
    -- row still carries its claim, so a stale worker can never complete it twice.
    claim_seq         integer NOT NULL DEFAULT 0,
    max_attempts      integer NOT NULL CHECK (max_attempts >= 1),
    -- When the next attempt may start (backoff and re-scheduled polls live here, durably).
    run_at            timestamptz NOT NULL DEFAULT now(),
    -- The worker process running the current attempt, and until when its claim holds.
    lease_owner       text,
    lease_expires_at  timestamptz,
    last_error        text,
    -- Every failed attempt: [{attempt, at, error, permanent}].
    errors            jsonb NOT NULL DEFAULT '[]'::jsonb,
    result            jsonb,
    -- One active job per (kind, dedupe_key), e.g. one server sync at a time.
    dedupe_key        text,
    idempotency_user  uuid,
    idempotency_key   text,
    created_at        timestamptz NOT NULL DEFAULT now(),
    started_at        timestamptz,
    finished_at       timestamptz,
    updated_at        timestamptz NOT NULL DEFAULT now(),
    CHECK ((status = 'running') = (lease_owner IS NOT NULL AND lease_expires_at IS NOT NULL)),
    CHECK ((status IN ('succeeded', 'failed', 'cancelled')) = (finished_at IS NOT NULL)),
    CHECK ((idempotency_key IS NULL) = (idempotency_user IS NULL))
);
CREATE UNIQUE INDEX jobs_active_dedupe_key ON jobs (kind, dedupe_key)
    WHERE dedupe_key IS NOT NULL AND status IN ('queued', 'running', 'retrying');
CREATE UNIQUE INDEX jobs_idempotency_key ON jobs (idempotency_user, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
-- The claim query: ready jobs of some kinds, oldest due first.
CREATE INDEX jobs_ready_idx ON jobs (kind, run_at, id) WHERE status IN ('queued', 'retrying');
-- The lease reaper.
CREATE INDEX jobs_lease_idx ON jobs (lease_expires_at) WHERE status = 'running';
CREATE INDEX jobs_subject_idx ON jobs (subject_type, subject_id, id);
CREATE INDEX jobs_finished_idx ON jobs (finished_at) WHERE finished_at IS NOT NULL;

-- One row per cron tick that fired; the primary key makes N daemons fire each tick once.
CREATE TABLE cron_ticks (
    schedule  text NOT NULL,
    tick      timestamptz NOT NULL,
    job_id    uuid,
    fired_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (schedule, tick)
);
