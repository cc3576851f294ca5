//! The job engine against a real PostgreSQL: transactional enqueue, outcomes, durable
//! retries, polling, timeouts, dedupe, fencing, lease hand-back, cron.

use std::time::Duration;

use infrahub::config::Mode;
use infrahub::context::Context;
use infrahub::domain::job::JobStatus;
use infrahub::jobs::engine::{self, EngineHandle};
use infrahub::jobs::scheduler::{self, Entry};
use infrahub::store::jobs::{self, Enqueued, Job, NewJob};
use serde_json::{Value, json};
use sqlx::PgPool;
use uuid::Uuid;

use crate::helpers::{TestApp, wait_until};

const PATIENCE: Duration = Duration::from_secs(30);

fn new_job(kind: &str, payload: Value) -> NewJob<'_> {
    NewJob::new(kind, payload, "test", 3)
}

/// Enqueues `new` on a connection of its own (committed at once) and wakes the dispatchers of
/// every daemon, as the daemon's own submissions do.
pub async fn submit(pool: &PgPool, new: &NewJob<'_>) -> Uuid {
    let mut conn = pool.acquire().await.unwrap();
    let enqueued = jobs::enqueue(&mut conn, new).await.unwrap();
    let wake_ups: Vec<_> = enqueued.wake_up().into_iter().cloned().collect();
    jobs::wake(&mut conn, &wake_ups).await.unwrap();
    enqueued.job().id
}

pub async fn job(pool: &PgPool, id: Uuid) -> Job {
    let mut conn = pool.acquire().await.unwrap();
    jobs::find(&mut conn, id).await.unwrap().expect("job exists")
}

pub async fn wait_for_status(pool: &PgPool, id: Uuid, status: JobStatus) -> Job {
    wait_until(&format!("job {id} to be {status}"), PATIENCE, || async {
        job(pool, id).await.status == status
    })
    .await;
    job(pool, id).await
}

/// An app whose `sleep` kind retries after 5-10 ms, then 10-20 ms.
async fn app_with_fast_retries(pool: PgPool) -> TestApp {
    TestApp::spawn_daemon(pool, Mode::Serve, |c| {
        let sleep = c.workers.kinds.entry("sleep".to_owned()).or_default();
        sleep.backoff_base_ms = Some(10);
        sleep.max_attempts = Some(3);
    })
    .await
}

/// Idle workers polling only every ten minutes still run a job when its re-scheduled polls
/// and its retry fall due: each says when it will be due, and the engine wakes up then.
#[sqlx::test]
async fn polls_and_retries_wake_idle_workers_when_they_fall_due(pool: PgPool) {
    let _app = TestApp::spawn_daemon(pool.clone(), Mode::Serve, |c| {
        c.workers.poll_interval_ms = 600_000;
        c.workers.kinds.entry("sleep".to_owned()).or_default().backoff_base_ms = Some(200);
    })
    .await;
    let payload = json!({ "polls": 2, "poll_millis": 200, "transient_failures": 1 });
    let id = submit(&pool, &new_job("sleep", payload)).await;
    let done = wait_for_status(&pool, id, JobStatus::Succeeded).await;
    assert_eq!(done.result.unwrap()["attempt"], 2, "one retry");
    assert_eq!(done.errors.as_array().unwrap().len(), 1);
    let claims: i32 = sqlx::query_scalar("SELECT claim_seq FROM jobs WHERE id = $1")
        .bind(id)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(claims, 4, "two polls, a failure and a success");
}

/// A job due later whose notification went out before any daemon listened still runs when it
/// falls due, not at the next poll: a daemon that starts listening sets the alarms of the jobs
/// due later.
#[sqlx::test]
async fn a_daemon_that_starts_listening_sets_alarms_for_jobs_due_later(pool: PgPool) {
    // Due well after the daemon is up: before that, its first claim would find it anyway.
    let due = chrono::Utc::now() + chrono::TimeDelta::seconds(3);
    let id = submit(&pool, &NewJob { run_at: Some(due), ..new_job("noop", json!({})) }).await;
    let _app = TestApp::spawn_daemon(pool.clone(), Mode::Serve, |c| {
        c.workers.poll_interval_ms = 600_000;
    })
    .await;
    let done = wait_for_status(&pool, id, JobStatus::Succeeded).await;
    assert!(done.started_at.unwrap() >= due, "ran before it was due");
}

