//! `[workers]`: leases, polling, shutdown and retention of jobs, and per-kind settings.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::ConfigError;

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct WorkersConfig {
    /// How long a claimed job stays with its worker without a renewal (renewed every third of
    /// it). A daemon killed mid-job loses its jobs to another daemon after this long.
    pub lease_secs: u64,
    /// Idle dispatchers look for due jobs this often even without a notification: the fallback
    /// for notifications lost while the listening connection is down (jobs due later, such as
    /// retries and re-scheduled polls, set alarms from their notifications).
    pub poll_interval_ms: u64,
    /// How long running jobs get to finish after SIGTERM before they are handed back.
    pub shutdown_grace_secs: u64,
    /// Finished jobs older than this are deleted by the `prune_jobs` job.
    pub retention_days: u64,
    /// Per kind: `concurrency`, `prefetch`, `max_attempts`, `timeout_secs`, `backoff_base_ms`,
    /// `backoff_max_secs`, `deadline_secs`, `coalesce_delay_ms`. The job registry refuses
    /// kinds it does not know.
    pub kinds: BTreeMap<String, KindConfig>,
}

impl Default for WorkersConfig {
    fn default() -> Self {
        Self {
            lease_secs: 30,
            poll_interval_ms: 1000,
            shutdown_grace_secs: 30,
            retention_days: 14,
            kinds: BTreeMap::new(),
        }
    }
}

/// The most attempts a kind may be given (a job row holds them as a 32-bit number).
pub const MAX_ATTEMPTS: u32 = 100_000;

/// Settings of one job kind; anything left out keeps the kind's default.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct KindConfig {
    pub concurrency: Option<u32>,
    pub max_attempts: Option<u32>,
    pub timeout_secs: Option<u64>,
    pub backoff_base_ms: Option<u64>,
    pub backoff_max_secs: Option<u64>,
    /// Transient failures retry until this long after the job was submitted.
    pub deadline_secs: Option<u64>,
    /// Jobs claimed ahead of free slots, held in a local queue under the lease.
    pub prefetch: Option<u32>,
    /// Kinds that coalesce (`allocate_quota`, `allocate_servers`): how long a job waits
    /// before it is due, so that newer changes of its key supersede it; 0 runs it at once.
    pub coalesce_delay_ms: Option<u64>,
}

/// The longest `coalesce_delay_ms` accepted: a change should apply within a minute.
pub const MAX_COALESCE_DELAY_MS: u64 = 60_000;

impl WorkersConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.lease_secs < 3 {
            return Err(ConfigError::invalid("workers.lease_secs", "must be at least 3"));
        }
        if self.poll_interval_ms == 0 {
            return Err(ConfigError::invalid("workers.poll_interval_ms", "must be at least 1"));
        }
        if self.retention_days == 0 {
            return Err(ConfigError::invalid(
                "workers.retention_days",
                "must be at least 1 (jobs are kept at least a day)",
            ));
        }
        for (kind, settings) in &self.kinds {
            if settings.max_attempts == Some(0) {
                return Err(ConfigError::invalid(
                    "workers.kinds",
                    format!("{kind}.max_attempts must be at least 1"),
                ));
            }
            for (name, value) in [
                ("timeout_secs", settings.timeout_secs),
                ("backoff_max_secs", settings.backoff_max_secs),
                ("deadline_secs", settings.deadline_secs),
            ] {
                if value == Some(0) {
                    return Err(ConfigError::invalid(
                        "workers.kinds",
                        format!("{kind}.{name} must be at least 1"),
                    ));
                }
            }
            if settings.coalesce_delay_ms.is_some_and(|ms| ms > MAX_COALESCE_DELAY_MS) {
                return Err(ConfigError::invalid(
                    "workers.kinds",
                    format!("{kind}.coalesce_delay_ms must be at most {MAX_COALESCE_DELAY_MS}"),
                ));
            }
            if settings.max_attempts.is_some_and(|n| n > MAX_ATTEMPTS) {
                return Err(ConfigError::invalid(
                    "workers.kinds",
                    format!("{kind}.max_attempts must be at most {MAX_ATTEMPTS}"),
                ));
            }
        }
        Ok(())
    }
}
