ALTER TABLE jobs ADD COLUMN idempotency_user uuid, ADD COLUMN idempotency_key text,
    ADD CHECK ((idempotency_key IS NULL) = (idempotency_user IS NULL));
CREATE UNIQUE INDEX jobs_idempotency_key ON jobs (idempotency_user, idempotency_key)
    WHERE idempotency_key IS NOT NULL;

DROP TABLE idempotency_keys;
CREATE TABLE idempotency_keys (
    user_id         uuid NOT NULL,
    key             text NOT NULL CHECK (length(key) BETWEEN 1 AND 255),
    fingerprint     text NOT NULL,
    response_status smallint,
    response_body   jsonb,
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, key)
);
CREATE INDEX idempotency_keys_created_idx ON idempotency_keys (created_at);
