//! Every migration goes up, down and up again.

use infrahub::store::{self, MIGRATOR};
use sqlx::PgPool;

/// Whether `mark` exists: a table, or `table:column`.
async fn table_exists(pool: &PgPool, mark: &str) -> bool {
    // `!index`: a migration that removes something is there while that thing is gone.
    if let Some(removed) = mark.strip_prefix('!') {
        return sqlx::query_scalar("SELECT to_regclass($1) IS NULL")
            .bind(removed)
            .fetch_one(pool)
            .await
            .unwrap();
    }
    // `function~text`: a function whose body a migration rewrites to mention `text`.
    if let Some((function, text)) = mark.split_once('~') {
        return sqlx::query_scalar(
            "SELECT coalesce(bool_or(strpos(prosrc, $2) > 0), false) FROM pg_proc WHERE proname = $1",
        )
        .bind(function)
        .bind(text)
        .fetch_one(pool)
        .await
        .unwrap();
    }
    // `function(args)`: a function a migration creates.
    if mark.ends_with(')') {
        return sqlx::query_scalar("SELECT to_regprocedure($1) IS NOT NULL")
            .bind(mark)
            .fetch_one(pool)
            .await
            .unwrap();
    }
    let (table, column) = mark.split_once(':').unwrap_or((mark, ""));
    sqlx::query_scalar(
        "SELECT to_regclass($1) IS NOT NULL AND ($2 = '' OR EXISTS (
             SELECT 1 FROM information_schema.columns WHERE table_name = $1 AND column_name = $2))",
    )
    .bind(table)
    .bind(column)
    .fetch_one(pool)
    .await
    .unwrap()
}

/// Something each migration creates (a table, a `table:column` or a `function(args)`),
/// removes (`!index`) or rewrites (`function~text`), newest last.
const TABLES: [&str; 24] = [
    "users",
    "servers",
    "projects",
    "audit_events",
    "jobs",
    "projects:generation",
    "idempotency_keys:response_headers",
    "projects:failed_from",
    "audit_events:field_ids",
    "projects:status_changed_at",
    "console_sessions",
    "jobs:coalesce_key",
    "applied_changes",
    "!jobs_finished_idx",
    "audit_uuid(text)",
    "projects:approval_reason",
    "projects:expires_at",
    "quota_requests",
    "webhooks",
    "projects:under_half_since",
    "projects:expiry_reminded_at",
    "project_reservations",
    "capacity_quota_and_usage(uuid,uuid)",
    "project_reservations_apply~infrahub.reservation_check",
];

#[sqlx::test(migrations = false)]
async fn every_migration_goes_up_down_and_up_again(pool: PgPool) {
    let count = MIGRATOR.iter().filter(|m| m.migration_type.is_up_migration()).count();
    assert_eq!(count, TABLES.len());
    assert!(store::migration_status(&pool).await.unwrap().iter().all(|m| !m.applied));
    assert!(!store::schema_is_current(&pool).await.unwrap());

    store::migrate_up(&pool).await.unwrap();
    assert!(store::schema_is_current(&pool).await.unwrap());
    for table in TABLES {
        assert!(table_exists(&pool, table).await, "{table}");
    }

    // One step at a time: each down removes exactly its own tables.
    for undone in (0..TABLES.len()).rev() {
        let reverted = store::migrate_down(&pool, 1).await.unwrap();
        assert_eq!(reverted.len(), 1);
        assert!(!table_exists(&pool, TABLES[undone]).await, "{} dropped", TABLES[undone]);
        for kept in &TABLES[..undone] {
            assert!(table_exists(&pool, kept).await, "{kept} kept");
        }
        let applied =
            store::migration_status(&pool).await.unwrap().iter().filter(|m| m.applied).count();
        assert_eq!(applied, undone);
    }
    assert!(store::migrate_down(&pool, 1).await.unwrap().is_empty(), "nothing left to revert");

    store::migrate_up(&pool).await.unwrap();
    assert!(store::schema_is_current(&pool).await.unwrap());
    let reverted = store::migrate_down(&pool, 40).await.unwrap();
    assert_eq!(reverted.len(), TABLES.len(), "steps beyond the history revert everything");
    let leftover: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_tables WHERE schemaname = 'public' AND tablename <> '_sqlx_migrations'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(leftover, 0, "down migrations leave nothing behind");
    store::migrate_up(&pool).await.unwrap();
    assert!(store::schema_is_current(&pool).await.unwrap());
}

#[sqlx::test(migrations = false)]
async fn an_edited_migration_is_reported(pool: PgPool) {
    store::migrate_up(&pool).await.unwrap();
    sqlx::query("UPDATE _sqlx_migrations SET checksum = '\\x00' WHERE version = (SELECT min(version) FROM _sqlx_migrations)")
        .execute(&pool)
        .await
        .unwrap();
    let status = store::migration_status(&pool).await.unwrap();
    assert!(status[0].checksum_mismatch && !status[1].checksum_mismatch);
    assert!(!store::schema_is_current(&pool).await.unwrap());
}

#[sqlx::test]
async fn constraints_refuse_what_the_invariants_forbid(pool: PgPool) {
    let site: uuid::Uuid = sqlx::query_scalar("INSERT INTO sites (id, name, display_name) VALUES (gen_random_uuid(), 'b', 'B') RETURNING id")
        .fetch_one(&pool)
        .await
        .unwrap();
    let refused = [
        "INSERT INTO sites (id, name, display_name) VALUES (gen_random_uuid(), 'Not A Label', 'x')".to_owned(),
        format!("INSERT INTO servers (id, inventory_id, name, site_id, cpu_cores, ram_gb) VALUES (gen_random_uuid(), 'i1', 'n', '{site}', -1, 4)"),
        format!("INSERT INTO servers (id, inventory_id, name, site_id, cpu_cores, ram_gb, status) VALUES (gen_random_uuid(), 'i2', 'n', '{site}', 1, 4, 'gone')"),
        "INSERT INTO users (id, username, password_hash, role) VALUES (gen_random_uuid(), 'x', 'h', 'team_lead')".to_owned(),
        format!("INSERT INTO department_quotas (department_id, site_id, cpu_limit, ram_gb_limit) VALUES (gen_random_uuid(), '{site}', 1, 1)"),
    ];
    for sql in refused {
        assert!(
            sqlx::query(sqlx::AssertSqlSafe(sql.clone())).execute(&pool).await.is_err(),
            "{sql}"
        );
    }
}

/// apalis-postgres keeps its tables and migration history in schema `apalis`; ours stay in
/// `public`. Both migrators must run on one database, in either order, and again.
#[sqlx::test(migrations = false)]
async fn our_migrations_and_apalis_share_a_database(pool: PgPool) {
    apalis_postgres::PostgresStorage::setup(&pool).await.expect("apalis migrates first");
    store::migrate_up(&pool).await.expect("ours migrate after apalis");
    apalis_postgres::PostgresStorage::setup(&pool).await.expect("apalis again");
    store::migrate_up(&pool).await.expect("ours again");
    assert!(store::schema_is_current(&pool).await.unwrap());
    assert!(table_exists(&pool, "apalis.jobs").await);
    store::migrate_down(&pool, 20).await.unwrap();
    assert!(table_exists(&pool, "apalis.jobs").await, "our down migrations leave apalis alone");
    store::migrate_up(&pool).await.unwrap();
}
