//! `allocate_quota`: creates or changes a department's quota at a site, checking again under
//! the (field, site) lock; see [`app::allocation::apply_quota`].

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{Job, JobError, KindSettings, Outcome, Run};
use crate::app;
use crate::context::Context;
use crate::domain::capacity::Resources;
use crate::store::audit::Actor;

/// The job's payload: the quota the department is to have at the site.
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

pub struct AllocateQuota;

impl Job for AllocateQuota {
    const KIND: &'static str = "allocate_quota";
    type Payload = QuotaRequest;

    /// A quota is set, not added to: of the changes queued for one department at one site,
    /// only the newest needs to run.
    fn coalesce_key(payload: &QuotaRequest) -> Option<String> {
        Some(format!("{}:{}", payload.department_id, payload.site_id))
    }

    fn settings(&self) -> KindSettings {
        KindSettings {
            concurrency: 4,
            prefetch: 16,
            coalesce_delay: super::COALESCE_DELAY,
            ..KindSettings::default()
        }
    }

    async fn run(&self, ctx: &Context, job: &Run<QuotaRequest>) -> Result<Outcome, JobError> {
        let actor = Actor::job(job.id);
        Ok(Outcome::Done(app::allocation::apply_quota(ctx, &actor, &job.payload, job.id).await?))
    }
}
