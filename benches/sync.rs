//! Server sync at scale: 50,000 NetBox devices, 1,000 per page, into the local PostgreSQL,
//! through the real NetBox client against the NetBox double of the tests.
//!
//! `cargo bench --bench sync [-- --devices N]` (uses DATABASE_URL's server; a scratch database
//! `infrahub_bench_sync`).

// Shared with the tests; the bench uses only part of it.
#[allow(dead_code)]
#[path = "../tests/api/faults.rs"]
mod faults;
#[allow(dead_code)]
#[path = "../tests/api/netbox_fake.rs"]
mod netbox_fake;
#[path = "support/mod.rs"]
mod support;

use std::time::Instant;

use infrahub::app::Actor;
use infrahub::app::inventory::sync;
use infrahub::clients::inventory::Netbox;
use infrahub::config::{Config, NetboxConfig, Secret};
use infrahub::context::Context;
use serde_json::json;

const TOKEN: &str = "nbt_bench.token";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    infrahub::install_crypto_provider();
    let args: Vec<String> = std::env::args().collect();
    let devices_arg = args.iter().position(|a| a == "--devices").and_then(|i| args.get(i + 1));
    let total: i64 = devices_arg.map(|n| n.parse()).transpose()?.unwrap_or(50_000);
    let pool = support::scratch_database(&support::database_url(), "infrahub_bench_sync").await?;
    infrahub::store::migrate_up(&pool).await?;
    for site in ["ber", "muc"] {
        sqlx::query(
            "INSERT INTO sites (id, name, display_name) VALUES (gen_random_uuid(), $1, $1)",
        )
        .bind(site)
        .execute(&pool)
        .await?;
    }
    let devices = (1..=total)
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
    let ctx = Context::for_admin(pool.clone(), Config::default())?;

    let mut results = Vec::new();
    println!("| run | pages | added | updated | unchanged | missing | seconds |");
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: |");
    let mut measure = async |label: &str, run: &str| -> anyhow::Result<()> {
        let started = Instant::now();
        let report =
            sync(&ctx, &client, &actor, false).await.map_err(|e| anyhow::anyhow!("{e}"))?;
        let seconds = started.elapsed().as_secs_f64();
        println!(
            "| {label} | {} | {} | {} | {} | {} | {seconds:.2} |",
            report.pages, report.added, report.updated, report.unchanged, report.missing,
        );
        results.push(format!(
            "RESULT system=infrahub test=sync {run}_devices={total} {run}_seconds={seconds:.3}"
        ));
        Ok(())
    };
    measure("first sync, empty database", "first").await?;
    measure("second sync, nothing changed", "unchanged").await?;
    fake.set(|script| {
        for device in script.devices.iter_mut().step_by(10) {
            device["custom_fields"]["cpu_cores"] = json!(128);
        }
        script.devices.truncate((total - total / 20) as usize);
    });
    measure("10% changed, 5% gone", "changed").await?;
    println!();
    for line in results {
        println!("{line}");
    }
    pool.close().await;
    Ok(())
}
