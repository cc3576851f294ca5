-- Sessions of the web console: the cookie holds a random token, this table its SHA-256 (a
-- copy of the table opens no session). A session ends at logout, at `expires_at`, or when its
-- account is disabled, deleted or changes password.
CREATE TABLE console_sessions (
    token_hash          bytea PRIMARY KEY,
    user_id             uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    -- The password's age when the session began: a newer password ends it.
    password_changed_at timestamptz NOT NULL,
    -- Every form of the session carries it.
    csrf_token          text NOT NULL,
    created_at          timestamptz NOT NULL DEFAULT now(),
    expires_at          timestamptz NOT NULL
);
CREATE INDEX console_sessions_user_idx ON console_sessions (user_id);
CREATE INDEX console_sessions_expires_idx ON console_sessions (expires_at);
