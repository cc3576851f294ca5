//! `[usage]`: where to read what projects actually use (Prometheus with kube-state-metrics).

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::ConfigError;
use super::secret::{Secret, SecretSource};

/// Prometheus per site, each scraping kube-state-metrics of that site's cluster. Sites
/// without one show no actual use.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct UsageConfig {
    /// Site name -> Prometheus base URL, e.g. `berlin = "http://prometheus.berlin:9090"`.
    pub prometheus: BTreeMap<String, String>,
    /// Optional bearer token for Prometheus (behind a proxy that wants one).
    pub token: Option<Secret>,
    pub token_file: Option<PathBuf>,
    pub timeout_secs: u64,
}

impl Default for UsageConfig {
    fn default() -> Self {
        Self { prometheus: BTreeMap::new(), token: None, token_file: None, timeout_secs: 10 }
    }
}

impl UsageConfig {
    /// Whether any site has a Prometheus.
    pub fn enabled(&self) -> bool {
        !self.prometheus.is_empty()
    }

    fn token_source(&self) -> SecretSource<'_> {
        SecretSource {
            key: "usage.token",
            value: self.token.as_ref(),
            file: self.token_file.as_ref(),
        }
    }

    /// The token, if one is configured.
    pub fn token(&self) -> Result<Option<Secret>, ConfigError> {
        self.token_source().read()
    }

    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        self.token_source().check_exclusive()?;
        for (site, url) in &self.prometheus {
            let parsed = url::Url::parse(url).map_err(|e| {
                ConfigError::invalid("usage.prometheus", format!("{site} = {url:?}: {e}"))
            })?;
            if !matches!(parsed.scheme(), "http" | "https") {
                return Err(ConfigError::invalid(
                    "usage.prometheus",
                    format!("{site} = {url:?}: must be http:// or https://"),
                ));
            }
        }
        if !(1..=120).contains(&self.timeout_secs) {
            return Err(ConfigError::invalid("usage.timeout_secs", "must be 1 to 120"));
        }
        Ok(())
    }
}
