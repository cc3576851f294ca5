//! `prune_jobs`: deletes finished jobs older than `workers.retention_days`, and cron ticks
//! older than that except each schedule's latest (needed for catch-up).

use super::{Job, JobError, KindSettings, Outcome, Run, Trigger};
use crate::app;
use crate::context::Context;

pub struct PruneJobs;

impl Job for PruneJobs {
    const KIND: &'static str = "prune_jobs";
    const DEDUPE: bool = true;
    type Payload = Trigger;

    fn settings(&self) -> KindSettings {
        KindSettings { concurrency: 1, ..KindSettings::default() }
    }

    async fn run(&self, ctx: &Context, _: &Run<Trigger>) -> Result<Outcome, JobError> {
        Ok(Outcome::done(app::jobs::prune(ctx).await?))
    }
}
