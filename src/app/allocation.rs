//! Allocation: center admins assign servers to fields; field admins split a field's capacity
//! at a site into department quotas. A request is checked at once (a clear 409 with what is
//! free) and applied by a job that checks again under the (field, site) lock, so racing
//! requests can never over-allocate. Also the capacity and quota views.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sqlx::PgConnection;
use uuid::Uuid;

use super::jobs::{JobMeta, submit};
use super::{Actor, AppError, AppResult, Caller, Submitted};
use crate::config::Config;
use crate::context::Context;
use crate::domain::capacity::{
    QuotaError, Resources, backed_quotas, capacity, check_capacity_drop, check_quota,
};
use crate::domain::scope::{Action, Owner};
use crate::jobs::allocate_quota::{AllocateQuota, QuotaRequest};
use crate::jobs::allocate_servers::{AllocateServers, Allocation};
use crate::store::StoreError;
use crate::store::audit::{self, Change};
use crate::store::capacity::{self as store_capacity, QuotaChangeInputs, QuotaChangeKey};
use crate::store::org::{self, UnitKind};
use crate::store::servers::{self, Server};

/// A server to assign (or move) to a field.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AssignServer {
    pub server_id: Uuid,
    pub field_id: Uuid,
}

/// Assigns a server to a field, or moves it to another (center admins).
pub async fn assign_server(
    ctx: &Context,
    caller: &Caller,
    input: AssignServer,
) -> AppResult<Submitted> {
    caller.authorize(Action::AllocateServers)?;
    let mut conn = ctx.pool.acquire().await?;
    let server = servers::get(&mut conn, input.server_id)
        .await
        .map_err(|e| AppError::from_store("server", e))?;
    org::get_unit(&mut conn, UnitKind::Field, input.field_id).await.map_err(|e| match e {
        StoreError::NotFound => AppError::invalid("unknown_reference", "no such field")
            .with_details(json!({ "field": "field_id" })),
        other => other.into(),
    })?;
    if server.status != "active" {
        return Err(not_active(&server));
    }
    if server.field_id != Some(input.field_id) {
        refuse_if_release_breaks_quotas(&mut conn, &ctx.config, &server).await?;
    }
    drop(conn);
    let allocation = Allocation { server_id: server.id, field_id: Some(input.field_id) };
    let meta = JobMeta::by(caller).about("server", server.id, Owner::field(input.field_id));
    submit::<AllocateServers>(ctx, caller, &allocation, meta).await
}

/// Takes a server away from its field (center admins); refused when the field's department
/// quotas at that site would no longer fit.
pub async fn unassign_server(
    ctx: &Context,
    caller: &Caller,
    server_id: Uuid,
) -> AppResult<Submitted> {
    caller.authorize(Action::AllocateServers)?;
    let mut conn = ctx.pool.acquire().await?;
    let server =
        servers::get(&mut conn, server_id).await.map_err(|e| AppError::from_store("server", e))?;
    let Some(field_id) = server.field_id else {
        return Err(AppError::conflict(
            "not_assigned",
            format!("server {} belongs to no field", server.name),
        ));
    };
    refuse_if_release_breaks_quotas(&mut conn, &ctx.config, &server).await?;
    drop(conn);
    let allocation = Allocation { server_id, field_id: None };
    let meta = JobMeta::by(caller).about("server", server_id, Owner::field(field_id));
    submit::<AllocateServers>(ctx, caller, &allocation, meta).await
}

fn not_active(server: &Server) -> AppError {
    AppError::conflict(
        "server_not_active",
        format!("server {} is {}: only active servers can be assigned", server.name, server.status),
    )
    .with_details(json!({ "status": server.status }))
}

async fn refuse_if_release_breaks_quotas(
    conn: &mut PgConnection,
    config: &Config,
    server: &Server,
) -> AppResult<()> {
    let Err(reason) = check_release(conn, config, server).await? else { return Ok(()) };
    Err(capacity_in_use(conn, config, server, reason).await?)
}

