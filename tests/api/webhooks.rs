//! Webhooks: center admins manage them; the events they want are delivered as durable
//! `deliver_webhook` jobs, signed with HMAC-SHA256, retried on 5xx, failed for good on other
//! refusals; generic JSON or Slack's form. A receiver double records what arrives.

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode as AxumStatus};
use axum::routing::post;
use hmac::{Hmac, Mac};
use infrahub::app::Actor;
use infrahub::app::inventory::sync;
use infrahub::clients::inventory::Netbox;
use infrahub::config::{Config, Mode, NetboxConfig, Secret};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sha2::Sha256;
use sqlx::PgPool;

use crate::helpers::{Answer, TestApp};
use crate::netbox_fake::{FakeNetbox, device};

/// What the receiver got: headers and body of each request.
#[derive(Clone, Default)]
struct Receiver {
    got: Arc<Mutex<Vec<(HeaderMap, Bytes)>>>,
    /// The statuses to answer with, in turn; then 200.
    answers: Arc<Mutex<Vec<u16>>>,
}

impl Receiver {
    async fn start(answers: &[u16]) -> (Self, String) {
        let receiver = Receiver::default();
        receiver.answers.lock().unwrap().extend(answers.iter().rev());
        let state = receiver.clone();
        let app = Router::new().route(
            "/hook",
            post(move |headers: HeaderMap, body: Bytes| {
                let state = state.clone();
                async move {
                    state.got.lock().unwrap().push((headers, body));
                    let status = state.answers.lock().unwrap().pop().unwrap_or(200);
                    AxumStatus::from_u16(status).unwrap()
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (receiver, url)
    }

    fn bodies(&self) -> Vec<Value> {
        self.got.lock().unwrap().iter().map(|(_, b)| serde_json::from_slice(b).unwrap()).collect()
    }

    fn count(&self) -> usize {
        self.got.lock().unwrap().len()
    }
}

const SECRET: &str = "a-secret-of-enough-length";

fn verify(headers: &HeaderMap, body: &[u8], secret: &str) -> bool {
    let timestamp = headers["x-infrahub-timestamp"].to_str().unwrap();
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{timestamp}.").as_bytes());
    mac.update(body);
    let hex: String = mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect();
    headers["x-infrahub-signature"].to_str().unwrap() == format!("sha256={hex}")
}

async fn hook(app: &TestApp, admin: &str, body: Value) -> Answer {
    app.post("/api/v1/admin/webhooks", admin, body).await
}

async fn deliveries(pool: &PgPool) -> Vec<(String, i32)> {
    sqlx::query_as(
        "SELECT status, attempts FROM jobs WHERE kind = 'deliver_webhook' ORDER BY created_at",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

fn gold_needs_approval(config: &mut Config) {
    for entry in config.catalog.0.get_mut("gold").unwrap().values_mut() {
        entry.requires_approval = true;
    }
}

#[sqlx::test]
async fn center_admins_manage_webhooks_whose_secret_is_shown_once(pool: PgPool) {
    let app = TestApp::spawn(pool.clone()).await;
    let admin = app.admin_token().await;
    let created = hook(&app, &admin, json!({ "name": "ops", "url": "https://hooks.example/x" }))
        .await
        .expect(StatusCode::CREATED, None);
    let secret = created["secret"].as_str().unwrap().to_owned();
    assert_eq!(secret.len(), 48, "a generated secret");
    assert_eq!(
        (created["format"].as_str(), created["enabled"].as_bool()),
        (Some("json"), Some(true))
    );
    assert_eq!(created["events"], json!([]), "all events");
    let id = created["id"].as_str().unwrap().to_owned();
    let listed = app.get("/api/v1/admin/webhooks", &admin).await.expect(StatusCode::OK, None);
    assert!(!listed.to_string().contains(&secret), "{listed}");
    assert_eq!(listed["items"][0]["name"], "ops");

    for (body, field) in [
        (json!({ "name": "x", "url": "ftp://example" }), "url"),
        (json!({ "name": "x", "url": "HTTPS://example.com" }), "url"),
        (json!({ "name": "x", "url": " https://example.com" }), "url"),
        (json!({ "name": "x", "url": "https://user:pw@example.com" }), "url"),
        (
            json!({ "name": "y", "url": "https://e.example", "events": ["project.exploded"] }),
            "events",
        ),
        (json!({ "name": "z", "url": "https://e.example", "secret": "short" }), "secret"),
        (json!({ "name": "Bad Name", "url": "https://e.example" }), "name"),
    ] {
        let refused = hook(&app, &admin, body).await.expect(StatusCode::UNPROCESSABLE_ENTITY, None);
        assert_eq!(refused["error"]["details"]["field"], field, "{refused}");
    }
    hook(&app, &admin, json!({ "name": "ops", "url": "https://e.example" }))
        .await
        .expect(StatusCode::CONFLICT, Some("already_exists"));
    let field_admin = app.field_admin_token().await;
    hook(&app, &field_admin, json!({ "name": "mine", "url": "https://e.example" }))
        .await
        .expect(StatusCode::FORBIDDEN, Some("forbidden"));
    app.get("/api/v1/admin/webhooks", &field_admin).await.expect(StatusCode::FORBIDDEN, None);

    let path = format!("/api/v1/admin/webhooks/{id}");
    let change = json!({ "events": ["approval.requested", "approval.requested"], "enabled": false,
                         "secret": "another-secret-that-is-long" });
    let changed = app
        .call(Method::PATCH, &path, Some(&admin), Some(change))
        .await
        .expect(StatusCode::OK, None);
    assert_eq!(changed["events"], json!(["approval.requested"]));
    assert_eq!(changed["enabled"], false);
    app.call(Method::DELETE, &path, Some(&admin), None).await.expect(StatusCode::NO_CONTENT, None);
    app.get(&path, &admin).await.expect(StatusCode::NOT_FOUND, Some("not_found"));
    let leaked: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM audit_events WHERE before::text LIKE '%' || $1 || '%'
            OR after::text LIKE '%' || $1 || '%' OR after::text LIKE '%another-secret%'",
    )
    .bind(&secret)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(leaked, 0, "no secret in the audit trail");
    let audited: i64 =
        sqlx::query_scalar("SELECT count(*) FROM audit_events WHERE subject_type = 'webhook'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(audited, 3, "create, update, delete");
}

#[sqlx::test]
async fn approvals_are_delivered_signed_and_retried_until_taken(pool: PgPool) {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("gitops");
    let app = TestApp::spawn_with(pool.clone(), Mode::Serve, move |c| {
        c.delivery.git.path = repo;
        gold_needs_approval(c);
        // The retry's wait is drawn from [base/2, base]: from an hour it never falls due
        // within the first round of jobs.
        let kind = c.workers.kinds.entry("deliver_webhook".to_owned()).or_default();
        kind.backoff_base_ms = Some(3_600_000);
        kind.backoff_max_secs = Some(3_600);
    })
    .await;
    app.give_quota(40, 160).await;
    let (receiver, url) = Receiver::start(&[503]).await;
    let admin = app.admin_token().await;
    let events = json!(["approval.requested", "approval.decided"]);
    hook(
        &app,
        &admin,
        json!({ "name": "approvers", "url": url, "events": events, "secret": SECRET }),
    )
    .await
    .expect(StatusCode::CREATED, None);
    let lead = app.team_lead_token().await;
    let body = json!({ "name": "ledger", "site": "fra", "sla_type": "gold", "performance_tier": "regular" });
    let created = app.post("/api/v1/projects", &lead, body).await.expect(StatusCode::CREATED, None);
    let id = created["id"].as_str().unwrap();
    let bronze = json!({ "name": "web", "site": "fra", "sla_type": "bronze", "performance_tier": "regular" });
    app.post("/api/v1/projects", &lead, bronze).await.expect(StatusCode::ACCEPTED, None);
    app.run_due_jobs().await;
    assert_eq!(deliveries(&pool).await, [("retrying".to_owned(), 1)], "503: tried again later");
    app.run_jobs().await;
    assert_eq!(deliveries(&pool).await, [("succeeded".to_owned(), 2)]);
    {
        let got = receiver.got.lock().unwrap();
        assert_eq!(got.len(), 2);
        let (first, second) = (&got[0], &got[1]);
        assert_eq!(
            first.0["x-infrahub-delivery"], second.0["x-infrahub-delivery"],
            "one delivery id"
        );
        assert_eq!(second.0["x-infrahub-event"], "approval.requested");
        assert!(verify(&second.0, &second.1, SECRET), "signed with the webhook's secret");
        assert!(!verify(&second.0, &second.1, "another-secret-entirely"));
    }
    let sent = &receiver.bodies()[1];
    assert_eq!(sent["event"], "approval.requested");
    assert_eq!(sent["data"]["name"], "ledger");
    assert_eq!(sent["data"]["project_id"], id);
    assert!(sent["text"].as_str().unwrap().contains("gold/regular"), "{sent}");

    let field_admin = app.field_admin_token().await;
    app.call(Method::POST, &format!("/api/v1/projects/{id}/approve"), Some(&field_admin), None)
        .await
        .expect(StatusCode::ACCEPTED, None);
    app.run_jobs().await;
    let bodies = receiver.bodies();
    assert_eq!(bodies.len(), 3, "nothing about the bronze project or provisioning");
    assert_eq!(bodies[2]["event"], "approval.decided");
    assert!(bodies[2]["text"].as_str().unwrap().contains("approved"), "{}", bodies[2]);
}

#[sqlx::test]
async fn slack_gets_a_sentence_and_a_refusal_fails_the_delivery_for_good(pool: PgPool) {
    let app = TestApp::spawn(pool.clone()).await;
    let (receiver, url) = Receiver::start(&[410]).await;
    let admin = app.admin_token().await;
    let created = hook(&app, &admin, json!({ "name": "chat", "url": url, "format": "slack" }))
        .await
        .expect(StatusCode::CREATED, None);
    let ping = format!("/api/v1/admin/webhooks/{}/ping", created["id"].as_str().unwrap());
    app.call(Method::POST, &ping, Some(&admin), None).await.expect(StatusCode::ACCEPTED, None);
    app.run_jobs().await;
    assert_eq!(deliveries(&pool).await, [("failed".to_owned(), 1)], "410 is not retried");
    app.call(Method::POST, &ping, Some(&admin), None).await.expect(StatusCode::ACCEPTED, None);
    app.run_jobs().await;
    let bodies = receiver.bodies();
    assert_eq!(
        bodies[1],
        json!({ "text": format!("InfraHub: a test of webhook chat by {}", app.org.admin.username) })
    );
    let error: String = sqlx::query_scalar(
        "SELECT errors -> 0 ->> 'error' FROM jobs WHERE kind = 'deliver_webhook' ORDER BY created_at LIMIT 1",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(error.contains("HTTP 410"), "{error}");
}

#[sqlx::test]
async fn disabled_and_deleted_webhooks_get_nothing(pool: PgPool) {
    let app = TestApp::spawn(pool.clone()).await;
    app.give_quota(4, 16).await;
    let (receiver, url) = Receiver::start(&[]).await;
    let admin = app.admin_token().await;
    let off = json!({ "name": "off", "url": url, "enabled": false });
    hook(&app, &admin, off).await.expect(StatusCode::CREATED, None);
    let on = hook(&app, &admin, json!({ "name": "on", "url": url, "events": ["quota.above_90"] }))
        .await
        .expect(StatusCode::CREATED, None);
    // 4 of 4 CPU: above 90 % of the quota, once.
    let lead = app.team_lead_token().await;
    let body =
        json!({ "name": "web", "site": "fra", "sla_type": "bronze", "performance_tier": "high" });
    app.post("/api/v1/projects", &lead, body).await.expect(StatusCode::ACCEPTED, None);
    assert_eq!(deliveries(&pool).await.len(), 1, "the disabled webhook gets no job");
    app.call(
        Method::DELETE,
        &format!("/api/v1/admin/webhooks/{}", on["id"].as_str().unwrap()),
        Some(&admin),
        None,
    )
    .await
    .expect(StatusCode::NO_CONTENT, None);
    app.run_jobs().await;
    assert_eq!(receiver.count(), 0, "deleted before its delivery ran");
    let result: Value =
        sqlx::query_scalar("SELECT result FROM jobs WHERE kind = 'deliver_webhook'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(result["skipped"], "the webhook was deleted");
}

#[sqlx::test]
async fn quota_near_its_limit_failures_and_capacity_deficits_are_told(pool: PgPool) {
    let app = TestApp::spawn(pool.clone()).await;
    app.give_quota(10, 40).await;
    let (receiver, url) = Receiver::start(&[]).await;
    let admin = app.admin_token().await;
    hook(&app, &admin, json!({ "name": "all", "url": url }))
        .await
        .expect(StatusCode::CREATED, None);
    let lead = app.team_lead_token().await;
    let ask = |name: &str, tier: &str| json!({ "name": name, "site": "fra", "sla_type": "bronze", "performance_tier": tier });
    // 4 of 10 CPU, then 8: not yet; then 10: above 90 %, told once.
    for (name, tier) in [("a", "high"), ("b", "high"), ("c", "regular")] {
        app.post("/api/v1/projects", &lead, ask(name, tier))
            .await
            .expect(StatusCode::ACCEPTED, None);
    }
    // A provisioning cancelled: the project failed.
    let failing = app.post("/api/v1/projects", &lead, ask("d", "regular")).await;
    assert_eq!(failing.status, StatusCode::CONFLICT, "over quota");
    let jobs: Vec<(String,)> = sqlx::query_as(
        "SELECT id::text FROM jobs WHERE kind = 'provision_namespace' ORDER BY created_at LIMIT 1",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    app.call(Method::POST, &format!("/api/v1/jobs/{}/cancel", jobs[0].0), Some(&admin), None)
        .await
        .expect(StatusCode::OK, None);
    // A server of the field vanishes from the inventory: the quota stands on nothing.
    const TOKEN: &str = "nbt_4f3a2b1c.9f8e7d6c5b4a39281706f5e4d3c2b1a0";
    let fleet = vec![device(1, "fra-1", "fra", json!(32), json!(128))];
    let fake = FakeNetbox::start(fleet, &format!("Bearer {TOKEN}")).await;
    let config = NetboxConfig {
        url: fake.base.clone(),
        page_size: 1000,
        retries: 3,
        timeout_secs: 5,
        ..NetboxConfig::default()
    };
    infrahub::install_crypto_provider();
    let source = Netbox::new(&config, Secret::new(TOKEN)).unwrap();
    sync(&app.ctx, &source, &Actor::system("test"), false).await.unwrap();
    sqlx::query("UPDATE servers SET field_id = $1")
        .bind(app.org.field)
        .execute(&pool)
        .await
        .unwrap();
    fake.set(|s| s.devices.clear());
    sync(&app.ctx, &source, &Actor::system("test"), true).await.unwrap();
    app.run_jobs().await;
    let events: Vec<String> =
        receiver.bodies().iter().map(|b| b["event"].as_str().unwrap().to_owned()).collect();
    let count = |name: &str| events.iter().filter(|e| *e == name).count();
    assert_eq!(count("quota.above_90"), 1, "{events:?}");
    assert_eq!(count("project.failed"), 1, "{events:?}");
    assert_eq!(count("capacity.deficit"), 1, "{events:?}");
    let deficit = receiver.bodies().into_iter().find(|b| b["event"] == "capacity.deficit").unwrap();
    assert_eq!(deficit["data"]["deficit"]["cpu"], 10, "{deficit}");
    assert!(deficit["text"].as_str().unwrap().contains("shop short by 10 CPU"), "{deficit}");
}

#[sqlx::test]
async fn the_console_adds_tests_switches_and_removes_webhooks(pool: PgPool) {
    use crate::console::Browser;
    let app = TestApp::spawn(pool.clone()).await;
    let (receiver, url) = Receiver::start(&[]).await;
    let mut browser = Browser::new(&app.base);
    browser.login(&app.org.admin.username, crate::helpers::PASSWORD).await;
    let page = browser.get("/webhooks").await;
    assert!(page.html.contains("No webhooks yet"), "{}", page.html);
    let csrf = page.hidden("_csrf");
    let form = [
        ("name", "ops"),
        ("url", url.as_str()),
        ("format", "json"),
        ("events", "ping"),
        ("events", "project.failed"),
        ("_csrf", csrf.as_str()),
    ];
    let added = browser.post("/webhooks", &form).await;
    assert_eq!(added.status, StatusCode::OK, "{}", added.html);
    assert!(added.html.contains("shown this once"), "{}", added.html);
    assert!(added.html.contains("ping, project.failed"), "{}", added.html);
    let bad =
        browser.post("/webhooks", &[("name", "bad"), ("url", "nope"), ("_csrf", &csrf)]).await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", bad.html);
    let id: String =
        sqlx::query_scalar("SELECT id::text FROM webhooks").fetch_one(&pool).await.unwrap();
    let pinged = browser.post(&format!("/webhooks/{id}/ping"), &[("_csrf", &csrf)]).await;
    assert_eq!(pinged.location.as_deref(), Some("/webhooks"));
    app.run_jobs().await;
    assert_eq!(receiver.bodies()[0]["event"], "ping");
    browser.post(&format!("/webhooks/{id}/toggle"), &[("_csrf", &csrf)]).await;
    assert!(browser.get("/webhooks").await.html.contains("badge off"));
    browser.post(&format!("/webhooks/{id}/delete"), &[("_csrf", &csrf)]).await;
    assert!(browser.get("/webhooks").await.html.contains("No webhooks yet"));
    let mut lead = Browser::new(&app.base);
    lead.login("shop-lead", crate::helpers::PASSWORD).await;
    assert_eq!(lead.get("/webhooks").await.status, StatusCode::FORBIDDEN, "center admins only");
}

#[sqlx::test]
async fn owners_are_reminded_once_before_a_time_to_live_runs_out(pool: PgPool) {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("gitops");
    let app = TestApp::spawn_with(pool.clone(), Mode::Serve, move |c| {
        c.delivery.git.path = repo;
        c.deletion.remind_before_secs = 3600;
    })
    .await;
    app.give_quota(8, 32).await;
    let (receiver, url) = Receiver::start(&[]).await;
    let admin = app.admin_token().await;
    let events = json!(["project.expiring"]);
    hook(&app, &admin, json!({ "name": "ttl", "url": url, "events": events }))
        .await
        .expect(StatusCode::CREATED, None);
    let lead = app.team_lead_token().await;
    let ask = |name: &str, hours: i64| {
        let at = (chrono::Utc::now() + chrono::Duration::hours(hours)).to_rfc3339();
        json!({ "name": name, "site": "fra", "sla_type": "bronze", "performance_tier": "regular",
                "expires_at": at })
    };
    let soon = app.post("/api/v1/projects", &lead, ask("soon", 0)).await;
    assert_eq!(soon.status, StatusCode::UNPROCESSABLE_ENTITY, "now is not in the future");
    let soon = app
        .post("/api/v1/projects", &lead, ask("soon", 1))
        .await
        .expect(StatusCode::ACCEPTED, None);
    app.post("/api/v1/projects", &lead, ask("later", 48)).await.expect(StatusCode::ACCEPTED, None);
    app.run_jobs().await;
    let report = infrahub::app::projects::reconcile(&app.ctx, uuid::Uuid::now_v7()).await.unwrap();
    assert_eq!(report.reminded, ["shop-soon"], "only the one within the hour");
    app.run_jobs().await;
    let again = infrahub::app::projects::reconcile(&app.ctx, uuid::Uuid::now_v7()).await.unwrap();
    assert!(again.reminded.is_empty(), "once");
    let bodies = receiver.bodies();
    assert_eq!(bodies.len(), 1);
    assert_eq!(bodies[0]["event"], "project.expiring");
    assert_eq!(bodies[0]["data"]["project_id"], soon["id"]);
    assert!(bodies[0]["text"].as_str().unwrap().contains("time to live runs out"), "{}", bodies[0]);
}

#[sqlx::test]
async fn a_shrinking_resize_does_not_warn_and_growing_back_does(pool: PgPool) {
    let app = TestApp::spawn(pool.clone()).await;
    app.give_quota(10, 40).await;
    let (receiver, url) = Receiver::start(&[]).await;
    let admin = app.admin_token().await;
    let events = json!(["quota.above_90"]);
    hook(&app, &admin, json!({ "name": "q", "url": url, "events": events }))
        .await
        .expect(StatusCode::CREATED, None);
    let lead = app.team_lead_token().await;
    let mut ids = Vec::new();
    for (name, tier) in [("a", "high"), ("b", "high"), ("c", "regular")] {
        let body =
            json!({ "name": name, "site": "fra", "sla_type": "bronze", "performance_tier": tier });
        let created =
            app.post("/api/v1/projects", &lead, body).await.expect(StatusCode::ACCEPTED, None);
        ids.push(created["id"].as_str().unwrap().to_owned());
        app.run_jobs().await;
    }
    assert_eq!(receiver.count(), 1, "10 of 10 CPU: told once");
    // The same size again at 100 %: its old size counts as used before, nothing is crossed.
    let same = json!({ "performance_tier": "high" });
    let first = format!("/api/v1/projects/{}", ids[0]);
    app.call(Method::PATCH, &first, Some(&lead), Some(same))
        .await
        .expect(StatusCode::ACCEPTED, None);
    app.run_jobs().await;
    assert_eq!(receiver.count(), 1, "a resize to the same size crosses nothing");
    let resize = |tier: &str| json!({ "performance_tier": tier });
    let path = format!("/api/v1/projects/{}", ids[0]);
    for (tier, told) in [("regular", 1), ("high", 2)] {
        app.call(Method::PATCH, &path, Some(&lead), Some(resize(tier)))
            .await
            .expect(StatusCode::ACCEPTED, None);
        app.run_jobs().await;
        assert_eq!(receiver.count(), told, "after resizing to {tier}");
    }
}

/// A request refused over quota rolls back whole: the approval it would have asked for is not
/// announced (the announcement is written before the reservation is checked).
#[sqlx::test]
async fn a_request_refused_over_quota_announces_nothing(pool: PgPool) {
    let app = TestApp::spawn_with(pool.clone(), Mode::Serve, gold_needs_approval).await;
    app.give_quota(1, 1).await;
    let (_receiver, url) = Receiver::start(&[]).await;
    let admin = app.admin_token().await;
    let events = json!(["approval.requested"]);
    hook(
        &app,
        &admin,
        json!({ "name": "approvers", "url": url, "events": events, "secret": SECRET }),
    )
    .await
    .expect(StatusCode::CREATED, None);
    let lead = app.team_lead_token().await;
    let body = json!({ "name": "ledger", "site": "fra", "sla_type": "gold", "performance_tier": "regular" });
    app.post("/api/v1/projects", &lead, body)
        .await
        .expect(StatusCode::CONFLICT, Some("over_quota"));
    assert_eq!(deliveries(&pool).await, []);
    let projects: i64 =
        sqlx::query_scalar("SELECT count(*) FROM projects").fetch_one(&pool).await.unwrap();
    assert_eq!(projects, 0);

    sqlx::query("UPDATE department_quotas SET cpu_limit = 40, ram_gb_limit = 160")
        .execute(&pool)
        .await
        .unwrap();
    let body = json!({ "name": "ledger", "site": "fra", "sla_type": "gold", "performance_tier": "regular" });
    app.post("/api/v1/projects", &lead, body).await.expect(StatusCode::CREATED, None);
    assert_eq!(
        deliveries(&pool).await,
        [("queued".to_owned(), 0)],
        "once it fits, it is announced"
    );
}
