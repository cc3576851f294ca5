//! The organisation API: roles, validation, CRUD, audit, pagination.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sqlx::PgPool;
use uuid::Uuid;

use crate::helpers::{PASSWORD, TestApp};

/// Every admin endpoint with a body that would be valid for a center admin.
fn admin_endpoints(app: &TestApp) -> Vec<(Method, String, Option<Value>)> {
    let org = &app.org;
    vec![
        (Method::GET, "/api/v1/admin/sites".into(), None),
        (Method::POST, "/api/v1/admin/sites".into(), Some(json!({ "name": "new-site" }))),
        (Method::GET, format!("/api/v1/admin/sites/{}", org.site), None),
        (
            Method::PATCH,
            format!("/api/v1/admin/sites/{}", org.site),
            Some(json!({ "display_name": "X" })),
        ),
        (Method::DELETE, format!("/api/v1/admin/sites/{}", org.site), None),
        (Method::GET, "/api/v1/admin/fields".into(), None),
        (Method::POST, "/api/v1/admin/fields".into(), Some(json!({ "name": "new-field" }))),
        (Method::GET, format!("/api/v1/admin/fields/{}", org.field), None),
        (
            Method::PATCH,
            format!("/api/v1/admin/fields/{}", org.field),
            Some(json!({ "display_name": "X" })),
        ),
        (Method::DELETE, format!("/api/v1/admin/fields/{}", org.field), None),
        (Method::GET, "/api/v1/admin/departments".into(), None),
        (
            Method::POST,
            "/api/v1/admin/departments".into(),
            Some(json!({ "name": "new-dept", "field_id": org.field })),
        ),
        (Method::GET, format!("/api/v1/admin/departments/{}", org.dept), None),
        (
            Method::PATCH,
            format!("/api/v1/admin/departments/{}", org.dept),
            Some(json!({ "display_name": "X" })),
        ),
        (Method::DELETE, format!("/api/v1/admin/departments/{}", org.dept), None),
        (Method::GET, "/api/v1/admin/users".into(), None),
        (
            Method::POST,
            "/api/v1/admin/users".into(),
            Some(json!({ "username": "new-user", "password": PASSWORD, "role": "center_admin" })),
        ),
        (Method::GET, format!("/api/v1/admin/users/{}", org.team_lead.id), None),
        (
            Method::PATCH,
            format!("/api/v1/admin/users/{}", org.team_lead.id),
            Some(json!({ "disabled": true })),
        ),
        (Method::DELETE, format!("/api/v1/admin/users/{}", org.team_lead.id), None),
    ]
}

#[sqlx::test]
async fn field_admins_and_team_leads_get_403_and_strangers_401(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let field_admin = app.field_admin_token().await;
    let team_lead = app.team_lead_token().await;
    for (method, path, body) in admin_endpoints(&app) {
        for token in [&field_admin, &team_lead] {
            let answer = app.call(method.clone(), &path, Some(token), body.clone()).await;
            answer.expect(StatusCode::FORBIDDEN, Some("forbidden"));
        }
        let answer = app.call(method.clone(), &path, None, body.clone()).await;
        answer.expect(StatusCode::UNAUTHORIZED, Some("unauthorized"));
    }
    let sites: i64 =
        sqlx::query_scalar("SELECT count(*) FROM sites").fetch_one(&app.pool).await.unwrap();
    assert_eq!(sites, 1, "nothing was created by the refused requests");
}

#[sqlx::test]
async fn center_admin_can_use_every_admin_endpoint(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let admin = app.admin_token().await;
    for (method, path, body) in admin_endpoints(&app) {
        let answer = app.call(method.clone(), &path, Some(&admin), body).await;
        // Deleting the seeded site, field and department is refused while things refer to them.
        assert!(
            answer.status.is_success() || answer.status == StatusCode::CONFLICT,
            "{method} {path}: {} {}",
            answer.status,
            answer.body
        );
    }
}

/// action, actor, before, after, request id
type AuditRow = (String, String, Option<Value>, Option<Value>, Option<String>);

