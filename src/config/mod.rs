//! Configuration: built-in defaults < TOML file < `INFRAHUB_*` environment (`__` nests).
//!
//! One file per section, each with its own validation. Every struct denies unknown keys, so a
//! typo is an error that names the key instead of a setting silently ignored. Secrets are
//! [`Secret`]s: they never print, serialize or log; [`SecretSource`] reads one given inline or
//! as a file.

mod approval;
mod argocd;
mod auth;
mod capacity;
mod database;
mod deletion;
mod delivery;
mod http;
mod inventory;
mod logging;
mod schedule;
mod secret;
mod usage;
mod workers;

use std::path::Path;

use figment::Figment;
use figment::providers::{Env, Format, Toml};
use serde::{Deserialize, Serialize};

pub use approval::ApprovalConfig;
pub use argocd::ArgocdConfig;
pub use auth::AuthConfig;
pub use capacity::CapacityConfig;
pub use database::DatabaseConfig;
pub use deletion::DeletionConfig;
pub use delivery::{
    DeliveryConfig, DeliveryKind, GitConfig, GitKind, GitlabConfig, KubernetesConfig,
};
pub use http::HttpConfig;
pub use inventory::{
    FileInventoryConfig, InventoryConfig, InventorySource, NetboxConfig, NetboxTokenVersion,
};
pub use logging::{LogFormat, LoggingConfig};
pub use schedule::ScheduleConfig;
pub use secret::{Secret, SecretSource, redact_credentials, redact_url};
pub use usage::UsageConfig;
pub use workers::{KindConfig, WorkersConfig};

use crate::domain::catalog::Catalog;

/// The configuration file read when `--config` is not given (it may be absent).
pub const DEFAULT_CONFIG_PATH: &str = "config/infrahub.toml";

/// `INFRAHUB_*` variables that are not configuration keys (compared without case).
const CLIENT_VARIABLES: [&str; 4] = ["config", "url", "token", "output"];

/// The demo's own configuration, embedded so `infrahub demo` works from any directory.
const DEMO_CONFIG: &str = include_str!("../../config/demo/infrahub.toml");

/// Whether configuration is loaded for the demo (which may use its public secret and accounts).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Serve,
    Demo,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Parsing or merging failed; figment's message names the key and the source.
    #[error("configuration: {0}")]
    Load(String),
    /// A value parsed but makes no sense.
    #[error("configuration key `{key}`: {message}")]
    Invalid { key: &'static str, message: String },
}

impl ConfigError {
    pub fn invalid(key: &'static str, message: impl Into<String>) -> Self {
        Self::Invalid { key, message: message.into() }
    }
}

impl From<figment::Error> for ConfigError {
    fn from(err: figment::Error) -> Self {
        let messages: Vec<String> = err.into_iter().map(describe).collect();
        Self::Load(messages.join("; "))
    }
}

/// One figment error as `key `a.b` in <source>: <problem>`, naming the exact environment
/// variable when the value came from one (figment itself only names the prefix).
fn describe(err: figment::Error) -> String {
    let key = err.path.join(".");
    let unknown_field = matches!(err.kind, figment::error::Kind::UnknownField(..));
    let source = match err.metadata.as_ref() {
        Some(meta) if meta.name.contains("environment") => {
            if unknown_field || key.is_empty() {
                " in the INFRAHUB_* environment".to_owned()
            } else {
                format!(" in environment variable INFRAHUB_{}", err.path.join("__").to_uppercase())
            }
        }
        Some(meta) => match &meta.source {
            Some(figment::Source::File(path)) => format!(" in {}", path.display()),
            _ => format!(" in {}", meta.name),
        },
        None => String::new(),
    };
    if key.is_empty() {
        format!("{}{source}", err.kind)
    } else {
        format!("key `{key}`{source}: {}", err.kind)
    }
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub http: HttpConfig,
    pub database: DatabaseConfig,
    pub auth: AuthConfig,
    pub workers: WorkersConfig,
    pub schedule: ScheduleConfig,
    pub inventory: InventoryConfig,
    pub capacity: CapacityConfig,
    pub delivery: DeliveryConfig,
    pub argocd: ArgocdConfig,
    pub kubernetes: KubernetesConfig,
    /// SLA type -> performance tier -> quota. A `[catalog]` in the file replaces the built-in
    /// one as a whole.
    pub catalog: Catalog,
    pub approval: ApprovalConfig,
    pub deletion: DeletionConfig,
    pub usage: UsageConfig,
    pub logging: LoggingConfig,
}