/// The daemon's listening connection is cut, and a job due later is submitted while it is
/// down: its notification is lost, yet it runs when it falls due (the poll is ten minutes
/// away), because a daemon that listens again looks up the jobs due later.
#[sqlx::test]
async fn a_lost_listening_connection_is_made_good(pool: PgPool) {
    let _app = TestApp::spawn_daemon(pool.clone(), Mode::Serve, |c| {
        c.workers.poll_interval_ms = 600_000;
    })
    .await;
    let listening = || async {
        sqlx::query_scalar::<_, i32>(
            "SELECT pid FROM pg_stat_activity
              WHERE datname = current_database() AND query LIKE 'LISTEN%'",
        )
        .fetch_optional(&pool)
        .await
        .unwrap()
    };
    wait_until("the daemon to listen", PATIENCE, || async { listening().await.is_some() }).await;
    let pid = listening().await.unwrap();
    sqlx::query("SELECT pg_terminate_backend($1)").bind(pid).execute(&pool).await.unwrap();
    // The daemon waits a second before it listens again: this is sent meanwhile.
    let due = chrono::Utc::now() + chrono::TimeDelta::seconds(3);
    let id = submit(&pool, &NewJob { run_at: Some(due), ..new_job("noop", json!({})) }).await;
    let done = wait_for_status(&pool, id, JobStatus::Succeeded).await;
    assert!(done.started_at.unwrap() >= due, "ran before it was due");
    let again = listening().await.expect("the daemon listens again");
    assert_ne!(again, pid, "on a new connection");
}

fn start(ctx: &Context) -> EngineHandle {
    engine::start(ctx.clone())
}

#[sqlx::test]
async fn enqueue_is_part_of_the_callers_transaction(pool: PgPool) {
    let mut tx = pool.begin().await.unwrap();
    let rolled_back = jobs::enqueue(&mut tx, &new_job("noop", json!({}))).await.unwrap().job().id;
    tx.rollback().await.unwrap();
    let mut conn = pool.acquire().await.unwrap();
    assert!(jobs::find(&mut conn, rolled_back).await.unwrap().is_none());

    let mut tx = pool.begin().await.unwrap();
    let committed = jobs::enqueue(&mut tx, &new_job("noop", json!({}))).await.unwrap().job().id;
    tx.commit().await.unwrap();
    let stored = job(&pool, committed).await;
    assert_eq!((stored.status, stored.attempts, stored.max_attempts), (JobStatus::Queued, 0, 3));
    assert!(stored.next_run_at.is_some() && stored.started_at.is_none());
}

#[sqlx::test]
async fn queued_jobs_run_to_success(pool: PgPool) {
    let app = TestApp::spawn_daemon(pool.clone(), Mode::Serve, |_| {}).await;
    let mut ids = Vec::new();
    for _ in 0..20 {
        ids.push(submit(&pool, &new_job("noop", json!({}))).await);
    }
    for id in ids {
        let done = wait_for_status(&pool, id, JobStatus::Succeeded).await;
        assert_eq!(done.attempts, 1);
        assert_eq!(done.result, Some(json!({})));
        assert!(done.started_at.is_some() && done.finished_at >= done.started_at);
        assert!(done.next_run_at.is_none() && done.last_error.is_none());
    }
    app.stop().await;
}

#[sqlx::test]
async fn permanent_failures_fail_at_once(pool: PgPool) {
    let app = app_with_fast_retries(pool.clone()).await;
    let id = submit(&pool, &new_job("sleep", json!({ "permanent": true }))).await;
    let failed = wait_for_status(&pool, id, JobStatus::Failed).await;
    assert_eq!(failed.attempts, 1);
    assert_eq!(failed.last_error.as_deref(), Some("asked to fail permanently"));
    assert_eq!(failed.errors[0]["permanent"], true);
    assert_eq!(failed.errors.as_array().unwrap().len(), 1);
    assert!(failed.finished_at.is_some());

    let bad = submit(&pool, &new_job("sleep", json!({ "millis": "soon" }))).await;
    let failed = wait_for_status(&pool, bad, JobStatus::Failed).await;
    assert!(failed.last_error.unwrap().starts_with("bad payload"));
    assert_eq!(failed.attempts, 1);
    app.stop().await;
}

