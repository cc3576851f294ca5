//! Diagnostic kinds: `noop` and `sleep`, documented for operators (`POST /admin/jobs`) to
//! check that workers run, and used by the tests and the queue benchmark to exercise the
//! engine (retries, polling, timeouts).

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{Job, JobError, KindSettings, Outcome, Run};
use crate::context::Context;

/// Succeeds at once, whatever its payload.
pub struct Noop;

impl Job for Noop {
    const KIND: &'static str = "noop";
    type Payload = Value;

    fn settings(&self) -> KindSettings {
        KindSettings { concurrency: 16, prefetch: 144, ..KindSettings::default() }
    }

    async fn run(&self, _: &Context, _: &Run<Value>) -> Result<Outcome, JobError> {
        Ok(Outcome::Done(json!({})))
    }
}

/// Parameters of a `sleep` job.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct SleepParams {
    /// How long each attempt works.
    pub millis: u64,
    /// Attempts that fail transiently before one succeeds.
    pub transient_failures: u32,
    /// Fail permanently instead of succeeding.
    pub permanent: bool,
    /// Times the job re-schedules itself (as a poll would) before finishing.
    pub polls: u32,
    /// Delay of each re-scheduled poll.
    pub poll_millis: u64,
}

/// Sleeps, then succeeds, fails or re-schedules as its payload says.
pub struct Sleep;

impl Job for Sleep {
    const KIND: &'static str = "sleep";
    type Payload = SleepParams;

    async fn run(&self, _: &Context, job: &Run<SleepParams>) -> Result<Outcome, JobError> {
        let params = &job.payload;
        tokio::time::sleep(Duration::from_millis(params.millis)).await;
        let polls_done = u32::try_from(job.claim).unwrap_or(0).saturating_sub(job.attempt as u32);
        if polls_done < params.polls {
            let after = Duration::from_millis(params.poll_millis);
            return Ok(Outcome::Reschedule { after, progress: json!({ "polls": polls_done + 1 }) });
        }
        if params.permanent {
            return Err(JobError::permanent("asked to fail permanently"));
        }
        if (job.attempt as u32) <= params.transient_failures {
            return Err(JobError::transient(format!("planned transient failure {}", job.attempt)));
        }
        Ok(Outcome::Done(json!({ "slept_ms": params.millis, "attempt": job.attempt })))
    }
}
