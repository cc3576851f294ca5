//! Diagnostic kinds: `noop` and `sleep`, to check that workers run and to exercise the engine
//! (retries, polling, timeouts) in tests and benchmarks.

use std::time::Duration;

use serde::Deserialize;
use serde_json::json;

use super::{JobError, JobFuture, JobHandler, KindSettings, Outcome};
use crate::context::Context;
use crate::store::jobs::Claimed;

pub const NOOP: &str = "noop";
pub const SLEEP: &str = "sleep";

/// Succeeds at once.
pub struct Noop;

impl JobHandler for Noop {
    fn kind(&self) -> &'static str {
        NOOP
    }

    fn defaults(&self) -> KindSettings {
        KindSettings { concurrency: 16, ..KindSettings::default() }
    }

    fn run<'a>(&'a self, _: &'a Context, _: &'a Claimed) -> JobFuture<'a> {
        Box::pin(async { Ok(Outcome::Done(json!({}))) })
    }
}

/// Parameters of a `sleep` job.
#[derive(Debug, Default, Deserialize)]
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

impl JobHandler for Sleep {
    fn kind(&self) -> &'static str {
        SLEEP
    }

    fn run<'a>(&'a self, _: &'a Context, job: &'a Claimed) -> JobFuture<'a> {
        Box::pin(async move {
            let params: SleepParams = serde_json::from_value(job.payload.clone())
                .map_err(|e| JobError::permanent(format!("bad payload: {e}")))?;
            tokio::time::sleep(Duration::from_millis(params.millis)).await;
            let polls_done =
                u32::try_from(job.claim).unwrap_or(0).saturating_sub(job.attempt as u32);
            if polls_done < params.polls {
                let after = Duration::from_millis(params.poll_millis);
                return Ok(Outcome::Reschedule {
                    after,
                    progress: json!({ "polls": polls_done + 1 }),
                });
            }
            if params.permanent {
                return Err(JobError::permanent("asked to fail permanently"));
            }
            if (job.attempt as u32) <= params.transient_failures {
                return Err(JobError::transient(format!(
                    "planned transient failure {}",
                    job.attempt
                )));
            }
            Ok(Outcome::Done(json!({ "slept_ms": params.millis, "attempt": job.attempt })))
        })
    }
}