#[sqlx::test]
async fn transient_failures_retry_until_success_or_the_last_attempt(pool: PgPool) {
    let app = app_with_fast_retries(pool.clone()).await;
    let recovers = submit(&pool, &new_job("sleep", json!({ "transient_failures": 2 }))).await;
    let gives_up = submit(&pool, &new_job("sleep", json!({ "transient_failures": 9 }))).await;

    let done = wait_for_status(&pool, recovers, JobStatus::Succeeded).await;
    assert_eq!(done.attempts, 3);
    let errors: Vec<&str> =
        done.errors.as_array().unwrap().iter().map(|e| e["error"].as_str().unwrap()).collect();
    assert_eq!(errors, ["planned transient failure 1", "planned transient failure 2"]);
    assert!(done.errors.as_array().unwrap().iter().all(|e| e["permanent"] == false));
    assert_eq!(done.result.unwrap()["attempt"], 3);

    let failed = wait_for_status(&pool, gives_up, JobStatus::Failed).await;
    assert_eq!((failed.attempts, failed.max_attempts), (3, 3));
    assert_eq!(failed.errors.as_array().unwrap().len(), 3);
    assert_eq!(failed.last_error.as_deref(), Some("planned transient failure 3"));
    app.stop().await;
}

#[sqlx::test]
async fn a_retry_waits_durably_across_a_restart(pool: PgPool) {
    let app = TestApp::spawn_with(pool.clone(), Mode::Serve, |c| {
        let sleep = c.workers.kinds.entry("sleep".to_owned()).or_default();
        // The wait is uniform in [30 min, 1 h]: far longer than this test, whatever the jitter.
        sleep.backoff_base_ms = Some(3_600_000);
        sleep.backoff_max_secs = Some(3_600);
    })
    .await;
    let engine = start(&app.ctx);
    let id = submit(&pool, &new_job("sleep", json!({ "transient_failures": 1 }))).await;
    let waiting = wait_for_status(&pool, id, JobStatus::Retrying).await;
    let retry_at = waiting.next_run_at.expect("a retrying job has a next run time");
    assert!(
        retry_at
            > waiting.errors[0]["at"]
                .as_str()
                .unwrap()
                .parse::<chrono::DateTime<chrono::Utc>>()
                .unwrap()
    );
    engine.shutdown(Duration::from_secs(5)).await;

    // A new engine (as after a restart) runs a fresh sleep job but leaves the waiting one alone.
    let restarted = start(&app.ctx);
    let sentinel = submit(&pool, &new_job("sleep", json!({}))).await;
    wait_for_status(&pool, sentinel, JobStatus::Succeeded).await;
    let still = job(&pool, id).await;
    assert_eq!(
        (still.status, still.attempts, still.next_run_at),
        (JobStatus::Retrying, 1, Some(retry_at))
    );

    // Once the wait is over it runs.
    sqlx::query("UPDATE jobs SET run_at = now() WHERE id = $1")
        .bind(id)
        .execute(&pool)
        .await
        .unwrap();
    let done = wait_for_status(&pool, id, JobStatus::Succeeded).await;
    assert_eq!(done.attempts, 2);
    restarted.shutdown(Duration::from_secs(5)).await;
}

#[sqlx::test]
async fn polls_are_rescheduled_without_spending_attempts(pool: PgPool) {
    let app = TestApp::spawn_daemon(pool.clone(), Mode::Serve, |_| {}).await;
    let id = submit(&pool, &new_job("sleep", json!({ "polls": 4, "poll_millis": 20 }))).await;
    let done = wait_for_status(&pool, id, JobStatus::Succeeded).await;
    assert_eq!(done.attempts, 1, "polling spent no attempts");
    assert!(done.errors.as_array().unwrap().is_empty());
    let claims: i32 = sqlx::query_scalar("SELECT claim_seq FROM jobs WHERE id = $1")
        .bind(id)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(claims, 5, "four polls and the final run");
    app.stop().await;
}

#[sqlx::test]
async fn attempts_time_out_inside_the_handler(pool: PgPool) {
    let app = TestApp::spawn_daemon(pool.clone(), Mode::Serve, |c| {
        let sleep = c.workers.kinds.entry("sleep".to_owned()).or_default();
        sleep.timeout_secs = Some(1);
    })
    .await;
    let mut slow = new_job("sleep", json!({ "millis": 60_000 }));
    slow.max_attempts = 1;
    let id = submit(&pool, &slow).await;
    let failed = wait_for_status(&pool, id, JobStatus::Failed).await;
    assert_eq!(failed.last_error.as_deref(), Some("the attempt timed out after 1s"));
    assert!(
        failed.finished_at.unwrap() - failed.started_at.unwrap() < chrono::Duration::seconds(30)
    );
    app.stop().await;
}

