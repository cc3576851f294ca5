//! Probes, metrics, the OpenAPI document and the docs page.

use reqwest::{Method, StatusCode};
use sqlx::PgPool;

use crate::helpers::TestApp;

#[sqlx::test]
async fn health_and_readiness_answer_at_root_and_under_the_prefix(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    for path in ["/healthz", "/api/v1/healthz"] {
        let body = app.call(Method::GET, path, None, None).await.expect(StatusCode::OK, None);
        assert_eq!(body["status"], "ok");
    }
    for path in ["/readyz", "/api/v1/readyz"] {
        let body = app.call(Method::GET, path, None, None).await.expect(StatusCode::OK, None);
        assert_eq!(body["status"], "ready");
    }
}

#[sqlx::test]
async fn readiness_fails_while_migrations_are_pending(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    sqlx::query(
        "DELETE FROM _sqlx_migrations WHERE version = (SELECT max(version) FROM _sqlx_migrations)",
    )
    .execute(&app.pool)
    .await
    .unwrap();
    let answer = app.call(Method::GET, "/readyz", None, None).await;
    let body = answer.expect(StatusCode::SERVICE_UNAVAILABLE, Some("not_ready"));
    assert!(body["error"]["message"].as_str().unwrap().contains("migrations"));
}

/// `/readyz` answers 200, then, once `side` (one of the daemon's pools) is closed, 503
/// "database unreachable".
async fn not_ready_once_closed(app: &TestApp, side: &PgPool) {
    app.call(Method::GET, "/readyz", None, None).await.expect(StatusCode::OK, None);
    side.close().await;
    let answer = app.call(Method::GET, "/readyz", None, None).await;
    let body = answer.expect(StatusCode::SERVICE_UNAVAILABLE, Some("not_ready"));
    assert_eq!(body["error"]["details"]["reason"], "database unreachable");
}

/// Every authenticated request reads its account on the gathers' pool: a daemon whose main
/// pool answers but whose gathers' pool does not (closed here) is not ready, and says so.
#[sqlx::test]
async fn readiness_fails_while_the_gathers_pool_is_closed(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let lead = app.team_lead_token().await;
    not_ready_once_closed(&app, &app.ctx.gathers_pool).await;
    app.get("/api/v1/projects", &lead).await.expect(StatusCode::SERVICE_UNAVAILABLE, None);
}

/// Requests with an Idempotency-Key hold their key's lock on a pool of its own: a daemon
/// whose lock pool does not answer (closed here) is not ready either.
#[sqlx::test]
async fn readiness_fails_while_the_lock_pool_is_closed(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let lead = app.team_lead_token().await;
    not_ready_once_closed(&app, &app.ctx.locks).await;
    let project = serde_json::json!({
        "name": "web", "site": "fra", "sla_type": "bronze", "performance_tier": "regular",
    });
    let keyed = app
        .client
        .post(format!("{}/api/v1/projects", app.base))
        .bearer_auth(&lead)
        .header("Idempotency-Key", "k1")
        .json(&project)
        .send()
        .await
        .unwrap();
    assert_eq!(keyed.status(), StatusCode::SERVICE_UNAVAILABLE, "a keyed request needs that pool");
}

