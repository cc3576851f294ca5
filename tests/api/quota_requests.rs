//! Quota requests: a team lead asks for more quota at a site with a reason; the field admin
//! sees it beside the field's free capacity and approves it (an `allocate_quota` job raises
//! the quota, with the same checks) or rejects it; racing approvals never over-allocate.

use infrahub::domain::role::Role;
use infrahub::domain::scope::Scope;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sqlx::PgPool;
use uuid::Uuid;

use crate::console::Browser;
use crate::helpers::{Answer, PASSWORD, TestApp, create_user};

async fn ask(app: &TestApp, lead: &str, cpu: u32, ram_gb: u32) -> Answer {
    let body = json!({ "site": "fra", "cpu": cpu, "ram_gb": ram_gb, "reason": "the spring sale" });
    app.post("/api/v1/quota-requests", lead, body).await
}

async fn decide(
    app: &TestApp,
    token: &str,
    id: &str,
    verdict: &str,
    body: Option<Value>,
) -> Answer {
    let path = format!("/api/v1/quota-requests/{id}/{verdict}");
    app.call(Method::POST, &path, Some(token), body).await
}

/// The department's quota at `fra` as its quota view says: (cpu, ram_gb).
async fn quota_of(app: &TestApp, token: &str, dept: Uuid) -> (i64, i64) {
    let view = app
        .get(&format!("/api/v1/departments/{dept}/quota"), token)
        .await
        .expect(StatusCode::OK, None);
    let quota = &view["sites"][0]["quota"];
    (quota["cpu"].as_i64().unwrap(), quota["ram_gb"].as_i64().unwrap())
}

async fn job_status(pool: &PgPool, id: &str) -> String {
    sqlx::query_scalar("SELECT status FROM jobs WHERE id = $1::uuid")
        .bind(id)
        .fetch_one(pool)
        .await
        .unwrap()
}

