//! `allocate_quota`: creates or changes a department's quota at a site, re-checking under the
//! (field, site) lock that the field's capacity holds it and that it holds the projects.

use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::PgConnection;
use uuid::Uuid;

use super::{JobError, JobFuture, JobHandler, KindSettings, Outcome};
use crate::config::Config;
use crate::context::Context;
use crate::domain::capacity::{QuotaError, Resources, capacity, check_quota};
use crate::store::StoreError;
use crate::store::audit::{self, Actor, Change};
use crate::store::capacity as store_capacity;
use crate::store::jobs::Claimed;
use crate::store::org;

pub const ALLOCATE_QUOTA: &str = "allocate_quota";

/// The job's payload.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct QuotaRequest {
    pub field_id: Uuid,
    pub department_id: Uuid,
    pub site_id: Uuid,
    pub cpu_limit: i64,
    pub ram_gb_limit: i64,
}

impl QuotaRequest {
    pub fn requested(&self) -> Resources {
        Resources::new(self.cpu_limit, self.ram_gb_limit)
    }
}

/// The numbers a quota decision rests on.
#[derive(Debug, Clone, Serialize)]
pub struct QuotaCheck {
    pub capacity: Resources,
    pub other_quotas: Resources,
    pub used_by_projects: Resources,
    pub previous: Option<Resources>,
}

impl QuotaCheck {
    /// What the field still has free for this department (capacity minus the others).
    pub fn free(&self) -> Resources {
        (self.capacity - self.other_quotas).positive_part()
    }
}

/// Reads the numbers and checks the request; takes no lock (the job takes it first).
pub async fn evaluate(
    conn: &mut PgConnection,
    config: &Config,
    request: &QuotaRequest,
) -> Result<(QuotaCheck, Result<(), QuotaError>), StoreError> {
    let servers = store_capacity::field_servers(conn, request.field_id, request.site_id).await?;
    let quotas = store_capacity::quotas_at(conn, request.field_id, request.site_id).await?;
    let (own, others): (Vec<_>, Vec<_>) =
        quotas.iter().partition(|q| q.department_id == request.department_id);
    let check = QuotaCheck {
        capacity: capacity(servers, config.overcommit()),
        other_quotas: others.iter().map(|q| Resources::new(q.cpu_limit, q.ram_gb_limit)).sum(),
        used_by_projects: store_capacity::project_usage(
            conn,
            request.department_id,
            request.site_id,
        )
        .await?,
        previous: own.first().map(|q| Resources::new(q.cpu_limit, q.ram_gb_limit)),
    };
    let verdict = check_quota(
        check.capacity,
        check.other_quotas,
        check.used_by_projects,
        request.requested(),
    );
    Ok((check, verdict))
}

pub struct AllocateQuota;

impl JobHandler for AllocateQuota {
    fn kind(&self) -> &'static str {
        ALLOCATE_QUOTA
    }

    fn defaults(&self) -> KindSettings {
        KindSettings { concurrency: 4, ..KindSettings::default() }
    }

    fn run<'a>(&'a self, ctx: &'a Context, job: &'a Claimed) -> JobFuture<'a> {
        Box::pin(async move {
            let request: QuotaRequest = serde_json::from_value(job.payload.clone())
                .map_err(|e| JobError::permanent(format!("bad payload: {e}")))?;
            let actor = Actor { user_id: None, name: format!("job:{}", job.id), request_id: None };
            let mut tx = ctx.pool.begin().await?;
            let field = match org::get_department(&mut tx, request.department_id).await {
                Ok(dept) => Some(dept.field_id),
                Err(StoreError::NotFound) => None,
                Err(other) => return Err(other.into()),
            };
            if field != Some(request.field_id) {
                return Err(JobError::permanent(
                    "the department does not belong to the field (any more)",
                ));
            }
            store_capacity::lock_field_site(&mut tx, request.field_id, request.site_id).await?;
            let (check, verdict) = evaluate(&mut tx, &ctx.config, &request).await?;
            verdict.map_err(|e| JobError::Permanent(e.to_string()))?;
            store_capacity::set_quota(
                &mut tx,
                request.department_id,
                request.site_id,
                request.requested(),
            )
            .await?;
            let subject = format!("{}:{}", request.department_id, request.site_id);
            let change = Change::new("department_quota", "set", subject)
                .before(&check.previous)
                .after(&request.requested());
            audit::record(&mut tx, &actor, change).await?;
            tx.commit().await?;
            let free_after = check.free() - request.requested();
            Ok(Outcome::Done(json!({
                "department_id": request.department_id,
                "site_id": request.site_id,
                "cpu_limit": request.cpu_limit,
                "ram_gb_limit": request.ram_gb_limit,
                "field_free_after": free_after,
            })))
        })
    }
}
