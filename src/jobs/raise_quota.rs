//! `raise_quota`: applies an approved quota request: adds the amount asked to the department's
//! quota at the site as it is then, under the (field, site) lock, checked against the field's
//! capacity; see [`app::quota_requests::apply`]. Not merged with other quota changes: an
//! increase builds on whatever the quota is when it runs, and, like them, never applies over
//! a change asked after it.

use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use uuid::Uuid;

use super::{Job, JobError, KindSettings, Outcome, Run};
use crate::app;
use crate::context::Context;
use crate::store::audit::Actor;

/// The job's payload: which request, and how much more.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Raise {
    pub request_id: Uuid,
    pub field_id: Uuid,
    pub department_id: Uuid,
    pub site_id: Uuid,
    pub cpu: i64,
    pub ram_gb: i64,
}

pub struct RaiseQuota;

impl Job for RaiseQuota {
    const KIND: &'static str = "raise_quota";
    type Payload = Raise;

    fn settings(&self) -> KindSettings {
        KindSettings { concurrency: 2, ..KindSettings::default() }
    }

    async fn run(&self, ctx: &Context, job: &Run<Raise>) -> Result<Outcome, JobError> {
        let actor = Actor::job(job.id);
        Ok(Outcome::Done(app::quota_requests::apply(ctx, &actor, &job.payload, job.id).await?))
    }

    /// The request says it failed, and why, with the job's end.
    async fn on_failure(
        &self,
        _ctx: &Context,
        conn: &mut PgConnection,
        job: &Run<Raise>,
        reason: &str,
    ) -> Result<(), JobError> {
        app::quota_requests::failed(conn, job.payload.request_id, reason).await?;
        Ok(())
    }
}
