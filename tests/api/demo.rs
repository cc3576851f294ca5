//! The demo bootstrap is idempotent and its accounts work in demo mode.

use infrahub::app::demo;
use infrahub::config::Mode;
use infrahub::context::Context;
use reqwest::StatusCode;
use sqlx::PgPool;

use crate::helpers::{TestApp, context_with};

fn demo_context(pool: &PgPool) -> Context {
    context_with(pool.clone(), Mode::Demo, |c| {
        c.inventory.file.path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/demo/inventory.json");
    })
}

async fn counts(pool: &PgPool) -> Vec<i64> {
    let mut out = Vec::new();
    for table in ["sites", "fields", "departments", "users", "audit_events"] {
        let sql = format!("SELECT count(*) FROM {table}");
        out.push(sqlx::query_scalar(sqlx::AssertSqlSafe(sql)).fetch_one(pool).await.unwrap());
    }
    out
}

#[sqlx::test]
async fn bootstrap_twice_creates_everything_once(pool: PgPool) {
    let ctx = demo_context(&pool);
    let first = demo::bootstrap(&ctx).await.unwrap();
    assert_eq!(first.created.len(), 7, "{first:?}");
    let after_first = counts(&pool).await;
    assert_eq!(after_first, vec![2, 1, 1, 3, 7]);
    let second = demo::bootstrap(&ctx).await.unwrap();
    assert!(second.created.is_empty(), "{second:?}");
    assert_eq!(counts(&pool).await, after_first);
}

#[sqlx::test]
async fn bootstrap_keeps_accounts_that_already_exist(pool: PgPool) {
    let ctx = demo_context(&pool);
    demo::bootstrap(&ctx).await.unwrap();
    sqlx::query("UPDATE users SET password_hash = 'changed' WHERE username = 'admin'")
        .execute(&pool)
        .await
        .unwrap();
    demo::bootstrap(&ctx).await.unwrap();
    let hash: String =
        sqlx::query_scalar("SELECT password_hash FROM users WHERE username = 'admin'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(hash, "changed");
}

#[sqlx::test]
async fn demo_accounts_have_their_documented_scopes(pool: PgPool) {
    let app = TestApp::spawn_with(pool, Mode::Demo, |_| {}).await;
    demo::bootstrap(&app.ctx).await.unwrap();
    for (user, password, role, field, dept) in [
        ("admin", "admin", "center_admin", None, None),
        ("field-berlin", "password", "field_admin", Some("berlin"), None),
        ("team-platform", "password", "team_lead", Some("berlin"), Some("platform")),
    ] {
        let token = app.login(user, password).await;
        let me = app.get("/api/v1/me", &token).await.expect(StatusCode::OK, None);
        assert_eq!(me["role"], role);
        assert_eq!(me["field"]["name"].as_str(), field, "{user}");
        assert_eq!(me["department"]["name"].as_str(), dept, "{user}");
    }
}

#[sqlx::test]
async fn the_demo_capacity_seed_is_idempotent(pool: PgPool) {
    let ctx = demo_context(&pool);
    demo::bootstrap(&ctx).await.unwrap();
    let first = demo::seed_capacity(&ctx).await.unwrap();
    assert_eq!((first.servers_synced, first.servers_assigned, first.quota_set), (40, 12, true));
    let second = demo::seed_capacity(&ctx).await.unwrap();
    assert_eq!((second.servers_synced, second.servers_assigned, second.quota_set), (40, 0, false));
    let (berlin, owned): (i64, i64) = sqlx::query_as(
        "SELECT count(*), count(*) FILTER (WHERE s.field_id IS NOT NULL)
           FROM servers s JOIN sites si ON si.id = s.site_id WHERE si.name = 'berlin'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!((berlin, owned), (24, 12), "about half of berlin belongs to field berlin");
    let unassigned_munich: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM servers s JOIN sites si ON si.id = s.site_id WHERE si.name = 'munich' AND s.field_id IS NULL",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(unassigned_munich, 16);
}