#[sqlx::test]
async fn metrics_count_requests_by_route_and_status(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let admin = app.admin_token().await;
    app.get("/api/v1/admin/sites", &admin).await.expect(StatusCode::OK, None);
    let text =
        app.client.get(format!("{}/metrics", app.base)).send().await.unwrap().text().await.unwrap();
    assert!(
        text.lines().any(|l| l.starts_with("infrahub_http_requests_total")
            && l.contains(r#"route="/api/v1/admin/sites""#)
            && l.contains(r#"status="200""#)),
        "{text}"
    );
    assert!(text.contains("infrahub_http_request_duration_seconds_bucket"), "{text}");
    assert!(text.contains(r#"infrahub_logins_total{outcome="success"}"#), "{text}");
}

/// The value of the sample `name{labels}` in a Prometheus text page.
fn sample(text: &str, name: &str, labels: &str) -> Option<f64> {
    let prefix = match labels {
        "" => format!("{name} "),
        labels => format!("{name}{{{labels}}} "),
    };
    text.lines().find_map(|l| l.strip_prefix(&prefix)).map(|v| v.parse().unwrap())
}

#[sqlx::test]
async fn metrics_read_backlog_inventory_capacity_and_quotas_from_the_database(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    for (name, field) in [("s-1", Some(app.org.field)), ("s-2", Some(app.org.field)), ("s-3", None)]
    {
        sqlx::query(
            "INSERT INTO servers (id, inventory_id, name, site_id, cpu_cores, ram_gb, status, field_id)
             VALUES (gen_random_uuid(), $1, $1, $2, 16, 64, 'active', $3)",
        )
        .bind(name)
        .bind(app.org.site)
        .bind(field)
        .execute(&app.pool)
        .await
        .unwrap();
    }
    app.give_quota(40, 96).await;
    let lead = app.team_lead_token().await;
    app.create_project(&lead, "web", "bronze", "regular").await;
    // The provisioning job has been due for a minute: nothing runs jobs in this test.
    sqlx::query("UPDATE jobs SET run_at = now() - interval '60 seconds'")
        .execute(&app.pool)
        .await
        .unwrap();
    // The project entered provisioning two hours ago; touching its row since (a restart, a new
    // job) does not reset how long it has been there.
    for touch in [
        "UPDATE projects SET status_changed_at = now() - interval '2 hours'",
        "UPDATE projects SET updated_at = now(), last_job_id = last_job_id",
    ] {
        sqlx::query(touch).execute(&app.pool).await.unwrap();
    }

    let text =
        app.client.get(format!("{}/metrics", app.base)).send().await.unwrap().text().await.unwrap();
    let get = |name: &str, labels: &str| {
        sample(&text, name, labels).unwrap_or_else(|| panic!("{name}{{{labels}}} in {text}"))
    };
    assert_eq!(get("infrahub_database_up", ""), 1.0);
    assert_eq!(get("infrahub_servers", r#"site="fra",status="active",assigned="true""#), 2.0);
    assert_eq!(get("infrahub_servers", r#"site="fra",status="active",assigned="false""#), 1.0);
    let field = r#"field="retail",site="fra",resource="#;
    assert_eq!(get("infrahub_field_capacity", &format!(r#"{field}"cpu""#)), 32.0);
    assert_eq!(get("infrahub_field_allocated", &format!(r#"{field}"cpu""#)), 40.0);
    assert_eq!(
        get("infrahub_field_deficit", &format!(r#"{field}"cpu""#)),
        8.0,
        "40 promised, 32 there"
    );
    assert_eq!(get("infrahub_field_deficit", &format!(r#"{field}"ram_gb""#)), 0.0);
    let dept = r#"field="retail",department="shop",site="fra",resource="#;
    assert_eq!(get("infrahub_department_quota", &format!(r#"{dept}"ram_gb""#)), 96.0);
    let used = get("infrahub_department_used", &format!(r#"{dept}"cpu""#));
    assert!(used > 0.0 && used <= 40.0, "the project's reservation: {used}");
    assert_eq!(get("infrahub_projects", r#"status="provisioning""#), 1.0);
    let stuck = get("infrahub_projects_oldest_in_status_seconds", r#"status="provisioning""#);
    assert!(stuck >= 7200.0, "{stuck}");
    assert_eq!(get("infrahub_jobs", r#"kind="provision_namespace",state="ready""#), 1.0);
    let age = get("infrahub_jobs_oldest_ready_age_seconds", r#"kind="provision_namespace""#);
    assert!((59.0..600.0).contains(&age), "{age}");
    assert!(text.contains("# TYPE infrahub_field_capacity gauge"));

    // Every metric the shipped alert rules and Grafana dashboard name is exported.
    app.login_answer("shop-lead", "wrong").await;
    app.run_jobs().await;
    let entered: bool = sqlx::query_scalar("SELECT status = 'active' AND status_changed_at > now() - interval '1 minute' FROM projects")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert!(entered, "a new status restarts the clock");
    let text =
        app.client.get(format!("{}/metrics", app.base)).send().await.unwrap().text().await.unwrap();
    let exported: std::collections::BTreeSet<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .collect();
    for pack in ["prometheus-rules.yml", "grafana-dashboard.json"] {
        let path = format!("{}/packaging/observability/{pack}", env!("CARGO_MANIFEST_DIR"));
        let source = std::fs::read_to_string(path).unwrap();
        let mut named = 0;
        for piece in source.split("infrahub_").skip(1) {
            let name: String =
                piece.chars().take_while(|c| c.is_ascii_lowercase() || *c == '_').collect();
            let name = format!("infrahub_{name}");
            let base = ["_bucket", "_sum", "_count"]
                .iter()
                .fold(name.as_str(), |n, s| n.strip_suffix(s).unwrap_or(n));
            assert!(exported.contains(base), "{pack} names {name}, which /metrics does not export");
            named += 1;
        }
        assert!(named >= 7, "{pack}: {named}");
    }
}

#[sqlx::test]
async fn metrics_can_want_a_bearer_token(pool: PgPool) {
    let token = "metrics-token-0123456789";
    let app = TestApp::spawn_with(pool, infrahub::config::Mode::Serve, |config| {
        config.http.metrics_token = Some(infrahub::config::Secret::new(token));
    })
    .await;
    let url = format!("{}/metrics", app.base);
    let open = app.client.get(&url).send().await.unwrap();
    assert_eq!(open.status(), StatusCode::UNAUTHORIZED);
    let wrong = app.client.get(&url).bearer_auth("metrics-token-0123456780").send().await.unwrap();
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    let lower = format!("bearer {token}");
    let right = app.client.get(&url).header("authorization", lower).send().await.unwrap();
    assert_eq!(right.status(), StatusCode::OK);
    assert!(right.text().await.unwrap().lines().any(|l| l == "infrahub_database_up 1"));
    // The probes stay open.
    app.call(Method::GET, "/healthz", None, None).await.expect(StatusCode::OK, None);
}

#[sqlx::test]
async fn responses_carry_a_request_id(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let answer = app.call(Method::GET, "/healthz", None, None).await;
    let generated = answer.headers["x-request-id"].to_str().unwrap();
    assert_eq!(generated.len(), 36, "{generated}");
    let echoed = app
        .client
        .get(format!("{}/healthz", app.base))
        .header("x-request-id", "trace-me-42")
        .send()
        .await
        .unwrap();
    assert_eq!(echoed.headers()["x-request-id"], "trace-me-42");
}

#[sqlx::test]
async fn unknown_routes_and_methods_get_the_envelope(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    app.call(Method::GET, "/api/v1/nope", None, None)
        .await
        .expect(StatusCode::NOT_FOUND, Some("not_found"));
    app.call(Method::DELETE, "/api/v1/me", None, None)
        .await
        .expect(StatusCode::METHOD_NOT_ALLOWED, Some("method_not_allowed"));
}

/// Handler names registered with `routes!(...)` under `src/http`: each becomes an operation
/// (utoipa names it after the function), so none can be served without being documented.
fn registered_handlers() -> Vec<String> {
    let mut names = Vec::new();
    let mut dirs = vec![std::path::PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/src/http"))];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).unwrap();
                for piece in text.split("routes!(").skip(1) {
                    let inside = piece.split(')').next().unwrap();
                    names.extend(inside.split(',').map(|n| n.trim().to_owned()));
                }
            }
        }
    }
    names
}

#[sqlx::test]
async fn openapi_documents_every_route_and_swagger_ui_serves_it(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let doc = app
        .call(Method::GET, "/api/v1/openapi.json", None, None)
        .await
        .expect(StatusCode::OK, None);
    assert_eq!(doc["openapi"], "3.1.0");
    let paths = doc["paths"].as_object().unwrap();

    // Every registered handler is an operation of the document.
    let mut operations = std::collections::BTreeSet::new();
    for item in paths.values() {
        for operation in item.as_object().unwrap().values() {
            if let Some(id) = operation["operationId"].as_str() {
                operations.insert(id.to_owned());
            }
        }
    }
    let handlers = registered_handlers();
    assert!(handlers.len() >= 40, "found {handlers:?}");
    for handler in &handlers {
        assert!(operations.contains(handler), "{handler} is routed but not documented");
    }
    assert_eq!(operations.len(), handlers.len(), "documented but not routed: {operations:?}");

    // Every documented operation is served: none answers "no such endpoint" or 405.
    let token = app.admin_token().await;
    let id = uuid::Uuid::now_v7().to_string();
    for (path, item) in paths {
        let concrete = path.replace("{id}", &id).replace("{server_id}", &id);
        for method in item.as_object().unwrap().keys() {
            let method: Method = method.to_uppercase().parse().unwrap();
            let body =
                matches!(method, Method::POST | Method::PATCH).then(|| serde_json::json!({}));
            let answer = app.call(method.clone(), &concrete, Some(&token), body).await;
            assert_ne!(answer.status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
            assert_ne!(answer.body["error"]["message"], "no such endpoint", "{method} {path}");
            assert_ne!(
                answer.status,
                StatusCode::INTERNAL_SERVER_ERROR,
                "{method} {path}: {}",
                answer.body
            );
        }
    }

    // Operations that need a token say so, and changes document the Idempotency-Key.
    assert!(doc["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer");
    assert!(doc["components"]["schemas"]["ErrorEnvelope"].is_object());
    let create = &paths["/api/v1/projects"]["post"];
    assert_eq!(create["security"][0]["bearer"], serde_json::json!([]));
    let headers: Vec<&str> = create["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    assert!(headers.contains(&"Idempotency-Key"), "{headers:?}");

    // The document is valid OpenAPI 3.1 for a real validator.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("openapi.json");
    std::fs::write(&file, doc.to_string()).unwrap();
    let python = std::env::var("OPENAPI_PYTHON").unwrap_or_else(|_| "python3".to_owned());
    let checked = std::process::Command::new(&python)
        .args(["-m", "openapi_spec_validator", "--schema", "3.1"])
        .arg(&file)
        .output()
        .unwrap_or_else(|e| panic!("{python} runs (.ci/run installs openapi-spec-validator): {e}"));
    assert!(
        checked.status.success(),
        "openapi-spec-validator refused the document (pip install openapi-spec-validator):\n{}{}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );

    // Swagger UI: its page and assets come from the daemon itself.
    let old = app.client.get(format!("{}/api/v1/docs", app.base)).send().await.unwrap();
    assert_eq!(old.url().path(), "/docs/", "the old address redirects");
    let html = old.text().await.unwrap();
    assert!(html.contains("swagger-ui"), "{html}");
    assert!(!html.contains("src=\"http") && !html.contains("href=\"http"), "no external assets");
    let init =
        app.client.get(format!("{}/docs/swagger-initializer.js", app.base)).send().await.unwrap();
    assert_eq!(init.status(), StatusCode::OK);
    let init = init.text().await.unwrap();
    assert!(init.contains("/api/v1/openapi.json"), "{init}");
    assert!(
        init.contains("\"validatorUrl\": \"none\""),
        "nothing is sent to validator.swagger.io: {init}"
    );
    let bundle =
        app.client.get(format!("{}/docs/swagger-ui-bundle.js", app.base)).send().await.unwrap();
    assert_eq!(bundle.status(), StatusCode::OK);
    assert!(bundle.bytes().await.unwrap().len() > 100_000);
}
