//! The fault suite's database test: PostgreSQL of the test's own, stopped and started twice
//! (a planned restart, then a crash) under a running daemon that team leads and a field admin
//! keep busy. The daemon keeps running, `/readyz` goes red then green, requests meanwhile get
//! 503 in the error envelope, work resumes by itself, and nothing accepted is lost.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use reqwest::StatusCode;
use serde_json::Value;

use crate::chaos::{Rig, login};
use crate::helpers::wait_until;
use crate::private_pg::PrivatePostgres;

async fn ready(rig: &Rig) -> Option<StatusCode> {
    let url = format!("{}/readyz", rig.client.base);
    rig.client.http.get(url).send().await.ok().map(|r| r.status())
}

#[tokio::test]
async fn a_database_restart_under_load_loses_nothing() {
    let started = Instant::now();
    let pg = PrivatePostgres::start().await;
    let pool = pg.pool().await;
    infrahub::store::migrate_up(&pool).await.unwrap();
    let rig = Rig::start(
        pool.clone(),
        pg.url("infrahub"),
        3,
        &[("INFRAHUB_DATABASE__ACQUIRE_TIMEOUT_SECS", "2")],
    )
    .await;
    let lead = login(&rig.client, "lead-team0").await;
    let work = rig.workload(180).await;

    let mut figures = Vec::new();
    for (outage, mode) in ["fast", "immediate"].into_iter().enumerate() {
        rig.accepted(60 * (outage + 1)).await;
        let unavailable = rig.client.stats.unavailable.load(std::sync::atomic::Ordering::Relaxed);
        pg.down(mode);
        let down = Instant::now();

        let red = || async { ready(&rig).await == Some(StatusCode::SERVICE_UNAVAILABLE) };
        wait_until("/readyz to turn red", Duration::from_secs(30), red).await;
        let url = format!("{}/api/v1/projects", rig.client.base);
        let answer = rig.client.http.get(url).bearer_auth(&lead).send().await.unwrap();
        assert_eq!(answer.status(), StatusCode::SERVICE_UNAVAILABLE);
        let body: Value = answer.json().await.unwrap();
        assert_eq!(body["error"]["code"], "unavailable", "{body}");
        assert!(body["error"]["message"].is_string() && body["error"]["details"].is_object());
        let stats = &rig.client.stats;
        let refused =
            || async { stats.unavailable.load(std::sync::atomic::Ordering::Relaxed) > unavailable };
        wait_until("the workload to meet a 503", Duration::from_secs(30), refused).await;
        let outage_secs = down.elapsed().as_secs_f64();

        pg.up();
        let up = Instant::now();
        let green = || async { ready(&rig).await == Some(StatusCode::OK) };
        wait_until("/readyz to turn green", Duration::from_secs(60), green).await;
        let ready_after = up.elapsed().as_secs_f64();
        let since: DateTime<Utc> =
            sqlx::query_scalar("SELECT now()").fetch_one(&pool).await.unwrap();
        let resumed = || async {
            let done: Option<i64> = sqlx::query_scalar(
                "SELECT count(*) FROM jobs WHERE status = 'succeeded' AND finished_at > $1",
            )
            .bind(since)
            .fetch_one(&pool)
            .await
            .ok();
            done.is_some_and(|n| n > 0)
        };
        wait_until("a job to finish after the restart", Duration::from_secs(60), resumed).await;
        let resumed_after = up.elapsed().as_secs_f64();
        figures.push(format!(
            "outage{}={mode}:{outage_secs:.1}s,ready_after={ready_after:.1}s,jobs_resumed_after={resumed_after:.1}s",
            outage + 1
        ));
    }
    {
        let mut daemon = rig.host.daemon.lock().await;
        let child = &mut daemon.as_mut().expect("the daemon runs").child;
        assert!(child.try_wait().unwrap().is_none(), "the daemon rode out both outages");
    }
    let done = rig.finish(work).await;
    assert!(done.unavailable > 0, "requests met the outages");
    println!(
        "RESULT system=infrahub test=postgres_restart outages=2 {done} {} seconds={:.0}",
        figures.join(" "),
        started.elapsed().as_secs_f64()
    );
}
