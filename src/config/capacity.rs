//! `[capacity]`: overcommit factors.

use serde::{Deserialize, Serialize};

use super::ConfigError;
use crate::domain::capacity::Overcommit;

/// Overcommit factors: capacity = factor × the servers' CPU or RAM.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct CapacityConfig {
    pub cpu_overcommit: f64,
    pub ram_overcommit: f64,
}

impl Default for CapacityConfig {
    fn default() -> Self {
        Self { cpu_overcommit: 1.0, ram_overcommit: 1.0 }
    }
}

impl CapacityConfig {
    /// The factors as the capacity arithmetic takes them.
    pub fn overcommit(&self) -> Overcommit {
        Overcommit { cpu: self.cpu_overcommit, ram: self.ram_overcommit }
    }

    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        for (key, value) in [
            ("capacity.cpu_overcommit", self.cpu_overcommit),
            ("capacity.ram_overcommit", self.ram_overcommit),
        ] {
            if !(value.is_finite() && (0.1..=100.0).contains(&value)) {
                return Err(ConfigError::invalid(key, "must be a number between 0.1 and 100"));
            }
        }
        Ok(())
    }
}
