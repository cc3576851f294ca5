//! `[http]`: the intake's listener and limits.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use super::ConfigError;

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// Address the intake binds; behind a reverse proxy this stays on loopback.
    pub listen: SocketAddr,
    /// Largest request body accepted; every request of the API is small JSON.
    pub body_limit_bytes: usize,
    /// How long in-flight requests may take to finish after SIGTERM before the process exits.
    pub shutdown_grace_secs: u64,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8000)),
            body_limit_bytes: 256 * 1024,
            shutdown_grace_secs: 30,
        }
    }
}

impl HttpConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.body_limit_bytes < 1024 {
            return Err(ConfigError::invalid("http.body_limit_bytes", "must be at least 1024"));
        }
        Ok(())
    }
}
