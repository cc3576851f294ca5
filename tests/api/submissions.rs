//! Submissions that arrive together share a statement: each keeps its own job and audit event,
//! one refused by PostgreSQL fails alone, and of one coalesce key the newest stays queued.

use std::sync::Arc;

use futures::future::join_all;
use infrahub::config::DatabaseConfig;
use infrahub::jobs::submissions::Submissions;
use infrahub::jobs::wake::WakeUps;
use infrahub::store::audit::Actor;
use infrahub::store::jobs::{Enqueued, NewJob};
use infrahub::store::{StoreError, gather};
use serde_json::json;
use sqlx::PgPool;
use uuid::Uuid;

use crate::helpers::Logged;

fn actor(n: usize) -> Actor {
    Actor { user_id: None, name: format!("user-{n}"), request_id: Some(format!("req-{n}")) }
}

/// As the daemon builds them: on the gathers' pool.
fn submissions(pool: &PgPool) -> Submissions {
    let shared = gather::pool(pool, &DatabaseConfig::default(), Submissions::CONNECTIONS);
    Submissions::new(pool.clone(), shared, Arc::new(WakeUps::new(pool.clone())))
}

/// The gathers' connections ask PostgreSQL for generic plans (what that saves is measured in
/// docs/BENCHMARKS.md, not here).
#[sqlx::test]
async fn the_gathers_pool_asks_for_generic_plans(pool: PgPool) {
    let mode = |pool: PgPool| async move {
        sqlx::query_scalar::<_, String>("SHOW plan_cache_mode").fetch_one(&pool).await.unwrap()
    };
    let shared = gather::pool(&pool, &DatabaseConfig::default(), Submissions::CONNECTIONS);
    assert_eq!(mode(shared.clone()).await, "force_generic_plan");
    assert_eq!(mode(pool.clone()).await, "auto", "the main pool keeps PostgreSQL's choice");
    let database = |pool: PgPool| async move {
        sqlx::query_scalar::<_, String>("SELECT current_database()").fetch_one(&pool).await.unwrap()
    };
    assert_eq!(database(shared).await, database(pool).await);
}

/// Hands every submission over before any writer runs (the test's runtime has one thread),
/// and waits for all of them.
async fn submit_together(
    pool: &PgPool,
    jobs: Vec<NewJob<'static>>,
) -> Vec<Result<Enqueued, StoreError>> {
    together(&submissions(pool), jobs).await
}

async fn together(
    submissions: &Submissions,
    jobs: Vec<NewJob<'static>>,
) -> Vec<Result<Enqueued, StoreError>> {
    join_all(jobs.into_iter().enumerate().map(|(n, new)| {
        let submissions = submissions.clone();
        async move { submissions.enqueue(new, actor(n)).await }
    }))
    .await
}

fn noop(n: usize) -> NewJob<'static> {
    NewJob::new("noop", json!({ "n": n }), format!("user-{n}"), 3)
}

#[sqlx::test]
async fn submissions_arriving_together_share_a_statement_and_keep_their_own_events(pool: PgPool) {
    let answers = submit_together(&pool, (0..20).map(noop).collect()).await;
    let ids: Vec<Uuid> = answers.iter().map(|answer| answer.as_ref().unwrap().job().id).collect();
    let statements: i64 =
        sqlx::query_scalar("SELECT count(DISTINCT created_at) FROM jobs WHERE id = ANY($1)")
            .bind(&ids)
            .fetch_one(&pool)
            .await
            .unwrap();
    // All rows of a statement share its `now()`; one statement per writer at most.
    assert!(statements <= 2, "20 submissions took {statements} statements");
    for (n, id) in ids.iter().enumerate() {
        let (payload, name): (serde_json::Value, String) =
            sqlx::query_as("SELECT payload, submitted_by_name FROM jobs WHERE id = $1")
                .bind(id)
                .fetch_one(&pool)
                .await
                .unwrap();
        assert_eq!((payload, name), (json!({ "n": n }), format!("user-{n}")));
        let events: Vec<(String, Option<String>, serde_json::Value)> = sqlx::query_as(
            "SELECT actor, request_id, after FROM audit_events
              WHERE action = 'job.create' AND subject_id = $1",
        )
        .bind(id.to_string())
        .fetch_all(&pool)
        .await
        .unwrap();
        assert_eq!(events.len(), 1, "one event for job {n}");
        let (who, request, after) = &events[0];
        assert_eq!(
            (who.as_str(), request.as_deref()),
            (format!("user-{n}").as_str(), Some(format!("req-{n}").as_str()))
        );
        assert_eq!(after["payload"], json!({ "n": n }));
        assert_eq!(after["status"], "queued");
    }
}

