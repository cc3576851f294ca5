//! The lifecycle never strands a project: a job that ends in any way (failure, a worker lost
//! on its last attempt, cancellation) settles its project; the reconciler restarts work that
//! was lost anyway; center admins can force a stuck change on or out; and a superseded
//! delivery never writes.

use std::path::Path;

use infrahub::config::Mode;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sqlx::PgPool;
use uuid::Uuid;

use crate::helpers::TestApp;

async fn app(pool: &PgPool, repo: &Path) -> TestApp {
    let repo = repo.to_owned();
    let app =
        TestApp::spawn_with(pool.clone(), Mode::Serve, move |c| c.delivery.git.path = repo).await;
    app.give_quota(40, 160).await;
    app
}

/// Creates project `name` (bronze/regular) as the team lead; returns the 202 answer.
async fn create(app: &TestApp, lead: &str, name: &str) -> Value {
    let body =
        json!({ "name": name, "site": "fra", "sla_type": "bronze", "performance_tier": "regular" });
    app.post("/api/v1/projects", lead, body).await.expect(StatusCode::ACCEPTED, None)
}

async fn project(app: &TestApp, token: &str, id: &str) -> Value {
    app.get(&format!("/api/v1/projects/{id}"), token).await.expect(StatusCode::OK, None)
}

async fn job_status(pool: &PgPool, id: &str) -> String {
    sqlx::query_scalar("SELECT status FROM jobs WHERE id = $1::uuid")
        .bind(id)
        .fetch_one(pool)
        .await
        .unwrap()
}

#[sqlx::test]
async fn cancelling_a_provisioning_job_fails_its_project_and_retry_recovers(pool: PgPool) {
    let dir = tempfile::tempdir().unwrap();
    let app = app(&pool, &dir.path().join("gitops")).await;
    let lead = app.team_lead_token().await;
    let created = create(&app, &lead, "web").await;
    let id = created["id"].as_str().unwrap();
    let admin = app.admin_token().await;
    app.call(
        Method::POST,
        &format!("{}/cancel", created["location"].as_str().unwrap()),
        Some(&admin),
        None,
    )
    .await
    .expect(StatusCode::OK, None);
    let failed = project(&app, &lead, id).await;
    assert_eq!(failed["status"], "failed", "{failed}");
    assert_eq!(failed["failure_reason"], "cancelled by root");
    app.call(Method::POST, &format!("/api/v1/projects/{id}/retry"), Some(&lead), None)
        .await
        .expect(StatusCode::ACCEPTED, None);
    app.project_becomes(&lead, id, "active").await;
}

#[sqlx::test]
async fn a_worker_lost_on_the_last_attempt_fails_the_project_in_the_same_step(pool: PgPool) {
    let dir = tempfile::tempdir().unwrap();
    let app = app(&pool, &dir.path().join("gitops")).await;
    let lead = app.team_lead_token().await;
    let created = create(&app, &lead, "web").await;
    let (id, job) = (created["id"].as_str().unwrap(), created["job_id"].as_str().unwrap());
    // A worker claims the last attempt, then vanishes: its lease runs out.
    sqlx::query(
        "UPDATE jobs SET status = 'running', attempts = max_attempts, claim_seq = 1,
                         lease_owner = 'ghost:1:dead', lease_expires_at = now() - interval '1 second'
          WHERE id = $1::uuid",
    )
    .bind(job)
    .execute(&pool)
    .await
    .unwrap();
    let reaped = infrahub::app::jobs::reap_expired_leases(&app.ctx).await.unwrap();
    assert_eq!(reaped.len(), 1);
    assert_eq!(job_status(&pool, job).await, "failed");
    let failed = project(&app, &lead, id).await;
    assert_eq!(failed["status"], "failed", "{failed}");
    assert!(failed["failure_reason"].as_str().unwrap().contains("lease expired"), "{failed}");
}

