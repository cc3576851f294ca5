//! All SQL lives here. Functions take `&mut PgConnection` so one transaction can span several
//! of them (the change, its audit event and, later, its job). Queries are checked at run time
//! and every one is exercised by the tests against a real PostgreSQL.

// Before the modules: what they share.
/// A timestamp column as RFC 3339 text in UTC (`...T12:00:00.120000Z`: always microseconds,
/// where the API drops trailing zeros; the same instant), not in the session's time zone.
macro_rules! utc_text {
    ($column:literal) => {
        concat!("to_char(", $column, r#" AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')"#)
    };
}

/// The columns of a [`jobs::Job`], from a table or CTE of `jobs` rows.
macro_rules! job_columns {
    () => {
        "id, kind, status, payload, subject_type, subject_id, attempts, max_attempts,
         CASE WHEN status IN ('queued', 'retrying') THEN run_at END AS next_run_at,
         created_at, started_at, finished_at, last_error, errors, result,
         submitted_by, submitted_by_name"
    };
}

pub mod audit;
pub mod capacity;
pub mod gather;
pub mod idempotency;
pub mod jobs;
pub mod org;
pub mod projects;
pub mod quota_requests;
pub mod servers;
pub mod sessions;
pub mod stats;
pub mod throttle;
pub mod users;
pub mod webhooks;

use std::time::Duration;

use serde::Serialize;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgPool};
use uuid::Uuid;

use crate::config::{DatabaseConfig, redact_url};

/// Our schema history (table `public._sqlx_migrations`); apalis keeps its own in `apalis`.
pub static MIGRATOR: Migrator = sqlx::migrate!();

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("not found")]
    NotFound,
    /// A unique constraint refused a duplicate; `constraint` names which.
    #[error("duplicate value ({constraint})")]
    Duplicate { constraint: String },
    /// A delete or update was refused because other rows still refer to this one.
    #[error("still referenced from {table}")]
    InUse { table: String },
    /// The row names another one that does not exist.
    #[error("refers to a row that does not exist ({constraint})")]
    MissingReference { constraint: String },
    #[error(transparent)]
    Database(sqlx::Error),
    /// The failure of one statement written for several callers, each of which gets it.
    #[error(transparent)]
    Shared(std::sync::Arc<sqlx::Error>),
}

impl From<sqlx::Error> for StoreError {
    fn from(err: sqlx::Error) -> Self {
        let Some(db) = err.as_database_error() else {
            return match err {
                sqlx::Error::RowNotFound => StoreError::NotFound,
                other => StoreError::Database(other),
            };
        };
        let constraint = db.constraint().unwrap_or_default().to_owned();
        match db.code().as_deref() {
            Some("23505") => StoreError::Duplicate { constraint },
            // PostgreSQL says "update or delete on table ..." when the row is still referenced.
            Some("23503") if db.message().starts_with("update or delete") => {
                StoreError::InUse { table: referencing_table(db.message()).unwrap_or(constraint) }
            }
            Some("23503") => StoreError::MissingReference { constraint },
            _ => StoreError::Database(err),
        }
    }
}

/// Pulls `X` out of PostgreSQL's `... is still referenced from table "X"` detail-free message,
/// falling back to the constraint name when the wording differs.
fn referencing_table(message: &str) -> Option<String> {
    let start = message.rfind("on table \"")? + "on table \"".len();
    let rest = &message[start..];
    Some(rest[..rest.find('"')?].to_owned())
}

/// Opens the pool. Connecting eagerly makes a wrong URL or a stopped server fail at start-up
/// with one clear line rather than at the first request.
pub async fn connect(config: &DatabaseConfig) -> Result<PgPool, ConnectError> {
    let options: PgConnectOptions = config.url.parse().map_err(|e: sqlx::Error| ConnectError {
        url: redact_url(&config.url),
        cause: e.to_string(),
    })?;
    let options =
        options.log_slow_statements(tracing::log::LevelFilter::Warn, Duration::from_secs(1));
    let connected = pool_options()
        .max_connections(config.max_connections)
        .min_connections(config.min_connections)
        .acquire_timeout(Duration::from_secs(config.acquire_timeout_secs))
        .idle_timeout(Some(Duration::from_secs(config.idle_timeout_secs)))
        .connect_with(options.clone())
        .await;
    match connected {
        Ok(pool) => Ok(pool),
        // The pool retries until its timeout and then only says so; one direct attempt tells
        // the operator why (refused, unknown host, authentication, no such database).
        Err(sqlx::Error::PoolTimedOut) => {
            let attempt = tokio::time::timeout(Duration::from_secs(2), options.connect()).await;
            let cause = match attempt {
                Ok(Err(e)) => connect_cause(&e),
                _ => connect_cause(&sqlx::Error::PoolTimedOut),
            };
            Err(ConnectError { url: redact_url(&config.url), cause })
        }
        Err(e) => Err(ConnectError { url: redact_url(&config.url), cause: connect_cause(&e) }),
    }
}

