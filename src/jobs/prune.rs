//! `prune_jobs`: deletes finished jobs older than `workers.retention_days`, and cron ticks
//! older than that except each schedule's latest (needed for catch-up).

use serde_json::json;

use super::{JobFuture, JobHandler, KindSettings, Outcome};
use crate::context::Context;
use crate::store::jobs::{self, Claimed};

pub const PRUNE_JOBS: &str = "prune_jobs";

pub struct PruneJobs;

impl JobHandler for PruneJobs {
    fn kind(&self) -> &'static str {
        PRUNE_JOBS
    }

    fn defaults(&self) -> KindSettings {
        KindSettings { concurrency: 1, ..KindSettings::default() }
    }

    fn dedupe_key(&self) -> Option<&'static str> {
        Some(PRUNE_JOBS)
    }

    fn run<'a>(&'a self, ctx: &'a Context, _: &'a Claimed) -> JobFuture<'a> {
        Box::pin(async move {
            let age = ctx.config.workers.retention_days as f64 * 86_400.0;
            let mut conn = ctx.pool.acquire().await?;
            let deleted = jobs::prune_finished(&mut conn, age).await?;
            let ticks = jobs::prune_ticks(&mut conn, age).await?;
            Ok(Outcome::Done(json!({ "deleted_jobs": deleted, "deleted_ticks": ticks })))
        })
    }
}
