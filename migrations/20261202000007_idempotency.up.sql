-- Idempotency-Key answers of every mutating request, bound to the request: the same key with
-- the same method, path and body gets the stored answer again (status, headers, body); with
-- another request, 422. They replace the keys kept on job rows, which knew only a job and
-- not the request. The table of migration 4 was never written to.
DROP TABLE idempotency_keys;
CREATE TABLE idempotency_keys (
    user_id          uuid NOT NULL,
    key              text NOT NULL CHECK (length(key) BETWEEN 1 AND 255),
    method           text NOT NULL,
    path             text NOT NULL,
    -- SHA-256 of method, path, query and body: the same key with another request is refused.
    fingerprint      text NOT NULL,
    response_status  smallint NOT NULL,
    response_headers jsonb NOT NULL DEFAULT '{}'::jsonb,
    response_body    text NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, key)
);
CREATE INDEX idempotency_keys_created_idx ON idempotency_keys (created_at);

ALTER TABLE jobs DROP COLUMN idempotency_user, DROP COLUMN idempotency_key;
