//! Coalescing: of the queued changes to one thing (a department's quota at a site, a server's
//! field), only the newest runs; the older ones end `superseded`, naming it.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use infrahub::config::Mode;
use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::PgPool;
use uuid::Uuid;

use crate::helpers::{TestApp, wait_until};

async fn job(app: &TestApp, token: &str, id: &str) -> Value {
    app.get(&format!("/api/v1/jobs/{id}"), token).await.expect(StatusCode::OK, None)
}

#[sqlx::test]
async fn a_burst_of_quota_changes_leaves_one_job_and_the_newest_value(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    app.add_server("s-1", 64, Some(app.org.field)).await;
    let token = app.field_admin_token().await;
    let mut ids = Vec::new();
    for cpu in 1..=20 {
        let body = json!({ "field_id": app.org.field, "dept_id": app.org.dept, "site": "fra",
                           "cpu_limit": cpu, "ram_gb_limit": 8 });
        let answer = app.post("/api/v1/allocations/department-quota", &token, body).await;
        ids.push(answer.expect(StatusCode::ACCEPTED, None)["job_id"].as_str().unwrap().to_owned());
    }
    let waiting: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM jobs WHERE kind = 'allocate_quota' AND status IN ('queued', 'retrying')",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(waiting, 1, "twenty changes, one job left to run");
    let newest = ids.last().unwrap();
    // Each names the one that took its place: following them leads to the newest.
    for pair in ids.windows(2) {
        let older = job(&app, &token, &pair[0]).await;
        assert_eq!(older["status"], "superseded");
        assert_eq!(older["result"]["superseded_by"], json!(pair[1]));
        assert!(older["finished_at"].is_string());
    }
    // Another department's quota at the site is another thing: not superseded.
    let ledger = app.admin_token().await;
    app.add_server("s-2", 64, Some(app.org.other_field)).await;
    let body = json!({ "field_id": app.org.other_field, "dept_id": app.org.other_dept, "site": "fra",
                       "cpu_limit": 2, "ram_gb_limit": 2 });
    let other = app.post("/api/v1/allocations/department-quota", &ledger, body).await;
    let other = other.expect(StatusCode::ACCEPTED, None)["job_id"].as_str().unwrap().to_owned();
    assert_eq!(job(&app, &token, newest).await["status"], "queued");

    app.run_jobs().await;
    assert_eq!(job(&app, &token, newest).await["status"], "succeeded");
    assert_eq!(job(&app, &ledger, &other).await["status"], "succeeded");
    let quota = app.get(&format!("/api/v1/departments/{}/quota", app.org.dept), &token).await.body;
    assert_eq!(quota["sites"][0]["quota"], json!({ "cpu": 20, "ram_gb": 8 }), "the newest value");
    let superseded = app.get("/api/v1/jobs?status=superseded&limit=100", &ledger).await.body;
    assert_eq!(superseded["items"].as_array().unwrap().len(), 19);
    // A superseded job is over: it cannot be cancelled.
    let cancel = format!("/api/v1/jobs/{}/cancel", ids[0]);
    app.post(&cancel, &ledger, json!({}))
        .await
        .expect(StatusCode::CONFLICT, Some("not_cancellable"));
}

#[sqlx::test]
async fn a_server_moved_again_ends_where_the_newest_move_puts_it(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let server = app.add_server("s-1", 64, None).await;
    let token = app.admin_token().await;
    let mut ids = Vec::new();
    for field in [app.org.field, app.org.other_field, app.org.field, app.org.other_field] {
        let body = json!({ "server_id": server, "field_id": field });
        let answer = app.post("/api/v1/allocations/servers", &token, body).await;
        ids.push(answer.expect(StatusCode::ACCEPTED, None)["job_id"].as_str().unwrap().to_owned());
    }
    for older in &ids[..3] {
        assert_eq!(job(&app, &token, older).await["status"], "superseded");
    }
    // A move a worker has already claimed is running: a newer one does not supersede it. If
    // the newer one applies first, the older one, running late, changes nothing.
    sqlx::query(
        "UPDATE jobs SET status = 'running', lease_owner = 'elsewhere', started_at = now(),
                lease_expires_at = now() + interval '1 minute' WHERE id = $1::uuid",
    )
    .bind(&ids[3])
    .execute(&app.pool)
    .await
    .unwrap();
    let body = json!({ "server_id": server, "field_id": app.org.field });
    let last = app.post("/api/v1/allocations/servers", &token, body).await;
    let last = last.expect(StatusCode::ACCEPTED, None)["job_id"].as_str().unwrap().to_owned();
    assert_eq!(job(&app, &token, &ids[3]).await["status"], "running");
    app.run_jobs().await;
    assert_eq!(job(&app, &token, &last).await["status"], "succeeded");
    let field_of = || async {
        sqlx::query_scalar::<_, Option<Uuid>>("SELECT field_id FROM servers WHERE id = $1")
            .bind(server)
            .fetch_one(&app.pool)
            .await
            .unwrap()
    };
    assert_eq!(field_of().await, Some(app.org.field));
    // The older move (to the other field) comes back from its worker and runs now.
    sqlx::query("UPDATE jobs SET status = 'queued', lease_owner = NULL, lease_expires_at = NULL WHERE id = $1::uuid")
        .bind(&ids[3])
        .execute(&app.pool)
        .await
        .unwrap();
    app.run_jobs().await;
    let late = job(&app, &token, &ids[3]).await;
    assert_eq!(late["status"], "succeeded");
    assert_eq!(late["result"]["skipped"], true, "{late}");
    assert_eq!(field_of().await, Some(app.org.field), "the newest move stands");
}