#[sqlx::test]
async fn dedupe_keys_hold_under_20_concurrent_submissions(pool: PgPool) {
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let pool = pool.clone();
        tasks.push(tokio::spawn(async move {
            let mut new = new_job("prune_jobs", json!({}));
            new.dedupe_key = Some("prune_jobs".to_owned());
            let mut tx = pool.begin().await.unwrap();
            let enqueued = jobs::enqueue(&mut tx, &new).await.unwrap();
            tx.commit().await.unwrap();
            (enqueued.job().id, matches!(enqueued, Enqueued::Created(..)))
        }));
    }
    let mut results = Vec::new();
    for task in tasks {
        results.push(task.await.unwrap());
    }
    let first = results[0].0;
    assert!(results.iter().all(|(id, _)| *id == first), "every submission got the same job");
    assert_eq!(results.iter().filter(|(_, created)| *created).count(), 1);
    let count: i64 =
        sqlx::query_scalar("SELECT count(*) FROM jobs").fetch_one(&pool).await.unwrap();
    assert_eq!(count, 1);

    // Once that job is finished the key is free again.
    sqlx::query("UPDATE jobs SET status = 'succeeded', finished_at = now()")
        .execute(&pool)
        .await
        .unwrap();
    let mut new = new_job("prune_jobs", json!({}));
    new.dedupe_key = Some("prune_jobs".to_owned());
    assert_ne!(submit(&pool, &new).await, first);
}

#[sqlx::test]
async fn a_stale_worker_cannot_complete_a_reclaimed_job(pool: PgPool) {
    let id = submit(&pool, &new_job("noop", json!({}))).await;
    let mut conn = pool.acquire().await.unwrap();
    let first = jobs::claim(&mut conn, "noop", "worker-a", 30.0, 10).await.unwrap().remove(0);
    assert!(
        jobs::claim(&mut conn, "noop", "worker-b", 30.0, 10).await.unwrap().is_empty(),
        "claimed once"
    );
    sqlx::query("UPDATE jobs SET lease_expires_at = now() - interval '1 second'")
        .execute(&mut *conn)
        .await
        .unwrap();
    let reaped = jobs::reap_expired_leases(&mut conn).await.unwrap();
    assert_eq!(reaped.iter().map(|r| (r.job.id, r.failed)).collect::<Vec<_>>(), [(id, false)]);
    let second = jobs::claim(&mut conn, "noop", "worker-b", 30.0, 10).await.unwrap().remove(0);
    assert_eq!((second.attempt, second.claim), (2, 2));

    assert!(!jobs::succeed(&mut conn, &first, "worker-a", &json!({ "by": "a" })).await.unwrap());
    assert!(jobs::fail(&mut conn, &first, "worker-a", "late", None).await.unwrap().is_none());
    assert!(jobs::succeed(&mut conn, &second, "worker-b", &json!({ "by": "b" })).await.unwrap());
    assert!(
        !jobs::succeed(&mut conn, &second, "worker-b", &json!({ "by": "b again" })).await.unwrap()
    );
    let done = job(&pool, id).await;
    assert_eq!((done.status, done.result), (JobStatus::Succeeded, Some(json!({ "by": "b" }))));
    assert!(done.errors[0]["error"].as_str().unwrap().contains("lease expired"));
}

#[sqlx::test]
async fn jobs_of_a_vanished_worker_are_handed_back_and_rerun(pool: PgPool) {
    let app = TestApp::spawn_with(pool.clone(), Mode::Serve, |c| c.workers.lease_secs = 3).await;
    let id = submit(&pool, &new_job("noop", json!({}))).await;
    let mut conn = pool.acquire().await.unwrap();
    jobs::claim(&mut conn, "noop", "ghost:1:dead", 1.0, 1).await.unwrap();
    drop(conn);
    let engine = start(&app.ctx);
    let done = wait_for_status(&pool, id, JobStatus::Succeeded).await;
    assert_eq!(done.attempts, 2);
    assert!(done.errors[0]["error"].as_str().unwrap().contains("lease expired"));
    engine.shutdown(Duration::from_secs(5)).await;
}

