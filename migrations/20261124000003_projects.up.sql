-- Projects: one Kubernetes namespace each, with a quota reserved from its department's quota.

CREATE TABLE projects (
    id               uuid PRIMARY KEY,
    name             text NOT NULL
                     CHECK (name ~ '^[a-z0-9]([-a-z0-9]*[a-z0-9])?$' AND length(name) <= 63),
    department_id    uuid NOT NULL REFERENCES departments (id) ON DELETE RESTRICT,
    site_id          uuid NOT NULL REFERENCES sites (id) ON DELETE RESTRICT,
    namespace        text NOT NULL
                     CHECK (namespace ~ '^[a-z0-9]([-a-z0-9]*[a-z0-9])?$' AND length(namespace) <= 63),
    sla_type         text NOT NULL CHECK (length(sla_type) BETWEEN 1 AND 63),
    performance_tier text NOT NULL CHECK (length(performance_tier) BETWEEN 1 AND 63),
    cpu              integer NOT NULL CHECK (cpu >= 0),
    ram_gb           integer NOT NULL CHECK (ram_gb >= 0),
    extra_quota      jsonb NOT NULL DEFAULT '{}'::jsonb,
    status           text NOT NULL CHECK (status IN
                     ('provisioning', 'active', 'degraded', 'failed', 'deleting', 'deleted')),
    failure_reason   text,
    last_job_id      uuid,
    created_by       uuid REFERENCES users (id) ON DELETE SET NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    deleted_at       timestamptz,
    CHECK ((status = 'deleted') = (deleted_at IS NOT NULL))
);
-- A deleted project frees its name and namespace for reuse.
CREATE UNIQUE INDEX projects_site_name_key ON projects (site_id, name) WHERE status <> 'deleted';
CREATE UNIQUE INDEX projects_site_namespace_key ON projects (site_id, namespace) WHERE status <> 'deleted';
CREATE INDEX projects_department_site_idx ON projects (department_id, site_id) WHERE status <> 'deleted';
CREATE INDEX projects_status_idx ON projects (status, id);
