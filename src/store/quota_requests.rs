//! Quota requests: a team lead's ask for more department quota at a site, and its decision.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgConnection;
use uuid::Uuid;

use super::{Page, PageRequest, StoreError};
use crate::domain::scope::Scope;

/// A quota request, with the names of what it is about.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct QuotaRequest {
    pub id: Uuid,
    pub department_id: Uuid,
    pub department: String,
    pub field_id: Uuid,
    pub field: String,
    pub site_id: Uuid,
    pub site: String,
    /// How much more CPU and RAM: added to the quota the department has when approved.
    pub cpu: i32,
    pub ram_gb: i32,
    pub reason: String,
    /// `pending`; `approved` (its `raise_quota` job queued), then `applied` or `failed`
    /// (`decision_reason` says why); or `rejected`.
    pub status: String,
    pub requested_by: Option<Uuid>,
    pub requested_by_name: String,
    pub decided_by_name: Option<String>,
    /// Why it was rejected, or why applying it failed.
    pub decision_reason: Option<String>,
    /// The department's quota once the increase was applied.
    pub approved_cpu: Option<i32>,
    pub approved_ram_gb: Option<i32>,
    /// The `raise_quota` job of an approval.
    pub job_id: Option<Uuid>,
    pub created_at: DateTime<Utc>,
    pub decided_at: Option<DateTime<Utc>>,
}

macro_rules! request_select {
    () => {
        "SELECT r.id, r.department_id, d.name AS department, d.field_id, f.name AS field,
                r.site_id, s.name AS site, r.cpu, r.ram_gb, r.reason, r.status, r.requested_by,
                r.requested_by_name, r.decided_by_name, r.decision_reason, r.approved_cpu,
                r.approved_ram_gb, r.job_id, r.created_at, r.decided_at
           FROM quota_requests r
           JOIN departments d ON d.id = r.department_id
           JOIN fields f ON f.id = d.field_id
           JOIN sites s ON s.id = r.site_id"
    };
}

pub struct NewQuotaRequest<'a> {
    pub department_id: Uuid,
    pub site_id: Uuid,
    pub cpu: i32,
    pub ram_gb: i32,
    pub reason: &'a str,
    pub requested_by: Uuid,
    pub requested_by_name: &'a str,
}

/// Inserts a pending request; an open one for the same department and site is a
/// [`StoreError::Duplicate`].
pub async fn insert(
    conn: &mut PgConnection,
    new: &NewQuotaRequest<'_>,
) -> Result<Uuid, StoreError> {
    let id = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO quota_requests (id, department_id, site_id, cpu, ram_gb, reason, requested_by,
                                     requested_by_name)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(id)
    .bind(new.department_id)
    .bind(new.site_id)
    .bind(new.cpu)
    .bind(new.ram_gb)
    .bind(new.reason)
    .bind(new.requested_by)
    .bind(new.requested_by_name)
    .execute(conn)
    .await?;
    Ok(id)
}

pub async fn get(conn: &mut PgConnection, id: Uuid) -> Result<QuotaRequest, StoreError> {
    Ok(sqlx::query_as(concat!(request_select!(), " WHERE r.id = $1"))
        .bind(id)
        .fetch_one(conn)
        .await?)
}

/// Locks the request for the rest of the transaction and returns it.
pub async fn lock(conn: &mut PgConnection, id: Uuid) -> Result<QuotaRequest, StoreError> {
    sqlx::query("SELECT 1 FROM quota_requests WHERE id = $1 FOR UPDATE")
        .bind(id)
        .fetch_one(&mut *conn)
        .await?;
    get(conn, id).await
}

/// A page of the requests `scope` reaches, optionally of one status: oldest first, or newest
/// first.
pub async fn list(
    conn: &mut PgConnection,
    scope: Scope,
    status: Option<&str>,
    newest_first: bool,
    page: PageRequest,
) -> Result<Page<QuotaRequest>, StoreError> {
    macro_rules! list_after {
        ($after:literal, $order:literal) => {
            concat!(
                request_select!(),
                " WHERE ($1::uuid IS NULL OR r.id ",
                $after,
                " $1)
                    AND ($3::uuid IS NULL OR d.field_id = $3)
                    AND ($4::uuid IS NULL OR r.department_id = $4)
                    AND ($5::text IS NULL OR r.status = $5)
                  ORDER BY r.id ",
                $order,
                " LIMIT $2"
            )
        };
    }
    let sql = if newest_first { list_after!("<", "DESC") } else { list_after!(">", "ASC") };
    let rows = sqlx::query_as(sql)
        .bind(page.after)
        .bind(page.fetch_limit())
        .bind(scope.field_id())
        .bind(scope.department_id())
        .bind(status)
        .fetch_all(conn)
        .await?;
    Ok(Page::from_rows(rows, page, |r: &QuotaRequest| r.id))
}

/// Records an approval and the job applying it.
pub async fn approve(
    conn: &mut PgConnection,
    id: Uuid,
    by: &str,
    job_id: Uuid,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE quota_requests
            SET status = 'approved', decided_by_name = $2, job_id = $3, decided_at = now()
          WHERE id = $1 AND status = 'pending'",
    )
    .bind(id)
    .bind(by)
    .bind(job_id)
    .execute(conn)
    .await?;
    Ok(())
}

/// Records how an approved request ended: applied (with the quota it led to) or failed (why).
pub async fn settle(
    conn: &mut PgConnection,
    id: Uuid,
    applied: Result<(i32, i32), &str>,
) -> Result<bool, StoreError> {
    let (status, cpu, ram, why) = match applied {
        Ok((cpu, ram)) => ("applied", Some(cpu), Some(ram), None),
        Err(why) => ("failed", None, None, Some(why)),
    };
    let done = sqlx::query(
        "UPDATE quota_requests
            SET status = $2, approved_cpu = $3, approved_ram_gb = $4,
                decision_reason = coalesce($5, decision_reason)
          WHERE id = $1 AND status = 'approved'",
    )
    .bind(id)
    .bind(status)
    .bind(cpu)
    .bind(ram)
    .bind(why)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Records a rejection and its reason.
pub async fn reject(
    conn: &mut PgConnection,
    id: Uuid,
    by: &str,
    reason: &str,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE quota_requests
            SET status = 'rejected', decided_by_name = $2, decision_reason = $3, decided_at = now()
          WHERE id = $1 AND status = 'pending'",
    )
    .bind(id)
    .bind(by)
    .bind(reason)
    .execute(conn)
    .await?;
    Ok(())
}