#[sqlx::test]
async fn a_team_lead_asks_and_the_field_admin_approves_through_allocate_quota(pool: PgPool) {
    let app = TestApp::spawn(pool.clone()).await;
    app.add_server("fra-1", 32, Some(app.org.field)).await;
    app.give_quota(8, 32).await;
    let lead = app.team_lead_token().await;
    let asked = ask(&app, &lead, 8, 32).await.expect(StatusCode::CREATED, None);
    assert_eq!(asked["status"], "pending", "{asked}");
    assert_eq!(asked["reason"], "the spring sale");
    assert_eq!(
        asked["fit"],
        Value::Null,
        "the field's free capacity is not the team lead's to see"
    );
    let id = asked["id"].as_str().unwrap().to_owned();
    ask(&app, &lead, 1, 0).await.expect(StatusCode::CONFLICT, Some("already_pending"));
    ask(&app, &lead, 0, 0).await.expect(StatusCode::UNPROCESSABLE_ENTITY, Some("invalid_value"));
    let admin = app.admin_token().await;
    ask(&app, &admin, 1, 1).await.expect(StatusCode::FORBIDDEN, Some("forbidden"));

    // Another field's admin sees nothing of it.
    create_user(&pool, "other-admin", Role::FieldAdmin, Scope::Field(app.org.other_field), false)
        .await;
    let other = app.login("other-admin", PASSWORD).await;
    let none = app.get("/api/v1/quota-requests", &other).await.expect(StatusCode::OK, None);
    assert_eq!(none["items"], json!([]));
    app.get(&format!("/api/v1/quota-requests/{id}"), &other)
        .await
        .expect(StatusCode::NOT_FOUND, Some("not_found"));
    decide(&app, &other, &id, "approve", None)
        .await
        .expect(StatusCode::NOT_FOUND, Some("not_found"));
    decide(&app, &lead, &id, "approve", None)
        .await
        .expect(StatusCode::FORBIDDEN, Some("forbidden"));

    let field_admin = app.field_admin_token().await;
    let pending = app
        .get("/api/v1/quota-requests?status=pending", &field_admin)
        .await
        .expect(StatusCode::OK, None);
    assert_eq!(pending["items"][0]["id"], id.as_str());
    assert_eq!(pending["items"][0]["department"], "shop");
    let fit = &pending["items"][0]["fit"];
    assert_eq!(fit["quota_now"], json!({ "cpu": 8, "ram_gb": 32 }));
    assert_eq!(fit["quota_after"], json!({ "cpu": 16, "ram_gb": 64 }));
    assert_eq!(fit["field_free"], json!({ "cpu": 32, "ram_gb": 128 }));
    assert_eq!(fit["fits"], true);
    // The field admin sets the quota to 10/40 first: the increase builds on that.
    let set = json!({ "field_id": app.org.field, "dept_id": app.org.dept, "site": "fra", "cpu_limit": 10, "ram_gb_limit": 40 });
    app.post("/api/v1/allocations/department-quota", &field_admin, set)
        .await
        .expect(StatusCode::ACCEPTED, None);
    app.run_jobs().await;
    let approved = decide(&app, &field_admin, &id, "approve", None).await;
    let approved = approved.expect(StatusCode::ACCEPTED, None);
    assert_eq!(approved["request"]["status"], "approved");
    let job = approved["job_id"].as_str().unwrap().to_owned();
    assert_eq!(approved["request"]["job_id"], job.as_str());
    app.run_jobs().await;
    assert_eq!(job_status(&pool, &job).await, "succeeded");
    assert_eq!(quota_of(&app, &lead, app.org.dept).await, (18, 72), "10/40 and then +8/+32");
    let applied =
        app.get(&format!("/api/v1/quota-requests/{id}"), &lead).await.expect(StatusCode::OK, None);
    assert_eq!(
        (applied["status"].as_str(), applied["approved_cpu"].as_i64()),
        (Some("applied"), Some(18))
    );
    let listed = app
        .get("/api/v1/quota-requests?status=applied", &field_admin)
        .await
        .expect(StatusCode::OK, None);
    assert_eq!(listed["items"][0]["id"], id.as_str(), "filtered by outcome");
    decide(&app, &field_admin, &id, "reject", Some(json!({ "reason": "late" })))
        .await
        .expect(StatusCode::CONFLICT, Some("not_pending"));
    let audit = app
        .get("/api/v1/audit?action=quota_request.", &field_admin)
        .await
        .expect(StatusCode::OK, None);
    let actions: Vec<&str> =
        audit["items"].as_array().unwrap().iter().map(|e| e["action"].as_str().unwrap()).collect();
    assert_eq!(
        actions,
        ["quota_request.approve", "quota_request.create"],
        "the field admin's trail"
    );
    // Decided: the team lead may ask again. A quota set after that approval wins, whichever
    // job runs first.
    let again = ask(&app, &lead, 4, 0).await.expect(StatusCode::CREATED, None);
    let again = again["id"].as_str().unwrap();
    decide(&app, &field_admin, again, "approve", None).await.expect(StatusCode::ACCEPTED, None);
    let set = json!({ "field_id": app.org.field, "dept_id": app.org.dept, "site": "fra", "cpu_limit": 20, "ram_gb_limit": 80 });
    app.post("/api/v1/allocations/department-quota", &field_admin, set)
        .await
        .expect(StatusCode::ACCEPTED, None);
    app.run_jobs().await;
    assert_eq!(quota_of(&app, &lead, app.org.dept).await, (20, 80), "the later change wins");
    app.get("/api/v1/quota-requests?status=open", &lead)
        .await
        .expect(StatusCode::UNPROCESSABLE_ENTITY, Some("invalid_value"));
}

