//! Counts behind the gauges of `/metrics`, read at scrape time (so nothing stale lingers when a
//! department or a job kind goes away).

use sqlx::PgConnection;

use super::StoreError;

/// Jobs of one kind waiting or running, and how long the oldest ready one has waited.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct JobBacklog {
    pub kind: String,
    /// Queued or retrying, due now.
    pub ready: i64,
    /// Queued or retrying, due later (backoff, schedules).
    pub scheduled: i64,
    pub running: i64,
    /// Seconds since the oldest ready job became due; 0 when none is.
    pub oldest_ready_secs: f64,
}

#[tracing::instrument(skip_all)]
pub async fn job_backlog(conn: &mut PgConnection) -> Result<Vec<JobBacklog>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT kind,
                count(*) FILTER (WHERE status IN ('queued', 'retrying') AND run_at <= now()) AS ready,
                count(*) FILTER (WHERE status IN ('queued', 'retrying') AND run_at > now()) AS scheduled,
                count(*) FILTER (WHERE status = 'running') AS running,
                coalesce(extract(epoch FROM now() - min(run_at)
                    FILTER (WHERE status IN ('queued', 'retrying') AND run_at <= now())), 0)::float8
                    AS oldest_ready_secs
           FROM jobs
          WHERE status IN ('queued', 'retrying', 'running')
          GROUP BY kind
          ORDER BY kind",
    )
    .fetch_all(conn)
    .await?)
}

/// Projects per status, and how long the one there longest has been in it (since it entered
/// the status, whatever else touched its row).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ProjectsInStatus {
    pub status: String,
    pub count: i64,
    pub oldest_secs: f64,
}

#[tracing::instrument(skip_all)]
pub async fn projects_by_status(
    conn: &mut PgConnection,
) -> Result<Vec<ProjectsInStatus>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT status, count(*) AS count,
                coalesce(extract(epoch FROM now() - min(status_changed_at)), 0)::float8 AS oldest_secs
           FROM projects WHERE status NOT IN ('deleted', 'rejected')
          GROUP BY status ORDER BY status",
    )
    .fetch_all(conn)
    .await?)
}

/// Servers per site and status, assigned to a field or not.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ServerCount {
    pub site: String,
    pub status: String,
    pub assigned: bool,
    pub count: i64,
}

#[tracing::instrument(skip_all)]
pub async fn servers_by_status(conn: &mut PgConnection) -> Result<Vec<ServerCount>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT si.name AS site, s.status, s.field_id IS NOT NULL AS assigned, count(*) AS count
           FROM servers s JOIN sites si ON si.id = s.site_id
          GROUP BY si.name, s.status, s.field_id IS NOT NULL
          ORDER BY 1, 2, 3",
    )
    .fetch_all(conn)
    .await?)
}

/// One field at one site: its active hardware and the quotas of its departments.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct FieldSite {
    pub field: String,
    pub site: String,
    pub active_cpu: i64,
    pub active_ram_gb: i64,
    pub allocated_cpu: i64,
    pub allocated_ram_gb: i64,
}

#[tracing::instrument(skip_all)]
pub async fn field_sites(conn: &mut PgConnection) -> Result<Vec<FieldSite>, StoreError> {
    Ok(sqlx::query_as(
        "WITH srv AS (
             SELECT field_id, site_id, sum(cpu_cores) AS cpu, sum(ram_gb) AS ram
               FROM servers WHERE status = 'active' AND field_id IS NOT NULL
              GROUP BY field_id, site_id),
         quo AS (
             SELECT d.field_id, q.site_id, sum(q.cpu_limit) AS cpu, sum(q.ram_gb_limit) AS ram
               FROM department_quotas q JOIN departments d ON d.id = q.department_id
              GROUP BY d.field_id, q.site_id)
         SELECT f.name AS field, si.name AS site,
                coalesce(srv.cpu, 0)::int8 AS active_cpu,
                coalesce(srv.ram, 0)::int8 AS active_ram_gb,
                coalesce(quo.cpu, 0)::int8 AS allocated_cpu,
                coalesce(quo.ram, 0)::int8 AS allocated_ram_gb
           FROM srv FULL JOIN quo ON quo.field_id = srv.field_id AND quo.site_id = srv.site_id
           JOIN fields f ON f.id = coalesce(srv.field_id, quo.field_id)
           JOIN sites si ON si.id = coalesce(srv.site_id, quo.site_id)
          ORDER BY 1, 2",
    )
    .fetch_all(conn)
    .await?)
}

/// One department at one site: its quota and what its projects reserve.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DepartmentSite {
    pub field: String,
    pub department: String,
    pub site: String,
    pub quota_cpu: i64,
    pub quota_ram_gb: i64,
    pub used_cpu: i64,
    pub used_ram_gb: i64,
}

#[tracing::instrument(skip_all)]
pub async fn department_sites(conn: &mut PgConnection) -> Result<Vec<DepartmentSite>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT f.name AS field, d.name AS department, si.name AS site,
                q.cpu_limit::int8 AS quota_cpu, q.ram_gb_limit::int8 AS quota_ram_gb,
                coalesce(p.cpu, 0)::int8 AS used_cpu, coalesce(p.ram, 0)::int8 AS used_ram_gb
           FROM department_quotas q
           JOIN departments d ON d.id = q.department_id
           JOIN fields f ON f.id = d.field_id
           JOIN sites si ON si.id = q.site_id
           LEFT JOIN (SELECT department_id, site_id, sum(cpu) AS cpu, sum(ram_gb) AS ram
                        FROM projects WHERE status NOT IN ('deleted', 'rejected')
                       GROUP BY department_id, site_id) p
                  ON p.department_id = q.department_id AND p.site_id = q.site_id
          ORDER BY 1, 2, 3",
    )
    .fetch_all(conn)
    .await?)
}
