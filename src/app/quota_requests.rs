//! Quota requests: a team lead asks for more of its department's quota at a site, with a
//! reason; the field admin of its field (or a center admin) sees it beside the field's free
//! capacity there and approves it, which raises the quota by the amount asked through an
//! `allocate_quota` job with the same checks as any quota change, or rejects it with a reason.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::PgConnection;
use uuid::Uuid;

use super::allocation::QuotaCheck;
use super::jobs::{JobMeta, enqueue};
use super::{AppError, AppResult, Caller, PageParams, Submitted};
use crate::context::Context;
use crate::domain::ValidationError;
use crate::domain::capacity::{Resources, check_quota};
use crate::domain::catalog::MAX_SIZE;
use crate::domain::notification::{EventKind, Notification};
use crate::domain::scope::{Action, Owner};
use crate::jobs::raise_quota::{Raise, RaiseQuota};
use crate::store::audit::Actor;
use crate::store::audit::{self, Change};
use crate::store::capacity::{self as store_capacity, QuotaKey};
use crate::store::org::{self, UnitKind};
use crate::store::quota_requests::{self as store, NewQuotaRequest, QuotaRequest};
use crate::store::{Page, StoreError};

/// A team lead's request for more quota at a site.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AskQuota {
    /// Site name.
    pub site: String,
    /// How much more CPU (added to the quota the department has when approved).
    pub cpu: u32,
    /// How much more RAM, in GB.
    pub ram_gb: u32,
    /// Why: shown to the field admin (1 to 500 characters).
    pub reason: String,
}

/// What approving a pending request would do, as the field admin sees it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct QuotaFit {
    /// The department's quota at the site now, and after the increase.
    pub quota_now: Resources,
    pub quota_after: Resources,
    /// What the field can still give this department there (capacity minus the other
    /// departments' quotas).
    pub field_free: Resources,
    pub used_by_projects: Resources,
    /// Whether the quota after the increase fits the field's capacity now.
    pub fits: bool,
}

/// A quota request, with, while it is pending, what approving it would do.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct QuotaRequestView {
    #[serde(flatten)]
    pub request: QuotaRequest,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fit: Option<QuotaFit>,
}

/// Filters of the request list.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct QuotaRequestQuery {
    /// `pending`, `approved`, `applied`, `failed` or `rejected`.
    pub status: Option<String>,
    /// Newest first instead of oldest first.
    pub newest_first: Option<bool>,
}

/// Why a request is rejected.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RejectQuotaRequest {
    /// Shown to the team lead (1 to 500 characters).
    pub reason: String,
}

fn owner(request: &QuotaRequest) -> Owner {
    Owner::department(request.field_id, request.department_id)
}

/// Asks for more quota for the caller's department at a site (team leads). One request per
/// department and site is open at a time.
pub async fn ask(ctx: &Context, caller: &Caller, input: AskQuota) -> AppResult<QuotaRequestView> {
    caller.authorize(Action::RequestQuota)?;
    let department_id = caller.scope.department_id().ok_or_else(|| {
        AppError::forbidden("quota requests are made by team leads, for their own department")
    })?;
    if input.cpu == 0 && input.ram_gb == 0 {
        return Err(ValidationError::new("cpu", "ask for more CPU or RAM (or both)").into());
    }
    for (field, value) in [("cpu", input.cpu), ("ram_gb", input.ram_gb)] {
        if value > MAX_SIZE {
            let message = format!("must be at most {MAX_SIZE}");
            return Err(ValidationError::new(field, message).into());
        }
    }
    let reason = super::reason_text(&input.reason)?;
    let mut tx = ctx.pool.begin().await?;
    let site = org::find_unit_by_name(&mut tx, UnitKind::Site, &input.site)
        .await?
        .ok_or_else(|| AppError::unknown_site(&input.site))?;
    let new = NewQuotaRequest {
        department_id,
        site_id: site.id,
        cpu: input.cpu as i32,
        ram_gb: input.ram_gb as i32,
        reason: &reason,
        requested_by: caller.id,
        requested_by_name: &caller.username,
    };
    let id = store::insert(&mut tx, &new).await.map_err(|e| match e {
        StoreError::Duplicate { .. } => AppError::conflict(
            "already_pending",
            format!(
                "your department already has an open quota request at {}: wait for its decision",
                site.name
            ),
        ),
        other => other.into(),
    })?;
    let request = store::get(&mut tx, id).await?;
    audit::record(&mut tx, &caller.actor(), Change::create("quota_request", id, &request)).await?;
    let text = format!(
        "{} asks for {} more CPU and {} GB more RAM of quota at {}: {}",
        request.department, request.cpu, request.ram_gb, request.site, request.reason
    );
    let note = Notification::new(EventKind::QuotaRequestCreated, text, json!(request));
    super::webhooks::emit(&mut tx, ctx, note).await?;
    let view = with_fit(&mut tx, ctx, caller, request).await?;
    super::commit(tx).await?;
    Ok(view)
}

