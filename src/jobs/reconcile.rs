//! `reconcile`: every minute, finds projects waiting on a job that is no longer live and
//! starts their work again (see [`app::projects::reconcile`]), so no project stays
//! provisioning, degraded or deleting with nothing on its way; and moves on the projects whose
//! time has come: approval requests nobody decided, projects past their time to live, and
//! scheduled deletions past their grace period.

use super::{Job, JobError, KindSettings, Outcome, Run, Trigger};
use crate::app;
use crate::context::Context;

pub struct Reconcile;

impl Job for Reconcile {
    const KIND: &'static str = "reconcile";
    const DEDUPE: bool = true;
    type Payload = Trigger;

    fn settings(&self) -> KindSettings {
        KindSettings { concurrency: 1, ..KindSettings::default() }
    }

    async fn run(&self, ctx: &Context, job: &Run<Trigger>) -> Result<Outcome, JobError> {
        Ok(Outcome::done(app::projects::reconcile(ctx, job.id).await?))
    }
}
