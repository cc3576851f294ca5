//! Outages of the systems InfraHub delivers to: GitLab and Argo CD doubles that answer 5xx,
//! hang, close the connection or answer garbage. Delivery and polling outlast an outage (by
//! time, not by a count of attempts), fail with a clear reason past their deadline, and never
//! wedge a worker.

use std::time::Duration;

use axum::http::StatusCode as Http;
use infrahub::config::{GitKind, Mode, Secret};
use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::PgPool;

use crate::argocd_fake::{FakeArgocd, application, resource};
use crate::faults::Fault;
use crate::gitlab_fake::FakeGitlab;
use crate::helpers::{TestApp, wait_until};

const GITLAB_TOKEN: &str = "glpat-outage-test";
const ARGO_TOKEN: &str = "argocd-outage-test";
const APP: &str = "infra-fra";

async fn gitlab_app(pool: &PgPool, gitlab: &FakeGitlab) -> TestApp {
    let base = gitlab.base.clone();
    let app = TestApp::spawn_with(pool.clone(), Mode::Serve, move |c| {
        c.delivery.git.kind = GitKind::Gitlab;
        c.delivery.gitlab.url = base;
        c.delivery.gitlab.project = "platform/gitops".to_owned();
        c.delivery.gitlab.token = Some(Secret::new(GITLAB_TOKEN));
        c.delivery.gitlab.timeout_secs = 1;
    })
    .await;
    app.give_quota(40, 160).await;
    app
}

async fn create(app: &TestApp, lead: &str, name: &str) -> Value {
    let body =
        json!({ "name": name, "site": "fra", "sla_type": "bronze", "performance_tier": "regular" });
    app.post("/api/v1/projects", lead, body).await.expect(StatusCode::ACCEPTED, None)
}

#[sqlx::test]
async fn a_gitlab_outage_of_many_attempts_is_outlasted(pool: PgPool) {
    let gitlab = FakeGitlab::start(GITLAB_TOKEN).await;
    let app = gitlab_app(&pool, &gitlab).await;
    gitlab.faults.push(Fault::Status(Http::BAD_GATEWAY), 6);
    gitlab.faults.push(Fault::Close, 2);
    gitlab.faults.push(Fault::Hang(Duration::from_secs(3)), 1);
    let lead = app.team_lead_token().await;
    let created = create(&app, &lead, "web").await;
    app.project_becomes(&lead, created["id"].as_str().unwrap(), "active").await;
    assert_eq!(gitlab.faults.left(), 0);
    let job = app.get(created["location"].as_str().unwrap(), &lead).await.body;
    assert_eq!(job["attempts"], 10, "nine failed attempts, then the one that got through: {job}");
    let errors: Vec<&str> =
        job["errors"].as_array().unwrap().iter().map(|e| e["error"].as_str().unwrap()).collect();
    assert!(errors[0].contains("502"), "{errors:?}");
    assert!(errors.iter().all(|e| !e.is_empty()));
    assert_eq!(gitlab.commits().len(), 1, "one commit in the end");
}

#[sqlx::test]
async fn past_its_deadline_an_outage_fails_the_project_with_the_last_reason(pool: PgPool) {
    let gitlab = FakeGitlab::start(GITLAB_TOKEN).await;
    let app = gitlab_app(&pool, &gitlab).await;
    gitlab.faults.push(Fault::Status(Http::SERVICE_UNAVAILABLE), 1_000);
    let lead = app.team_lead_token().await;
    let created = create(&app, &lead, "web").await;
    let id = created["id"].as_str().unwrap();
    app.run_job_rounds(3).await;
    let waiting = app.get(&format!("/api/v1/projects/{id}"), &lead).await.body;
    assert_eq!(waiting["status"], "provisioning", "an outage is waited out for a while");
    // As if the change had been made 31 minutes ago: its deadline is over.
    sqlx::query("UPDATE jobs SET created_at = now() - interval '31 minutes'")
        .execute(&pool)
        .await
        .unwrap();
    let failed = app.project_becomes(&lead, id, "failed").await;
    let reason = failed["failure_reason"].as_str().unwrap();
    assert!(reason.starts_with("gave up after 4 attempts over up to 1800s"), "{reason}");
    assert!(reason.contains("503"), "{reason}");
}

/// The Application with `namespaces` (and their quotas) Synced and Healthy.
fn synced_with(namespaces: &[&str]) -> Value {
    let resources = namespaces
        .iter()
        .flat_map(|ns| {
            [
                resource("Namespace", ns, "", "Synced", Some("Healthy")),
                resource("ResourceQuota", "infrahub-quota", ns, "Synced", None),
            ]
        })
        .collect();
    application(APP, "Synced", "Healthy", Some(("Succeeded", "successfully synced")), resources)
}

