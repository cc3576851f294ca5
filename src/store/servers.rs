//! Servers: the inventory upsert, missing-marking, listing, and assignment to fields.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sqlx::PgConnection;
use uuid::Uuid;

use super::{Page, PageRequest, StoreError};

#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Server {
    pub id: Uuid,
    /// The inventory's id (NetBox device id, or the file's id).
    pub inventory_id: String,
    pub name: String,
    pub site_id: Uuid,
    /// Site name.
    pub site: String,
    pub cpu_cores: i32,
    pub ram_gb: i32,
    /// `active`, `missing` (gone from the inventory; kept with its field) or `retired`.
    pub status: String,
    pub field_id: Option<Uuid>,
    /// Field name, when assigned.
    pub field: Option<String>,
    #[schema(value_type = Object)]
    pub attributes: Value,
    pub first_seen_at: DateTime<Utc>,
    /// When the inventory last reported a change to it (or it reappeared).
    pub last_seen_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

macro_rules! server_select {
    () => {
        "SELECT s.id, s.inventory_id, s.name, s.site_id, si.name AS site, s.cpu_cores, s.ram_gb,
                s.status, s.field_id, f.name AS field, s.attributes, s.first_seen_at,
                s.last_seen_at, s.updated_at
           FROM servers s JOIN sites si ON si.id = s.site_id LEFT JOIN fields f ON f.id = s.field_id"
    };
}

#[derive(Debug, Default, Clone)]
pub struct ServerFilter {
    pub site: Option<String>,
    pub field_id: Option<Uuid>,
    pub status: Option<String>,
    pub unassigned: bool,
}

pub async fn list(
    conn: &mut PgConnection,
    filter: &ServerFilter,
    page: PageRequest,
) -> Result<Page<Server>, StoreError> {
    let rows = sqlx::query_as(concat!(
        server_select!(),
        " WHERE ($1::uuid IS NULL OR s.id > $1)
            AND ($3::text IS NULL OR si.name = $3)
            AND ($4::uuid IS NULL OR s.field_id = $4)
            AND ($5::text IS NULL OR s.status = $5)
            AND (NOT $6 OR s.field_id IS NULL)
          ORDER BY s.id LIMIT $2"
    ))
    .bind(page.after)
    .bind(page.fetch_limit())
    .bind(filter.site.as_deref())
    .bind(filter.field_id)
    .bind(filter.status.as_deref())
    .bind(filter.unassigned)
    .fetch_all(conn)
    .await?;
    Ok(Page::from_rows(rows, page, |s: &Server| s.id))
}

pub async fn get(conn: &mut PgConnection, id: Uuid) -> Result<Server, StoreError> {
    Ok(sqlx::query_as(concat!(server_select!(), " WHERE s.id = $1"))
        .bind(id)
        .fetch_one(conn)
        .await?)
}

/// The servers among `ids` that exist, in no particular order.
pub async fn get_many(conn: &mut PgConnection, ids: &[Uuid]) -> Result<Vec<Server>, StoreError> {
    Ok(sqlx::query_as(concat!(server_select!(), " WHERE s.id = ANY($1)"))
        .bind(ids)
        .fetch_all(conn)
        .await?)
}

/// Locks the server row for the rest of the transaction and returns it.
pub async fn lock(conn: &mut PgConnection, id: Uuid) -> Result<Server, StoreError> {
    sqlx::query("SELECT 1 FROM servers WHERE id = $1 FOR UPDATE")
        .bind(id)
        .fetch_one(&mut *conn)
        .await?;
    get(conn, id).await
}

pub async fn set_field(
    conn: &mut PgConnection,
    id: Uuid,
    field_id: Option<Uuid>,
) -> Result<(), StoreError> {
    sqlx::query("UPDATE servers SET field_id = $2, updated_at = now() WHERE id = $1")
        .bind(id)
        .bind(field_id)
        .execute(conn)
        .await?;
    Ok(())
}

