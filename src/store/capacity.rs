//! Capacity and department quotas. Writes that can break an invariant take the advisory lock
//! of the (field, site) they touch, so concurrent allocations serialise on it.

use std::collections::HashMap;

use serde::Serialize;
use sqlx::types::Json;
use sqlx::{PgConnection, PgPool};
use tracing::Instrument;
use uuid::Uuid;

use super::StoreError;
use super::gather::{
    self, Alone, Asked, Gather, Statement, Unreachable, fail_all, one_by_one, refused_for_a_value,
};
use super::org::{Department, OrgUnit};
use crate::domain::capacity::Resources;

/// Serialises every capacity-changing write of one field at one site until the transaction
/// ends. Callers touching two pairs lock them in sorted order.
pub async fn lock_field_site(
    conn: &mut PgConnection,
    field_id: Uuid,
    site_id: Uuid,
) -> Result<(), StoreError> {
    sqlx::query("SELECT pg_advisory_xact_lock(capacity_lock_key($1, $2))")
        .bind(field_id)
        .bind(site_id)
        .execute(conn)
        .await?;
    Ok(())
}

/// CPU and RAM of the field's active servers at the site (missing and retired ones do not count).
pub async fn field_servers(
    conn: &mut PgConnection,
    field_id: Uuid,
    site_id: Uuid,
) -> Result<Resources, StoreError> {
    let (cpu, ram): (i64, i64) = sqlx::query_as(
        "SELECT coalesce(sum(cpu_cores), 0)::int8, coalesce(sum(ram_gb), 0)::int8
           FROM servers WHERE field_id = $1 AND site_id = $2 AND status = 'active'",
    )
    .bind(field_id)
    .bind(site_id)
    .fetch_one(conn)
    .await?;
    Ok(Resources::new(cpu, ram))
}

/// One department's quota at a site.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct DepartmentQuota {
    pub department_id: Uuid,
    pub department: String,
    pub cpu_limit: i64,
    pub ram_gb_limit: i64,
}

/// The quotas of the field's departments at the site.
pub async fn quotas_at(
    conn: &mut PgConnection,
    field_id: Uuid,
    site_id: Uuid,
) -> Result<Vec<DepartmentQuota>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT q.department_id, d.name AS department, q.cpu_limit::int8, q.ram_gb_limit::int8
           FROM department_quotas q JOIN departments d ON d.id = q.department_id
          WHERE d.field_id = $1 AND q.site_id = $2 ORDER BY d.name",
    )
    .bind(field_id)
    .bind(site_id)
    .fetch_all(conn)
    .await?)
}

/// Everything a department's quota at a site is checked against, in one statement: the CPU
/// and RAM of the field's active servers there, the department's own quota (if any), the sum
/// of the other departments' quotas, and what the department's projects reserve there (the
/// same rules as `field_servers`, `quotas_at` and `quota_and_usage`, whose reservations, as
/// committed, it reads too).
#[derive(Debug, Clone, Copy)]
pub struct QuotaInputs {
    pub servers: Resources,
    pub own: Option<Resources>,
    pub others: Resources,
    pub used_by_projects: Resources,
}

