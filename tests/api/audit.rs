//! `GET /api/v1/audit`: who reads what, filters, cursor pagination, refused logins.

use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::PgPool;

use crate::helpers::TestApp;

fn actions(page: &Value) -> Vec<String> {
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap().to_owned())
        .collect()
}

/// Every event a query reaches, page by page with `limit` per page.
async fn walk(app: &TestApp, token: &str, query: &str, limit: u32) -> Vec<Value> {
    let mut events = Vec::new();
    let mut cursor = String::new();
    loop {
        let path = format!("/api/v1/audit?limit={limit}{query}{cursor}");
        let page = app.get(&path, token).await.expect(StatusCode::OK, None);
        let items = page["items"].as_array().unwrap();
        assert!(items.len() <= limit as usize);
        events.extend(items.iter().cloned());
        match page["next_cursor"].as_i64() {
            Some(next) => cursor = format!("&cursor={next}"),
            None => return events,
        }
    }
}

#[sqlx::test]
async fn center_admins_read_everything_field_admins_their_field(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let admin = app.admin_token().await;
    let field_admin = app.field_admin_token().await;
    let lead = app.team_lead_token().await;
    let ours = json!({ "name": "web", "field_id": app.org.field });
    app.post("/api/v1/admin/departments", &admin, ours).await.expect(StatusCode::CREATED, None);
    let theirs = json!({ "name": "bonds", "field_id": app.org.other_field });
    app.post("/api/v1/admin/departments", &admin, theirs).await.expect(StatusCode::CREATED, None);
    app.give_quota(8, 32).await;
    let project = app.create_project(&lead, "shop-web", "bronze", "regular").await;
    app.login_answer("shop-lead", "wrong-password").await.expect(StatusCode::UNAUTHORIZED, None);
    app.login_answer("nobody", "wrong-password").await.expect(StatusCode::UNAUTHORIZED, None);

    let all = walk(&app, &admin, "", 500).await;
    let everything: Vec<&str> = all.iter().map(|e| e["action"].as_str().unwrap()).collect();
    assert_eq!(everything.iter().filter(|a| **a == "department.create").count(), 2);
    assert_eq!(everything.iter().filter(|a| **a == "login.failed").count(), 2);
    assert!(everything.contains(&"project.create"), "{everything:?}");
    let ids: Vec<i64> = all.iter().map(|e| e["id"].as_i64().unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[0] > w[1]), "newest first: {ids:?}");

    // A field admin reads its field's events only: its department, the project of one of its
    // departments, the refused login of one of its team leads; not the other field's.
    let field = walk(&app, &field_admin, "", 500).await;
    let subjects: Vec<(&str, &str)> = field
        .iter()
        .map(|e| (e["action"].as_str().unwrap(), e["subject_id"].as_str().unwrap()))
        .collect();
    assert!(subjects.contains(&("project.create", project.as_str())), "{subjects:?}");
    assert!(subjects.contains(&("login.failed", "shop-lead")), "{subjects:?}");
    assert!(!subjects.iter().any(|(_, s)| *s == "nobody"), "{subjects:?}");
    let names: Vec<&str> = field.iter().filter_map(|e| e["after"]["name"].as_str()).collect();
    assert!(names.contains(&"web") && !names.contains(&"bonds"), "{names:?}");
    assert!(
        field.iter().all(|e| e["field_ids"].as_array().unwrap().contains(&json!(app.org.field)))
    );
    assert!(field.len() < all.len());

    // Pagination: one event per page walks the same events, none twice.
    let paged = walk(&app, &admin, "", 1).await;
    assert_eq!(paged, all);

    // Another field, or a team lead: refused.
    let other = format!("/api/v1/audit?field_id={}", app.org.other_field);
    app.get(&other, &field_admin).await.expect(StatusCode::FORBIDDEN, Some("forbidden"));
    let theirs = app.get(&other, &admin).await.expect(StatusCode::OK, None);
    assert_eq!(actions(&theirs), ["department.create"]);
    app.get("/api/v1/audit", &lead).await.expect(StatusCode::FORBIDDEN, Some("forbidden"));
}

