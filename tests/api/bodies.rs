//! Request bodies: JSON whatever the content type, and our envelope for every rejection.

use reqwest::{Method, StatusCode};
use sqlx::PgPool;

use crate::helpers::TestApp;

#[sqlx::test]
async fn json_is_accepted_without_or_with_another_content_type(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let admin = app.admin_token().await;
    let answer =
        app.call_raw(Method::POST, "/api/v1/admin/sites", &admin, None, br#"{"name":"a1"}"#).await;
    answer.expect(StatusCode::CREATED, None);
    let form = Some("application/x-www-form-urlencoded");
    let answer =
        app.call_raw(Method::POST, "/api/v1/admin/sites", &admin, form, br#"{"name":"a2"}"#).await;
    answer.expect(StatusCode::CREATED, None);
    let text = Some("text/plain");
    let answer =
        app.call_raw(Method::POST, "/api/v1/admin/sites", &admin, text, br#"{"name":"a3"}"#).await;
    answer.expect(StatusCode::CREATED, None);
}

#[sqlx::test]
async fn malformed_bodies_are_400_and_wrong_shapes_422(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let admin = app.admin_token().await;
    let cases: [(&'static [u8], StatusCode, &str); 8] = [
        (b"", StatusCode::BAD_REQUEST, "malformed_json"),
        (b"{\"name\": ", StatusCode::BAD_REQUEST, "malformed_json"),
        (b"name=x", StatusCode::BAD_REQUEST, "malformed_json"),
        (b"{\"name\":\"a\"}{}", StatusCode::BAD_REQUEST, "malformed_json"),
        (b"{\"name\": 5}", StatusCode::UNPROCESSABLE_ENTITY, "invalid_body"),
        (b"[]", StatusCode::UNPROCESSABLE_ENTITY, "invalid_body"),
        (b"{}", StatusCode::UNPROCESSABLE_ENTITY, "invalid_body"),
        (b"{\"name\":\"a\",\"nmae\":\"b\"}", StatusCode::UNPROCESSABLE_ENTITY, "invalid_body"),
    ];
    for (body, status, code) in cases {
        let answer = app
            .call_raw(Method::POST, "/api/v1/admin/sites", &admin, Some("application/json"), body)
            .await;
        assert_eq!(answer.status, status, "{}: {}", String::from_utf8_lossy(body), answer.body);
        answer.expect(status, Some(code));
    }
    let answer =
        app.call_raw(Method::POST, "/api/v1/admin/sites", &admin, None, b"{\"name\": 5}").await;
    let body = answer.expect(StatusCode::UNPROCESSABLE_ENTITY, Some("invalid_body"));
    assert_eq!(body["error"]["details"]["field"], "name");
    let answer = app
        .call_raw(
            Method::POST,
            "/api/v1/admin/departments",
            &admin,
            None,
            br#"{"name":"x","field_id":"nope"}"#,
        )
        .await;
    let body = answer.expect(StatusCode::UNPROCESSABLE_ENTITY, Some("invalid_body"));
    assert_eq!(body["error"]["details"]["field"], "field_id");
}

#[sqlx::test]
async fn oversized_bodies_are_413_with_the_envelope(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let admin = app.admin_token().await;
    let huge: &'static [u8] = Box::leak(
        format!("{{\"name\":\"{}\"}}", "x".repeat(300 * 1024)).into_bytes().into_boxed_slice(),
    );
    let answer = app.call_raw(Method::POST, "/api/v1/admin/sites", &admin, None, huge).await;
    answer.expect(StatusCode::PAYLOAD_TOO_LARGE, Some("payload_too_large"));
}

/// PostgreSQL's text cannot hold a NUL character: a request carrying one, in its body or its
/// query, is the client's mistake (4xx), never a failed statement (500).
#[sqlx::test]
async fn a_nul_character_anywhere_is_refused_as_the_clients_mistake(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let login = app.login_answer("shop-lead\u{0}", "password").await;
    login.expect(StatusCode::UNPROCESSABLE_ENTITY, Some("invalid_body"));
    let lead = app.team_lead_token().await;
    let project = serde_json::json!({
        "name": "web", "site": "fr\u{0}a", "sla_type": "bronze", "performance_tier": "regular",
    });
    let answer = app.post("/api/v1/projects", &lead, project).await;
    answer.expect(StatusCode::UNPROCESSABLE_ENTITY, Some("invalid_body"));
    let field_admin = app.field_admin_token().await;
    let quota = serde_json::json!({
        "field_id": app.org.field, "dept_id": app.org.dept, "site": "\u{0}",
        "cpu_limit": 1, "ram_gb_limit": 1,
    });
    let answer = app.post("/api/v1/allocations/department-quota", &field_admin, quota).await;
    answer.expect(StatusCode::UNPROCESSABLE_ENTITY, Some("invalid_body"));
    let answer = app.get("/api/v1/projects?site=fr%00a", &lead).await;
    answer.expect(StatusCode::BAD_REQUEST, Some("invalid_query"));
}
