//! Projects over HTTP: the documented flow, GitOps delivery into a real Git repository, quota
//! reservation under concurrency, resize, delete, failure and retry.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use infrahub::config::{InventorySource, Mode};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sqlx::PgPool;
use uuid::Uuid;

use crate::helpers::{TestApp, wait_until};

fn git(repo: &Path, args: &[&str]) -> String {
    let output = Command::new("git").arg("-C").arg(repo).args(args).output().unwrap();
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// The test organisation with a quota for department shop at site fra, delivering into `repo`.
async fn app_with_quota(pool: &PgPool, repo: &Path, cpu: i32, ram: i32) -> TestApp {
    let repo = repo.to_owned();
    let app =
        TestApp::spawn_with(pool.clone(), Mode::Serve, move |c| c.delivery.git.path = repo).await;
    app.give_quota(cpu, ram).await;
    app
}

fn create(name: &str, sla: &str, tier: &str) -> Value {
    json!({ "name": name, "site": "fra", "sla_type": sla, "performance_tier": tier })
}

#[sqlx::test]
async fn the_documented_project_flow_reaches_active(pool: PgPool) {
    let repo = tempfile::tempdir().unwrap();
    let repo_path = repo.path().join("gitops");
    let app = TestApp::spawn_with(pool.clone(), Mode::Demo, |c| {
        c.inventory.source = InventorySource::File;
        c.inventory.file.path =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("config/demo/inventory.json");
        c.delivery.git.path = repo_path.clone();
    })
    .await;
    infrahub::app::demo::bootstrap(&app.ctx).await.unwrap();
    infrahub::app::demo::seed_capacity(&app.ctx).await.unwrap();

    let token = app.login("team-platform", "password").await;
    let raw =
        r#"{"name":"payments","site":"berlin","sla_type":"silver","performance_tier":"regular"}"#;
    let response = app
        .client
        .post(format!("{}/api/v1/projects", app.base))
        .bearer_auth(&token)
        .header("Content-Type", "application/json")
        .body(raw)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let created: Value = response.json().await.unwrap();
    assert_eq!(created["status"], "provisioning");
    assert_eq!(created["namespace"], "platform-payments");
    assert!(created["job_id"].is_string());
    let id = created["id"].as_str().unwrap();
    // The answer and the audit event show the project pointing at its job, as stored.
    assert_eq!(created["project"]["last_job_id"], created["job_id"]);
    let (stored_job, audited): (Option<uuid::Uuid>, Value) = sqlx::query_as(
        "SELECT p.last_job_id, a.after FROM projects p
           JOIN audit_events a ON a.subject_id = p.id::text AND a.action = 'project.create'
          WHERE p.id = $1::uuid",
    )
    .bind(id)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(json!(stored_job), created["job_id"]);
    assert_eq!(audited, created["project"]);
    let project = app.project_becomes(&token, id, "active").await;
    assert_eq!(
        (project["site"].as_str(), project["sla_type"].as_str()),
        (Some("berlin"), Some("silver"))
    );
    assert_eq!((project["cpu"].as_i64(), project["ram_gb"].as_i64()), (Some(4), Some(16)));
    let manifest =
        std::fs::read_to_string(repo_path.join("berlin/platform-payments.yaml")).unwrap();
    assert!(
        manifest.contains("kind: \"ResourceQuota\"") && manifest.contains("requests.cpu: \"4\"")
    );
    assert!(
        manifest.contains("name: \"platform-team\""),
        "the department's group gets edit rights"
    );
}

#[sqlx::test]
async fn gitops_commits_once_per_change_and_delete_frees_the_quota(pool: PgPool) {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("gitops");
    let app = app_with_quota(&pool, &repo, 40, 160).await;
    let lead = app.team_lead_token().await;
    let created = app
        .post("/api/v1/projects", &lead, create("web", "silver", "regular"))
        .await
        .expect(StatusCode::ACCEPTED, None);
    let id = created["id"].as_str().unwrap().to_owned();
    app.project_becomes(&lead, &id, "active").await;
    assert_eq!(git(&repo, &["rev-list", "--count", "HEAD"]), "1");
    let message = git(&repo, &["log", "-1", "--format=%s"]);
    assert!(
        message.contains("project web")
            && message.contains("shop-lead")
            && message.contains("shop-web"),
        "{message}"
    );
    assert_eq!(git(&repo, &["ls-files"]), "fra/shop-web.yaml");

    // Re-provisioning the same sizing renders the same bytes: no new commit.
    let same = app
        .call(
            Method::PATCH,
            &format!("/api/v1/projects/{id}"),
            Some(&lead),
            Some(json!({ "sla_type": "silver" })),
        )
        .await;
    let same = same.expect(StatusCode::ACCEPTED, None);
    app.project_becomes(&lead, &id, "active").await;
    let job = app.get(same["location"].as_str().unwrap(), &lead).await.body;
    assert_eq!(git(&repo, &["rev-list", "--count", "HEAD"]), "1");
    assert_eq!(
        job["result"]["commit"],
        git(&repo, &["rev-parse", "HEAD"]),
        "the commit holding them"
    );

    let quota = format!("/api/v1/departments/{}/quota", app.org.dept);
    assert_eq!(
        app.get(&quota, &lead).await.body["sites"][0]["used"],
        json!({ "cpu": 4, "ram_gb": 16 })
    );
    let deleting = app
        .call(Method::DELETE, &format!("/api/v1/projects/{id}"), Some(&lead), None)
        .await
        .expect(StatusCode::ACCEPTED, None);
    assert_eq!(deleting["status"], "deleting");
    let deleted = app.project_becomes(&lead, &id, "deleted").await;
    assert!(deleted["deleted_at"].is_string());
    assert_eq!(git(&repo, &["ls-files"]), "");
    assert!(git(&repo, &["log", "-1", "--format=%s"]).starts_with("deprovision shop-web"));
    assert_eq!(
        app.get(&quota, &lead).await.body["sites"][0]["used"],
        json!({ "cpu": 0, "ram_gb": 0 }),
        "quota freed"
    );
    let audited: Vec<String> =
        sqlx::query_scalar("SELECT action FROM audit_events WHERE subject_id = $1 ORDER BY id")
            .bind(&id)
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(
        audited,
        [
            "project.create",
            "project.active",
            "project.resize",
            "project.active",
            "project.delete",
            "project.deleted"
        ]
    );
    // The name is free again.
    app.post("/api/v1/projects", &lead, create("web", "bronze", "regular"))
        .await
        .expect(StatusCode::ACCEPTED, None);
}

/// Requests with an Idempotency-Key check their reservation before the commit, the others as
/// they commit (migration 24): both under the same lock, so together they never over-reserve.
#[sqlx::test]
async fn thirty_concurrent_creations_never_over_reserve(pool: PgPool) {
    let dir = tempfile::tempdir().unwrap();
    // silver/regular is 4 CPU / 16 GB: two fit in 10 CPU, a third does not.
    let app = app_with_quota(&pool, &dir.path().join("gitops"), 10, 100).await;
    let lead = app.team_lead_token().await;
    let requests = (0..30).map(|i| {
        let request = app
            .client
            .post(format!("{}/api/v1/projects", app.base))
            .bearer_auth(&lead)
            .json(&create(&format!("app-{i}"), "silver", "regular"));
        let request = if i % 2 == 0 {
            request.header("Idempotency-Key", format!("key-{i}"))
        } else {
            request
        };
        request.send()
    });
    let mut accepted = 0;
    for response in futures::future::join_all(requests).await {
        let response = response.unwrap();
        match response.status() {
            StatusCode::ACCEPTED => accepted += 1,
            StatusCode::CONFLICT => {
                let body: Value = response.json().await.unwrap();
                assert_eq!(body["error"]["code"], "over_quota", "{body}");
                assert_eq!(body["error"]["details"]["quota"]["cpu"], 10, "{body}");
            }
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!(accepted, 2);
    let (cpu, ram, counted): (i64, i64, i64) = sqlx::query_as(
        "SELECT sum(cpu)::int8, sum(ram_gb)::int8, (SELECT cpu FROM project_reservations)
           FROM projects WHERE status <> 'deleted'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(cpu <= 10 && ram <= 100, "reserved {cpu} CPU / {ram} GB");
    assert_eq!(counted, cpu, "the reservations counted as committed");
    // A refused request wrote its project, job and audit event before it found the quota
    // full (the reservation is checked last); all of it rolled back.
    let (projects, jobs, events): (i64, i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM projects), (SELECT count(*) FROM jobs WHERE kind = 'provision_namespace'),
                (SELECT count(*) FROM audit_events WHERE action = 'project.create')",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!((projects, jobs, events), (2, 2, 2));
}

/// A request that waits on the (field, site) lock checks the quota against what the lock's
/// holder committed: the check reads after the lock is granted (one statement, migration 23),
/// and the lock is the one every capacity-changing write takes (`lock_field_site`).
#[sqlx::test]
async fn a_reservation_waiting_on_the_lock_sees_what_its_holder_committed(pool: PgPool) {
    waits_and_sees_what_the_holder_committed(pool, None).await;
}

/// The same for a request with an Idempotency-Key, whose reservation is checked before its
/// commit.
#[sqlx::test]
async fn a_keyed_reservation_waiting_on_the_lock_sees_what_its_holder_committed(pool: PgPool) {
    waits_and_sees_what_the_holder_committed(pool, Some("key-1")).await;
}

async fn waits_and_sees_what_the_holder_committed(pool: PgPool, key: Option<&str>) {
    let dir = tempfile::tempdir().unwrap();
    // silver/regular is 4 CPU / 16 GB: it fits in 10 CPU, not in the 2 left beside 8.
    let app = app_with_quota(&pool, &dir.path().join("gitops"), 10, 100).await;
    let lead = app.team_lead_token().await;
    let mut holder = pool.begin().await.unwrap();
    infrahub::store::capacity::lock_field_site(&mut holder, app.org.field, app.org.site)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO projects (id, name, department_id, site_id, namespace, sla_type,
                               performance_tier, cpu, ram_gb, status)
         VALUES ($1, 'big', $2, $3, 'shop-big', 'gold', 'regular', 8, 32, 'active')",
    )
    .bind(Uuid::now_v7())
    .bind(app.org.dept)
    .bind(app.org.site)
    .execute(&mut *holder)
    .await
    .unwrap();
    let request = app
        .client
        .post(format!("{}/api/v1/projects", app.base))
        .bearer_auth(&lead)
        .json(&create("web", "silver", "regular"));
    let request = match key {
        Some(key) => request.header("Idempotency-Key", key),
        None => request,
    };
    let request = tokio::spawn(request.send());
    let waiting = || async { waiters(&pool, "advisory").await == 1 };
    wait_until("the request to wait on the lock", Duration::from_secs(10), waiting).await;
    holder.commit().await.unwrap();
    let response = request.await.unwrap().unwrap();
    assert_eq!(response.status(), StatusCode::CONFLICT);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "over_quota", "{body}");
    assert_eq!(body["error"]["details"]["used"]["cpu"], 8, "{body}");
}

/// How many sessions of the test's database wait on `event` (`pg_stat_activity`).
async fn waiters(pool: &PgPool, event: &str) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity
          WHERE datname = current_database() AND wait_event = $1",
    )
    .bind(event)
    .fetch_one(pool)
    .await
    .unwrap()
}