#[sqlx::test]
async fn a_submission_refused_in_a_shared_statement_fails_alone(pool: PgPool) {
    let mut jobs: Vec<NewJob<'static>> = (0..5).map(noop).collect();
    // The table's check refuses a job with no attempt to make.
    jobs[2].max_attempts = 0;
    let logged = Logged::default();
    let answers = {
        // The writer is a task of this thread's runtime: it logs here too.
        let _logging = tracing::subscriber::set_default(logged.subscriber());
        submit_together(&pool, jobs).await
    };
    let text = logged.text();
    assert!(text.contains("PostgreSQL refused a shared job statement"), "{text}");
    assert!(text.contains("req-0 req-1 req-2 req-3 req-4"), "whose requests: {text}");
    for (n, answer) in answers.iter().enumerate() {
        assert_eq!(answer.is_ok(), n != 2, "submission {n}: {:?}", answer.as_ref().err());
    }
    let (jobs, events): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM jobs),
                (SELECT count(*) FROM audit_events WHERE action = 'job.create')",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!((jobs, events), (4, 4));
}

#[sqlx::test]
async fn of_one_key_submitted_together_the_newest_stays_queued(pool: PgPool) {
    let keyed = |n: usize| NewJob { coalesce_key: Some("dept:site".to_owned()), ..noop(n) };
    // Another key in the same burst is another thing.
    let mut jobs: Vec<NewJob<'static>> = (0..6).map(keyed).collect();
    jobs.push(NewJob { coalesce_key: Some("other".to_owned()), ..noop(6) });
    let answers = submit_together(&pool, jobs).await;
    let ids: Vec<Uuid> = answers.iter().map(|answer| answer.as_ref().unwrap().job().id).collect();
    let answered: Vec<&str> =
        answers.iter().map(|answer| answer.as_ref().unwrap().job().status.as_str()).collect();
    assert_eq!(
        answered,
        ["superseded"; 5].iter().chain(&["queued"; 2]).copied().collect::<Vec<_>>()
    );
    let status = |id: Uuid| {
        let pool = pool.clone();
        async move {
            sqlx::query_as::<_, (String, Option<serde_json::Value>)>(
                "SELECT status, result FROM jobs WHERE id = $1",
            )
            .bind(id)
            .fetch_one(&pool)
            .await
            .unwrap()
        }
    };
    for pair in ids[..6].windows(2) {
        let (older, result) = status(pair[0]).await;
        assert_eq!(older, "superseded");
        assert_eq!(result.unwrap()["superseded_by"], json!(pair[1]));
    }
    assert_eq!(status(ids[5]).await.0, "queued", "the newest of the key");
    assert_eq!(status(ids[6]).await.0, "queued", "the other key");
    // Each was created: its audit event tells how it was made.
    let created: Vec<String> = sqlx::query_scalar(
        "SELECT after->>'status' FROM audit_events
          WHERE action = 'job.create' AND subject_id = ANY($1) ORDER BY subject_id",
    )
    .bind(ids.iter().map(Uuid::to_string).collect::<Vec<_>>())
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(created, answered);
}

#[sqlx::test]
async fn a_key_queued_before_is_superseded_by_the_first_of_a_shared_statement(pool: PgPool) {
    let keyed = |n: usize| NewJob { coalesce_key: Some("dept:site".to_owned()), ..noop(n) };
    let earlier = submit_together(&pool, vec![keyed(0)]).await.remove(0).unwrap().job().id;
    // Changes due a minute after they are made: the newest takes the earlier change's time.
    let later = |n: usize| NewJob { delay: std::time::Duration::from_secs(60), ..keyed(n) };
    let answers = submit_together(&pool, (1..4).map(later).collect()).await;
    let ids: Vec<Uuid> = answers.iter().map(|answer| answer.as_ref().unwrap().job().id).collect();
    let superseded_by: Option<serde_json::Value> =
        sqlx::query_scalar("SELECT result->'superseded_by' FROM jobs WHERE id = $1")
            .bind(earlier)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(superseded_by, Some(json!(ids[0])), "the chain goes through every change");
    let queued: Vec<Uuid> = sqlx::query_scalar("SELECT id FROM jobs WHERE status = 'queued'")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(queued, [ids[2]]);
    let run_at = |id: Uuid| {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, chrono::DateTime<chrono::Utc>>(
                "SELECT run_at FROM jobs WHERE id = $1",
            )
            .bind(id)
            .fetch_one(&pool)
            .await
            .unwrap()
        }
    };
    assert_eq!(run_at(ids[2]).await, run_at(earlier).await, "due when the change it replaced was");
}

