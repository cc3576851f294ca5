//! Server inventory sync: the NetBox client against a NetBox double, the file source, and the
//! upsert / missing / reappear cycle.

use std::time::Duration;

use infrahub::app::Actor;
use infrahub::app::inventory::{SyncReport, sync};
use infrahub::clients::inventory::{FileInventory, Inventory, Netbox};
use infrahub::config::Mode;
use infrahub::config::{NetboxConfig, NetboxTokenVersion, Secret};
use infrahub::jobs::JobError;
use serde_json::{Value, json};
use sqlx::PgPool;

use crate::faults::Fault;
use crate::helpers::TestApp;
use crate::netbox_fake::{FakeNetbox, device};

const TOKEN: &str = "nbt_4f3a2b1c.9f8e7d6c5b4a39281706f5e4d3c2b1a0";

fn netbox_config(base: &str) -> NetboxConfig {
    NetboxConfig {
        url: base.to_owned(),
        page_size: 1000,
        retries: 3,
        timeout_secs: 5,
        ..NetboxConfig::default()
    }
}

fn client(config: &NetboxConfig) -> Netbox {
    infrahub::install_crypto_provider();
    Netbox::new(config, Secret::new(TOKEN)).unwrap()
}

/// One sync of `source`, with its failure as the sync job would record it.
async fn run(pool: &PgPool, source: &dyn Inventory) -> Result<SyncReport, JobError> {
    run_forced(pool, source, false).await
}

async fn run_forced(
    pool: &PgPool,
    source: &dyn Inventory,
    force: bool,
) -> Result<SyncReport, JobError> {
    let ctx = crate::helpers::context_with(pool.clone(), Mode::Serve, |_| {});
    Ok(sync(&ctx, source, &Actor::system("test"), force).await?)
}

async fn server(pool: &PgPool, inventory_id: &str) -> (String, i32, Option<uuid::Uuid>) {
    sqlx::query_as("SELECT status, cpu_cores, field_id FROM servers WHERE inventory_id = $1")
        .bind(inventory_id)
        .fetch_one(pool)
        .await
        .unwrap()
}

/// `n` healthy servers at site `fra` (the test organisation's site), ids from 1.
fn fleet(n: i64) -> Vec<Value> {
    (1..=n).map(|i| device(i, &format!("fra-{i:05}"), "fra", json!(32), json!(256))).collect()
}