/// A request PostgreSQL rolls back to break a deadlock answers 503 `contended` with
/// `Retry-After`, writes nothing, and passes when sent again. The deadlock is a real one, and
/// the request's wait is the one that closes it, so that its own check (`deadlock_timeout`
/// after that wait begins) finds it and it gives way: the request, at its commit, waits for
/// the (field, site) lock; another transaction holds the department's row of reservations
/// and waits for the request (a project of the same name); the lock is let go, and the
/// request then waits for that row.
#[sqlx::test]
async fn a_request_rolled_back_by_a_deadlock_answers_503_and_may_be_sent_again(pool: PgPool) {
    let dir = tempfile::tempdir().unwrap();
    let app = app_with_quota(&pool, &dir.path().join("gitops"), 10, 100).await;
    let lead = app.team_lead_token().await;
    let mut lock = pool.acquire().await.unwrap();
    sqlx::query("SELECT pg_advisory_lock(capacity_lock_key($1, $2))")
        .bind(app.org.field)
        .bind(app.org.site)
        .execute(&mut *lock)
        .await
        .unwrap();
    let mut holder = pool.begin().await.unwrap();
    // Its own check, should it come first, must not find the deadlock (superuser setting).
    sqlx::query("SET LOCAL deadlock_timeout = '60s'").execute(&mut *holder).await.unwrap();
    sqlx::query(
        "INSERT INTO project_reservations AS r (department_id, site_id, cpu, ram_gb)
         VALUES ($1, $2, 0, 0)
         ON CONFLICT (department_id, site_id) DO UPDATE SET cpu = r.cpu",
    )
    .bind(app.org.dept)
    .bind(app.org.site)
    .execute(&mut *holder)
    .await
    .unwrap();
    let send = || {
        app.client
            .post(format!("{}/api/v1/projects", app.base))
            .bearer_auth(&lead)
            .json(&create("web", "silver", "regular"))
            .send()
    };
    let request = tokio::spawn(send());
    let at_commit = || async { waiters(&pool, "advisory").await == 1 };
    wait_until("the request to wait for the lock", Duration::from_secs(10), at_commit).await;
    let (dept, site) = (app.org.dept, app.org.site);
    let same_name = tokio::spawn(async move {
        sqlx::query(
            "INSERT INTO projects (id, name, department_id, site_id, namespace, sla_type,
                                   performance_tier, cpu, ram_gb, status)
             VALUES ($1, 'web', $2, $3, 'shop-web', 'silver', 'regular', 4, 16, 'active')",
        )
        .bind(Uuid::now_v7())
        .bind(dept)
        .bind(site)
        .execute(&mut *holder)
        .await
        .unwrap();
        holder
    });
    let on_request = || async { waiters(&pool, "transactionid").await == 1 };
    wait_until("the holder to wait for the request", Duration::from_secs(10), on_request).await;
    sqlx::query("SELECT pg_advisory_unlock(capacity_lock_key($1, $2))")
        .bind(app.org.field)
        .bind(app.org.site)
        .execute(&mut *lock)
        .await
        .unwrap();
    let response = request.await.unwrap().unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(response.headers()["retry-after"], "1");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "contended", "{body}");
    // The request gave way: the holder's insert went through, and is rolled back.
    let holder = same_name.await.unwrap();
    holder.rollback().await.unwrap();
    let written: i64 = sqlx::query_scalar("SELECT count(*) FROM projects WHERE name = 'web'")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(written, 0, "nothing of the rolled-back request was written");
    let again = send().await.unwrap();
    assert_eq!(again.status(), StatusCode::ACCEPTED, "{}", again.text().await.unwrap());
}

