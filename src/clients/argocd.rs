//! Argo CD's REST API: read an Application (optionally with a hard refresh) and ask it to
//! sync. Shapes follow Argo CD's swagger (`v1alpha1Application`, `runtimeError`).

use std::time::Duration;

use reqwest::StatusCode;
use serde::Deserialize;
use serde_json::json;

use super::{ClientError, ClientFuture, ClientResult};
use crate::config::{ArgocdConfig, ConfigError, Secret};

/// What InfraHub reads of an Application.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Application {
    #[serde(default)]
    pub spec: AppSpec,
    #[serde(default)]
    pub status: AppStatus,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AppSpec {
    pub sync_policy: Option<SyncPolicy>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct SyncPolicy {
    pub automated: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AppStatus {
    pub sync: Option<Status>,
    pub health: Option<Health>,
    pub operation_state: Option<OperationState>,
    #[serde(default)]
    pub resources: Vec<Resource>,
    #[serde(default)]
    pub conditions: Vec<Condition>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct Status {
    pub status: Option<String>,
    /// The Git revision the comparison (and the last sync) was made against.
    pub revision: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct Health {
    pub status: Option<String>,
    pub message: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OperationState {
    pub phase: Option<String>,
    pub message: Option<String>,
    pub sync_result: Option<SyncResult>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct SyncResult {
    /// The revision the last sync operation applied.
    pub revision: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct Condition {
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub message: Option<String>,
}

/// One entry of `status.resources`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Resource {
    pub kind: Option<String>,
    pub name: Option<String>,
    pub namespace: Option<String>,
    /// Sync status: `Synced`, `OutOfSync`, ...
    pub status: Option<String>,
    pub health: Option<Health>,
}

impl Application {
    pub fn auto_sync(&self) -> bool {
        self.spec.sync_policy.as_ref().and_then(|p| p.automated.as_ref()).is_some()
    }

    pub fn resource(&self, kind: &str, name: &str, namespace: Option<&str>) -> Option<&Resource> {
        self.status.resources.iter().find(|r| {
            r.kind.as_deref() == Some(kind)
                && r.name.as_deref() == Some(name)
                && r.namespace.as_deref().filter(|n| !n.is_empty()) == namespace
        })
    }

    /// The Git revision Argo CD compared the Application with (and synced, when Synced), or
    /// that its last sync applied.
    pub fn revision(&self) -> Option<&str> {
        let status = &self.status;
        let compared = status.sync.as_ref().and_then(|s| s.revision.as_deref());
        let applied = || {
            status
                .operation_state
                .as_ref()
                .and_then(|o| o.sync_result.as_ref())
                .and_then(|r| r.revision.as_deref())
        };
        compared.or_else(applied).filter(|r| !r.is_empty())
    }

    pub fn operation_running(&self) -> bool {
        self.status.operation_state.as_ref().and_then(|o| o.phase.as_deref()) == Some("Running")
    }

    /// Argo CD's own words about what is wrong, for a failure reason.
    pub fn message(&self) -> String {
        let status = &self.status;
        let operation = status.operation_state.as_ref().and_then(|o| o.message.clone());
        let health = status.health.as_ref().and_then(|h| h.message.clone());
        let condition = status.conditions.iter().find_map(|c| c.message.clone());
        operation.or(health).or(condition).unwrap_or_else(|| {
            let sync = status.sync.as_ref().and_then(|s| s.status.clone()).unwrap_or_default();
            let health = status.health.as_ref().and_then(|h| h.status.clone()).unwrap_or_default();
            format!("sync {sync}, health {health}")
        })
    }
}

/// What a sync request found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyncStarted {
    Started,
    /// An operation is already running: not an error, it will get there.
    AlreadyRunning,
}

/// Argo CD's REST API, as InfraHub uses it.
pub trait ArgoCd: Send + Sync {
    /// `GET /api/v1/applications/{name}`, with `refresh=hard` when asked.
    fn application<'a>(
        &'a self,
        name: &'a str,
        hard_refresh: bool,
    ) -> ClientFuture<'a, Application>;

    /// `POST /api/v1/applications/{name}/sync` (with pruning, so removed manifests go).
    fn sync<'a>(&'a self, name: &'a str) -> ClientFuture<'a, SyncStarted>;
}

/// The real Argo CD client.
pub struct Argocd {
    client: reqwest::Client,
    base: url::Url,
    token: Secret,
}

#[derive(Debug, Deserialize)]
struct RuntimeError {
    code: Option<i64>,
    message: Option<String>,
    error: Option<String>,
}

impl Argocd {
    pub fn new(config: &ArgocdConfig, token: Secret) -> Result<Self, ConfigError> {
        let base = url::Url::parse(&config.url)
            .map_err(|e| ConfigError::invalid("argocd.url", e.to_string()))?;
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(config.timeout_secs))
            .build()
            .map_err(|e| ConfigError::invalid("argocd", e.to_string()))?;
        Ok(Self { client, base, token })
    }

    fn url(&self, path: &str) -> Result<url::Url, ClientError> {
        self.base.join(path).map_err(|e| ClientError::Permanent(format!("bad Argo CD URL: {e}")))
    }

    async fn refuse(response: reqwest::Response, what: &str) -> ClientError {
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        let detail = serde_json::from_str::<RuntimeError>(&body)
            .ok()
            .and_then(|e| e.message.or(e.error))
            .unwrap_or_else(|| body.chars().take(200).collect());
        match status {
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => ClientError::Permanent(format!(
                "Argo CD refused the token ({status}) for {what}; check argocd.token"
            )),
            StatusCode::NOT_FOUND => {
                ClientError::Permanent(format!("Argo CD has no {what}: {detail}"))
            }
            s if s.is_server_error() || s == StatusCode::TOO_MANY_REQUESTS => {
                ClientError::Transient(format!("Argo CD answered {status} for {what}: {detail}"))
            }
            _ => ClientError::Permanent(format!("Argo CD answered {status} for {what}: {detail}")),
        }
    }

    async fn read_application(&self, name: &str, hard_refresh: bool) -> ClientResult<Application> {
        let mut url = self.url(&format!("api/v1/applications/{name}"))?;
        if hard_refresh {
            url.query_pairs_mut().append_pair("refresh", "hard");
        }
        let response = self
            .client
            .get(url)
            .bearer_auth(self.token.expose())
            .send()
            .await
            .map_err(|e| ClientError::Transient(format!("Argo CD at {}: {e}", self.base)))?;
        if !response.status().is_success() {
            return Err(Self::refuse(response, &format!("application {name}")).await);
        }
        response.json().await.map_err(|e| {
            ClientError::Permanent(format!("Argo CD's application {name} is unreadable: {e}"))
        })
    }

    async fn request_sync(&self, name: &str) -> ClientResult<SyncStarted> {
        let url = self.url(&format!("api/v1/applications/{name}/sync"))?;
        let response = self
            .client
            .post(url)
            .bearer_auth(self.token.expose())
            .json(&json!({ "name": name, "prune": true }))
            .send()
            .await
            .map_err(|e| ClientError::Transient(format!("Argo CD at {}: {e}", self.base)))?;
        let status = response.status();
        if status.is_success() {
            return Ok(SyncStarted::Started);
        }
        let body = response.text().await.unwrap_or_default();
        let error = serde_json::from_str::<RuntimeError>(&body).ok();
        // gRPC FailedPrecondition (9), e.g. "another operation is already in progress".
        let running = status == StatusCode::CONFLICT
            || error.as_ref().is_some_and(|e| e.code == Some(9))
            || body.contains("already in progress");
        if running {
            return Ok(SyncStarted::AlreadyRunning);
        }
        let detail = error.and_then(|e| e.message.or(e.error)).unwrap_or(body);
        match status {
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => Err(ClientError::Permanent(
                format!("Argo CD refused the token ({status}); check argocd.token"),
            )),
            s if s.is_server_error() => Err(ClientError::Transient(format!(
                "Argo CD answered {status} to a sync: {detail}"
            ))),
            _ => Err(ClientError::Permanent(format!(
                "Argo CD answered {status} to a sync: {detail}"
            ))),
        }
    }
}

impl ArgoCd for Argocd {
    fn application<'a>(
        &'a self,
        name: &'a str,
        hard_refresh: bool,
    ) -> ClientFuture<'a, Application> {
        Box::pin(self.read_application(name, hard_refresh))
    }

    fn sync<'a>(&'a self, name: &'a str) -> ClientFuture<'a, SyncStarted> {
        Box::pin(self.request_sync(name))
    }
}
