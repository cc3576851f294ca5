//! Sites, fields and departments.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::types::Json;
use sqlx::{AssertSqlSafe, PgConnection};
use uuid::Uuid;

use super::{Page, PageRequest, StoreError};

/// Sites and fields have the same shape; this names which table a call is about. Table names
/// come only from this closed enum, so the formatted SQL below is never built from input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnitKind {
    Site,
    Field,
}

impl UnitKind {
    fn table(self) -> &'static str {
        match self {
            UnitKind::Site => "sites",
            UnitKind::Field => "fields",
        }
    }

    /// The audit subject type and the noun in messages.
    pub fn noun(self) -> &'static str {
        match self {
            UnitKind::Site => "site",
            UnitKind::Field => "field",
        }
    }
}

/// A site (data centre) or a field (business area): a named unit of the organisation.
#[derive(Debug, Clone, Serialize, Deserialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct OrgUnit {
    pub id: Uuid,
    /// DNS-1123 label, used in API calls (`"site": "berlin"`) and namespace labels.
    pub name: String,
    pub display_name: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

const UNIT_COLUMNS: &str = "id, name, display_name, created_at, updated_at";

pub async fn list_units(
    conn: &mut PgConnection,
    kind: UnitKind,
    page: PageRequest,
) -> Result<Page<OrgUnit>, StoreError> {
    let sql = format!(
        "SELECT {UNIT_COLUMNS} FROM {} WHERE ($1::uuid IS NULL OR id > $1) ORDER BY id LIMIT $2",
        kind.table()
    );
    let rows = sqlx::query_as(AssertSqlSafe(sql))
        .bind(page.after)
        .bind(page.fetch_limit())
        .fetch_all(conn)
        .await?;
    Ok(Page::from_rows(rows, page, |u: &OrgUnit| u.id))
}

pub async fn get_unit(
    conn: &mut PgConnection,
    kind: UnitKind,
    id: Uuid,
) -> Result<OrgUnit, StoreError> {
    let sql = format!("SELECT {UNIT_COLUMNS} FROM {} WHERE id = $1", kind.table());
    Ok(sqlx::query_as(AssertSqlSafe(sql)).bind(id).fetch_one(conn).await?)
}

pub async fn find_unit_by_name(
    conn: &mut PgConnection,
    kind: UnitKind,
    name: &str,
) -> Result<Option<OrgUnit>, StoreError> {
    let sql = format!("SELECT {UNIT_COLUMNS} FROM {} WHERE name = $1", kind.table());
    Ok(sqlx::query_as(AssertSqlSafe(sql)).bind(name).fetch_optional(conn).await?)
}

pub async fn insert_unit(
    conn: &mut PgConnection,
    kind: UnitKind,
    name: &str,
    display_name: &str,
) -> Result<OrgUnit, StoreError> {
    let sql = format!(
        "INSERT INTO {} (id, name, display_name) VALUES ($1, $2, $3) RETURNING {UNIT_COLUMNS}",
        kind.table()
    );
    Ok(sqlx::query_as(AssertSqlSafe(sql))
        .bind(Uuid::now_v7())
        .bind(name)
        .bind(display_name)
        .fetch_one(conn)
        .await?)
}

/// Inserts unless a unit of that name exists; returns the unit and whether it was created.
pub async fn ensure_unit(
    conn: &mut PgConnection,
    kind: UnitKind,
    name: &str,
    display_name: &str,
) -> Result<(OrgUnit, bool), StoreError> {
    let sql = format!(
        "INSERT INTO {} (id, name, display_name) VALUES ($1, $2, $3)
         ON CONFLICT (name) DO NOTHING RETURNING {UNIT_COLUMNS}",
        kind.table()
    );
    let created: Option<OrgUnit> = sqlx::query_as(AssertSqlSafe(sql))
        .bind(Uuid::now_v7())
        .bind(name)
        .bind(display_name)
        .fetch_optional(&mut *conn)
        .await?;
    match created {
        Some(unit) => Ok((unit, true)),
        None => {
            let unit = find_unit_by_name(conn, kind, name).await?.ok_or(StoreError::NotFound)?;
            Ok((unit, false))
        }
    }
}

pub async fn rename_unit(
    conn: &mut PgConnection,
    kind: UnitKind,
    id: Uuid,
    display_name: &str,
) -> Result<OrgUnit, StoreError> {
    let sql = format!(
        "UPDATE {} SET display_name = $2, updated_at = now() WHERE id = $1 RETURNING {UNIT_COLUMNS}",
        kind.table()
    );
    Ok(sqlx::query_as(AssertSqlSafe(sql)).bind(id).bind(display_name).fetch_one(conn).await?)
}

/// Deletes the unit; refused with [`StoreError::InUse`] while anything refers to it.
pub async fn delete_unit(
    conn: &mut PgConnection,
    kind: UnitKind,
    id: Uuid,
) -> Result<OrgUnit, StoreError> {
    let sql = format!("DELETE FROM {} WHERE id = $1 RETURNING {UNIT_COLUMNS}", kind.table());
    Ok(sqlx::query_as(AssertSqlSafe(sql)).bind(id).fetch_one(conn).await?)
}

/// A department of a field; team leads and projects belong to one.
#[derive(Debug, Clone, Serialize, Deserialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Department {
    pub id: Uuid,
    pub field_id: Uuid,
    /// DNS-1123 label, unique across fields: it prefixes the department's namespace names.
    pub name: String,
    pub display_name: String,
    /// Identity-provider group given edit rights in the department's namespaces.
    pub k8s_group: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

