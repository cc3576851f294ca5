//! Safe deletion: a deleted project waits in `deletion_scheduled` for the grace period,
//! namespace and quota kept, and `restore` cancels it; once the grace period is over the
//! reconciler starts its removal. A project's time to live leads to the same path.

use std::path::Path;

use infrahub::config::{Config, Mode};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sqlx::PgPool;
use uuid::Uuid;

use crate::chaos::git;
use crate::console::Browser;
use crate::helpers::{PASSWORD, TestApp};

const HOUR: u64 = 3600;

async fn app(pool: &PgPool, repo: &Path, tweak: impl FnOnce(&mut Config)) -> TestApp {
    let repo = repo.to_owned();
    let app = TestApp::spawn_with(pool.clone(), Mode::Serve, move |c| {
        c.delivery.git.path = repo;
        c.deletion.grace_secs = HOUR;
        tweak(c);
    })
    .await;
    app.give_quota(8, 32).await;
    app
}

/// An active bronze/regular project `name`; its id.
async fn active(app: &TestApp, lead: &str, name: &str, expires_at: Option<String>) -> String {
    let body = json!({ "name": name, "site": "fra", "sla_type": "bronze",
                       "performance_tier": "regular", "expires_at": expires_at });
    let created = app.post("/api/v1/projects", lead, body).await.expect(StatusCode::ACCEPTED, None);
    let id = created["id"].as_str().unwrap().to_owned();
    app.project_becomes(lead, &id, "active").await;
    id
}

async fn project(app: &TestApp, token: &str, id: &str) -> Value {
    app.get(&format!("/api/v1/projects/{id}"), token).await.expect(StatusCode::OK, None)
}

async fn delete(app: &TestApp, token: &str, id: &str) -> crate::helpers::Answer {
    app.call(Method::DELETE, &format!("/api/v1/projects/{id}"), Some(token), None).await
}

async fn restore(app: &TestApp, token: &str, id: &str) -> crate::helpers::Answer {
    app.call(Method::POST, &format!("/api/v1/projects/{id}/restore"), Some(token), None).await
}

async fn jobs_of(pool: &PgPool, kind: &str, id: &str) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM jobs WHERE kind = $1 AND payload->>'project_id' = $2")
        .bind(kind)
        .bind(id)
        .fetch_one(pool)
        .await
        .unwrap()
}

async fn audited(pool: &PgPool, action: &str, id: &str) -> Vec<Value> {
    sqlx::query_scalar(
        "SELECT after FROM audit_events WHERE action = $1 AND subject_id = $2 ORDER BY id",
    )
    .bind(action)
    .bind(id)
    .fetch_all(pool)
    .await
    .unwrap()
}

/// Makes the project's scheduled deletion (or time to live) due now.
async fn make_due(pool: &PgPool, column: &str, id: &str) {
    let sql = match column {
        "delete_at" => {
            "UPDATE projects SET delete_at = now() - interval '1 second' WHERE id = $1::uuid"
        }
        _ => "UPDATE projects SET expires_at = now() - interval '1 second' WHERE id = $1::uuid",
    };
    sqlx::query(sql).bind(id).execute(pool).await.unwrap();
}

fn files(repo: &Path) -> String {
    git(repo, &["ls-tree", "-r", "--name-only", "HEAD"])
}