#[sqlx::test]
async fn a_request_that_does_not_fit_stays_pending_until_rejected(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    app.add_server("fra-1", 12, Some(app.org.field)).await;
    app.give_quota(8, 32).await;
    let lead = app.team_lead_token().await;
    let asked = ask(&app, &lead, 8, 8).await.expect(StatusCode::CREATED, None);
    let id = asked["id"].as_str().unwrap();
    let field_admin = app.field_admin_token().await;
    let seen = app.get(&format!("/api/v1/quota-requests/{id}"), &field_admin).await;
    assert_eq!(seen.expect(StatusCode::OK, None)["fit"]["fits"], false);
    let refused = decide(&app, &field_admin, id, "approve", None).await;
    let refused = refused.expect(StatusCode::CONFLICT, Some("over_quota"));
    assert_eq!(refused["error"]["details"]["free"], json!({ "cpu": 12, "ram_gb": 48 }));
    let still =
        app.get(&format!("/api/v1/quota-requests/{id}"), &lead).await.expect(StatusCode::OK, None);
    assert_eq!(still["status"], "pending");
    decide(&app, &field_admin, id, "reject", Some(json!({ "reason": "" })))
        .await
        .expect(StatusCode::UNPROCESSABLE_ENTITY, Some("invalid_value"));
    let rejected =
        decide(&app, &field_admin, id, "reject", Some(json!({ "reason": "no room at fra" })))
            .await
            .expect(StatusCode::OK, None);
    assert_eq!(rejected["status"], "rejected");
    let seen =
        app.get(&format!("/api/v1/quota-requests/{id}"), &lead).await.expect(StatusCode::OK, None);
    assert_eq!(seen["decision_reason"], "no room at fra");
    assert_eq!(seen["decided_by_name"], app.org.field_admin.username.as_str());
    assert_eq!(quota_of(&app, &lead, app.org.dept).await, (8, 32), "nothing changed");
}

#[sqlx::test]
async fn racing_approvals_never_over_allocate(pool: PgPool) {
    let app = TestApp::spawn(pool.clone()).await;
    app.add_server("fra-1", 16, Some(app.org.field)).await;
    app.give_quota(4, 16).await;
    // A second department of the same field, with its own team lead and quota.
    let second: Uuid = sqlx::query_scalar(
        "INSERT INTO departments (id, name, display_name, field_id) VALUES (gen_random_uuid(), 'books', 'Books', $1) RETURNING id",
    )
    .bind(app.org.field)
    .fetch_one(&pool)
    .await
    .unwrap();
    sqlx::query("INSERT INTO department_quotas (department_id, site_id, cpu_limit, ram_gb_limit) VALUES ($1, $2, 4, 12)")
        .bind(second)
        .bind(app.org.site)
        .execute(&pool)
        .await
        .unwrap();
    create_user(&pool, "books-lead", Role::TeamLead, Scope::Department(second), false).await;
    let (shop, books) = (app.team_lead_token().await, app.login("books-lead", PASSWORD).await);
    let a = ask(&app, &shop, 8, 0).await.expect(StatusCode::CREATED, None);
    let b = ask(&app, &books, 8, 0).await.expect(StatusCode::CREATED, None);
    let (a, b) = (a["id"].as_str().unwrap(), b["id"].as_str().unwrap());
    let field_admin = app.field_admin_token().await;
    let admin = app.admin_token().await;

    // The list reads every pending request's quota at once; each sees its own department's
    // (books has a project: what it reserves counts for books only).
    sqlx::query(
        "INSERT INTO projects (id, name, department_id, site_id, namespace, sla_type,
                               performance_tier, cpu, ram_gb, status, generation)
         VALUES (gen_random_uuid(), 'shelf', $1, $2, 'books-shelf', 'bronze', 'regular', 2, 4,
                 'active', 1)",
    )
    .bind(second)
    .bind(app.org.site)
    .execute(&pool)
    .await
    .unwrap();
    let listed = app.get("/api/v1/quota-requests", &field_admin).await.expect(StatusCode::OK, None);
    let items = listed["items"].as_array().unwrap();
    assert_eq!(items.len(), 2, "{listed}");
    let mut capacities = Vec::new();
    for item in items {
        let fit = &item["fit"];
        // RAM tells the two apart: shop has 16 GB, books 12; each is free of the other's.
        let (own, others, used) =
            if item["department"] == "shop" { (16, 12, 0) } else { (12, 16, 2) };
        assert_eq!(fit["used_by_projects"], json!({ "cpu": used, "ram_gb": used * 2 }), "{item}");
        assert_eq!(fit["quota_now"], json!({ "cpu": 4, "ram_gb": own }), "{item}");
        assert_eq!(fit["quota_after"], json!({ "cpu": 12, "ram_gb": own }), "{item}");
        let free = &fit["field_free"];
        assert_eq!(free["cpu"], 12, "16 CPU less the other department's 4: {item}");
        let capacity = free["ram_gb"].as_i64().unwrap() + others;
        let id = item["id"].as_str().unwrap();
        let one = app
            .get(&format!("/api/v1/quota-requests/{id}"), &field_admin)
            .await
            .expect(StatusCode::OK, None);
        assert_eq!(one["fit"], *fit, "the list and the request agree");
        capacities.push(capacity);
    }
    assert_eq!(capacities[0], capacities[1], "one field's RAM, whichever department asks");
    let departments: Vec<&str> = items.iter().map(|i| i["department"].as_str().unwrap()).collect();
    assert!(departments.contains(&"shop") && departments.contains(&"books"), "{departments:?}");

    // The same request approved twice at once: one approval, one job.
    let (first, second_try) = tokio::join!(
        decide(&app, &field_admin, a, "approve", None),
        decide(&app, &admin, a, "approve", None)
    );
    let won =
        [first.status, second_try.status].iter().filter(|s| **s == StatusCode::ACCEPTED).count();
    assert_eq!(won, 1, "{:?} {:?}", first.body, second_try.body);
    let lost = if first.status == StatusCode::ACCEPTED { second_try } else { first };
    lost.expect(StatusCode::CONFLICT, Some("not_pending"));

    // Each fits alone (4 + 4 + 8 <= 16), not both (24): the second one fails in its job.
    let other = decide(&app, &field_admin, b, "approve", None).await;
    app.run_jobs().await;
    let jobs: Vec<(String,)> =
        sqlx::query_as("SELECT status FROM jobs WHERE kind = 'raise_quota' ORDER BY created_at")
            .fetch_all(&pool)
            .await
            .unwrap();
    if other.status == StatusCode::ACCEPTED {
        // Whichever job runs first wins; the other finds the capacity taken.
        let mut statuses: Vec<&str> = jobs.iter().map(|j| j.0.as_str()).collect();
        statuses.sort();
        assert_eq!(statuses, ["failed", "succeeded"], "the job checks again under the lock");
        let outcomes: Vec<(String,)> =
            sqlx::query_as("SELECT status FROM quota_requests ORDER BY status")
                .fetch_all(&pool)
                .await
                .unwrap();
        let outcomes: Vec<&str> = outcomes.iter().map(|o| o.0.as_str()).collect();
        assert_eq!(outcomes, ["applied", "failed"], "each request says how it ended");
    } else {
        other.expect(StatusCode::CONFLICT, Some("over_quota"));
    }
    let total: i64 = sqlx::query_scalar(
        "SELECT sum(cpu_limit)::int8 FROM department_quotas q JOIN departments d ON d.id = q.department_id
          WHERE d.field_id = $1",
    )
    .bind(app.org.field)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(total, 16, "one increase applied, never both");
}

