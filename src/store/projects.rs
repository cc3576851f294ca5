//! Projects and their quota reservations.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sqlx::PgConnection;
use uuid::Uuid;

use super::audit::Actor;
use super::jobs::{Job, NewJob};
use super::{Page, PageRequest, StoreError};
use crate::domain::project::ProjectStatus;
use crate::domain::scope::Scope;

#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Project {
    pub id: Uuid,
    pub name: String,
    pub namespace: String,
    pub department_id: Uuid,
    pub department: String,
    pub field_id: Uuid,
    pub field: String,
    pub site_id: Uuid,
    pub site: String,
    pub sla_type: String,
    pub performance_tier: String,
    /// Reserved from the department's quota at the site.
    pub cpu: i32,
    pub ram_gb: i32,
    /// Further ResourceQuota entries from the catalog.
    #[schema(value_type = Object)]
    pub extra_quota: Value,
    #[sqlx(try_from = "String")]
    pub status: ProjectStatus,
    pub failure_reason: Option<String>,
    /// The status a `failed` project failed in (`provisioning`, `degraded` or `deleting`): a
    /// retry of a failed deletion deletes again.
    pub failed_from: Option<String>,
    /// The latest provisioning or deprovisioning job.
    pub last_job_id: Option<Uuid>,
    /// Bumped by every change; a delivery writes only while it carries the current one.
    pub generation: i64,
    /// While the project is `pending_approval`: when the request is rejected as expired
    /// unless someone decides it first.
    pub approval_expires_at: Option<DateTime<Utc>>,
    /// Why the request needed approval, when it did (kept after the decision).
    pub approval_reason: Option<String>,
    /// While the project is `deletion_scheduled`: when its namespace goes, unless restored.
    pub delete_at: Option<DateTime<Utc>>,
    /// Its time to live: past it, its deletion is scheduled (as if deleted then).
    pub expires_at: Option<DateTime<Utc>>,
    /// What its namespace actually uses (requests), read from Prometheus at `usage_at`.
    pub used_cpu: Option<f64>,
    pub used_ram_gb: Option<f64>,
    pub usage_at: Option<DateTime<Utc>>,
    /// Since when its use has stayed under half of its quota.
    pub under_half_since: Option<DateTime<Utc>>,
    /// Its use has stayed under half of its quota for 30 days: a smaller tier would do.
    pub oversized: bool,
    pub created_by: Option<Uuid>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub deleted_at: Option<DateTime<Utc>>,
}

macro_rules! project_select {
    () => {
        project_select!("projects")
    };
    // The columns of the rows of `$source` (a table or a CTE, as `p`).
    ($source:literal) => {
        concat!("SELECT p.id, p.name, p.namespace, p.department_id, d.name AS department, d.field_id,
                f.name AS field, p.site_id, s.name AS site, p.sla_type, p.performance_tier, p.cpu,
                p.ram_gb, p.extra_quota, p.status, p.failure_reason, p.failed_from, p.last_job_id, p.generation,
                p.approval_expires_at, p.approval_reason, p.delete_at, p.expires_at, p.used_cpu,
                p.used_ram_gb, p.usage_at, p.under_half_since,
                coalesce(p.under_half_since <= now() - interval '30 days', false) AS oversized,
                p.created_by,
                p.created_at, p.updated_at, p.deleted_at
           FROM ", $source, " p
           JOIN departments d ON d.id = p.department_id
           JOIN fields f ON f.id = d.field_id
           JOIN sites s ON s.id = p.site_id")
    };
}

pub struct NewProject<'a> {
    pub id: Uuid,
    /// The job enqueued for it in the same transaction, if any.
    pub last_job_id: Option<Uuid>,
    pub name: &'a str,
    pub namespace: &'a str,
    pub department_id: Uuid,
    pub site_id: Uuid,
    pub status: ProjectStatus,
    pub sla_type: &'a str,
    pub performance_tier: &'a str,
    pub cpu: i32,
    pub ram_gb: i32,
    pub extra_quota: &'a Value,
    pub created_by: Uuid,
    /// For a request that waits for approval: how many seconds after its insertion (by the
    /// database's clock, which every daemon shares) it expires, and why it needs approval.
    pub approval_expires_after_secs: Option<i64>,
    pub approval_reason: Option<&'a str>,
    pub expires_at: Option<DateTime<Utc>>,
    /// Whether the database checks the project's reservation when the transaction commits
    /// (migration 24: the transaction's `infrahub.reservation_check` setting), instead of
    /// the caller before it.
    pub reservation_checked_at_commit: bool,
}