/// Whether the caller decides the request, and so sees what approving it would do (the
/// field's free capacity is not a team lead's to see).
fn decides(caller: &Caller, request: &QuotaRequest) -> bool {
    request.status == "pending" && caller.role.may(Action::SetQuota)
}

/// What approving the request would do, given its quota's numbers.
fn fit_of(check: &QuotaCheck, request: &QuotaRequest) -> QuotaFit {
    let quota_now = check.previous.unwrap_or(Resources::ZERO);
    let quota_after = quota_now + Resources::new(request.cpu.into(), request.ram_gb.into());
    let fits = check_quota(check.capacity, check.other_quotas, check.used_by_projects, quota_after)
        .is_ok();
    QuotaFit {
        quota_now,
        quota_after,
        field_free: check.free(),
        used_by_projects: check.used_by_projects,
        fits,
    }
}

/// The request, with what approving it would do while it is pending, for those who decide it.
async fn with_fit(
    conn: &mut PgConnection,
    ctx: &Context,
    caller: &Caller,
    request: QuotaRequest,
) -> AppResult<QuotaRequestView> {
    if !decides(caller, &request) {
        return Ok(QuotaRequestView { request, fit: None });
    }
    let (field, dept, site) = (request.field_id, request.department_id, request.site_id);
    let check = super::allocation::quota_check(conn, &ctx.config, field, dept, site).await?;
    Ok(QuotaRequestView { fit: Some(fit_of(&check, &request)), request })
}

/// [`with_fit`] of a page of requests, their quotas read in one round trip.
async fn with_fits(
    conn: &mut PgConnection,
    ctx: &Context,
    caller: &Caller,
    requests: Vec<QuotaRequest>,
) -> AppResult<Vec<QuotaRequestView>> {
    let keys: Vec<QuotaKey> = requests.iter().filter(|r| decides(caller, r)).map(key).collect();
    let checks = if keys.is_empty() {
        HashMap::new()
    } else {
        super::allocation::quota_checks(conn, &ctx.config, &keys).await?
    };
    let view = |request: QuotaRequest| {
        let check = checks.get(&key(&request)).filter(|_| decides(caller, &request));
        QuotaRequestView { fit: check.map(|check| fit_of(check, &request)), request }
    };
    Ok(requests.into_iter().map(view).collect())
}

fn key(request: &QuotaRequest) -> QuotaKey {
    QuotaKey {
        field_id: request.field_id,
        department_id: request.department_id,
        site_id: request.site_id,
    }
}

/// The requests the caller may see (a team lead: its department's; a field admin: its
/// field's), oldest first or, when asked, newest first; pending ones with what approving them
/// would do.
pub async fn list(
    ctx: &Context,
    caller: &Caller,
    query: QuotaRequestQuery,
    page: PageParams,
) -> AppResult<Page<QuotaRequestView>> {
    if let Some(status) = query.status.as_deref()
        && !["pending", "approved", "applied", "failed", "rejected"].contains(&status)
    {
        let message = "must be pending, approved, applied, failed or rejected";
        return Err(ValidationError::new("status", message).into());
    }
    let page = page.request()?;
    let mut conn = ctx.pool.acquire().await?;
    let newest_first = query.newest_first.unwrap_or(false);
    let found =
        store::list(&mut conn, caller.scope, query.status.as_deref(), newest_first, page).await?;
    let items = with_fits(&mut conn, ctx, caller, found.items).await?;
    Ok(Page { items, next_cursor: found.next_cursor })
}