#[sqlx::test]
async fn cancelled_jobs_never_run(pool: PgPool) {
    let app = TestApp::spawn(pool.clone()).await;
    let queued = submit(&pool, &new_job("noop", json!({}))).await;
    let mut conn = pool.acquire().await.unwrap();
    let cancelled = jobs::cancel(&mut conn, queued).await.unwrap().unwrap().unwrap();
    assert_eq!(cancelled.status, JobStatus::Cancelled);
    assert_eq!(
        jobs::cancel(&mut conn, queued).await.unwrap().unwrap().unwrap_err(),
        JobStatus::Cancelled
    );
    assert!(jobs::cancel(&mut conn, Uuid::now_v7()).await.unwrap().is_none());
    drop(conn);
    let engine = start(&app.ctx);
    let sentinel = submit(&pool, &new_job("noop", json!({}))).await;
    wait_for_status(&pool, sentinel, JobStatus::Succeeded).await;
    let still = job(&pool, queued).await;
    assert_eq!((still.status, still.attempts), (JobStatus::Cancelled, 0));
    engine.shutdown(Duration::from_secs(5)).await;
}

#[sqlx::test]
async fn each_cron_tick_fires_once_across_two_schedulers(pool: PgPool) {
    let app = TestApp::spawn(pool.clone()).await;
    // A second daemon: its own pool on the same database.
    let other_pool =
        sqlx::PgPool::connect_with(pool.connect_options().as_ref().clone()).await.unwrap();
    let mut other = app.ctx.clone();
    other.pool = other_pool;
    let entry = Entry::new("every_second", "noop", "* * * * * *").unwrap();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut tasks = scheduler::spawn(app.ctx.clone(), vec![entry.clone()], stopped.clone());
    tasks.extend(scheduler::spawn(other, vec![entry], stopped));
    let ticks = || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM cron_ticks")
            .fetch_one(&pool)
            .await
            .unwrap()
    };
    wait_until("three cron ticks", PATIENCE, || async { ticks().await >= 3 }).await;
    stop.send(true).unwrap();
    for task in tasks {
        task.await.unwrap();
    }
    let rows: Vec<(chrono::DateTime<chrono::Utc>, Option<Uuid>)> =
        sqlx::query_as("SELECT tick, job_id FROM cron_ticks ORDER BY tick")
            .fetch_all(&pool)
            .await
            .unwrap();
    let jobs_made: i64 = sqlx::query_scalar("SELECT count(*) FROM jobs WHERE kind = 'noop'")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(jobs_made, rows.len() as i64, "one job per tick, not one per scheduler");
    assert!(rows.iter().all(|(_, job)| job.is_some()));
    assert!(
        rows.windows(2).all(|w| w[1].0 - w[0].0 == chrono::Duration::seconds(1)),
        "no tick skipped: {rows:?}"
    );
}

#[sqlx::test]
async fn missed_ticks_are_caught_up_once(pool: PgPool) {
    let app = TestApp::spawn(pool.clone()).await;
    let entry = Entry::new("minutely", "noop", "0 * * * * *").unwrap();
    let now = chrono::Utc::now();
    assert_eq!(
        scheduler::catch_up(&app.ctx, &entry, now).await.unwrap(),
        None,
        "never fired: nothing to catch up"
    );

    let long_ago = now - chrono::Duration::minutes(10);
    sqlx::query("INSERT INTO cron_ticks (schedule, tick) VALUES ('minutely', $1)")
        .bind(long_ago)
        .execute(&pool)
        .await
        .unwrap();
    let caught = scheduler::catch_up(&app.ctx, &entry, now).await.unwrap();
    assert!(caught.is_some());
    assert_eq!(scheduler::catch_up(&app.ctx, &entry, now).await.unwrap(), None, "only once");
    let ticks: i64 =
        sqlx::query_scalar("SELECT count(*) FROM cron_ticks").fetch_one(&pool).await.unwrap();
    assert_eq!(ticks, 2, "the old tick and one catch-up, not ten");
    let jobs_made: i64 =
        sqlx::query_scalar("SELECT count(*) FROM jobs").fetch_one(&pool).await.unwrap();
    assert_eq!(jobs_made, 1);
}

