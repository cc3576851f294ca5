//! A Kubernetes API server double for the objects InfraHub manages: server-side apply
//! (`PATCH` with `application/apply-patch+yaml`, `fieldManager`, `force`), `GET`, and `DELETE`
//! of namespaces (which stay `Terminating` for a few reads, then go with their objects).
//! Errors are `Status` objects, as the API server sends them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tokio::net::TcpListener;

pub const TOKEN: &str = "kube-api-token";

/// One request as the API server saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub query: String,
    pub content_type: String,
    pub body: Value,
}

#[derive(Default)]
pub struct Cluster {
    /// Resource path (e.g. `/api/v1/namespaces/ns/resourcequotas/q`) -> object.
    pub objects: BTreeMap<String, Value>,
    /// Namespaces being deleted -> reads left before they are gone.
    pub terminating: BTreeMap<String, u32>,
    pub seen: Vec<Seen>,
}

#[derive(Clone)]
pub struct FakeKube {
    pub base: String,
    pub cluster: Arc<Mutex<Cluster>>,
}

impl FakeKube {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let fake = FakeKube { base, cluster: Arc::new(Mutex::new(Cluster::default())) };
        let router = Router::new().fallback(handle).with_state(fake.clone());
        tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
        fake
    }

    /// A kubeconfig with context `context` pointing here, written into `dir`.
    pub fn kubeconfig(&self, dir: &Path, context: &str) -> PathBuf {
        let path = dir.join("kubeconfig");
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: {}\nusers:\n- name: infrahub\n  user:\n    token: {TOKEN}\ncontexts:\n- name: {context}\n  context:\n    cluster: fake\n    user: infrahub\ncurrent-context: {context}\n",
            self.base
        );
        std::fs::write(&path, text).unwrap();
        path
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.cluster.lock().unwrap().seen.clone()
    }

    pub fn object(&self, path: &str) -> Option<Value> {
        self.cluster.lock().unwrap().objects.get(path).cloned()
    }

    pub fn set(&self, change: impl FnOnce(&mut Cluster)) {
        change(&mut self.cluster.lock().unwrap());
    }
}

fn status(code: u16, reason: &str, message: &str) -> Response {
    let body = json!({ "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                       "message": message, "reason": reason, "code": code });
    (StatusCode::from_u16(code).unwrap(), axum::Json(body)).into_response()
}

async fn handle(
    State(fake): State<FakeKube>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_owned();
    let content_type =
        headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    let parsed: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let mut cluster = fake.cluster.lock().unwrap();
    cluster.seen.push(Seen {
        method: method.to_string(),
        path: path.clone(),
        query: uri.query().unwrap_or("").to_owned(),
        content_type,
        body: parsed.clone(),
    });
    if headers.get("authorization").and_then(|v| v.to_str().ok())
        != Some(&format!("Bearer {TOKEN}"))
    {
        return status(401, "Unauthorized", "Unauthorized");
    }
    let namespace_of = |p: &str| {
        p.strip_prefix("/api/v1/namespaces/")
            .map(|rest| rest.split('/').next().unwrap_or("").to_owned())
    };
    match method {
        Method::PATCH => {
            let mut object = parsed;
            object["metadata"]["uid"] = json!(format!("uid-{}", path.len()));
            object["metadata"]["resourceVersion"] = json!("1");
            cluster.objects.insert(path, object.clone());
            axum::Json(object).into_response()
        }
        Method::GET => {
            if let Some(ns) = namespace_of(&path).filter(|_| path.matches('/').count() == 4)
                && let Some(left) = cluster.terminating.get(&ns).copied()
            {
                if left == 0 {
                    cluster.terminating.remove(&ns);
                    let doomed: Vec<String> = cluster
                        .objects
                        .keys()
                        .filter(|k| k.contains(&format!("/namespaces/{ns}")))
                        .cloned()
                        .collect();
                    for key in doomed {
                        cluster.objects.remove(&key);
                    }
                } else {
                    cluster.terminating.insert(ns, left - 1);
                }
            }
            match cluster.objects.get(&path) {
                Some(object) => axum::Json(object.clone()).into_response(),
                None => status(404, "NotFound", &format!("{path} not found")),
            }
        }
        Method::DELETE => match cluster.objects.get_mut(&path) {
            Some(object) => {
                object["status"] = json!({ "phase": "Terminating" });
                let answer = object.clone();
                if let Some(ns) = namespace_of(&path) {
                    cluster.terminating.entry(ns).or_insert(2);
                }
                axum::Json(answer).into_response()
            }
            None => status(404, "NotFound", &format!("{path} not found")),
        },
        _ => status(405, "MethodNotAllowed", "method not allowed"),
    }
}
