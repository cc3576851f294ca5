//! Approvals: a request whose catalog entry (or size) needs approval waits in
//! `pending_approval` with its quota reserved; the field admin of its field (or a center
//! admin) approves it (provisioning starts) or rejects it with a reason (its quota is freed);
//! an undecided request expires; racing decisions start at most one provisioning.

use std::path::Path;

use infrahub::config::{Config, Mode};
use infrahub::domain::role::Role;
use infrahub::domain::scope::Scope;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sqlx::PgPool;
use uuid::Uuid;

use crate::console::Browser;
use crate::helpers::{PASSWORD, TestApp, create_user};

/// Gold projects need approval, the others do not.
fn gold_needs_approval(config: &mut Config) {
    for entry in config.catalog.0.get_mut("gold").expect("gold").values_mut() {
        entry.requires_approval = true;
    }
}

async fn app(pool: &PgPool, repo: &Path, tweak: impl FnOnce(&mut Config)) -> TestApp {
    let repo = repo.to_owned();
    let app = TestApp::spawn_with(pool.clone(), Mode::Serve, move |c| {
        c.delivery.git.path = repo;
        tweak(c);
    })
    .await;
    app.give_quota(12, 48).await;
    app
}

async fn ask(
    app: &TestApp,
    lead: &str,
    name: &str,
    sla: &str,
    tier: &str,
) -> crate::helpers::Answer {
    let body = json!({ "name": name, "site": "fra", "sla_type": sla, "performance_tier": tier });
    app.post("/api/v1/projects", lead, body).await
}

async fn project(app: &TestApp, token: &str, id: &str) -> Value {
    app.get(&format!("/api/v1/projects/{id}"), token).await.expect(StatusCode::OK, None)
}

async fn decide(
    app: &TestApp,
    token: &str,
    id: &str,
    verdict: &str,
    body: Option<Value>,
) -> crate::helpers::Answer {
    app.call(Method::POST, &format!("/api/v1/projects/{id}/{verdict}"), Some(token), body).await
}

async fn provision_jobs(pool: &PgPool, id: &str) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM jobs WHERE kind = 'provision_namespace' AND payload->>'project_id' = $1",
    )
    .bind(id)
    .fetch_one(pool)
    .await
    .unwrap()
}

async fn audited(pool: &PgPool, action: &str, id: &str) -> Vec<(Option<String>, Value)> {
    sqlx::query_as(
        "SELECT actor, after FROM audit_events WHERE action = $1 AND subject_id = $2 ORDER BY id",
    )
    .bind(action)
    .bind(id)
    .fetch_all(pool)
    .await
    .unwrap()
}

#[sqlx::test]
async fn a_request_that_needs_approval_waits_with_its_quota_reserved_until_approved(pool: PgPool) {
    let dir = tempfile::tempdir().unwrap();
    let app = app(&pool, &dir.path().join("gitops"), gold_needs_approval).await;
    let lead = app.team_lead_token().await;
    let created =
        ask(&app, &lead, "ledger", "gold", "regular").await.expect(StatusCode::CREATED, None);
    assert_eq!(created["status"], "pending_approval", "{created}");
    assert_eq!(created["job_id"], Value::Null, "nothing runs before the approval");
    let id = created["id"].as_str().unwrap().to_owned();
    let reason = created["project"]["approval_reason"].as_str().unwrap();
    assert!(reason.contains("gold/regular"), "{reason}");
    let expires: chrono::DateTime<chrono::Utc> =
        serde_json::from_value(created["project"]["approval_expires_at"].clone()).unwrap();
    let week = chrono::Utc::now() + chrono::Duration::days(7);
    assert!((expires - week).num_seconds().abs() < 60, "expires a week later: {expires}");
    // The reservation holds: 8 of 12 CPU are taken, so 4 more fit and 2 after them do not.
    assert_eq!(app.used_cpu(&lead).await, 8);
    let bronze = ask(&app, &lead, "web", "bronze", "high").await.expect(StatusCode::ACCEPTED, None);
    ask(&app, &lead, "api", "bronze", "regular")
        .await
        .expect(StatusCode::CONFLICT, Some("over_quota"));
    app.run_jobs().await;
    assert_eq!(
        project(&app, &lead, &id).await["status"],
        "pending_approval",
        "jobs leave it alone"
    );
    assert_eq!(provision_jobs(&pool, &id).await, 0);

    // The team lead can neither decide nor resize it.
    decide(&app, &lead, &id, "approve", None)
        .await
        .expect(StatusCode::FORBIDDEN, Some("forbidden"));
    let resize = json!({ "performance_tier": "high" });
    app.call(Method::PATCH, &format!("/api/v1/projects/{id}"), Some(&lead), Some(resize))
        .await
        .expect(StatusCode::CONFLICT, Some("pending_approval"));

    // The field admin sees what waits for it, and approves.
    let field_admin = app.field_admin_token().await;
    let waiting = app
        .get("/api/v1/projects?status=pending_approval", &field_admin)
        .await
        .expect(StatusCode::OK, None);
    let names: Vec<&str> =
        waiting["items"].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["ledger"]);
    let approved =
        decide(&app, &field_admin, &id, "approve", None).await.expect(StatusCode::ACCEPTED, None);
    assert_eq!(approved["status"], "provisioning", "{approved}");
    assert!(approved["job_id"].is_string(), "{approved}");
    assert_eq!(approved["project"]["approval_expires_at"], Value::Null);
    let active = app.project_becomes(&lead, &id, "active").await;
    assert_eq!(active["cpu"], 8);
    app.project_becomes(&lead, bronze["id"].as_str().unwrap(), "active").await;
    assert_eq!(app.used_cpu(&lead).await, 12, "approving reserved nothing twice");
    let events = audited(&pool, "project.approve", &id).await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].0.as_deref(), Some(app.org.field_admin.username.as_str()));
    assert_eq!(events[0].1["status"], "provisioning");
    // Decided once: a second decision is a conflict.
    decide(&app, &field_admin, &id, "reject", Some(json!({ "reason": "too late" })))
        .await
        .expect(StatusCode::CONFLICT, Some("not_pending"));
}

