//! `sync_servers`: pulls the server inventory (NetBox or a file) into `servers`; see
//! [`app::inventory::sync`]. One sync at a time.

use super::{Job, JobError, KindSettings, Outcome, Run, Trigger};
use crate::app;
use crate::app::inventory::SyncError;
use crate::context::Context;
use crate::store::audit::Actor;

pub struct SyncServers;

impl From<SyncError> for JobError {
    fn from(err: SyncError) -> Self {
        match err {
            SyncError::Inventory(client) => client.into(),
            SyncError::App(app) => app.into(),
        }
    }
}

impl Job for SyncServers {
    const KIND: &'static str = "sync_servers";
    const DEDUPE: bool = true;
    type Payload = Trigger;

    fn settings(&self) -> KindSettings {
        KindSettings {
            concurrency: 1,
            max_attempts: 5,
            timeout: std::time::Duration::from_secs(600),
            backoff_base: std::time::Duration::from_secs(5),
            backoff_max: std::time::Duration::from_secs(300),
            deadline: None,
        }
    }

    async fn run(&self, ctx: &Context, _: &Run<Trigger>) -> Result<Outcome, JobError> {
        let source = ctx.clients.inventory.as_ref();
        let report = app::inventory::sync(ctx, source, &Actor::system("sync_servers")).await?;
        Ok(Outcome::done(report))
    }
}