#[sqlx::test]
async fn a_deletion_waits_for_the_grace_period_and_restore_cancels_it(pool: PgPool) {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("gitops");
    let app = app(&pool, &repo, |_| {}).await;
    let lead = app.team_lead_token().await;
    let id = active(&app, &lead, "web", None).await;
    let scheduled = delete(&app, &lead, &id).await.expect(StatusCode::ACCEPTED, None);
    assert_eq!(scheduled["status"], "deletion_scheduled", "{scheduled}");
    assert_eq!(scheduled["job_id"], Value::Null, "nothing is removed yet");
    let delete_at: chrono::DateTime<chrono::Utc> =
        serde_json::from_value(scheduled["project"]["delete_at"].clone()).unwrap();
    let hour = chrono::Utc::now() + chrono::Duration::hours(1);
    assert!((delete_at - hour).num_seconds().abs() < 60, "an hour later: {delete_at}");
    app.run_jobs().await;
    assert_eq!(files(&repo), "fra/shop-web.yaml", "the namespace stays");
    assert_eq!(app.used_cpu(&lead).await, 2, "and so does its quota");
    assert_eq!(jobs_of(&pool, "deprovision_namespace", &id).await, 0);

    // Nothing else changes it meanwhile.
    let path = format!("/api/v1/projects/{id}");
    app.call(Method::PATCH, &path, Some(&lead), Some(json!({ "performance_tier": "high" })))
        .await
        .expect(StatusCode::CONFLICT, Some("deletion_scheduled"));
    delete(&app, &lead, &id).await.expect(StatusCode::CONFLICT, Some("deletion_scheduled"));
    let report = infrahub::app::projects::reconcile(&app.ctx, Uuid::now_v7()).await.unwrap();
    assert!(report.deleting.is_empty(), "not due yet");

    let restored = restore(&app, &lead, &id).await.expect(StatusCode::ACCEPTED, None);
    assert_eq!(restored["status"], "provisioning", "{restored}");
    assert_eq!(restored["project"]["delete_at"], Value::Null);
    let back = app.project_becomes(&lead, &id, "active").await;
    assert_eq!(files(&repo), "fra/shop-web.yaml");
    assert!(back["generation"].as_i64().unwrap() > 1, "delivered again, as a new generation");
    restore(&app, &lead, &id).await.expect(StatusCode::CONFLICT, Some("not_scheduled"));
    assert_eq!(audited(&pool, "project.schedule_deletion", &id).await.len(), 1);
    assert_eq!(audited(&pool, "project.restore", &id).await.len(), 1);
    assert_eq!(jobs_of(&pool, "deprovision_namespace", &id).await, 0, "never removed");
}

#[sqlx::test]
async fn once_the_grace_period_is_over_the_namespace_goes_and_the_quota_is_freed(pool: PgPool) {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("gitops");
    let app = app(&pool, &repo, |_| {}).await;
    let lead = app.team_lead_token().await;
    let id = active(&app, &lead, "web", None).await;
    delete(&app, &lead, &id).await.expect(StatusCode::ACCEPTED, None);
    make_due(&pool, "delete_at", &id).await;
    let report = infrahub::app::projects::reconcile(&app.ctx, Uuid::now_v7()).await.unwrap();
    assert_eq!(report.deleting, ["shop-web"]);
    let deleting = project(&app, &lead, &id).await;
    assert_eq!(deleting["status"], "deleting");
    assert_eq!(deleting["delete_at"], Value::Null);
    restore(&app, &lead, &id).await.expect(StatusCode::CONFLICT, Some("not_scheduled"));
    app.project_becomes(&lead, &id, "deleted").await;
    assert_eq!(files(&repo), "", "the manifests are gone");
    assert_eq!(app.used_cpu(&lead).await, 0);
    let due = audited(&pool, "project.deletion_due", &id).await;
    assert_eq!(due.len(), 1);
    assert!(due[0]["job_id"].is_string(), "{}", due[0]);
    let again = infrahub::app::projects::reconcile(&app.ctx, Uuid::now_v7()).await.unwrap();
    assert!(again.deleting.is_empty(), "started once");
}

#[sqlx::test]
async fn a_time_to_live_schedules_the_deletion_and_restoring_forgets_it(pool: PgPool) {
    let dir = tempfile::tempdir().unwrap();
    let app = app(&pool, &dir.path().join("gitops"), |_| {}).await;
    let lead = app.team_lead_token().await;
    let past = (chrono::Utc::now() - chrono::Duration::minutes(1)).to_rfc3339();
    let body = json!({ "name": "old", "site": "fra", "sla_type": "bronze",
                       "performance_tier": "regular", "expires_at": past });
    let refused = app.post("/api/v1/projects", &lead, body).await;
    let refused = refused.expect(StatusCode::UNPROCESSABLE_ENTITY, Some("invalid_value"));
    assert_eq!(refused["error"]["details"]["field"], "expires_at");
    let later = chrono::Utc::now() + chrono::Duration::days(3);
    let id = active(&app, &lead, "sandbox", Some(later.to_rfc3339())).await;
    let keeper = active(&app, &lead, "keeper", None).await;
    let shown: chrono::DateTime<chrono::Utc> =
        serde_json::from_value(project(&app, &lead, &id).await["expires_at"].clone()).unwrap();
    assert_eq!(shown.timestamp(), later.timestamp());
    let report = infrahub::app::projects::reconcile(&app.ctx, Uuid::now_v7()).await.unwrap();
    assert!(report.ttl_expired.is_empty(), "not yet");

    make_due(&pool, "expires_at", &id).await;
    let report = infrahub::app::projects::reconcile(&app.ctx, Uuid::now_v7()).await.unwrap();
    assert_eq!(report.ttl_expired, ["shop-sandbox"]);
    assert!(report.deleting.is_empty(), "the grace period applies to it too");
    let scheduled = project(&app, &lead, &id).await;
    assert_eq!(scheduled["status"], "deletion_scheduled", "{scheduled}");
    assert!(scheduled["delete_at"].is_string());
    assert_eq!(project(&app, &lead, &keeper).await["status"], "active");
    let events = audited(&pool, "project.schedule_deletion", &id).await;
    assert!(events[0]["reason"].as_str().unwrap().contains("time to live"), "{}", events[0]);

    restore(&app, &lead, &id).await.expect(StatusCode::ACCEPTED, None);
    let restored = app.project_becomes(&lead, &id, "active").await;
    assert_eq!(restored["expires_at"], Value::Null, "a time to live that ran out is forgotten");
    let again = infrahub::app::projects::reconcile(&app.ctx, Uuid::now_v7()).await.unwrap();
    assert!(again.ttl_expired.is_empty() && again.deleting.is_empty(), "{again:?}");
}