#[sqlx::test]
async fn netbox_pages_are_followed_and_custom_fields_read(pool: PgPool) {
    let _app = TestApp::spawn(pool.clone()).await;
    let mut devices = fleet(2_500);
    devices.push(device(9001, "no-cpu", "fra", Value::Null, json!(64)));
    devices.push(device(9002, "text-ram", "fra", json!(16), json!("128")));
    devices.push(device(9003, "elsewhere", "lisbon", json!(8), json!(32)));
    let fake = FakeNetbox::start(devices, &format!("Bearer {TOKEN}")).await;
    let report = run(&pool, &client(&netbox_config(&fake.base))).await.unwrap();

    assert_eq!(report.pages, 3);
    assert_eq!((report.seen, report.added, report.unchanged), (2_502, 2_501, 0));
    assert_eq!(report.skipped, 2, "{:?}", report.skipped_devices);
    assert!(report.skipped_devices.contains(&"no-cpu: no CPU core count".to_owned()));
    assert_eq!(report.unknown_sites, ["lisbon"]);
    assert_eq!(server(&pool, "9002").await.1, 16, "numeric strings are accepted");
    let requests = fake.requests();
    assert!(
        requests[0].starts_with("/api/dcim/devices/?role=server&status=active&limit=1000&offset=0"),
        "{requests:?}"
    );
    assert!(requests[2].contains("offset=2000"));
    let attributes: Value =
        sqlx::query_scalar("SELECT attributes FROM servers WHERE inventory_id = '7'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(attributes, json!({ "serial": "SN00007", "role": "server", "status": "active" }));
}

#[sqlx::test]
async fn v1_tokens_and_site_filters_are_sent_as_configured(pool: PgPool) {
    let _app = TestApp::spawn(pool.clone()).await;
    let mut devices = fleet(3);
    devices.push(device(50, "other", "lisbon", json!(8), json!(32)));
    let fake = FakeNetbox::start(devices, &format!("Token {TOKEN}")).await;
    let mut config = netbox_config(&fake.base);
    config.token_version = NetboxTokenVersion::V1;
    config.sites = vec!["fra".to_owned()];
    config.page_size = 2;
    let report = run(&pool, &client(&config)).await.unwrap();
    assert_eq!((report.added, report.pages), (3, 2));
    assert!(report.unknown_sites.is_empty(), "the site filter kept lisbon out");
    assert!(fake.requests()[0].contains("site=fra"));
}

#[sqlx::test]
async fn a_refused_token_fails_permanently_with_a_clear_reason(pool: PgPool) {
    let _app = TestApp::spawn(pool.clone()).await;
    let fake = FakeNetbox::start(fleet(3), "Bearer some-other-token").await;
    let err = run(&pool, &client(&netbox_config(&fake.base))).await.unwrap_err();
    match err {
        JobError::Permanent(reason) => {
            assert!(reason.contains("401") && reason.contains("token"), "{reason}")
        }
        other => panic!("expected a permanent failure, got {other:?}"),
    }
    assert_eq!(fake.requests().len(), 1, "a 401 is not retried");
}

#[sqlx::test]
async fn server_errors_are_retried_then_succeed(pool: PgPool) {
    let _app = TestApp::spawn(pool.clone()).await;
    let fake = FakeNetbox::start(fleet(5), &format!("Bearer {TOKEN}")).await;
    fake.set(|s| s.fail_next = 2);
    let report = run(&pool, &client(&netbox_config(&fake.base))).await.unwrap();
    assert_eq!(report.added, 5);
    assert_eq!(fake.requests().len(), 3, "two 500s, then the page");
}

#[sqlx::test]
async fn persistent_server_errors_and_slow_pages_are_transient(pool: PgPool) {
    let _app = TestApp::spawn(pool.clone()).await;
    let fake = FakeNetbox::start(fleet(5), &format!("Bearer {TOKEN}")).await;
    fake.set(|s| s.fail_next = 100);
    let mut config = netbox_config(&fake.base);
    config.retries = 1;
    let err = run(&pool, &client(&config)).await.unwrap_err();
    assert!(matches!(&err, JobError::Transient(m) if m.contains("500")), "{err:?}");

    fake.set(|s| {
        s.fail_next = 0;
        s.delay = Duration::from_secs(3);
    });
    config.timeout_secs = 1;
    config.retries = 0;
    let err = run(&pool, &client(&config)).await.unwrap_err();
    assert!(matches!(err, JobError::Transient(_)), "{err:?}");
    let servers: i64 =
        sqlx::query_scalar("SELECT count(*) FROM servers").fetch_one(&pool).await.unwrap();
    assert_eq!(servers, 0, "nothing half-synced was marked or lost");
}

#[sqlx::test]
async fn closed_connections_are_retried_and_garbage_fails_with_a_clear_reason(pool: PgPool) {
    let _app = TestApp::spawn(pool.clone()).await;
    let fake = FakeNetbox::start(fleet(4), &format!("Bearer {TOKEN}")).await;
    let config = netbox_config(&fake.base);
    fake.faults.push(Fault::Close, 2);
    let report = run(&pool, &client(&config)).await.unwrap();
    assert_eq!(report.added, 4, "two closed connections, then the page");
    assert_eq!(fake.faults.left(), 0);

    fake.faults.push(Fault::Garbage, 1);
    let err = run(&pool, &client(&config)).await.unwrap_err();
    let JobError::Permanent(reason) = &err else {
        panic!("garbage is not worth retrying: {err:?}")
    };
    assert!(reason.contains("NetBox") && reason.contains("not a device list"), "{reason}");
    let active: i64 = sqlx::query_scalar("SELECT count(*) FROM servers WHERE status = 'active'")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(active, 4, "a garbage answer marks nothing missing");
}

#[sqlx::test]
async fn next_links_to_another_host_are_refused(pool: PgPool) {
    let _app = TestApp::spawn(pool.clone()).await;
    let fake = FakeNetbox::start(fleet(3), &format!("Bearer {TOKEN}")).await;
    fake.set(|s| s.next_origin = Some("http://127.0.0.2:9".to_owned()));
    let mut config = netbox_config(&fake.base);
    config.page_size = 1;
    let err = run(&pool, &client(&config)).await.unwrap_err();
    assert!(matches!(&err, JobError::Permanent(m) if m.contains("leaves")), "{err:?}");
    assert_eq!(fake.requests().len(), 1, "the token never went to the other host");
}

#[sqlx::test]
async fn servers_go_missing_keep_their_field_and_come_back(pool: PgPool) {
    let app = TestApp::spawn(pool.clone()).await;
    let fake = FakeNetbox::start(fleet(3), &format!("Bearer {TOKEN}")).await;
    let source = client(&netbox_config(&fake.base));
    assert_eq!(run(&pool, &source).await.unwrap().added, 3);
    let again = run(&pool, &source).await.unwrap();
    assert_eq!((again.added, again.updated, again.unchanged, again.missing), (0, 0, 3, 0));

    sqlx::query("UPDATE servers SET field_id = $1 WHERE inventory_id = '2'")
        .bind(app.org.field)
        .execute(&pool)
        .await
        .unwrap();
    // The field's quota stands on that one server (32 CPU / 256 GB).
    sqlx::query(
        "INSERT INTO department_quotas (department_id, site_id, cpu_limit, ram_gb_limit) VALUES ($1, $2, 20, 100)",
    )
    .bind(app.org.dept)
    .bind(app.org.site)
    .execute(&pool)
    .await
    .unwrap();
    fake.set(|s| {
        s.devices.retain(|d| d["id"] != 2);
        s.devices[0]["custom_fields"]["cpu_cores"] = json!(48);
    });
    let changed = run(&pool, &source).await.unwrap();
    assert_eq!((changed.updated, changed.unchanged, changed.missing), (1, 1, 1));
    // The sync records the deficit it leaves, and who carries it, in its audit event too.
    let [deficit] = &changed.deficits[..] else { panic!("{:?}", changed.deficits) };
    assert_eq!((deficit.field_id, deficit.site_id), (app.org.field, app.org.site));
    assert_eq!((deficit.deficit.cpu, deficit.deficit.ram_gb), (20, 100));
    assert_eq!(deficit.departments.len(), 1);
    assert_eq!(deficit.departments[0].department_id, app.org.dept);
    let recorded: serde_json::Value = sqlx::query_scalar(
        "SELECT after -> 'deficits' FROM audit_events WHERE action = 'inventory.sync' ORDER BY id DESC LIMIT 1",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(recorded[0]["departments"][0]["short"], json!({ "cpu": 20, "ram_gb": 100 }));
    assert_eq!(server(&pool, "1").await.1, 48);
    assert_eq!(
        server(&pool, "2").await,
        ("missing".to_owned(), 32, Some(app.org.field)),
        "kept, with its field"
    );

    fake.set(|s| s.devices.push(device(2, "fra-00002", "fra", json!(32), json!(256))));
    let back = run(&pool, &source).await.unwrap();
    assert_eq!((back.updated, back.missing), (1, 0));
    assert!(back.deficits.is_empty());
    assert_eq!(server(&pool, "2").await, ("active".to_owned(), 32, Some(app.org.field)));

    // Reported smaller (8 CPU for a 20 CPU quota): a server that shrinks leaves a deficit too.
    fake.set(|s| {
        let two = s.devices.iter_mut().find(|d| d["id"] == 2).unwrap();
        two["custom_fields"]["cpu_cores"] = json!(8);
    });
    let shrunk = run(&pool, &source).await.unwrap();
    assert_eq!((shrunk.updated, shrunk.missing), (1, 0));
    let [deficit] = &shrunk.deficits[..] else { panic!("{:?}", shrunk.deficits) };
    assert_eq!(
        (deficit.deficit.cpu, deficit.deficit.ram_gb, deficit.site.as_str()),
        (12, 0, "fra")
    );
    let audited: i64 =
        sqlx::query_scalar("SELECT count(*) FROM audit_events WHERE action = 'inventory.sync'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(audited, 5);
}

#[sqlx::test]
async fn a_file_inventory_syncs_like_netbox(pool: PgPool) {
    let _app = TestApp::spawn(pool.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("inventory.json");
    let servers = json!([
        { "id": "a-1", "name": "a-1", "site": "fra", "cpu_cores": 64, "ram_gb": 512, "rack": "R1" },
        { "id": 2, "site": "fra", "cpu_cores": "32", "ram_gb": 256 },
        { "id": "a-3", "name": "a-3", "site": "fra", "ram_gb": 256 },
        { "id": "a-4", "name": "a-4", "site": "nowhere", "cpu_cores": 8, "ram_gb": 64 },
        { "id": "a-1", "name": "dup", "site": "fra", "cpu_cores": 1, "ram_gb": 1 }
    ]);
    std::fs::write(&path, servers.to_string()).unwrap();
    let source = FileInventory::new(path.clone());
    let report = run(&pool, &source).await.unwrap();
    assert_eq!((report.added, report.skipped, report.pages), (2, 3, 1));
    assert_eq!(report.unknown_sites, ["nowhere"]);
    assert!(report.skipped_devices.iter().any(|s| s.contains("listed twice")));
    let (name, rack): (String, Value) =
        sqlx::query_as("SELECT name, attributes->'rack' FROM servers WHERE inventory_id = 'a-1'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!((name.as_str(), rack), ("a-1", json!("R1")));
    assert_eq!(server(&pool, "2").await.1, 32, "a nameless server is named by its id");

    std::fs::write(&path, "{ not json").unwrap();
    assert!(matches!(run(&pool, &source).await, Err(JobError::Permanent(_))));
    let missing = FileInventory::new(dir.path().join("absent.json"));
    let err = run(&pool, &missing).await.unwrap_err();
    assert!(matches!(&err, JobError::Permanent(m) if m.contains("absent.json")), "{err:?}");
}

#[sqlx::test]
async fn an_empty_answer_does_not_mark_a_whole_site_missing(pool: PgPool) {
    let _app = TestApp::spawn(pool.clone()).await;
    let fake = FakeNetbox::start(fleet(4), &format!("Bearer {TOKEN}")).await;
    let source = client(&netbox_config(&fake.base));
    assert_eq!(run(&pool, &source).await.unwrap().added, 4);

    // A token that lost its permission sees no devices at all.
    fake.set(|s| s.devices.clear());
    let err = run(&pool, &source).await.unwrap_err();
    assert!(
        matches!(&err, JobError::Permanent(m) if m.contains("4 of the 4 active servers of site fra") && m.contains("force")),
        "{err:?}"
    );
    assert_eq!(server(&pool, "1").await.0, "active", "nothing was marked missing");

    // Half of them gone is within the guard's 50 %; more is not, unless forced.
    fake.set(|s| s.devices = fleet(2));
    assert_eq!(run(&pool, &source).await.unwrap().missing, 2);
    fake.set(|s| s.devices.clear());
    assert!(run(&pool, &source).await.is_err());
    assert_eq!(run_forced(&pool, &source, true).await.unwrap().missing, 2);
    assert_eq!(server(&pool, "1").await.0, "missing");
}
