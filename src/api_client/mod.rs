//! The command-line client: `infrahub login`, `projects`, `jobs`, `servers`, `capacity`,
//! `quota`. It speaks the HTTP API only (never the database), so it works from any laptop that
//! reaches the daemon.
//!
//! - The session (URL, username, token) lives in `$XDG_CONFIG_HOME/infrahub/session.json`
//!   (else `~/.config/infrahub/session.json`), mode 0600; `INFRAHUB_URL` and `INFRAHUB_TOKEN`
//!   override it, e.g. for scripts.
//! - Every write carries an `Idempotency-Key` (random per command, or `--idempotency-key`), and
//!   the client retries a write that met a connection error or a 502/503/504 with the same key:
//!   the daemon answers a repeat with the first answer, so the command never acts twice.
//! - Refusals print the API's message and details.

pub mod commands;
mod render;
mod session;

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::Value;

pub use session::Session;

/// How a client command failed, deciding its exit code.
#[derive(Debug)]
pub enum ClientError {
    /// The API refused the request (4xx), or the command was used wrongly: exit 2.
    Refused(String),
    /// The daemon could not be reached or failed (5xx), or a job did not succeed: exit 1.
    Failed(String),
    /// `jobs wait --timeout` ran out before the job ended: exit 3.
    TimedOut(String),
}

impl ClientError {
    pub fn exit_code(&self) -> u8 {
        match self {
            ClientError::Refused(_) => 2,
            ClientError::Failed(_) => 1,
            ClientError::TimedOut(_) => 3,
        }
    }

    pub fn message(&self) -> &str {
        match self {
            ClientError::Refused(m) | ClientError::Failed(m) | ClientError::TimedOut(m) => m,
        }
    }
}

/// Sends one request at a time to one daemon, with the session's bearer token.
pub struct Client {
    http: reqwest::Client,
    base: url::Url,
    token: Option<String>,
    /// The key of this command's writes (one command, one key: its retries reuse it).
    key: String,
    writes: u32,
}

/// Attempts for a request that met a connection error or a 502/503/504.
const ATTEMPTS: u32 = 4;

impl Client {
    pub fn new(
        base: &str,
        token: Option<String>,
        key: Option<String>,
    ) -> Result<Self, ClientError> {
        let mut base = url::Url::parse(base)
            .map_err(|e| ClientError::Refused(format!("bad URL {base:?}: {e}")))?;
        if !matches!(base.scheme(), "http" | "https") {
            return Err(ClientError::Refused(format!("bad URL {base}: use http:// or https://")));
        }
        if !base.path().ends_with('/') {
            base.set_path(&format!("{}/", base.path()));
        }
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(60))
            .user_agent(concat!("infrahub-cli/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ClientError::Failed(format!("cannot build the HTTP client: {e}")))?;
        let key = key.unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        Ok(Self { http, base, token, key, writes: 0 })
    }

    pub fn base(&self) -> &url::Url {
        &self.base
    }

    pub async fn get(&self, path: &str) -> Result<Value, ClientError> {
        self.send(Method::GET, path, None, None).await
    }

    /// A write: POST, PATCH or DELETE with the command's Idempotency-Key (suffixed when a
    /// command writes more than once).
    pub async fn write(
        &mut self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, ClientError> {
        self.writes += 1;
        let key = match self.writes {
            1 => self.key.clone(),
            n => format!("{}-{n}", self.key),
        };
        self.send(method, path, body, Some(key)).await
    }

    /// `POST /auth/login` (never keyed: a login changes nothing).
    pub async fn login(&self, username: &str, password: &str) -> Result<Value, ClientError> {
        let body = serde_json::json!({ "username": username, "password": password });
        self.send(Method::POST, "auth/login", Some(body), None).await
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        key: Option<String>,
    ) -> Result<Value, ClientError> {
        let url = self
            .base
            .join(&format!("api/v1/{}", path.trim_start_matches('/')))
            .map_err(|e| ClientError::Refused(format!("bad path {path}: {e}")))?;
        let mut delay = Duration::from_millis(500);
        let mut attempt = 1;
        loop {
            let mut request = self.http.request(method.clone(), url.clone());
            if let Some(token) = &self.token {
                request = request.bearer_auth(token);
            }
            if let Some(key) = &key {
                request = request.header("Idempotency-Key", key);
            }
            if let Some(body) = &body {
                request = request.json(body);
            }
            let (status, error) = match request.send().await {
                Ok(response) => {
                    let status = response.status();
                    let text = response.text().await.unwrap_or_default();
                    if status.is_success() {
                        return Ok(serde_json::from_str(&text).unwrap_or(Value::Null));
                    }
                    (status, api_error(status, &text))
                }
                Err(err) => (StatusCode::SERVICE_UNAVAILABLE, unreachable(&self.base, &err)),
            };
            let transient = matches!(
                status,
                StatusCode::BAD_GATEWAY
                    | StatusCode::SERVICE_UNAVAILABLE
                    | StatusCode::GATEWAY_TIMEOUT
            );
            if !transient || attempt >= ATTEMPTS {
                return Err(error);
            }
            tracing::debug!(attempt, %status, "retrying with the same Idempotency-Key");
            tokio::time::sleep(delay).await;
            delay *= 2;
            attempt += 1;
        }
    }
}

fn unreachable(base: &url::Url, err: &reqwest::Error) -> ClientError {
    let why = if err.is_timeout() {
        "timed out".to_owned()
    } else if err.is_connect() {
        "connection refused or host unreachable".to_owned()
    } else {
        err.to_string()
    };
    ClientError::Failed(format!("cannot reach InfraHub at {base}: {why}"))
}

/// The API's error envelope as one readable message: the sentence, the code and status, and
/// each detail on its own line.
fn api_error(status: StatusCode, text: &str) -> ClientError {
    let parsed: Option<Value> = serde_json::from_str(text).ok();
    let envelope = parsed.as_ref().and_then(|v| v.get("error"));
    let mut message = match envelope {
        Some(error) => format!(
            "{} ({}, HTTP {})",
            error["message"].as_str().unwrap_or("request refused"),
            error["code"].as_str().unwrap_or("error"),
            status.as_u16()
        ),
        None => format!("HTTP {status}: {}", text.chars().take(200).collect::<String>()),
    };
    if let Some(Value::Object(details)) = envelope.map(|e| &e["details"]) {
        for (key, value) in details {
            let value = value.as_str().map_or_else(|| value.to_string(), str::to_owned);
            message.push_str(&format!("\n  {key}: {value}"));
        }
    }
    if status == StatusCode::UNAUTHORIZED {
        message.push_str("\n  log in again with `infrahub login`");
    }
    if status.is_client_error() {
        ClientError::Refused(message)
    } else {
        ClientError::Failed(message)
    }
}