/// The statement of [`quota_inputs`]: of field `$field`, department `$department` and site
/// `$site` (SQL expressions: parameters, or columns of a join as in [`QuotaChangeReads`]).
macro_rules! quota_inputs_select {
    ($field:literal, $department:literal, $site:literal) => {
        concat!(
            "SELECT s.cpu, s.ram, own.cpu_limit::int8, own.ram_gb_limit::int8,
                    o.cpu, o.ram, p.cpu, p.ram
               FROM (SELECT coalesce(sum(cpu_cores), 0)::int8 AS cpu, coalesce(sum(ram_gb), 0)::int8 AS ram
                       FROM servers WHERE field_id = ", $field, " AND site_id = ", $site, " AND status = 'active') s
              CROSS JOIN (SELECT coalesce(sum(q.cpu_limit), 0)::int8 AS cpu,
                                 coalesce(sum(q.ram_gb_limit), 0)::int8 AS ram
                            FROM department_quotas q JOIN departments d ON d.id = q.department_id
                           WHERE d.field_id = ", $field, " AND q.site_id = ", $site, "
                             AND q.department_id <> ", $department, ") o
              CROSS JOIN (SELECT coalesce(sum(cpu), 0)::int8 AS cpu, coalesce(sum(ram_gb), 0)::int8 AS ram
                            FROM project_reservations
                           WHERE department_id = ", $department, " AND site_id = ", $site, ") p
               LEFT JOIN department_quotas own
                      ON own.department_id = ", $department, " AND own.site_id = ", $site, "
                     AND EXISTS (SELECT 1 FROM departments d
                                  WHERE d.id = ", $department, " AND d.field_id = ", $field, ")"
        )
    };
}

/// The row of [`quota_inputs_select`].
type QuotaInputsTuple = (i64, i64, Option<i64>, Option<i64>, i64, i64, i64, i64);

impl From<QuotaInputsTuple> for QuotaInputs {
    fn from(row: QuotaInputsTuple) -> Self {
        let (cpu, ram, own_cpu, own_ram, others_cpu, others_ram, used_cpu, used_ram) = row;
        QuotaInputs {
            servers: Resources::new(cpu, ram),
            own: own_cpu.zip(own_ram).map(|(c, r)| Resources::new(c, r)),
            others: Resources::new(others_cpu, others_ram),
            used_by_projects: Resources::new(used_cpu, used_ram),
        }
    }
}

pub async fn quota_inputs(
    conn: &mut PgConnection,
    field_id: Uuid,
    department_id: Uuid,
    site_id: Uuid,
) -> Result<QuotaInputs, StoreError> {
    let row: QuotaInputsTuple = sqlx::query_as(quota_inputs_select!("$1", "$2", "$3"))
        .bind(field_id)
        .bind(department_id)
        .bind(site_id)
        .fetch_one(conn)
        .await?;
    Ok(row.into())
}

/// What a quota change is checked against.
#[derive(Debug, Clone)]
pub struct QuotaChangeInputs {
    /// The department, if it exists (of any field).
    pub department: Option<Department>,
    /// The site, by name, if it exists.
    pub site: Option<OrgUnit>,
    /// [`quota_inputs`] of the department's quota at the site in the change's field:
    /// meaningful only when both exist and the department is of that field; otherwise read as
    /// if nothing were there.
    pub inputs: QuotaInputs,
}

/// A quota change's department, site (by name) and field, as [`QuotaChangeReads`] is asked.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct QuotaChangeKey {
    pub field_id: Uuid,
    pub department_id: Uuid,
    pub site: String,
}

/// Reads what quota changes are checked against at their intake, the changes arriving
/// together in one statement ([`Gather`]); changes of one quota share a row. Cheap to clone.
#[derive(Clone)]
pub struct QuotaChangeReads {
    gather: Gather<QuotaChangeStatement>,
}

impl QuotaChangeReads {
    /// The connections of [`gather::pool`] its statements may hold at once.
    pub const CONNECTIONS: u32 = gather::runners::<QuotaChangeStatement>();

    pub fn new(pool: PgPool) -> Self {
        Self { gather: Gather::new(QuotaChangeStatement { pool }) }
    }

    /// What the change `key` is checked against, read by a statement that started after this
    /// was called.
    pub async fn read(&self, key: QuotaChangeKey) -> Result<QuotaChangeInputs, StoreError> {
        self.gather.ask(key).await
    }
}

struct QuotaChangeStatement {
    pool: PgPool,
}

/// A key of [`QuotaChangeReads`]' statement, its department and site, and
/// [`QuotaInputsTuple`].
type QuotaChangeRow = (
    Uuid,
    Uuid,
    String,
    Option<Json<Department>>,
    Option<Json<OrgUnit>>,
    i64,
    i64,
    Option<i64>,
    Option<i64>,
    i64,
    i64,
    i64,
    i64,
);