/// Site name -> id.
pub async fn site_ids(conn: &mut PgConnection) -> Result<HashMap<String, Uuid>, StoreError> {
    let rows: Vec<(String, Uuid)> =
        sqlx::query_as("SELECT name, id FROM sites").fetch_all(conn).await?;
    Ok(rows.into_iter().collect())
}

/// A device ready to upsert: the inventory's values with InfraHub's site id.
pub struct Upsert<'a> {
    pub inventory_id: &'a str,
    pub name: &'a str,
    pub site_id: Uuid,
    pub cpu_cores: i32,
    pub ram_gb: i32,
    pub attributes: &'a Value,
}

#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct UpsertCounts {
    pub added: u64,
    pub updated: u64,
    pub unchanged: u64,
    /// (field, site) pairs that lost capacity: an active server of a field moved to another
    /// site, or reported with less CPU or RAM.
    pub shrunk: Vec<(Uuid, Uuid)>,
}

/// Inserts new servers and updates changed ones in one statement. A missing server that
/// reappears becomes active again (keeping its field); a retired one stays retired.
pub async fn upsert_batch(
    conn: &mut PgConnection,
    batch: &[Upsert<'_>],
) -> Result<UpsertCounts, StoreError> {
    let ids: Vec<Uuid> = batch.iter().map(|_| Uuid::now_v7()).collect();
    let inventory_ids: Vec<&str> = batch.iter().map(|u| u.inventory_id).collect();
    let names: Vec<&str> = batch.iter().map(|u| u.name).collect();
    let sites: Vec<Uuid> = batch.iter().map(|u| u.site_id).collect();
    let cpus: Vec<i32> = batch.iter().map(|u| u.cpu_cores).collect();
    let rams: Vec<i32> = batch.iter().map(|u| u.ram_gb).collect();
    let attributes: Vec<&Value> = batch.iter().map(|u| u.attributes).collect();
    // `before` reads the rows as the statement found them (a CTE's snapshot), so each updated
    // row can be compared with what it was.
    let rows: Vec<(bool, Option<Uuid>, Option<Uuid>)> = sqlx::query_as(
        "WITH before AS (
             SELECT inventory_id, field_id, site_id, cpu_cores, ram_gb FROM servers
              WHERE inventory_id = ANY($2) AND field_id IS NOT NULL AND status = 'active'),
         up AS (
             INSERT INTO servers AS s (id, inventory_id, name, site_id, cpu_cores, ram_gb, attributes)
             SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::uuid[], $5::int4[], $6::int4[], $7::jsonb[])
             ON CONFLICT (inventory_id) DO UPDATE SET
                 name = excluded.name, site_id = excluded.site_id, cpu_cores = excluded.cpu_cores,
                 ram_gb = excluded.ram_gb, attributes = excluded.attributes,
                 status = CASE WHEN s.status = 'retired' THEN 'retired' ELSE 'active' END,
                 last_seen_at = now(), updated_at = now()
              WHERE (s.name, s.site_id, s.cpu_cores, s.ram_gb, s.attributes)
                    IS DISTINCT FROM (excluded.name, excluded.site_id, excluded.cpu_cores, excluded.ram_gb, excluded.attributes)
                 OR s.status = 'missing'
             RETURNING (xmax = 0) AS inserted, inventory_id, site_id, cpu_cores, ram_gb)
         SELECT up.inserted, b.field_id, b.site_id
           FROM up LEFT JOIN before b
             ON b.inventory_id = up.inventory_id
            AND (b.site_id <> up.site_id OR up.cpu_cores < b.cpu_cores OR up.ram_gb < b.ram_gb)",
    )
    .bind(&ids)
    .bind(&inventory_ids)
    .bind(&names)
    .bind(&sites)
    .bind(&cpus)
    .bind(&rams)
    .bind(&attributes)
    .fetch_all(conn)
    .await?;
    let added = rows.iter().filter(|(inserted, _, _)| *inserted).count() as u64;
    let updated = rows.len() as u64 - added;
    let shrunk = rows.iter().filter_map(|(_, field, site)| field.zip(*site)).collect();
    Ok(UpsertCounts { added, updated, unchanged: batch.len() as u64 - added - updated, shrunk })
}