/// A pool like `pool` (same server, database and timeouts) of `connections` connections,
/// connecting when first used, with `tune` applied to its settings: the daemon's pools beside
/// its main one (advisory locks held for a request's length, the gathers' statements).
pub fn pool_like(
    pool: &PgPool,
    config: &DatabaseConfig,
    connections: u32,
    tune: impl FnOnce(PgPoolOptions) -> PgPoolOptions,
) -> PgPool {
    let options = pool.connect_options().as_ref().clone();
    let settings = pool_options()
        .max_connections(connections)
        .acquire_timeout(Duration::from_secs(config.acquire_timeout_secs))
        .idle_timeout(Some(Duration::from_secs(config.idle_timeout_secs)));
    tune(settings).connect_lazy_with(options)
}

/// Pool settings every pool of the daemon shares. A connection handed out straight from
/// use is not pinged first (sqlx's default costs a round trip on every acquire, a third of a
/// short request's database time); one that sat idle for a second or more is, so a server
/// restart during a lull costs a reconnect, not an error.
pub fn pool_options() -> PgPoolOptions {
    PgPoolOptions::new().test_before_acquire(false).before_acquire(|conn, meta| {
        Box::pin(async move {
            if meta.idle_for >= Duration::from_secs(1) {
                sqlx::Connection::ping(conn).await?;
            }
            Ok(true)
        })
    })
}

#[derive(Debug, thiserror::Error)]
#[error("cannot connect to PostgreSQL at {url}: {cause}")]
pub struct ConnectError {
    pub url: String,
    pub cause: String,
}

fn connect_cause(err: &sqlx::Error) -> String {
    match err {
        sqlx::Error::Io(io) => io.to_string(),
        sqlx::Error::PoolTimedOut => "timed out (is the server up and reachable?)".to_owned(),
        other => other.to_string(),
    }
}

/// Creates the database named in `url` when it does not exist, connecting to the server's
/// `postgres` database to do so (the demo's first start). Returns whether it was created.
pub async fn ensure_database(url: &str) -> Result<bool, ConnectError> {
    let failed = |cause: String| ConnectError { url: redact_url(url), cause };
    let options: PgConnectOptions = url.parse().map_err(|e: sqlx::Error| failed(e.to_string()))?;
    let database = options.get_database().unwrap_or("postgres").to_owned();
    let mut conn = sqlx::PgConnection::connect_with(&options.clone().database("postgres"))
        .await
        .map_err(|e| failed(connect_cause(&e)))?;
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(&database)
            .fetch_one(&mut conn)
            .await
            .map_err(|e| failed(e.to_string()))?;
    if exists {
        return Ok(false);
    }
    let quoted = format!("\"{}\"", database.replace('"', "\"\""));
    let created = sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {quoted}")))
        .execute(&mut conn)
        .await;
    match created {
        Ok(_) => Ok(true),
        // Another demo created it between our check and our CREATE.
        Err(e) if e.as_database_error().and_then(|d| d.code()).as_deref() == Some("42P04") => {
            Ok(false)
        }
        Err(e) => Err(failed(format!("cannot create database {database}: {e}"))),
    }
}

/// Where one migration stands in this database.
#[derive(Debug, Clone, Serialize)]
pub struct MigrationState {
    pub version: i64,
    pub description: String,
    pub applied: bool,
    /// The applied script differs from the one in this binary: someone edited a migration.
    pub checksum_mismatch: bool,
}

/// Applies every pending migration.
pub async fn migrate_up(pool: &PgPool) -> Result<(), sqlx::migrate::MigrateError> {
    MIGRATOR.run(pool).await
}

