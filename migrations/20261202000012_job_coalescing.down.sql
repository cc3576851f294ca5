DROP INDEX jobs_coalesce_idx;
ALTER TABLE jobs DROP COLUMN coalesce_key;
-- Superseded jobs did not run: on the way back they count as cancelled.
UPDATE jobs SET status = 'cancelled' WHERE status = 'superseded';
ALTER TABLE jobs DROP CONSTRAINT jobs_finished_check;
ALTER TABLE jobs ADD CONSTRAINT jobs_check1 CHECK
    ((status IN ('succeeded', 'failed', 'cancelled')) = (finished_at IS NOT NULL));
ALTER TABLE jobs DROP CONSTRAINT jobs_status_check;
ALTER TABLE jobs ADD CONSTRAINT jobs_status_check CHECK (status IN
    ('queued', 'running', 'retrying', 'succeeded', 'failed', 'cancelled'));
