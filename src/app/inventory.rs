//! The server inventory: listing servers, asking for a sync, and the sync itself (NetBox or a
//! file into `servers`, page by page; servers the inventory no longer lists become `missing`).

use std::collections::{BTreeSet, HashSet};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::jobs::{JobMeta, submit};
use super::{Actor, AppResult, Caller, PageParams, Submitted};
use crate::clients::inventory::Inventory;
use crate::context::Context;
use crate::domain::notification::{EventKind, Notification};
use crate::domain::scope::Action;
use crate::jobs::Trigger;
use crate::jobs::sync_servers::{SyncRequest, SyncServers};
use crate::store::Page;
use crate::store::audit::{self, Change};
use crate::store::servers::{self, Server, ServerFilter, Upsert, UpsertCounts};

/// Servers written per statement.
const BATCH: usize = 1000;
/// Skipped devices named in the report (the count covers all of them).
const SKIPPED_LISTED: usize = 50;

/// Filters of the server list.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ServerQuery {
    /// Site name.
    pub site: Option<String>,
    pub field_id: Option<Uuid>,
    /// `active`, `missing` or `retired`.
    pub status: Option<String>,
    /// Only servers assigned to no field.
    #[serde(default)]
    pub unassigned: bool,
}

/// Servers; field admins see their own field's only.
pub async fn list_servers(
    ctx: &Context,
    caller: &Caller,
    query: ServerQuery,
    page: PageParams,
) -> AppResult<Page<Server>> {
    caller.authorize(Action::ReadServers)?;
    let page = page.request()?;
    let field_id = caller.scope.narrow_to_field(query.field_id, query.unassigned)?;
    let filter = ServerFilter {
        site: query.site,
        field_id,
        status: query.status,
        unassigned: query.unassigned,
    };
    let mut conn = ctx.pool.acquire().await?;
    Ok(servers::list(&mut conn, &filter, page).await?)
}

/// Starts a sync (center admins); while one is queued or running, answers with that one.
/// With `force`, the sync marks servers missing even when that takes much of a site away.
pub async fn request_sync(ctx: &Context, caller: &Caller, force: bool) -> AppResult<Submitted> {
    caller.authorize(Action::SyncInventory)?;
    let request = SyncRequest { force, trigger: Trigger::default() };
    submit::<SyncServers>(ctx, caller, &request, JobMeta::by(caller)).await
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
    /// Fields whose quotas the servers marked missing left above capacity, with the
    /// departments short (see `GET /fields/{id}/capacity/impact`).
    pub deficits: Vec<super::allocation::FieldDeficit>,
}

impl SyncReport {
    fn skip(&mut self, why: String) {
        self.skipped += 1;
        if self.skipped_devices.len() < SKIPPED_LISTED {
            self.skipped_devices.push(why);
        }
    }

    fn add(&mut self, counts: UpsertCounts) {
        self.added += counts.added;
        self.updated += counts.updated;
        self.unchanged += counts.unchanged;
    }
}