fn quota_change_answer(row: QuotaChangeRow) -> (QuotaChangeKey, QuotaChangeInputs) {
    let (field_id, department_id, site, department, unit, c, r, oc, or, xc, xr, uc, ur) = row;
    let key = QuotaChangeKey { field_id, department_id, site };
    let inputs = (c, r, oc, or, xc, xr, uc, ur).into();
    let department = department.map(|d| d.0);
    (key, QuotaChangeInputs { department, site: unit.map(|u| u.0), inputs })
}

impl Statement for QuotaChangeStatement {
    type Ask = QuotaChangeKey;
    type Answer = QuotaChangeInputs;
    const BATCH: usize = 64;
    const RUNNERS: usize = 2;

    async fn run(&self, batch: Vec<Asked<Self>>) -> Option<Unreachable> {
        let mut keys: Vec<&QuotaChangeKey> = batch.iter().map(|asked| &asked.ask).collect();
        keys.sort_unstable();
        keys.dedup();
        let span = tracing::info_span!("quota_change_statement", changes = keys.len());
        let found = match self.read(&keys).instrument(span).await {
            Ok(found) => found,
            // A value PostgreSQL refuses (a NUL in a site's name) fails its own change only.
            Err(err) if keys.len() > 1 && refused_for_a_value(&err) => {
                return one_by_one(self, batch).await;
            }
            Err(err) => return fail_all(batch, err),
        };
        for asked in batch {
            let answer = found.get(&asked.ask).cloned().ok_or_else(|| missing(&asked.ask));
            asked.answer(answer);
        }
        None
    }
}

impl Alone for QuotaChangeStatement {
    async fn alone(&self, key: &QuotaChangeKey) -> Result<QuotaChangeInputs, StoreError> {
        let found = self.read(&[key]).await?;
        found.get(key).cloned().ok_or_else(|| missing(key))
    }
}

impl QuotaChangeStatement {
    /// What each of `keys` is checked against: one row for each (the statement's join keeps
    /// every key, once).
    async fn read(
        &self,
        keys: &[&QuotaChangeKey],
    ) -> Result<HashMap<QuotaChangeKey, QuotaChangeInputs>, sqlx::Error> {
        let fields: Vec<Uuid> = keys.iter().map(|k| k.field_id).collect();
        let departments: Vec<Uuid> = keys.iter().map(|k| k.department_id).collect();
        let sites: Vec<&str> = keys.iter().map(|k| k.site.as_str()).collect();
        let rows: Vec<QuotaChangeRow> = sqlx::query_as(concat!(
            "SELECT k.field_id, k.department_id, k.site_name,
                    (SELECT to_jsonb(d) FROM departments d WHERE d.id = k.department_id),
                    to_jsonb(site), i.*
               FROM unnest($1::uuid[], $2::uuid[], $3::text[]) AS k(field_id, department_id, site_name)
               LEFT JOIN sites site ON site.name = k.site_name
              CROSS JOIN LATERAL (",
            quota_inputs_select!("k.field_id", "k.department_id", "site.id"),
            ") i"
        ))
        .bind(&fields)
        .bind(&departments)
        .bind(&sites)
        .fetch_all(&mut *self.pool.acquire().await?)
        .await?;
        Ok(rows.into_iter().map(quota_change_answer).collect())
    }
}

/// A key the statement returned no row for: a fault of ours, never the caller's.
fn missing(key: &QuotaChangeKey) -> StoreError {
    let why = format!("the quota change read returned no row for {key:?}");
    StoreError::Database(sqlx::Error::Decode(why.into()))
}

/// A department's quota at a site, of a field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct QuotaKey {
    pub field_id: Uuid,
    pub department_id: Uuid,
    pub site_id: Uuid,
}