#[sqlx::test]
async fn site_lifecycle_is_audited(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let admin = app.admin_token().await;
    let created = app
        .post(
            "/api/v1/admin/sites",
            &admin,
            json!({ "name": "berlin", "display_name": "Berlin DC" }),
        )
        .await
        .expect(StatusCode::CREATED, None);
    assert_eq!(created["name"], "berlin");
    let path = format!("/api/v1/admin/sites/{}", created["id"].as_str().unwrap());
    app.post("/api/v1/admin/sites", &admin, json!({ "name": "berlin" }))
        .await
        .expect(StatusCode::CONFLICT, Some("already_exists"));
    let fetched = app.get(&path, &admin).await.expect(StatusCode::OK, None);
    assert_eq!(fetched["display_name"], "Berlin DC");
    let patched = app
        .call(Method::PATCH, &path, Some(&admin), Some(json!({ "display_name": "Berlin" })))
        .await
        .expect(StatusCode::OK, None);
    assert_eq!(patched["display_name"], "Berlin");
    app.call(Method::DELETE, &path, Some(&admin), None).await.expect(StatusCode::NO_CONTENT, None);
    app.get(&path, &admin).await.expect(StatusCode::NOT_FOUND, Some("not_found"));

    let events: Vec<AuditRow> = sqlx::query_as(
        "SELECT action, actor, before, after, request_id FROM audit_events
          WHERE subject_id = $1 ORDER BY id",
    )
    .bind(created["id"].as_str().unwrap())
    .fetch_all(&app.pool)
    .await
    .unwrap();
    let actions: Vec<&str> = events.iter().map(|e| e.0.as_str()).collect();
    assert_eq!(actions, ["site.create", "site.update", "site.delete"]);
    assert!(
        events.iter().all(|e| e.1 == "root" && e.4.as_deref().is_some_and(|id| !id.is_empty()))
    );
    assert_eq!(events[1].2.as_ref().unwrap()["display_name"], "Berlin DC");
    assert_eq!(events[1].3.as_ref().unwrap()["display_name"], "Berlin");
    assert!(events[2].3.is_none());
}

#[sqlx::test]
async fn names_are_validated_with_422(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let admin = app.admin_token().await;
    for name in ["Berlin", "-x", "a_b", "", &"x".repeat(64)] {
        let body = app
            .post("/api/v1/admin/fields", &admin, json!({ "name": name }))
            .await
            .expect(StatusCode::UNPROCESSABLE_ENTITY, Some("invalid_value"));
        assert_eq!(body["error"]["details"]["field"], "name", "{name:?}");
    }
    let body = app
        .post("/api/v1/admin/sites", &admin, json!({ "name": "ok", "display_name": "  " }))
        .await
        .expect(StatusCode::UNPROCESSABLE_ENTITY, Some("invalid_value"));
    assert_eq!(body["error"]["details"]["field"], "display_name");
}

