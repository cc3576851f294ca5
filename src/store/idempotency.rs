//! Stored answers of requests made with an `Idempotency-Key`.

use serde_json::Value;
use sqlx::PgConnection;
use uuid::Uuid;

use super::StoreError;

/// How long a key binds its request: within this, the same key gets the stored answer.
const LIFETIME: &str = "24 hours";

/// An answer given to the request a key was first used with.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct StoredAnswer {
    pub fingerprint: String,
    pub response_status: i16,
    pub response_headers: Value,
    pub response_body: String,
}

/// Serialises requests with the same key of the same user until the transaction ends, on
/// every daemon: the second waits for the first's answer.
pub async fn lock(conn: &mut PgConnection, user: Uuid, key: &str) -> Result<(), StoreError> {
    sqlx::query(
        "SELECT pg_advisory_xact_lock(hashtextextended('infrahub:idempotency:' || $1::text || ':' || $2, 0))",
    )
    .bind(user)
    .bind(key)
    .execute(conn)
    .await?;
    Ok(())
}

/// The answer stored for the key, if it was used within its lifetime.
pub async fn find(
    conn: &mut PgConnection,
    user: Uuid,
    key: &str,
) -> Result<Option<StoredAnswer>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT fingerprint, response_status, response_headers, response_body
           FROM idempotency_keys
          WHERE user_id = $1 AND key = $2
            AND created_at > now() - $3::interval",
    )
    .bind(user)
    .bind(key)
    .bind(LIFETIME)
    .fetch_optional(conn)
    .await?)
}

/// What a key's first request was and what it was answered.
pub struct NewAnswer<'a> {
    pub user: Uuid,
    pub key: &'a str,
    pub method: &'a str,
    pub path: &'a str,
    pub fingerprint: &'a str,
    pub status: i16,
    pub headers: &'a Value,
    pub body: &'a str,
}

/// Stores the answer (replacing an expired one of the same key).
pub async fn save(conn: &mut PgConnection, answer: &NewAnswer<'_>) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO idempotency_keys
             (user_id, key, method, path, fingerprint, response_status, response_headers, response_body)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
         ON CONFLICT (user_id, key) DO UPDATE SET
             method = excluded.method, path = excluded.path, fingerprint = excluded.fingerprint,
             response_status = excluded.response_status,
             response_headers = excluded.response_headers,
             response_body = excluded.response_body, created_at = now()",
    )
    .bind(answer.user)
    .bind(answer.key)
    .bind(answer.method)
    .bind(answer.path)
    .bind(answer.fingerprint)
    .bind(answer.status)
    .bind(answer.headers)
    .bind(answer.body)
    .execute(conn)
    .await?;
    Ok(())
}

/// Deletes answers past their lifetime; returns how many.
pub async fn prune(conn: &mut PgConnection) -> Result<u64, StoreError> {
    let done = sqlx::query("DELETE FROM idempotency_keys WHERE created_at < now() - $1::interval")
        .bind(LIFETIME)
        .execute(conn)
        .await?;
    Ok(done.rows_affected())
}