#[sqlx::test]
async fn the_console_asks_shows_and_decides(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    app.add_server("fra-1", 32, Some(app.org.field)).await;
    app.give_quota(8, 32).await;
    let mut lead = Browser::new(&app.base);
    lead.login("shop-lead", PASSWORD).await;
    let dashboard = lead.get("/projects").await;
    assert!(dashboard.html.contains("Ask for more quota"), "{}", dashboard.html);
    let csrf = dashboard.hidden("_csrf");
    let form = [
        ("site", "fra"),
        ("cpu", "8"),
        ("ram_gb", "32"),
        ("reason", "the spring sale"),
        ("_csrf", csrf.as_str()),
    ];
    let asked = lead.post("/quota-requests", &form).await;
    assert_eq!(asked.location.as_deref(), Some("/projects"), "{}", asked.html);
    let dashboard = lead.get("/projects").await;
    assert!(dashboard.html.contains("the spring sale") && dashboard.html.contains("badge pending"));
    let again = lead.post("/quota-requests", &form).await;
    assert_eq!(again.status, StatusCode::CONFLICT, "{}", again.html);
    assert!(again.html.contains("already has an open quota request"), "{}", again.html);

    let mut admin = Browser::new(&app.base);
    admin.login(&app.org.field_admin.username, PASSWORD).await;
    let page = admin.get("/approvals").await;
    assert!(
        page.html.contains("Quota requests") && page.html.contains("the spring sale"),
        "{}",
        page.html
    );
    assert!(page.html.contains("16 CPU, 64 GB"), "the quota after: {}", page.html);
    let csrf = page.hidden("_csrf");
    let marker = "/quota-requests/";
    let start = page.html.find(marker).unwrap() + marker.len();
    let id = &page.html[start..start + 36];
    let approved = admin.post(&format!("/quota-requests/{id}/approve"), &[("_csrf", &csrf)]).await;
    assert_eq!(approved.location.as_deref(), Some("/approvals"), "{}", approved.html);
    app.run_jobs().await;
    let lead_token = app.team_lead_token().await;
    assert_eq!(quota_of(&app, &lead_token, app.org.dept).await, (16, 64));
    assert!(lead.get("/projects").await.html.contains("badge applied"));
}