#[sqlx::test]
async fn without_a_grace_period_a_time_to_live_deletes_at_once(pool: PgPool) {
    let dir = tempfile::tempdir().unwrap();
    let app = app(&pool, &dir.path().join("gitops"), |c| c.deletion.grace_secs = 0).await;
    let lead = app.team_lead_token().await;
    let later = chrono::Utc::now() + chrono::Duration::hours(2);
    let id = active(&app, &lead, "sandbox", Some(later.to_rfc3339())).await;
    make_due(&pool, "expires_at", &id).await;
    let report = infrahub::app::projects::reconcile(&app.ctx, Uuid::now_v7()).await.unwrap();
    assert_eq!(report.ttl_expired, ["shop-sandbox"]);
    assert_eq!(project(&app, &lead, &id).await["status"], "deleting");
    app.project_becomes(&lead, &id, "deleted").await;
    assert_eq!(audited(&pool, "project.delete", &id).await.len(), 1);
}

#[sqlx::test]
async fn a_restore_racing_the_end_of_the_grace_period_wins_or_loses_whole(pool: PgPool) {
    let dir = tempfile::tempdir().unwrap();
    let app = app(&pool, &dir.path().join("gitops"), |_| {}).await;
    let lead = app.team_lead_token().await;
    for round in 0..4 {
        let id = active(&app, &lead, &format!("web-{round}"), None).await;
        delete(&app, &lead, &id).await.expect(StatusCode::ACCEPTED, None);
        make_due(&pool, "delete_at", &id).await;
        let (restored, report) = tokio::join!(
            restore(&app, &lead, &id),
            infrahub::app::projects::reconcile(&app.ctx, Uuid::now_v7()),
        );
        let swept = !report.unwrap().deleting.is_empty();
        let status = project(&app, &lead, &id).await["status"].as_str().unwrap().to_owned();
        let (provisions, removals) = (
            jobs_of(&pool, "provision_namespace", &id).await,
            jobs_of(&pool, "deprovision_namespace", &id).await,
        );
        if restored.status == StatusCode::ACCEPTED {
            assert!(!swept, "round {round}: both won");
            assert_eq!((status.as_str(), provisions, removals), ("provisioning", 2, 0));
            app.project_becomes(&lead, &id, "active").await;
            // Free the quota for the next round, at once.
            sqlx::query(
                "UPDATE projects SET status = 'deleted', deleted_at = now() WHERE id = $1::uuid",
            )
            .bind(&id)
            .execute(&pool)
            .await
            .unwrap();
        } else {
            restored.expect(StatusCode::CONFLICT, Some("not_scheduled"));
            assert!(swept, "round {round}: neither won");
            assert_eq!((status.as_str(), provisions, removals), ("deleting", 1, 1));
            app.project_becomes(&lead, &id, "deleted").await;
        }
    }
}

