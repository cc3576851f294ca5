-- Who changed what, written in the same transaction as the change itself.
CREATE TABLE audit_events (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    occurred_at  timestamptz NOT NULL DEFAULT now(),
    -- No foreign key: the history outlives the account.
    actor_id     uuid,
    actor        text NOT NULL,
    action       text NOT NULL,
    subject_type text NOT NULL,
    subject_id   text NOT NULL,
    before       jsonb,
    after        jsonb,
    request_id   text
);
CREATE INDEX audit_events_subject_idx ON audit_events (subject_type, subject_id, id);
CREATE INDEX audit_events_occurred_idx ON audit_events (occurred_at);

-- `Idempotency-Key` answers: the same key from the same user returns the first answer.
CREATE TABLE idempotency_keys (
    user_id         uuid NOT NULL,
    key             text NOT NULL CHECK (length(key) BETWEEN 1 AND 255),
    -- Method, path and body hash: a reused key with another request is refused.
    fingerprint     text NOT NULL,
    response_status smallint,
    response_body   jsonb,
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, key)
);
CREATE INDEX idempotency_keys_created_idx ON idempotency_keys (created_at);
