//! Wake-ups go out after the commit, never inside the transaction that makes a job due, and
//! still reach idle workers whose poll is ten minutes away, whichever way the job came in.

use std::time::Duration;

use infrahub::config::Mode;
use infrahub::store::jobs::{self, NOTIFY_CHANNEL, NewJob};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tracing::instrument::WithSubscriber;

use crate::helpers::{Logged, TestApp, context_with, wait_until};

/// A daemon with workers that poll only every ten minutes, listening and idle: only a wake-up
/// gets a job run now. (Until it listens, a job would be found by the first claim.)
async fn idle_daemon(pool: PgPool) -> TestApp {
    let app = TestApp::spawn_daemon(pool.clone(), Mode::Serve, |c| {
        c.workers.poll_interval_ms = 600_000;
    })
    .await;
    listening(&pool).await;
    app
}

/// Waits until a daemon's engine listens for wake-ups.
async fn listening(pool: &PgPool) {
    wait_until("the engine to listen", Duration::from_secs(30), || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM pg_stat_activity
              WHERE datname = current_database() AND query LIKE 'LISTEN%'",
        )
        .fetch_one(pool)
        .await
        .unwrap()
            > 0
    })
    .await;
}

/// The next notification, within 30 s.
async fn next(listener: &mut PgListener) -> String {
    let note = tokio::time::timeout(Duration::from_secs(30), listener.recv()).await;
    note.expect("a notification within 30 s").unwrap().payload().to_owned()
}

/// Waits until job `id`, read by `token`, has been started, and returns it.
async fn started(app: &TestApp, token: &str, id: &str) -> Value {
    let path = format!("/api/v1/jobs/{id}");
    wait_until(&format!("job {id} to start"), Duration::from_secs(30), || async {
        !app.get(&path, token).await.body["started_at"].is_null()
    })
    .await;
    app.get(&path, token).await.body
}

/// Notifications arrive in commit order: had the enqueue notified inside its transaction, its
/// notification would come before the marker sent after that transaction committed.
#[sqlx::test]
async fn enqueueing_notifies_nothing_inside_its_transaction(pool: PgPool) {
    let mut listener = PgListener::connect_with(&pool).await.unwrap();
    listener.listen(NOTIFY_CHANNEL).await.unwrap();
    let mut tx = pool.begin().await.unwrap();
    let new = NewJob::new("noop", json!({}), "test", 3);
    let enqueued = jobs::enqueue(&mut tx, &new).await.unwrap();
    tx.commit().await.unwrap();
    let mut conn = pool.acquire().await.unwrap();
    sqlx::query("SELECT pg_notify($1, 'marker')")
        .bind(NOTIFY_CHANNEL)
        .execute(&mut *conn)
        .await
        .unwrap();
    let wake_up = enqueued.wake_up().cloned().expect("a new job has a wake-up");
    jobs::wake(&mut conn, std::slice::from_ref(&wake_up)).await.unwrap();
    assert_eq!(next(&mut listener).await, "marker", "the transaction notified");
    assert_eq!(next(&mut listener).await, "noop", "the wake-up sent after the commit");
    assert_eq!(wake_up.payload(), "noop");
}

/// A job due later says when in its wake-up: the milliseconds left, counted by PostgreSQL.
#[sqlx::test]
async fn the_wake_up_of_a_job_due_later_says_when(pool: PgPool) {
    let mut conn = pool.acquire().await.unwrap();
    let later = NewJob { delay: Duration::from_secs(60), ..NewJob::new("noop", json!({}), "t", 3) };
    let enqueued = jobs::enqueue(&mut conn, &later).await.unwrap();
    let payload = enqueued.wake_up().unwrap().payload().to_owned();
    let (kind, ms) = payload.split_once(' ').expect("a delay");
    assert_eq!(kind, "noop");
    let ms: u64 = ms.parse().unwrap();
    assert!((59_000..=60_000).contains(&ms), "{payload}");
    let (count, batch) =
        jobs::enqueue_batch(&mut conn, &NewJob::new("noop", json!({}), "t", 3), 3).await.unwrap();
    assert_eq!((count, batch.payload()), (3, "noop"));
}

/// A maintenance job submitted by hand, on a connection of its own and, with an
/// `Idempotency-Key`, in a transaction that commits with the stored answer: both run at once.
#[sqlx::test]
async fn submitted_jobs_wake_idle_workers_with_or_without_a_key(pool: PgPool) {
    let app = idle_daemon(pool).await;
    let admin = app.admin_token().await;
    let plain = app.post("/api/v1/admin/jobs", &admin, json!({ "kind": "noop" })).await;
    let plain = plain.expect(StatusCode::ACCEPTED, None)["job_id"].as_str().unwrap().to_owned();
    let keyed = app
        .client
        .request(Method::POST, format!("{}/api/v1/admin/jobs", app.base))
        .bearer_auth(&admin)
        .header("Idempotency-Key", "wake-me")
        .json(&json!({ "kind": "noop" }))
        .send()
        .await
        .unwrap();
    let keyed = crate::helpers::into_answer(keyed).await.expect(StatusCode::ACCEPTED, None);
    let keyed = keyed["job_id"].as_str().unwrap().to_owned();
    for id in [plain, keyed] {
        started(&app, &admin, &id).await;
    }
    app.stop().await;
}