/// The refusal of a server's release, with who would carry the shortfall (as
/// `GET /fields/{id}/capacity/impact` shows it): the same at the request and in the job.
async fn capacity_in_use(
    conn: &mut PgConnection,
    config: &Config,
    server: &Server,
    reason: String,
) -> Result<AppError, StoreError> {
    let mut departments = Vec::new();
    if let Some(field_id) = server.field_id {
        let site = server.site.clone();
        let lost = counted(server);
        let impact = site_impact(conn, config, field_id, server.site_id, site, lost, true).await?;
        departments = impact.departments;
    }
    Ok(AppError::conflict("capacity_in_use", reason).with_details(json!({
        "field_id": server.field_id,
        "site": server.site,
        "departments_short": departments,
    })))
}

/// What a server adds to its field's capacity: its hardware while active, nothing otherwise.
fn counted(server: &Server) -> Resources {
    if server.status == "active" {
        Resources::new(server.cpu_cores.into(), server.ram_gb.into())
    } else {
        Resources::ZERO
    }
}

/// Why a server may not leave its field: the quotas left standing, named.
async fn check_release(
    conn: &mut PgConnection,
    config: &Config,
    server: &Server,
) -> Result<Result<(), String>, StoreError> {
    let Some(field_id) = server.field_id else { return Ok(Ok(())) };
    let own = counted(server);
    let remaining = store_capacity::field_servers(conn, field_id, server.site_id).await? - own;
    let quotas = store_capacity::quotas_at(conn, field_id, server.site_id).await?;
    let held: Resources = quotas.iter().map(|q| Resources::new(q.cpu_limit, q.ram_gb_limit)).sum();
    let after = capacity(remaining, config.capacity.overcommit());
    Ok(check_capacity_drop(after, held).map_err(|short| {
        let holders: Vec<String> = quotas
            .iter()
            .map(|q| format!("{}: {} CPU / {} GB", q.department, q.cpu_limit, q.ram_gb_limit))
            .collect();
        format!(
            "taking {} out of field {} would leave {} CPU / {} GB at {} for quotas of {} CPU / {} GB \
             ({}); short by {} CPU / {} GB. Lower those quotas first",
            server.name,
            server.field.as_deref().unwrap_or("?"),
            after.cpu,
            after.ram_gb,
            server.site,
            held.cpu,
            held.ram_gb,
            holders.join(", "),
            short.cpu,
            short.ram_gb
        )
    }))
}

/// Applies an allocation under the (field, site) locks (the `allocate_servers` job): checks
/// again that the field the server leaves keeps its quotas, then moves it.
pub async fn apply_allocation(
    ctx: &Context,
    actor: &Actor,
    allocation: &Allocation,
    job: Uuid,
) -> AppResult<Value> {
    let mut tx = ctx.pool.begin().await?;
    let before = servers::lock(&mut tx, allocation.server_id)
        .await
        .map_err(|e| AppError::from_store("server", e))?;
    // A move asked for before the last one applied to this server is skipped.
    let key = allocation.server_id.to_string();
    if !crate::store::jobs::claim_change(&mut tx, "allocate_servers", &key, job).await? {
        super::commit(tx).await?;
        return Ok(json!({ "server_id": before.id, "skipped": true,
                          "reason": "a newer move of this server was applied first" }));
    }
    if before.field_id == allocation.field_id {
        // Kept: this is the newest move of the server now, whatever older ones come late.
        super::commit(tx).await?;
        return Ok(
            json!({ "server_id": before.id, "field_id": before.field_id, "unchanged": true }),
        );
    }
    if let Some(field_id) = allocation.field_id {
        if before.status != "active" {
            return Err(not_active(&before));
        }
        org::get_unit(&mut tx, UnitKind::Field, field_id)
            .await
            .map_err(|e| AppError::from_store("field", e))?;
    }
    let mut fields: Vec<Uuid> =
        [before.field_id, allocation.field_id].into_iter().flatten().collect();
    fields.sort();
    for field_id in fields {
        store_capacity::lock_field_site(&mut tx, field_id, before.site_id).await?;
    }
    if let Err(reason) = check_release(&mut tx, &ctx.config, &before).await? {
        return Err(capacity_in_use(&mut tx, &ctx.config, &before, reason).await?);
    }
    servers::set_field(&mut tx, before.id, allocation.field_id).await?;
    let after = servers::get(&mut tx, before.id).await?;
    let verb = if allocation.field_id.is_some() { "assign" } else { "unassign" };
    let change = Change::new("server", verb, before.id).before(&before).after(&after);
    audit::record(&mut tx, actor, change).await?;
    super::commit(tx).await?;
    Ok(
        json!({ "server_id": after.id, "field_id": after.field_id, "previous_field_id": before.field_id }),
    )
}

