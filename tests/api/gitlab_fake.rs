//! A GitLab double: `GET /api/v4/projects/:id/repository/files/:file_path?ref=` and
//! `POST /api/v4/projects/:id/repository/commits` with `create`, `update` and `delete`
//! actions, behind `PRIVATE-TOKEN`, answering GitLab's JSON (and its 400s for a file that
//! already exists, does not exist, or changed since `last_commit_id`).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};
use tokio::net::TcpListener;

#[derive(Default)]
pub struct Repo {
    pub token: String,
    /// path -> (content, last commit id)
    pub files: BTreeMap<String, (String, String)>,
    /// Every commit request body.
    pub commits: Vec<Value>,
}

#[derive(Clone)]
pub struct FakeGitlab {
    pub base: String,
    pub repo: Arc<Mutex<Repo>>,
    /// What the next requests meet before GitLab answers them.
    pub faults: crate::faults::Faults,
}

impl FakeGitlab {
    pub async fn start(token: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let repo = Arc::new(Mutex::new(Repo { token: token.to_owned(), ..Repo::default() }));
        let faults = crate::faults::Faults::default();
        let fake = FakeGitlab { base, repo, faults: faults.clone() };
        let router = Router::new()
            .route("/api/v4/projects/{project}/repository/files/{path}", get(file))
            .route("/api/v4/projects/{project}/repository/commits", post(commit))
            .route("/api/v4/projects/{project}/repository/merge_base", get(merge_base))
            .layer(axum::middleware::from_fn_with_state(faults, crate::faults::inject))
            .with_state(fake.clone());
        tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
        fake
    }

    pub fn commits(&self) -> Vec<Value> {
        self.repo.lock().unwrap().commits.clone()
    }

    pub fn file(&self, path: &str) -> Option<String> {
        self.repo.lock().unwrap().files.get(path).map(|(content, _)| content.clone())
    }
}

fn message(status: StatusCode, text: &str) -> Response {
    (status, axum::Json(json!({ "message": text }))).into_response()
}

fn authorized(repo: &Repo, headers: &HeaderMap) -> bool {
    headers.get("private-token").and_then(|v| v.to_str().ok()) == Some(repo.token.as_str())
}

async fn file(
    State(fake): State<FakeGitlab>,
    Path((project, path)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let repo = fake.repo.lock().unwrap();
    if !authorized(&repo, &headers) {
        return message(StatusCode::UNAUTHORIZED, "401 Unauthorized");
    }
    assert_eq!(project, "platform/gitops", "the project path arrives URL-encoded as one segment");
    match repo.files.get(&path) {
        None => message(StatusCode::NOT_FOUND, "404 File Not Found"),
        Some((content, commit)) => axum::Json(json!({
            "file_name": path.rsplit('/').next(),
            "file_path": path,
            "size": content.len(),
            "encoding": "base64",
            "content": STANDARD.encode(content),
            "ref": "main",
            "blob_id": "79f7bbd25901e8334750839545a9bd021f0e4c83",
            "commit_id": commit,
            "last_commit_id": commit,
        }))
        .into_response(),
    }
}

/// `GET .../repository/merge_base?refs[]=A&refs[]=B`: this double's history is a line of
/// commits numbered 1, 2, ..., so the merge base is the older of the two.
async fn merge_base(
    State(fake): State<FakeGitlab>,
    headers: HeaderMap,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
) -> Response {
    let repo = fake.repo.lock().unwrap();
    if !authorized(&repo, &headers) {
        return message(StatusCode::UNAUTHORIZED, "401 Unauthorized");
    }
    let refs: Vec<u128> = url::form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .filter(|(k, _)| k == "refs[]")
        .filter_map(|(_, v)| u128::from_str_radix(&v, 16).ok())
        .filter(|n| *n >= 1 && *n <= repo.commits.len() as u128)
        .collect();
    match refs.iter().min() {
        Some(base) if refs.len() == 2 => {
            axum::Json(json!({ "id": format!("{base:040x}") })).into_response()
        }
        _ => message(StatusCode::NOT_FOUND, "404 Commit Not Found"),
    }
}

async fn commit(
    State(fake): State<FakeGitlab>,
    Path(_project): Path<String>,
    headers: HeaderMap,
    body: String,
) -> Response {
    let mut repo = fake.repo.lock().unwrap();
    if !authorized(&repo, &headers) {
        return message(StatusCode::UNAUTHORIZED, "401 Unauthorized");
    }
    let request: Value = serde_json::from_str(&body).unwrap();
    let id = format!("{:040x}", repo.commits.len() + 1);
    for action in request["actions"].as_array().unwrap() {
        let path = action["file_path"].as_str().unwrap().to_owned();
        let existing = repo.files.get(&path).cloned();
        match (action["action"].as_str().unwrap(), existing) {
            ("create", Some(_)) => {
                return message(StatusCode::BAD_REQUEST, "A file with this name already exists");
            }
            ("update" | "delete", None) => {
                return message(StatusCode::BAD_REQUEST, "A file with this name doesn't exist");
            }
            ("update" | "delete", Some((_, last)))
                if action["last_commit_id"].as_str() != Some(last.as_str()) =>
            {
                return message(
                    StatusCode::BAD_REQUEST,
                    "You are attempting to update a file that has changed since you started editing it.",
                );
            }
            ("delete", Some(_)) => {
                repo.files.remove(&path);
            }
            (_, _) => {
                repo.files
                    .insert(path, (action["content"].as_str().unwrap().to_owned(), id.clone()));
            }
        }
    }
    repo.commits.push(request.clone());
    (
        StatusCode::CREATED,
        axum::Json(json!({
            "id": id, "short_id": &id[..8], "title": request["commit_message"], "message": request["commit_message"],
            "author_name": request["author_name"], "author_email": request["author_email"],
            "created_at": "2026-11-24T09:00:00.000Z", "parent_ids": [],
        })),
    )
        .into_response()
}
