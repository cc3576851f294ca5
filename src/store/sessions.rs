//! Console sessions, found by the SHA-256 of their token.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use super::StoreError;

pub async fn insert(
    conn: &mut PgConnection,
    token_hash: &[u8],
    user_id: Uuid,
    password_changed_at: DateTime<Utc>,
    csrf_token: &str,
    expires_at: DateTime<Utc>,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO console_sessions
             (token_hash, user_id, password_changed_at, csrf_token, expires_at)
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(token_hash)
    .bind(user_id)
    .bind(password_changed_at)
    .bind(csrf_token)
    .bind(expires_at)
    .execute(conn)
    .await?;
    Ok(())
}

/// A live session: not expired.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SessionRow {
    pub user_id: Uuid,
    pub password_changed_at: DateTime<Utc>,
    pub csrf_token: String,
    pub expires_at: DateTime<Utc>,
}

pub async fn find(
    conn: &mut PgConnection,
    token_hash: &[u8],
) -> Result<Option<SessionRow>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT user_id, password_changed_at, csrf_token, expires_at FROM console_sessions
          WHERE token_hash = $1 AND expires_at > now()",
    )
    .bind(token_hash)
    .fetch_optional(conn)
    .await?)
}

pub async fn delete(conn: &mut PgConnection, token_hash: &[u8]) -> Result<bool, StoreError> {
    let done = sqlx::query("DELETE FROM console_sessions WHERE token_hash = $1")
        .bind(token_hash)
        .execute(conn)
        .await?;
    Ok(done.rows_affected() > 0)
}

/// Forgets expired sessions; how many.
pub async fn prune(conn: &mut PgConnection) -> Result<u64, StoreError> {
    let done =
        sqlx::query("DELETE FROM console_sessions WHERE expires_at <= now()").execute(conn).await?;
    Ok(done.rows_affected())
}
