//! `Idempotency-Key` over HTTP: bound to its request, replayed for the same request (even the
//! synchronous admin CRUD), refused for another, kept 24 hours, per account.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sqlx::PgPool;

use crate::helpers::{Answer, TestApp};

/// Sends a JSON request with an `Idempotency-Key`.
async fn keyed(
    app: &TestApp,
    method: Method,
    path: &str,
    token: &str,
    key: &str,
    body: Option<Value>,
) -> Answer {
    let mut request = app
        .client
        .request(method, format!("{}{path}", app.base))
        .bearer_auth(token)
        .header("Idempotency-Key", key);
    if let Some(body) = body {
        request = request.json(&body);
    }
    crate::helpers::into_answer(request.send().await.unwrap()).await
}

async fn count(pool: &PgPool, sql: &'static str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pool).await.unwrap()
}

#[sqlx::test]
async fn a_repeated_resize_is_answered_again_and_never_runs_twice(pool: PgPool) {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("gitops");
    let app = TestApp::spawn_with(pool.clone(), infrahub::config::Mode::Serve, move |c| {
        c.delivery.git.path = repo
    })
    .await;
    app.give_quota(40, 160).await;
    let lead = app.team_lead_token().await;
    let body = json!({ "name": "web", "site": "fra", "sla_type": "bronze", "performance_tier": "regular" });
    let id =
        app.post("/api/v1/projects", &lead, body).await.expect(StatusCode::ACCEPTED, None)["id"]
            .as_str()
            .unwrap()
            .to_owned();
    app.project_becomes(&lead, &id, "active").await;
    let path = format!("/api/v1/projects/{id}");
    let resize = || {
        keyed(&app, Method::PATCH, &path, &lead, "resize-1", Some(json!({ "sla_type": "silver" })))
    };
    let first = resize().await;
    assert_eq!(first.status, StatusCode::ACCEPTED, "{}", first.body);
    app.project_becomes(&lead, &id, "active").await;
    let jobs_before = count(&pool, "SELECT count(*) FROM jobs").await;

    let again = resize().await;
    assert_eq!((again.status, &again.body), (first.status, &first.body), "the first answer again");
    assert_eq!(again.headers["idempotency-replayed"], "true");
    assert_eq!(again.headers["location"], first.headers["location"]);
    assert_eq!(count(&pool, "SELECT count(*) FROM jobs").await, jobs_before, "nothing ran");
    let project = app.get(&path, &lead).await.expect(StatusCode::OK, None);
    assert_eq!(project["status"], "active", "the project is not sent back to provisioning");
    // And nothing keeps it from being deleted.
    app.call(Method::DELETE, &path, Some(&lead), None).await.expect(StatusCode::ACCEPTED, None);
}

#[sqlx::test]
async fn a_key_is_bound_to_its_request(pool: PgPool) {
    let app = TestApp::spawn(pool.clone()).await;
    app.give_quota(40, 160).await;
    let lead = app.team_lead_token().await;
    let body = json!({ "name": "web", "site": "fra", "sla_type": "bronze", "performance_tier": "regular" });
    let created = keyed(&app, Method::POST, "/api/v1/projects", &lead, "k", Some(body)).await;
    assert_eq!(created.status, StatusCode::ACCEPTED);
    let other = json!({ "name": "new", "site": "fra", "sla_type": "bronze", "performance_tier": "regular" });
    let refused = keyed(&app, Method::POST, "/api/v1/projects", &lead, "k", Some(other)).await;
    refused.expect(StatusCode::UNPROCESSABLE_ENTITY, Some("idempotency_key_reused"));
    let id = created.body["id"].as_str().unwrap();
    let delete =
        keyed(&app, Method::DELETE, &format!("/api/v1/projects/{id}"), &lead, "k", None).await;
    delete.expect(StatusCode::UNPROCESSABLE_ENTITY, Some("idempotency_key_reused"));
    assert_eq!(count(&pool, "SELECT count(*) FROM projects").await, 1, "no second project");

    // Keys are per account: another account's same key is its own.
    let admin = app.admin_token().await;
    let site = keyed(
        &app,
        Method::POST,
        "/api/v1/admin/sites",
        &admin,
        "k",
        Some(json!({ "name": "muc" })),
    )
    .await;
    assert_eq!(site.status, StatusCode::CREATED, "{}", site.body);

    // After 24 hours a key binds nothing any more.
    sqlx::query("UPDATE idempotency_keys SET created_at = now() - interval '25 hours'")
        .execute(&pool)
        .await
        .unwrap();
    let other = json!({ "name": "new", "site": "fra", "sla_type": "bronze", "performance_tier": "regular" });
    let later = keyed(&app, Method::POST, "/api/v1/projects", &lead, "k", Some(other)).await;
    assert_eq!(later.status, StatusCode::ACCEPTED, "{}", later.body);
}

