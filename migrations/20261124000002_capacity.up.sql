-- Physical servers from the inventory and the department quotas carved out of them.

CREATE TABLE servers (
    id            uuid PRIMARY KEY,
    -- The inventory's own identifier (NetBox device id, or the file's id): the upsert key.
    inventory_id  text NOT NULL UNIQUE CHECK (length(inventory_id) BETWEEN 1 AND 200),
    name          text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    site_id       uuid NOT NULL REFERENCES sites (id) ON DELETE RESTRICT,
    cpu_cores     integer NOT NULL CHECK (cpu_cores >= 0),
    ram_gb        integer NOT NULL CHECK (ram_gb >= 0),
    -- `missing`: gone from the inventory; kept (with its field) so capacity views can show the deficit.
    status        text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'missing', 'retired')),
    field_id      uuid REFERENCES fields (id) ON DELETE RESTRICT,
    attributes    jsonb NOT NULL DEFAULT '{}'::jsonb,
    first_seen_at timestamptz NOT NULL DEFAULT now(),
    last_seen_at  timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX servers_site_field_idx ON servers (site_id, field_id, id);
CREATE INDEX servers_field_idx ON servers (field_id, site_id) WHERE field_id IS NOT NULL;
CREATE INDEX servers_status_idx ON servers (status, id);

CREATE TABLE department_quotas (
    department_id uuid NOT NULL REFERENCES departments (id) ON DELETE RESTRICT,
    site_id       uuid NOT NULL REFERENCES sites (id) ON DELETE RESTRICT,
    cpu_limit     integer NOT NULL CHECK (cpu_limit >= 0),
    ram_gb_limit  integer NOT NULL CHECK (ram_gb_limit >= 0),
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (department_id, site_id)
);
CREATE INDEX department_quotas_site_idx ON department_quotas (site_id);