/// A project's provisioning job, enqueued in the request's own transaction beside the project,
/// runs at once too.
#[sqlx::test]
async fn a_project_request_wakes_idle_workers(pool: PgPool) {
    let app = idle_daemon(pool).await;
    app.give_quota(8, 16).await;
    let lead = app.team_lead_token().await;
    let body = json!({ "name": "wake", "site": "fra", "sla_type": "bronze",
                       "performance_tier": "regular" });
    let answer = app.post("/api/v1/projects", &lead, body).await;
    let job_id = answer.expect(StatusCode::ACCEPTED, None)["job_id"].as_str().unwrap().to_owned();
    let job = started(&app, &app.admin_token().await, &job_id).await;
    assert_eq!(job["kind"], "provision_namespace");
    app.stop().await;
}

/// A provisioning that fails for good settles its project `failed` in the transaction that
/// records the failure, which enqueues the `project.failed` webhook's delivery: that wakes
/// idle workers once the transaction has committed: the failure is recorded as a unit of work,
/// so no wake-up goes out before its commit (which would wake the workers for nothing, and
/// leave the delivery to the poll; the warning says when one did).
#[sqlx::test]
async fn a_delivery_enqueued_by_a_failure_hook_wakes_idle_workers(pool: PgPool) {
    let app = TestApp::spawn_with(pool.clone(), Mode::Serve, |c| {
        c.workers.poll_interval_ms = 600_000;
    })
    .await;
    let admin = app.admin_token().await;
    let hook =
        json!({ "name": "ops", "url": "https://hooks.example/x", "events": ["project.failed"] });
    app.post("/api/v1/admin/webhooks", &admin, hook).await.expect(StatusCode::CREATED, None);
    app.give_quota(8, 16).await;
    let lead = app.team_lead_token().await;
    let body = json!({ "name": "doomed", "site": "fra", "sla_type": "bronze",
                       "performance_tier": "regular" });
    app.post("/api/v1/projects", &lead, body).await.expect(StatusCode::ACCEPTED, None);
    let mut conn = pool.acquire().await.unwrap();
    let claimed = jobs::claim(&mut conn, "provision_namespace", "test", 60.0, 1).await.unwrap();
    drop(conn);
    let claimed = claimed.into_iter().next().expect("the provisioning job");

    let engine = infrahub::jobs::engine::start(app.ctx.clone());
    listening(&pool).await;
    let logged = Logged::default();
    let failed = infrahub::app::jobs::fail_attempt(&app.ctx, &claimed, "test", "boom", None)
        .with_subscriber(logged.subscriber())
        .await;
    assert!(failed.unwrap(), "the claim was held");
    assert!(!logged.text().contains("outside a unit of work"), "{}", logged.text());
    let delivery: String =
        sqlx::query_scalar("SELECT id::text FROM jobs WHERE kind = 'deliver_webhook'")
            .fetch_one(&pool)
            .await
            .unwrap();
    started(&app, &admin, &delivery).await;
    engine.shutdown(Duration::from_secs(5)).await;
}

/// A daemon serving only the API hands jobs to the workers of another (their own context, as
/// another process would have): the wake-ups go through PostgreSQL, for a job due now and for a
/// quota change due 300 ms later (its wake-up says so, and the alarm rings then, not before).
#[sqlx::test]
async fn a_job_taken_in_by_one_daemon_wakes_the_idle_workers_of_another(pool: PgPool) {
    let config = |c: &mut infrahub::config::Config| {
        c.workers.poll_interval_ms = 600_000;
        let quota = c.workers.kinds.entry("allocate_quota".to_owned()).or_default();
        quota.coalesce_delay_ms = Some(300);
    };
    let intake = TestApp::spawn_with(pool.clone(), Mode::Serve, config).await;
    intake.add_server("s-1", 64, Some(intake.org.field)).await;
    let workers = infrahub::jobs::engine::start(context_with(pool.clone(), Mode::Serve, config));
    listening(&pool).await;
    let admin = intake.admin_token().await;
    let answer = intake.post("/api/v1/admin/jobs", &admin, json!({ "kind": "noop" })).await;
    let id = answer.expect(StatusCode::ACCEPTED, None)["job_id"].as_str().unwrap().to_owned();
    started(&intake, &admin, &id).await;

    let body = json!({ "field_id": intake.org.field, "dept_id": intake.org.dept, "site": "fra",
                       "cpu_limit": 4, "ram_gb_limit": 8 });
    let answer = intake.post("/api/v1/allocations/department-quota", &admin, body).await;
    let id = answer.expect(StatusCode::ACCEPTED, None)["job_id"].as_str().unwrap().to_owned();
    let change = started(&intake, &admin, &id).await;
    let at = |field: &str| {
        change[field].as_str().unwrap().parse::<chrono::DateTime<chrono::Utc>>().unwrap()
    };
    let waited = at("started_at") - at("created_at");
    assert!(waited >= chrono::TimeDelta::milliseconds(300), "started after {waited}");
    workers.shutdown(Duration::from_secs(5)).await;
}
