//! An Argo CD double: `GET /api/v1/applications/{name}` (with `refresh`) and
//! `POST /api/v1/applications/{name}/sync`, answering Argo CD's JSON: a `v1alpha1Application`
//! with `status.sync`, `status.health`, `status.operationState` and `status.resources`, or a
//! `runtimeError`. Each read takes the next scripted state; the last one stays.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use tokio::net::TcpListener;

#[derive(Default)]
pub struct ArgoScript {
    pub token: String,
    pub app: String,
    pub states: VecDeque<Value>,
    /// Answer syncs with 409 "another operation is already in progress".
    pub sync_conflicts: bool,
    /// Report this Git repository's HEAD as the revision Argo CD compared with (as Argo CD
    /// tracking the branch does); otherwise the scripted state's own revision.
    pub tracks: Option<std::path::PathBuf>,
    pub reads: Vec<String>,
    pub syncs: Vec<Value>,
}

#[derive(Clone)]
pub struct FakeArgocd {
    pub base: String,
    pub script: Arc<Mutex<ArgoScript>>,
    /// What the next requests meet before Argo CD answers them.
    pub faults: crate::faults::Faults,
}

impl FakeArgocd {
    pub async fn start(app: &str, token: &str, states: Vec<Value>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let script = ArgoScript {
            token: token.to_owned(),
            app: app.to_owned(),
            states: states.into(),
            ..ArgoScript::default()
        };
        let faults = crate::faults::Faults::default();
        let fake =
            FakeArgocd { base, script: Arc::new(Mutex::new(script)), faults: faults.clone() };
        let router = Router::new()
            .route("/api/v1/applications/{name}", get(read))
            .route("/api/v1/applications/{name}/sync", post(sync))
            .layer(axum::middleware::from_fn_with_state(faults, crate::faults::inject))
            .with_state(fake.clone());
        tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
        fake
    }

    pub fn set(&self, change: impl FnOnce(&mut ArgoScript)) {
        change(&mut self.script.lock().unwrap());
    }

    pub fn reads(&self) -> Vec<String> {
        self.script.lock().unwrap().reads.clone()
    }

    pub fn syncs(&self) -> Vec<Value> {
        self.script.lock().unwrap().syncs.clone()
    }
}

fn runtime_error(status: StatusCode, code: i64, message: &str) -> Response {
    (
        status,
        axum::Json(json!({ "code": code, "error": message, "message": message, "details": [] })),
    )
        .into_response()
}

fn authorized(script: &ArgoScript, headers: &HeaderMap) -> bool {
    headers.get("authorization").and_then(|v| v.to_str().ok())
        == Some(&format!("Bearer {}", script.token))
}

async fn read(
    State(fake): State<FakeArgocd>,
    Path(name): Path<String>,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    let mut script = fake.script.lock().unwrap();
    script.reads.push(uri.to_string());
    if !authorized(&script, &headers) {
        return runtime_error(
            StatusCode::UNAUTHORIZED,
            16,
            "invalid session: token signature is invalid",
        );
    }
    if name != script.app {
        return runtime_error(
            StatusCode::NOT_FOUND,
            5,
            &format!("applications.argoproj.io \"{name}\" not found"),
        );
    }
    let mut state = if script.states.len() > 1 {
        script.states.pop_front()
    } else {
        script.states.front().cloned()
    };
    if let (Some(repo), Some(state)) = (&script.tracks, state.as_mut()) {
        state["status"]["sync"]["revision"] = json!(head_of(repo));
    }
    axum::Json(state.unwrap_or(Value::Null)).into_response()
}

/// The commit a Git repository's HEAD points at.
pub fn head_of(repo: &std::path::Path) -> String {
    let output = std::process::Command::new("git")
        .arg("-C")
        .arg(repo)
        .args(["rev-parse", "HEAD"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

async fn sync(
    State(fake): State<FakeArgocd>,
    Path(_name): Path<String>,
    headers: HeaderMap,
    body: String,
) -> Response {
    let mut script = fake.script.lock().unwrap();
    if !authorized(&script, &headers) {
        return runtime_error(StatusCode::UNAUTHORIZED, 16, "invalid session");
    }
    script.syncs.push(serde_json::from_str(&body).unwrap_or(Value::Null));
    if script.sync_conflicts {
        return runtime_error(StatusCode::CONFLICT, 9, "another operation is already in progress");
    }
    axum::Json(script.states.front().cloned().unwrap_or(Value::Null)).into_response()
}

/// A `status.resources[]` entry.
pub fn resource(
    kind: &str,
    name: &str,
    namespace: &str,
    sync: &str,
    health: Option<&str>,
) -> Value {
    let mut entry = json!({ "group": "", "version": "v1", "kind": kind, "namespace": namespace, "name": name, "status": sync });
    if let Some(health) = health {
        entry["health"] = json!({ "status": health });
    }
    entry
}

/// An Application as Argo CD serialises it.
pub fn application(
    name: &str,
    sync: &str,
    health: &str,
    operation: Option<(&str, &str)>,
    resources: Vec<Value>,
) -> Value {
    let mut app = json!({
        "metadata": { "name": name, "namespace": "argocd" },
        "spec": {
            "project": "default",
            "source": { "repoURL": "https://git.example/gitops.git", "path": "fra", "targetRevision": "main" },
            "destination": { "server": "https://kubernetes.default.svc" },
            "syncPolicy": {}
        },
        "status": {
            "sync": { "status": sync, "revision": "3f1c2aa" },
            "health": { "status": health },
            "resources": resources,
            "reconciledAt": "2026-11-24T09:00:00Z"
        }
    });
    if let Some((phase, message)) = operation {
        app["status"]["operationState"] =
            json!({ "phase": phase, "message": message, "startedAt": "2026-11-24T09:00:00Z" });
    }
    app
}