/// A department's quota at a site, as the API takes it.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetQuota {
    pub field_id: Uuid,
    /// The department, which must belong to the field.
    pub dept_id: Uuid,
    /// Site name.
    pub site: String,
    pub cpu_limit: u32,
    pub ram_gb_limit: u32,
}

/// The numbers a quota decision rests on.
#[derive(Debug, Clone, Serialize)]
pub struct QuotaCheck {
    pub capacity: Resources,
    pub other_quotas: Resources,
    pub used_by_projects: Resources,
    pub previous: Option<Resources>,
}

impl QuotaCheck {
    fn of(config: &Config, inputs: store_capacity::QuotaInputs) -> Self {
        QuotaCheck {
            capacity: capacity(inputs.servers, config.capacity.overcommit()),
            other_quotas: inputs.others,
            used_by_projects: inputs.used_by_projects,
            previous: inputs.own,
        }
    }

    /// Whether the quota `request` asks for fits these numbers.
    fn verdict(&self, request: &QuotaRequest) -> Result<(), QuotaError> {
        check_quota(self.capacity, self.other_quotas, self.used_by_projects, request.requested())
    }

    /// What the field still has free for this department (capacity minus the others).
    pub fn free(&self) -> Resources {
        (self.capacity - self.other_quotas).positive_part()
    }
}

/// Reads the numbers and checks the request; takes no lock (the caller decides).
async fn evaluate(
    conn: &mut PgConnection,
    config: &Config,
    request: &QuotaRequest,
) -> Result<(QuotaCheck, Result<(), QuotaError>), StoreError> {
    let check =
        quota_check(conn, config, request.field_id, request.department_id, request.site_id).await?;
    let verdict = check.verdict(request);
    Ok((check, verdict))
}

/// The 409 of a quota that does not fit, with the numbers it rests on.
fn over_quota(check: &QuotaCheck, err: QuotaError) -> AppError {
    AppError::conflict("over_quota", err.to_string()).with_details(json!({
        "free": check.free(),
        "capacity": check.capacity,
        "other_quotas": check.other_quotas,
        "used_by_projects": check.used_by_projects,
    }))
}

/// The numbers a change of the department's quota at the site rests on (no lock taken).
pub(super) async fn quota_check(
    conn: &mut PgConnection,
    config: &Config,
    field_id: Uuid,
    department_id: Uuid,
    site_id: Uuid,
) -> Result<QuotaCheck, StoreError> {
    let inputs = store_capacity::quota_inputs(conn, field_id, department_id, site_id).await?;
    Ok(QuotaCheck::of(config, inputs))
}

/// [`quota_check`] of many quotas, in one round trip.
pub(super) async fn quota_checks(
    conn: &mut PgConnection,
    config: &Config,
    keys: &[store_capacity::QuotaKey],
) -> Result<HashMap<store_capacity::QuotaKey, QuotaCheck>, StoreError> {
    let found = store_capacity::quota_inputs_many(conn, keys).await?;
    Ok(found.into_iter().map(|(key, inputs)| (key, QuotaCheck::of(config, inputs))).collect())
}