#[derive(sqlx::FromRow)]
struct QuotaInputsRow {
    field_id: Uuid,
    department_id: Uuid,
    site_id: Uuid,
    servers_cpu: i64,
    servers_ram: i64,
    own_cpu: Option<i64>,
    own_ram: Option<i64>,
    others_cpu: i64,
    others_ram: i64,
    used_cpu: i64,
    used_ram: i64,
}

/// [`quota_inputs`] of many quotas in one statement (a page of quota requests, say). A
/// statement of its own: the single-quota one, on every quota change's path, plans and runs
/// about 15 % faster than this one with one key (pgbench, 2026-12-06).
pub async fn quota_inputs_many(
    conn: &mut PgConnection,
    keys: &[QuotaKey],
) -> Result<HashMap<QuotaKey, QuotaInputs>, StoreError> {
    let fields: Vec<Uuid> = keys.iter().map(|k| k.field_id).collect();
    let departments: Vec<Uuid> = keys.iter().map(|k| k.department_id).collect();
    let sites: Vec<Uuid> = keys.iter().map(|k| k.site_id).collect();
    let rows: Vec<QuotaInputsRow> = sqlx::query_as(
        "SELECT k.field_id, k.department_id, k.site_id, s.cpu AS servers_cpu, s.ram AS servers_ram,
                own.cpu_limit::int8 AS own_cpu, own.ram_gb_limit::int8 AS own_ram,
                o.cpu AS others_cpu, o.ram AS others_ram, p.cpu AS used_cpu, p.ram AS used_ram
           FROM (SELECT DISTINCT * FROM unnest($1::uuid[], $2::uuid[], $3::uuid[])
                                     AS k(field_id, department_id, site_id)) k
          CROSS JOIN LATERAL (
                SELECT coalesce(sum(cpu_cores), 0)::int8 AS cpu, coalesce(sum(ram_gb), 0)::int8 AS ram
                  FROM servers WHERE field_id = k.field_id AND site_id = k.site_id AND status = 'active') s
          CROSS JOIN LATERAL (
                SELECT coalesce(sum(q.cpu_limit), 0)::int8 AS cpu, coalesce(sum(q.ram_gb_limit), 0)::int8 AS ram
                  FROM department_quotas q JOIN departments d ON d.id = q.department_id
                 WHERE d.field_id = k.field_id AND q.site_id = k.site_id
                   AND q.department_id <> k.department_id) o
          CROSS JOIN LATERAL (
                SELECT coalesce(sum(cpu), 0)::int8 AS cpu, coalesce(sum(ram_gb), 0)::int8 AS ram
                  FROM project_reservations r
                 WHERE r.department_id = k.department_id AND r.site_id = k.site_id) p
           LEFT JOIN department_quotas own
                  ON own.department_id = k.department_id AND own.site_id = k.site_id
                 AND EXISTS (SELECT 1 FROM departments d
                              WHERE d.id = k.department_id AND d.field_id = k.field_id)",
    )
    .bind(&fields)
    .bind(&departments)
    .bind(&sites)
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| {
            let key = QuotaKey {
                field_id: r.field_id,
                department_id: r.department_id,
                site_id: r.site_id,
            };
            let inputs = QuotaInputs {
                servers: Resources::new(r.servers_cpu, r.servers_ram),
                own: r.own_cpu.zip(r.own_ram).map(|(c, r)| Resources::new(c, r)),
                others: Resources::new(r.others_cpu, r.others_ram),
                used_by_projects: Resources::new(r.used_cpu, r.used_ram),
            };
            (key, inputs)
        })
        .collect())
}