#[sqlx::test]
async fn departments_need_an_existing_field_and_block_field_deletion(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let admin = app.admin_token().await;
    let body = json!({ "name": "orphans", "field_id": Uuid::now_v7() });
    app.post("/api/v1/admin/departments", &admin, body)
        .await
        .expect(StatusCode::UNPROCESSABLE_ENTITY, Some("unknown_reference"));
    let body = json!({ "name": "shop", "field_id": app.org.other_field });
    app.post("/api/v1/admin/departments", &admin, body)
        .await
        .expect(StatusCode::CONFLICT, Some("already_exists"));

    let created = app
        .post(
            "/api/v1/admin/departments",
            &admin,
            json!({ "name": "web", "field_id": app.org.field, "k8s_group": "web-devs" }),
        )
        .await
        .expect(StatusCode::CREATED, None);
    assert_eq!(created["display_name"], "web");
    let path = format!("/api/v1/admin/departments/{}", created["id"].as_str().unwrap());
    let cleared = app
        .call(Method::PATCH, &path, Some(&admin), Some(json!({ "k8s_group": null })))
        .await
        .expect(StatusCode::OK, None);
    assert!(cleared["k8s_group"].is_null());
    let kept = app
        .call(Method::PATCH, &path, Some(&admin), Some(json!({ "display_name": "Web" })))
        .await
        .expect(StatusCode::OK, None);
    assert!(kept["k8s_group"].is_null() && kept["display_name"] == "Web");

    let filtered = app
        .get(&format!("/api/v1/admin/departments?field_id={}", app.org.field), &admin)
        .await
        .expect(StatusCode::OK, None);
    let names: Vec<&str> =
        filtered["items"].as_array().unwrap().iter().map(|d| d["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["shop", "web"]);

    let field = format!("/api/v1/admin/fields/{}", app.org.field);
    let refused = app.call(Method::DELETE, &field, Some(&admin), None).await;
    let body = refused.expect(StatusCode::CONFLICT, Some("in_use"));
    assert_eq!(body["error"]["details"]["referenced_by"], "departments");
}

#[sqlx::test]
async fn lists_are_paginated_by_cursor(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let admin = app.admin_token().await;
    for i in 0..4 {
        app.post("/api/v1/admin/sites", &admin, json!({ "name": format!("s{i}") }))
            .await
            .expect(StatusCode::CREATED, None);
    }
    let mut seen = Vec::new();
    let mut path = "/api/v1/admin/sites?limit=2".to_owned();
    loop {
        let page = app.get(&path, &admin).await.expect(StatusCode::OK, None);
        let items = page["items"].as_array().unwrap();
        assert!(items.len() <= 2);
        seen.extend(items.iter().map(|s| s["name"].as_str().unwrap().to_owned()));
        match page["next_cursor"].as_str() {
            Some(cursor) => path = format!("/api/v1/admin/sites?limit=2&cursor={cursor}"),
            None => break,
        }
    }
    assert_eq!(seen, ["fra", "s0", "s1", "s2", "s3"]);
    for bad in ["limit=0", "limit=501", "limit=x", "cursor=nope"] {
        app.get(&format!("/api/v1/admin/sites?{bad}"), &admin)
            .await
            .expect(StatusCode::BAD_REQUEST, Some("invalid_query"));
    }
}

#[sqlx::test]
async fn users_are_created_with_a_consistent_scope(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let admin = app.admin_token().await;
    let refused = [
        (json!({ "username": "u1", "password": PASSWORD, "role": "team_lead" }), "department_id"),
        (json!({ "username": "u1", "password": PASSWORD, "role": "field_admin" }), "field_id"),
        (
            json!({ "username": "u1", "password": PASSWORD, "role": "center_admin", "field_id": app.org.field }),
            "role",
        ),
        (json!({ "username": "u1", "password": "short", "role": "center_admin" }), "password"),
        (
            json!({ "username": "bad name", "password": PASSWORD, "role": "center_admin" }),
            "username",
        ),
    ];
    for (body, field) in refused {
        let answer = app.post("/api/v1/admin/users", &admin, body).await;
        let body = answer.expect(StatusCode::UNPROCESSABLE_ENTITY, Some("invalid_value"));
        assert_eq!(body["error"]["details"]["field"], field);
    }
    let body = json!({ "username": "u1", "password": PASSWORD, "role": "superuser" });
    app.post("/api/v1/admin/users", &admin, body)
        .await
        .expect(StatusCode::UNPROCESSABLE_ENTITY, Some("invalid_body"));

    let body = json!({ "username": "ledger-lead", "password": PASSWORD, "role": "team_lead", "department_id": app.org.other_dept });
    let user =
        app.post("/api/v1/admin/users", &admin, body).await.expect(StatusCode::CREATED, None);
    assert!(user.get("password_hash").is_none() && user.get("password").is_none());
    assert_eq!(user["department_id"], json!(app.org.other_dept));
    let me = app
        .get("/api/v1/me", &app.login("ledger-lead", PASSWORD).await)
        .await
        .expect(StatusCode::OK, None);
    assert_eq!(me["field"]["id"], json!(app.org.other_field));
    let body = json!({ "username": "LEDGER-lead", "password": PASSWORD, "role": "center_admin" });
    app.post("/api/v1/admin/users", &admin, body)
        .await
        .expect(StatusCode::CONFLICT, Some("already_exists"));

    let filtered =
        app.get("/api/v1/admin/users?role=team_lead", &admin).await.expect(StatusCode::OK, None);
    let names: Vec<&str> = filtered["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["username"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["shop-lead", "ledger-lead"]);
}

#[sqlx::test]
async fn changing_a_role_resets_the_scope(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let admin = app.admin_token().await;
    let path = format!("/api/v1/admin/users/{}", app.org.team_lead.id);
    let promoted = app
        .call(Method::PATCH, &path, Some(&admin), Some(json!({ "role": "center_admin" })))
        .await
        .expect(StatusCode::OK, None);
    assert!(promoted["department_id"].is_null() && promoted["field_id"].is_null());
    let refused =
        app.call(Method::PATCH, &path, Some(&admin), Some(json!({ "role": "field_admin" }))).await;
    refused.expect(StatusCode::UNPROCESSABLE_ENTITY, Some("invalid_value"));
    let moved = app
        .call(
            Method::PATCH,
            &path,
            Some(&admin),
            Some(json!({ "role": "field_admin", "field_id": app.org.other_field })),
        )
        .await
        .expect(StatusCode::OK, None);
    assert_eq!(moved["field_id"], json!(app.org.other_field));
    let token = app.login("shop-lead", PASSWORD).await;
    let me = app.get("/api/v1/me", &token).await.expect(StatusCode::OK, None);
    assert_eq!(
        (me["role"].as_str(), me["field"]["name"].as_str()),
        (Some("field_admin"), Some("finance"))
    );
}

#[sqlx::test]
async fn the_last_center_admin_cannot_be_removed(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let admin = app.admin_token().await;
    let me = format!("/api/v1/admin/users/{}", app.org.admin.id);
    app.call(Method::DELETE, &me, Some(&admin), None)
        .await
        .expect(StatusCode::CONFLICT, Some("cannot_delete_self"));
    for patch in
        [json!({ "disabled": true }), json!({ "role": "team_lead", "department_id": app.org.dept })]
    {
        let answer = app.call(Method::PATCH, &me, Some(&admin), Some(patch)).await;
        answer.expect(StatusCode::CONFLICT, Some("last_center_admin"));
    }
    let body = json!({ "username": "root2", "password": PASSWORD, "role": "center_admin" });
    app.post("/api/v1/admin/users", &admin, body).await.expect(StatusCode::CREATED, None);
    app.call(Method::PATCH, &me, Some(&admin), Some(json!({ "disabled": true })))
        .await
        .expect(StatusCode::OK, None);
    let root2 = app.login("root2", PASSWORD).await;
    let root2_id = app.get("/api/v1/me", &root2).await.body["id"].as_str().unwrap().to_owned();
    let answer = app
        .call(
            Method::PATCH,
            &format!("/api/v1/admin/users/{root2_id}"),
            Some(&root2),
            Some(json!({ "role": "team_lead", "department_id": app.org.dept })),
        )
        .await;
    answer.expect(StatusCode::CONFLICT, Some("last_center_admin"));
}

#[sqlx::test]
async fn unknown_ids_are_404_and_malformed_ids_400(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let admin = app.admin_token().await;
    for kind in ["sites", "fields", "departments", "users"] {
        let path = format!("/api/v1/admin/{kind}/{}", Uuid::now_v7());
        app.get(&path, &admin).await.expect(StatusCode::NOT_FOUND, Some("not_found"));
        app.call(Method::DELETE, &path, Some(&admin), None)
            .await
            .expect(StatusCode::NOT_FOUND, Some("not_found"));
        app.get(&format!("/api/v1/admin/{kind}/not-a-uuid"), &admin)
            .await
            .expect(StatusCode::BAD_REQUEST, Some("invalid_path"));
    }
}