#[sqlx::test]
async fn rejecting_frees_the_reservation_and_the_name(pool: PgPool) {
    let dir = tempfile::tempdir().unwrap();
    let app = app(&pool, &dir.path().join("gitops"), gold_needs_approval).await;
    let lead = app.team_lead_token().await;
    let created =
        ask(&app, &lead, "ledger", "gold", "regular").await.expect(StatusCode::CREATED, None);
    let id = created["id"].as_str().unwrap().to_owned();

    // Another field's admin does not see it; a reason is required.
    create_user(&pool, "other-admin", Role::FieldAdmin, Scope::Field(app.org.other_field), false)
        .await;
    let other = app.login("other-admin", PASSWORD).await;
    decide(&app, &other, &id, "approve", None)
        .await
        .expect(StatusCode::NOT_FOUND, Some("not_found"));
    decide(&app, &other, &id, "reject", Some(json!({ "reason": "no" })))
        .await
        .expect(StatusCode::NOT_FOUND, Some("not_found"));
    let field_admin = app.field_admin_token().await;
    decide(&app, &field_admin, &id, "reject", Some(json!({ "reason": "  " })))
        .await
        .expect(StatusCode::UNPROCESSABLE_ENTITY, None);

    let rejected =
        decide(&app, &field_admin, &id, "reject", Some(json!({ "reason": "use silver" })))
            .await
            .expect(StatusCode::OK, None);
    assert_eq!(rejected["status"], "rejected", "{rejected}");
    assert_eq!(rejected["job_id"], Value::Null);
    let shown = project(&app, &lead, &id).await;
    let why = format!("rejected by {}: use silver", app.org.field_admin.username);
    assert_eq!(shown["failure_reason"], why.as_str());
    assert_eq!(
        shown["approval_reason"], created["project"]["approval_reason"],
        "kept for the record"
    );
    assert_eq!(app.used_cpu(&lead).await, 0, "the reservation is freed");
    assert_eq!(audited(&pool, "project.reject", &id).await.len(), 1);
    decide(&app, &field_admin, &id, "approve", None)
        .await
        .expect(StatusCode::CONFLICT, Some("not_pending"));
    app.call(Method::DELETE, &format!("/api/v1/projects/{id}"), Some(&lead), None)
        .await
        .expect(StatusCode::CONFLICT, Some("already_deleted"));

    // The name is free again, and the freed quota holds a project that did not fit before.
    let again =
        ask(&app, &lead, "ledger", "gold", "regular").await.expect(StatusCode::CREATED, None);
    assert_ne!(again["id"], created["id"]);
    let listed = app.get("/api/v1/projects", &lead).await.expect(StatusCode::OK, None);
    let statuses: Vec<&str> =
        listed["items"].as_array().unwrap().iter().map(|p| p["status"].as_str().unwrap()).collect();
    assert_eq!(
        statuses,
        ["rejected", "pending_approval"],
        "a rejection stays visible to its team lead"
    );
}

