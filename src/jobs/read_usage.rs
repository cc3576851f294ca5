//! `read_usage`: on `schedule.usage`, reads what every project's namespace uses from the
//! Prometheus of its site; see [`app::usage::read`]. Nothing to do without `usage.prometheus`.

use super::{Job, JobError, KindSettings, Outcome, Run, Trigger};
use crate::app;
use crate::clients::ClientError;
use crate::context::Context;

pub struct ReadUsage;

impl Job for ReadUsage {
    const KIND: &'static str = "read_usage";
    const DEDUPE: bool = true;
    type Payload = Trigger;

    fn settings(&self) -> KindSettings {
        KindSettings { concurrency: 1, max_attempts: 3, ..KindSettings::default() }
    }

    async fn run(&self, ctx: &Context, _job: &Run<Trigger>) -> Result<Outcome, JobError> {
        match app::usage::read(ctx).await? {
            Ok(report) => Ok(Outcome::done(report)),
            Err(ClientError::Transient(why)) => Err(JobError::transient(why)),
            Err(ClientError::Permanent(why)) => Err(JobError::permanent(why)),
        }
    }
}