/// The check the database makes as a transaction commits, when the transaction asks for it:
/// over quota (IHQ01) and past 90 % of it (IHQ90) are refused, everything else commits;
/// without the setting it only counts.
#[sqlx::test]
async fn the_database_checks_a_reservation_at_the_commit_when_asked(pool: PgPool) {
    let dir = tempfile::tempdir().unwrap();
    let app = app_with_quota(&pool, &dir.path().join("gitops"), 10, 100).await;
    let (a, dept, site) = (Uuid::now_v7(), app.org.dept, app.org.site);
    let run = |sql: &'static str, id: Uuid, cpu: i32, at_commit: bool| {
        let pool = pool.clone();
        async move {
            let mut tx = pool.begin().await.unwrap();
            // Not asked: nothing set, so a setting left over from an earlier transaction on
            // the connection would show.
            if at_commit {
                sqlx::query("SELECT project_reservation_check(true)")
                    .execute(&mut *tx)
                    .await
                    .unwrap();
            }
            sqlx::query(sql)
                .bind(id)
                .bind(dept)
                .bind(site)
                .bind(cpu)
                .execute(&mut *tx)
                .await
                .unwrap();
            match tx.commit().await {
                Ok(()) => None,
                Err(err) => {
                    assert!(infrahub::store::capacity::reservation_refused_at_commit(&err));
                    err.as_database_error().and_then(|e| e.code()).map(|c| c.into_owned())
                }
            }
        }
    };
    let insert = "INSERT INTO projects (id, name, department_id, site_id, namespace, sla_type,
                                        performance_tier, cpu, ram_gb, status)
                  VALUES ($1, 'p' || left(md5($1::text), 8), $2, $3, 'ns-' || left(md5($1::text), 8),
                          'silver', 'regular', $4, 16, 'provisioning')";
    let resize =
        "UPDATE projects SET cpu = $4 WHERE id = $1 AND department_id = $2 AND site_id = $3";
    let refused = |code: &str| Some(code.to_owned());
    assert_eq!(run(insert, a, 4, true).await, None, "4 of 10 CPU");
    assert_eq!(run(insert, Uuid::now_v7(), 8, true).await, refused("IHQ01"), "12 of 10");
    assert_eq!(run(insert, Uuid::now_v7(), 6, true).await, refused("IHQ90"), "4 -> 10 of 10");
    assert_eq!(run(resize, a, 5, true).await, None, "its own 4 given back: 5 of 10");
    assert_eq!(run(resize, a, 11, true).await, refused("IHQ01"), "11 of 10");
    assert_eq!(run(resize, a, 3, true).await, None, "shrinking");
    assert_eq!(run(insert, Uuid::now_v7(), 20, false).await, None, "not asked: counted only");
    let counted: (i64, i64) = sqlx::query_as("SELECT cpu, ram_gb FROM project_reservations")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(counted, (23, 32), "what committed, and nothing refused");
}

