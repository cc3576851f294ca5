-- Rejected requests are kept as deleted ones; pending ones are withdrawn the same way (their
-- reservation is released, as a rejection would).
DROP INDEX projects_approval_expires_idx;
UPDATE projects SET status = 'deleted', deleted_at = coalesce(deleted_at, now())
 WHERE status IN ('rejected', 'pending_approval');
DROP INDEX projects_site_name_key;
DROP INDEX projects_site_namespace_key;
DROP INDEX projects_department_site_idx;
CREATE UNIQUE INDEX projects_site_name_key ON projects (site_id, name) WHERE status <> 'deleted';
CREATE UNIQUE INDEX projects_site_namespace_key ON projects (site_id, namespace) WHERE status <> 'deleted';
CREATE INDEX projects_department_site_idx ON projects (department_id, site_id) WHERE status <> 'deleted';
ALTER TABLE projects DROP CONSTRAINT projects_approval_check;
ALTER TABLE projects DROP COLUMN approval_expires_at, DROP COLUMN approval_reason;
ALTER TABLE projects DROP CONSTRAINT projects_status_check;
ALTER TABLE projects ADD CONSTRAINT projects_status_check CHECK (status IN
    ('provisioning', 'active', 'degraded', 'failed', 'deleting', 'deleted'));
