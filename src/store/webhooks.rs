//! Webhooks: where notifications go.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgConnection;
use uuid::Uuid;

use super::{Page, PageRequest, StoreError};

/// A webhook as shown: its secret never leaves the store except to sign
/// ([`secret_of`]).
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Webhook {
    pub id: Uuid,
    pub name: String,
    pub url: String,
    /// `json` or `slack`.
    pub format: String,
    /// The events it is sent; empty: all.
    pub events: Vec<String>,
    pub enabled: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

const COLUMNS: &str = "id, name, url, format, events, enabled, created_at, updated_at";

pub struct WebhookValues<'a> {
    pub name: &'a str,
    pub url: &'a str,
    pub format: &'a str,
    pub secret: &'a str,
    pub events: &'a [String],
    pub enabled: bool,
}

/// Inserts a webhook; a taken name is a [`StoreError::Duplicate`].
pub async fn insert(conn: &mut PgConnection, new: &WebhookValues<'_>) -> Result<Uuid, StoreError> {
    let id = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO webhooks (id, name, url, format, secret, events, enabled)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(id)
    .bind(new.name)
    .bind(new.url)
    .bind(new.format)
    .bind(new.secret)
    .bind(new.events)
    .bind(new.enabled)
    .execute(conn)
    .await?;
    Ok(id)
}

/// Replaces every value (the secret too).
pub async fn update(
    conn: &mut PgConnection,
    id: Uuid,
    values: &WebhookValues<'_>,
) -> Result<(), StoreError> {
    let done = sqlx::query(
        "UPDATE webhooks SET name = $2, url = $3, format = $4, secret = $5, events = $6,
                             enabled = $7, updated_at = now()
          WHERE id = $1",
    )
    .bind(id)
    .bind(values.name)
    .bind(values.url)
    .bind(values.format)
    .bind(values.secret)
    .bind(values.events)
    .bind(values.enabled)
    .execute(conn)
    .await?;
    if done.rows_affected() == 0 {
        return Err(StoreError::NotFound);
    }
    Ok(())
}

pub async fn get(conn: &mut PgConnection, id: Uuid) -> Result<Webhook, StoreError> {
    let sql = format!("SELECT {COLUMNS} FROM webhooks WHERE id = $1");
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(id).fetch_one(conn).await?)
}

#[derive(sqlx::FromRow)]
struct WithSecret {
    #[sqlx(flatten)]
    hook: Webhook,
    secret: String,
}

/// The webhook with its secret, for signing a delivery; `None` when it is gone.
pub async fn secret_of(
    conn: &mut PgConnection,
    id: Uuid,
) -> Result<Option<(Webhook, String)>, StoreError> {
    let sql = format!("SELECT {COLUMNS}, secret FROM webhooks WHERE id = $1");
    let found: Option<WithSecret> =
        sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(id).fetch_optional(conn).await?;
    Ok(found.map(|w| (w.hook, w.secret)))
}

pub async fn list(conn: &mut PgConnection, page: PageRequest) -> Result<Page<Webhook>, StoreError> {
    let sql = format!(
        "SELECT {COLUMNS} FROM webhooks WHERE ($1::uuid IS NULL OR id > $1) ORDER BY id LIMIT $2"
    );
    let rows = sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(page.after)
        .bind(page.fetch_limit())
        .fetch_all(conn)
        .await?;
    Ok(Page::from_rows(rows, page, |w: &Webhook| w.id))
}

pub async fn delete(conn: &mut PgConnection, id: Uuid) -> Result<(), StoreError> {
    let done = sqlx::query("DELETE FROM webhooks WHERE id = $1").bind(id).execute(conn).await?;
    if done.rows_affected() == 0 {
        return Err(StoreError::NotFound);
    }
    Ok(())
}

/// The enabled webhooks that want `event`.
pub async fn subscribed(conn: &mut PgConnection, event: &str) -> Result<Vec<Uuid>, StoreError> {
    Ok(sqlx::query_scalar(
        "SELECT id FROM webhooks WHERE enabled AND (events = '{}' OR $1 = ANY (events)) ORDER BY id",
    )
    .bind(event)
    .fetch_all(conn)
    .await?)
}
