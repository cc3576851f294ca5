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

#[sqlx::test]
async fn openapi_documents_every_route_and_the_docs_page_is_self_contained(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let doc = app
        .call(Method::GET, "/api/v1/openapi.json", None, None)
        .await
        .expect(StatusCode::OK, None);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let paths = doc["paths"].as_object().unwrap();
    let expected = [
        ("/api/v1/auth/login", "post"),
        ("/api/v1/me", "get"),
        ("/api/v1/admin/sites", "get"),
        ("/api/v1/admin/sites", "post"),
        ("/api/v1/admin/sites/{id}", "patch"),
        ("/api/v1/admin/fields/{id}", "delete"),
        ("/api/v1/admin/departments", "post"),
        ("/api/v1/admin/users/{id}", "patch"),
        ("/api/v1/healthz", "get"),
        ("/api/v1/readyz", "get"),
        ("/api/v1/metrics", "get"),
    ];
    for (path, method) in expected {
        assert!(
            paths.get(path).and_then(|p| p.get(method)).is_some(),
            "{method} {path} is documented"
        );
    }
    assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
    assert!(doc["components"]["schemas"]["ErrorEnvelope"].is_object());

    let page = app.client.get(format!("{}/api/v1/docs", app.base)).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    assert!(page.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
    let html = page.text().await.unwrap();
    assert!(html.contains("openapi.json"));
    assert!(!html.contains("src=\"http") && !html.contains("href=\"http"), "no external assets");
}
