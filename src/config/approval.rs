//! `[approval]`: which project requests wait for a field admin's approval, and for how long.
//! A catalog entry with `requires_approval = true` always does.

use serde::{Deserialize, Serialize};

use super::ConfigError;

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApprovalConfig {
    /// Requests for more CPU than this need approval whatever their catalog entry says; absent:
    /// only the entries that say so.
    pub cpu_above: Option<u32>,
    /// A request nobody decided within this time is rejected as expired (its quota freed).
    pub expire_after_secs: u64,
}

impl Default for ApprovalConfig {
    fn default() -> Self {
        Self { cpu_above: None, expire_after_secs: 7 * 24 * 3600 }
    }
}

impl ApprovalConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if !(60..=365 * 24 * 3600).contains(&self.expire_after_secs) {
            return Err(ConfigError::invalid(
                "approval.expire_after_secs",
                "must be between 60 (a minute) and 31536000 (a year)",
            ));
        }
        Ok(())
    }
}