/// The check at the commit (SQL, migration 24) and the check before it (`reserve` and
/// `warn_if_nearly_full`: `domain::capacity::{reservation_fits, crosses_90_percent}`) state
/// one rule twice: they agree on a grid of quotas, uses and requests around the edges
/// (quota full, 90 %, over already).
#[sqlx::test]
async fn the_check_at_the_commit_agrees_with_the_domain_rule(pool: PgPool) {
    use infrahub::domain::capacity::{Resources, crosses_90_percent, reservation_fits};
    let dir = tempfile::tempdir().unwrap();
    let app = app_with_quota(&pool, &dir.path().join("gitops"), 10, 100).await;
    let (dept, site) = (app.org.dept, app.org.site);
    let r = Resources::new;
    let quotas = [r(0, 0), r(10, 100), r(20, 40)];
    let uses_cpu = [0, 8, 9, 10, 11, 18, 19, 20, 21];
    let uses_ram = [0, 35, 36, 37, 90, 99, 100, 101];
    let wanted = [r(1, 1), r(2, 4), r(1, 20)];
    let mut cases = 0;
    for quota in quotas {
        sqlx::query("UPDATE department_quotas SET cpu_limit = $3, ram_gb_limit = $4 WHERE department_id = $1 AND site_id = $2")
            .bind(dept)
            .bind(site)
            .bind(quota.cpu as i32)
            .bind(quota.ram_gb as i32)
            .execute(&pool)
            .await
            .unwrap();
        for used in uses_cpu.iter().flat_map(|&cpu| uses_ram.iter().map(move |&ram| r(cpu, ram))) {
            for want in wanted {
                sqlx::query(
                    "INSERT INTO project_reservations AS r (department_id, site_id, cpu, ram_gb)
                     VALUES ($1, $2, $3, $4)
                     ON CONFLICT (department_id, site_id)
                     DO UPDATE SET cpu = excluded.cpu, ram_gb = excluded.ram_gb",
                )
                .bind(dept)
                .bind(site)
                .bind(used.cpu)
                .bind(used.ram_gb)
                .execute(&pool)
                .await
                .unwrap();
                let mut tx = pool.begin().await.unwrap();
                sqlx::query("SELECT project_reservation_check(true)")
                    .execute(&mut *tx)
                    .await
                    .unwrap();
                sqlx::query(
                    "INSERT INTO projects (id, name, department_id, site_id, namespace, sla_type,
                                           performance_tier, cpu, ram_gb, status)
                     VALUES ($1, 'p' || left(md5($1::text), 12), $2, $3,
                             'ns-' || left(md5($1::text), 12), 'silver', 'regular', $4, $5,
                             'provisioning')",
                )
                .bind(Uuid::now_v7())
                .bind(dept)
                .bind(site)
                .bind(want.cpu as i32)
                .bind(want.ram_gb as i32)
                .execute(&mut *tx)
                .await
                .unwrap();
                let at_commit = match tx.commit().await {
                    Ok(()) => None,
                    Err(err) => {
                        err.as_database_error().and_then(|e| e.code()).map(|c| c.into_owned())
                    }
                };
                let before_commit = if !reservation_fits(quota, used, want) {
                    Some("IHQ01".to_owned())
                } else if crosses_90_percent(quota, used, used + want) {
                    Some("IHQ90".to_owned())
                } else {
                    None
                };
                assert_eq!(
                    at_commit, before_commit,
                    "quota {quota:?}, used {used:?}, wanted {want:?}"
                );
                cases += 1;
            }
        }
    }
    assert_eq!(cases, 3 * 9 * 8 * 3);
}

