//! Job states and the retry arithmetic: rules with no I/O.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::ValidationError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    /// Waiting for its first attempt (or a re-scheduled poll).
    Queued,
    /// A worker holds it under a lease.
    Running,
    /// An attempt failed transiently; the next one waits for `next_run_at`.
    Retrying,
    Succeeded,
    /// Permanently failed, or out of attempts; `last_error` says why.
    Failed,
    Cancelled,
    /// Never ran: a newer job of its kind carries the same change (its `result` names it).
    Superseded,
}

impl JobStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Queued => "queued",
            JobStatus::Running => "running",
            JobStatus::Retrying => "retrying",
            JobStatus::Succeeded => "succeeded",
            JobStatus::Failed => "failed",
            JobStatus::Cancelled => "cancelled",
            JobStatus::Superseded => "superseded",
        }
    }

    /// Whether the job can still change by itself.
    pub fn is_active(self) -> bool {
        matches!(self, JobStatus::Queued | JobStatus::Running | JobStatus::Retrying)
    }
}

impl fmt::Display for JobStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for JobStatus {
    type Err = ValidationError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [
            JobStatus::Queued,
            JobStatus::Running,
            JobStatus::Retrying,
            JobStatus::Succeeded,
            JobStatus::Failed,
            JobStatus::Cancelled,
            JobStatus::Superseded,
        ]
        .into_iter()
        .find(|status| status.as_str() == s)
        .ok_or_else(|| ValidationError::new("status", "not a job status"))
    }
}

impl TryFrom<String> for JobStatus {
    type Error = ValidationError;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        value.parse()
    }
}

/// Exponential backoff with equal jitter: the wait before attempt `attempt + 1` is uniform in
/// `[c / 2, c]` where `c = min(max, base * 2^(attempt - 1))`. Half of it is jitter, enough to
/// spread retries that failed together; the other half is a floor, so a retry never comes
/// straight back at whatever just failed (full jitter could draw a wait of nothing). `unit` is
/// a random number in `[0, 1)`, passed in so the rule stays pure.
pub fn backoff(attempt: u32, base: Duration, max: Duration, unit: f64) -> Duration {
    let exponent = attempt.saturating_sub(1).min(32);
    let ceiling = base.saturating_mul(2u32.saturating_pow(exponent)).min(max);
    ceiling.mul_f64(0.5 + unit.clamp(0.0, 1.0) / 2.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_round_trip() {
        for s in ["queued", "running", "retrying", "succeeded", "failed", "cancelled"] {
            assert_eq!(s.parse::<JobStatus>().unwrap().as_str(), s);
        }
        assert!("done".parse::<JobStatus>().is_err());
        assert!(JobStatus::Retrying.is_active() && !JobStatus::Failed.is_active());
    }

    #[test]
    fn backoff_grows_exponentially_up_to_the_cap() {
        let base = Duration::from_secs(1);
        let max = Duration::from_secs(60);
        let top = |attempt| backoff(attempt, base, max, 1.0);
        assert_eq!(top(1), Duration::from_secs(1));
        assert_eq!(top(2), Duration::from_secs(2));
        assert_eq!(top(5), Duration::from_secs(16));
        assert_eq!(top(7), Duration::from_secs(60));
        assert_eq!(top(u32::MAX), Duration::from_secs(60), "no overflow");
    }

    #[test]
    fn jitter_spreads_over_the_upper_half_of_the_range() {
        let base = Duration::from_secs(8);
        let max = Duration::from_secs(600);
        assert_eq!(backoff(3, base, max, 0.0), Duration::from_secs(16), "never under half");
        assert_eq!(backoff(3, base, max, 0.5), Duration::from_secs(24));
        assert!(backoff(3, base, max, 0.999) < Duration::from_secs(32));
        assert_eq!(backoff(3, base, max, -1.0), Duration::from_secs(16), "unit is clamped");
        assert_eq!(backoff(3, base, max, 7.0), Duration::from_secs(32), "unit is clamped");
    }
}
