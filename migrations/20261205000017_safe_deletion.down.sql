-- Scheduled deletions become deletions under way: the owners asked for them, and the
-- reconciler of the older version restarts the removal of a `deleting` project that waits on
-- no job. Time to live is forgotten.
DROP INDEX projects_expires_at_idx;
DROP INDEX projects_delete_at_idx;
ALTER TABLE projects DROP CONSTRAINT projects_delete_at_check;
UPDATE projects SET status = 'deleting' WHERE status = 'deletion_scheduled';
ALTER TABLE projects DROP COLUMN delete_at, DROP COLUMN expires_at;
ALTER TABLE projects DROP CONSTRAINT projects_status_check;
ALTER TABLE projects ADD CONSTRAINT projects_status_check CHECK (status IN
    ('pending_approval', 'provisioning', 'active', 'degraded', 'failed', 'deleting', 'deleted',
     'rejected'));
