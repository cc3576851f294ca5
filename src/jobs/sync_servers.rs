//! `sync_servers`: pulls the server inventory (NetBox or a file) into `servers`, page by page,
//! upserting each batch in one statement; marks servers the inventory no longer lists as
//! `missing`. Idempotent: a second run over the same inventory changes nothing.

use std::collections::{BTreeSet, HashSet};
use std::time::Instant;

use serde::Serialize;
use serde_json::json;
use sqlx::PgPool;

use super::{JobError, JobFuture, JobHandler, KindSettings, Outcome};
use crate::clients::inventory::{self, Inventory, InventoryError};
use crate::context::Context;
use crate::store::audit::{self, Actor, Change};
use crate::store::jobs::Claimed;
use crate::store::servers::{self, Upsert, UpsertCounts};

pub const SYNC_SERVERS: &str = "sync_servers";

/// Servers written per statement.
const BATCH: usize = 1000;
/// Skipped devices named in the result (the count covers all of them).
const SKIPPED_LISTED: usize = 50;

pub struct SyncServers;

impl JobHandler for SyncServers {
    fn kind(&self) -> &'static str {
        SYNC_SERVERS
    }

    fn defaults(&self) -> KindSettings {
        KindSettings {
            concurrency: 1,
            max_attempts: 5,
            timeout: std::time::Duration::from_secs(600),
            backoff_base: std::time::Duration::from_secs(5),
            backoff_max: std::time::Duration::from_secs(300),
        }
    }

    fn dedupe_key(&self) -> Option<&'static str> {
        Some(SYNC_SERVERS)
    }

    fn run<'a>(&'a self, ctx: &'a Context, _: &'a Claimed) -> JobFuture<'a> {
        Box::pin(async move {
            let source = inventory::from_config(&ctx.config)
                .map_err(|e| JobError::permanent(e.to_string()))?;
            let report = sync(&ctx.pool, source.as_ref(), &Actor::system("sync_servers")).await?;
            Ok(Outcome::Done(json!(report)))
        })
    }
}

/// What a sync did; the job's result.
#[derive(Debug, Default, Clone, Serialize, PartialEq)]
pub struct SyncReport {
    pub source: String,
    /// Devices listed by the inventory with everything needed (known site or not).
    pub seen: u64,
    pub added: u64,
    pub updated: u64,
    pub unchanged: u64,
    /// Servers marked missing by this run.
    pub missing: u64,
    /// Devices left out: no CPU/RAM/site, unknown site, or a repeated id.
    pub skipped: u64,
    /// Why, for the first few.
    pub skipped_devices: Vec<String>,
    /// Sites the inventory lists that InfraHub does not know (create them, then sync again).
    pub unknown_sites: Vec<String>,
    pub pages: u64,
    pub duration_ms: u64,
}

impl From<InventoryError> for JobError {
    fn from(err: InventoryError) -> Self {
        match err {
            InventoryError::Permanent(m) => JobError::Permanent(m),
            InventoryError::Transient(m) => JobError::Transient(m),
        }
    }
}

/// Runs one sync of `source` into the database.
pub async fn sync(
    pool: &PgPool,
    source: &dyn Inventory,
    actor: &Actor,
) -> Result<SyncReport, JobError> {
    let started = Instant::now();
    let mut report = SyncReport { source: source.describe(), ..SyncReport::default() };
    let sites = servers::site_ids(&mut *pool.acquire().await?).await?;
    let mut seen_ids: HashSet<String> = HashSet::new();
    let mut unknown = BTreeSet::new();
    let skip = |report: &mut SyncReport, why: String| {
        report.skipped += 1;
        if report.skipped_devices.len() < SKIPPED_LISTED {
            report.skipped_devices.push(why);
        }
    };
    let mut cursor: Option<String> = None;
    loop {
        let page = source.page(cursor.as_deref()).await?;
        report.pages += 1;
        for why in page.skipped {
            skip(&mut report, why);
        }
        let mut batch = Vec::with_capacity(page.devices.len());
        for device in &page.devices {
            report.seen += 1;
            let Some(site_id) = sites.get(&device.site) else {
                unknown.insert(device.site.clone());
                skip(&mut report, format!("{}: unknown site {}", device.name, device.site));
                continue;
            };
            if !seen_ids.insert(device.inventory_id.clone()) {
                skip(
                    &mut report,
                    format!("{}: id {} listed twice", device.name, device.inventory_id),
                );
                continue;
            }
            batch.push(Upsert {
                inventory_id: &device.inventory_id,
                name: &device.name,
                site_id: *site_id,
                cpu_cores: device.cpu_cores,
                ram_gb: device.ram_gb,
                attributes: &device.attributes,
            });
        }
        for chunk in batch.chunks(BATCH) {
            let counts = servers::upsert_batch(&mut *pool.acquire().await?, chunk).await?;
            add_counts(&mut report, counts);
        }
        match page.next {
            Some(next) if Some(&next) != cursor.as_ref() => cursor = Some(next),
            _ => break,
        }
    }
    report.unknown_sites = unknown.into_iter().collect();
    let covered: Option<Vec<uuid::Uuid>> =
        source.sites().map(|names| names.iter().filter_map(|n| sites.get(n).copied()).collect());
    let seen: Vec<String> = seen_ids.into_iter().collect();
    let mut tx = pool.begin().await?;
    report.missing = servers::mark_missing(&mut tx, &seen, covered.as_deref()).await?;
    report.duration_ms = started.elapsed().as_millis() as u64;
    let change = Change::new("inventory", "sync", &report.source).after(&report);
    audit::record(&mut tx, actor, change).await?;
    tx.commit().await?;
    tracing::info!(
        seen = report.seen,
        added = report.added,
        updated = report.updated,
        missing = report.missing,
        skipped = report.skipped,
        "server inventory synced"
    );
    Ok(report)
}

fn add_counts(report: &mut SyncReport, counts: UpsertCounts) {
    report.added += counts.added;
    report.updated += counts.updated;
    report.unchanged += counts.unchanged;
}