/// The quota change that raises the department's quota at the site by `increase`, checked
/// as [`set_quota`] checks one (409 `over_quota` when it does not fit), with the quota it
/// raises; the job applying it checks again under the lock.
pub(super) async fn raise_quota(
    conn: &mut PgConnection,
    config: &Config,
    field_id: Uuid,
    department_id: Uuid,
    site_id: Uuid,
    increase: Resources,
) -> AppResult<(QuotaRequest, Option<Resources>)> {
    let check = quota_check(conn, config, field_id, department_id, site_id).await?;
    let wanted = check.previous.unwrap_or(Resources::ZERO) + increase;
    check_quota(check.capacity, check.other_quotas, check.used_by_projects, wanted)
        .map_err(|err| over_quota(&check, err))?;
    let change = QuotaRequest {
        field_id,
        department_id,
        site_id,
        cpu_limit: wanted.cpu,
        ram_gb_limit: wanted.ram_gb,
    };
    Ok((change, check.previous))
}

/// Creates or changes a department's quota at a site (center admins, or the field's admin):
/// refused at once above the field's free capacity or below what the projects use; the job
/// checks again under the lock.
pub async fn set_quota(ctx: &Context, caller: &Caller, input: SetQuota) -> AppResult<Submitted> {
    caller.authorize(Action::SetQuota)?;
    let refused =
        || AppError::forbidden("field admins set quotas of their own field's departments only");
    if !caller.scope.may_write(Owner::field(input.field_id)) {
        return Err(refused());
    }
    // The department, the site and the numbers the change is checked against, in one round
    // trip (shared with the changes arriving meanwhile); the numbers count only once both are
    // found and belong together.
    let key = QuotaChangeKey {
        field_id: input.field_id,
        department_id: input.dept_id,
        site: input.site.clone(),
    };
    let QuotaChangeInputs { department: dept, site, inputs } = ctx.quota_reads.read(key).await?;
    // Whether another field's department exists is none of a field admin's business: the
    // same refusal either way, before any value of the request is looked at.
    let in_scope =
        dept.as_ref().is_some_and(|d| caller.scope.may_write(Owner::department(d.field_id, d.id)));
    let Some(dept) = dept.filter(|_| in_scope) else {
        if !caller.scope.reaches_everything() {
            return Err(refused());
        }
        return Err(AppError::invalid("unknown_reference", "no such department")
            .with_details(json!({ "field": "dept_id" })));
    };
    if dept.field_id != input.field_id {
        return Err(AppError::invalid(
            "invalid_value",
            "the department does not belong to that field",
        )
        .with_details(json!({ "field": "dept_id" })));
    }
    let site = site.ok_or_else(|| AppError::unknown_site(&input.site))?;
    let request = QuotaRequest {
        field_id: input.field_id,
        department_id: dept.id,
        site_id: site.id,
        cpu_limit: input.cpu_limit.into(),
        ram_gb_limit: input.ram_gb_limit.into(),
    };
    let check = QuotaCheck::of(&ctx.config, inputs);
    check.verdict(&request).map_err(|err| over_quota(&check, err))?;
    let owner = Owner::department(input.field_id, dept.id);
    let meta = JobMeta::by(caller).about("department", dept.id, owner);
    submit::<AllocateQuota>(ctx, caller, &request, meta).await
}