/// The generation of a project just created.
pub const FIRST_GENERATION: i64 = 1;

/// Inserts the project, at generation [`FIRST_GENERATION`], and returns it as [`get`] reads
/// it, in one statement (which also sets, for the rest of the transaction, where its
/// reservation is checked); a live project of the same name or namespace at the site is a
/// [`StoreError::Duplicate`].
pub async fn insert(conn: &mut PgConnection, new: &NewProject<'_>) -> Result<Project, StoreError> {
    let project = sqlx::query_as(concat!(
        "WITH checked AS (SELECT project_reservation_check($18)),
         inserted AS (
             INSERT INTO projects (id, name, department_id, site_id, namespace, sla_type,
                                   performance_tier, cpu, ram_gb, extra_quota, status, created_by,
                                   generation, approval_expires_at, approval_reason, expires_at,
                                   last_job_id)
             SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $12, $11, $16,
                    now() + $13::int8 * interval '1 second', $14, $15, $17
               FROM checked
             RETURNING *) ",
        project_select!("inserted")
    ))
    .bind(new.id)
    .bind(new.name)
    .bind(new.department_id)
    .bind(new.site_id)
    .bind(new.namespace)
    .bind(new.sla_type)
    .bind(new.performance_tier)
    .bind(new.cpu)
    .bind(new.ram_gb)
    .bind(new.extra_quota)
    .bind(new.created_by)
    .bind(new.status.as_str())
    .bind(new.approval_expires_after_secs)
    .bind(new.approval_reason)
    .bind(new.expires_at)
    .bind(FIRST_GENERATION)
    .bind(new.last_job_id)
    .bind(new.reservation_checked_at_commit)
    .fetch_one(conn)
    .await?;
    Ok(project)
}

/// A new project for [`create_many`]: its row, its department's field, the
/// `provision_namespace` job that starts it and who asks for it.
pub struct Provisioned<'a> {
    /// `provisioning`, needing no approval, its reservation checked at the commit; its
    /// `last_job_id` is the job [`create_many`] makes.
    pub project: NewProject<'a>,
    pub field_id: Uuid,
    /// Due now, with no dedupe or coalesce key.
    pub job: &'a NewJob<'a>,
    pub actor: &'a Actor,
}

/// A project as [`create_many`] returns it, with its job (read back from JSON: the two rows'
/// columns share names).
#[derive(sqlx::FromRow)]
struct Made {
    #[sqlx(flatten)]
    project: Project,
    #[sqlx(json)]
    job: Job,
}