const DEPARTMENT_COLUMNS: &str =
    "id, field_id, name, display_name, k8s_group, created_at, updated_at";

pub async fn list_departments(
    conn: &mut PgConnection,
    field_id: Option<Uuid>,
    page: PageRequest,
) -> Result<Page<Department>, StoreError> {
    let sql = format!(
        "SELECT {DEPARTMENT_COLUMNS} FROM departments
          WHERE ($1::uuid IS NULL OR id > $1) AND ($3::uuid IS NULL OR field_id = $3)
          ORDER BY id LIMIT $2"
    );
    let rows = sqlx::query_as(AssertSqlSafe(sql))
        .bind(page.after)
        .bind(page.fetch_limit())
        .bind(field_id)
        .fetch_all(conn)
        .await?;
    Ok(Page::from_rows(rows, page, |d: &Department| d.id))
}

pub async fn get_department(conn: &mut PgConnection, id: Uuid) -> Result<Department, StoreError> {
    let sql = format!("SELECT {DEPARTMENT_COLUMNS} FROM departments WHERE id = $1");
    Ok(sqlx::query_as(AssertSqlSafe(sql)).bind(id).fetch_one(conn).await?)
}

/// The department `department_id` and the site named `site`, each if it exists, in one round
/// trip: what a request naming both (a quota change, a new project) checks first.
pub async fn department_and_site(
    conn: &mut PgConnection,
    department_id: Uuid,
    site: &str,
) -> Result<(Option<Department>, Option<OrgUnit>), StoreError> {
    let (department, site): (Option<Json<Department>>, Option<Json<OrgUnit>>) = sqlx::query_as(
        "SELECT (SELECT to_jsonb(d) FROM departments d WHERE d.id = $1),
                (SELECT to_jsonb(s) FROM sites s WHERE s.name = $2)",
    )
    .bind(department_id)
    .bind(site)
    .fetch_one(conn)
    .await?;
    Ok((department.map(|d| d.0), site.map(|s| s.0)))
}

/// [`department_and_site`] for several requests in one round trip, in their order.
pub async fn departments_and_sites(
    conn: &mut PgConnection,
    asked: &[(Uuid, &str)],
) -> Result<Vec<(Option<Department>, Option<OrgUnit>)>, StoreError> {
    type Found = (Option<Json<Department>>, Option<Json<OrgUnit>>);
    let found: Vec<Found> = sqlx::query_as(
        "SELECT (SELECT to_jsonb(d) FROM departments d WHERE d.id = n.department_id),
                (SELECT to_jsonb(s) FROM sites s WHERE s.name = n.site)
           FROM unnest($1::uuid[], $2::text[]) WITH ORDINALITY AS n(department_id, site, i)
          ORDER BY n.i",
    )
    .bind(asked.iter().map(|(department_id, _)| *department_id).collect::<Vec<_>>())
    .bind(asked.iter().map(|(_, site)| *site).collect::<Vec<_>>())
    .fetch_all(conn)
    .await?;
    Ok(found.into_iter().map(|(d, s)| (d.map(|d| d.0), s.map(|s| s.0))).collect())
}

pub async fn find_department_by_name(
    conn: &mut PgConnection,
    name: &str,
) -> Result<Option<Department>, StoreError> {
    let sql = format!("SELECT {DEPARTMENT_COLUMNS} FROM departments WHERE name = $1");
    Ok(sqlx::query_as(AssertSqlSafe(sql)).bind(name).fetch_optional(conn).await?)
}

/// The values of a department that a client sets.
pub struct DepartmentValues<'a> {
    pub field_id: Uuid,
    pub name: &'a str,
    pub display_name: &'a str,
    pub k8s_group: Option<&'a str>,
}

pub async fn insert_department(
    conn: &mut PgConnection,
    values: &DepartmentValues<'_>,
) -> Result<Department, StoreError> {
    let sql = format!(
        "INSERT INTO departments (id, field_id, name, display_name, k8s_group)
         VALUES ($1, $2, $3, $4, $5) RETURNING {DEPARTMENT_COLUMNS}"
    );
    Ok(sqlx::query_as(AssertSqlSafe(sql))
        .bind(Uuid::now_v7())
        .bind(values.field_id)
        .bind(values.name)
        .bind(values.display_name)
        .bind(values.k8s_group)
        .fetch_one(conn)
        .await?)
}

/// Inserts unless a department of that name exists; returns it and whether it was created.
pub async fn ensure_department(
    conn: &mut PgConnection,
    values: &DepartmentValues<'_>,
) -> Result<(Department, bool), StoreError> {
    if let Some(existing) = find_department_by_name(conn, values.name).await? {
        return Ok((existing, false));
    }
    Ok((insert_department(conn, values).await?, true))
}

pub async fn update_department(
    conn: &mut PgConnection,
    id: Uuid,
    display_name: &str,
    k8s_group: Option<&str>,
) -> Result<Department, StoreError> {
    let sql = format!(
        "UPDATE departments SET display_name = $2, k8s_group = $3, updated_at = now()
          WHERE id = $1 RETURNING {DEPARTMENT_COLUMNS}"
    );
    Ok(sqlx::query_as(AssertSqlSafe(sql))
        .bind(id)
        .bind(display_name)
        .bind(k8s_group)
        .fetch_one(conn)
        .await?)
}

pub async fn delete_department(
    conn: &mut PgConnection,
    id: Uuid,
) -> Result<Department, StoreError> {
    let sql = format!("DELETE FROM departments WHERE id = $1 RETURNING {DEPARTMENT_COLUMNS}");
    Ok(sqlx::query_as(AssertSqlSafe(sql)).bind(id).fetch_one(conn).await?)
}