fn synced() -> Value {
    synced_with(&["shop-web"])
}

#[sqlx::test]
async fn argocd_answering_errors_or_closing_connections_is_waited_out(pool: PgPool) {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("gitops");
    let fake = FakeArgocd::start(APP, ARGO_TOKEN, vec![synced()]).await;
    fake.set(|s| s.tracks = Some(repo.clone()));
    fake.faults.push(Fault::Status(Http::INTERNAL_SERVER_ERROR), 5);
    fake.faults.push(Fault::Close, 2);
    let base = fake.base.clone();
    let app = TestApp::spawn_with(pool.clone(), Mode::Serve, move |c| {
        c.delivery.git.path = repo;
        c.argocd.url = base;
        c.argocd.token = Some(Secret::new(ARGO_TOKEN));
        c.argocd.apps.insert("fra".to_owned(), APP.to_owned());
        c.argocd.timeout_secs = 1;
    })
    .await;
    app.give_quota(40, 160).await;
    let lead = app.team_lead_token().await;
    let created = create(&app, &lead, "web").await;
    app.project_becomes(&lead, created["id"].as_str().unwrap(), "active").await;
    let poll: (i32, i32) = sqlx::query_as(
        "SELECT attempts, jsonb_array_length(errors) FROM jobs WHERE kind = 'poll_argocd'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(poll, (8, 7), "seven failed reads, each retried");
}

#[sqlx::test]
async fn argocd_answering_garbage_fails_the_project_with_a_clear_reason(pool: PgPool) {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("gitops");
    let fake = FakeArgocd::start(APP, ARGO_TOKEN, vec![synced()]).await;
    fake.faults.push(Fault::Garbage, 1);
    let base = fake.base.clone();
    let app = TestApp::spawn_with(pool.clone(), Mode::Serve, move |c| {
        c.delivery.git.path = repo;
        c.argocd.url = base;
        c.argocd.token = Some(Secret::new(ARGO_TOKEN));
        c.argocd.apps.insert("fra".to_owned(), APP.to_owned());
    })
    .await;
    app.give_quota(40, 160).await;
    let lead = app.team_lead_token().await;
    let created = create(&app, &lead, "web").await;
    let failed = app.project_becomes(&lead, created["id"].as_str().unwrap(), "failed").await;
    let reason = failed["failure_reason"].as_str().unwrap();
    assert!(reason.contains("application infra-fra is unreadable"), "{reason}");
}

/// With the daemon's own workers: a hanging Argo CD costs a client timeout per read, and
/// other projects' jobs keep going meanwhile.
#[sqlx::test]
async fn a_hanging_argocd_wedges_no_worker(pool: PgPool) {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("gitops");
    let fake =
        FakeArgocd::start(APP, ARGO_TOKEN, vec![synced_with(&["shop-web", "shop-api"])]).await;
    fake.set(|s| s.tracks = Some(repo.clone()));
    fake.faults.push(Fault::Hang(Duration::from_secs(5)), 3);
    let base = fake.base.clone();
    let app = TestApp::spawn_daemon(pool.clone(), Mode::Serve, move |c| {
        c.delivery.git.path = repo;
        c.argocd.url = base;
        c.argocd.token = Some(Secret::new(ARGO_TOKEN));
        c.argocd.apps.insert("fra".to_owned(), APP.to_owned());
        c.argocd.timeout_secs = 1;
        c.argocd.poll_interval_ms = 50;
        c.workers.poll_interval_ms = 50;
        let poll = c.workers.kinds.entry("poll_argocd".to_owned()).or_default();
        poll.backoff_base_ms = Some(50);
        poll.backoff_max_secs = Some(1);
    })
    .await;
    app.give_quota(40, 160).await;
    let lead = app.team_lead_token().await;
    let ids: Vec<String> = [create(&app, &lead, "web").await, create(&app, &lead, "api").await]
        .iter()
        .map(|c| c["id"].as_str().unwrap().to_owned())
        .collect();
    wait_until("both projects active", Duration::from_secs(60), || async {
        let mut active = true;
        for id in &ids {
            active &=
                app.get(&format!("/api/v1/projects/{id}"), &lead).await.body["status"] == "active";
        }
        active
    })
    .await;
    let timeouts: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM jobs, jsonb_array_elements(errors) e
          WHERE kind = 'poll_argocd' AND e->>'error' LIKE '%Argo CD at%'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(timeouts, 3, "each hang cost one read");
    app.stop().await;
}