/// Applies a quota under the (field, site) lock (the `allocate_quota` job), checking again.
/// `job` is the job applying it: a change asked for before the last one applied to this
/// department's quota at this site is skipped (`"skipped": true`), never applied over it.
pub async fn apply_quota(
    ctx: &Context,
    actor: &Actor,
    request: &QuotaRequest,
    job: Uuid,
) -> AppResult<Value> {
    let mut tx = ctx.pool.begin().await?;
    let field = match org::get_department(&mut tx, request.department_id).await {
        Ok(dept) => Some(dept.field_id),
        Err(StoreError::NotFound) => None,
        Err(other) => return Err(other.into()),
    };
    if field != Some(request.field_id) {
        return Err(AppError::conflict(
            "department_moved",
            "the department does not belong to the field (any more)",
        ));
    }
    store_capacity::lock_field_site(&mut tx, request.field_id, request.site_id).await?;
    let key = format!("{}:{}", request.department_id, request.site_id);
    if !crate::store::jobs::claim_change(&mut tx, "allocate_quota", &key, job).await? {
        return Ok(
            json!({ "skipped": true, "reason": "a newer change of this quota was applied first" }),
        );
    }
    let (check, verdict) = evaluate(&mut tx, &ctx.config, request).await?;
    verdict.map_err(|e| AppError::conflict("over_quota", e.to_string()))?;
    store_capacity::set_quota(&mut tx, request.department_id, request.site_id, request.requested())
        .await?;
    let subject = format!("{}:{}", request.department_id, request.site_id);
    let change = Change::new("department_quota", "set", subject)
        .before(&check.previous)
        .after(&request.requested());
    audit::record(&mut tx, actor, change).await?;
    super::commit(tx).await?;
    let free_after = check.free() - request.requested();
    Ok(json!({
        "department_id": request.department_id,
        "site_id": request.site_id,
        "cpu_limit": request.cpu_limit,
        "ram_gb_limit": request.ram_gb_limit,
        "field_free_after": free_after,
    }))
}

/// One site of a field's capacity.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SiteCapacity {
    pub site_id: Uuid,
    pub site: String,
    /// Active servers of the field there, and their CPU and RAM.
    pub servers: i64,
    pub hardware: Resources,
    /// Hardware times the configured overcommit: what can be promised.
    pub capacity: Resources,
    /// Sum of the department quotas.
    pub allocated: Resources,
    pub free: Resources,
    /// Quotas above capacity, e.g. after servers went missing; zero when the invariant holds.
    pub deficit: Resources,
    pub missing_servers: i64,
    pub missing: Resources,
    /// Reserved by the field's projects at the site.
    pub reserved: Resources,
    /// What those projects actually use, as read from Prometheus (absent: never read).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub in_use: Option<InUse>,
}

/// A field's capacity per site.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct FieldCapacity {
    pub field_id: Uuid,
    pub field: String,
    pub sites: Vec<SiteCapacity>,
}

/// A field's capacity per site: servers, CPU, RAM, allocated to departments, free, deficit.
pub async fn field_capacity(ctx: &Context, caller: &Caller, id: Uuid) -> AppResult<FieldCapacity> {
    caller.authorize(Action::ReadCapacity)?;
    if !caller.scope.may_read(Owner::field(id)) {
        return Err(AppError::not_found("field"));
    }
    let mut conn = ctx.pool.acquire().await?;
    let field = org::get_unit(&mut conn, UnitKind::Field, id)
        .await
        .map_err(|e| AppError::from_store("field", e))?;
    let overcommit = ctx.config.capacity.overcommit();
    let sites = store_capacity::field_report(&mut conn, id)
        .await?
        .into_iter()
        .map(|row| {
            let hardware = Resources::new(row.active_cpu, row.active_ram_gb);
            let capacity = capacity(hardware, overcommit);
            let allocated = Resources::new(row.allocated_cpu, row.allocated_ram_gb);
            SiteCapacity {
                site_id: row.site_id,
                site: row.site,
                servers: row.active_servers,
                hardware,
                capacity,
                allocated,
                free: (capacity - allocated).positive_part(),
                deficit: (allocated - capacity).positive_part(),
                missing_servers: row.missing_servers,
                missing: Resources::new(row.missing_cpu, row.missing_ram_gb),
                reserved: Resources::new(row.reserved_cpu, row.reserved_ram_gb),
                in_use: InUse::of(row.in_use_cpu, row.in_use_ram_gb),
            }
        })
        .collect();
    Ok(FieldCapacity { field_id: field.id, field: field.name, sites })
}