#[sqlx::test]
async fn filters_narrow_the_trail(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let admin = app.admin_token().await;
    let lead = app.team_lead_token().await;
    let started = chrono::Utc::now();
    app.give_quota(8, 32).await;
    let project = app.create_project(&lead, "shop-web", "bronze", "regular").await;
    let body = json!({ "name": "web", "field_id": app.org.field });
    app.post("/api/v1/admin/departments", &admin, body).await.expect(StatusCode::CREATED, None);
    app.login_answer("root", "not-it").await.expect(StatusCode::UNAUTHORIZED, None);

    let by_actor = app.get("/api/v1/audit?actor=shop-lead", &admin).await.body;
    let lead_actions = actions(&by_actor);
    assert!(!lead_actions.is_empty());
    assert!(by_actor["items"].as_array().unwrap().iter().all(|e| e["actor"] == "shop-lead"));
    assert!(lead_actions.contains(&"project.create".to_owned()), "{lead_actions:?}");

    let subject = format!("/api/v1/audit?subject_type=project&subject_id={project}");
    let one = app.get(&subject, &admin).await.body;
    assert_eq!(actions(&one), ["project.create"]);
    assert_eq!(one["items"][0]["after"]["name"], "shop-web");

    let prefix = app.get("/api/v1/audit?action=department.", &admin).await.body;
    assert_eq!(actions(&prefix), ["department.create"]);
    let failed = app.get("/api/v1/audit?action=login.failed", &admin).await.body;
    assert_eq!(failed["items"][0]["subject_id"], "root");
    assert_eq!(failed["items"][0]["actor"], "anonymous");
    assert_eq!(failed["items"][0]["after"]["reason"], "invalid_credentials");

    let since = started.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let later = app.get(&format!("/api/v1/audit?since={}", urlencode(&since)), &admin).await.body;
    assert!(!actions(&later).is_empty());
    let until = app.get(&format!("/api/v1/audit?until={}", urlencode(&since)), &admin).await.body;
    assert!(actions(&until).is_empty(), "{until}");

    let bad = format!("/api/v1/audit?since={0}&until={0}", urlencode(&since));
    app.get(&bad, &admin).await.expect(StatusCode::BAD_REQUEST, Some("invalid_query"));
    app.get("/api/v1/audit?limit=0", &admin)
        .await
        .expect(StatusCode::BAD_REQUEST, Some("invalid_query"));
    app.get("/api/v1/audit?since=yesterday", &admin).await.expect(StatusCode::BAD_REQUEST, None);
}

fn urlencode(value: &str) -> String {
    url::form_urlencoded::byte_serialize(value.as_bytes()).collect()
}