#[sqlx::test]
async fn the_reconciler_restarts_work_that_no_job_carries_any_more(pool: PgPool) {
    let dir = tempfile::tempdir().unwrap();
    let app = app(&pool, &dir.path().join("gitops")).await;
    let lead = app.team_lead_token().await;
    let created = create(&app, &lead, "web").await;
    let (id, job) = (created["id"].as_str().unwrap(), created["job_id"].as_str().unwrap());
    // However it happened, the project's job is over and the project still waits on it.
    sqlx::query("UPDATE jobs SET status = 'succeeded', finished_at = now() WHERE id = $1::uuid")
        .bind(job)
        .execute(&pool)
        .await
        .unwrap();
    let report = infrahub::app::projects::reconcile(&app.ctx, Uuid::now_v7()).await.unwrap();
    assert_eq!(report.restarted, ["shop-web: provisioning"]);
    let restarted = project(&app, &lead, id).await;
    assert_ne!(restarted["last_job_id"].as_str(), Some(job), "a new job carries it on");
    let audited: i64 =
        sqlx::query_scalar("SELECT count(*) FROM audit_events WHERE action = 'project.restart'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(audited, 1);
    let again = infrahub::app::projects::reconcile(&app.ctx, Uuid::now_v7()).await.unwrap();
    assert!(again.restarted.is_empty(), "a live job is left alone");
    app.project_becomes(&lead, id, "active").await;
}

#[sqlx::test]
async fn center_admins_force_a_stuck_change_to_fail_or_to_run_again(pool: PgPool) {
    let dir = tempfile::tempdir().unwrap();
    let app = app(&pool, &dir.path().join("gitops")).await;
    let lead = app.team_lead_token().await;
    let admin = app.admin_token().await;
    let created = create(&app, &lead, "web").await;
    let (id, first_job) = (created["id"].as_str().unwrap(), created["job_id"].as_str().unwrap());
    let reason = json!({ "reason": "Git host rebuilt; the old job cannot finish" });
    let fail = format!("/api/v1/projects/{id}/force-fail");
    app.post(&fail, &lead, reason.clone()).await.expect(StatusCode::FORBIDDEN, Some("forbidden"));
    app.post(&fail, &admin, json!({ "reason": " " }))
        .await
        .expect(StatusCode::UNPROCESSABLE_ENTITY, Some("invalid_value"));
    let failed = app.post(&fail, &admin, reason.clone()).await.expect(StatusCode::OK, None);
    assert_eq!(failed["status"], "failed");
    assert_eq!(
        failed["failure_reason"],
        "failed by root: Git host rebuilt; the old job cannot finish"
    );
    assert_eq!(job_status(&pool, first_job).await, "cancelled");
    app.post(&fail, &admin, reason.clone()).await.expect(StatusCode::CONFLICT, Some("not_stuck"));

    let retried = app
        .post(&format!("/api/v1/projects/{id}/force-retry"), &admin, reason.clone())
        .await
        .expect(StatusCode::ACCEPTED, None);
    assert_eq!(retried["status"], "provisioning");
    app.project_becomes(&lead, id, "active").await;
    app.post(&format!("/api/v1/projects/{id}/force-retry"), &admin, reason)
        .await
        .expect(StatusCode::CONFLICT, Some("not_stuck"));
    let verbs: Vec<String> = sqlx::query_scalar(
        "SELECT action FROM audit_events WHERE action LIKE 'project.force%' ORDER BY id",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(verbs, ["project.force_fail", "project.force_retry"]);
}

#[sqlx::test]
async fn a_superseded_delivery_writes_nothing(pool: PgPool) {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("gitops");
    let app = app(&pool, &repo).await;
    let lead = app.team_lead_token().await;
    let created = create(&app, &lead, "web").await;
    let id = created["id"].as_str().unwrap().to_owned();
    app.project_becomes(&lead, &id, "active").await;
    let path = format!("/api/v1/projects/{id}");
    let resized = app
        .call(Method::PATCH, &path, Some(&lead), Some(json!({ "sla_type": "gold" })))
        .await
        .expect(StatusCode::ACCEPTED, None);
    assert_eq!(resized["project"]["generation"], 2, "a new sizing is a new generation");
    // A delivery of generation 1 that was still on its way: it must not write the old quota.
    let stale = json!({ "project_id": id, "requested_by": "shop-lead", "generation": 1 });
    let mut conn = pool.acquire().await.unwrap();
    let new = infrahub::store::jobs::NewJob::new("provision_namespace", stale, "test", 3);
    let stale_job = infrahub::store::jobs::enqueue(&mut conn, &new).await.unwrap().into_job();
    sqlx::query("UPDATE projects SET last_job_id = $2 WHERE id = $1::uuid")
        .bind(&id)
        .bind(stale_job.id)
        .execute(&mut *conn)
        .await
        .unwrap();
    drop(conn);
    let before = std::fs::read_to_string(repo.join("fra/shop-web.yaml")).unwrap();
    app.run_due_jobs().await;
    let done = crate::jobs::job(&pool, stale_job.id).await;
    let skipped = done.result.unwrap()["skipped"].as_str().unwrap().to_owned();
    assert!(skipped.contains("superseded"), "{skipped}");
    assert_eq!(std::fs::read_to_string(repo.join("fra/shop-web.yaml")).unwrap(), before);
    assert!(before.contains("infrahub.io/generation: \"1\""), "{before}");
}

/// A project whose deletion failed is deleted again by a retry (its owner's or a forced one);
/// it never comes back to life.
#[sqlx::test]
async fn retrying_a_failed_deletion_deletes_again(pool: PgPool) {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("gitops");
    let app = app(&pool, &repo).await;
    let lead = app.team_lead_token().await;
    let admin = app.admin_token().await;
    let reason = json!({ "reason": "the deletion hangs" });
    for (name, retry, by) in [("web", "retry", &lead), ("api", "force-retry", &admin)] {
        let created = create(&app, &lead, name).await;
        let id = created["id"].as_str().unwrap();
        app.project_becomes(&lead, id, "active").await;
        let path = format!("/api/v1/projects/{id}");
        app.call(Method::DELETE, &path, Some(&lead), None).await.expect(StatusCode::ACCEPTED, None);
        let failed = app
            .post(&format!("{path}/force-fail"), &admin, reason.clone())
            .await
            .expect(StatusCode::OK, None);
        assert_eq!(
            (&failed["status"], &failed["failed_from"]),
            (&json!("failed"), &json!("deleting"))
        );

        let body = (retry == "force-retry").then(|| reason.clone());
        let again = app.call(Method::POST, &format!("{path}/{retry}"), Some(by), body).await;
        let again = again.expect(StatusCode::ACCEPTED, None);
        assert_eq!(again["status"], "deleting", "{retry}: {again}");
        app.project_becomes(&lead, id, "deleted").await;
        assert!(!repo.join(format!("fra/shop-{name}.yaml")).exists(), "{retry}");
    }
}