impl Config {
    /// Loads configuration for `mode`. `path` is the `--config` argument: when given, the file
    /// must exist; when absent, [`DEFAULT_CONFIG_PATH`] is read if present (serve) and the
    /// embedded demo configuration is the base (demo).
    pub fn load(mode: Mode, path: Option<&Path>) -> Result<Self, ConfigError> {
        let config: Config = Self::figment(mode, path)?.extract()?;
        config.validate()?;
        Ok(config)
    }

    fn figment(mode: Mode, path: Option<&Path>) -> Result<Figment, ConfigError> {
        let mut figment = Figment::new();
        if mode == Mode::Demo {
            figment = figment.merge(Toml::string(DEMO_CONFIG));
        }
        match path {
            Some(path) if !path.is_file() => {
                return Err(ConfigError::Load(format!(
                    "configuration file {} does not exist",
                    path.display()
                )));
            }
            Some(path) => figment = figment.merge(Toml::file_exact(path)),
            None if mode == Mode::Serve => figment = figment.merge(Toml::file(DEFAULT_CONFIG_PATH)),
            None => {}
        }
        // INFRAHUB_CONFIG names the file (a CLI option); INFRAHUB_URL, INFRAHUB_TOKEN and
        // INFRAHUB_OUTPUT belong to the command-line client. None is a configuration key.
        let env = Env::prefixed("INFRAHUB_")
            .split("__")
            .filter(|key| !CLIENT_VARIABLES.iter().any(|name| key == *name));
        Ok(figment.merge(env))
    }

    /// Every section's own checks.
    fn validate(&self) -> Result<(), ConfigError> {
        self.database.validate()?;
        self.auth.validate()?;
        self.workers.validate()?;
        self.http.validate()?;
        self.logging.validate()?;
        self.inventory.validate()?;
        self.capacity.validate()?;
        self.delivery.validate(&self.kubernetes)?;
        self.argocd.validate()?;
        self.approval.validate()?;
        self.deletion.validate()?;
        self.usage.validate()?;
        self.catalog.check().map_err(|message| ConfigError::invalid("catalog", message))?;
        self.schedule.validate()?;
        self.needs_the_reconciler()
    }

    /// The reconciler (`schedule.reconcile`) starts the deletions whose grace period is over
    /// and expires undecided approval requests: without it they would wait forever.
    fn needs_the_reconciler(&self) -> Result<(), ConfigError> {
        if !self.schedule.reconcile.trim().is_empty() {
            return Ok(());
        }
        if self.deletion.grace_secs > 0 {
            return Err(ConfigError::invalid(
                "schedule.reconcile",
                "is off, but deletion.grace_secs is not 0: the reconciler starts deletions once                  their grace period is over; turn it on or set deletion.grace_secs = 0",
            ));
        }
        let approvals = self.approval.cpu_above.is_some()
            || self
                .catalog
                .0
                .values()
                .flat_map(|tiers| tiers.values())
                .any(|e| e.requires_approval);
        if approvals {
            return Err(ConfigError::invalid(
                "schedule.reconcile",
                "is off, but some projects need approval: the reconciler expires undecided                  requests; turn it on",
            ));
        }
        Ok(())
    }

    /// The JWT signing key; see [`AuthConfig::jwt_secret`].
    pub fn jwt_secret(&self, mode: Mode) -> Result<Secret, ConfigError> {
        self.auth.jwt_secret(mode)
    }

    /// The configuration as TOML with every secret redacted, for `config check`.
    pub fn to_redacted_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot render: {e}\n"))
    }
}

#[cfg(test)]
mod tests;