/// Why a sync could not run: the inventory failed, or the database did, or it would have
/// marked too much of a site missing.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error(transparent)]
    Inventory(#[from] crate::clients::ClientError),
    #[error(transparent)]
    App(#[from] super::AppError),
    /// The answer looks wrong rather than true: nothing was marked missing.
    #[error("{0}")]
    Refused(String),
}

/// Refuses a sync that would take more than `guard` of a site's active servers away at once.
fn refuse_mass_disappearance(going: &[servers::GoingMissing], guard: f64) -> Result<(), SyncError> {
    let Some(site) = going.iter().find(|s| s.missing as f64 > guard * s.active as f64) else {
        return Ok(());
    };
    Err(SyncError::Refused(format!(
        "the inventory no longer lists {} of the {} active servers of site {} ({:.0} %, more than \
         inventory.missing_guard = {:.0} %); nothing was marked missing. Check the inventory's \
         token and filters; if the servers are really gone, sync again with force",
        site.missing,
        site.active,
        site.site,
        100.0 * site.missing as f64 / site.active as f64,
        100.0 * guard
    )))
}

impl From<crate::store::StoreError> for SyncError {
    fn from(err: crate::store::StoreError) -> Self {
        Self::App(err.into())
    }
}

impl From<sqlx::Error> for SyncError {
    fn from(err: sqlx::Error) -> Self {
        Self::App(err.into())
    }
}

/// Runs one sync of `source` into the database. Idempotent: a second run over the same
/// inventory changes nothing.
pub async fn sync(
    ctx: &Context,
    source: &dyn Inventory,
    actor: &Actor,
    force: bool,
) -> Result<SyncReport, SyncError> {
    let started = Instant::now();
    let mut report = SyncReport { source: source.describe(), ..SyncReport::default() };
    let sites = servers::site_ids(&mut *ctx.pool.acquire().await?).await?;
    let mut seen_ids: HashSet<String> = HashSet::new();
    let mut unknown = BTreeSet::new();
    let mut cursor: Option<String> = None;
    // Fields that lost capacity at a site through servers changed, not gone.
    let mut shrunk: Vec<(Uuid, Uuid)> = Vec::new();
    loop {
        let page = source.page(cursor.as_deref()).await?;
        report.pages += 1;
        for why in page.skipped {
            report.skip(why);
        }
        let mut batch = Vec::with_capacity(page.devices.len());
        for device in &page.devices {
            report.seen += 1;
            let Some(site_id) = sites.get(&device.site) else {
                unknown.insert(device.site.clone());
                report.skip(format!("{}: unknown site {}", device.name, device.site));
                continue;
            };
            if !seen_ids.insert(device.inventory_id.clone()) {
                report.skip(format!("{}: id {} listed twice", device.name, device.inventory_id));
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
            let mut counts = servers::upsert_batch(&mut *ctx.pool.acquire().await?, chunk).await?;
            shrunk.append(&mut counts.shrunk);
            report.add(counts);
        }
        match page.next {
            Some(next) if Some(&next) != cursor.as_ref() => cursor = Some(next),
            _ => break,
        }
    }
    report.unknown_sites = unknown.into_iter().collect();
    let covered: Option<Vec<Uuid>> =
        source.sites().map(|names| names.iter().filter_map(|n| sites.get(n).copied()).collect());
    let seen: Vec<String> = seen_ids.into_iter().collect();
    let mut tx = ctx.pool.begin().await?;
    if !force {
        let going = servers::going_missing(&mut tx, &seen, covered.as_deref()).await?;
        refuse_mass_disappearance(&going, ctx.config.inventory.missing_guard)?;
    }
    let marked = servers::mark_missing(&mut tx, &seen, covered.as_deref()).await?;
    report.missing = marked.len() as u64;
    // The fields those servers (and servers that moved or shrank) leave short, and the
    // departments that carry it: recorded in the report, so in the job's result and the
    // sync's audit event.
    let mut touched = shrunk;
    touched.extend(marked.iter().filter_map(|m| m.field_id.map(|field| (field, m.site_id))));
    report.deficits = super::allocation::deficits(&mut tx, &ctx.config, &touched).await?;
    report.duration_ms = started.elapsed().as_millis() as u64;
    let change = Change::new("inventory", "sync", &report.source).after(&report);
    audit::record(&mut tx, actor, change).await?;
    for deficit in &report.deficits {
        let short: Vec<String> = deficit
            .departments
            .iter()
            .map(|d| {
                format!("{} short by {} CPU / {} GB", d.department, d.short.cpu, d.short.ram_gb)
            })
            .collect();
        let text = format!(
            "field {} at {} has {} CPU and {} GB RAM less than its quotas after a sync ({})",
            deficit.field,
            deficit.site,
            deficit.deficit.cpu,
            deficit.deficit.ram_gb,
            if short.is_empty() { "no department short".to_owned() } else { short.join(", ") }
        );
        let note = Notification::new(EventKind::CapacityDeficit, text, serde_json::json!(deficit));
        super::webhooks::emit(&mut tx, ctx, note).await?;
    }
    super::commit(tx).await?;
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
