//! Server inventories: NetBox's REST API, or a JSON file.

use std::path::PathBuf;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use reqwest::StatusCode;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::{ClientError, ClientFuture};
use crate::config::{ConfigError, NetboxConfig, NetboxTokenVersion, Secret};

/// One server as the inventory describes it.
#[derive(Debug, Clone, PartialEq)]
pub struct Device {
    /// The inventory's own id (NetBox device id, or the file's `id`): the upsert key.
    pub inventory_id: String,
    pub name: String,
    /// Site slug, matched against InfraHub's site names.
    pub site: String,
    pub cpu_cores: i32,
    pub ram_gb: i32,
    /// Whatever else the inventory says (serial, role, status, ...), kept for reference.
    pub attributes: Value,
}

/// One page of devices.
#[derive(Debug, Clone, Default)]
pub struct DevicePage {
    pub devices: Vec<Device>,
    /// Devices left out because they lack CPU, RAM or a site: `name: reason`.
    pub skipped: Vec<String>,
    /// Where the next page is; `None` on the last.
    pub next: Option<String>,
}

/// A source of servers, read page by page.
pub trait Inventory: Send + Sync {
    /// The page at `cursor` (`None`: the first).
    fn page<'a>(&'a self, cursor: Option<&'a str>) -> ClientFuture<'a, DevicePage>;

    /// The site slugs this source covers, or `None` for all. Servers of other sites are not
    /// marked missing when the source does not list them.
    fn sites(&self) -> Option<Vec<String>>;

    /// For logs and job results, e.g. `netbox https://netbox.example.com`.
    fn describe(&self) -> String;
}

/// A JSON list of servers: `[{"id", "name", "site", "cpu_cores", "ram_gb", ...}]`. Any other
/// keys are kept as attributes.
pub struct FileInventory {
    path: PathBuf,
}

impl FileInventory {
    pub fn new(path: PathBuf) -> Self {
        Self { path }
    }
}

#[derive(Debug, Deserialize)]
struct FileServer {
    id: Value,
    name: Option<String>,
    site: Option<String>,
    cpu_cores: Option<Value>,
    ram_gb: Option<Value>,
    #[serde(flatten)]
    rest: Map<String, Value>,
}

impl Inventory for FileInventory {
    fn page<'a>(&'a self, _cursor: Option<&'a str>) -> ClientFuture<'a, DevicePage> {
        Box::pin(async move {
            let text = tokio::fs::read_to_string(&self.path).await.map_err(|e| {
                ClientError::Permanent(format!(
                    "cannot read the inventory file {}: {e}",
                    self.path.display()
                ))
            })?;
            let servers: Vec<FileServer> = serde_json::from_str(&text).map_err(|e| {
                ClientError::Permanent(format!(
                    "{} is not a JSON list of servers: {e}",
                    self.path.display()
                ))
            })?;
            let mut page = DevicePage::default();
            for server in servers {
                let id = match &server.id {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                let name = server.name.clone().unwrap_or_else(|| id.clone());
                match device(
                    id,
                    name,
                    server.site,
                    server.cpu_cores.as_ref(),
                    server.ram_gb.as_ref(),
                    Value::Object(server.rest),
                ) {
                    Ok(device) => page.devices.push(device),
                    Err(skip) => page.skipped.push(skip),
                }
            }
            Ok(page)
        })
    }

    fn sites(&self) -> Option<Vec<String>> {
        None
    }

    fn describe(&self) -> String {
        format!("file {}", self.path.display())
    }
}

/// Builds a device, or says why it is skipped.
fn device(
    id: String,
    name: String,
    site: Option<String>,
    cpu: Option<&Value>,
    ram: Option<&Value>,
    attributes: Value,
) -> Result<Device, String> {
    let site = site.filter(|s| !s.is_empty()).ok_or_else(|| format!("{name}: no site"))?;
    let cpu_cores = count(cpu).ok_or_else(|| format!("{name}: no CPU core count"))?;
    let ram_gb = count(ram).ok_or_else(|| format!("{name}: no RAM size"))?;
    Ok(Device { inventory_id: id, name, site, cpu_cores, ram_gb, attributes })
}

/// A non-negative whole number, given as a number or a numeric string.
fn count(value: Option<&Value>) -> Option<i32> {
    match value? {
        Value::Number(n) => n.as_i64().or_else(|| n.as_f64().map(|f| f as i64)),
        Value::String(s) => s.trim().parse::<f64>().ok().map(|f| f as i64),
        _ => None,
    }
    .and_then(|n| i32::try_from(n).ok())
    .filter(|n| *n >= 0)
}

/// NetBox's `GET /api/dcim/devices/`, limit/offset paginated by following `next`.
pub struct Netbox {
    client: reqwest::Client,
    base: url::Url,
    authorization: Secret,
    config: NetboxConfig,
}

#[derive(Debug, Deserialize)]
struct NetboxPage {
    next: Option<String>,
    results: Vec<NetboxDevice>,
}

#[derive(Debug, Deserialize)]
struct NetboxDevice {
    id: i64,
    name: Option<String>,
    serial: Option<String>,
    site: Option<Slugged>,
    role: Option<Slugged>,
    status: Option<Value>,
    #[serde(default)]
    custom_fields: Map<String, Value>,
}

#[derive(Debug, Deserialize)]
struct Slugged {
    slug: String,
}

impl Netbox {
    pub fn new(config: &NetboxConfig, token: Secret) -> Result<Self, ConfigError> {
        let base = url::Url::parse(&config.url).map_err(|e| ConfigError::Invalid {
            key: "inventory.netbox.url",
            message: e.to_string(),
        })?;
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(config.timeout_secs))
            .user_agent(concat!("infrahub/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ConfigError::Invalid {
                key: "inventory.netbox",
                message: e.to_string(),
            })?;
        let authorization = match config.token_version {
            NetboxTokenVersion::V2 => Secret::new(format!("Bearer {}", token.expose())),
            NetboxTokenVersion::V1 => Secret::new(format!("Token {}", token.expose())),
        };
        Ok(Self { client, base, authorization, config: config.clone() })
    }