pub async fn get(ctx: &Context, caller: &Caller, id: Uuid) -> AppResult<QuotaRequestView> {
    let mut conn = ctx.pool.acquire().await?;
    let request = visible(&mut conn, caller, id).await?;
    with_fit(&mut conn, ctx, caller, request).await
}

/// The request, if the caller may see it (404 otherwise).
async fn visible(conn: &mut PgConnection, caller: &Caller, id: Uuid) -> AppResult<QuotaRequest> {
    let request =
        store::get(conn, id).await.map_err(|e| AppError::from_store("quota request", e))?;
    if caller.scope.may_read(owner(&request)) {
        Ok(request)
    } else {
        Err(AppError::not_found("quota request"))
    }
}

/// Tells the webhooks how a request was decided.
async fn decided(conn: &mut PgConnection, ctx: &Context, request: &QuotaRequest) -> AppResult<()> {
    let by = request.decided_by_name.as_deref().unwrap_or("?");
    let text = match request.decision_reason.as_deref() {
        Some(why) => format!(
            "{by} rejected {}'s request for more quota at {}: {why}",
            request.department, request.site
        ),
        None => format!(
            "{by} approved {}'s request for {} more CPU and {} GB more RAM of quota at {}",
            request.department, request.cpu, request.ram_gb, request.site
        ),
    };
    let note = Notification::new(EventKind::QuotaRequestDecided, text, json!(request));
    super::webhooks::emit(conn, ctx, note).await
}

/// The start of a decision: role, scope (404 outside it), the row lock, and 409 unless the
/// request is still pending.
async fn begin_decision(
    ctx: &Context,
    caller: &Caller,
    id: Uuid,
) -> AppResult<(sqlx::Transaction<'static, sqlx::Postgres>, QuotaRequest)> {
    caller.authorize(Action::SetQuota)?;
    let mut tx = ctx.pool.begin().await?;
    visible(&mut tx, caller, id).await?;
    let request = store::lock(&mut tx, id).await?;
    if request.status != "pending" {
        return Err(AppError::conflict(
            "not_pending",
            format!("the request was {} already", request.status),
        ));
    }
    Ok((tx, request))
}

/// Approves a pending request (the field admin of its field, or a center admin): a
/// `raise_quota` job adds the amount asked to its department's quota at the site as it is when
/// the job runs, under the lock. Checked now too (409 `over_quota`, the request staying
/// pending); the request ends `applied`, or `failed` if by then it no longer fits.
pub async fn approve(
    ctx: &Context,
    caller: &Caller,
    id: Uuid,
) -> AppResult<(QuotaRequestView, Submitted)> {
    let (mut tx, before) = begin_decision(ctx, caller, id).await?;
    let increase = Resources::new(before.cpu.into(), before.ram_gb.into());
    super::allocation::raise_quota(
        &mut tx,
        &ctx.config,
        before.field_id,
        before.department_id,
        before.site_id,
        increase,
    )
    .await?;
    let raise = Raise {
        request_id: id,
        field_id: before.field_id,
        department_id: before.department_id,
        site_id: before.site_id,
        cpu: increase.cpu,
        ram_gb: increase.ram_gb,
    };
    let meta = JobMeta::by(caller).about("quota_request", id, owner(&before));
    let enqueued = enqueue::<RaiseQuota>(&mut tx, ctx, &raise, meta).await?;
    store::approve(&mut tx, id, &caller.username, enqueued.job().id).await?;
    let after = store::get(&mut tx, id).await?;
    let audited = Change::new("quota_request", "approve", id).before(&before).after(&after);
    audit::record(&mut tx, &caller.actor(), audited).await?;
    decided(&mut tx, ctx, &after).await?;
    super::commit(tx).await?;
    Ok((QuotaRequestView { request: after, fit: None }, enqueued.into()))
}