/// The department's quota at the site (if it has one) and what its projects reserve there, in
/// one statement: every project but the deleted and rejected ones (`ProjectStatus::holds_quota`, whose
/// tests keep the two in step), as committed. The reservations are the row the database keeps
/// in step with the projects (`project_reservations`, migration 22), one row whatever the
/// department's size; a transaction's own project changes count there only from its commit.
/// The read is the function `capacity_quota_and_usage` (migration 23), which the reservation
/// check runs under the lock ([`lock_quota_and_usage`]).
pub async fn quota_and_usage(
    conn: &mut PgConnection,
    department_id: Uuid,
    site_id: Uuid,
) -> Result<(Option<Resources>, Resources), StoreError> {
    let row: QuotaAndUsageRow = sqlx::query_as("SELECT * FROM capacity_quota_and_usage($1, $2)")
        .bind(department_id)
        .bind(site_id)
        .fetch_one(conn)
        .await?;
    Ok(quota_and_used(row))
}

/// The quota's CPU and RAM (both `NULL` without a quota) and what the projects reserve.
type QuotaAndUsageRow = (Option<i64>, Option<i64>, i64, i64);

fn quota_and_used(
    (quota_cpu, quota_ram, cpu, ram): QuotaAndUsageRow,
) -> (Option<Resources>, Resources) {
    let quota = quota_cpu.zip(quota_ram).map(|(c, r)| Resources::new(c, r));
    (quota, Resources::new(cpu, ram))
}

/// [`lock_field_site`], then [`quota_and_usage`] in a snapshot taken after the lock was granted
/// (it sees what the lock's previous holders committed), in one round trip (the function
/// `capacity_lock_quota_and_usage`, migration 23): the lock is held from here to the commit,
/// one round trip less than with the two statements.
pub async fn lock_quota_and_usage(
    conn: &mut PgConnection,
    field_id: Uuid,
    department_id: Uuid,
    site_id: Uuid,
) -> Result<(Option<Resources>, Resources), StoreError> {
    let row: QuotaAndUsageRow =
        sqlx::query_as("SELECT * FROM capacity_lock_quota_and_usage($1, $2, $3)")
            .bind(field_id)
            .bind(department_id)
            .bind(site_id)
            .fetch_one(conn)
            .await?;
    Ok(quota_and_used(row))
}

/// Whether `err` is the database refusing, as a transaction commits, a project reservation it
/// was asked to check there (migration 24): over the department's quota at the site
/// (`IHQ01`), or past 90 % of it (`IHQ90`, for the caller to warn).
pub fn reservation_refused_at_commit(err: &sqlx::Error) -> bool {
    let code = err.as_database_error().and_then(|db| db.code());
    matches!(code.as_deref(), Some("IHQ01" | "IHQ90"))
}

pub async fn set_quota(
    conn: &mut PgConnection,
    department_id: Uuid,
    site_id: Uuid,
    quota: Resources,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO department_quotas (department_id, site_id, cpu_limit, ram_gb_limit)
         VALUES ($1, $2, $3, $4)
         ON CONFLICT (department_id, site_id) DO UPDATE
            SET cpu_limit = excluded.cpu_limit, ram_gb_limit = excluded.ram_gb_limit, updated_at = now()",
    )
    .bind(department_id)
    .bind(site_id)
    .bind(i32::try_from(quota.cpu).unwrap_or(i32::MAX))
    .bind(i32::try_from(quota.ram_gb).unwrap_or(i32::MAX))
    .execute(conn)
    .await?;
    Ok(())
}

/// A department's quota at a site and what its projects there reserve.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct QuotaUsageRow {
    pub department_id: Uuid,
    pub department: String,
    pub cpu_limit: i64,
    pub ram_gb_limit: i64,
    pub used_cpu: i64,
    pub used_ram_gb: i64,
}

