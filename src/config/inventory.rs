//! `[inventory]`: where servers come from (a JSON file or NetBox).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::ConfigError;
use super::secret::{Secret, SecretSource};

/// Where servers come from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum InventorySource {
    #[default]
    File,
    Netbox,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct InventoryConfig {
    pub source: InventorySource,
    pub file: FileInventoryConfig,
    pub netbox: NetboxConfig,
    /// A sync that would mark more than this share of a site's active servers missing fails
    /// instead (an empty answer from a token without permission looks like a vanished
    /// fleet); a sync asked for with `force` goes ahead. 1 turns the guard off.
    pub missing_guard: f64,
}

impl Default for InventoryConfig {
    fn default() -> Self {
        Self {
            source: InventorySource::File,
            file: FileInventoryConfig::default(),
            netbox: NetboxConfig::default(),
            missing_guard: 0.5,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct FileInventoryConfig {
    /// A JSON list of `{id, name, site, cpu_cores, ram_gb, ...}`; relative to the working
    /// directory.
    pub path: PathBuf,
}

impl Default for FileInventoryConfig {
    fn default() -> Self {
        Self { path: PathBuf::from("config/inventory.json") }
    }
}

/// NetBox token styles: v2 tokens go as `Bearer nbt_<key>.<token>`, v1 as `Token <token>`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum NetboxTokenVersion {
    #[default]
    V2,
    V1,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct NetboxConfig {
    /// Base URL, e.g. `https://netbox.example.com` (the client appends `/api/dcim/devices/`).
    pub url: String,
    pub token: Option<Secret>,
    pub token_file: Option<PathBuf>,
    pub token_version: NetboxTokenVersion,
    /// Device role slug of servers.
    pub role: String,
    /// Only these site slugs (all sites when empty); servers of other sites are left alone.
    pub sites: Vec<String>,
    /// Device status to sync.
    pub status: String,
    /// Devices per page, at most 1000.
    pub page_size: u32,
    /// Custom field holding the CPU core count.
    pub cpu_field: String,
    /// Custom field holding the RAM in GB.
    pub ram_field: String,
    /// Per request.
    pub timeout_secs: u64,
    /// Further tries of a page after a 5xx, a timeout or a connection error.
    pub retries: u32,
}

impl Default for NetboxConfig {
    fn default() -> Self {
        Self {
            url: String::new(),
            token: None,
            token_file: None,
            token_version: NetboxTokenVersion::V2,
            role: "server".to_owned(),
            sites: Vec::new(),
            status: "active".to_owned(),
            page_size: 1000,
            cpu_field: "cpu_cores".to_owned(),
            ram_field: "ram_gb".to_owned(),
            timeout_secs: 30,
            retries: 3,
        }
    }
}

impl NetboxConfig {
    fn token_source(&self) -> SecretSource<'_> {
        SecretSource {
            key: "inventory.netbox.token",
            value: self.token.as_ref(),
            file: self.token_file.as_ref(),
        }
    }

    /// The API token, from `token` or `token_file`.
    pub fn token(&self) -> Result<Secret, ConfigError> {
        self.token_source()
            .require("set inventory.netbox.token_file or INFRAHUB_INVENTORY__NETBOX__TOKEN")
    }
}

impl InventoryConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let netbox = &self.netbox;
        netbox.token_source().check_exclusive()?;
        if self.source == InventorySource::Netbox {
            let url = url::Url::parse(&netbox.url).map_err(|e| {
                ConfigError::invalid(
                    "inventory.netbox.url",
                    format!("not a URL ({e}); NetBox is the inventory source"),
                )
            })?;
            if !matches!(url.scheme(), "http" | "https") {
                return Err(ConfigError::invalid(
                    "inventory.netbox.url",
                    "must be http:// or https://",
                ));
            }
            if !netbox.token_source().is_set() {
                return Err(ConfigError::invalid(
                    "inventory.netbox.token",
                    "missing: set inventory.netbox.token_file or INFRAHUB_INVENTORY__NETBOX__TOKEN",
                ));
            }
        }
        if !(1..=1000).contains(&netbox.page_size) {
            return Err(ConfigError::invalid(
                "inventory.netbox.page_size",
                "must be between 1 and 1000",
            ));
        }
        if !(self.missing_guard > 0.0 && self.missing_guard <= 1.0) {
            return Err(ConfigError::invalid(
                "inventory.missing_guard",
                "must be a share above 0 and at most 1",
            ));
        }
        if netbox.timeout_secs == 0 {
            return Err(ConfigError::invalid(
                "inventory.netbox.timeout_secs",
                "must be at least 1",
            ));
        }
        Ok(())
    }
}
