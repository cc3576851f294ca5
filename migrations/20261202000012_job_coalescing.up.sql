-- Coalescing: a queued change that a newer one of the same kind and key makes pointless (a
-- department's quota at a site set again, a server moved again) ends `superseded`, its result
-- naming the job that carries the newer change.
ALTER TABLE jobs DROP CONSTRAINT jobs_status_check;
ALTER TABLE jobs ADD CONSTRAINT jobs_status_check CHECK (status IN
    ('queued', 'running', 'retrying', 'succeeded', 'failed', 'cancelled', 'superseded'));
ALTER TABLE jobs DROP CONSTRAINT jobs_check1;
ALTER TABLE jobs ADD CONSTRAINT jobs_finished_check CHECK
    ((status IN ('succeeded', 'failed', 'cancelled', 'superseded')) = (finished_at IS NOT NULL));
ALTER TABLE jobs ADD COLUMN coalesce_key text;
CREATE INDEX jobs_coalesce_idx ON jobs (kind, coalesce_key)
    WHERE coalesce_key IS NOT NULL AND status IN ('queued', 'retrying');
