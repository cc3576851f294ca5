//! Failed-login bookkeeping shared by every daemon on the database.

use sqlx::PgConnection;

/// How many failures lock a username, within which window, for how long.
#[derive(Debug, Clone, Copy)]
pub struct ThrottlePolicy {
    pub max_failures: u32,
    pub window_secs: u64,
    pub lockout_secs: u64,
}

/// Counts a login attempt for `key` before its password is checked, in one statement, so
/// attempts sent in parallel are counted one by one: `Some(seconds)` refuses this attempt
/// (the key is locked, or this attempt is one too many within the window, which locks it);
/// `None` lets it go ahead. A failure stays counted; a success clears the count ([`clear`]).
/// Counts older than the window, or from before an expired lock, start afresh.
pub async fn attempt(
    conn: &mut PgConnection,
    key: &str,
    policy: ThrottlePolicy,
) -> Result<Option<i64>, sqlx::Error> {
    sqlx::query_scalar(
        "INSERT INTO login_throttle AS t (username_key, failures, window_started_at, locked_until)
         VALUES ($1, 1, now(), NULL)
         ON CONFLICT (username_key) DO UPDATE SET
             failures = CASE
                 WHEN t.locked_until > now() THEN t.failures
                 WHEN t.locked_until <= now() OR t.window_started_at < now() - make_interval(secs => $3)
                 THEN 1
                 ELSE t.failures + 1 END,
             window_started_at = CASE
                 WHEN t.locked_until > now() THEN t.window_started_at
                 WHEN t.locked_until <= now() OR t.window_started_at < now() - make_interval(secs => $3)
                 THEN now()
                 ELSE t.window_started_at END,
             locked_until = CASE
                 WHEN t.locked_until > now() THEN t.locked_until
                 WHEN t.locked_until <= now() OR t.window_started_at < now() - make_interval(secs => $3)
                 THEN NULL
                 WHEN t.failures + 1 > $2 THEN now() + make_interval(secs => $4)
                 ELSE NULL END
         RETURNING CASE WHEN locked_until > now()
                        THEN greatest(ceil(extract(epoch FROM locked_until - now())), 1)::bigint END",
    )
    .bind(key)
    .bind(i64::from(policy.max_failures))
    .bind(policy.window_secs as f64)
    .bind(policy.lockout_secs as f64)
    .fetch_one(conn)
    .await
}

/// Forgets the failures of `key` after a successful login.
pub async fn clear(conn: &mut PgConnection, key: &str) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM login_throttle WHERE username_key = $1")
        .bind(key)
        .execute(conn)
        .await?;
    Ok(())
}
