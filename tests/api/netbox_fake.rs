//! A NetBox double: `GET /api/dcim/devices/` answering NetBox's JSON shape (`count`, `next`,
//! `previous`, `results`; devices with `site`, `role`, `status` objects and `custom_fields`),
//! limit/offset paginated with absolute `next` links, filtered by role, site and status, behind
//! a token. Scripted faults: 500s, slow answers, a `next` link to another host, and the
//! [`Faults`] every double takes (garbage, a closed connection, ...).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};
use tokio::net::TcpListener;

use crate::faults::{Faults, inject};

#[derive(Default)]
pub struct Script {
    pub devices: Vec<Value>,
    /// The exact `Authorization` header to accept.
    pub authorization: String,
    /// Answer this many requests with 500 first.
    pub fail_next: u32,
    /// Wait this long before answering.
    pub delay: Duration,
    /// Put this origin in `next` links instead of our own.
    pub next_origin: Option<String>,
    /// Every request's path and query, in order.
    pub requests: Vec<String>,
    /// The devices (by index) that the last filter matched, so paging through 50,000 devices
    /// filters them once, not once per page; [`FakeNetbox::set`] forgets it.
    matched: Option<(String, Vec<usize>)>,
}

#[derive(Clone)]
pub struct FakeNetbox {
    pub base: String,
    pub script: Arc<Mutex<Script>>,
    pub faults: Faults,
}

impl FakeNetbox {
    pub async fn start(devices: Vec<Value>, authorization: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let script = Arc::new(Mutex::new(Script {
            devices,
            authorization: authorization.to_owned(),
            ..Script::default()
        }));
        let faults = Faults::default();
        let fake = FakeNetbox { base: base.clone(), script, faults: faults.clone() };
        let app = Router::new()
            .route("/api/dcim/devices/", get(devices_page))
            .layer(axum::middleware::from_fn_with_state(faults, inject))
            .with_state(fake.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        fake
    }

    pub fn requests(&self) -> Vec<String> {
        self.script.lock().unwrap().requests.clone()
    }

    pub fn set(&self, change: impl FnOnce(&mut Script)) {
        let mut script = self.script.lock().unwrap();
        script.matched = None;
        change(&mut script);
    }
}

/// A device as NetBox 4 serialises it.
pub fn device(id: i64, name: &str, site: &str, cpu: Value, ram: Value) -> Value {
    json!({
        "id": id,
        "url": format!("http://netbox.invalid/api/dcim/devices/{id}/"),
        "display": name,
        "name": name,
        "device_type": { "id": 7, "manufacturer": { "id": 1, "name": "Dell", "slug": "dell" }, "model": "PowerEdge R750", "slug": "r750" },
        "role": { "id": 3, "url": "http://netbox.invalid/api/dcim/device-roles/3/", "display": "Server", "name": "Server", "slug": "server" },
        "serial": format!("SN{id:05}"),
        "site": { "id": 1, "url": "http://netbox.invalid/api/dcim/sites/1/", "display": site, "name": site, "slug": site },
        "status": { "value": "active", "label": "Active" },
        "custom_fields": { "cpu_cores": cpu, "ram_gb": ram, "warranty_end": "2029-01-01" },
        "tags": [],
        "created": "2026-01-01T00:00:00Z",
        "last_updated": "2026-06-01T00:00:00Z"
    })
}

async fn devices_page(
    State(fake): State<FakeNetbox>,
    headers: HeaderMap,
    Query(query): Query<Vec<(String, String)>>,
    uri: axum::http::Uri,
) -> Response {
    let (delay, fail, authorized) = {
        let mut script = fake.script.lock().unwrap();
        script.requests.push(uri.to_string());
        let authorized = headers.get("authorization").and_then(|v| v.to_str().ok())
            == Some(script.authorization.as_str());
        let fail = script.fail_next > 0;
        if fail {
            script.fail_next -= 1;
        }
        (script.delay, fail, authorized)
    };
    tokio::time::sleep(delay).await;
    if !authorized {
        return (StatusCode::UNAUTHORIZED, axum::Json(json!({ "detail": "Invalid v2 token" })))
            .into_response();
    }
    if fail {
        return (StatusCode::INTERNAL_SERVER_ERROR, "<h1>Server Error (500)</h1>").into_response();
    }
    let param = |name: &str| {
        query.iter().filter(|(k, _)| k == name).map(|(_, v)| v.clone()).collect::<Vec<_>>()
    };
    let limit: usize = param("limit").first().and_then(|v| v.parse().ok()).unwrap_or(50).min(1000);
    let offset: usize = param("offset").first().and_then(|v| v.parse().ok()).unwrap_or(0);
    let (roles, sites, statuses) = (param("role"), param("site"), param("status"));
    let mut script = fake.script.lock().unwrap();
    let filter = format!("{roles:?}{sites:?}{statuses:?}");
    if script.matched.as_ref().is_none_or(|(key, _)| *key != filter) {
        let matching = script
            .devices
            .iter()
            .enumerate()
            .filter(|(_, d)| {
                roles.is_empty() || roles.iter().any(|r| d["role"]["slug"] == r.as_str())
            })
            .filter(|(_, d)| {
                sites.is_empty() || sites.iter().any(|s| d["site"]["slug"] == s.as_str())
            })
            .filter(|(_, d)| {
                statuses.is_empty() || statuses.iter().any(|s| d["status"]["value"] == s.as_str())
            })
            .map(|(i, _)| i)
            .collect();
        script.matched = Some((filter, matching));
    }
    let matching = script.matched.as_ref().map(|(_, m)| m.as_slice()).unwrap_or_default();
    let count = matching.len();
    let results: Vec<&Value> =
        matching.iter().skip(offset).take(limit).map(|&i| &script.devices[i]).collect();
    let origin = script.next_origin.clone().unwrap_or_else(|| fake.base.clone());
    let link = |offset: usize| {
        let mut url = url::Url::parse(&format!("{origin}/api/dcim/devices/")).unwrap();
        {
            let mut pairs = url.query_pairs_mut();
            for (k, v) in query.iter().filter(|(k, _)| k != "limit" && k != "offset") {
                pairs.append_pair(k, v);
            }
            pairs.append_pair("limit", &limit.to_string());
            pairs.append_pair("offset", &offset.to_string());
        }
        url.to_string()
    };
    let next = (offset + limit < count).then(|| link(offset + limit));
    let previous = (offset > 0).then(|| link(offset.saturating_sub(limit)));
    axum::Json(json!({ "count": count, "next": next, "previous": previous, "results": results }))
        .into_response()
}