/// A department whose quota would no longer be fully backed by the field's servers.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct DepartmentShort {
    pub department_id: Uuid,
    pub department: String,
    pub quota: Resources,
    /// Its share of what is left: each quota is backed in proportion (capacity / quotas).
    pub backed: Resources,
    /// `quota - backed`: its share of the shortfall.
    pub short: Resources,
    /// Its share of the shortfall before the loss (a site already in deficit).
    pub short_now: Resources,
    /// Reserved by its projects at the site.
    pub used_by_projects: Resources,
    /// Reservations of running projects no longer backed: `used_by_projects - backed`.
    pub projects_unbacked: Resources,
}

/// One site of a field, after losing some of its servers.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct SiteImpact {
    pub site_id: Uuid,
    pub site: String,
    /// The field's active servers there that would go, and their CPU and RAM.
    pub servers_lost: i64,
    pub hardware_lost: Resources,
    pub capacity_now: Resources,
    pub capacity_after: Resources,
    /// Sum of the department quotas.
    pub allocated: Resources,
    pub deficit_now: Resources,
    pub deficit_after: Resources,
    /// The departments the loss would put into deficit, or deeper into it, and by how much.
    pub departments: Vec<DepartmentShort>,
}

/// What losing servers would do to a field: per site they are at.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct CapacityImpact {
    pub field_id: Uuid,
    pub field: String,
    pub servers: Vec<Uuid>,
    pub sites: Vec<SiteImpact>,
}

/// Which departments would fall into deficit, and by how much, if `server_ids` (servers of the
/// field) were gone: unassigned, retired, or lost from the inventory. Changes nothing.
pub async fn capacity_impact(
    ctx: &Context,
    caller: &Caller,
    field_id: Uuid,
    server_ids: Vec<Uuid>,
) -> AppResult<CapacityImpact> {
    caller.authorize(Action::ReadCapacity)?;
    if !caller.scope.may_read(Owner::field(field_id)) {
        return Err(AppError::not_found("field"));
    }
    if server_ids.is_empty() {
        return Err(AppError::invalid("missing_value", "name at least one server (?server=<id>)")
            .with_details(json!({ "field": "server" })));
    }
    if server_ids.len() > crate::app::MAX_LIMIT as usize {
        return Err(AppError::invalid(
            "invalid_value",
            format!("at most {} servers at once", crate::app::MAX_LIMIT),
        )
        .with_details(json!({ "field": "server" })));
    }
    let mut conn = ctx.pool.acquire().await?;
    let field = org::get_unit(&mut conn, UnitKind::Field, field_id)
        .await
        .map_err(|e| AppError::from_store("field", e))?;
    // Per site: the servers named, and the hardware of those still counted (active ones).
    let mut lost: std::collections::BTreeMap<Uuid, (String, i64, Resources)> = Default::default();
    let mut named = server_ids.clone();
    named.sort();
    named.dedup();
    let found = servers::get_many(&mut conn, &named).await?;
    // Unknown, or another field's: the same answer, so nothing leaks about other fields.
    if let Some(id) = named.iter().find(|id| {
        !found.iter().any(|server| server.id == **id && server.field_id == Some(field_id))
    }) {
        return Err(AppError::invalid(
            "invalid_value",
            format!("server {id} is not a server of field {}", field.name),
        )
        .with_details(json!({ "field": "server", "server": id })));
    }
    for server in &found {
        let entry = lost.entry(server.site_id).or_insert((server.site.clone(), 0, Resources::ZERO));
        if server.status == "active" {
            entry.1 += 1;
            entry.2 = entry.2 + counted(server);
        }
    }
    let mut sites = Vec::with_capacity(lost.len());
    for (site_id, (site, count, hardware)) in lost {
        let mut impact =
            site_impact(&mut conn, &ctx.config, field_id, site_id, site, hardware, true).await?;
        impact.servers_lost = count;
        sites.push(impact);
    }
    Ok(CapacityImpact { field_id, field: field.name, servers: named, sites })
}

