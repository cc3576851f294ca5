//! `sync_servers`: pulls the server inventory (NetBox or a file) into `servers`; see
//! [`app::inventory::sync`]. One sync at a time.

use super::{Job, JobError, KindSettings, Outcome, Run, Trigger};
use crate::app;
use crate::app::inventory::SyncError;
use crate::context::Context;
use crate::store::audit::Actor;

pub struct SyncServers;

/// The job's payload: the cron tick that fired it, or whether a person forced it.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct SyncRequest {
    /// Mark servers missing even when that takes much of a site away at once.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub force: bool,
    #[serde(flatten)]
    pub trigger: Trigger,
}

impl From<SyncError> for JobError {
    fn from(err: SyncError) -> Self {
        match err {
            SyncError::Inventory(client) => client.into(),
            SyncError::App(app) => app.into(),
            SyncError::Refused(why) => JobError::Permanent(why),
        }
    }
}

impl Job for SyncServers {
    const KIND: &'static str = "sync_servers";
    const DEDUPE: bool = true;
    type Payload = SyncRequest;

    fn settings(&self) -> KindSettings {
        KindSettings {
            concurrency: 1,
            prefetch: 0,
            max_attempts: 5,
            timeout: std::time::Duration::from_secs(600),
            backoff_base: std::time::Duration::from_secs(5),
            backoff_max: std::time::Duration::from_secs(300),
            ..KindSettings::default()
        }
    }

    async fn run(&self, ctx: &Context, job: &Run<SyncRequest>) -> Result<Outcome, JobError> {
        let (source, actor) = (ctx.clients.inventory.as_ref(), Actor::system("sync_servers"));
        let report = app::inventory::sync(ctx, source, &actor, job.payload.force).await?;
        Ok(Outcome::done(report))
    }
}
