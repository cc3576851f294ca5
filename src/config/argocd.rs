//! `[argocd]`: the Argo CD that watches the GitOps repository.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::ConfigError;
use super::secret::{Secret, SecretSource};

/// Argo CD, watching the GitOps repository. Without a URL (or for sites without an
/// application) delivery itself makes a project active.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ArgocdConfig {
    /// e.g. `https://argocd.example.com`; empty: no Argo CD.
    pub url: String,
    pub token: Option<Secret>,
    pub token_file: Option<PathBuf>,
    /// Site name -> the Argo CD Application that deploys that site's directory.
    pub apps: BTreeMap<String, String>,
    /// How often a project's Application is read while it is not there yet.
    pub poll_interval_ms: u64,
    /// A project not Synced and Healthy after this long fails with Argo CD's message.
    pub deadline_secs: u64,
    /// Read with `refresh=hard` (re-reads Git at once instead of at its next poll).
    pub hard_refresh: bool,
    /// Ask for a sync when the Application has no automated sync policy.
    pub sync: bool,
    pub timeout_secs: u64,
}

impl Default for ArgocdConfig {
    fn default() -> Self {
        Self {
            url: String::new(),
            token: None,
            token_file: None,
            apps: BTreeMap::new(),
            poll_interval_ms: 10_000,
            deadline_secs: 1800,
            hard_refresh: false,
            sync: true,
            timeout_secs: 15,
        }
    }
}

impl ArgocdConfig {
    /// Whether Argo CD is configured at all.
    pub fn enabled(&self) -> bool {
        !self.url.is_empty()
    }

    /// The Application of `site`, when Argo CD is configured for it.
    pub fn app_for(&self, site: &str) -> Option<&str> {
        if self.enabled() { self.apps.get(site).map(String::as_str) } else { None }
    }

    fn token_source(&self) -> SecretSource<'_> {
        SecretSource {
            key: "argocd.token",
            value: self.token.as_ref(),
            file: self.token_file.as_ref(),
        }
    }

    /// The API token, from `token` or `token_file`.
    pub fn token(&self) -> Result<Secret, ConfigError> {
        self.token_source().require("set argocd.token_file or INFRAHUB_ARGOCD__TOKEN")
    }

    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.poll_interval_ms == 0 || self.deadline_secs == 0 || self.timeout_secs == 0 {
            return Err(ConfigError::invalid(
                "argocd",
                "poll_interval_ms, deadline_secs and timeout_secs must be at least 1",
            ));
        }
        if !self.enabled() {
            return Ok(());
        }
        self.token_source().check_exclusive()?;
        let url = url::Url::parse(&self.url)
            .map_err(|e| ConfigError::invalid("argocd.url", format!("not a URL: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(ConfigError::invalid("argocd.url", "must be http:// or https://"));
        }
        if !self.token_source().is_set() {
            return Err(ConfigError::invalid(
                "argocd.token",
                "missing: set argocd.token_file or INFRAHUB_ARGOCD__TOKEN",
            ));
        }
        Ok(())
    }
}