#[sqlx::test]
async fn a_team_lead_withdraws_a_request_at_once(pool: PgPool) {
    let dir = tempfile::tempdir().unwrap();
    let app = app(&pool, &dir.path().join("gitops"), gold_needs_approval).await;
    let lead = app.team_lead_token().await;
    let created =
        ask(&app, &lead, "ledger", "gold", "regular").await.expect(StatusCode::CREATED, None);
    let id = created["id"].as_str().unwrap();
    let withdrawn = app
        .call(Method::DELETE, &format!("/api/v1/projects/{id}"), Some(&lead), None)
        .await
        .expect(StatusCode::OK, None);
    assert_eq!(withdrawn["status"], "deleted", "{withdrawn}");
    assert_eq!(withdrawn["job_id"], Value::Null, "nothing was delivered, nothing to remove");
    assert_eq!(app.used_cpu(&lead).await, 0);
    let field_admin = app.field_admin_token().await;
    decide(&app, &field_admin, id, "approve", None)
        .await
        .expect(StatusCode::CONFLICT, Some("not_pending"));
    assert_eq!(provision_jobs(&pool, id).await, 0);
}

#[sqlx::test]
async fn a_cpu_threshold_needs_approval_whatever_the_entry_and_resizing_is_no_way_around_it(
    pool: PgPool,
) {
    let dir = tempfile::tempdir().unwrap();
    let app = app(&pool, &dir.path().join("gitops"), |c| c.approval.cpu_above = Some(4)).await;
    let lead = app.team_lead_token().await;
    let big = ask(&app, &lead, "big", "silver", "high").await.expect(StatusCode::CREATED, None);
    let reason = big["project"]["approval_reason"].as_str().unwrap();
    assert!(reason.contains("8 CPU") && reason.contains("4 CPU"), "{reason}");
    let small =
        ask(&app, &lead, "small", "bronze", "high").await.expect(StatusCode::ACCEPTED, None);
    let small = small["id"].as_str().unwrap();
    app.project_becomes(&lead, small, "active").await;
    // Growing past the threshold by a resize needs approval too: team leads are refused, the
    // center admin (who may approve) resizes at once.
    let grow = json!({ "sla_type": "silver", "performance_tier": "high" });
    let path = format!("/api/v1/projects/{small}");
    let refused = app
        .call(Method::PATCH, &path, Some(&lead), Some(grow.clone()))
        .await
        .expect(StatusCode::CONFLICT, Some("approval_required"));
    assert!(refused["error"]["message"].as_str().unwrap().contains("new project"), "{refused}");
    let admin = app.admin_token().await;
    // Withdraw the big one so the resize fits.
    app.call(
        Method::DELETE,
        &format!("/api/v1/projects/{}", big["id"].as_str().unwrap()),
        Some(&lead),
        None,
    )
    .await
    .expect(StatusCode::OK, None);
    app.call(Method::PATCH, &path, Some(&admin), Some(grow))
        .await
        .expect(StatusCode::ACCEPTED, None);
    assert_eq!(app.project_becomes(&lead, small, "active").await["cpu"], 8);
}

#[sqlx::test]
async fn two_approvers_at_once_start_one_provisioning(pool: PgPool) {
    let dir = tempfile::tempdir().unwrap();
    let app = app(&pool, &dir.path().join("gitops"), gold_needs_approval).await;
    let lead = app.team_lead_token().await;
    let field_admin = app.field_admin_token().await;
    let admin = app.admin_token().await;
    for round in 0..4 {
        let name = format!("ledger-{round}");
        let created =
            ask(&app, &lead, &name, "gold", "regular").await.expect(StatusCode::CREATED, None);
        let id = created["id"].as_str().unwrap();
        // Round 0 and 1: two approvals; 2 and 3: an approval against a rejection.
        let second =
            if round < 2 { ("approve", None) } else { ("reject", Some(json!({ "reason": "no" }))) };
        let (a, b) = tokio::join!(
            decide(&app, &field_admin, id, "approve", None),
            decide(&app, &admin, id, second.0, second.1.clone()),
        );
        let statuses = [a.status, b.status];
        let won = statuses.iter().filter(|s| s.is_success()).count();
        assert_eq!(won, 1, "exactly one decision wins: {statuses:?}");
        let lost = if a.status.is_success() { b } else { a };
        lost.expect(StatusCode::CONFLICT, Some("not_pending"));
        let status = project(&app, &lead, id).await["status"].as_str().unwrap().to_owned();
        let approved = status == "provisioning";
        assert!(approved || status == "rejected", "{status}");
        assert_eq!(provision_jobs(&pool, id).await, i64::from(approved), "{status}");
        app.run_jobs().await;
        // Clean up so the next round fits.
        if approved {
            app.project_becomes(&lead, id, "active").await;
            app.call(Method::DELETE, &format!("/api/v1/projects/{id}"), Some(&lead), None)
                .await
                .expect(StatusCode::ACCEPTED, None);
            app.project_becomes(&lead, id, "deleted").await;
        }
    }
}

