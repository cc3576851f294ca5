//! Allocation over HTTP: the documented flow, scope rules, intake checks, and the invariants
//! under concurrent requests.

use infrahub::config::{InventorySource, Mode};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sqlx::PgPool;
use uuid::Uuid;

use crate::helpers::TestApp;

fn demo_inventory() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/demo/inventory.json")
}

/// Runs the pending jobs, then returns the job behind a 202 answer, over HTTP.
async fn finished(app: &TestApp, token: &str, accepted: &Value) -> Value {
    app.run_jobs().await;
    let job = app.get(accepted["location"].as_str().expect("a Location"), token).await.body;
    assert!(matches!(job["status"].as_str(), Some("succeeded" | "failed")), "{job}");
    job
}

#[sqlx::test]
async fn the_documented_allocation_flow_works_over_http(pool: PgPool) {
    // The demo as `infrahub demo` leaves it: half of berlin's servers belong to field berlin.
    let app = TestApp::spawn_with(pool.clone(), Mode::Demo, |c| {
        c.inventory.source = InventorySource::File;
        c.inventory.file.path = demo_inventory();
    })
    .await;
    infrahub::app::demo::bootstrap(&app.ctx).await.unwrap();
    let seed = infrahub::app::demo::seed_capacity(&app.ctx).await.unwrap();
    assert_eq!((seed.servers_synced, seed.servers_assigned, seed.quota_set), (40, 12, true));
    let admin = app.login("admin", "admin").await;

    // center_admin: sync servers, assign one to a field
    let sync = app
        .call(Method::POST, "/api/v1/admin/sync/servers", Some(&admin), None)
        .await
        .expect(StatusCode::ACCEPTED, None);
    let job = finished(&app, &admin, &sync).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    assert_eq!(
        (job["result"]["seen"].as_u64(), job["result"]["unchanged"].as_u64()),
        (Some(40), Some(40))
    );
    let page = app
        .get("/api/v1/servers?site=berlin&unassigned=true&limit=500", &admin)
        .await
        .expect(StatusCode::OK, None);
    let free: Vec<&Value> = page["items"].as_array().unwrap().iter().collect();
    assert_eq!(free.len(), 12);
    let fields = app.get("/api/v1/admin/fields", &admin).await.expect(StatusCode::OK, None);
    let berlin =
        fields["items"].as_array().unwrap().iter().find(|f| f["name"] == "berlin").unwrap()["id"]
            .clone();
    let server = free[0]["id"].clone();
    let raw = format!(r#"{{"server_id":{server},"field_id":{berlin}}}"#);
    let answer = app
        .client
        .post(format!("{}/api/v1/allocations/servers", app.base))
        .bearer_auth(&admin)
        .body(raw)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::ACCEPTED);
    let assign = answer.json::<Value>().await.unwrap();
    assert_eq!(finished(&app, &admin, &assign).await["status"], "succeeded");
    let mine = app
        .get(&format!("/api/v1/servers?field_id={}", berlin.as_str().unwrap()), &admin)
        .await
        .expect(StatusCode::OK, None);
    assert!(
        mine["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["id"] == server && s["field"] == "berlin")
    );

    // field_admin: department quota at a site
    let field_admin = app.login("field-berlin", "password").await;
    let lead = app.login("team-platform", "password").await;
    let dept = app.get("/api/v1/me", &lead).await.body["department"]["id"].clone();
    let body = json!({ "field_id": berlin, "dept_id": dept, "site": "berlin", "cpu_limit": 80, "ram_gb_limit": 256 });
    let quota = app
        .post("/api/v1/allocations/department-quota", &field_admin, body)
        .await
        .expect(StatusCode::ACCEPTED, None);
    let job = finished(&app, &field_admin, &quota).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    let view = app
        .get(&format!("/api/v1/departments/{}/quota", dept.as_str().unwrap()), &lead)
        .await
        .expect(StatusCode::OK, None);
    assert_eq!(view["sites"][0]["site"], "berlin");
    assert_eq!(view["sites"][0]["quota"], json!({ "cpu": 80, "ram_gb": 256 }));
    assert_eq!(view["sites"][0]["free"], json!({ "cpu": 80, "ram_gb": 256 }));
    let capacity = app
        .get(&format!("/api/v1/fields/{}/capacity", berlin.as_str().unwrap()), &field_admin)
        .await
        .expect(StatusCode::OK, None);
    let site = &capacity["sites"][0];
    assert_eq!(site["servers"], 13);
    assert_eq!(site["allocated"], json!({ "cpu": 80, "ram_gb": 256 }));
    assert_eq!(
        site["free"]["cpu"].as_i64().unwrap() + 80,
        site["capacity"]["cpu"].as_i64().unwrap()
    );
}

#[sqlx::test]
async fn a_second_sync_request_returns_the_queued_one(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let admin = app.admin_token().await;
    let first = app
        .call(Method::POST, "/api/v1/admin/sync/servers", Some(&admin), None)
        .await
        .expect(StatusCode::ACCEPTED, None);
    let second = app
        .call(Method::POST, "/api/v1/admin/sync/servers", Some(&admin), None)
        .await
        .expect(StatusCode::ACCEPTED, None);
    assert_eq!(first["job_id"], second["job_id"]);
    assert_eq!(second["existing"], true);
    app.call(
        Method::POST,
        "/api/v1/admin/sync/servers",
        Some(&app.field_admin_token().await),
        None,
    )
    .await
    .expect(StatusCode::FORBIDDEN, Some("forbidden"));
}

/// `count` servers of `cpu` cores and `ram` GB at the test site, assigned to `field`.
async fn add_servers(
    pool: &PgPool,
    site: Uuid,
    field: Option<Uuid>,
    count: i32,
    cpu: i32,
    ram: i32,
) -> Vec<Uuid> {
    let mut ids = Vec::new();
    for _ in 0..count {
        let id = Uuid::now_v7();
        sqlx::query(
            "INSERT INTO servers (id, inventory_id, name, site_id, cpu_cores, ram_gb, field_id)
             VALUES ($1, $1::text, 'srv-' || $1::text, $2, $3, $4, $5)",
        )
        .bind(id)
        .bind(site)
        .bind(cpu)
        .bind(ram)
        .bind(field)
        .execute(pool)
        .await
        .unwrap();
        ids.push(id);
    }
    ids
}

async fn set_quota(pool: &PgPool, dept: Uuid, site: Uuid, cpu: i32, ram: i32) {
    sqlx::query("INSERT INTO department_quotas (department_id, site_id, cpu_limit, ram_gb_limit) VALUES ($1, $2, $3, $4)")
        .bind(dept)
        .bind(site)
        .bind(cpu)
        .bind(ram)
        .execute(pool)
        .await
        .unwrap();
}

/// An active project `payments` of the department at the site, holding `cpu` and `ram`.
async fn add_project(pool: &PgPool, dept: Uuid, site: Uuid, cpu: i32, ram: i32) {
    sqlx::query(
        "INSERT INTO projects (id, name, department_id, site_id, namespace, sla_type, performance_tier, cpu, ram_gb, status)
         VALUES ($1, 'payments', $2, $3, 'shop-payments', 'silver', 'regular', $4, $5, 'active')",
    )
    .bind(Uuid::now_v7())
    .bind(dept)
    .bind(site)
    .bind(cpu)
    .bind(ram)
    .execute(pool)
    .await
    .unwrap();
}

#[sqlx::test]
async fn field_admins_and_team_leads_stay_in_their_scope(pool: PgPool) {
    let app = TestApp::spawn(pool.clone()).await;
    let org = &app.org;
    add_servers(&pool, org.site, Some(org.field), 2, 16, 128).await;
    add_servers(&pool, org.site, Some(org.other_field), 3, 16, 128).await;
    add_servers(&pool, org.site, None, 1, 16, 128).await;
    let field_admin = app.field_admin_token().await;
    let lead = app.team_lead_token().await;

    let mine = app.get("/api/v1/servers", &field_admin).await.expect(StatusCode::OK, None);
    assert_eq!(mine["items"].as_array().unwrap().len(), 2);
    assert!(mine["items"].as_array().unwrap().iter().all(|s| s["field"] == "retail"));
    for path in [
        format!("/api/v1/servers?field_id={}", org.other_field),
        "/api/v1/servers?unassigned=true".to_owned(),
    ] {
        app.get(&path, &field_admin).await.expect(StatusCode::FORBIDDEN, Some("forbidden"));
    }
    app.get(&format!("/api/v1/fields/{}/capacity", org.field), &field_admin)
        .await
        .expect(StatusCode::OK, None);
    app.get(&format!("/api/v1/fields/{}/capacity", org.other_field), &field_admin)
        .await
        .expect(StatusCode::NOT_FOUND, Some("not_found"));
    app.get(&format!("/api/v1/departments/{}/quota", org.dept), &field_admin)
        .await
        .expect(StatusCode::OK, None);
    app.get(&format!("/api/v1/departments/{}/quota", org.other_dept), &field_admin)
        .await
        .expect(StatusCode::NOT_FOUND, Some("not_found"));
    let foreign = json!({ "field_id": org.other_field, "dept_id": org.other_dept, "site": "fra", "cpu_limit": 1, "ram_gb_limit": 1 });
    app.post("/api/v1/allocations/department-quota", &field_admin, foreign)
        .await
        .expect(StatusCode::FORBIDDEN, Some("forbidden"));
    // Naming its own field with another field's department, or one that does not exist, is
    // the same refusal: whether that department exists is not the field admin's to learn, and
    // no value of the request is looked at first (an unknown site, a negative quota).
    for (dept, site) in
        [(org.other_dept, "fra"), (Uuid::now_v7(), "fra"), (org.other_dept, "atlantis")]
    {
        let body = json!({ "field_id": org.field, "dept_id": dept, "site": site, "cpu_limit": 1, "ram_gb_limit": 1 });
        let refused = app
            .post("/api/v1/allocations/department-quota", &field_admin, body)
            .await
            .expect(StatusCode::FORBIDDEN, Some("forbidden"));
        assert_eq!(
            refused["error"]["message"],
            "field admins set quotas of their own field's departments only"
        );
    }
    // A role that may not use a route is refused before its body is read.
    for (path, body) in [
        ("/api/v1/admin/sites", &b"{ not json"[..]),
        ("/api/v1/allocations/servers", &b""[..]),
        ("/api/v1/admin/jobs", &br#"{"kind": "nonsense"}"#[..]),
    ] {
        let answer = app.call_raw(Method::POST, path, &field_admin, None, body).await;
        answer.expect(StatusCode::FORBIDDEN, Some("forbidden"));
    }
    let server = add_servers(&pool, org.site, None, 1, 8, 64).await[0];
    let assign = json!({ "server_id": server, "field_id": org.field });
    app.post("/api/v1/allocations/servers", &field_admin, assign)
        .await
        .expect(StatusCode::FORBIDDEN, Some("forbidden"));

    app.get("/api/v1/servers", &lead).await.expect(StatusCode::FORBIDDEN, Some("forbidden"));
    app.get(&format!("/api/v1/fields/{}/capacity", org.field), &lead)
        .await
        .expect(StatusCode::FORBIDDEN, Some("forbidden"));
    let own = json!({ "field_id": org.field, "dept_id": org.dept, "site": "fra", "cpu_limit": 1, "ram_gb_limit": 1 });
    app.post("/api/v1/allocations/department-quota", &lead, own)
        .await
        .expect(StatusCode::FORBIDDEN, Some("forbidden"));
    app.get(&format!("/api/v1/departments/{}/quota", org.dept), &lead)
        .await
        .expect(StatusCode::OK, None);
    app.get(&format!("/api/v1/departments/{}/quota", org.other_dept), &lead)
        .await
        .expect(StatusCode::NOT_FOUND, Some("not_found"));
}

#[sqlx::test]
async fn obvious_conflicts_are_refused_at_intake(pool: PgPool) {
    let app = TestApp::spawn(pool.clone()).await;
    let org = &app.org;
    let owned = add_servers(&pool, org.site, Some(org.field), 2, 10, 100).await;
    set_quota(&pool, org.dept, org.site, 15, 150).await;
    let admin = app.admin_token().await;
    let quota = |dept: Uuid, site: &str, cpu: i64| json!({ "field_id": org.field, "dept_id": dept, "site": site, "cpu_limit": cpu, "ram_gb_limit": 10 });

    let body = app
        .post("/api/v1/allocations/department-quota", &admin, quota(org.dept, "fra", 21))
        .await
        .expect(StatusCode::CONFLICT, Some("over_quota"));
    assert_eq!(body["error"]["details"]["free"], json!({ "cpu": 20, "ram_gb": 200 }));
    app.post("/api/v1/allocations/department-quota", &admin, quota(org.other_dept, "fra", 1))
        .await
        .expect(StatusCode::UNPROCESSABLE_ENTITY, Some("invalid_value"));
    app.post("/api/v1/allocations/department-quota", &admin, quota(org.dept, "atlantis", 1))
        .await
        .expect(StatusCode::UNPROCESSABLE_ENTITY, Some("invalid_value"));
    app.post("/api/v1/allocations/department-quota", &admin, quota(org.dept, "fra", -1))
        .await
        .expect(StatusCode::UNPROCESSABLE_ENTITY, Some("invalid_body"));

    let body = app
        .call(
            Method::DELETE,
            &format!("/api/v1/allocations/servers/{}", owned[0]),
            Some(&admin),
            None,
        )
        .await;
    let body = body.expect(StatusCode::CONFLICT, Some("capacity_in_use"));
    assert!(body["error"]["message"].as_str().unwrap().contains("shop: 15 CPU"), "{body}");
    let short = &body["error"]["details"]["departments_short"][0];
    assert_eq!(short["department"], "shop", "{body}");
    assert!(short["short"]["cpu"].as_i64().unwrap() > 0, "{body}");
    let loose = add_servers(&pool, org.site, None, 1, 4, 4).await[0];
    app.call(Method::DELETE, &format!("/api/v1/allocations/servers/{loose}"), Some(&admin), None)
        .await
        .expect(StatusCode::CONFLICT, Some("not_assigned"));
    app.call(
        Method::DELETE,
        &format!("/api/v1/allocations/servers/{}", Uuid::now_v7()),
        Some(&admin),
        None,
    )
    .await
    .expect(StatusCode::NOT_FOUND, Some("not_found"));
    sqlx::query("UPDATE servers SET status = 'missing' WHERE id = $1")
        .bind(loose)
        .execute(&pool)
        .await
        .unwrap();
    app.post(
        "/api/v1/allocations/servers",
        &admin,
        json!({ "server_id": loose, "field_id": org.field }),
    )
    .await
    .expect(StatusCode::CONFLICT, Some("server_not_active"));
}

async fn retail_quotas(pool: &PgPool, field: Uuid, site: Uuid) -> (i64, i64, i64) {
    sqlx::query_as(
        "SELECT count(*), coalesce(sum(q.cpu_limit), 0)::int8, coalesce(sum(q.ram_gb_limit), 0)::int8
           FROM department_quotas q JOIN departments d ON d.id = q.department_id
          WHERE d.field_id = $1 AND q.site_id = $2",
    )
    .bind(field)
    .bind(site)
    .fetch_one(pool)
    .await
    .unwrap()
}

#[sqlx::test]
async fn fifty_concurrent_quota_requests_never_over_allocate(pool: PgPool) {
    let app = TestApp::spawn_with(pool.clone(), Mode::Serve, |c| {
        c.workers.kinds.entry("allocate_quota".to_owned()).or_default().concurrency = Some(16);
    })
    .await;
    let org = &app.org;
    add_servers(&pool, org.site, Some(org.field), 10, 10, 100).await;
    let mut depts = Vec::new();
    for i in 0..50 {
        let id = Uuid::now_v7();
        sqlx::query(
            "INSERT INTO departments (id, field_id, name, display_name) VALUES ($1, $2, $3, $3)",
        )
        .bind(id)
        .bind(org.field)
        .bind(format!("team-{i}"))
        .execute(&pool)
        .await
        .unwrap();
        depts.push(id);
    }
    let admin = app.admin_token().await;
    let requests = depts.iter().map(|dept| {
        let body = json!({ "field_id": org.field, "dept_id": dept, "site": "fra", "cpu_limit": 10, "ram_gb_limit": 100 });
        app.client.post(format!("{}/api/v1/allocations/department-quota", app.base)).bearer_auth(&admin).json(&body).send()
    });
    let mut accepted = 0;
    for response in futures::future::join_all(requests).await {
        let status = response.unwrap().status();
        assert!(status == StatusCode::ACCEPTED || status == StatusCode::CONFLICT, "{status}");
        accepted += usize::from(status == StatusCode::ACCEPTED);
    }
    assert!(accepted >= 10, "the intake lets through at least what fits ({accepted})");
    app.run_jobs().await;
    let (count, cpu, ram) = retail_quotas(&pool, org.field, org.site).await;
    assert!(cpu <= 100 && ram <= 1000, "over-allocated: {cpu} CPU, {ram} GB");
    assert_eq!(count, 10, "exactly what fits was granted");
    let failed: Vec<String> = sqlx::query_scalar(
        "SELECT last_error FROM jobs WHERE kind = 'allocate_quota' AND status = 'failed'",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(failed.len(), accepted - 10);
    assert!(failed.iter().all(|e| e.contains("free capacity")), "{failed:?}");
}

#[sqlx::test]
async fn concurrent_unassignments_and_quota_raises_keep_quotas_within_capacity(pool: PgPool) {
    let app = TestApp::spawn_with(pool.clone(), Mode::Serve, |c| {
        c.workers.kinds.entry("allocate_servers".to_owned()).or_default().concurrency = Some(8);
        c.workers.kinds.entry("allocate_quota".to_owned()).or_default().concurrency = Some(8);
    })
    .await;
    let org = &app.org;
    let servers = add_servers(&pool, org.site, Some(org.field), 6, 10, 100).await;
    set_quota(&pool, org.dept, org.site, 25, 250).await;
    let second = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO departments (id, field_id, name, display_name) VALUES ($1, $2, 'web', 'Web')",
    )
    .bind(second)
    .bind(org.field)
    .execute(&pool)
    .await
    .unwrap();
    let admin = app.admin_token().await;
    let mut requests = Vec::new();
    for server in &servers {
        requests.push(
            app.client
                .delete(format!("{}/api/v1/allocations/servers/{server}", app.base))
                .bearer_auth(&admin)
                .send(),
        );
    }
    for cpu in [10, 20, 30] {
        let body = json!({ "field_id": org.field, "dept_id": second, "site": "fra", "cpu_limit": cpu, "ram_gb_limit": cpu * 10 });
        requests.push(
            app.client
                .post(format!("{}/api/v1/allocations/department-quota", app.base))
                .bearer_auth(&admin)
                .json(&body)
                .send(),
        );
    }
    for response in futures::future::join_all(requests).await {
        let status = response.unwrap().status();
        assert!(status == StatusCode::ACCEPTED || status == StatusCode::CONFLICT, "{status}");
    }
    app.run_jobs().await;
    let (_, quota_cpu, quota_ram) = retail_quotas(&pool, org.field, org.site).await;
    let (cpu, ram): (i64, i64) = sqlx::query_as(
        "SELECT coalesce(sum(cpu_cores), 0)::int8, coalesce(sum(ram_gb), 0)::int8 FROM servers WHERE field_id = $1 AND status = 'active'",
    )
    .bind(org.field)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(
        quota_cpu <= cpu && quota_ram <= ram,
        "quotas {quota_cpu}/{quota_ram} above capacity {cpu}/{ram}"
    );
    assert!(quota_cpu >= 25, "the existing quota stands");
    let refusals: Vec<String> = sqlx::query_scalar(
        "SELECT last_error FROM jobs WHERE kind = 'allocate_servers' AND status = 'failed'",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert!(
        !refusals.is_empty() && refusals.iter().all(|e| e.contains("shop: 25 CPU")),
        "{refusals:?}"
    );
}

#[sqlx::test]
async fn capacity_views_show_overcommit_deficits_and_project_usage(pool: PgPool) {
    let app =
        TestApp::spawn_with(pool.clone(), Mode::Serve, |c| c.capacity.cpu_overcommit = 2.0).await;
    let org = &app.org;
    let servers = add_servers(&pool, org.site, Some(org.field), 3, 10, 100).await;
    set_quota(&pool, org.dept, org.site, 50, 250).await;
    add_project(&pool, org.dept, org.site, 12, 48).await;
    let admin = app.admin_token().await;
    let view = app
        .get(&format!("/api/v1/fields/{}/capacity", org.field), &admin)
        .await
        .expect(StatusCode::OK, None);
    let site = &view["sites"][0];
    assert_eq!(site["hardware"], json!({ "cpu": 30, "ram_gb": 300 }));
    assert_eq!(site["capacity"], json!({ "cpu": 60, "ram_gb": 300 }), "CPU overcommitted twice");
    assert_eq!(site["free"], json!({ "cpu": 10, "ram_gb": 50 }));
    assert_eq!(site["deficit"], json!({ "cpu": 0, "ram_gb": 0 }));

    // A server vanishes from the inventory: the quotas now exceed the capacity, visibly.
    sqlx::query("UPDATE servers SET status = 'missing' WHERE id = $1")
        .bind(servers[0])
        .execute(&pool)
        .await
        .unwrap();
    let view = app
        .get(&format!("/api/v1/fields/{}/capacity", org.field), &admin)
        .await
        .expect(StatusCode::OK, None);
    let site = &view["sites"][0];
    assert_eq!((site["servers"].as_i64(), site["missing_servers"].as_i64()), (Some(2), Some(1)));
    assert_eq!(site["deficit"], json!({ "cpu": 10, "ram_gb": 50 }));
    assert_eq!(site["free"], json!({ "cpu": 0, "ram_gb": 0 }));

    let quota = app
        .get(&format!("/api/v1/departments/{}/quota", org.dept), &admin)
        .await
        .expect(StatusCode::OK, None);
    assert_eq!(quota["sites"][0]["used"], json!({ "cpu": 12, "ram_gb": 48 }));
    assert_eq!(quota["sites"][0]["free"], json!({ "cpu": 38, "ram_gb": 202 }));
    let below = json!({ "field_id": org.field, "dept_id": org.dept, "site": "fra", "cpu_limit": 10, "ram_gb_limit": 100 });
    let body = app
        .post("/api/v1/allocations/department-quota", &admin, below)
        .await
        .expect(StatusCode::CONFLICT, Some("over_quota"));
    assert!(body["error"]["message"].as_str().unwrap().contains("already use 12 CPU"), "{body}");
}

#[sqlx::test]
async fn the_impact_of_losing_servers_names_the_departments_short_and_by_how_much(pool: PgPool) {
    let app = TestApp::spawn(pool.clone()).await;
    let org = &app.org;
    let servers = add_servers(&pool, org.site, Some(org.field), 4, 10, 100).await;
    let foreign = add_servers(&pool, org.site, Some(org.other_field), 1, 10, 100).await;
    let second = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO departments (id, field_id, name, display_name) VALUES ($1, $2, 'ops', 'Ops')",
    )
    .bind(second)
    .bind(org.field)
    .execute(&pool)
    .await
    .unwrap();
    set_quota(&pool, org.dept, org.site, 24, 200).await;
    set_quota(&pool, second, org.site, 12, 100).await;
    add_project(&pool, org.dept, org.site, 20, 80).await;
    let field_admin = app.field_admin_token().await;
    let impact = |ids: &[Uuid]| {
        let query: Vec<String> = ids.iter().map(|id| format!("server={id}")).collect();
        format!("/api/v1/fields/{}/capacity/impact?{}", org.field, query.join("&"))
    };

    // 40 CPU hold quotas of 36: one server less (30) leaves each quota backed at 30/36, the
    // shortfall of 6 CPU carried 4 by shop and 2 by ops; RAM still fits.
    let one = app.get(&impact(&servers[..1]), &field_admin).await.expect(StatusCode::OK, None);
    let site = &one["sites"][0];
    assert_eq!(site["servers_lost"], 1);
    assert_eq!(site["capacity_now"], json!({ "cpu": 40, "ram_gb": 400 }));
    assert_eq!(site["capacity_after"], json!({ "cpu": 30, "ram_gb": 300 }));
    assert_eq!(site["deficit_after"], json!({ "cpu": 6, "ram_gb": 0 }));
    let short: Vec<(&str, &Value, &Value)> = site["departments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| (d["department"].as_str().unwrap(), &d["short"], &d["projects_unbacked"]))
        .collect();
    let (zero, four, two) = (
        json!({ "cpu": 0, "ram_gb": 0 }),
        json!({ "cpu": 4, "ram_gb": 0 }),
        json!({ "cpu": 2, "ram_gb": 0 }),
    );
    assert_eq!(short, [("ops", &two, &zero), ("shop", &four, &zero)]);

    // Two servers less (20 CPU, 200 GB): shop keeps 13 CPU of the 20 its projects hold.
    let two_ids = format!(
        "/api/v1/fields/{}/capacity/impact?server={},{}",
        org.field, servers[0], servers[1]
    );
    let two = app.get(&two_ids, &field_admin).await.expect(StatusCode::OK, None);
    let shop = &two["sites"][0]["departments"][1];
    assert_eq!(shop["backed"], json!({ "cpu": 13, "ram_gb": 133 }));
    assert_eq!(shop["short"], json!({ "cpu": 11, "ram_gb": 67 }));
    assert_eq!(shop["projects_unbacked"], json!({ "cpu": 7, "ram_gb": 0 }));
    // Nothing changed.
    let view = app.get(&format!("/api/v1/fields/{}/capacity", org.field), &field_admin).await;
    assert_eq!(view.expect(StatusCode::OK, None)["sites"][0]["servers"], 4);

    // A server already missing takes nothing more away: no one is newly short.
    sqlx::query("UPDATE servers SET status = 'missing' WHERE id = $1")
        .bind(servers[3])
        .execute(&pool)
        .await
        .unwrap();
    let gone = app.get(&impact(&servers[3..]), &field_admin).await.expect(StatusCode::OK, None);
    assert_eq!(
        (
            gone["sites"][0]["servers_lost"].as_i64(),
            gone["sites"][0]["departments"].as_array().map(Vec::len)
        ),
        (Some(0), Some(0))
    );
    // Now 30 CPU hold 36: losing one more makes both shorter, and says by how much before.
    let worse = app.get(&impact(&servers[..1]), &field_admin).await.expect(StatusCode::OK, None);
    let shop = &worse["sites"][0]["departments"][1];
    assert_eq!(
        (&shop["short_now"], &shop["short"]),
        (&json!({ "cpu": 4, "ram_gb": 0 }), &json!({ "cpu": 11, "ram_gb": 67 }))
    );
    let lead = app.team_lead_token().await;
    app.get(&impact(&servers[..1]), &lead).await.expect(StatusCode::FORBIDDEN, None);

    // Servers of another field, none, or not ids: refused; another field's view: not found.
    app.get(&impact(&foreign), &field_admin)
        .await
        .expect(StatusCode::UNPROCESSABLE_ENTITY, Some("invalid_value"));
    let none = format!("/api/v1/fields/{}/capacity/impact", org.field);
    app.get(&none, &field_admin)
        .await
        .expect(StatusCode::UNPROCESSABLE_ENTITY, Some("missing_value"));
    let junk = format!("/api/v1/fields/{}/capacity/impact?server=x", org.field);
    app.get(&junk, &field_admin)
        .await
        .expect(StatusCode::UNPROCESSABLE_ENTITY, Some("invalid_value"));
    let theirs =
        format!("/api/v1/fields/{}/capacity/impact?server={}", org.other_field, foreign[0]);
    app.get(&theirs, &field_admin).await.expect(StatusCode::NOT_FOUND, Some("not_found"));
}

#[sqlx::test]
async fn the_quota_editor_reads_every_department_of_the_field_at_once(pool: PgPool) {
    use infrahub::app::{Caller, allocation};
    let app = TestApp::spawn(pool.clone()).await;
    let org = &app.org;
    // Three departments of the field: one with quotas and projects at two sites, one with a
    // quota only, one with nothing; and the other field's department, which must not appear.
    let ams = app.add_site("ams").await;
    let (web, idle) = (Uuid::now_v7(), Uuid::now_v7());
    for (id, name) in [(web, "web"), (idle, "idle")] {
        sqlx::query(
            "INSERT INTO departments (id, field_id, name, display_name) VALUES ($1, $2, $3, $3)",
        )
        .bind(id)
        .bind(org.field)
        .bind(name)
        .execute(&pool)
        .await
        .unwrap();
    }
    set_quota(&pool, org.dept, org.site, 40, 400).await;
    set_quota(&pool, org.dept, ams, 20, 200).await;
    set_quota(&pool, web, ams, 8, 80).await;
    set_quota(&pool, org.other_dept, org.site, 5, 50).await;
    let projects = [
        ("a", org.dept, org.site, 4, "active", Some(1.5)),
        ("b", org.dept, org.site, 2, "deleted", None),
        ("c", org.dept, ams, 8, "provisioning", None),
        ("d", org.other_dept, org.site, 1, "active", Some(0.5)),
    ];
    for (name, dept, site, cpu, status, used) in projects {
        sqlx::query(
            "INSERT INTO projects (id, name, department_id, site_id, namespace, sla_type,
                                   performance_tier, cpu, ram_gb, status, generation, deleted_at,
                                   used_cpu, used_ram_gb)
             VALUES (gen_random_uuid(), $1, $2, $3, $1, 'bronze', 'regular', $4, $4 * 4, $5, 1,
                     CASE WHEN $5 = 'deleted' THEN now() END, $6, $6 * 4)",
        )
        .bind(name)
        .bind(dept)
        .bind(site)
        .bind(cpu)
        .bind(status)
        .bind(used)
        .execute(&pool)
        .await
        .unwrap();
    }
    let caller = Caller::new(&org.field_admin, None);
    let boards = allocation::field_quotas(&app.ctx, &caller, org.field).await.unwrap();
    let names: Vec<&str> = boards.iter().map(|b| b.department.as_str()).collect();
    assert_eq!(names.len(), 3, "the field's departments only: {names:?}");
    assert!(names.windows(2).all(|w| w[0] <= w[1]), "by name: {names:?}");
    for board in &boards {
        let one =
            allocation::department_quota(&app.ctx, &caller, board.department_id).await.unwrap();
        assert_eq!(
            serde_json::to_value(board).unwrap(),
            serde_json::to_value(&one).unwrap(),
            "the field's view of {} is its own view",
            board.department
        );
    }
    let sites = |id: Uuid| {
        let board = boards.iter().find(|b| b.department_id == id).unwrap();
        board.sites.iter().map(|s| (s.site.clone(), s.quota.cpu, s.used.cpu)).collect::<Vec<_>>()
    };
    let fra = "fra".to_owned();
    assert_eq!(sites(org.dept), [("ams".to_owned(), 20, 8), (fra, 40, 4)]);
    assert_eq!(sites(web), [("ams".to_owned(), 8, 0)]);
    assert!(sites(idle).is_empty());
}

/// Quota changes arriving together are checked against one read (`QuotaChangeReads`): each
/// gets its own department, site and numbers, the same as a read of its own would give.
#[sqlx::test]
async fn quota_change_reads_asked_together_answer_each_change(pool: PgPool) {
    use infrahub::config::DatabaseConfig;
    use infrahub::store::capacity::{self, QuotaChangeKey, QuotaChangeReads};
    use infrahub::store::gather;

    let app = TestApp::spawn(pool).await;
    let org = &app.org;
    app.add_server("s1", 40, Some(org.field)).await;
    app.add_server("s2", 8, Some(org.other_field)).await;
    app.give_quota(10, 40).await;
    sqlx::query(
        "INSERT INTO project_reservations (department_id, site_id, cpu, ram_gb) VALUES ($1, $2, 3, 12)",
    )
    .bind(org.dept)
    .bind(org.site)
    .execute(&app.pool)
    .await
    .unwrap();
    let reads = QuotaChangeReads::new(gather::pool(
        &app.pool,
        &DatabaseConfig::default(),
        QuotaChangeReads::CONNECTIONS,
    ));
    let key = |field_id, department_id, site: &str| QuotaChangeKey {
        field_id,
        department_id,
        site: site.to_owned(),
    };
    let keys = [
        key(org.field, org.dept, "fra"),
        key(org.other_field, org.other_dept, "fra"),
        key(org.field, org.dept, "fra"),
        key(org.field, org.dept, "nowhere"),
        key(org.field, Uuid::now_v7(), "fra"),
        key(org.field, org.other_dept, "fra"),
        // PostgreSQL refuses this name: it fails alone.
        key(org.field, org.dept, "fr\0a"),
    ];
    let read = futures::future::join_all(keys.iter().map(|k| reads.read(k.clone()))).await;
    let mut read: Vec<_> = read.into_iter().collect();
    assert!(read.pop().unwrap().is_err());
    let read: Vec<_> = read.into_iter().map(Result::unwrap).collect();
    let names: Vec<_> = read
        .iter()
        .map(|r| {
            let department = r.department.as_ref().map(|d| d.name.as_str());
            (department, r.site.as_ref().map(|s| s.name.as_str()))
        })
        .collect();
    assert_eq!(
        names,
        [
            (Some("shop"), Some("fra")),
            (Some("ledger"), Some("fra")),
            (Some("shop"), Some("fra")),
            (Some("shop"), None),
            (None, Some("fra")),
            (Some("ledger"), Some("fra")),
        ]
    );
    let mut conn = app.pool.acquire().await.unwrap();
    for (k, r) in keys.iter().zip(&read).filter(|(_, r)| r.site.is_some()) {
        // Against the single read, whose statement shares only the inputs' SQL.
        let alone =
            capacity::quota_inputs(&mut conn, k.field_id, k.department_id, org.site).await.unwrap();
        assert_eq!(format!("{:?}", r.inputs), format!("{alone:?}"), "{k:?}");
    }
    assert_eq!(read[0].inputs.servers.cpu, 40);
    assert_eq!(read[0].inputs.used_by_projects.cpu, 3);
    assert_eq!(read[5].inputs.used_by_projects.cpu, 0);
    assert_eq!(read[3].inputs.servers.cpu, 0, "no site: nothing counts");
    assert_eq!(read[1].inputs.servers.cpu, 8);
    assert_eq!(read[0].inputs.own.map(|own| own.cpu), Some(10));
    assert_eq!(read[5].inputs.own, None, "another field's department has no quota here");
}
