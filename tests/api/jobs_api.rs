//! The jobs API over HTTP: 202 answers, Idempotency-Key, scoped visibility, cancellation.

use infrahub::domain::scope::Owner;
use infrahub::store::jobs::NewJob;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sqlx::PgPool;
use uuid::Uuid;

use crate::helpers::TestApp;
use crate::jobs::submit;

fn scoped(
    kind: &'static str,
    scope: Owner,
    subject: Option<(&'static str, String)>,
) -> NewJob<'static> {
    NewJob { scope, subject, ..NewJob::new(kind, json!({}), "test", 3) }
}

fn ids(page: &Value) -> Vec<String> {
    page["items"].as_array().unwrap().iter().map(|j| j["id"].as_str().unwrap().to_owned()).collect()
}

#[sqlx::test]
async fn submissions_answer_202_with_the_job_location(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let admin = app.admin_token().await;
    let answer = app.post("/api/v1/admin/jobs", &admin, json!({ "kind": "noop" })).await;
    let location = answer.headers["location"].to_str().unwrap().to_owned();
    let body = answer.expect(StatusCode::ACCEPTED, None);
    assert_eq!(body["status"], "queued");
    assert_eq!(body["existing"], false);
    assert_eq!(location, format!("/api/v1/jobs/{}", body["job_id"].as_str().unwrap()));
    assert_eq!(body["location"], location);
    let job = app.get(&location, &admin).await.expect(StatusCode::OK, None);
    assert_eq!(
        (job["kind"].as_str(), job["submitted_by_name"].as_str()),
        (Some("noop"), Some("root"))
    );
    assert_eq!(job["max_attempts"], 5);

    let again = app
        .post("/api/v1/admin/jobs", &admin, json!({ "kind": "prune_jobs" }))
        .await
        .expect(StatusCode::ACCEPTED, None);
    let dup = app
        .post("/api/v1/admin/jobs", &admin, json!({ "kind": "prune_jobs" }))
        .await
        .expect(StatusCode::ACCEPTED, None);
    assert_eq!(again["job_id"], dup["job_id"], "one prune at a time");
    assert_eq!(dup["existing"], true);

    app.post("/api/v1/admin/jobs", &app.team_lead_token().await, json!({ "kind": "noop" }))
        .await
        .expect(StatusCode::FORBIDDEN, Some("forbidden"));
    app.post("/api/v1/admin/jobs", &admin, json!({ "kind": "sync_everything" }))
        .await
        .expect(StatusCode::UNPROCESSABLE_ENTITY, Some("invalid_body"));
    let body = app
        .post("/api/v1/admin/jobs", &admin, json!({ "kind": "sleep", "payload": { "milis": 5 } }))
        .await
        .expect(StatusCode::UNPROCESSABLE_ENTITY, Some("invalid_value"));
    assert_eq!(body["error"]["details"]["field"], "payload");
}

