//! Usage against quota: the `read_usage` job reads kube-state-metrics' `kube_resourcequota`
//! from each site's Prometheus (a double that speaks the query API's JSON) and records what
//! each project uses; project, department and field views show it beside the reservation.

use std::path::Path;

use infrahub::config::Mode;
use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::PgPool;

use crate::console::Browser;
use crate::helpers::{PASSWORD, TestApp};
use crate::prometheus_fake::FakePrometheus;

const GIB: f64 = 1024.0 * 1024.0 * 1024.0;

async fn app(pool: &PgPool, repo: &Path, prometheus: &FakePrometheus) -> TestApp {
    let (repo, base) = (repo.to_owned(), prometheus.base.clone());
    let app = TestApp::spawn_with(pool.clone(), Mode::Serve, move |c| {
        c.delivery.git.path = repo;
        c.usage.prometheus.insert("fra".to_owned(), base);
        // A retry's wait is drawn from [base/2, base]: from an hour it never falls due inside
        // the same round of due jobs (with the full jitter of before, drawn from [0, 2 s], a
        // CI run saw it run 20 ms later).
        let kind = c.workers.kinds.entry("read_usage".to_owned()).or_default();
        kind.backoff_base_ms = Some(3_600_000);
        kind.backoff_max_secs = Some(3_600);
    })
    .await;
    app.give_quota(16, 64).await;
    app
}

async fn active(app: &TestApp, lead: &str, name: &str, tier: &str) -> String {
    let body =
        json!({ "name": name, "site": "fra", "sla_type": "bronze", "performance_tier": tier });
    let created = app.post("/api/v1/projects", lead, body).await.expect(StatusCode::ACCEPTED, None);
    let id = created["id"].as_str().unwrap().to_owned();
    app.project_becomes(lead, &id, "active").await;
    id
}

/// Starts `read_usage` as a center admin would and runs it; its job.
async fn read(app: &TestApp) -> Value {
    let admin = app.admin_token().await;
    let started = app
        .post("/api/v1/admin/jobs", &admin, json!({ "kind": "read_usage" }))
        .await
        .expect(StatusCode::ACCEPTED, None);
    app.run_due_jobs().await;
    let job = format!("/api/v1/jobs/{}", started["job_id"].as_str().unwrap());
    app.get(&job, &admin).await.expect(StatusCode::OK, None)
}

/// As if project `id` had stayed under half of its quota for 31 days.
async fn under_half_for_31_days(pool: &PgPool, id: &str) {
    sqlx::query(
        "UPDATE projects SET under_half_since = now() - interval '31 days' WHERE id = $1::uuid",
    )
    .bind(id)
    .execute(pool)
    .await
    .unwrap();
}

async fn project(app: &TestApp, token: &str, id: &str) -> Value {
    app.get(&format!("/api/v1/projects/{id}"), token).await.expect(StatusCode::OK, None)
}