#[sqlx::test]
async fn resize_checks_the_quota_difference(pool: PgPool) {
    let dir = tempfile::tempdir().unwrap();
    let app = app_with_quota(&pool, &dir.path().join("gitops"), 20, 80).await;
    let lead = app.team_lead_token().await;
    let id = app
        .post("/api/v1/projects", &lead, create("api", "silver", "regular"))
        .await
        .expect(StatusCode::ACCEPTED, None)["id"]
        .as_str()
        .unwrap()
        .to_owned();
    app.project_becomes(&lead, &id, "active").await;
    let path = format!("/api/v1/projects/{id}");
    // gold/high is 16 CPU / 64 GB: it fits once the project's own 4 CPU are given back.
    let up = app
        .call(
            Method::PATCH,
            &path,
            Some(&lead),
            Some(json!({ "sla_type": "gold", "performance_tier": "high" })),
        )
        .await;
    assert_eq!(up.expect(StatusCode::ACCEPTED, None)["status"], "provisioning");
    let active = app.project_becomes(&lead, &id, "active").await;
    assert_eq!((active["cpu"].as_i64(), active["ram_gb"].as_i64()), (Some(16), Some(64)));
    // 16 + 4 fill the 20 CPU: nothing more fits, and the first project cannot grow.
    app.post("/api/v1/projects", &lead, create("extra", "silver", "regular"))
        .await
        .expect(StatusCode::ACCEPTED, None);
    app.post("/api/v1/projects", &lead, create("big", "bronze", "regular"))
        .await
        .expect(StatusCode::CONFLICT, Some("over_quota"));
    let down = app
        .call(
            Method::PATCH,
            &path,
            Some(&lead),
            Some(json!({ "sla_type": "bronze", "performance_tier": "regular" })),
        )
        .await;
    down.expect(StatusCode::ACCEPTED, None);
    let small = app.project_becomes(&lead, &id, "active").await;
    assert_eq!((small["cpu"].as_i64(), small["ram_gb"].as_i64()), (Some(2), Some(8)));
    let manifest = std::fs::read_to_string(dir.path().join("gitops/fra/shop-api.yaml")).unwrap();
    assert!(manifest.contains("requests.cpu: \"2\""), "re-rendered at the new size");
}

