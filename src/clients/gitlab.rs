//! GitOps delivery into a GitLab project through its REST API: the repository files API to read
//! what is there, and `POST /api/v4/projects/:id/repository/commits` with `create`, `update`
//! or `delete` actions to change it, one commit per change, authenticated by `PRIVATE-TOKEN`.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use reqwest::StatusCode;
use serde::Deserialize;
use serde_json::json;

use super::gitops::{Delivered, Gitops};
use super::{ClientError, ClientFuture};
use crate::config::{ConfigError, GitConfig, GitlabConfig, Secret};

pub struct Gitlab {
    client: reqwest::Client,
    base: url::Url,
    project: String,
    token: Secret,
    branch: String,
    author_name: String,
    author_email: String,
}

/// `GET /projects/:id/repository/files/:path`.
#[derive(Debug, Deserialize)]
struct RepositoryFile {
    content: String,
    encoding: Option<String>,
    last_commit_id: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Commit {
    id: String,
}

impl Gitlab {
    pub fn new(config: &GitlabConfig, git: &GitConfig, token: Secret) -> Result<Self, ConfigError> {
        let base = url::Url::parse(&config.url)
            .map_err(|e| ConfigError::invalid("delivery.gitlab.url", e.to_string()))?;
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(config.timeout_secs))
            .build()
            .map_err(|e| ConfigError::invalid("delivery.gitlab", e.to_string()))?;
        Ok(Self {
            client,
            base,
            project: config.project.clone(),
            token,
            branch: git.branch.clone(),
            author_name: git.author_name.clone(),
            author_email: git.author_email.clone(),
        })
    }

    /// Sends `request` with the token; a failure to get any answer is transient.
    async fn send(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, ClientError> {
        request
            .header("PRIVATE-TOKEN", self.token.expose())
            .send()
            .await
            .map_err(|e| ClientError::Transient(format!("GitLab at {}: {e}", self.base)))
    }

    /// `…/api/v4/projects/<id or url-encoded path>/<rest>`, each segment encoded.
    fn url(&self, rest: &[&str]) -> Result<url::Url, ClientError> {
        let mut url = self.base.clone();
        {
            let mut segments = url
                .path_segments_mut()
                .map_err(|_| ClientError::Permanent("bad GitLab URL".to_owned()))?;
            segments
                .pop_if_empty()
                .extend(["api", "v4", "projects", self.project.as_str()])
                .extend(rest);
        }
        Ok(url)
    }

    async fn failure(response: reqwest::Response, what: &str) -> ClientError {
        let status = response.status();
        let body: String = response.text().await.unwrap_or_default().chars().take(300).collect();
        match status {
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => ClientError::Permanent(format!(
                "GitLab refused the token ({status}) to {what}; check delivery.gitlab.token"
            )),
            // A concurrent change (e.g. the file appeared meanwhile) or GitLab itself: try again.
            s if s.is_server_error()
                || s == StatusCode::TOO_MANY_REQUESTS
                || s == StatusCode::CONFLICT =>
            {
                ClientError::Transient(format!("GitLab answered {status} to {what}: {body}"))
            }
            StatusCode::BAD_REQUEST
                if body.contains("already exists") || body.contains("does not exist") =>
            {
                ClientError::Transient(format!("GitLab answered {status} to {what}: {body}"))
            }
            _ => ClientError::Permanent(format!("GitLab answered {status} to {what}: {body}")),
        }
    }

    async fn file(&self, path: &str) -> Result<Option<RepositoryFile>, ClientError> {
        let mut url = self.url(&["repository", "files", path])?;
        url.query_pairs_mut().append_pair("ref", &self.branch);
        let response = self.send(self.client.get(url)).await?;
        match response.status() {
            StatusCode::NOT_FOUND => Ok(None),
            s if s.is_success() => response.json().await.map(Some).map_err(|e| {
                ClientError::Permanent(format!("GitLab's file {path} is unreadable: {e}"))
            }),
            _ => Err(Self::failure(response, &format!("read {path}")).await),
        }
    }

    fn decode(file: &RepositoryFile) -> Result<String, ClientError> {
        if file.encoding.as_deref() == Some("base64") {
            let bytes = STANDARD.decode(file.content.replace('\n', "")).map_err(|e| {
                ClientError::Permanent(format!("GitLab sent undecodable content: {e}"))
            })?;
            String::from_utf8(bytes)
                .map_err(|e| ClientError::Permanent(format!("GitLab sent non-UTF-8 content: {e}")))
        } else {
            Ok(file.content.clone())
        }
    }

    async fn commit(
        &self,
        action: serde_json::Value,
        message: &str,
    ) -> Result<Delivered, ClientError> {
        let body = json!({
            "branch": self.branch,
            "commit_message": message,
            "actions": [action],
            "author_name": self.author_name,
            "author_email": self.author_email,
        });
        let response =
            self.send(self.client.post(self.url(&["repository", "commits"])?).json(&body)).await?;
        if !response.status().is_success() {
            return Err(Self::failure(response, "commit").await);
        }
        let commit: Commit = response.json().await.map_err(|e| {
            ClientError::Permanent(format!("GitLab's commit answer is unreadable: {e}"))
        })?;
        Ok(Delivered::Committed { commit: commit.id })
    }
}

impl Gitops for Gitlab {
    fn write<'a>(
        &'a self,
        file: &'a str,
        content: Option<&'a str>,
        message: &'a str,
    ) -> ClientFuture<'a, Delivered> {
        Box::pin(async move {
            let existing = self.file(file).await?;
            let action = match (&existing, content) {
                (None, None) => return Ok(Delivered::Unchanged { commit: None }),
                (Some(current), Some(text)) if Self::decode(current)? == text => {
                    let commit = current.last_commit_id.clone();
                    return Ok(Delivered::Unchanged { commit });
                }
                (None, Some(text)) => {
                    json!({ "action": "create", "file_path": file, "content": text, "encoding": "text" })
                }
                (Some(current), Some(text)) => json!({
                    "action": "update", "file_path": file, "content": text, "encoding": "text",
                    "last_commit_id": current.last_commit_id,
                }),
                (Some(current), None) => json!({
                    "action": "delete", "file_path": file, "last_commit_id": current.last_commit_id,
                }),
            };
            self.commit(action, message).await
        })
    }

    fn includes<'a>(&'a self, revision: &'a str, tip: &'a str) -> ClientFuture<'a, bool> {
        Box::pin(async move {
            if super::gitops::same_commit(revision, tip) {
                return Ok(true);
            }
            // `GET /projects/:id/repository/merge_base?refs[]=A&refs[]=B`: the revision is in
            // the tip's history when it is their merge base.
            let mut url = self.url(&["repository", "merge_base"])?;
            url.query_pairs_mut().append_pair("refs[]", revision).append_pair("refs[]", tip);
            let response = self.send(self.client.get(url)).await?;
            match response.status() {
                // A commit GitLab does not know (yet).
                StatusCode::NOT_FOUND | StatusCode::BAD_REQUEST => Ok(false),
                s if s.is_success() => {
                    let base: Commit = response.json().await.map_err(|e| {
                        ClientError::Permanent(format!("GitLab's merge base is unreadable: {e}"))
                    })?;
                    Ok(super::gitops::same_commit(&base.id, revision))
                }
                _ => Err(Self::failure(response, "compare commits").await),
            }
        })
    }

    fn read<'a>(&'a self, file: &'a str) -> ClientFuture<'a, Option<String>> {
        Box::pin(async move {
            match self.file(file).await? {
                Some(found) => Ok(Some(Self::decode(&found)?)),
                None => Ok(None),
            }
        })
    }
}