#[sqlx::test]
async fn approving_while_the_quota_shrinks_never_overcommits(pool: PgPool) {
    let dir = tempfile::tempdir().unwrap();
    let app = app(&pool, &dir.path().join("gitops"), gold_needs_approval).await;
    app.add_server("fra-1", 32, Some(app.org.field)).await;
    let lead = app.team_lead_token().await;
    let field_admin = app.field_admin_token().await;
    let created =
        ask(&app, &lead, "ledger", "gold", "regular").await.expect(StatusCode::CREATED, None);
    let id = created["id"].as_str().unwrap();
    let web = ask(&app, &lead, "web", "bronze", "high").await.expect(StatusCode::ACCEPTED, None);
    app.project_becomes(&lead, web["id"].as_str().unwrap(), "active").await;
    // The field admin shrinks the quota to what the active project uses while approving the
    // waiting one: the shrink must not count the waiting request as free.
    let shrink = json!({ "field_id": app.org.field, "dept_id": app.org.dept, "site": "fra", "cpu_limit": 4, "ram_gb_limit": 16 });
    let (approved, shrunk) = tokio::join!(
        decide(&app, &field_admin, id, "approve", None),
        app.post("/api/v1/allocations/department-quota", &field_admin, shrink),
    );
    approved.expect(StatusCode::ACCEPTED, None);
    if shrunk.status == StatusCode::ACCEPTED {
        app.run_jobs().await;
        let job = app.get(shrunk.body["location"].as_str().unwrap(), &field_admin).await.body;
        assert_eq!(job["status"], "failed", "the job refuses it: {job}");
    } else {
        shrunk.expect(StatusCode::CONFLICT, None);
    }
    app.project_becomes(&lead, id, "active").await;
    let (quota, used): (i32, i64) = sqlx::query_as(
        "SELECT q.cpu_limit, (SELECT sum(cpu) FROM projects WHERE department_id = q.department_id
                                AND status NOT IN ('deleted', 'rejected'))
           FROM department_quotas q WHERE q.department_id = $1",
    )
    .bind(app.org.dept)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!((quota, used), (12, 12), "the quota still holds every reservation");
}

#[sqlx::test]
async fn an_undecided_request_expires_and_frees_its_quota(pool: PgPool) {
    let dir = tempfile::tempdir().unwrap();
    let app = app(&pool, &dir.path().join("gitops"), gold_needs_approval).await;
    let lead = app.team_lead_token().await;
    let old = ask(&app, &lead, "old", "gold", "regular").await.expect(StatusCode::CREATED, None);
    let fresh =
        ask(&app, &lead, "fresh", "bronze", "high").await.expect(StatusCode::ACCEPTED, None);
    let old_id = old["id"].as_str().unwrap();
    sqlx::query(
        "UPDATE projects SET approval_expires_at = now() - interval '1 second' WHERE id = $1::uuid",
    )
    .bind(old_id)
    .execute(&pool)
    .await
    .unwrap();
    let report = infrahub::app::projects::reconcile(&app.ctx, Uuid::now_v7()).await.unwrap();
    assert_eq!(report.expired, ["shop-old"]);
    let expired = project(&app, &lead, old_id).await;
    assert_eq!(expired["status"], "rejected");
    assert!(
        expired["failure_reason"].as_str().unwrap().starts_with("the request expired"),
        "{expired}"
    );
    assert_eq!(audited(&pool, "project.approval_expired", old_id).await.len(), 1);
    app.project_becomes(&lead, fresh["id"].as_str().unwrap(), "active").await;
    assert_eq!(app.used_cpu(&lead).await, 4, "only the active project holds quota");
    let again = infrahub::app::projects::reconcile(&app.ctx, Uuid::now_v7()).await.unwrap();
    assert!(again.expired.is_empty(), "a request expires once");
}