/// Inserts several new projects at generation [`FIRST_GENERATION`], each with its job and its
/// `project.create` audit event (the project as [`get`] reads it, timestamps as
/// `utc_text!` writes them), in one statement: they commit together (on a connection outside
/// a transaction, at once), each reservation checked by the database at the commit (migration
/// 24), which refuses them all if one does not fit (SQLSTATE `IHQ01`) or warns (`IHQ90`). The
/// projects are written ordered by field, then site, and their deferred triggers, which take
/// the (field, site) locks at the commit, fire in the order the rows were written (what
/// PostgreSQL does, though it does not promise it): so the locks are taken in the order every
/// transaction that takes several takes them (a server moved between fields locks its site's
/// fields in that order too, `app::allocation`), and none can hold a lock another of them
/// waits for while it waits for one that other holds. Each lock is held from the moment it is
/// taken to the end of the commit. Returns each project and its job, in `batch`'s order;
/// when the statement fails, none was made. (It commits as it ends: a failure to read its
/// answer after that leaves what it wrote.)
#[tracing::instrument(skip_all, fields(count = batch.len()))]
pub async fn create_many(
    conn: &mut PgConnection,
    batch: &[Provisioned<'_>],
) -> Result<Vec<(Project, Job)>, StoreError> {
    let fits = |p: &Provisioned<'_>| {
        p.project.status == ProjectStatus::Provisioning
            && p.project.approval_reason.is_none()
            && p.project.approval_expires_after_secs.is_none()
            && p.project.reservation_checked_at_commit
            && p.job.dedupe_key.is_none()
            && p.job.coalesce_key.is_none()
            && p.job.run_at.is_none()
            && p.job.delay.is_zero()
    };
    if !batch.iter().all(fits) {
        let why = "create_many writes provisioning projects checked at the commit, with jobs due now and no keys";
        return Err(StoreError::Database(sqlx::Error::InvalidArgument(why.to_owned())));
    }
    let job_ids: Vec<Uuid> = batch.iter().map(|_| Uuid::now_v7()).collect();
    let made: Vec<Made> = sqlx::query_as(concat!(
        "WITH checked AS (SELECT project_reservation_check(true)),
         given AS (
             SELECT * FROM unnest($1::uuid[], $2::text[], $3::uuid[], $4::uuid[], $5::uuid[],
                                  $6::text[], $7::text[], $8::text[], $9::int4[], $10::int4[],
                                  $11::jsonb[], $12::uuid[], $13::timestamptz[], $14::uuid[],
                                  $15::text[], $16::jsonb[], $17::text[], $18::text[],
                                  $19::uuid[], $20::uuid[], $21::text[], $22::int4[],
                                  $23::uuid[], $24::text[], $25::text[], $28::uuid[])
                 AS n(id, name, department_id, field_id, site_id, namespace, sla_type,
                      performance_tier, cpu, ram_gb, extra_quota, created_by, expires_at,
                      job_id, kind, payload, subject_type, subject_id, scope_field_id,
                      scope_department_id, submitted_by_name, max_attempts, actor_id, actor,
                      request_id, submitted_by)),
         queued AS (
             INSERT INTO jobs (id, kind, payload, subject_type, subject_id, scope_field_id,
                               scope_department_id, submitted_by, submitted_by_name,
                               max_attempts, run_at)
             SELECT n.job_id, n.kind, n.payload, n.subject_type, n.subject_id,
                    n.scope_field_id, n.scope_department_id, n.submitted_by,
                    n.submitted_by_name, n.max_attempts, now()
               FROM given n
             RETURNING *),
         inserted AS (
             INSERT INTO projects (id, name, department_id, site_id, namespace, sla_type,
                                   performance_tier, cpu, ram_gb, extra_quota, status,
                                   created_by, generation, expires_at, last_job_id)
             SELECT n.id, n.name, n.department_id, n.site_id, n.namespace, n.sla_type,
                    n.performance_tier, n.cpu, n.ram_gb, n.extra_quota, $26, n.created_by,
                    $27, n.expires_at, n.job_id
               FROM given n, checked
              ORDER BY n.field_id, n.site_id, n.id
             RETURNING *),
         made AS (",
        project_select!("inserted"),
        "),
         recorded AS (
             INSERT INTO audit_events (actor_id, actor, action, subject_type, subject_id,
                                       after, request_id, field_ids)
             SELECT n.actor_id, n.actor, 'project.create', 'project', p.id::text,
                    jsonb_build_object(
                        'id', p.id, 'name', p.name, 'namespace', p.namespace,
                        'department_id', p.department_id, 'department', p.department,
                        'field_id', p.field_id, 'field', p.field, 'site_id', p.site_id,
                        'site', p.site, 'sla_type', p.sla_type,
                        'performance_tier', p.performance_tier, 'cpu', p.cpu,
                        'ram_gb', p.ram_gb, 'extra_quota', p.extra_quota,
                        'status', p.status, 'failure_reason', p.failure_reason,
                        'failed_from', p.failed_from, 'last_job_id', p.last_job_id,
                        'generation', p.generation,
                        'approval_expires_at', ",
        utc_text!("p.approval_expires_at"),
        ", 'approval_reason', p.approval_reason,
                        'delete_at', ",
        utc_text!("p.delete_at"),
        ", 'expires_at', ",
        utc_text!("p.expires_at"),
        ",
                        'used_cpu', p.used_cpu, 'used_ram_gb', p.used_ram_gb,
                        'usage_at', ",
        utc_text!("p.usage_at"),
        ", 'under_half_since', ",
        utc_text!("p.under_half_since"),
        ",
                        'oversized', p.oversized, 'created_by', p.created_by,
                        'created_at', ",
        utc_text!("p.created_at"),
        ", 'updated_at', ",
        utc_text!("p.updated_at"),
        ", 'deleted_at', ",
        utc_text!("p.deleted_at"),
        "),
                    n.request_id, ARRAY[p.field_id]
               FROM made p JOIN given n ON n.id = p.id)
         SELECT p.*,
                (SELECT to_jsonb(j) FROM (SELECT ",
        job_columns!(),
        " FROM queued WHERE queued.id = p.last_job_id) j) AS job
           FROM made p"
    ))
    .bind(batch.iter().map(|p| p.project.id).collect::<Vec<_>>())
    .bind(batch.iter().map(|p| p.project.name).collect::<Vec<_>>())
    .bind(batch.iter().map(|p| p.project.department_id).collect::<Vec<_>>())
    .bind(batch.iter().map(|p| p.field_id).collect::<Vec<_>>())
    .bind(batch.iter().map(|p| p.project.site_id).collect::<Vec<_>>())
    .bind(batch.iter().map(|p| p.project.namespace).collect::<Vec<_>>())
    .bind(batch.iter().map(|p| p.project.sla_type).collect::<Vec<_>>())
    .bind(batch.iter().map(|p| p.project.performance_tier).collect::<Vec<_>>())
    .bind(batch.iter().map(|p| p.project.cpu).collect::<Vec<_>>())
    .bind(batch.iter().map(|p| p.project.ram_gb).collect::<Vec<_>>())
    .bind(batch.iter().map(|p| p.project.extra_quota).collect::<Vec<_>>())
    .bind(batch.iter().map(|p| p.project.created_by).collect::<Vec<_>>())
    .bind(batch.iter().map(|p| p.project.expires_at).collect::<Vec<_>>())
    .bind(&job_ids)
    .bind(batch.iter().map(|p| p.job.kind).collect::<Vec<_>>())
    .bind(batch.iter().map(|p| &p.job.payload).collect::<Vec<_>>())
    .bind(batch.iter().map(|p| p.job.subject.as_ref().map(|s| s.0)).collect::<Vec<_>>())
    .bind(batch.iter().map(|p| p.job.subject.as_ref().map(|s| s.1.as_str())).collect::<Vec<_>>())
    .bind(batch.iter().map(|p| p.job.scope.field_id).collect::<Vec<_>>())
    .bind(batch.iter().map(|p| p.job.scope.department_id).collect::<Vec<_>>())
    .bind(batch.iter().map(|p| p.job.submitted_by_name.as_ref()).collect::<Vec<_>>())
    .bind(batch.iter().map(|p| p.job.max_attempts).collect::<Vec<_>>())
    .bind(batch.iter().map(|p| p.actor.user_id).collect::<Vec<_>>())
    .bind(batch.iter().map(|p| p.actor.name.as_str()).collect::<Vec<_>>())
    .bind(batch.iter().map(|p| p.actor.request_id.as_deref()).collect::<Vec<_>>())
    .bind(ProjectStatus::Provisioning.as_str())
    .bind(FIRST_GENERATION)
    .bind(batch.iter().map(|p| p.job.submitted_by).collect::<Vec<_>>())
    .fetch_all(conn)
    .await?;
    let mut by_id: std::collections::HashMap<Uuid, Made> =
        made.into_iter().map(|m| (m.project.id, m)).collect();
    batch
        .iter()
        .map(|p| {
            let Made { project, job } = by_id.remove(&p.project.id).ok_or_else(|| {
                let missing = format!("project {} was not returned", p.project.id);
                StoreError::Database(sqlx::Error::Decode(missing.into()))
            })?;
            Ok((project, job))
        })
        .collect()
}

pub async fn get(conn: &mut PgConnection, id: Uuid) -> Result<Project, StoreError> {
    Ok(sqlx::query_as(concat!(project_select!(), " WHERE p.id = $1"))
        .bind(id)
        .fetch_one(conn)
        .await?)
}

/// Locks the project row for the rest of the transaction and returns it.
pub async fn lock(conn: &mut PgConnection, id: Uuid) -> Result<Project, StoreError> {
    sqlx::query("SELECT 1 FROM projects WHERE id = $1 FOR UPDATE")
        .bind(id)
        .fetch_one(&mut *conn)
        .await?;
    get(conn, id).await
}

/// Locks the row of the project's latest job, if any, and returns its id: taken before the
/// project's own row, in the order every job's end takes them (the job, then its project).
pub async fn lock_last_job(conn: &mut PgConnection, id: Uuid) -> Result<Option<Uuid>, StoreError> {
    Ok(sqlx::query_scalar(
        "SELECT j.id FROM jobs j WHERE j.id = (SELECT last_job_id FROM projects WHERE id = $1)
            FOR UPDATE OF j",
    )
    .bind(id)
    .fetch_optional(conn)
    .await?)
}

#[derive(Debug, Clone, Default)]
pub struct ProjectFilter {
    pub site: Option<String>,
    pub status: Option<ProjectStatus>,
    /// Deleted projects are left out unless asked for by status.
    pub include_deleted: bool,
}

pub async fn list(
    conn: &mut PgConnection,
    scope: Scope,
    filter: &ProjectFilter,
    page: PageRequest,
) -> Result<Page<Project>, StoreError> {
    let rows = sqlx::query_as(concat!(
        project_select!(),
        " WHERE ($1::uuid IS NULL OR p.id > $1)
            AND ($3::uuid IS NULL OR d.field_id = $3)
            AND ($4::uuid IS NULL OR p.department_id = $4)
            AND ($5::text IS NULL OR s.name = $5)
            AND ($6::text IS NULL OR p.status = $6)
            AND ($7 OR $6::text IS NOT NULL OR p.status <> 'deleted')
          ORDER BY p.id LIMIT $2"
    ))
    .bind(page.after)
    .bind(page.fetch_limit())
    .bind(scope.field_id())
    .bind(scope.department_id())
    .bind(filter.site.as_deref())
    .bind(filter.status.map(ProjectStatus::as_str))
    .bind(filter.include_deleted)
    .fetch_all(conn)
    .await?;
    Ok(Page::from_rows(rows, page, |p: &Project| p.id))
}

/// Projects in one of `waiting` whose latest job is no longer live (it ended, or is gone),
/// oldest change first: what the reconciler restarts.
pub async fn stranded(
    conn: &mut PgConnection,
    waiting: &[ProjectStatus],
    limit: i64,
) -> Result<Vec<Uuid>, StoreError> {
    let waiting: Vec<&str> = waiting.iter().map(|s| s.as_str()).collect();
    Ok(sqlx::query_scalar(
        "SELECT p.id FROM projects p LEFT JOIN jobs j ON j.id = p.last_job_id
          WHERE p.status = ANY($1)
            AND (j.id IS NULL OR j.status NOT IN ('queued', 'running', 'retrying'))
          ORDER BY p.updated_at LIMIT $2",
    )
    .bind(&waiting)
    .bind(limit)
    .fetch_all(conn)
    .await?)
}

/// What a sweep of the reconciler looks for: projects whose time for something has come.
#[derive(Debug, Clone, Copy)]
pub enum Due {
    /// Requests waiting for approval past their expiry.
    ApprovalExpired,
    /// Scheduled deletions whose grace period is over.
    Deletion,
    /// Projects past their time to live that are not on their way out yet (or still wait for
    /// approval).
    TimeToLive,
}

impl Due {
    /// The condition, on `projects`, of a project that is due.
    fn condition(self) -> &'static str {
        match self {
            Due::ApprovalExpired => "status = 'pending_approval' AND approval_expires_at <= now()",
            Due::Deletion => "status = 'deletion_scheduled' AND delete_at <= now()",
            Due::TimeToLive => {
                "expires_at <= now() AND status IN ('pending_approval', 'active', 'failed', 'degraded')"
            }
        }
    }

    /// The column it is due by.
    fn deadline(self) -> &'static str {
        match self {
            Due::ApprovalExpired => "approval_expires_at",
            Due::Deletion => "delete_at",
            Due::TimeToLive => "expires_at",
        }
    }
}

/// Up to `limit` projects that are `due`, the longest overdue first.
pub async fn due(conn: &mut PgConnection, due: Due, limit: i64) -> Result<Vec<Uuid>, StoreError> {
    let sql = format!(
        "SELECT id FROM projects WHERE {} ORDER BY {} LIMIT $1",
        due.condition(),
        due.deadline()
    );
    Ok(sqlx::query_scalar(sqlx::AssertSqlSafe(sql)).bind(limit).fetch_all(conn).await?)
}

/// Whether project `id` is still `due`: asked under its row lock, after [`due`] listed it (a
/// restore, say, may have come in between).
pub async fn still_due(conn: &mut PgConnection, id: Uuid, due: Due) -> Result<bool, StoreError> {
    let sql =
        format!("SELECT EXISTS (SELECT 1 FROM projects WHERE id = $1 AND {})", due.condition());
    Ok(sqlx::query_scalar(sqlx::AssertSqlSafe(sql)).bind(id).fetch_one(conn).await?)
}

/// Marks up to `limit` projects whose time to live runs out within `within_secs` and whose
/// owner was not told yet as told, and returns them (locked until the transaction ends).
pub async fn expiry_reminders(
    conn: &mut PgConnection,
    within_secs: i64,
    limit: i64,
) -> Result<Vec<Uuid>, StoreError> {
    Ok(sqlx::query_scalar(
        "UPDATE projects SET expiry_reminded_at = now()
          WHERE id IN (SELECT id FROM projects
                        WHERE expires_at IS NOT NULL AND expiry_reminded_at IS NULL
                          AND status IN ('pending_approval', 'provisioning', 'active', 'failed',
                                         'degraded')
                          AND expires_at <= now() + $1::int8 * interval '1 second'
                        ORDER BY expires_at LIMIT $2 FOR UPDATE SKIP LOCKED)
          RETURNING id",
    )
    .bind(within_secs)
    .bind(limit)
    .fetch_all(conn)
    .await?)
}

/// Forgets a time to live that has run out (a restored project lives on).
pub async fn clear_expired_ttl(conn: &mut PgConnection, id: Uuid) -> Result<(), StoreError> {
    sqlx::query("UPDATE projects SET expires_at = NULL WHERE id = $1 AND expires_at <= now()")
        .bind(id)
        .execute(conn)
        .await?;
    Ok(())
}

/// What one namespace uses, as read.
pub struct Usage<'a> {
    pub namespace: &'a str,
    pub cpu: f64,
    pub ram_gb: f64,
}

/// Records what the namespaces of `site_id`'s projects use, in one statement; since when each
/// stays under half of its quota (CPU and RAM both) is kept, or started, or cleared. A project
/// of the site missing from `usage` loses its reading (old numbers would pass for current
/// ones). Namespaces InfraHub does not manage are ignored. The number of projects updated.
pub async fn record_usage(
    conn: &mut PgConnection,
    site_id: Uuid,
    usage: &[Usage<'_>],
) -> Result<u64, StoreError> {
    let namespaces: Vec<&str> = usage.iter().map(|u| u.namespace).collect();
    let cpu: Vec<f64> = usage.iter().map(|u| u.cpu).collect();
    let ram: Vec<f64> = usage.iter().map(|u| u.ram_gb).collect();
    let done = sqlx::query(
        "WITH u AS (SELECT * FROM unnest($2::text[], $3::float8[], $4::float8[])
                              AS u(namespace, cpu, ram))
         UPDATE projects p
            SET used_cpu = u.cpu, used_ram_gb = u.ram, usage_at = CASE WHEN u.namespace IS NULL THEN NULL ELSE now() END,
                under_half_since = CASE
                    WHEN u.cpu * 2 < p.cpu AND u.ram * 2 < p.ram_gb
                        THEN coalesce(p.under_half_since, now())
                    END
           FROM projects q LEFT JOIN u ON u.namespace = q.namespace
          WHERE p.id = q.id AND q.site_id = $1
            AND q.status NOT IN ('deleted', 'rejected', 'pending_approval')
            AND (u.namespace IS NOT NULL OR q.usage_at IS NOT NULL)",
    )
    .bind(site_id)
    .bind(&namespaces)
    .bind(&cpu)
    .bind(&ram)
    .execute(conn)
    .await?;
    Ok(done.rows_affected())
}

/// Whether the job is queued, running or waiting to retry.
pub async fn job_is_live(
    conn: &mut PgConnection,
    job_id: Option<Uuid>,
) -> Result<bool, StoreError> {
    let Some(job_id) = job_id else { return Ok(false) };
    Ok(sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM jobs WHERE id = $1 AND status IN ('queued', 'running', 'retrying'))",
    )
    .bind(job_id)
    .fetch_one(conn)
    .await?)
}