/// Inserts a request of `dept` at the test's site (decided unless `pending`), with `id`.
async fn insert_request(
    pool: &PgPool,
    app: &TestApp,
    id: Uuid,
    dept: Uuid,
    status: &str,
    reason: &str,
) {
    sqlx::query(
        "INSERT INTO quota_requests (id, department_id, site_id, cpu, ram_gb, reason, status,
                                     requested_by_name, decided_by_name, decided_at)
         VALUES ($1, $2, $3, 1, 1, $4, $5, 'someone',
                 CASE WHEN $5 <> 'pending' THEN 'admin' END,
                 CASE WHEN $5 <> 'pending' THEN now() END)",
    )
    .bind(id)
    .bind(dept)
    .bind(app.org.site)
    .bind(reason)
    .bind(status)
    .execute(pool)
    .await
    .unwrap();
}

/// `count` pending requests, each of a new department of the field (one open request per
/// department and site), with reasons `<prefix>-00`, `<prefix>-01` …
async fn insert_pending_of_other_departments(
    pool: &PgPool,
    app: &TestApp,
    prefix: &str,
    count: usize,
) {
    for i in 0..count {
        let dept = Uuid::now_v7();
        sqlx::query(
            "INSERT INTO departments (id, field_id, name, display_name) VALUES ($1, $2, $3, $3)",
        )
        .bind(dept)
        .bind(app.org.field)
        .bind(format!("team-{prefix}-{i:02}"))
        .execute(pool)
        .await
        .unwrap();
        insert_request(pool, app, Uuid::now_v7(), dept, "pending", &format!("{prefix}-{i:02}"))
            .await;
    }
}

/// The target of the first link whose address starts with `prefix`, without its fragment.
fn link(html: &str, prefix: &str) -> Option<String> {
    let start = html.find(&format!("href=\"{prefix}"))? + "href=\"".len();
    let end = start + html[start..].find('"')?;
    let href = html[start..end].replace("&amp;", "&");
    Some(href.split('#').next().unwrap_or_default().to_owned())
}

