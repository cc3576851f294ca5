//! `allocate_servers`: assigns a server to a field, moves it, or unassigns it, checking again
//! under the (field, site) lock; see [`app::allocation::apply_allocation`].

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{Job, JobError, KindSettings, Outcome, Run};
use crate::app;
use crate::context::Context;
use crate::store::audit::Actor;

/// The job's payload: assign `server_id` to `field_id`, or unassign it when that is null.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Allocation {
    pub server_id: Uuid,
    pub field_id: Option<Uuid>,
}

pub struct AllocateServers;

impl Job for AllocateServers {
    const KIND: &'static str = "allocate_servers";
    type Payload = Allocation;

    /// A server ends where its newest move puts it: queued older moves need not run.
    fn coalesce_key(payload: &Allocation) -> Option<String> {
        Some(payload.server_id.to_string())
    }

    fn settings(&self) -> KindSettings {
        KindSettings {
            concurrency: 4,
            prefetch: 16,
            coalesce_delay: super::COALESCE_DELAY,
            ..KindSettings::default()
        }
    }

    async fn run(&self, ctx: &Context, job: &Run<Allocation>) -> Result<Outcome, JobError> {
        let actor = Actor::job(job.id);
        Ok(Outcome::Done(
            app::allocation::apply_allocation(ctx, &actor, &job.payload, job.id).await?,
        ))
    }
}