#[sqlx::test]
async fn requests_are_validated_and_scoped(pool: PgPool) {
    let dir = tempfile::tempdir().unwrap();
    let app = app_with_quota(&pool, &dir.path().join("gitops"), 20, 80).await;
    let lead = app.team_lead_token().await;
    for (body, field) in [
        (create("Bad_Name", "silver", "regular"), "name"),
        (create("ok", "platinum", "regular"), "sla_type"),
        (create("ok", "silver", "turbo"), "performance_tier"),
        (
            json!({ "name": "ok", "site": "atlantis", "sla_type": "silver", "performance_tier": "regular" }),
            "site",
        ),
    ] {
        let answer = app
            .post("/api/v1/projects", &lead, body)
            .await
            .expect(StatusCode::UNPROCESSABLE_ENTITY, Some("invalid_value"));
        assert_eq!(answer["error"]["details"]["field"], field);
    }
    // gold/high takes 16 of the 20 CPU; a second one no longer fits.
    app.post("/api/v1/projects", &lead, create("huge", "gold", "high"))
        .await
        .expect(StatusCode::ACCEPTED, None);
    app.post("/api/v1/projects", &lead, create("huge-2", "gold", "high"))
        .await
        .expect(StatusCode::CONFLICT, Some("over_quota"));
    let first = app
        .post("/api/v1/projects", &lead, create("dup", "bronze", "regular"))
        .await
        .expect(StatusCode::ACCEPTED, None);
    app.post("/api/v1/projects", &lead, create("dup", "bronze", "regular"))
        .await
        .expect(StatusCode::CONFLICT, Some("already_exists"));
    let id = first["id"].as_str().unwrap();
    // Each accepted project is written with its job as its latest; a refused one leaves none.
    let (jobs, latest): (i64, Option<Uuid>) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM jobs WHERE kind = 'provision_namespace'),
                (SELECT last_job_id FROM projects WHERE id = $1::uuid)",
    )
    .bind(id)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(jobs, 2, "huge and dup");
    assert_eq!(latest.map(|j| j.to_string()).as_deref(), first["job_id"].as_str());
    let busy = app.call(Method::DELETE, &format!("/api/v1/projects/{id}"), Some(&lead), None).await;
    // Deleting is refused while provisioning runs; it may already be active by now.
    assert!(
        busy.status == StatusCode::CONFLICT || busy.status == StatusCode::ACCEPTED,
        "{}",
        busy.status
    );
    app.call(
        Method::POST,
        &format!("/api/v1/projects/{}/retry", Uuid::now_v7()),
        Some(&lead),
        None,
    )
    .await
    .expect(StatusCode::NOT_FOUND, Some("not_found"));

    for token in [app.admin_token().await, app.field_admin_token().await] {
        app.post("/api/v1/projects", &token, create("x", "bronze", "regular"))
            .await
            .expect(StatusCode::FORBIDDEN, Some("forbidden"));
    }
    let seen = app
        .get("/api/v1/projects", &app.field_admin_token().await)
        .await
        .expect(StatusCode::OK, None);
    assert_eq!(seen["items"].as_array().unwrap().len(), 2);
    let catalog = app.get("/api/v1/catalog", &lead).await.expect(StatusCode::OK, None);
    assert_eq!(catalog["silver"]["regular"]["cpu"], 4);

    // A team lead of another department sees nothing of shop's.
    let other = crate::helpers::create_user(
        &pool,
        "ledger-lead",
        infrahub::domain::role::Role::TeamLead,
        infrahub::domain::scope::Scope::Department(app.org.other_dept),
        false,
    )
    .await;
    let stranger = app.login(&other.username, crate::helpers::PASSWORD).await;
    app.get(&format!("/api/v1/projects/{id}"), &stranger)
        .await
        .expect(StatusCode::NOT_FOUND, Some("not_found"));
    assert!(
        app.get("/api/v1/projects", &stranger).await.body["items"].as_array().unwrap().is_empty()
    );
}