/// Starts the project's next generation; returns it.
pub async fn next_generation(conn: &mut PgConnection, id: Uuid) -> Result<i64, StoreError> {
    Ok(sqlx::query_scalar(
        "UPDATE projects SET generation = generation + 1, updated_at = now()
          WHERE id = $1 RETURNING generation",
    )
    .bind(id)
    .fetch_one(conn)
    .await?)
}

/// Takes the project's delivery lock until the transaction ends (one delivery at a time per
/// project, across daemons), and returns the project's generation under it.
pub async fn lock_delivery(conn: &mut PgConnection, id: Uuid) -> Result<i64, StoreError> {
    sqlx::query(
        "SELECT pg_advisory_xact_lock(hashtextextended('infrahub:delivery:' || $1::text, 0))",
    )
    .bind(id)
    .execute(&mut *conn)
    .await?;
    Ok(sqlx::query_scalar("SELECT generation FROM projects WHERE id = $1")
        .bind(id)
        .fetch_one(conn)
        .await?)
}

pub async fn set_job(conn: &mut PgConnection, id: Uuid, job_id: Uuid) -> Result<(), StoreError> {
    sqlx::query("UPDATE projects SET last_job_id = $2, updated_at = now() WHERE id = $1")
        .bind(id)
        .bind(job_id)
        .execute(conn)
        .await?;
    Ok(())
}

