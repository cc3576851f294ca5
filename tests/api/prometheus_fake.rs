//! A Prometheus double: `GET /api/v1/query` answers the instant-vector JSON of Prometheus's
//! HTTP API with the samples the test set, or an error status the test asked for.

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};

#[derive(Clone, Default)]
pub struct FakePrometheus {
    /// `(labels, value)` of each sample of the answer.
    samples: Arc<Mutex<Vec<(Value, f64)>>>,
    /// Statuses to fail with first, in turn.
    failures: Arc<Mutex<Vec<u16>>>,
    /// The queries asked.
    pub queries: Arc<Mutex<Vec<String>>>,
    pub base: String,
}

#[derive(serde::Deserialize)]
struct Params {
    query: String,
}

async fn query(State(fake): State<FakePrometheus>, Query(params): Query<Params>) -> Response {
    fake.queries.lock().unwrap().push(params.query);
    if let Some(status) = fake.failures.lock().unwrap().pop() {
        let body = json!({ "status": "error", "errorType": "unavailable", "error": "not ready" });
        return (StatusCode::from_u16(status).unwrap(), axum::Json(body)).into_response();
    }
    let result: Vec<Value> = fake
        .samples
        .lock()
        .unwrap()
        .iter()
        .map(|(labels, value)| json!({ "metric": labels, "value": [1764936000.0, value.to_string()] }))
        .collect();
    axum::Json(json!({ "status": "success", "data": { "resultType": "vector", "result": result } }))
        .into_response()
}

impl FakePrometheus {
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let fake = FakePrometheus { base, ..FakePrometheus::default() };
        let app = Router::new().route("/api/v1/query", get(query)).with_state(fake.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        fake
    }

    /// A `kube_resourcequota` "used" sample of `namespace`.
    pub fn used(&self, namespace: &str, resource: &str, value: f64) {
        let labels = json!({ "namespace": namespace, "resource": resource });
        self.samples.lock().unwrap().push((labels, value));
    }

    pub fn clear(&self) {
        self.samples.lock().unwrap().clear();
    }

    pub fn fail_with(&self, status: u16) {
        self.failures.lock().unwrap().push(status);
    }
}
