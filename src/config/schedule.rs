//! `[schedule]`: cron expressions of the recurring jobs. Which job each one starts is the job
//! scheduler's business (`jobs::scheduler`).

use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::ConfigError;

/// Cron expressions with seconds (`sec min hour day-of-month month day-of-week`), in UTC. An
/// empty string turns a schedule off.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ScheduleConfig {
    /// Pulls the server inventory.
    pub server_sync: String,
    /// Compares active projects with what was delivered and repairs drift.
    pub resync: String,
    /// Deletes old finished jobs.
    pub prune_jobs: String,
    /// Restarts the work of projects left waiting on a job that is no longer live; starts due
    /// deletions, applies time to live, expires undecided approval requests.
    pub reconcile: String,
    /// Reads what projects actually use from Prometheus (when `usage.prometheus` names any).
    pub usage: String,
}

impl Default for ScheduleConfig {
    fn default() -> Self {
        Self {
            server_sync: "0 */15 * * * *".to_owned(),
            resync: "0 0 * * * *".to_owned(),
            prune_jobs: "0 17 3 * * *".to_owned(),
            reconcile: "30 * * * * *".to_owned(),
            usage: "0 */10 * * * *".to_owned(),
        }
    }
}

impl ScheduleConfig {
    /// `(schedule name, cron expression)` of every schedule that is on.
    pub fn entries(&self) -> Vec<(&'static str, &str)> {
        [
            ("server_sync", self.server_sync.as_str()),
            ("resync", self.resync.as_str()),
            ("prune_jobs", self.prune_jobs.as_str()),
            ("reconcile", self.reconcile.as_str()),
            ("usage", self.usage.as_str()),
        ]
        .into_iter()
        .filter(|(_, expr)| !expr.trim().is_empty())
        .collect()
    }

    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        for (name, expr) in self.entries() {
            cron::Schedule::from_str(expr).map_err(|e| {
                ConfigError::invalid(
                    "schedule",
                    format!("{name} = {expr:?} is not a cron expression with seconds: {e}"),
                )
            })?;
        }
        Ok(())
    }
}
