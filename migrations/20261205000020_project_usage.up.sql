-- What a project's namespace actually uses (kube-state-metrics' kube_resourcequota, "used",
-- read from Prometheus), when it was read, and since when it has stayed under half of the
-- project's quota (a hint that the project is oversized once that lasts 30 days).
ALTER TABLE projects ADD COLUMN used_cpu double precision,
                     ADD COLUMN used_ram_gb double precision,
                     ADD COLUMN usage_at timestamptz,
                     ADD COLUMN under_half_since timestamptz;