#[sqlx::test]
async fn the_console_shows_what_waits_and_decides_it(pool: PgPool) {
    let dir = tempfile::tempdir().unwrap();
    let app = app(&pool, &dir.path().join("gitops"), gold_needs_approval).await;
    sqlx::query("UPDATE department_quotas SET cpu_limit = 24, ram_gb_limit = 96")
        .execute(&pool)
        .await
        .unwrap();
    let mut lead = Browser::new(&app.base);
    lead.login("shop-lead", PASSWORD).await;
    let csrf = lead.csrf("/projects/new").await;
    let preview =
        lead.get("/projects/new/preview?site=fra&sla_type=gold&performance_tier=regular").await;
    assert!(preview.html.contains("Needs a field admin's approval"), "{}", preview.html);
    let preview =
        lead.get("/projects/new/preview?site=fra&sla_type=bronze&performance_tier=regular").await;
    assert!(!preview.html.contains("approval"), "{}", preview.html);
    let form = |name: &'static str| {
        [("name", name), ("site", "fra"), ("sla_type", "gold"), ("performance_tier", "regular")]
    };
    let ask = |name| {
        let mut fields = form(name).to_vec();
        fields.push(("_csrf", csrf.as_str()));
        fields
    };
    let created = lead.post("/projects", &ask("ledger")).await;
    let path = created.location.expect("to the project's page");
    let id = path.trim_start_matches("/projects/").to_owned();
    let waiting = lead.get(&path).await;
    assert!(waiting.html.contains("badge pending_approval"), "{}", waiting.html);
    assert!(waiting.html.contains("Waiting for approval") && waiting.html.contains("gold/regular"));
    assert!(waiting.html.contains("Withdraw the request"), "{}", waiting.html);
    assert!(!waiting.html.contains("Resize"), "nothing to resize before the decision");
    assert!(!waiting.html.contains("/approve\""), "a team lead cannot decide");

    let mut admin = Browser::new(&app.base);
    admin.login(&app.org.field_admin.username, PASSWORD).await;
    let list = admin.get("/approvals").await;
    assert_eq!(list.status, StatusCode::OK);
    assert!(list.html.contains("ledger") && list.html.contains("Needs approval"), "{}", list.html);
    let csrf_admin = list.hidden("_csrf");
    let refused = admin
        .post(&format!("/approvals/{id}/reject"), &[("reason", " "), ("_csrf", &csrf_admin)])
        .await;
    assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", refused.html);
    assert!(refused.html.contains("reason"), "{}", refused.html);
    let approved = admin.post(&format!("/approvals/{id}/approve"), &[("_csrf", &csrf_admin)]).await;
    assert_eq!(approved.location.as_deref(), Some("/approvals"), "{}", approved.html);
    assert!(admin.get("/approvals").await.html.contains("Nothing waits for a decision"));
    let provisioning = lead.get(&path).await;
    assert!(provisioning.html.contains("badge provisioning"), "{}", provisioning.html);

    // A second request, withdrawn by its team lead from its page.
    let second = lead.post("/projects", &ask("vault")).await.location.unwrap();
    let withdrawn =
        lead.post(&format!("{second}/delete"), &[("confirm", "vault"), ("_csrf", &csrf)]).await;
    assert_eq!(withdrawn.location.as_deref(), Some(second.as_str()), "{}", withdrawn.html);
    assert!(lead.get(&second).await.html.contains("badge deleted"));
    app.project_becomes(&app.team_lead_token().await, &id, "active").await;
}

#[sqlx::test]
async fn a_request_whose_time_to_live_runs_out_before_approval_is_rejected(pool: PgPool) {
    let dir = tempfile::tempdir().unwrap();
    let app = app(&pool, &dir.path().join("gitops"), gold_needs_approval).await;
    let lead = app.team_lead_token().await;
    let later = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    let body = json!({ "name": "demo", "site": "fra", "sla_type": "gold",
                       "performance_tier": "regular", "expires_at": later });
    let created = app.post("/api/v1/projects", &lead, body).await.expect(StatusCode::CREATED, None);
    let id = created["id"].as_str().unwrap();
    sqlx::query("UPDATE projects SET expires_at = now() - interval '1 second' WHERE id = $1::uuid")
        .bind(id)
        .execute(&pool)
        .await
        .unwrap();
    let report = infrahub::app::projects::reconcile(&app.ctx, Uuid::now_v7()).await.unwrap();
    assert_eq!(report.ttl_expired, ["shop-demo"]);
    let rejected = project(&app, &lead, id).await;
    assert_eq!(rejected["status"], "rejected");
    assert!(rejected["failure_reason"].as_str().unwrap().contains("time to live"), "{rejected}");
    assert_eq!(app.used_cpu(&lead).await, 0);
}