/// Reverts the newest `steps` applied migrations; returns the versions reverted.
pub async fn migrate_down(
    pool: &PgPool,
    steps: usize,
) -> Result<Vec<i64>, sqlx::migrate::MigrateError> {
    let mut applied = applied_versions(pool).await?;
    applied.sort_unstable_by(|a, b| b.cmp(a));
    let reverted: Vec<i64> = applied.iter().copied().take(steps).collect();
    let target = applied.get(steps).copied().unwrap_or(0);
    MIGRATOR.undo(pool, target).await?;
    Ok(reverted)
}

/// Every migration this binary knows, with whether it is applied.
pub async fn migration_status(pool: &PgPool) -> Result<Vec<MigrationState>, sqlx::Error> {
    let applied: Vec<(i64, Vec<u8>)> = if history_exists(pool).await? {
        sqlx::query_as("SELECT version, checksum FROM _sqlx_migrations WHERE success")
            .fetch_all(pool)
            .await?
    } else {
        Vec::new()
    };
    Ok(MIGRATOR
        .iter()
        .filter(|m| m.migration_type.is_up_migration())
        .map(|m| {
            let found = applied.iter().find(|(version, _)| *version == m.version);
            MigrationState {
                version: m.version,
                description: m.description.to_string(),
                applied: found.is_some(),
                checksum_mismatch: found.is_some_and(|(_, sum)| sum[..] != m.checksum[..]),
            }
        })
        .collect())
}

/// Whether every migration of this binary is applied, unchanged (what `/readyz` reports).
pub async fn schema_is_current(pool: &PgPool) -> Result<bool, sqlx::Error> {
    let states = migration_status(pool).await?;
    Ok(states.iter().all(|m| m.applied && !m.checksum_mismatch))
}

async fn applied_versions(pool: &PgPool) -> Result<Vec<i64>, sqlx::Error> {
    if !history_exists(pool).await? {
        return Ok(Vec::new());
    }
    sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success").fetch_all(pool).await
}

async fn history_exists(pool: &PgPool) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("SELECT to_regclass('public._sqlx_migrations') IS NOT NULL")
        .fetch_one(pool)
        .await
}

/// Keyset pagination over UUIDv7 ids, which sort by creation time.
#[derive(Debug, Clone, Copy)]
pub struct PageRequest {
    /// Return the rows past this one in the list's order (after it oldest first, before it
    /// newest first).
    pub after: Option<Uuid>,
    pub limit: u32,
}

impl PageRequest {
    /// The SQL `LIMIT`: one row more than asked, to learn whether another page exists.
    pub fn fetch_limit(&self) -> i64 {
        i64::from(self.limit) + 1
    }
}

/// One page of a list; `next_cursor` is absent on the last page.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// Pass as `cursor` to get the next page.
    pub next_cursor: Option<Uuid>,
}

impl<T> Page<T> {
    /// Cuts the extra row fetched by [`PageRequest::fetch_limit`] and derives the cursor.
    pub fn from_rows(mut rows: Vec<T>, request: PageRequest, id: impl Fn(&T) -> Uuid) -> Self {
        let limit = request.limit as usize;
        let next_cursor = if rows.len() > limit {
            rows.truncate(limit);
            rows.last().map(&id)
        } else {
            None
        };
        Page { items: rows, next_cursor }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_cuts_the_lookahead_row() {
        let ids: Vec<Uuid> = (0..3).map(|_| Uuid::now_v7()).collect();
        let request = PageRequest { after: None, limit: 2 };
        let page = Page::from_rows(ids.clone(), request, |id| *id);
        assert_eq!(page.items, ids[..2]);
        assert_eq!(page.next_cursor, Some(ids[1]));
        let last = Page::from_rows(ids[..2].to_vec(), request, |id| *id);
        assert_eq!(last.next_cursor, None);
    }

    #[test]
    fn referencing_table_is_read_from_the_message() {
        let msg = "update or delete on table \"fields\" violates foreign key constraint \
                   \"departments_field_id_fkey\" on table \"departments\"";
        assert_eq!(referencing_table(msg).as_deref(), Some("departments"));
        assert_eq!(referencing_table("something else"), None);
    }
}