/// Past a page, quota requests are paged: the team lead's dashboard shows its department's
/// newest first, ten at a time, with a link to older ones; the approvals page the pending ones
/// oldest first, fifty at a time, with a link to more; the API lists newest first when asked.
#[sqlx::test]
async fn long_lists_of_quota_requests_are_paged_newest_first_for_the_team_lead(pool: PgPool) {
    let app = TestApp::spawn(pool.clone()).await;
    // Eleven requests of the lead's department, in id order: all decided but the newest.
    let mut ids: Vec<Uuid> = (0..11).map(|_| Uuid::now_v7()).collect();
    ids.sort();
    for (i, id) in ids.iter().enumerate() {
        let status = if i == 10 { "pending" } else { "rejected" };
        insert_request(&pool, &app, *id, app.org.dept, status, &format!("ask-{i:02}")).await;
    }
    // Fifty-one more pending ones, of other departments of the field.
    insert_pending_of_other_departments(&pool, &app, "other", 51).await;

    let token = app.team_lead_token().await;
    let reasons = |page: &Value| -> Vec<String> {
        let items = page["items"].as_array().unwrap();
        items.iter().map(|r| r["reason"].as_str().unwrap().to_owned()).collect()
    };
    let newest = app
        .get("/api/v1/quota-requests?newest_first=true&limit=5", &token)
        .await
        .expect(StatusCode::OK, None);
    assert_eq!(reasons(&newest), ["ask-10", "ask-09", "ask-08", "ask-07", "ask-06"]);
    let cursor = newest["next_cursor"].as_str().unwrap();
    let path = format!("/api/v1/quota-requests?newest_first=true&limit=5&cursor={cursor}");
    let older = app.get(&path, &token).await.expect(StatusCode::OK, None);
    assert_eq!(reasons(&older), ["ask-05", "ask-04", "ask-03", "ask-02", "ask-01"]);
    let oldest =
        app.get("/api/v1/quota-requests?limit=2", &token).await.expect(StatusCode::OK, None);
    assert_eq!(reasons(&oldest), ["ask-00", "ask-01"]);

    let mut lead = Browser::new(&app.base);
    lead.login("shop-lead", PASSWORD).await;
    let dashboard = lead.get("/projects").await.html;
    let shown = |html: &str| (0..11).filter(|i| html.contains(&format!("ask-{i:02}"))).count();
    assert!(dashboard.contains("ask-10") && dashboard.contains("ask-01"), "{dashboard}");
    assert!(!dashboard.contains("ask-00"), "only the ten newest: {dashboard}");
    assert_eq!(shown(&dashboard), 10);
    assert!(
        dashboard.find("ask-10").unwrap() < dashboard.find("ask-01").unwrap(),
        "newest first: {dashboard}"
    );
    let next = link(&dashboard, "/projects?requests_cursor=").expect("a link to older requests");
    let second = lead.get(&next).await.html;
    assert!(second.contains("ask-00") && shown(&second) == 1, "{second}");
    assert!(link(&second, "/projects?requests_cursor=").is_none(), "{second}");

    let mut admin = Browser::new(&app.base);
    admin.login(&app.org.field_admin.username, PASSWORD).await;
    let cards = |html: &str| html.matches("id=\"quota-request-").count();
    let first = admin.get("/approvals").await.html;
    assert_eq!(cards(&first), 50, "fifty a page");
    assert!(first.contains("other-00") && first.contains("ask-10"), "oldest first");
    let next = link(&first, "/approvals?requests_cursor=").expect("a link to more requests");
    let rest = admin.get(&next).await.html;
    assert_eq!(cards(&rest), 2, "52 pending in all");
    assert!(rest.contains("other-50"), "{rest}");
    assert!(link(&rest, "/approvals?requests_cursor=").is_none(), "{rest}");
}

/// The target of the link labelled `label`, without its fragment.
fn link_labelled(html: &str, label: &str) -> Option<String> {
    let at = html.find(&format!(">{label}<"))?;
    let start = html[..at].rfind("href=\"")? + "href=\"".len();
    let end = start + html[start..].find('"')?;
    let href = html[start..end].replace("&amp;", "&");
    Some(href.split('#').next().unwrap_or_default().to_owned())
}

/// Inserts `count` projects of the test department named `<prefix>-00`, `<prefix>-01` …
async fn insert_projects(pool: &PgPool, app: &TestApp, prefix: &str, status: &str, count: usize) {
    for i in 0..count {
        sqlx::query(
            "INSERT INTO projects (id, name, department_id, site_id, namespace, sla_type,
                                   performance_tier, cpu, ram_gb, status, approval_expires_at,
                                   approval_reason)
             VALUES ($1, $2, $3, $4, 'shop-' || $2, 'silver', 'regular', 1, 1, $5,
                     CASE WHEN $5 = 'pending_approval' THEN now() + interval '1 day' END,
                     CASE WHEN $5 = 'pending_approval' THEN 'a test' END)",
        )
        .bind(Uuid::now_v7())
        .bind(format!("{prefix}-{i:02}"))
        .bind(app.org.dept)
        .bind(app.org.site)
        .bind(status)
        .execute(pool)
        .await
        .unwrap();
    }
}