#[sqlx::test]
async fn submissions_that_cannot_reach_the_database_are_told_so_together(pool: PgPool) {
    // A pool of one connection, held here: the shared statement never gets one.
    let options = pool.connect_options().as_ref().clone();
    let small = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(std::time::Duration::from_millis(300))
        .connect_with(options)
        .await
        .unwrap();
    let held = small.acquire().await.unwrap();
    let submissions = Arc::new(Submissions::new(
        small.clone(),
        small.clone(),
        Arc::new(WakeUps::new(pool.clone())),
    ));
    let answered = join_all((0..3).map(|n| {
        let submissions = Arc::clone(&submissions);
        async move {
            let answer = submissions.enqueue(noop(n), actor(n)).await;
            (answer, std::time::Instant::now())
        }
    }))
    .await;
    for (answer, _) in &answered {
        let timed_out = matches!(answer, Err(StoreError::Shared(err)) if matches!(**err, sqlx::Error::PoolTimedOut));
        assert!(timed_out, "{answer:?}");
    }
    // One wait for a connection answered them all: not one wait (300 ms) after another.
    let first = answered.iter().map(|(_, at)| *at).min().unwrap();
    let last = answered.iter().map(|(_, at)| *at).max().unwrap();
    assert!(last - first < std::time::Duration::from_millis(150), "{:?}", last - first);
    drop(held);
    let jobs: i64 = sqlx::query_scalar("SELECT count(*) FROM jobs").fetch_one(&pool).await.unwrap();
    assert_eq!(jobs, 0);
}

#[sqlx::test]
async fn a_shared_statement_wakes_the_workers_of_the_jobs_left_to_run(pool: PgPool) {
    let wake_ups = Arc::new(WakeUps::new(pool.clone()));
    let mut woken = wake_ups.subscribe();
    let submissions = Arc::new(Submissions::new(pool.clone(), pool.clone(), Arc::clone(&wake_ups)));
    let keyed = |n: usize| NewJob { coalesce_key: Some("dept:site".to_owned()), ..noop(n) };
    let answers = together(&submissions, vec![keyed(0), keyed(1), noop(2)]).await;
    assert!(answers.iter().all(Result::is_ok));
    let mut sent = Vec::new();
    while let Ok(wake_up) = woken.try_recv() {
        sent.push(wake_up.payload().to_owned());
    }
    // The change superseded in the statement will never run: nothing wakes for it.
    assert_eq!(sent, ["noop", "noop"]);
}

/// `infrahub_jobs_superseded_total{kind}` counts each job superseded: in a shared statement,
/// the earlier ones of a chain of one key; written alone, the queued one it replaces.
#[sqlx::test]
async fn superseded_jobs_are_counted_in_shared_statements_and_alone(pool: PgPool) {
    // A kind no other test uses: its counter moves only here.
    const KIND: &str = "superseded_count_probe";
    let counted = || {
        let rendered = infrahub::telemetry::metrics_handle().render();
        let series = format!("infrahub_jobs_superseded_total{{kind=\"{KIND}\"}} ");
        rendered
            .lines()
            .find_map(|line| line.strip_prefix(series.as_str()))
            .map_or(0, |value| value.trim().parse::<u64>().unwrap())
    };
    let keyed = |n: usize| NewJob {
        coalesce_key: Some("dept:site".to_owned()),
        ..NewJob::new(KIND, json!({ "n": n }), format!("user-{n}"), 3)
    };
    // Installs the recorder, if no test did before.
    assert_eq!(counted(), 0);
    let answers = submit_together(&pool, (0..3).map(keyed).collect()).await;
    assert!(answers.iter().all(Result::is_ok));
    assert_eq!(counted(), 2, "the first two of the chain");
    let alone = submissions(&pool).enqueue(keyed(3), actor(3)).await.unwrap();
    assert_eq!(alone.job().status, infrahub::domain::job::JobStatus::Queued);
    assert_eq!(counted(), 3, "and the one left queued, superseded by the next");
}