#[sqlx::test]
async fn the_console_schedules_and_restores(pool: PgPool) {
    let dir = tempfile::tempdir().unwrap();
    let app = app(&pool, &dir.path().join("gitops"), |_| {}).await;
    let lead = app.team_lead_token().await;
    let id = active(&app, &lead, "web", None).await;
    let mut browser = Browser::new(&app.base);
    browser.login("shop-lead", PASSWORD).await;
    let path = format!("/projects/{id}");
    let page = browser.get(&path).await;
    assert!(page.html.contains("after 1 hour; it can be restored until then"), "{}", page.html);
    let csrf = page.hidden("_csrf");
    let deleted =
        browser.post(&format!("{path}/delete"), &[("confirm", "web"), ("_csrf", &csrf)]).await;
    assert_eq!(deleted.location.as_deref(), Some(path.as_str()), "{}", deleted.html);
    let scheduled = browser.get(&path).await;
    assert!(scheduled.html.contains("badge deletion_scheduled"), "{}", scheduled.html);
    assert!(
        scheduled.html.contains("Scheduled for deletion") && scheduled.html.contains("Restore web")
    );
    assert!(!scheduled.html.contains(">Resize<"), "nothing else to change meanwhile");
    let cards = browser.get("/projects").await;
    assert!(cards.html.contains("unless restored"), "{}", cards.html);
    let restored = browser.post(&format!("{path}/restore"), &[("_csrf", &csrf)]).await;
    assert_eq!(restored.location.as_deref(), Some(path.as_str()), "{}", restored.html);
    assert_eq!(project(&app, &lead, &id).await["status"], "provisioning");
    app.project_becomes(&lead, &id, "active").await;
}

#[sqlx::test]
async fn every_status_holds_quota_as_the_state_machine_says(pool: PgPool) {
    use infrahub::domain::project::ProjectStatus;
    let app = app(&pool, Path::new("/nonexistent"), |_| {}).await;
    for (n, status) in ProjectStatus::ALL.into_iter().enumerate() {
        sqlx::query(
            "INSERT INTO projects (id, name, department_id, site_id, namespace, sla_type,
                                   performance_tier, cpu, ram_gb, status, generation, deleted_at,
                                   approval_expires_at, approval_reason, delete_at)
             VALUES (gen_random_uuid(), $1, $2, $3, $1, 'bronze', 'regular', $4, 1, $5, 1,
                     CASE WHEN $5 = 'deleted' THEN now() END,
                     CASE WHEN $5 = 'pending_approval' THEN now() END,
                     CASE WHEN $5 = 'pending_approval' THEN 'a test' END,
                     CASE WHEN $5 = 'deletion_scheduled' THEN now() END)",
        )
        .bind(format!("p{n}"))
        .bind(app.org.dept)
        .bind(app.org.site)
        .bind(1i32 << n)
        .bind(status.as_str())
        .execute(&pool)
        .await
        .unwrap();
    }
    let expected: i64 = ProjectStatus::ALL
        .into_iter()
        .enumerate()
        .filter(|(_, status)| status.holds_quota())
        .map(|(n, _)| 1i64 << n)
        .sum();
    let mut conn = pool.acquire().await.unwrap();
    let (_, used) =
        infrahub::store::capacity::quota_and_usage(&mut conn, app.org.dept, app.org.site)
            .await
            .unwrap();
    assert_eq!(used.cpu, expected, "the reservation check");
    let lead = app.team_lead_token().await;
    assert_eq!(app.used_cpu(&lead).await, expected, "the department's quota view");
}