/// A change that crosses fields belongs to both: each field admin sees a server move and an
/// account moved between their departments.
#[sqlx::test]
async fn changes_across_fields_are_read_by_both_fields(pool: PgPool) {
    use infrahub::domain::role::Role;
    use infrahub::domain::scope::Scope;

    let app = TestApp::spawn(pool).await;
    let admin = app.admin_token().await;
    crate::helpers::create_user(
        &app.pool,
        "finance-admin",
        Role::FieldAdmin,
        Scope::Field(app.org.other_field),
        false,
    )
    .await;
    let ours = app.field_admin_token().await;
    let theirs = app.login("finance-admin", crate::helpers::PASSWORD).await;
    let server: uuid::Uuid = sqlx::query_scalar(
        "INSERT INTO servers (id, inventory_id, name, site_id, cpu_cores, ram_gb, status, field_id)
         VALUES (gen_random_uuid(), 's-1', 's-1', $1, 16, 64, 'active', $2) RETURNING id",
    )
    .bind(app.org.site)
    .bind(app.org.field)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    let moved = json!({ "server_id": server, "field_id": app.org.other_field });
    app.post("/api/v1/allocations/servers", &admin, moved).await.expect(StatusCode::ACCEPTED, None);
    app.run_jobs().await;

    let body = json!({ "username": "mover", "password": "a-long-password", "role": "team_lead",
                       "department_id": app.org.dept });
    let user =
        app.post("/api/v1/admin/users", &admin, body).await.expect(StatusCode::CREATED, None);
    let path = format!("/api/v1/admin/users/{}", user["id"].as_str().unwrap());
    let patch = json!({ "department_id": app.org.other_dept });
    app.call(reqwest::Method::PATCH, &path, Some(&admin), Some(patch))
        .await
        .expect(StatusCode::OK, None);

    for token in [&ours, &theirs] {
        let server_events =
            app.get(&format!("/api/v1/audit?subject_type=server&subject_id={server}"), token).await;
        let events = server_events.expect(StatusCode::OK, None);
        assert_eq!(actions(&events), ["server.assign"], "{events}");
        let user_events = app
            .get(
                &format!(
                    "/api/v1/audit?subject_type=user&subject_id={}",
                    user["id"].as_str().unwrap()
                ),
                token,
            )
            .await;
        let events = user_events.expect(StatusCode::OK, None);
        assert!(actions(&events).contains(&"user.update".to_owned()), "{events}");
    }
    // The account's creation happened in our field only.
    let created =
        format!("/api/v1/audit?action=user.create&subject_id={}", user["id"].as_str().unwrap());
    assert_eq!(actions(&app.get(&created, &ours).await.body), ["user.create"]);
    assert!(actions(&app.get(&created, &theirs).await.body).is_empty());
}

/// The fields the audit trigger files an event under, for an event inserted as given.
async fn filed_under(
    pool: &PgPool,
    kind: &str,
    subject: &str,
    before: Value,
    after: Value,
) -> Vec<uuid::Uuid> {
    let mut fields: Vec<uuid::Uuid> = sqlx::query_scalar(
        "INSERT INTO audit_events (actor, action, subject_type, subject_id, before, after)
         VALUES ('test', $1 || '.test', $1, $2, $3, $4) RETURNING field_ids",
    )
    .bind(kind)
    .bind(subject)
    .bind((!before.is_null()).then_some(before))
    .bind((!after.is_null()).then_some(after))
    .fetch_one(pool)
    .await
    .unwrap();
    fields.sort();
    fields
}

#[sqlx::test]
async fn the_trigger_files_events_under_their_fields_whatever_their_ids_look_like(pool: PgPool) {
    let (a, b, dept) = (uuid::Uuid::now_v7(), uuid::Uuid::now_v7(), uuid::Uuid::now_v7());
    sqlx::query(
        "INSERT INTO fields (id, name, display_name) VALUES ($1, 'a', 'A'), ($2, 'b', 'B')",
    )
    .bind(a)
    .bind(b)
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO departments (id, field_id, name, display_name) VALUES ($1, $2, 'd', 'D')",
    )
    .bind(dept)
    .bind(a)
    .execute(&pool)
    .await
    .unwrap();
    let site = uuid::Uuid::now_v7();
    let (mut ab, none) = (vec![a, b], Vec::<uuid::Uuid>::new());
    ab.sort();

    // A quota is `department:site`; a department moved between fields belongs to both.
    assert_eq!(
        filed_under(&pool, "department_quota", &format!("{dept}:{site}"), json!(null), json!({}))
            .await,
        [a]
    );
    let moved = filed_under(
        &pool,
        "department",
        &dept.to_string(),
        json!({ "field_id": a }),
        json!({ "field_id": b }),
    )
    .await;
    assert_eq!(moved, ab);
    // Every spelling uuid_in accepts: braces, no hyphens, upper case.
    let braced = format!("{{{}}}", a.simple().to_string().to_uppercase());
    assert_eq!(filed_under(&pool, "field", &braced, json!(null), json!(null)).await, [a]);
    // Text that is not a uuid places nothing, raises nothing, and hides nothing else.
    for subject in [
        "alice",
        "",
        "{0192a5e0-1234-7abc-8def-0123456789ab",
        "0192a5e0-1234-7abc-8def-0123456789ab}",
        "x:y",
    ] {
        assert_eq!(
            filed_under(&pool, "department_quota", subject, json!(null), json!(null)).await,
            none,
            "{subject:?}"
        );
    }
    let junk = json!({ "department_id": 5, "field_id": "not-a-uuid" });
    assert_eq!(
        filed_under(&pool, "project", "junk", junk.clone(), json!({ "field_id": b })).await,
        [b]
    );
    // JSON that is not an object, and an unknown login.
    assert_eq!(
        filed_under(&pool, "project", "junk", json!("department_id"), json!([1, 2])).await,
        none
    );
    assert_eq!(filed_under(&pool, "login", "nobody", json!(null), json!(null)).await, none);
}