#[sqlx::test]
async fn pruning_deletes_only_old_finished_jobs(pool: PgPool) {
    let app = TestApp::spawn(pool.clone()).await;
    let submitted = submit(&pool, &new_job("noop", json!({}))).await;
    let recent_done = submit(&pool, &new_job("noop", json!({}))).await;
    let old_queued = submit(&pool, &new_job("sleep", json!({ "millis": 0 }))).await;
    // As if submitted 31 days ago (its id, a UUIDv7, carries that time) and done a day later.
    let month_ago = (chrono::Utc::now() - chrono::TimeDelta::days(31)).timestamp() as u64;
    let old_done = uuid::Uuid::new_v7(uuid::Timestamp::from_unix(uuid::NoContext, month_ago, 0));
    sqlx::query("UPDATE jobs SET id = $2, status = 'succeeded', created_at = now() - interval '31 days', finished_at = now() - interval '30 days' WHERE id = $1")
        .bind(submitted)
        .bind(old_done)
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query("UPDATE jobs SET status = 'succeeded', finished_at = now() WHERE id = $1")
        .bind(recent_done)
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query("UPDATE jobs SET created_at = now() - interval '30 days', run_at = now() + interval '1 day' WHERE id = $1")
        .bind(old_queued)
        .execute(&pool)
        .await
        .unwrap();
    let engine = start(&app.ctx);
    let mut prune = new_job("prune_jobs", json!({}));
    prune.dedupe_key = Some("prune_jobs".to_owned());
    let id = submit(&pool, &prune).await;
    let done = wait_for_status(&pool, id, JobStatus::Succeeded).await;
    assert_eq!(done.result.unwrap()["deleted_jobs"], 1);
    let mut conn = pool.acquire().await.unwrap();
    assert!(jobs::find(&mut conn, old_done).await.unwrap().is_none());
    assert!(jobs::find(&mut conn, recent_done).await.unwrap().is_some());
    assert!(jobs::find(&mut conn, old_queued).await.unwrap().is_some());
    engine.shutdown(Duration::from_secs(5)).await;
}

#[sqlx::test]
async fn shutdown_lets_running_attempts_finish(pool: PgPool) {
    let app = TestApp::spawn(pool.clone()).await;
    let engine = start(&app.ctx);
    let id = submit(&pool, &new_job("sleep", json!({ "millis": 500 }))).await;
    wait_for_status(&pool, id, JobStatus::Running).await;
    engine.shutdown(Duration::from_secs(10)).await;
    let done = job(&pool, id).await;
    assert_eq!(
        done.status,
        JobStatus::Succeeded,
        "the running attempt finished before shutdown returned"
    );
}

#[sqlx::test]
async fn shutdown_hands_back_attempts_that_outlive_the_grace(pool: PgPool) {
    let app = TestApp::spawn(pool.clone()).await;
    let engine = start(&app.ctx);
    let id = submit(&pool, &new_job("sleep", json!({ "millis": 60_000 }))).await;
    wait_for_status(&pool, id, JobStatus::Running).await;
    engine.shutdown(Duration::from_millis(200)).await;
    let handed_back = job(&pool, id).await;
    assert_eq!(
        (handed_back.status, handed_back.attempts),
        (JobStatus::Queued, 0),
        "the attempt is not spent"
    );
    assert!(handed_back.errors[0]["error"].as_str().unwrap().contains("shut down"));
    assert_eq!(handed_back.errors[0]["interrupted"], true);
    assert!(handed_back.next_run_at.unwrap() <= chrono::Utc::now());
}

#[sqlx::test]
async fn prefetched_jobs_are_leased_ahead_and_handed_back_at_shutdown(pool: PgPool) {
    let app = TestApp::spawn_with(pool.clone(), Mode::Serve, |c| {
        let sleep = c.workers.kinds.entry("sleep".to_owned()).or_default();
        sleep.concurrency = Some(1);
        sleep.prefetch = Some(4);
    })
    .await;
    let mut ids = Vec::new();
    for _ in 0..6 {
        ids.push(submit(&pool, &new_job("sleep", json!({ "millis": 60_000 }))).await);
    }
    let engine = start(&app.ctx);
    let running = || async {
        let mut running = 0;
        for id in &ids {
            running += usize::from(job(&pool, *id).await.status == JobStatus::Running);
        }
        running
    };
    // One slot runs, four more are claimed into the local queue, the sixth stays queued.
    wait_until("five jobs to be claimed", PATIENCE, || async { running().await == 5 }).await;
    assert_eq!(job(&pool, ids[5]).await.status, JobStatus::Queued);
    engine.shutdown(Duration::from_millis(200)).await;
    for id in &ids {
        let handed_back = job(&pool, *id).await;
        assert_eq!((handed_back.status, handed_back.attempts), (JobStatus::Queued, 0), "{id}");
    }
}

