-- Webhooks: where notifications go (generic JSON or Slack's form), signed with a secret; each
-- delivery is a durable `deliver_webhook` job enqueued with the change it tells about.
CREATE TABLE webhooks (
    id         uuid PRIMARY KEY,
    name       text NOT NULL UNIQUE
               CHECK (name ~ '^[a-z0-9]([-a-z0-9]*[a-z0-9])?$' AND length(name) <= 63),
    url        text NOT NULL CHECK (url ~ '^https?://' AND length(url) <= 2000),
    format     text NOT NULL CHECK (format IN ('json', 'slack')),
    -- The HMAC key: needed to sign, so kept as given (never shown again, never audited).
    secret     text NOT NULL CHECK (length(secret) BETWEEN 16 AND 200),
    -- The events it wants; empty: all of them.
    events     text[] NOT NULL DEFAULT '{}',
    enabled    boolean NOT NULL DEFAULT true,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
