-- Quota requests: a team lead asks for more of its department's quota at a site, with a
-- reason; the field admin approves it (a raise_quota job adds the amount asked to the quota
-- under the (field, site) lock, with the same checks as any quota change: then `applied`, or
-- `failed` when it no longer fits) or rejects it with a reason.
CREATE TABLE quota_requests (
    id              uuid PRIMARY KEY,
    department_id   uuid NOT NULL REFERENCES departments (id) ON DELETE CASCADE,
    site_id         uuid NOT NULL REFERENCES sites (id) ON DELETE RESTRICT,
    -- How much more: added to the quota the department has when the request is approved.
    cpu             integer NOT NULL CHECK (cpu >= 0),
    ram_gb          integer NOT NULL CHECK (ram_gb >= 0),
    reason          text NOT NULL CHECK (length(reason) BETWEEN 1 AND 500),
    status          text NOT NULL DEFAULT 'pending'
                    CHECK (status IN ('pending', 'approved', 'applied', 'failed', 'rejected')),
    requested_by    uuid REFERENCES users (id) ON DELETE SET NULL,
    requested_by_name text NOT NULL,
    decided_by_name text,
    -- Why it was rejected, or why applying it failed.
    decision_reason text,
    -- The quota the department had once the increase was applied, and the job applying it.
    approved_cpu    integer,
    approved_ram_gb integer,
    job_id          uuid,
    created_at      timestamptz NOT NULL DEFAULT now(),
    decided_at      timestamptz,
    CHECK (cpu > 0 OR ram_gb > 0),
    CHECK ((status = 'pending') = (decided_at IS NULL)),
    CHECK (status <> 'approved' OR job_id IS NOT NULL)
);
-- One open request per department and site: ask again once it is decided.
CREATE UNIQUE INDEX quota_requests_open_key ON quota_requests (department_id, site_id)
    WHERE status = 'pending';
CREATE INDEX quota_requests_department_idx ON quota_requests (department_id, id);