#[sqlx::test]
async fn what_projects_use_is_read_and_shown_beside_their_quota(pool: PgPool) {
    let prometheus = FakePrometheus::start().await;
    let dir = tempfile::tempdir().unwrap();
    let app = app(&pool, &dir.path().join("gitops"), &prometheus).await;
    let lead = app.team_lead_token().await;
    let web = active(&app, &lead, "web", "regular").await; // 2 CPU, 8 GB
    let api = active(&app, &lead, "api", "high").await; // 4 CPU, 16 GB
    assert_eq!(project(&app, &lead, &web).await["used_cpu"], Value::Null, "not read yet");
    prometheus.used("shop-web", "requests.cpu", 1.5);
    prometheus.used("shop-web", "requests.memory", 6.0 * GIB);
    prometheus.used("shop-api", "requests.cpu", 0.5);
    prometheus.used("shop-api", "requests.memory", GIB);
    prometheus.used("kube-system", "requests.cpu", 3.0);
    let job = read(&app).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    assert_eq!(job["result"][0]["namespaces"], 3);
    assert_eq!(job["result"][0]["projects"], 2, "kube-system is none of InfraHub's");
    let query = prometheus.queries.lock().unwrap()[0].clone();
    assert!(query.contains("kube_resourcequota") && query.contains("type=\"used\""), "{query}");
    assert!(query.starts_with("max by (namespace, resource)"), "replicas do not add up: {query}");
    assert!(query.starts_with("max by (namespace, resource)"), "replicas do not add up: {query}");

    let web_now = project(&app, &lead, &web).await;
    assert_eq!(
        (web_now["used_cpu"].as_f64(), web_now["used_ram_gb"].as_f64()),
        (Some(1.5), Some(6.0))
    );
    assert_eq!(web_now["under_half_since"], Value::Null, "uses more than half");
    let api_now = project(&app, &lead, &api).await;
    assert!(api_now["under_half_since"].is_string(), "under half of 4 CPU and 16 GB: {api_now}");
    assert_eq!(api_now["oversized"], false, "not for 30 days yet");

    let quota = app
        .get(&format!("/api/v1/departments/{}/quota", app.org.dept), &lead)
        .await
        .expect(StatusCode::OK, None);
    assert_eq!(quota["sites"][0]["used"], json!({ "cpu": 6, "ram_gb": 24 }), "reserved");
    assert_eq!(quota["sites"][0]["in_use"], json!({ "cpu": 2.0, "ram_gb": 7.0 }), "used");
    let field_admin = app.field_admin_token().await;
    let capacity = app
        .get(&format!("/api/v1/fields/{}/capacity", app.org.field), &field_admin)
        .await
        .expect(StatusCode::OK, None);
    assert_eq!(capacity["sites"][0]["reserved"], json!({ "cpu": 6, "ram_gb": 24 }));
    assert_eq!(capacity["sites"][0]["in_use"], json!({ "cpu": 2.0, "ram_gb": 7.0 }));

    // Under half for 30 days: a smaller tier would do. Then it grows: the hint goes.
    under_half_for_31_days(&pool, &api).await;
    let since = project(&app, &lead, &api).await["under_half_since"].clone();
    read(&app).await;
    let kept = project(&app, &lead, &api).await;
    assert_eq!(kept["under_half_since"], since, "still under half: the start is kept");
    assert_eq!(kept["oversized"], true);
    let mut browser = Browser::new(&app.base);
    browser.login("shop-lead", PASSWORD).await;
    let page = browser.get(&format!("/projects/{api}")).await;
    assert!(page.html.contains("Actually in use") && page.html.contains("a smaller tier would do"));
    let dashboard = browser.get("/projects").await;
    assert!(dashboard.html.contains("Actually in use: 2.0 CPU, 7.0 GB RAM"), "{}", dashboard.html);
    let mut admin = Browser::new(&app.base);
    admin.login(&app.org.field_admin.username, PASSWORD).await;
    let capacity = admin.get("/capacity").await;
    assert!(capacity.html.contains("actually use 2.0 CPU, 7.0 GB RAM"), "{}", capacity.html);
    prometheus.clear();
    prometheus.used("shop-api", "requests.cpu", 3.0);
    read(&app).await;
    let grown = project(&app, &lead, &api).await;
    assert_eq!(
        (grown["oversized"].as_bool(), grown["under_half_since"].is_null()),
        (Some(false), true)
    );
    assert_eq!(grown["used_ram_gb"].as_f64(), Some(0.0));
    let gone = project(&app, &lead, &web).await;
    assert_eq!(gone["used_cpu"], Value::Null, "no longer reported: no reading");
    assert_eq!(gone["usage_at"], Value::Null);
    // A resize starts the measure again: the smaller tier is not flagged at once.
    under_half_for_31_days(&pool, &api).await;
    assert_eq!(project(&app, &lead, &api).await["oversized"], true);
    let resize = json!({ "performance_tier": "regular" });
    app.call(reqwest::Method::PATCH, &format!("/api/v1/projects/{api}"), Some(&lead), Some(resize))
        .await
        .expect(StatusCode::ACCEPTED, None);
    assert_eq!(app.project_becomes(&lead, &api, "active").await["oversized"], false);
    let gone = project(&app, &lead, &web).await;
    assert_eq!(
        (gone["used_cpu"].as_f64(), gone["usage_at"].is_null()),
        (None, true),
        "no longer reported: no reading"
    );
    // A resize starts the measure again: the smaller tier is not flagged at once.
    sqlx::query(
        "UPDATE projects SET under_half_since = now() - interval '31 days' WHERE id = $1::uuid",
    )
    .bind(&web)
    .execute(&pool)
    .await
    .unwrap();
    let resize = json!({ "performance_tier": "high" });
    app.call(reqwest::Method::PATCH, &format!("/api/v1/projects/{web}"), Some(&lead), Some(resize))
        .await
        .expect(StatusCode::ACCEPTED, None);
    assert_eq!(app.project_becomes(&lead, &web, "active").await["oversized"], false);
}

#[sqlx::test]
async fn an_unavailable_prometheus_retries_and_a_refusal_fails(pool: PgPool) {
    let prometheus = FakePrometheus::start().await;
    let dir = tempfile::tempdir().unwrap();
    let app = app(&pool, &dir.path().join("gitops"), &prometheus).await;
    prometheus.fail_with(503);
    let job = read(&app).await;
    assert_eq!(job["status"], "retrying", "{job}");
    assert!(job["errors"][0]["error"].as_str().unwrap().contains("503"), "{job}");
    app.run_jobs().await;
    prometheus.fail_with(400);
    let job = read(&app).await;
    assert_eq!(job["status"], "failed", "a bad query is not retried: {job}");
    assert!(job["errors"][0]["error"].as_str().unwrap().contains("not ready"), "{job}");
}

#[sqlx::test]
async fn without_prometheus_nothing_is_read(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let job = read(&app).await;
    assert_eq!((job["status"].as_str(), &job["result"]), (Some("succeeded"), &json!([])));
}