/// The field's capacity at the site with `hardware_lost` gone, and who would be short: with
/// `worse_only`, the departments the loss makes (more) short; otherwise every one short.
#[allow(clippy::too_many_arguments)]
async fn site_impact(
    conn: &mut PgConnection,
    config: &Config,
    field_id: Uuid,
    site_id: Uuid,
    site: String,
    hardware_lost: Resources,
    worse_only: bool,
) -> Result<SiteImpact, StoreError> {
    let overcommit = config.capacity.overcommit();
    let hardware = store_capacity::field_servers(conn, field_id, site_id).await?;
    let capacity_now = capacity(hardware, overcommit);
    let capacity_after = capacity((hardware - hardware_lost).positive_part(), overcommit);
    let rows = store_capacity::quotas_with_usage(conn, field_id, site_id).await?;
    let quotas: Vec<Resources> =
        rows.iter().map(|r| Resources::new(r.cpu_limit, r.ram_gb_limit)).collect();
    let allocated: Resources = quotas.iter().copied().sum();
    let backed_now = backed_quotas(capacity_now, &quotas);
    let departments = rows
        .into_iter()
        .zip(backed_quotas(capacity_after, &quotas))
        .zip(backed_now)
        .map(|((row, backed), backed_now)| {
            let quota = Resources::new(row.cpu_limit, row.ram_gb_limit);
            let used_by_projects = Resources::new(row.used_cpu, row.used_ram_gb);
            DepartmentShort {
                department_id: row.department_id,
                department: row.department,
                quota,
                backed,
                short: (quota - backed).positive_part(),
                short_now: (quota - backed_now).positive_part(),
                used_by_projects,
                projects_unbacked: (used_by_projects - backed).positive_part(),
            }
        })
        .filter(|d| d.short != Resources::ZERO && (!worse_only || d.short != d.short_now))
        .collect();
    Ok(SiteImpact {
        site_id,
        site,
        servers_lost: 0,
        hardware_lost,
        capacity_now,
        capacity_after,
        allocated,
        deficit_now: (allocated - capacity_now).positive_part(),
        deficit_after: (allocated - capacity_after).positive_part(),
        departments,
    })
}

/// The (field, site) pairs among `touched` whose quotas are now above their capacity, with
/// every department short there: what a sync that marked servers missing records (a site
/// already in deficit before it is listed too).
pub async fn deficits(
    conn: &mut PgConnection,
    config: &Config,
    touched: &[(Uuid, Uuid)],
) -> Result<Vec<FieldDeficit>, StoreError> {
    let mut pairs = touched.to_vec();
    pairs.sort();
    pairs.dedup();
    let mut found = Vec::new();
    for (field_id, site_id) in pairs {
        let site = org::get_unit(conn, UnitKind::Site, site_id).await?.name;
        let impact =
            site_impact(conn, config, field_id, site_id, site, Resources::ZERO, false).await?;
        if impact.deficit_now != Resources::ZERO {
            found.push(FieldDeficit {
                field_id,
                field: org::get_unit(conn, UnitKind::Field, field_id).await?.name,
                site_id,
                site: impact.site,
                capacity: impact.capacity_now,
                allocated: impact.allocated,
                deficit: impact.deficit_now,
                departments: impact.departments,
            });
        }
    }
    Ok(found)
}

/// A field whose department quotas at a site exceed its capacity there.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct FieldDeficit {
    pub field_id: Uuid,
    pub field: String,
    pub site_id: Uuid,
    pub site: String,
    pub capacity: Resources,
    pub allocated: Resources,
    pub deficit: Resources,
    pub departments: Vec<DepartmentShort>,
}