#[sqlx::test]
async fn a_failed_delivery_fails_the_project_and_retry_recovers(pool: PgPool) {
    let dir = tempfile::tempdir().unwrap();
    // A file where the repository should be: git cannot work there.
    let blocked = dir.path().join("gitops");
    std::fs::write(&blocked, "not a directory").unwrap();
    let app = app_with_quota(&pool, &blocked, 20, 80).await;
    let lead = app.team_lead_token().await;
    let id = app
        .post("/api/v1/projects", &lead, create("fragile", "bronze", "regular"))
        .await
        .expect(StatusCode::ACCEPTED, None)["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let failed = app.project_becomes(&lead, &id, "failed").await;
    assert!(failed["failure_reason"].as_str().unwrap().contains("gitops"), "{failed}");
    std::fs::remove_file(&blocked).unwrap();
    let retried =
        app.call(Method::POST, &format!("/api/v1/projects/{id}/retry"), Some(&lead), None).await;
    assert_eq!(retried.expect(StatusCode::ACCEPTED, None)["status"], "provisioning");
    let active = app.project_becomes(&lead, &id, "active").await;
    assert!(active["failure_reason"].is_null());
    app.call(Method::POST, &format!("/api/v1/projects/{id}/retry"), Some(&lead), None)
        .await
        .expect(StatusCode::CONFLICT, Some("not_failed"));
}

/// Runs one `resync` job (and the repairs it starts, as far as they are due) and returns its
/// result.
pub async fn resync(app: &TestApp) -> Value {
    let mut conn = app.pool.acquire().await.unwrap();
    let new = infrahub::store::jobs::NewJob::new("resync", json!({}), "test", 3);
    let id = infrahub::store::jobs::enqueue(&mut conn, &new).await.unwrap().job().id;
    drop(conn);
    app.run_due_jobs().await;
    let done = crate::jobs::job(&app.pool, id).await;
    assert_eq!(done.status, infrahub::domain::job::JobStatus::Succeeded, "{:?}", done.last_error);
    done.result.unwrap()
}

#[sqlx::test]
async fn resync_repairs_manifests_changed_in_git(pool: PgPool) {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("gitops");
    let app = app_with_quota(&pool, &repo, 40, 160).await;
    let lead = app.team_lead_token().await;
    let mut ids = Vec::new();
    for name in ["web", "api"] {
        let created = app
            .post("/api/v1/projects", &lead, create(name, "silver", "regular"))
            .await
            .expect(StatusCode::ACCEPTED, None);
        ids.push(created["id"].as_str().unwrap().to_owned());
    }
    for id in &ids {
        app.project_becomes(&lead, id, "active").await;
    }
    let file = repo.join("fra/shop-web.yaml");
    let desired = std::fs::read_to_string(&file).unwrap();
    std::fs::write(&file, desired.replace("requests.cpu: \"4\"", "requests.cpu: \"64\"")).unwrap();
    // Someone commits an edit by hand (uncommitted changes are not what Argo CD deploys).
    git(
        &repo,
        &["-c", "user.name=ops", "-c", "user.email=ops@example.com", "commit", "-qam", "more cpu"],
    );

    let report = resync(&app).await;
    assert_eq!(
        (report["checked"].as_u64(), report["in_sync"].as_u64(), report["drifted"].as_u64()),
        (Some(2), Some(1), Some(1))
    );
    assert!(
        report["drift"][0].as_str().unwrap().starts_with("shop-web: the manifests in Git differ"),
        "{report}"
    );
    let repaired = app.project_becomes(&lead, &ids[0], "active").await;
    assert!(repaired["failure_reason"].is_null());
    assert_eq!(std::fs::read_to_string(&file).unwrap(), desired, "the desired manifests are back");
    let drift: i64 =
        sqlx::query_scalar("SELECT count(*) FROM audit_events WHERE action = 'project.drift'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(drift, 1);
    let again = resync(&app).await;
    assert_eq!(
        (again["in_sync"].as_u64(), again["drifted"].as_u64()),
        (Some(2), Some(0)),
        "nothing left to repair"
    );
}

#[sqlx::test]
async fn commits_are_pushed_to_the_configured_remote(pool: PgPool) {
    let dir = tempfile::tempdir().unwrap();
    let remote = dir.path().join("remote.git");
    assert!(
        Command::new("git")
            .args(["init", "--quiet", "--bare", "-b", "main"])
            .arg(&remote)
            .status()
            .unwrap()
            .success()
    );
    let repo = dir.path().join("gitops");
    let remote_url = remote.display().to_string();
    let app = TestApp::spawn_with(pool.clone(), Mode::Serve, move |c| {
        c.delivery.git.path = repo;
        c.delivery.git.remote = Some(remote_url);
    })
    .await;
    app.give_quota(40, 160).await;
    let lead = app.team_lead_token().await;
    let id = app
        .post("/api/v1/projects", &lead, create("web", "bronze", "regular"))
        .await
        .expect(StatusCode::ACCEPTED, None)["id"]
        .as_str()
        .unwrap()
        .to_owned();
    app.project_becomes(&lead, &id, "active").await;
    assert_eq!(
        git(&remote, &["rev-list", "--count", "main"]),
        "1",
        "the commit reached the remote"
    );
    assert_eq!(git(&remote, &["ls-tree", "-r", "--name-only", "main"]), "fra/shop-web.yaml");
}

#[sqlx::test]
async fn a_transient_delivery_failure_is_retried_until_the_project_is_active(pool: PgPool) {
    let git = std::sync::Arc::new(crate::gitops_double::FlakyGit::failing(2));
    let injected = git.clone();
    let app = TestApp::spawn_with_clients(
        pool.clone(),
        Mode::Serve,
        |_| {},
        move |clients| {
            clients.gitops = injected;
        },
    )
    .await;
    app.give_quota(20, 80).await;
    let lead = app.team_lead_token().await;
    let created = app
        .post("/api/v1/projects", &lead, create("web", "bronze", "regular"))
        .await
        .expect(StatusCode::ACCEPTED, None);
    let id = created["id"].as_str().unwrap();
    app.project_becomes(&lead, id, "active").await;
    let job = app.get(created["location"].as_str().unwrap(), &lead).await.body;
    assert_eq!((job["status"].as_str(), job["attempts"].as_i64()), (Some("succeeded"), Some(3)));
    let errors = job["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 2, "{job}");
    assert!(errors.iter().all(|e| e["permanent"] == false && e["error"] == "the remote hung up"));
    assert_eq!(git.writes.load(std::sync::atomic::Ordering::SeqCst), 3);
    let files = git.files.lock().unwrap();
    assert!(files["fra/shop-web.yaml"].contains("kind: \"ResourceQuota\""), "{files:?}");
}
