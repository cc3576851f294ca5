//! The real daemon as a child process: SIGKILL mid-job loses nothing, SIGTERM drains.

use std::time::Duration;

use infrahub::domain::job::JobStatus;
use infrahub::store::jobs::NewJob;
use serde_json::json;
use sqlx::PgPool;
use uuid::Uuid;

use crate::e2e::spawn;
use crate::helpers::{TEST_SECRET, database_url, wait_until};
use crate::jobs::{job, submit, wait_for_status};

fn sleep_job(millis: u64) -> NewJob<'static> {
    NewJob::new("sleep", json!({ "millis": millis }), "test", 5)
}

/// `sleep` jobs in `status` (cron jobs such as `reconcile` run besides them).
async fn count(pool: &PgPool, status: &str) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM jobs WHERE kind = 'sleep' AND status = $1")
        .bind(status)
        .fetch_one(pool)
        .await
        .unwrap()
}

#[sqlx::test]
async fn a_killed_daemons_jobs_finish_exactly_once_after_a_restart(pool: PgPool) {
    let url = database_url(&pool);
    let env = [
        ("INFRAHUB_DATABASE__URL", url.as_str()),
        ("INFRAHUB_AUTH__JWT_SECRET", TEST_SECRET),
        ("INFRAHUB_WORKERS__LEASE_SECS", "3"),
        ("INFRAHUB_WORKERS__POLL_INTERVAL_MS", "200"),
        ("INFRAHUB_WORKERS__KINDS__SLEEP__CONCURRENCY", "4"),
    ];
    let first = spawn(&["serve", "--role", "worker", "--listen", "127.0.0.1:0"], &env).await;
    let mut ids: Vec<Uuid> = Vec::new();
    for _ in 0..12 {
        ids.push(submit(&pool, &sleep_job(1_000)).await);
    }
    wait_until("attempts running in the first daemon", Duration::from_secs(30), || async {
        count(&pool, "running").await >= 2
    })
    .await;
    let killed = first.kill().await;
    assert!(!killed.success(), "SIGKILL ends the process abruptly");
    let orphaned: Vec<Uuid> =
        sqlx::query_scalar("SELECT id FROM jobs WHERE kind = 'sleep' AND status = 'running'")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert!(!orphaned.is_empty());

    let second = spawn(&["serve", "--role", "worker", "--listen", "127.0.0.1:0"], &env).await;
    for id in &ids {
        let done = wait_for_status(&pool, *id, JobStatus::Succeeded).await;
        let result = done.result.as_ref().unwrap();
        assert_eq!(result["attempt"], done.attempts, "the recorded result is the last attempt's");
        if orphaned.contains(id) {
            assert_eq!(done.attempts, 2, "the killed attempt counts once");
            assert!(done.errors[0]["error"].as_str().unwrap().contains("lease expired"));
        } else {
            assert!(done.errors.as_array().unwrap().is_empty());
        }
    }
    assert_eq!(count(&pool, "succeeded").await, 12);
    let running: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM jobs WHERE kind = 'sleep' AND lease_owner IS NOT NULL",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(running, 0, "no claim is left behind");
    assert!(second.terminate().await.success());
}

#[sqlx::test]
async fn sigterm_lets_running_jobs_finish_then_exits_0(pool: PgPool) {
    let url = database_url(&pool);
    let env = [
        ("INFRAHUB_DATABASE__URL", url.as_str()),
        ("INFRAHUB_AUTH__JWT_SECRET", TEST_SECRET),
        ("INFRAHUB_WORKERS__SHUTDOWN_GRACE_SECS", "20"),
    ];
    let daemon = spawn(&["serve", "--listen", "127.0.0.1:0"], &env).await;
    assert!(!daemon.base.is_empty(), "role all serves HTTP too");
    let id = submit(&pool, &sleep_job(1_500)).await;
    wait_for_status(&pool, id, JobStatus::Running).await;
    let status = daemon.terminate().await;
    assert!(status.success(), "exit 0 after draining, got {status:?}");
    let done = job(&pool, id).await;
    assert_eq!(done.status, JobStatus::Succeeded, "the running job finished before the exit");
    assert_eq!(done.attempts, 1);
}

#[sqlx::test]
async fn two_daemons_on_one_database_fire_each_cron_tick_once(pool: PgPool) {
    let url = database_url(&pool);
    let env = [
        ("INFRAHUB_DATABASE__URL", url.as_str()),
        ("INFRAHUB_AUTH__JWT_SECRET", TEST_SECRET),
        ("INFRAHUB_SCHEDULE__PRUNE_JOBS", "* * * * * *"),
    ];
    let first = spawn(&["serve", "--role", "worker", "--listen", "127.0.0.1:0"], &env).await;
    let second = spawn(&["serve", "--role", "worker", "--listen", "127.0.0.1:0"], &env).await;
    let ticks = || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM cron_ticks WHERE schedule = 'prune_jobs'",
        )
        .fetch_one(&pool)
        .await
        .unwrap()
    };
    wait_until("four cron ticks", Duration::from_secs(30), || async { ticks().await >= 4 }).await;
    assert!(first.terminate().await.success());
    assert!(second.terminate().await.success());

    let rows: Vec<(chrono::DateTime<chrono::Utc>, Option<Uuid>)> = sqlx::query_as(
        "SELECT tick, job_id FROM cron_ticks WHERE schedule = 'prune_jobs' ORDER BY tick",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert!(
        rows.windows(2).all(|w| w[1].0 - w[0].0 == chrono::Duration::seconds(1)),
        "one row per second: {rows:?}"
    );
    assert!(rows.iter().all(|(_, job)| job.is_some()), "every tick enqueued (or joined) a job");
    let jobs_made: i64 = sqlx::query_scalar("SELECT count(*) FROM jobs WHERE kind = 'prune_jobs'")
        .fetch_one(&pool)
        .await
        .unwrap();
    let distinct: i64 = sqlx::query_scalar(
        "SELECT count(DISTINCT job_id) FROM cron_ticks WHERE schedule = 'prune_jobs'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(jobs_made, distinct, "no job without its tick: two daemons did not double a tick");
    assert!(jobs_made <= rows.len() as i64);
}