/// One site of a department's quota.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SiteQuota {
    pub site_id: Uuid,
    pub site: String,
    pub quota: Resources,
    /// Reserved by the department's projects.
    pub used: Resources,
    pub free: Resources,
    /// What those projects actually use, as read from Prometheus (absent: never read).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub in_use: Option<InUse>,
}

/// What projects actually use (their ResourceQuotas' `used` requests, read from Prometheus).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, utoipa::ToSchema)]
pub struct InUse {
    pub cpu: f64,
    pub ram_gb: f64,
}

impl InUse {
    fn of(cpu: Option<f64>, ram_gb: Option<f64>) -> Option<Self> {
        match (cpu, ram_gb) {
            (None, None) => None,
            (cpu, ram_gb) => Some(Self { cpu: cpu.unwrap_or(0.0), ram_gb: ram_gb.unwrap_or(0.0) }),
        }
    }
}

/// A department's quota per site.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DepartmentQuotas {
    pub department_id: Uuid,
    pub department: String,
    pub field_id: Uuid,
    pub sites: Vec<SiteQuota>,
}

/// A department's quota per site: quota, used by projects, free.
pub async fn department_quota(
    ctx: &Context,
    caller: &Caller,
    id: Uuid,
) -> AppResult<DepartmentQuotas> {
    let mut conn = ctx.pool.acquire().await?;
    let dept = org::get_department(&mut conn, id)
        .await
        .map_err(|e| AppError::from_store("department", e))?;
    if !caller.scope.may_read(Owner::department(dept.field_id, dept.id)) {
        return Err(AppError::not_found("department"));
    }
    let sites = store_capacity::department_report(&mut conn, id).await?;
    Ok(DepartmentQuotas {
        department_id: dept.id,
        department: dept.name,
        field_id: dept.field_id,
        sites: sites.into_iter().map(site_quota).collect(),
    })
}

fn site_quota(row: store_capacity::DepartmentSiteRow) -> SiteQuota {
    let quota = Resources::new(row.cpu_limit, row.ram_gb_limit);
    let used = Resources::new(row.used_cpu, row.used_ram_gb);
    SiteQuota {
        site_id: row.site_id,
        site: row.site,
        quota,
        used,
        free: (quota - used).positive_part(),
        in_use: InUse::of(row.in_use_cpu, row.in_use_ram_gb),
    }
}

/// Every department of a field with its quota per site: what a field admin's quota editor
/// shows (center admins, or that field's admin). The departments, a page of them at a time,
/// then every quota and reservation of the field in one statement, whatever its size.
pub async fn field_quotas(
    ctx: &Context,
    caller: &Caller,
    field_id: Uuid,
) -> AppResult<Vec<DepartmentQuotas>> {
    caller.authorize(Action::SetQuota)?;
    if !caller.scope.may_read(Owner::field(field_id)) {
        return Err(AppError::not_found("field"));
    }
    let mut conn = ctx.pool.acquire().await?;
    let mut departments = Vec::new();
    let mut page = crate::store::PageRequest { after: None, limit: super::MAX_LIMIT };
    loop {
        let batch = org::list_departments(&mut conn, Some(field_id), page).await?;
        departments.extend(batch.items);
        match batch.next_cursor {
            Some(cursor) => page.after = Some(cursor),
            None => break,
        }
    }
    let mut sites: HashMap<Uuid, Vec<SiteQuota>> = HashMap::new();
    for row in store_capacity::field_department_report(&mut conn, field_id).await? {
        sites.entry(row.department_id).or_default().push(site_quota(row.row));
    }
    let mut boards: Vec<DepartmentQuotas> = departments
        .into_iter()
        .map(|dept| DepartmentQuotas {
            sites: sites.remove(&dept.id).unwrap_or_default(),
            department_id: dept.id,
            department: dept.name,
            field_id: dept.field_id,
        })
        .collect();
    boards.sort_by(|a, b| a.department.cmp(&b.department));
    Ok(boards)
}