/// The quotas of the field's departments at the site, each with its projects' use there
/// (every project but the deleted ones), by department name.
pub async fn quotas_with_usage(
    conn: &mut PgConnection,
    field_id: Uuid,
    site_id: Uuid,
) -> Result<Vec<QuotaUsageRow>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT q.department_id, d.name AS department, q.cpu_limit::int8, q.ram_gb_limit::int8,
                coalesce(sum(p.cpu), 0)::int8 AS used_cpu, coalesce(sum(p.ram_gb), 0)::int8 AS used_ram_gb
           FROM department_quotas q
           JOIN departments d ON d.id = q.department_id
           LEFT JOIN projects p ON p.department_id = q.department_id AND p.site_id = q.site_id
                               AND p.status NOT IN ('deleted', 'rejected')
          WHERE d.field_id = $1 AND q.site_id = $2
          GROUP BY q.department_id, d.name, q.cpu_limit, q.ram_gb_limit
          ORDER BY d.name",
    )
    .bind(field_id)
    .bind(site_id)
    .fetch_all(conn)
    .await?)
}

/// Per site of a field: servers and their resources (active and missing), and the quotas.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct FieldSiteRow {
    pub site_id: Uuid,
    pub site: String,
    pub active_servers: i64,
    pub active_cpu: i64,
    pub active_ram_gb: i64,
    pub missing_servers: i64,
    pub missing_cpu: i64,
    pub missing_ram_gb: i64,
    pub allocated_cpu: i64,
    pub allocated_ram_gb: i64,
    /// Reserved by the field's projects, and what those read from Prometheus use (`None`
    /// when none was read).
    pub reserved_cpu: i64,
    pub reserved_ram_gb: i64,
    pub in_use_cpu: Option<f64>,
    pub in_use_ram_gb: Option<f64>,
}

/// Every site where the field has servers or quotas.
pub async fn field_report(
    conn: &mut PgConnection,
    field_id: Uuid,
) -> Result<Vec<FieldSiteRow>, StoreError> {
    Ok(sqlx::query_as(
        "WITH srv AS (
             SELECT site_id,
                    count(*) FILTER (WHERE status = 'active') AS active_servers,
                    coalesce(sum(cpu_cores) FILTER (WHERE status = 'active'), 0) AS active_cpu,
                    coalesce(sum(ram_gb) FILTER (WHERE status = 'active'), 0) AS active_ram_gb,
                    count(*) FILTER (WHERE status = 'missing') AS missing_servers,
                    coalesce(sum(cpu_cores) FILTER (WHERE status = 'missing'), 0) AS missing_cpu,
                    coalesce(sum(ram_gb) FILTER (WHERE status = 'missing'), 0) AS missing_ram_gb
               FROM servers WHERE field_id = $1 GROUP BY site_id),
         quo AS (
             SELECT q.site_id, sum(q.cpu_limit) AS cpu, sum(q.ram_gb_limit) AS ram
               FROM department_quotas q JOIN departments d ON d.id = q.department_id
              WHERE d.field_id = $1 GROUP BY q.site_id),
         prj AS (
             SELECT p.site_id, sum(p.cpu) AS cpu, sum(p.ram_gb) AS ram, sum(p.used_cpu) AS used_cpu,
                    sum(p.used_ram_gb) AS used_ram
               FROM projects p JOIN departments d ON d.id = p.department_id
              WHERE d.field_id = $1 AND p.status NOT IN ('deleted', 'rejected') GROUP BY p.site_id)
         SELECT si.id AS site_id, si.name AS site,
                coalesce(srv.active_servers, 0)::int8 AS active_servers,
                coalesce(srv.active_cpu, 0)::int8 AS active_cpu,
                coalesce(srv.active_ram_gb, 0)::int8 AS active_ram_gb,
                coalesce(srv.missing_servers, 0)::int8 AS missing_servers,
                coalesce(srv.missing_cpu, 0)::int8 AS missing_cpu,
                coalesce(srv.missing_ram_gb, 0)::int8 AS missing_ram_gb,
                coalesce(quo.cpu, 0)::int8 AS allocated_cpu,
                coalesce(quo.ram, 0)::int8 AS allocated_ram_gb,
                coalesce(prj.cpu, 0)::int8 AS reserved_cpu,
                coalesce(prj.ram, 0)::int8 AS reserved_ram_gb,
                prj.used_cpu AS in_use_cpu, prj.used_ram AS in_use_ram_gb
           FROM sites si
           LEFT JOIN srv ON srv.site_id = si.id
           LEFT JOIN quo ON quo.site_id = si.id
           LEFT JOIN prj ON prj.site_id = si.id
          WHERE srv.site_id IS NOT NULL OR quo.site_id IS NOT NULL
          ORDER BY si.name",
    )
    .bind(field_id)
    .fetch_all(conn)
    .await?)
}