/// Moves the project from one of `from` to `to` (with `reason` as its failure reason), but only
/// while `job` is still its latest job; false when it was not in such a state.
pub async fn transition(
    conn: &mut PgConnection,
    id: Uuid,
    from: &[ProjectStatus],
    to: ProjectStatus,
    reason: Option<&str>,
    job: Option<Uuid>,
) -> Result<bool, StoreError> {
    transition_at(conn, id, from, to, reason, job, None).await
}

/// [`transition`], with how many seconds from now (the database's clock, which every daemon
/// shares) a move to `deletion_scheduled` deletes the project.
pub async fn transition_at(
    conn: &mut PgConnection,
    id: Uuid,
    from: &[ProjectStatus],
    to: ProjectStatus,
    reason: Option<&str>,
    job: Option<Uuid>,
    delete_after_secs: Option<i64>,
) -> Result<bool, StoreError> {
    let from: Vec<&str> = from.iter().map(|s| s.as_str()).collect();
    let done = sqlx::query(
        "UPDATE projects
            SET status = $3, failure_reason = $4, updated_at = now(),
                deleted_at = CASE WHEN $3 = 'deleted' THEN now() END,
                approval_expires_at = CASE WHEN $3 = 'pending_approval' THEN approval_expires_at END,
                delete_at = CASE WHEN $3 = 'deletion_scheduled'
                                 THEN now() + $6::int8 * interval '1 second' END,
                failed_from = CASE WHEN $3 <> 'failed' THEN NULL
                                   WHEN status = 'failed' THEN failed_from
                                   ELSE status END
          WHERE id = $1 AND status = ANY($2) AND ($5::uuid IS NULL OR last_job_id = $5)",
    )
    .bind(id)
    .bind(&from)
    .bind(to.as_str())
    .bind(reason)
    .bind(job)
    .bind(delete_after_secs)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Changes SLA type, tier and the reserved quota, and moves the project to `status`.
#[allow(clippy::too_many_arguments)]
pub async fn resize(
    conn: &mut PgConnection,
    id: Uuid,
    sla_type: &str,
    tier: &str,
    cpu: i32,
    ram_gb: i32,
    extra_quota: &Value,
    status: ProjectStatus,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE projects SET sla_type = $2, performance_tier = $3, cpu = $4, ram_gb = $5,
                             extra_quota = $6, status = $7, failure_reason = NULL,
                             failed_from = NULL, under_half_since = NULL, updated_at = now()
          WHERE id = $1",
    )
    .bind(id)
    .bind(sla_type)
    .bind(tier)
    .bind(cpu)
    .bind(ram_gb)
    .bind(extra_quota)
    .bind(status.as_str())
    .execute(conn)
    .await?;
    Ok(())
}
