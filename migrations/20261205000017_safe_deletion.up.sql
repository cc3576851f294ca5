-- Safe deletion: a deleted project waits in `deletion_scheduled` until `delete_at` (the grace
-- period; `restore` cancels it), its namespace and quota kept. `expires_at` is a project's
-- optional time to live: past it, its deletion is scheduled the same way (a request still
-- waiting for approval is rejected).
ALTER TABLE projects DROP CONSTRAINT projects_status_check;
ALTER TABLE projects ADD CONSTRAINT projects_status_check CHECK (status IN
    ('pending_approval', 'provisioning', 'active', 'degraded', 'failed', 'deletion_scheduled',
     'deleting', 'deleted', 'rejected'));
ALTER TABLE projects ADD COLUMN delete_at timestamptz,
                     ADD COLUMN expires_at timestamptz;
ALTER TABLE projects ADD CONSTRAINT projects_delete_at_check
    CHECK ((status = 'deletion_scheduled') = (delete_at IS NOT NULL));
-- The sweeps of the reconciler.
CREATE INDEX projects_delete_at_idx ON projects (delete_at) WHERE status = 'deletion_scheduled';
CREATE INDEX projects_expires_at_idx ON projects (expires_at)
    WHERE expires_at IS NOT NULL AND status IN ('pending_approval', 'active', 'failed', 'degraded');