/// Applies an approved request (the `raise_quota` job): under the (field, site) lock, the
/// department's quota becomes what it is plus the increase, if the field's capacity holds it
/// (409 `over_quota` otherwise, which fails the job for good). Running it again changes
/// nothing once the request is applied.
pub async fn apply(
    ctx: &Context,
    actor: &Actor,
    raise: &Raise,
    job: Uuid,
) -> AppResult<serde_json::Value> {
    let mut tx = ctx.pool.begin().await?;
    let request = match store::lock(&mut tx, raise.request_id).await {
        Ok(request) => request,
        Err(StoreError::NotFound) => {
            return Ok(json!({ "skipped": true, "reason": "the request is gone" }));
        }
        Err(other) => return Err(other.into()),
    };
    if request.status != "approved" {
        return Ok(
            json!({ "skipped": true, "reason": format!("the request is {}", request.status) }),
        );
    }
    store_capacity::lock_field_site(&mut tx, raise.field_id, raise.site_id).await?;
    // Changes of one quota apply in the order they were asked (as `allocate_quota`'s do): a
    // change asked after this approval and applied already leaves the quota as it set it.
    let key = format!("{}:{}", raise.department_id, raise.site_id);
    if !crate::store::jobs::claim_change(&mut tx, "allocate_quota", &key, job).await? {
        let why = "a quota change asked after the approval was applied first";
        store::settle(&mut tx, raise.request_id, Err(why)).await?;
        super::commit(tx).await?;
        return Ok(json!({ "skipped": true, "reason": why }));
    }
    let increase = Resources::new(raise.cpu, raise.ram_gb);
    let (change, before) = super::allocation::raise_quota(
        &mut tx,
        &ctx.config,
        raise.field_id,
        raise.department_id,
        raise.site_id,
        increase,
    )
    .await?;
    store_capacity::set_quota(&mut tx, raise.department_id, raise.site_id, change.requested())
        .await?;
    let subject = format!("{}:{}", raise.department_id, raise.site_id);
    let audited = Change::new("department_quota", "set", subject)
        .before(&before)
        .after(&json!({ "quota": change.requested(), "quota_request": raise.request_id }));
    audit::record(&mut tx, actor, audited).await?;
    let (cpu, ram_gb) = (change.cpu_limit as i32, change.ram_gb_limit as i32);
    store::settle(&mut tx, raise.request_id, Ok((cpu, ram_gb))).await?;
    super::commit(tx).await?;
    Ok(json!({ "quota_request": raise.request_id, "cpu_limit": cpu, "ram_gb_limit": ram_gb }))
}

/// Records that applying an approved request failed, with why (in the transaction that ends
/// its job).
pub async fn failed(conn: &mut PgConnection, id: Uuid, reason: &str) -> AppResult<()> {
    store::settle(conn, id, Err(reason)).await?;
    Ok(())
}

/// Rejects a pending request with a reason (the field admin of its field, or a center admin).
pub async fn reject(
    ctx: &Context,
    caller: &Caller,
    id: Uuid,
    input: RejectQuotaRequest,
) -> AppResult<QuotaRequestView> {
    caller.authorize(Action::SetQuota)?;
    let reason = super::reason_text(&input.reason)?;
    let (mut tx, before) = begin_decision(ctx, caller, id).await?;
    store::reject(&mut tx, id, &caller.username, &reason).await?;
    let after = store::get(&mut tx, id).await?;
    let audited = Change::new("quota_request", "reject", id).before(&before).after(&after);
    audit::record(&mut tx, &caller.actor(), audited).await?;
    decided(&mut tx, ctx, &after).await?;
    super::commit(tx).await?;
    Ok(QuotaRequestView { request: after, fit: None })
}