/// The reservations the quota check reads (`project_reservations`) against the sum of the
/// projects that hold quota, per department and site; zero rows left by freed reservations
/// are the same as none.
async fn reservations_match_projects(pool: &PgPool, step: &str) -> usize {
    let kept: Vec<(Uuid, Uuid, i64, i64)> = sqlx::query_as(
        "SELECT department_id, site_id, cpu, ram_gb FROM project_reservations
          WHERE cpu <> 0 OR ram_gb <> 0 ORDER BY 1, 2",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    let summed: Vec<(Uuid, Uuid, i64, i64)> = sqlx::query_as(
        "SELECT department_id, site_id, sum(cpu)::int8, sum(ram_gb)::int8 FROM projects
          WHERE status NOT IN ('deleted', 'rejected') GROUP BY 1, 2
         HAVING sum(cpu) <> 0 OR sum(ram_gb) <> 0 ORDER BY 1, 2",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    assert_eq!(kept, summed, "after {step}");
    kept.len()
}

#[sqlx::test]
async fn reservations_follow_every_change_of_a_project_from_its_commit(pool: PgPool) {
    use infrahub::store::capacity::quota_and_usage;
    let app = app(&pool, Path::new("/nonexistent"), |_| {}).await;
    let (dept, site) = (app.org.dept, app.org.site);
    /// A provisioning project of `cpu` CPU and `ram_gb` GB in the test's department and site.
    async fn insert(
        conn: &mut sqlx::PgConnection,
        app: &TestApp,
        name: &str,
        cpu: i32,
        ram_gb: i32,
    ) -> Uuid {
        sqlx::query_scalar(
            "INSERT INTO projects (id, name, department_id, site_id, namespace, sla_type,
                                   performance_tier, cpu, ram_gb, status, generation)
             VALUES (gen_random_uuid(), $1, $2, $3, $1, 'bronze', 'regular', $4, $5,
                     'provisioning', 1)
             RETURNING id",
        )
        .bind(name)
        .bind(app.org.dept)
        .bind(app.org.site)
        .bind(cpu)
        .bind(ram_gb)
        .fetch_one(conn)
        .await
        .unwrap()
    }
    let mut conn = pool.acquire().await.unwrap();
    let mut ids = Vec::new();
    for n in 0..4 {
        ids.push(insert(&mut conn, &app, &format!("p{n}"), 1 << n, 10 << n).await);
    }
    drop(conn);
    reservations_match_projects(&pool, "inserts").await;
    async fn cpu_used(conn: &mut sqlx::PgConnection, dept: Uuid, site: Uuid) -> i64 {
        quota_and_usage(conn, dept, site).await.unwrap().1.cpu
    }
    let mut other = pool.acquire().await.unwrap();
    assert_eq!(cpu_used(&mut other, dept, site).await, 15);

    // A transaction's own changes count from its commit, for itself as for everyone else.
    let mut tx = pool.begin().await.unwrap();
    let id = insert(&mut tx, &app, "late", 16, 160).await;
    sqlx::query("UPDATE projects SET cpu = 32, ram_gb = 320 WHERE id = $1")
        .bind(id)
        .execute(&mut *tx)
        .await
        .unwrap();
    assert_eq!(cpu_used(&mut tx, dept, site).await, 15, "not yet counted in its own transaction");
    assert_eq!(cpu_used(&mut other, dept, site).await, 15, "nor in any other");
    tx.commit().await.unwrap();
    assert_eq!(
        cpu_used(&mut other, dept, site).await,
        47,
        "counted once committed, at its last size"
    );
    reservations_match_projects(&pool, "an insert and a resize in one transaction").await;

    let mut tx = pool.begin().await.unwrap();
    insert(&mut tx, &app, "gone", 64, 1).await;
    sqlx::query("UPDATE projects SET cpu = 0 WHERE id = $1")
        .bind(ids[0])
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.rollback().await.unwrap();
    assert_eq!(
        cpu_used(&mut other, dept, site).await,
        47,
        "a rolled-back transaction counts nothing"
    );

    let other_site = app.add_site("ams").await;
    let changes = [
        ("a resize", "UPDATE projects SET cpu = 5, ram_gb = 7 WHERE id = $1", ids[0]),
        (
            "a deletion",
            "UPDATE projects SET status = 'deleted', deleted_at = now() WHERE id = $1",
            ids[1],
        ),
        ("a resize of a deleted project", "UPDATE projects SET cpu = 99 WHERE id = $1", ids[1]),
        ("a rejection", "UPDATE projects SET status = 'rejected' WHERE id = $1", ids[2]),
        (
            "a change reserving nothing",
            "UPDATE projects SET status = 'active', performance_tier = 'high' WHERE id = $1",
            ids[3],
        ),
        (
            "a move to another site",
            "UPDATE projects SET site_id = (SELECT id FROM sites WHERE name = 'ams') WHERE id = $1",
            ids[3],
        ),
        (
            "a move to another department",
            "UPDATE projects SET department_id = (SELECT id FROM departments WHERE id <> department_id LIMIT 1) WHERE id = $1",
            id,
        ),
        ("a removed row", "DELETE FROM projects WHERE id = $1", ids[0]),
    ];
    for (step, sql, id) in changes {
        let done = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(id).execute(&pool).await.unwrap();
        assert_eq!(done.rows_affected(), 1, "{step}");
        reservations_match_projects(&pool, step).await;
    }
    assert_eq!(
        cpu_used(&mut other, dept, site).await,
        0,
        "every project of the department at the site is gone"
    );
    let (_, moved) = quota_and_usage(&mut other, dept, other_site).await.unwrap();
    assert_eq!(moved.cpu, 8, "the moved project reserves at its new site");
    drop(other);

    // The migration starts them from the projects already there.
    infrahub::store::migrate_down(&pool, 1).await.unwrap();
    infrahub::store::migrate_up(&pool).await.unwrap();
    let rows = reservations_match_projects(&pool, "the migration, again").await;
    assert_eq!(rows, 2, "the two projects left, in two departments or sites");
}