/// A quota change asked for before the last applied one, arriving late, changes nothing.
#[sqlx::test]
async fn a_late_older_quota_change_does_not_overwrite_a_newer_one(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    app.add_server("s-1", 64, Some(app.org.field)).await;
    let token = app.field_admin_token().await;
    let set = |cpu: i64| json!({ "field_id": app.org.field, "dept_id": app.org.dept, "site": "fra", "cpu_limit": cpu, "ram_gb_limit": 8 });
    let older = app.post("/api/v1/allocations/department-quota", &token, set(10)).await;
    let older = older.expect(StatusCode::ACCEPTED, None)["job_id"].as_str().unwrap().to_owned();
    sqlx::query(
        "UPDATE jobs SET status = 'running', lease_owner = 'elsewhere', started_at = now(),
                lease_expires_at = now() + interval '1 minute' WHERE id = $1::uuid",
    )
    .bind(&older)
    .execute(&app.pool)
    .await
    .unwrap();
    app.post("/api/v1/allocations/department-quota", &token, set(20))
        .await
        .expect(StatusCode::ACCEPTED, None);
    app.run_jobs().await;
    sqlx::query("UPDATE jobs SET status = 'queued', lease_owner = NULL, lease_expires_at = NULL WHERE id = $1::uuid")
        .bind(&older)
        .execute(&app.pool)
        .await
        .unwrap();
    app.run_jobs().await;
    assert_eq!(job(&app, &token, &older).await["result"]["skipped"], true);
    let quota = app.get(&format!("/api/v1/departments/{}/quota", app.org.dept), &token).await.body;
    assert_eq!(quota["sites"][0]["quota"]["cpu"], 20, "the newer value stands");
}

