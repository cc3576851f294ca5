//! Failed-login bookkeeping shared by every daemon on the database.

use sqlx::PgConnection;

/// How many failures lock a username, within which window, for how long.
#[derive(Debug, Clone, Copy)]
pub struct ThrottlePolicy {
    pub max_failures: u32,
    pub window_secs: u64,
    pub lockout_secs: u64,
}

/// Seconds until `key` may try again, when it is locked now.
pub async fn locked_for(conn: &mut PgConnection, key: &str) -> Result<Option<i64>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT ceil(extract(epoch FROM locked_until - now()))::bigint
           FROM login_throttle
          WHERE username_key = $1 AND locked_until > now()",
    )
    .bind(key)
    .fetch_optional(conn)
    .await
}

/// Counts one failure; failures older than the window (or from before an expired lock) start
/// the count afresh. Reaching the maximum locks the key.
pub async fn record_failure(
    conn: &mut PgConnection,
    key: &str,
    policy: ThrottlePolicy,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO login_throttle AS t (username_key, failures, window_started_at, locked_until)
         VALUES ($1, 1, now(), CASE WHEN $2 <= 1 THEN now() + make_interval(secs => $4) END)
         ON CONFLICT (username_key) DO UPDATE SET
             failures = CASE WHEN t.window_started_at < now() - make_interval(secs => $3)
                               OR t.locked_until <= now()
                             THEN 1 ELSE t.failures + 1 END,
             window_started_at = CASE WHEN t.window_started_at < now() - make_interval(secs => $3)
                                        OR t.locked_until <= now()
                                      THEN now() ELSE t.window_started_at END,
             locked_until = CASE
                 WHEN t.window_started_at >= now() - make_interval(secs => $3)
                      AND (t.locked_until IS NULL OR t.locked_until > now())
                      AND t.failures + 1 >= $2
                 THEN now() + make_interval(secs => $4)
                 WHEN $2 <= 1 THEN now() + make_interval(secs => $4)
                 ELSE NULL END",
    )
    .bind(key)
    .bind(i64::from(policy.max_failures))
    .bind(policy.window_secs as f64)
    .bind(policy.lockout_secs as f64)
    .execute(conn)
    .await?;
    Ok(())
}

/// Forgets the failures of `key` after a successful login.
pub async fn clear(conn: &mut PgConnection, key: &str) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM login_throttle WHERE username_key = $1")
        .bind(key)
        .execute(conn)
        .await?;
    Ok(())
}