#[sqlx::test]
async fn a_failed_project_is_scheduled_too_and_a_failed_deletion_is_asked_again_at_once(
    pool: PgPool,
) {
    let dir = tempfile::tempdir().unwrap();
    let app = app(&pool, &dir.path().join("gitops"), |_| {}).await;
    let lead = app.team_lead_token().await;
    let admin = app.admin_token().await;
    let id = active(&app, &lead, "web", None).await;
    // A cancelled resize fails it; deleting a failed project is scheduled like any other,
    // and restoring it provisions it again.
    let resize = json!({ "performance_tier": "high" });
    let resized = app
        .call(Method::PATCH, &format!("/api/v1/projects/{id}"), Some(&lead), Some(resize))
        .await
        .expect(StatusCode::ACCEPTED, None);
    app.call(
        Method::POST,
        &format!("{}/cancel", resized["location"].as_str().unwrap()),
        Some(&admin),
        None,
    )
    .await
    .expect(StatusCode::OK, None);
    assert_eq!(project(&app, &lead, &id).await["status"], "failed");
    delete(&app, &lead, &id).await.expect(StatusCode::ACCEPTED, None);
    assert_eq!(project(&app, &lead, &id).await["status"], "deletion_scheduled");
    restore(&app, &lead, &id).await.expect(StatusCode::ACCEPTED, None);
    app.project_becomes(&lead, &id, "active").await;

    // A deletion that fails once its grace period is over is asked again at once.
    delete(&app, &lead, &id).await.expect(StatusCode::ACCEPTED, None);
    make_due(&pool, "delete_at", &id).await;
    infrahub::app::projects::reconcile(&app.ctx, Uuid::now_v7()).await.unwrap();
    let removal = project(&app, &lead, &id).await["last_job_id"].as_str().unwrap().to_owned();
    app.call(Method::POST, &format!("/api/v1/jobs/{removal}/cancel"), Some(&admin), None)
        .await
        .expect(StatusCode::OK, None);
    let failed = project(&app, &lead, &id).await;
    assert_eq!(
        (failed["status"].as_str(), failed["failed_from"].as_str()),
        (Some("failed"), Some("deleting"))
    );
    let again = delete(&app, &lead, &id).await.expect(StatusCode::ACCEPTED, None);
    assert_eq!(again["status"], "deleting", "no second grace period: {again}");
    assert!(again["job_id"].is_string());
    app.project_becomes(&lead, &id, "deleted").await;
}

#[sqlx::test]
async fn a_sweep_acts_only_on_what_is_still_due_under_the_lock(pool: PgPool) {
    use infrahub::store::projects::{Due, due, still_due};
    let dir = tempfile::tempdir().unwrap();
    let app = app(&pool, &dir.path().join("gitops"), |_| {}).await;
    let lead = app.team_lead_token().await;
    let id = active(&app, &lead, "web", None).await;
    delete(&app, &lead, &id).await.expect(StatusCode::ACCEPTED, None);
    make_due(&pool, "delete_at", &id).await;
    let mut conn = pool.acquire().await.unwrap();
    let listed = due(&mut conn, Due::Deletion, 10).await.unwrap();
    assert_eq!(listed.len(), 1);
    // Between the sweep's list and its lock: restored, and deleted again for a new day.
    restore(&app, &lead, &id).await.expect(StatusCode::ACCEPTED, None);
    app.project_becomes(&lead, &id, "active").await;
    delete(&app, &lead, &id).await.expect(StatusCode::ACCEPTED, None);
    assert!(!still_due(&mut conn, listed[0], Due::Deletion).await.unwrap(), "a new grace period");
    let report = infrahub::app::projects::reconcile(&app.ctx, Uuid::now_v7()).await.unwrap();
    assert!(report.deleting.is_empty());
    assert_eq!(project(&app, &lead, &id).await["status"], "deletion_scheduled");
}