/// The `job.create` events with `subject_id` = `job`, as a center admin reads them.
async fn job_created(app: &TestApp, token: &str, job: &str) -> Vec<Value> {
    walk(app, token, &format!("&action=job.create&subject_type=job&subject_id={job}"), 100).await
}

#[sqlx::test]
async fn a_submitted_job_is_recorded_once_with_its_submitter_in_its_field(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let admin = app.admin_token().await;
    let field_admin = app.field_admin_token().await;
    app.add_server("s-1", 64, Some(app.org.field)).await;
    let body = json!({ "field_id": app.org.field, "dept_id": app.org.dept, "site": "fra",
                       "cpu_limit": 4, "ram_gb_limit": 8 });
    let answer = app.post("/api/v1/allocations/department-quota", &field_admin, body).await;
    let job = answer.expect(StatusCode::ACCEPTED, None)["job_id"].as_str().unwrap().to_owned();

    // One event, by the field admin, of the job as it was made, filed under the job's field:
    // the field admin reads it, and the other field does not.
    let events = job_created(&app, &admin, &job).await;
    assert_eq!(events.len(), 1, "{events:?}");
    let event = &events[0];
    assert_eq!(event["actor"], "retail-admin");
    assert_eq!(event["after"]["id"], json!(job));
    assert_eq!(event["after"]["kind"], "allocate_quota");
    assert_eq!(event["after"]["status"], "queued");
    assert_eq!(event["after"]["payload"]["cpu_limit"], 4);
    let api_job = app.get(&format!("/api/v1/jobs/{job}"), &admin).await.body;
    for key in ["submitted_by", "submitted_by_name", "max_attempts", "errors", "started_at"] {
        assert_eq!(event["after"][key], api_job[key], "{key}: the event records the job as read");
    }
    for key in ["created_at", "next_run_at"] {
        let instant = |v: &Value| {
            let text = v.as_str().unwrap_or_else(|| panic!("{key}: {v}"));
            assert!(text.ends_with('Z'), "{key} in UTC: {text}");
            chrono::DateTime::parse_from_rfc3339(text).unwrap()
        };
        assert_eq!(instant(&event["after"][key]), instant(&api_job[key]), "{key}");
    }
    assert_eq!(event["field_ids"], json!([app.org.field]));
    assert_eq!(job_created(&app, &field_admin, &job).await.len(), 1);
    let other = format!("/api/v1/audit?field_id={}&subject_id={job}", app.org.other_field);
    assert!(actions(&app.get(&other, &admin).await.body).is_empty());

    // A sync asked for twice is one job: one event, and none for the answer that found it.
    let sync = "/api/v1/admin/sync/servers";
    let first = app.call(reqwest::Method::POST, sync, Some(&admin), None).await;
    let first = first.expect(StatusCode::ACCEPTED, None)["job_id"].as_str().unwrap().to_owned();
    let again = app.call(reqwest::Method::POST, sync, Some(&admin), None).await;
    assert_eq!(again.expect(StatusCode::ACCEPTED, None)["job_id"], json!(first));
    let synced = job_created(&app, &admin, &first).await;
    assert_eq!(synced.len(), 1, "{synced:?}");
    assert_eq!(synced[0]["field_ids"], json!([]), "a center job belongs to no field");
}