#[sqlx::test]
async fn synchronous_admin_changes_are_replayed_too(pool: PgPool) {
    let app = TestApp::spawn(pool.clone()).await;
    let admin = app.admin_token().await;
    let body = json!({ "name": "muc", "display_name": "Munich" });
    let mut requests = Vec::new();
    for _ in 0..10 {
        requests.push(keyed(
            &app,
            Method::POST,
            "/api/v1/admin/sites",
            &admin,
            "site-muc",
            Some(body.clone()),
        ));
    }
    let answers = futures::future::join_all(requests).await;
    assert!(answers.iter().all(|a| a.status == StatusCode::CREATED), "no 409 for the repeats");
    assert!(answers.iter().all(|a| a.body == answers[0].body), "one answer for all");
    assert_eq!(
        answers.iter().filter(|a| a.headers.get("idempotency-replayed").is_some()).count(),
        9
    );
    assert_eq!(count(&pool, "SELECT count(*) FROM sites WHERE name = 'muc'").await, 1);
    assert_eq!(
        count(&pool, "SELECT count(*) FROM audit_events WHERE action = 'site.create'").await,
        1,
        "one change, one audit event"
    );
    // Without a key the same request is simply a second request.
    app.post("/api/v1/admin/sites", &admin, body)
        .await
        .expect(StatusCode::CONFLICT, Some("already_exists"));
    // A key nobody could type is refused before anything runs.
    let bad = keyed(
        &app,
        Method::POST,
        "/api/v1/admin/sites",
        &admin,
        "tab\there",
        Some(json!({ "name": "x" })),
    )
    .await;
    bad.expect(StatusCode::BAD_REQUEST, Some("invalid_header"));
}

/// A daemon that dies after a change commits but before its answer is kept must not leave a
/// change without an answer: the request sent again would then run a second time (here: 409
/// `name_taken` for a project that was in fact created). Dropping the request's future after
/// the use case returned stands in for the kill.
#[sqlx::test]
async fn a_change_commits_only_together_with_its_stored_answer(pool: PgPool) {
    use infrahub::app::{self, Caller};
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("gitops");
    let app = TestApp::spawn_with(pool.clone(), infrahub::config::Mode::Serve, move |c| {
        c.delivery.git.path = repo
    })
    .await;
    app.give_quota(40, 160).await;
    let lead = app.team_lead_token().await;
    let body = json!({ "name": "web", "site": "fra", "sla_type": "bronze", "performance_tier": "regular" });
    let bytes = serde_json::to_vec(&body).unwrap();
    let request = app::idempotency::Request::new(
        app.org.team_lead.id,
        "create-web",
        "POST",
        "/api/v1/projects",
        &bytes,
        &app.ctx.fingerprint_key,
    )
    .unwrap();
    let caller = Caller::new(&app.org.team_lead, None);
    let input: app::projects::CreateProject = serde_json::from_value(body.clone()).unwrap();
    let (created_tx, created) = tokio::sync::oneshot::channel();
    let dying = app::idempotency::once(&app.ctx, &request, || async {
        let submitted = app::projects::create(&app.ctx, &caller, input).await;
        created_tx.send(submitted.is_ok()).unwrap();
        std::future::pending().await
    });
    tokio::select! {
        _ = dying => unreachable!("the handler never answers"),
        ok = created => assert!(ok.unwrap(), "the use case ran to its end"),
    }
    assert_eq!(
        count(&pool, "SELECT count(*) FROM projects").await,
        0,
        "without its answer, the change is not committed"
    );
    assert_eq!(count(&pool, "SELECT count(*) FROM idempotency_keys").await, 0);

    let again =
        keyed(&app, Method::POST, "/api/v1/projects", &lead, "create-web", Some(body)).await;
    assert_eq!(again.status, StatusCode::ACCEPTED, "{}", again.body);
    assert!(again.headers.get("idempotency-replayed").is_none(), "it ran, for the first time");
    assert_eq!(count(&pool, "SELECT count(*) FROM projects").await, 1);
    assert_eq!(count(&pool, "SELECT count(*) FROM idempotency_keys").await, 1);
    let id = again.body["id"].as_str().unwrap().to_owned();
    app.project_becomes(&lead, &id, "active").await;
}