/// Changes to one quota submitted at once: none waits for another's commit, so a few may stay
/// queued side by side, but every superseded one names a newer job, and the newest value is
/// the one that stands.
#[sqlx::test]
async fn racing_quota_changes_end_at_the_newest_value(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    app.add_server("s-1", 64, Some(app.org.field)).await;
    let token = app.field_admin_token().await;
    let requests = (1..=24).map(|cpu| {
        let body = json!({ "field_id": app.org.field, "dept_id": app.org.dept, "site": "fra",
                           "cpu_limit": cpu, "ram_gb_limit": 8 });
        app.post("/api/v1/allocations/department-quota", &token, body)
    });
    let mut asked: Vec<(Uuid, i64)> = Vec::new();
    for (cpu, answer) in (1..=24).zip(futures::future::join_all(requests).await) {
        let id = answer.expect(StatusCode::ACCEPTED, None)["job_id"].as_str().unwrap().parse();
        asked.push((id.unwrap(), cpu));
    }
    let (newest, newest_cpu) = *asked.iter().max().unwrap();
    let jobs: Vec<(Uuid, String, Option<Value>)> = sqlx::query_as(
        "SELECT id, status, result FROM jobs WHERE kind = 'allocate_quota' ORDER BY id",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(jobs.len(), 24);
    for (id, status, result) in &jobs {
        match status.as_str() {
            "queued" => {}
            "superseded" => {
                let by: Uuid =
                    result.as_ref().unwrap()["superseded_by"].as_str().unwrap().parse().unwrap();
                assert!(by > *id, "{id} superseded by the older {by}");
            }
            other => panic!("{id} is {other} before any worker ran"),
        }
    }
    assert!(jobs.iter().any(|(id, status, _)| *id == newest && status == "queued"));

    app.run_jobs().await;
    let quota = app.get(&format!("/api/v1/departments/{}/quota", app.org.dept), &token).await.body;
    assert_eq!(quota["sites"][0]["quota"]["cpu"], newest_cpu, "the newest value stands");
    let unfinished: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM jobs WHERE kind = 'allocate_quota'
            AND status NOT IN ('succeeded', 'superseded')",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(unfinished, 0);
}

/// An app whose quota changes wait `delay_ms` before they are due.
async fn app_with_quota_delay(pool: PgPool, delay_ms: u64, workers: bool) -> TestApp {
    let tweak = |c: &mut infrahub::config::Config| {
        let quota = c.workers.kinds.entry("allocate_quota".to_owned()).or_default();
        quota.coalesce_delay_ms = Some(delay_ms);
        // Only a wake-up can make a worker find a job in time: the poll is ten minutes away.
        c.workers.poll_interval_ms = 600_000;
    };
    let app = if workers {
        TestApp::spawn_daemon(pool, Mode::Serve, tweak).await
    } else {
        TestApp::spawn_with(pool, Mode::Serve, tweak).await
    };
    app.add_server("s-1", 64, Some(app.org.field)).await;
    app
}

/// Asks for the test department's quota at fra to be `cpu` cores; returns the job.
async fn set_quota(app: &TestApp, token: &str, cpu: i64) -> Value {
    let body = json!({ "field_id": app.org.field, "dept_id": app.org.dept, "site": "fra",
                       "cpu_limit": cpu, "ram_gb_limit": 8 });
    let answer = app.post("/api/v1/allocations/department-quota", token, body).await;
    let id = answer.expect(StatusCode::ACCEPTED, None)["job_id"].as_str().unwrap().to_owned();
    job(app, token, &id).await
}

fn time(value: &Value) -> DateTime<Utc> {
    value.as_str().unwrap_or_else(|| panic!("not a time: {value}")).parse().unwrap()
}

async fn quota_cpu(app: &TestApp, token: &str) -> Value {
    let quota = app.get(&format!("/api/v1/departments/{}/quota", app.org.dept), token).await.body;
    quota["sites"][0]["quota"]["cpu"].clone()
}

/// A change is due only after its delay; changes of the same quota made meanwhile replace it
/// but keep its time, so a quota changed without pause is still applied once per delay.
#[sqlx::test]
async fn a_change_waits_its_delay_and_newer_ones_keep_its_time(pool: PgPool) {
    let app = app_with_quota_delay(pool, 60_000, false).await;
    let token = app.field_admin_token().await;
    let first = set_quota(&app, &token, 1).await;
    let due = time(&first["next_run_at"]);
    assert_eq!(due - time(&first["created_at"]), TimeDelta::seconds(60), "{first}");
    assert_eq!(app.run_due_jobs().await.attempts, 0, "not due before its delay");
    let mut newest = first.clone();
    for cpu in [2, 3] {
        let older = newest["id"].as_str().unwrap().to_owned();
        newest = set_quota(&app, &token, cpu).await;
        assert_eq!(time(&newest["next_run_at"]), due, "due when the change it replaced was");
        assert_eq!(job(&app, &token, &older).await["status"], "superseded");
    }
    app.run_jobs().await;
    assert_eq!(job(&app, &token, newest["id"].as_str().unwrap()).await["status"], "succeeded");
    assert_eq!(quota_cpu(&app, &token).await, 3, "the newest value");
    // Nothing is queued any more: the next change waits a whole delay again.
    let next = set_quota(&app, &token, 4).await;
    assert_eq!(time(&next["next_run_at"]) - time(&next["created_at"]), TimeDelta::seconds(60));
}

#[sqlx::test]
async fn without_a_delay_a_change_is_due_at_once(pool: PgPool) {
    let app = app_with_quota_delay(pool, 0, false).await;
    let token = app.field_admin_token().await;
    let change = set_quota(&app, &token, 5).await;
    assert_eq!(change["next_run_at"], change["created_at"]);
    assert_eq!(app.run_due_jobs().await.attempts, 1);
    assert_eq!(quota_cpu(&app, &token).await, 5);
}

/// Running workers that poll only every ten minutes apply a delayed change once its delay is
/// over, not before: the notification of the change says when it will be due.
#[sqlx::test]
async fn workers_apply_a_delayed_change_when_its_delay_is_over(pool: PgPool) {
    let app = app_with_quota_delay(pool, 300, true).await;
    let token = app.field_admin_token().await;
    let change = set_quota(&app, &token, 7).await;
    let id = change["id"].as_str().unwrap();
    wait_until("the change to be applied", Duration::from_secs(30), || async {
        job(&app, &token, id).await["status"] == "succeeded"
    })
    .await;
    let applied = job(&app, &token, id).await;
    let waited = time(&applied["started_at"]) - time(&applied["created_at"]);
    assert!(waited >= TimeDelta::milliseconds(300), "started after {waited}");
    assert_eq!(quota_cpu(&app, &token).await, 7);
}
