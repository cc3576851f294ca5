-- Approvals: a project whose catalog entry (or size) needs approval waits in
-- `pending_approval`, its quota reserved, until a field admin approves it (provisioning) or
-- rejects it (`rejected`, final: it holds no quota and frees its name), or the request
-- expires at `approval_expires_at`. `approval_reason` keeps why it needed approval.
ALTER TABLE projects DROP CONSTRAINT projects_status_check;
ALTER TABLE projects ADD CONSTRAINT projects_status_check CHECK (status IN
    ('pending_approval', 'provisioning', 'active', 'degraded', 'failed', 'deleting', 'deleted',
     'rejected'));
ALTER TABLE projects ADD COLUMN approval_expires_at timestamptz,
                     ADD COLUMN approval_reason text;
ALTER TABLE projects ADD CONSTRAINT projects_approval_check
    CHECK (status <> 'pending_approval'
           OR (approval_expires_at IS NOT NULL AND approval_reason IS NOT NULL));

-- A project that ended (deleted or rejected) holds no quota and frees its name and namespace.
DROP INDEX projects_site_name_key;
DROP INDEX projects_site_namespace_key;
DROP INDEX projects_department_site_idx;
CREATE UNIQUE INDEX projects_site_name_key ON projects (site_id, name)
    WHERE status NOT IN ('deleted', 'rejected');
CREATE UNIQUE INDEX projects_site_namespace_key ON projects (site_id, namespace)
    WHERE status NOT IN ('deleted', 'rejected');
CREATE INDEX projects_department_site_idx ON projects (department_id, site_id)
    WHERE status NOT IN ('deleted', 'rejected');
-- The expiry sweep.
CREATE INDEX projects_approval_expires_idx ON projects (approval_expires_at)
    WHERE status = 'pending_approval';