#[sqlx::test]
async fn an_absurd_poll_delay_is_capped_and_the_worker_survives(pool: PgPool) {
    let app = TestApp::spawn_daemon(pool.clone(), Mode::Serve, |_| {}).await;
    let far = submit(
        &pool,
        &new_job("sleep", json!({ "polls": 1, "poll_millis": 10_000_000_000_000_000u64 })),
    )
    .await;
    wait_until("the poll to be re-scheduled", PATIENCE, || async {
        job(&pool, far).await.status == JobStatus::Queued && job(&pool, far).await.result.is_some()
    })
    .await;
    let next = job(&pool, far).await.next_run_at.unwrap();
    assert!(next <= chrono::Utc::now() + chrono::Duration::days(366), "capped at a year: {next}");
    let after = submit(&pool, &new_job("sleep", json!({}))).await;
    wait_for_status(&pool, after, JobStatus::Succeeded).await;
    app.stop().await;
}

#[sqlx::test]
async fn a_claim_that_is_no_longer_in_flight_is_not_renewed(pool: PgPool) {
    // This daemon runs no `sleep` jobs itself, so the claim below is the only one.
    let app = TestApp::spawn_with(pool.clone(), Mode::Serve, |c| {
        c.workers.lease_secs = 3;
        c.workers.kinds.entry("sleep".to_owned()).or_default().concurrency = Some(0);
    })
    .await;
    let engine = start(&app.ctx);
    let id = submit(&pool, &new_job("sleep", json!({ "millis": 0 }))).await;
    // As if an attempt of this very daemon had finished but its outcome could not be written.
    let mut conn = pool.acquire().await.unwrap();
    assert_eq!(jobs::claim(&mut conn, "sleep", engine.owner(), 3.0, 1).await.unwrap().len(), 1);
    drop(conn);
    let handed_back = wait_for_status(&pool, id, JobStatus::Retrying).await;
    assert!(
        handed_back.errors[0]["error"].as_str().unwrap().contains("lease expired"),
        "not renewed, so reaped"
    );
    engine.shutdown(Duration::from_secs(5)).await;
}

/// Each of `enqueue`'s statements (with or without a coalesce key, with or without an actor)
/// does its part and no other: only a keyed job supersedes, only a recorded one leaves an
/// audit event, and the older job of a key ends superseded by the newer whichever way it came.
#[sqlx::test]
async fn every_enqueue_statement_does_its_own_part(pool: PgPool) {
    use infrahub::store::audit::Actor;
    let mut conn = pool.acquire().await.unwrap();
    let keyed = |n: i32| NewJob {
        coalesce_key: Some("dept:site".to_owned()),
        ..new_job("noop", json!({ "n": n }))
    };
    let actor = Actor { user_id: None, name: "someone".to_owned(), request_id: None };
    let plain = jobs::enqueue(&mut conn, &new_job("noop", json!({}))).await.unwrap();
    let lone = new_job("noop", json!({}));
    let recorded = jobs::enqueue_recorded(&mut conn, &lone, &actor).await.unwrap();
    let first = jobs::enqueue(&mut conn, &keyed(1)).await.unwrap().into_job();
    let second = jobs::enqueue(&mut conn, &keyed(2)).await.unwrap().into_job();
    let third = jobs::enqueue_recorded(&mut conn, &keyed(3), &actor).await.unwrap().into_job();

    let status = |id: Uuid| {
        let pool = pool.clone();
        async move { job(&pool, id).await }
    };
    assert_eq!(status(plain.job().id).await.status, JobStatus::Queued);
    assert_eq!(status(recorded.job().id).await.status, JobStatus::Queued);
    for (older, newer) in [(first.id, second.id), (second.id, third.id)] {
        let older = status(older).await;
        assert_eq!(older.status, JobStatus::Superseded);
        assert_eq!(older.result, Some(json!({ "superseded_by": newer })));
    }
    assert_eq!(status(third.id).await.status, JobStatus::Queued);

    let events: Vec<String> = sqlx::query_scalar(
        "SELECT subject_id FROM audit_events WHERE action = 'job.create' AND actor = 'someone'
          ORDER BY id",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(events, [recorded.job().id.to_string(), third.id.to_string()]);
}