/// Per site of a department: its quota and what its projects use.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DepartmentSiteRow {
    pub site_id: Uuid,
    pub site: String,
    pub cpu_limit: i64,
    pub ram_gb_limit: i64,
    pub used_cpu: i64,
    pub used_ram_gb: i64,
    /// What its projects there use, as read from Prometheus (`None`: never read).
    pub in_use_cpu: Option<f64>,
    pub in_use_ram_gb: Option<f64>,
}

/// A [`DepartmentSiteRow`] of one of a field's departments.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct FieldDepartmentSiteRow {
    pub department_id: Uuid,
    #[sqlx(flatten)]
    pub row: DepartmentSiteRow,
}

/// [`department_report`] of every department of the field, in one statement, by department
/// id and site name.
pub async fn field_department_report(
    conn: &mut PgConnection,
    field_id: Uuid,
) -> Result<Vec<FieldDepartmentSiteRow>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT d.id AS department_id, si.id AS site_id, si.name AS site,
                coalesce(q.cpu_limit, 0)::int8 AS cpu_limit, coalesce(q.ram_gb_limit, 0)::int8 AS ram_gb_limit,
                coalesce(p.cpu, 0)::int8 AS used_cpu, coalesce(p.ram, 0)::int8 AS used_ram_gb,
                p.in_use_cpu, p.in_use_ram_gb
           FROM departments d
          CROSS JOIN sites si
           LEFT JOIN department_quotas q ON q.site_id = si.id AND q.department_id = d.id
           LEFT JOIN (SELECT department_id, site_id, sum(cpu) AS cpu, sum(ram_gb) AS ram,
                             sum(used_cpu) AS in_use_cpu, sum(used_ram_gb) AS in_use_ram_gb
                        FROM projects
                       WHERE department_id IN (SELECT id FROM departments WHERE field_id = $1)
                         AND status NOT IN ('deleted', 'rejected')
                       GROUP BY department_id, site_id) p
                  ON p.department_id = d.id AND p.site_id = si.id
          WHERE d.field_id = $1 AND (q.site_id IS NOT NULL OR p.site_id IS NOT NULL)
          ORDER BY d.id, si.name",
    )
    .bind(field_id)
    .fetch_all(conn)
    .await?)
}

pub async fn department_report(
    conn: &mut PgConnection,
    department_id: Uuid,
) -> Result<Vec<DepartmentSiteRow>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT si.id AS site_id, si.name AS site,
                coalesce(q.cpu_limit, 0)::int8 AS cpu_limit, coalesce(q.ram_gb_limit, 0)::int8 AS ram_gb_limit,
                coalesce(p.cpu, 0)::int8 AS used_cpu, coalesce(p.ram, 0)::int8 AS used_ram_gb,
                p.in_use_cpu, p.in_use_ram_gb
           FROM sites si
           LEFT JOIN department_quotas q ON q.site_id = si.id AND q.department_id = $1
           LEFT JOIN (SELECT site_id, sum(cpu) AS cpu, sum(ram_gb) AS ram,
                             sum(used_cpu) AS in_use_cpu, sum(used_ram_gb) AS in_use_ram_gb
                        FROM projects
                       WHERE department_id = $1 AND status NOT IN ('deleted', 'rejected') GROUP BY site_id) p ON p.site_id = si.id
          WHERE q.site_id IS NOT NULL OR p.site_id IS NOT NULL
          ORDER BY si.name",
    )
    .bind(department_id)
    .fetch_all(conn)
    .await?)
}
