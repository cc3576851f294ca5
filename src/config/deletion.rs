//! `[deletion]`: how long a deleted project waits before its namespace goes.

use serde::{Deserialize, Serialize};

use super::ConfigError;

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct DeletionConfig {
    /// A deleted project keeps its namespace (and quota) this long, in `deletion_scheduled`,
    /// and can be restored meanwhile; 0 deletes at once.
    pub grace_secs: u64,
    /// Webhooks hear `project.expiring` this long before a project's time to live runs out.
    pub remind_before_secs: u64,
}

impl Default for DeletionConfig {
    fn default() -> Self {
        Self { grace_secs: 24 * 3600, remind_before_secs: 24 * 3600 }
    }
}

impl DeletionConfig {
    /// The grace period, if there is one.
    pub fn grace(&self) -> Option<chrono::Duration> {
        (self.grace_secs > 0).then(|| chrono::Duration::seconds(self.grace_secs as i64))
    }

    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.remind_before_secs > 90 * 24 * 3600 {
            return Err(ConfigError::invalid(
                "deletion.remind_before_secs",
                "must be at most 7776000 (90 days)",
            ));
        }
        if self.grace_secs > 90 * 24 * 3600 {
            return Err(ConfigError::invalid(
                "deletion.grace_secs",
                "must be at most 7776000 (90 days); 0 deletes at once",
            ));
        }
        Ok(())
    }
}