/// The same for a job submitted on its own (a quota change: one statement without a key):
/// under a key its job and audit event wait for the answer, and die with the request.
#[sqlx::test]
async fn a_submitted_job_commits_only_together_with_its_stored_answer(pool: PgPool) {
    use infrahub::app::{self, Caller};
    let app = TestApp::spawn(pool.clone()).await;
    app.add_server("s-1", 64, Some(app.org.field)).await;
    let field_admin = app.field_admin_token().await;
    let body = json!({ "field_id": app.org.field, "dept_id": app.org.dept, "site": "fra",
                       "cpu_limit": 4, "ram_gb_limit": 8 });
    let path = "/api/v1/allocations/department-quota";
    let bytes = serde_json::to_vec(&body).unwrap();
    let request = app::idempotency::Request::new(
        app.org.field_admin.id,
        "quota-4",
        "POST",
        path,
        &bytes,
        &app.ctx.fingerprint_key,
    )
    .unwrap();
    let caller = Caller::new(&app.org.field_admin, None);
    let input: app::allocation::SetQuota = serde_json::from_value(body.clone()).unwrap();
    let (submitted_tx, submitted) = tokio::sync::oneshot::channel();
    let dying = app::idempotency::once(&app.ctx, &request, || async {
        let answer = app::allocation::set_quota(&app.ctx, &caller, input).await;
        submitted_tx.send(answer.is_ok()).unwrap();
        std::future::pending().await
    });
    tokio::select! {
        _ = dying => unreachable!("the handler never answers"),
        ok = submitted => assert!(ok.unwrap(), "the use case ran to its end"),
    }
    let jobs = "SELECT count(*) FROM jobs WHERE kind = 'allocate_quota'";
    let events = "SELECT count(*) FROM audit_events WHERE action = 'job.create'";
    assert_eq!(count(&pool, jobs).await, 0, "without its answer, the job is not committed");
    assert_eq!(count(&pool, events).await, 0);
    assert_eq!(count(&pool, "SELECT count(*) FROM idempotency_keys").await, 0);

    for replayed in [false, true] {
        let again = keyed(&app, Method::POST, path, &field_admin, "quota-4", Some(body.clone()));
        let again = again.await;
        assert_eq!(again.status, StatusCode::ACCEPTED, "{}", again.body);
        assert_eq!(again.headers.get("idempotency-replayed").is_some(), replayed);
    }
    assert_eq!(count(&pool, jobs).await, 1, "it ran once");
    assert_eq!(count(&pool, events).await, 1);
    assert_eq!(count(&pool, "SELECT count(*) FROM idempotency_keys").await, 1);
}

/// A login answers with a token: it is never kept (even sent with a key and a bearer), and no
/// stored fingerprint is a plain hash of a body holding a password.
#[sqlx::test]
async fn logins_are_not_kept_and_fingerprints_are_keyed(pool: PgPool) {
    let app = TestApp::spawn(pool.clone()).await;
    let admin = app.admin_token().await;
    let body = json!({ "username": "root", "password": crate::helpers::PASSWORD });
    for _ in 0..2 {
        let answer =
            keyed(&app, Method::POST, "/api/v1/auth/login", &admin, "login-1", Some(body.clone()))
                .await;
        assert_eq!(answer.status, StatusCode::OK);
        assert!(answer.headers.get("idempotency-replayed").is_none());
    }
    assert_eq!(count(&pool, "SELECT count(*) FROM idempotency_keys").await, 0);

    let user =
        json!({ "username": "carol", "password": "a-long-password", "role": "center_admin" });
    let bytes = serde_json::to_vec(&user).unwrap();
    keyed(&app, Method::POST, "/api/v1/admin/users", &admin, "carol", Some(user)).await;
    let stored: String = sqlx::query_scalar("SELECT fingerprint FROM idempotency_keys")
        .fetch_one(&pool)
        .await
        .unwrap();
    use sha2::Digest;
    let mut plain = sha2::Sha256::new();
    for part in [b"POST".as_slice(), b"\n", b"/api/v1/admin/users", b"\n", &bytes] {
        plain.update(part);
    }
    let plain: String = plain.finalize().iter().map(|b| format!("{b:02x}")).collect();
    assert_ne!(stored, plain, "the fingerprint needs the daemon's secret");
}
