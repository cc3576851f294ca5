//! `[database]`: the PostgreSQL pool.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::ConfigError;
use super::secret::{redact_url, serialize_redacted_url};

#[derive(Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseConfig {
    /// PostgreSQL URL; a password in it is redacted wherever the URL is shown.
    #[serde(serialize_with = "serialize_redacted_url")]
    pub url: String,
    /// Upper bound of pooled connections per daemon; N daemons use N times this many.
    pub max_connections: u32,
    /// Connections kept open while idle, so the first requests after a lull are fast.
    pub min_connections: u32,
    /// How long a request waits for a pooled connection (and for the first connect) before failing.
    pub acquire_timeout_secs: u64,
    /// Idle connections above `min_connections` are closed after this long.
    pub idle_timeout_secs: u64,
    /// Apply pending migrations when `serve` starts (under PostgreSQL's advisory lock, so
    /// several daemons starting together migrate once). Turn off to migrate by hand.
    pub migrate_on_start: bool,
}

impl fmt::Debug for DatabaseConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DatabaseConfig")
            .field("url", &redact_url(&self.url))
            .field("max_connections", &self.max_connections)
            .field("min_connections", &self.min_connections)
            .field("acquire_timeout_secs", &self.acquire_timeout_secs)
            .field("idle_timeout_secs", &self.idle_timeout_secs)
            .field("migrate_on_start", &self.migrate_on_start)
            .finish()
    }
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            url: "postgres://postgres@127.0.0.1:5432/infrahub".to_owned(),
            max_connections: 10,
            min_connections: 0,
            acquire_timeout_secs: 5,
            idle_timeout_secs: 600,
            migrate_on_start: true,
        }
    }
}

impl DatabaseConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let url = url::Url::parse(&self.url)
            .map_err(|e| ConfigError::invalid("database.url", format!("not a URL: {e}")))?;
        if !matches!(url.scheme(), "postgres" | "postgresql") {
            return Err(ConfigError::invalid(
                "database.url",
                "must start with postgres:// or postgresql://",
            ));
        }
        if self.max_connections == 0 {
            return Err(ConfigError::invalid("database.max_connections", "must be at least 1"));
        }
        if self.min_connections > self.max_connections {
            return Err(ConfigError::invalid(
                "database.min_connections",
                "must not exceed database.max_connections",
            ));
        }
        if self.acquire_timeout_secs == 0 {
            return Err(ConfigError::invalid(
                "database.acquire_timeout_secs",
                "must be at least 1",
            ));
        }
        if self.idle_timeout_secs == 0 {
            return Err(ConfigError::invalid("database.idle_timeout_secs", "must be at least 1"));
        }
        Ok(())
    }
}
