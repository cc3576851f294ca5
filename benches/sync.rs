//! Server sync at scale: 10,000 NetBox devices over 10 pages into the local PostgreSQL, through
//! the real NetBox client against the NetBox double of the tests.
//!
//! `cargo bench --bench sync` (uses DATABASE_URL's server; a scratch database `infrahub_bench_sync`).

// Shared with the tests; the bench uses only part of it.
#[allow(dead_code)]
#[path = "../tests/api/netbox_fake.rs"]
mod netbox_fake;

use std::time::Instant;

use infrahub::clients::inventory::Netbox;
use infrahub::config::{NetboxConfig, Secret};
use infrahub::jobs::sync_servers::sync;
use infrahub::store::audit::Actor;
use serde_json::json;

const DEVICES: i64 = 10_000;
const TOKEN: &str = "nbt_bench.token";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    infrahub::install_crypto_provider();
    let url = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
    let pool = infrahub::bench::scratch_database(&url, "infrahub_bench_sync").await?;
    infrahub::store::migrate_up(&pool).await?;
    for site in ["ber", "muc"] {
        sqlx::query(
            "INSERT INTO sites (id, name, display_name) VALUES (gen_random_uuid(), $1, $1)",
        )
        .bind(site)
        .execute(&pool)
        .await?;
    }
    let devices = (1..=DEVICES)
        .map(|i| {
            let site = if i % 2 == 0 { "ber" } else { "muc" };
            netbox_fake::device(
                i,
                &format!("node-{i:05}"),
                site,
                json!(32 + (i % 4) * 16),
                json!(256 * (1 + i % 3)),
            )
        })
        .collect();
    let fake = netbox_fake::FakeNetbox::start(devices, &format!("Bearer {TOKEN}")).await;
    let config =
        NetboxConfig { url: fake.base.clone(), page_size: 1000, ..NetboxConfig::default() };
    let client = Netbox::new(&config, Secret::new(TOKEN))?;
    let actor = Actor::system("bench");

    println!("| run | pages | added | updated | unchanged | missing | seconds |");
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: |");
    let measure = async |label: &str| -> anyhow::Result<()> {
        let started = Instant::now();
        let report = sync(&pool, &client, &actor).await.map_err(|e| anyhow::anyhow!("{e}"))?;
        println!(
            "| {label} | {} | {} | {} | {} | {} | {:.2} |",
            report.pages,
            report.added,
            report.updated,
            report.unchanged,
            report.missing,
            started.elapsed().as_secs_f64()
        );
        Ok(())
    };
    measure("first sync, empty database").await?;
    measure("second sync, nothing changed").await?;
    fake.set(|script| {
        for device in script.devices.iter_mut().step_by(10) {
            device["custom_fields"]["cpu_cores"] = json!(128);
        }
        script.devices.truncate(9_500);
    });
    measure("10% changed, 500 gone").await?;
    pool.close().await;
    Ok(())
}
