-- Sites, fields (business areas), departments and the people who act on them.
-- Names are DNS-1123 labels because they end up in Kubernetes namespace names.

CREATE TABLE sites (
    id           uuid PRIMARY KEY,
    name         text NOT NULL UNIQUE
                 CHECK (name ~ '^[a-z0-9]([-a-z0-9]*[a-z0-9])?$' AND length(name) <= 63),
    display_name text NOT NULL CHECK (length(display_name) BETWEEN 1 AND 200),
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE fields (
    id           uuid PRIMARY KEY,
    name         text NOT NULL UNIQUE
                 CHECK (name ~ '^[a-z0-9]([-a-z0-9]*[a-z0-9])?$' AND length(name) <= 63),
    display_name text NOT NULL CHECK (length(display_name) BETWEEN 1 AND 200),
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now()
);

-- Department names are unique across fields: they prefix namespace names.
CREATE TABLE departments (
    id           uuid PRIMARY KEY,
    field_id     uuid NOT NULL REFERENCES fields (id) ON DELETE RESTRICT,
    name         text NOT NULL UNIQUE
                 CHECK (name ~ '^[a-z0-9]([-a-z0-9]*[a-z0-9])?$' AND length(name) <= 63),
    display_name text NOT NULL CHECK (length(display_name) BETWEEN 1 AND 200),
    -- The identity-provider group that gets edit rights in the department's namespaces.
    k8s_group    text CHECK (k8s_group IS NULL OR length(k8s_group) BETWEEN 1 AND 253),
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX departments_field_idx ON departments (field_id, id);

CREATE TABLE users (
    id                  uuid PRIMARY KEY,
    username            text NOT NULL
                        CHECK (username ~ '^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$'),
    password_hash       text NOT NULL,
    role                text NOT NULL CHECK (role IN ('center_admin', 'field_admin', 'team_lead')),
    field_id            uuid REFERENCES fields (id) ON DELETE RESTRICT,
    department_id       uuid REFERENCES departments (id) ON DELETE RESTRICT,
    -- Demo accounts have well-known passwords: they may log in only to `infrahub demo`.
    is_demo             boolean NOT NULL DEFAULT false,
    disabled            boolean NOT NULL DEFAULT false,
    -- Tokens issued before this instant are refused, so a password change logs everyone out.
    password_changed_at timestamptz NOT NULL DEFAULT now(),
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT users_role_scope CHECK (
        (role = 'center_admin' AND field_id IS NULL AND department_id IS NULL)
        OR (role = 'field_admin' AND field_id IS NOT NULL AND department_id IS NULL)
        OR (role = 'team_lead' AND field_id IS NULL AND department_id IS NOT NULL)
    )
);
CREATE UNIQUE INDEX users_username_key ON users (lower(username));
CREATE INDEX users_field_idx ON users (field_id) WHERE field_id IS NOT NULL;
CREATE INDEX users_department_idx ON users (department_id) WHERE department_id IS NOT NULL;

-- Failed logins per (lower-cased) username, shared by every daemon on this database.
CREATE TABLE login_throttle (
    username_key      text PRIMARY KEY,
    failures          integer NOT NULL CHECK (failures >= 0),
    window_started_at timestamptz NOT NULL,
    locked_until      timestamptz
);