    fn first_url(&self) -> Result<url::Url, ClientError> {
        let mut url = self
            .base
            .join("api/dcim/devices/")
            .map_err(|e| ClientError::Permanent(format!("bad NetBox URL: {e}")))?;
        {
            let mut query = url.query_pairs_mut();
            query.append_pair("role", &self.config.role);
            query.append_pair("status", &self.config.status);
            for site in &self.config.sites {
                query.append_pair("site", site);
            }
            query.append_pair("limit", &self.config.page_size.to_string());
            query.append_pair("offset", "0");
        }
        Ok(url)
    }

    /// `next` links must stay on the configured NetBox: the token never goes anywhere else.
    fn checked_next(&self, next: &str) -> Result<url::Url, ClientError> {
        let url = url::Url::parse(next)
            .map_err(|e| ClientError::Permanent(format!("bad next link: {e}")))?;
        if url.origin() != self.base.origin() {
            return Err(ClientError::Permanent(format!(
                "NetBox's next link {next} leaves {}; check its BASE_PATH and proxy settings",
                self.base
            )));
        }
        Ok(url)
    }

    async fn fetch(&self, url: &url::Url) -> Result<NetboxPage, ClientError> {
        let response = self
            .client
            .get(url.clone())
            .header(reqwest::header::AUTHORIZATION, self.authorization.expose())
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| ClientError::Transient(format!("NetBox at {}: {e}", self.base)))?;
        let status = response.status();
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            return Err(ClientError::Permanent(format!(
                "NetBox refused the token ({status}); check inventory.netbox.token and token_version"
            )));
        }
        if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
            return Err(ClientError::Transient(format!("NetBox answered {status}")));
        }
        if !status.is_success() {
            let body = response.text().await.unwrap_or_default();
            return Err(ClientError::Permanent(format!(
                "NetBox answered {status}: {}",
                truncate(&body)
            )));
        }
        response.json::<NetboxPage>().await.map_err(|e| {
            ClientError::Permanent(format!("NetBox's answer is not a device list: {e}"))
        })
    }

    fn to_devices(&self, page: NetboxPage) -> DevicePage {
        let mut out = DevicePage { next: page.next, ..DevicePage::default() };
        for d in page.results {
            let name = d.name.clone().unwrap_or_else(|| format!("device-{}", d.id));
            let cpu = d.custom_fields.get(&self.config.cpu_field);
            let ram = d.custom_fields.get(&self.config.ram_field);
            let attributes = json!({
                "serial": d.serial,
                "role": d.role.as_ref().map(|r| r.slug.clone()),
                "status": d.status.as_ref().and_then(|s| s.get("value")).cloned(),
            });
            let site = d.site.map(|s| s.slug);
            match device(d.id.to_string(), name, site, cpu, ram, attributes) {
                Ok(device) => out.devices.push(device),
                Err(skip) => out.skipped.push(skip),
            }
        }
        out
    }
}

fn truncate(text: &str) -> String {
    text.chars().take(200).collect()
}

impl Inventory for Netbox {
    fn page<'a>(&'a self, cursor: Option<&'a str>) -> ClientFuture<'a, DevicePage> {
        Box::pin(async move {
            let url = match cursor {
                Some(next) => self.checked_next(next)?,
                None => self.first_url()?,
            };
            let retry = ExponentialBuilder::default()
                .with_min_delay(Duration::from_millis(200))
                .with_max_delay(Duration::from_secs(5))
                .with_max_times(self.config.retries as usize)
                .with_jitter();
            let page = (|| self.fetch(&url))
                .retry(retry)
                .when(|e| matches!(e, ClientError::Transient(_)))
                .notify(|e, wait| tracing::warn!(error = %e, ?wait, "NetBox page failed; retrying"))
                .await?;
            Ok(self.to_devices(page))
        })
    }

    fn sites(&self) -> Option<Vec<String>> {
        (!self.config.sites.is_empty()).then(|| self.config.sites.clone())
    }

    fn describe(&self) -> String {
        format!("netbox {}", self.base)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_accept_numbers_and_numeric_strings_only() {
        assert_eq!(count(Some(&json!(64))), Some(64));
        assert_eq!(count(Some(&json!("128"))), Some(128));
        assert_eq!(count(Some(&json!(12.0))), Some(12));
        assert_eq!(count(Some(&json!(-1))), None);
        assert_eq!(count(Some(&json!("lots"))), None);
        assert_eq!(count(Some(&Value::Null)), None);
        assert_eq!(count(None), None);
    }

    #[test]
    fn devices_without_site_cpu_or_ram_are_skipped_with_a_reason() {
        let ok = device(
            "1".into(),
            "a".into(),
            Some("berlin".into()),
            Some(&json!(8)),
            Some(&json!(64)),
            json!({}),
        );
        assert_eq!(ok.unwrap().cpu_cores, 8);
        let no_site =
            device("2".into(), "b".into(), None, Some(&json!(8)), Some(&json!(64)), json!({}));
        assert_eq!(no_site.unwrap_err(), "b: no site");
        let no_ram =
            device("3".into(), "c".into(), Some("x".into()), Some(&json!(8)), None, json!({}));
        assert_eq!(no_ram.unwrap_err(), "c: no RAM size");
    }
}
