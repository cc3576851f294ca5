//! `[http]`: the intake's listener and limits.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::ConfigError;
use super::secret::{Secret, SecretSource};

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// Address the intake binds; behind a reverse proxy this stays on loopback.
    pub listen: SocketAddr,
    /// Largest request body accepted; every request of the API is small JSON.
    pub body_limit_bytes: usize,
    /// How long in-flight requests may take to finish after SIGTERM before the process exits.
    pub shutdown_grace_secs: u64,
    /// When set, `/metrics` wants `Authorization: Bearer <this>` (Prometheus'
    /// `authorization.credentials_file`); unset, it is open like the probes.
    pub metrics_token: Option<Secret>,
    pub metrics_token_file: Option<PathBuf>,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8000)),
            body_limit_bytes: 256 * 1024,
            shutdown_grace_secs: 30,
            metrics_token: None,
            metrics_token_file: None,
        }
    }
}

impl HttpConfig {
    fn metrics_token_source(&self) -> SecretSource<'_> {
        SecretSource {
            key: "http.metrics_token",
            value: self.metrics_token.as_ref(),
            file: self.metrics_token_file.as_ref(),
        }
    }

    /// The bearer token `/metrics` wants, if one is configured (the file is read).
    pub fn metrics_token(&self) -> Result<Option<Secret>, ConfigError> {
        let token = self.metrics_token_source().read()?;
        if token.as_ref().is_some_and(|t| t.expose().len() < 16) {
            return Err(ConfigError::invalid(
                "http.metrics_token",
                "must be at least 16 characters",
            ));
        }
        Ok(token)
    }

    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        self.metrics_token_source().check_exclusive()?;
        if self.body_limit_bytes < 1024 {
            return Err(ConfigError::invalid("http.body_limit_bytes", "must be at least 1024"));
        }
        Ok(())
    }
}
