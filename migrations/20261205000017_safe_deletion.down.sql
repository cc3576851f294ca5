-- Scheduled deletions are cancelled (the projects go back to active; the reconciler's resync
-- finds any drift); time to live is forgotten.
DROP INDEX projects_expires_at_idx;
DROP INDEX projects_delete_at_idx;
ALTER TABLE projects DROP CONSTRAINT projects_delete_at_check;
UPDATE projects SET status = 'active' WHERE status = 'deletion_scheduled';
ALTER TABLE projects DROP COLUMN delete_at, DROP COLUMN expires_at;
ALTER TABLE projects DROP CONSTRAINT projects_status_check;
ALTER TABLE projects ADD CONSTRAINT projects_status_check CHECK (status IN
    ('pending_approval', 'provisioning', 'active', 'degraded', 'failed', 'deleting', 'deleted',
     'rejected'));