/// Marks active servers the inventory no longer lists as `missing` (never deletes them, never
/// drops their field); with `sites`, only servers of those sites. Returns those it marked.
pub async fn mark_missing(
    conn: &mut PgConnection,
    seen: &[String],
    sites: Option<&[Uuid]>,
) -> Result<Vec<MarkedMissing>, StoreError> {
    Ok(sqlx::query_as(
        "UPDATE servers SET status = 'missing', updated_at = now()
          WHERE status = 'active' AND NOT (inventory_id = ANY($1))
            AND ($2::uuid[] IS NULL OR site_id = ANY($2))
          RETURNING id, field_id, site_id",
    )
    .bind(seen)
    .bind(sites)
    .fetch_all(conn)
    .await?)
}

/// A server [`mark_missing`] marked, and where its capacity was counted.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct MarkedMissing {
    pub id: Uuid,
    pub field_id: Option<Uuid>,
    pub site_id: Uuid,
}

/// Per site: its active servers, and how many of them [`mark_missing`] would mark missing.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct GoingMissing {
    pub site: String,
    pub active: i64,
    pub missing: i64,
}

/// What [`mark_missing`] with the same arguments would do, per site that would lose servers.
pub async fn going_missing(
    conn: &mut PgConnection,
    seen: &[String],
    sites: Option<&[Uuid]>,
) -> Result<Vec<GoingMissing>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT si.name AS site, count(*) AS active,
                count(*) FILTER (WHERE NOT (s.inventory_id = ANY($1))) AS missing
           FROM servers s JOIN sites si ON si.id = s.site_id
          WHERE s.status = 'active' AND ($2::uuid[] IS NULL OR s.site_id = ANY($2))
          GROUP BY si.name
         HAVING count(*) FILTER (WHERE NOT (s.inventory_id = ANY($1))) > 0
          ORDER BY si.name",
    )
    .bind(seen)
    .bind(sites)
    .fetch_all(conn)
    .await?)
}

/// Locks every server row of the site until the transaction ends.
pub async fn lock_site(conn: &mut PgConnection, site_id: Uuid) -> Result<(), StoreError> {
    sqlx::query("SELECT id FROM servers WHERE site_id = $1 ORDER BY id FOR UPDATE")
        .bind(site_id)
        .execute(conn)
        .await?;
    Ok(())
}

/// How many servers of the site belong to the field.
pub async fn count_owned(
    conn: &mut PgConnection,
    field_id: Uuid,
    site_id: Uuid,
) -> Result<i64, StoreError> {
    Ok(sqlx::query_scalar("SELECT count(*) FROM servers WHERE field_id = $1 AND site_id = $2")
        .bind(field_id)
        .bind(site_id)
        .fetch_one(conn)
        .await?)
}

/// Gives the field the first half (by name) of the site's active servers that have no field;
/// returns how many it got.
pub async fn assign_first_half(
    conn: &mut PgConnection,
    field_id: Uuid,
    site_id: Uuid,
) -> Result<u64, StoreError> {
    let done = sqlx::query(
        "UPDATE servers SET field_id = $1, updated_at = now()
          WHERE id IN (SELECT id FROM servers WHERE site_id = $2 AND status = 'active' AND field_id IS NULL
                        ORDER BY name LIMIT (SELECT (count(*) + 1) / 2 FROM servers
                                              WHERE site_id = $2 AND status = 'active'))",
    )
    .bind(field_id)
    .bind(site_id)
    .execute(conn)
    .await?;
    Ok(done.rows_affected())
}
