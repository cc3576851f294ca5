//! Prometheus's HTTP API: an instant query (`GET /api/v1/query`), as the Prometheus of each
//! site answers it (`{"status": "success", "data": {"resultType": "vector", "result":
//! [{"metric": {...}, "value": [<time>, "<number>"]}]}}`).

use std::collections::BTreeMap;
use std::time::Duration;

use reqwest::StatusCode;
use serde::Deserialize;

use super::{ClientError, ClientFuture, ClientResult};
use crate::config::{ConfigError, Secret, UsageConfig};

/// One sample of an instant vector: its labels and value.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

pub trait Prometheus: Send + Sync {
    /// The sites that have a Prometheus.
    fn sites(&self) -> Vec<String>;

    /// An instant query against the Prometheus of `site`.
    fn query<'a>(&'a self, site: &'a str, promql: &'a str) -> ClientFuture<'a, Vec<Sample>>;
}

/// The real client: one base URL per site.
pub struct PrometheusHttp {
    client: reqwest::Client,
    sites: BTreeMap<String, url::Url>,
    token: Option<Secret>,
}

#[derive(Debug, Deserialize)]
struct Answer {
    status: String,
    data: Option<Data>,
    error: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Data {
    result_type: String,
    result: Vec<RawSample>,
}

#[derive(Debug, Deserialize)]
struct RawSample {
    metric: BTreeMap<String, String>,
    value: (f64, String),
}

impl PrometheusHttp {
    pub fn new(config: &UsageConfig, token: Option<Secret>) -> Result<Self, ConfigError> {
        let mut sites = BTreeMap::new();
        for (site, url) in &config.prometheus {
            let mut url = url::Url::parse(url)
                .map_err(|e| ConfigError::invalid("usage.prometheus", e.to_string()))?;
            if !url.path().ends_with('/') {
                url.set_path(&format!("{}/", url.path()));
            }
            sites.insert(site.clone(), url);
        }
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(config.timeout_secs))
            .build()
            .map_err(|e| ConfigError::invalid("usage", e.to_string()))?;
        Ok(Self { client, sites, token })
    }

    async fn instant(&self, site: &str, promql: &str) -> ClientResult<Vec<Sample>> {
        let base = self
            .sites
            .get(site)
            .ok_or_else(|| ClientError::permanent(format!("no Prometheus for site {site}")))?;
        let mut url = base
            .join("api/v1/query")
            .map_err(|e| ClientError::permanent(format!("bad Prometheus URL: {e}")))?;
        url.query_pairs_mut().append_pair("query", promql);
        let mut request = self.client.get(url);
        if let Some(token) = &self.token {
            request = request.bearer_auth(token.expose());
        }
        let where_ = crate::config::redact_url(base.as_str());
        // Without the URL in reqwest's message: it may carry credentials.
        let response = request.send().await.map_err(|e| {
            ClientError::transient(format!("Prometheus of {site} at {where_}: {}", e.without_url()))
        })?;
        let status = response.status();
        let body = response.text().await.map_err(|e| {
            ClientError::transient(format!("Prometheus of {site}: {}", e.without_url()))
        })?;
        let answer: Option<Answer> = serde_json::from_str(&body).ok();
        if !status.is_success() {
            let detail =
                answer.and_then(|a| a.error).unwrap_or_else(|| body.chars().take(200).collect());
            let message = format!("Prometheus of {site} answered {status}: {detail}");
            return Err(match status {
                StatusCode::SERVICE_UNAVAILABLE | StatusCode::TOO_MANY_REQUESTS => {
                    ClientError::transient(message)
                }
                s if s.is_server_error() => ClientError::transient(message),
                _ => ClientError::permanent(message),
            });
        }
        let answer = answer.ok_or_else(|| {
            ClientError::permanent(format!(
                "Prometheus of {site} answered something else than its API's JSON"
            ))
        })?;
        match (answer.status.as_str(), answer.data) {
            ("success", Some(data)) if data.result_type == "vector" => Ok(data
                .result
                .into_iter()
                .filter_map(|raw| {
                    let value = raw.value.1.parse::<f64>().ok().filter(|v| v.is_finite())?;
                    Some(Sample { labels: raw.metric, value })
                })
                .collect()),
            (_, _) => Err(ClientError::permanent(format!(
                "Prometheus of {site} did not answer a vector: {}",
                answer.error.unwrap_or_default()
            ))),
        }
    }
}

impl Prometheus for PrometheusHttp {
    fn sites(&self) -> Vec<String> {
        self.sites.keys().cloned().collect()
    }

    fn query<'a>(&'a self, site: &'a str, promql: &'a str) -> ClientFuture<'a, Vec<Sample>> {
        Box::pin(self.instant(site, promql))
    }
}