/// A page with two paged lists (the team lead's projects and quota requests; the approvals'
/// projects and quota requests): the link to the next page of one keeps the page the other
/// is on.
#[sqlx::test]
async fn the_two_lists_of_a_page_keep_each_others_page(pool: PgPool) {
    let app = TestApp::spawn(pool.clone()).await;
    // The team lead's dashboard: 24 projects and 10 requests a page.
    insert_projects(&pool, &app, "web", "active", 25).await;
    for i in 0..11 {
        insert_request(
            &pool,
            &app,
            Uuid::now_v7(),
            app.org.dept,
            "rejected",
            &format!("ask-{i:02}"),
        )
        .await;
    }
    let mut lead = Browser::new(&app.base);
    lead.login("shop-lead", PASSWORD).await;
    let first = lead.get("/projects").await.html;
    assert!(first.contains("ask-10") && !first.contains("ask-00"), "{first}");
    let older = link_labelled(&first, "Older requests").expect("a link to older requests");
    let second = lead.get(&older).await.html;
    assert!(second.contains("ask-00") && !second.contains("ask-10"), "{second}");
    let next = link_labelled(&second, "Next page →").expect("a link to more projects");
    let both = lead.get(&next).await.html;
    assert!(both.contains("web-24") && !both.contains("web-00"), "the next projects: {both}");
    assert!(
        both.contains("ask-00") && !both.contains("ask-10"),
        "still the older requests: {both}"
    );
    let back = link_labelled(&first, "Next page →").expect("a link to more projects");
    let projects_first = lead.get(&back).await.html;
    let older = link_labelled(&projects_first, "Older requests").expect("older requests");
    let both = lead.get(&older).await.html;
    assert!(both.contains("web-24") && both.contains("ask-00"), "either order: {both}");

    // The approvals: 50 of each a page.
    insert_projects(&pool, &app, "wait", "pending_approval", 51).await;
    insert_pending_of_other_departments(&pool, &app, "more", 51).await;
    let mut admin = Browser::new(&app.base);
    admin.login(&app.org.field_admin.username, PASSWORD).await;
    let first = admin.get("/approvals").await.html;
    assert!(first.contains("wait-00") && first.contains("more-00"), "{first}");
    let more = link_labelled(&first, "More quota requests").expect("more quota requests");
    let requests = admin.get(&more).await.html;
    assert!(requests.contains("more-50") && !requests.contains("more-00"), "{requests}");
    let more = link_labelled(&requests, "More").expect("more projects");
    let both = admin.get(&more).await.html;
    assert!(both.contains("wait-50") && !both.contains("wait-00"), "the next projects: {both}");
    assert!(both.contains("more-50") && !both.contains("more-00"), "still the rest: {both}");
    // A decision taken there comes back to the same pages.
    let action = |html: &str, what: &str| {
        let at = html.find(what).unwrap_or_else(|| panic!("{what} in {html}"));
        let start = at + "action=\"".len();
        let end = start + html[start..].find('"').unwrap();
        html[start..end].replace("&amp;", "&")
    };
    let approve = action(&both, "action=\"/quota-requests/");
    assert!(approve.contains("cursor=") && approve.contains("requests_cursor="), "{approve}");
    let csrf = admin.csrf(&more).await;
    // Refused (the field has no servers here): the refusal shown on the same pages.
    let refused = admin.post(&approve, &[("_csrf", &csrf)]).await;
    assert_eq!(refused.status, StatusCode::CONFLICT);
    assert!(
        refused.html.contains("wait-50") && refused.html.contains("more-50"),
        "{}",
        refused.html
    );
    assert!(!refused.html.contains("wait-00") && !refused.html.contains("more-00"));
    // Done: back to the same pages.
    let reject = approve.replacen("/approve", "/reject", 1);
    let decided = admin.post(&reject, &[("_csrf", &csrf), ("reason", "not now")]).await;
    assert_eq!(decided.status, StatusCode::SEE_OTHER, "{}", decided.html);
    let pages = |address: &str| {
        let address = url::Url::parse(&format!("http://console{address}")).unwrap();
        let mut pairs: Vec<(String, String)> = address.query_pairs().into_owned().collect();
        pairs.sort();
        (address.path().to_owned(), pairs)
    };
    let back = decided.location.expect("back to the approvals");
    assert_eq!(pages(&back), pages(&more), "the pages it was taken on");
}
