//! What the benchmarks share: the database server and a scratch database on it.

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, PgConnection, PgPool};

/// The server of DATABASE_URL (as the tests use it), or the local default.
pub fn database_url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// Drops and creates `name` on the server of `url`, and connects to it.
pub async fn scratch_database(url: &str, name: &str) -> anyhow::Result<PgPool> {
    let options: PgConnectOptions = url.parse()?;
    let mut admin = PgConnection::connect_with(&options.clone().database("postgres")).await?;
    let quoted = format!("\"{}\"", name.replace('"', "\"\""));
    sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {quoted} WITH (FORCE)")))
        .execute(&mut admin)
        .await?;
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {quoted}")))
        .execute(&mut admin)
        .await?;
    Ok(PgPoolOptions::new().max_connections(40).connect_with(options.database(name)).await?)
}