#[sqlx::test]
async fn the_idempotency_key_returns_the_first_answer_to_20_concurrent_requests(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let admin = app.admin_token().await;
    let mut requests = Vec::new();
    for _ in 0..20 {
        let request = app
            .client
            .post(format!("{}/api/v1/admin/jobs", app.base))
            .bearer_auth(&admin)
            .header("Idempotency-Key", "nightly-check-42")
            .body(r#"{"kind":"noop"}"#)
            .send();
        requests.push(request);
    }
    let mut answers = Vec::new();
    for response in futures::future::join_all(requests).await {
        let response = response.unwrap();
        assert_eq!(response.status(), StatusCode::ACCEPTED);
        answers.push(response.json::<Value>().await.unwrap());
    }
    assert!(answers.iter().all(|a| *a == answers[0]), "every one gets the first answer");
    assert_eq!(answers[0]["existing"], false);
    let count: i64 =
        sqlx::query_scalar("SELECT count(*) FROM jobs").fetch_one(&app.pool).await.unwrap();
    assert_eq!(count, 1);

    let long_key = "k".repeat(256);
    let answer = app
        .client
        .post(format!("{}/api/v1/admin/jobs", app.base))
        .bearer_auth(&admin)
        .header("Idempotency-Key", long_key)
        .body(r#"{"kind":"noop"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::BAD_REQUEST);
}

#[sqlx::test]
async fn jobs_are_visible_within_their_scope_only(pool: PgPool) {
    let app = TestApp::spawn(pool.clone()).await;
    let org = &app.org;
    let shop = Owner::department(org.field, org.dept);
    let ledger = Owner::department(org.other_field, org.other_dept);
    let shop_job =
        submit(&pool, &scoped("noop", shop, Some(("project", "p-1".to_owned())))).await.to_string();
    let ledger_job = submit(&pool, &scoped("noop", ledger, None)).await.to_string();
    let center_job = submit(&pool, &scoped("sleep", Owner::default(), None)).await.to_string();

    let admin = app.admin_token().await;
    let field_admin = app.field_admin_token().await;
    let lead = app.team_lead_token().await;
    let all = app.get("/api/v1/jobs", &admin).await.expect(StatusCode::OK, None);
    assert_eq!(
        ids(&all),
        [center_job.clone(), ledger_job.clone(), shop_job.clone()],
        "newest first"
    );
    for token in [&field_admin, &lead] {
        let mine = app.get("/api/v1/jobs", token).await.expect(StatusCode::OK, None);
        assert_eq!(ids(&mine), vec![shop_job.clone()]);
        app.get(&format!("/api/v1/jobs/{shop_job}"), token).await.expect(StatusCode::OK, None);
        for hidden in [&ledger_job, &center_job] {
            app.get(&format!("/api/v1/jobs/{hidden}"), token)
                .await
                .expect(StatusCode::NOT_FOUND, Some("not_found"));
        }
    }
    app.get(&format!("/api/v1/jobs/{}", Uuid::now_v7()), &admin)
        .await
        .expect(StatusCode::NOT_FOUND, Some("not_found"));

    let filtered = app.get("/api/v1/jobs?kind=sleep", &admin).await.expect(StatusCode::OK, None);
    assert_eq!(ids(&filtered), vec![center_job.clone()]);
    let filtered =
        app.get("/api/v1/jobs?subject=project:p-1", &admin).await.expect(StatusCode::OK, None);
    assert_eq!(ids(&filtered), vec![shop_job.clone()]);
    let filtered =
        app.get("/api/v1/jobs?status=queued&limit=2", &admin).await.expect(StatusCode::OK, None);
    assert_eq!(ids(&filtered).len(), 2);
    let cursor = filtered["next_cursor"].as_str().unwrap();
    let rest = app
        .get(&format!("/api/v1/jobs?status=queued&limit=2&cursor={cursor}"), &admin)
        .await
        .expect(StatusCode::OK, None);
    assert_eq!(ids(&rest), vec![shop_job.clone()]);
    app.get("/api/v1/jobs?status=done", &admin)
        .await
        .expect(StatusCode::BAD_REQUEST, Some("invalid_query"));
}

#[sqlx::test]
async fn admins_and_submitters_cancel_queued_jobs(pool: PgPool) {
    let app = TestApp::spawn(pool.clone()).await;
    let org = &app.org;
    let shop = Owner::department(org.field, org.dept);
    let job = submit(&pool, &scoped("noop", shop, None)).await;
    let path = format!("/api/v1/jobs/{job}/cancel");
    let lead = app.team_lead_token().await;
    app.call(Method::POST, &path, Some(&lead), None)
        .await
        .expect(StatusCode::FORBIDDEN, Some("forbidden"));
    let admin = app.admin_token().await;
    let cancelled =
        app.call(Method::POST, &path, Some(&admin), None).await.expect(StatusCode::OK, None);
    assert_eq!(cancelled["status"], "cancelled");
    let body = app
        .call(Method::POST, &path, Some(&admin), None)
        .await
        .expect(StatusCode::CONFLICT, Some("not_cancellable"));
    assert_eq!(body["error"]["details"]["status"], "cancelled");
    let audited: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM audit_events WHERE action = 'job.cancel' AND subject_id = $1",
    )
    .bind(job.to_string())
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(audited, 1);

    // The submitter may cancel its own job.
    let submitted = app
        .post("/api/v1/admin/jobs", &admin, json!({ "kind": "noop" }))
        .await
        .expect(StatusCode::ACCEPTED, None);
    let own = format!("/api/v1/jobs/{}/cancel", submitted["job_id"].as_str().unwrap());
    app.call(Method::POST, &own, Some(&admin), None).await.expect(StatusCode::OK, None);
}

#[sqlx::test]
async fn job_outcomes_and_latency_reach_the_metrics(pool: PgPool) {
    let app = TestApp::spawn(pool.clone()).await;
    let admin = app.admin_token().await;
    let body = app
        .post("/api/v1/admin/jobs", &admin, json!({ "kind": "noop" }))
        .await
        .expect(StatusCode::ACCEPTED, None);
    let id: Uuid = body["job_id"].as_str().unwrap().parse().unwrap();
    app.run_due_jobs().await;
    let done = crate::jobs::job(&pool, id).await;
    assert_eq!(done.status, infrahub::domain::job::JobStatus::Succeeded);
    let text =
        app.client.get(format!("{}/metrics", app.base)).send().await.unwrap().text().await.unwrap();
    for needle in [
        r#"infrahub_jobs_total{kind="noop",outcome="succeeded"}"#,
        r#"infrahub_job_pickup_latency_seconds_bucket{kind="noop""#,
        r#"infrahub_job_duration_seconds_count{kind="noop"}"#,
        r#"infrahub_jobs_queue_depth{kind="noop"}"#,
    ] {
        assert!(text.contains(needle), "{needle} in {text}");
    }
}

#[sqlx::test]
async fn an_idempotency_key_reused_for_another_request_is_refused(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let admin = app.admin_token().await;
    let send = |body: &'static str| {
        app.client
            .post(format!("{}/api/v1/admin/jobs", app.base))
            .bearer_auth(&admin)
            .header("Idempotency-Key", "k-1")
            .body(body)
            .send()
    };
    assert_eq!(send(r#"{"kind":"noop"}"#).await.unwrap().status(), StatusCode::ACCEPTED);
    assert_eq!(send(r#"{"kind":"noop"}"#).await.unwrap().status(), StatusCode::ACCEPTED);
    let other = send(r#"{"kind":"sleep","payload":{"millis":1}}"#).await.unwrap();
    assert_eq!(other.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let body: Value = other.json().await.unwrap();
    assert_eq!(body["error"]["code"], "idempotency_key_reused");
}
