//! Projects: a team lead's namespace with a quota reserved from the department's quota at a
//! site. People create, read, resize, delete and retry them; the provisioning jobs move them
//! on. Every move asks the state machine of [`crate::domain::lifecycle`], and every move that
//! starts work enqueues its job in the same transaction.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::json;
use sqlx::{PgConnection, Postgres, Transaction};
use uuid::Uuid;

use super::jobs::{JobMeta, enqueue};
use super::project_writes::NewProvisioned;
use super::{AppError, AppResult, Caller, PageParams, Submitted};
use crate::context::Context;
use crate::domain::ValidationError;
use crate::domain::capacity::{self as crates_capacity, Resources};
use crate::domain::catalog::{Catalog, CatalogEntry};
use crate::domain::lifecycle::{self, Event, Transition, Work};
use crate::domain::manifests::ProjectSpec;
use crate::domain::name::Label;
use crate::domain::notification::{EventKind, Notification};
use crate::domain::project::{ProjectStatus, namespace_for};
use crate::domain::scope::{Action, Owner, Scope};
use crate::jobs::deprovision_namespace::DeprovisionNamespace;
use crate::jobs::poll_argocd::{Expect, PollArgocd, PollPayload};
use crate::jobs::provision_namespace::{ProjectJob, ProvisionNamespace};
use crate::store::audit::{self, Actor, Change};
use crate::store::capacity as store_capacity;
use crate::store::jobs::{self as store_jobs, Enqueued};
use crate::store::org;
use crate::store::projects::{self, Due, NewProject, Project, ProjectFilter};
use crate::store::{Page, PageRequest, StoreError};

/// A project and the job that moves it on: none when it waits for a person (a request that
/// needs approval) or has ended (a withdrawn request).
#[derive(Debug, Clone)]
pub struct ProjectSubmitted {
    pub project: Project,
    pub submitted: Option<Submitted>,
}

/// The catalog: SLA type -> performance tier -> quota.
pub fn catalog<'a>(ctx: &'a Context, _caller: &Caller) -> &'a Catalog {
    &ctx.config.catalog
}

/// The grace period of a deletion, in words (`None`: deletions start at once).
pub fn deletion_grace(ctx: &Context) -> Option<String> {
    let secs = ctx.config.deletion.grace_secs;
    let words = match secs {
        0 => return None,
        s if s % 86_400 == 0 => plural(s / 86_400, "day"),
        s if s % 3600 == 0 => plural(s / 3600, "hour"),
        s if s % 60 == 0 => plural(s / 60, "minute"),
        s => plural(s, "second"),
    };
    Some(words)
}

fn plural(n: u64, unit: &str) -> String {
    if n == 1 { format!("1 {unit}") } else { format!("{n} {unit}s") }
}

/// Why a project of `sla_type`/`tier` would need approval, if it would.
pub fn approval_needed(ctx: &Context, sla_type: &str, tier: &str) -> Option<String> {
    let entry = ctx.config.catalog.entry(sla_type, tier).ok()?;
    entry.approval_reason(sla_type, tier, ctx.config.approval.cpu_above)
}

/// A new project, in the caller's department.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateProject {
    /// DNS-1123 label; the namespace is `{department}-{name}` by default.
    pub name: String,
    /// Site name.
    pub site: String,
    pub sla_type: String,
    pub performance_tier: String,
    /// Optional time to live (RFC 3339, in the future): then the project is deleted as its
    /// owner would delete it, after the grace period.
    #[serde(default)]
    pub expires_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// A new SLA type or tier; absent keys keep their value.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResizeProject {
    pub sla_type: Option<String>,
    pub performance_tier: Option<String>,
}

/// Filters of the project list.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ProjectQuery {
    pub site: Option<String>,
    pub status: Option<ProjectStatus>,
}

fn owner(project: &Project) -> Owner {
    Owner::department(project.field_id, project.department_id)
}

/// Whether the department's quota at the site holds its projects' use, minus `freed`, plus
/// `wanted`; 409 naming what is free otherwise. `was_in_use` is the part of `freed` the
/// projects held before this change (a resized project's old size; nothing for a new one).
/// Takes the (field, site) lock first, so racing reservations serialise. The use is what
/// committed transactions reserved: this transaction's own project changes count from its
/// commit (which the lock outlasts), so a new project, already written, frees nothing.
async fn reserve(
    conn: &mut PgConnection,
    field_id: Uuid,
    department_id: Uuid,
    site_id: Uuid,
    freed: Resources,
    wanted: Resources,
    was_in_use: Resources,
) -> AppResult<Reserved> {
    // The lock, then the numbers as its last holder committed them, in one round trip.
    let (quota, used) =
        store_capacity::lock_quota_and_usage(conn, field_id, department_id, site_id).await?;
    let quota = quota.unwrap_or(Resources::ZERO);
    let used = used - freed;
    let free = (quota - used).positive_part();
    if crates_capacity::reservation_fits(quota, used, wanted) {
        return Ok(Reserved { quota, before: used + was_in_use, after: used + wanted });
    }
    Err(AppError::conflict(
        "over_quota",
        format!(
            "the department's quota at this site has {} CPU and {} GB RAM free; {} CPU and {} GB RAM do not fit",
            free.cpu, free.ram_gb, wanted.cpu, wanted.ram_gb
        ),
    )
    .with_details(json!({ "free": free, "quota": quota, "used": used, "requested": wanted })))
}

/// A reservation made: the department's quota at the site, and its projects' use before and
/// after.
struct Reserved {
    quota: Resources,
    before: Resources,
    after: Resources,
}

impl Reserved {
    /// Tells the webhooks when the department's use passes 90 % of its quota at the site.
    async fn warn_if_nearly_full(
        &self,
        conn: &mut PgConnection,
        ctx: &Context,
        project: &Project,
    ) -> AppResult<()> {
        if !crates_capacity::crosses_90_percent(self.quota, self.before, self.after) {
            return Ok(());
        }
        let note = Notification::new(
            EventKind::QuotaAbove90,
            format!(
                "department {} now uses {} of {} CPU and {} of {} GB RAM of its quota at {} (with project {})",
                project.department,
                self.after.cpu,
                self.quota.cpu,
                self.after.ram_gb,
                self.quota.ram_gb,
                project.site,
                project.name
            ),
            json!({ "department_id": project.department_id, "department": project.department,
                    "field_id": project.field_id, "field": project.field,
                    "site_id": project.site_id, "site": project.site,
                    "quota": self.quota, "used": self.after, "project_id": project.id }),
        );
        super::webhooks::emit(conn, ctx, note).await
    }
}

/// What webhooks are told about `project`.
fn project_data(project: &Project) -> serde_json::Value {
    json!({ "project_id": project.id, "name": project.name, "namespace": project.namespace,
            "status": project.status, "department": project.department,
            "department_id": project.department_id, "field": project.field,
            "field_id": project.field_id, "site": project.site, "sla_type": project.sla_type,
            "performance_tier": project.performance_tier, "cpu": project.cpu,
            "ram_gb": project.ram_gb, "reason": project.failure_reason,
            "approval_reason": project.approval_reason,
            "approval_expires_at": project.approval_expires_at, "delete_at": project.delete_at,
            "expires_at": project.expires_at })
}

/// The notification of a project's move by `event` (`None`: its creation) to the status it
/// is in, if webhooks hear of such moves.
fn project_news(event: Option<Event>, project: &Project) -> Option<Notification> {
    let name = format!("{} ({} at {})", project.name, project.department, project.site);
    let (kind, text) = match (event, project.status) {
        (_, ProjectStatus::PendingApproval) => (
            EventKind::ApprovalRequested,
            format!(
                "project {name} waits for approval: {}, {} CPU, {} GB RAM; {}",
                format_args!("{}/{}", project.sla_type, project.performance_tier),
                project.cpu,
                project.ram_gb,
                project.approval_reason.as_deref().unwrap_or("it needs approval")
            ),
        ),
        (Some(Event::Approve), _) => {
            (EventKind::ApprovalDecided, format!("project {name} was approved"))
        }
        (Some(Event::Reject | Event::ApprovalExpired), _) => (
            EventKind::ApprovalDecided,
            format!(
                "project {name} was not approved: {}",
                project.failure_reason.as_deref().unwrap_or("rejected")
            ),
        ),
        (_, ProjectStatus::Failed) => (
            EventKind::ProjectFailed,
            format!(
                "project {name} failed: {}",
                project.failure_reason.as_deref().unwrap_or("no reason given")
            ),
        ),
        (_, ProjectStatus::DeletionScheduled) => (
            EventKind::DeletionScheduled,
            format!(
                "project {name} will be deleted at {}; restore it before then to keep it",
                project.delete_at.map(|at| at.to_rfc3339()).unwrap_or_default()
            ),
        ),
        _ => return None,
    };
    Some(Notification::new(kind, text, project_data(project)))
}

/// Tells the webhooks about the project's move, if they hear of such moves.
async fn announce(
    conn: &mut PgConnection,
    ctx: &Context,
    event: impl Into<Option<Event>>,
    project: &Project,
) -> AppResult<()> {
    let event = event.into();
    match project_news(event, project) {
        Some(note) => super::webhooks::emit(conn, ctx, note).await,
        None => Ok(()),
    }
}

/// Enqueues the job of `work` for the project's current generation and makes it the project's
/// latest job.
async fn start_work(
    conn: &mut PgConnection,
    ctx: &Context,
    project: &Project,
    work: Work,
    meta: JobMeta,
    requested_by: &str,
) -> AppResult<Enqueued> {
    let of = (project.id, project.generation, owner(project));
    let enqueued = enqueue_work(conn, ctx, of, work, meta, requested_by).await?;
    projects::set_job(conn, project.id, enqueued.job().id).await?;
    Ok(enqueued)
}

/// Enqueues the job of `work` for generation `generation` of project `id`, owned by `owner`
/// (a project not written yet, in the same transaction, may be its subject).
async fn enqueue_work(
    conn: &mut PgConnection,
    ctx: &Context,
    (id, generation, owner): (Uuid, i64, Owner),
    work: Work,
    meta: JobMeta,
    requested_by: &str,
) -> AppResult<Enqueued> {
    let (payload, meta) = project_job((id, generation, owner), meta, requested_by);
    Ok(match work {
        Work::Provision => enqueue::<ProvisionNamespace>(conn, ctx, &payload, meta).await?,
        Work::Deprovision => enqueue::<DeprovisionNamespace>(conn, ctx, &payload, meta).await?,
    })
}

/// The payload and metadata of the job for generation `generation` of project `id`, owned by
/// `owner`, asked for by `requested_by`.
fn project_job(
    (id, generation, owner): (Uuid, i64, Owner),
    meta: JobMeta,
    requested_by: &str,
) -> (ProjectJob, JobMeta) {
    let payload = ProjectJob {
        project_id: id,
        requested_by: requested_by.to_owned(),
        generation: Some(generation),
    };
    (payload, meta.about("project", id, owner))
}

/// Creates a project in the caller's department (team leads): reserves the catalog's quota
/// and starts provisioning.
pub async fn create(
    ctx: &Context,
    caller: &Caller,
    input: CreateProject,
) -> AppResult<ProjectSubmitted> {
    caller.authorize(Action::CreateProject)?;
    let department_id = caller.scope.department_id().ok_or_else(|| {
        AppError::forbidden("projects are created by team leads, in their own department")
    })?;
    let name = Label::parse("name", &input.name)?;
    let entry = ctx.config.catalog.entry(&input.sla_type, &input.performance_tier)?;
    if let Some(at) = input.expires_at
        && at <= chrono::Utc::now()
    {
        return Err(ValidationError::new("expires_at", "must be in the future").into());
    }
    let approval = entry.approval_reason(
        &input.sla_type,
        &input.performance_tier,
        ctx.config.approval.cpu_above,
    );
    let request = Submission { caller, department_id, name: &name, entry, approval, input: &input };
    // Most requests fit well within the quota: the database checks them as it commits, so
    // requests for the same field and site wait for each other only through the commit, and
    // those that need no approval are written together with those arriving meanwhile. The
    // few it refuses (over quota, or past 90 % of it: a warning to write) run again with the
    // check before the commit, which answers them with the numbers. A request under an
    // Idempotency-Key commits with its answer, so it checks before the commit.
    if !super::idempotency::under_key() {
        if request.approval.is_none()
            && let Some(done) = write_together(ctx, &request).await?
        {
            return Ok(done);
        }
        if let Some(done) = submit(ctx, &request, Check::AtCommit).await? {
            return Ok(done);
        }
    }
    submit(ctx, &request, Check::BeforeCommit).await?.ok_or_else(|| {
        AppError::internal("a reservation checked before its commit was refused at it")
    })
}

/// Writes the project of `request`, which needs no approval, with those of the requests
/// arriving meanwhile ([`super::project_writes`]); `None` when it was not written there (it
/// is then written alone, which says why it cannot be).
async fn write_together(
    ctx: &Context,
    request: &Submission<'_>,
) -> AppResult<Option<ProjectSubmitted>> {
    let Submission { caller, department_id, name, entry, input, .. } = *request;
    let id = Uuid::now_v7();
    // The job's scope gets the department's field once it is read.
    let of = (id, projects::FIRST_GENERATION, Owner::default());
    let (payload, meta) = project_job(of, JobMeta::by(caller), &caller.username);
    let new = NewProvisioned {
        id,
        department_id,
        site: input.site.clone(),
        name: name.as_str().to_owned(),
        sla_type: input.sla_type.clone(),
        performance_tier: input.performance_tier.clone(),
        cpu: entry.cpu as i32,
        ram_gb: entry.ram_gb as i32,
        extra_quota: json!(entry.extra),
        expires_at: input.expires_at,
        created_by: caller.id,
        job: super::jobs::prepare::<ProvisionNamespace>(ctx, &payload, meta)?,
        actor: caller.actor(),
    };
    let written = ctx.project_writes.create(new).await?;
    Ok(written.map(|(project, job)| ProjectSubmitted {
        project,
        submitted: Some(Submitted { job, existing: false }),
    }))
}

/// A valid request for a new project.
struct Submission<'a> {
    caller: &'a Caller,
    department_id: Uuid,
    name: &'a Label,
    entry: &'a CatalogEntry,
    /// Why it needs approval, if it does.
    approval: Option<String>,
    input: &'a CreateProject,
}

/// Where a new project's reservation is checked: in the transaction, under the (field, site)
/// lock it takes and holds to its end ([`reserve`]), or by the database as the transaction
/// commits (migration 24), the lock held only through the commit.
#[derive(Clone, Copy, PartialEq)]
enum Check {
    BeforeCommit,
    AtCommit,
}

/// Writes the project and its jobs; `None` when the check at the commit refused it (over
/// quota, or a warning to write): nothing was written, and the check before the commit will
/// say why, or warn.
async fn submit(
    ctx: &Context,
    request: &Submission<'_>,
    check: Check,
) -> AppResult<Option<ProjectSubmitted>> {
    let Submission { caller, department_id, name, entry, ref approval, input } = *request;
    let mut tx = ctx.pool.begin().await?;
    let (dept, site) = org::department_and_site(&mut tx, department_id, &input.site).await?;
    let dept = dept.ok_or(StoreError::NotFound)?;
    let namespace =
        namespace_for(&ctx.config.delivery.namespace_template, &dept.name, name.as_str())?;
    let site = site.ok_or_else(|| AppError::unknown_site(&input.site))?;
    let wanted = entry.resources();
    let extra = json!(entry.extra);
    let status = lifecycle::initial(approval.is_some());
    let expires = ctx.config.approval.expire_after_secs as i64;
    // A request that needs approval starts nothing: a field admin's approval does. Otherwise
    // the job comes first, so the project is written with it as its latest job.
    let id = Uuid::now_v7();
    let enqueued = match approval {
        None => {
            let of = (id, projects::FIRST_GENERATION, Owner::department(dept.field_id, dept.id));
            let (meta, by) = (JobMeta::by(caller), &caller.username);
            Some(enqueue_work(&mut tx, ctx, of, Work::Provision, meta, by).await?)
        }
        Some(_) => None,
    };
    let new = NewProject {
        id,
        last_job_id: enqueued.as_ref().map(|e| e.job().id),
        name: name.as_str(),
        namespace: namespace.as_str(),
        department_id: dept.id,
        site_id: site.id,
        status,
        sla_type: &input.sla_type,
        performance_tier: &input.performance_tier,
        cpu: entry.cpu as i32,
        ram_gb: entry.ram_gb as i32,
        extra_quota: &extra,
        created_by: caller.id,
        approval_expires_after_secs: approval.as_ref().map(|_| expires),
        approval_reason: approval.as_deref(),
        expires_at: input.expires_at,
        reservation_checked_at_commit: check == Check::AtCommit,
    };
    let project = projects::insert(&mut tx, &new).await.map_err(|e| match e {
        StoreError::Duplicate { .. } => AppError::conflict(
            "already_exists",
            format!(
                "a project named {name} (namespace {namespace}) already exists at {}",
                site.name
            ),
        ),
        other => other.into(),
    })?;
    audit::record(&mut tx, &caller.actor(), Change::create("project", id, &project)).await?;
    announce(&mut tx, ctx, None, &project).await?;
    let done = ProjectSubmitted { project, submitted: enqueued.map(Into::into) };
    if check == Check::AtCommit {
        // Refused, all of it rolls back: the jobs (the project's, its webhooks') and, but
        // for a wake-up of the dispatchers for nothing, their wake-ups.
        return Ok(super::commit_unless_reservation_refused(tx).await?.then_some(done));
    }
    // The reservation comes last: concurrent requests for the (field, site) wait for each
    // other only from the lock to the commit (the check, and a warning only when the use
    // crosses 90 %), not through the writes above. The use it checks is what committed
    // transactions reserved, without this project (counted at the commit); over quota, all
    // of it rolls back, the jobs (the project's, its webhooks') and their wake-ups with it.
    // So a request both over quota and named like an existing project is refused as
    // `already_exists`, the first thing found wrong.
    let none = Resources::ZERO;
    let reserved = reserve(&mut tx, dept.field_id, dept.id, site.id, none, wanted, none).await?;
    reserved.warn_if_nearly_full(&mut tx, ctx, &done.project).await?;
    super::commit(tx).await?;
    Ok(Some(done))
}

/// The projects the caller may see (deleted ones only when asked for by status).
pub async fn list(
    ctx: &Context,
    caller: &Caller,
    query: ProjectQuery,
    page: PageParams,
) -> AppResult<Page<Project>> {
    let page = page.request()?;
    let filter = ProjectFilter { site: query.site, status: query.status, include_deleted: false };
    let mut conn = ctx.pool.acquire().await?;
    Ok(projects::list(&mut conn, caller.scope, &filter, page).await?)
}

/// The project, if the caller may see it (404 otherwise).
async fn visible(conn: &mut PgConnection, caller: &Caller, id: Uuid) -> AppResult<Project> {
    let project = projects::get(conn, id).await.map_err(|e| AppError::from_store("project", e))?;
    if caller.scope.may_read(owner(&project)) {
        Ok(project)
    } else {
        Err(AppError::not_found("project"))
    }
}

pub async fn get(ctx: &Context, caller: &Caller, id: Uuid) -> AppResult<Project> {
    let mut conn = ctx.pool.acquire().await?;
    visible(&mut conn, caller, id).await
}

/// Changes SLA type or tier: the quota difference is checked and reserved, then the project
/// is provisioned again.
pub async fn resize(
    ctx: &Context,
    caller: &Caller,
    id: Uuid,
    input: ResizeProject,
) -> AppResult<ProjectSubmitted> {
    let (mut tx, before, _, step) =
        begin_change(ctx, caller, id, |_| Event::Resize, Action::ChangeProject).await?;
    let sla = input.sla_type.unwrap_or_else(|| before.sla_type.clone());
    let tier = input.performance_tier.unwrap_or_else(|| before.performance_tier.clone());
    let entry = ctx.config.catalog.entry(&sla, &tier)?;
    let changes_entry = (sla.as_str(), tier.as_str())
        != (before.sla_type.as_str(), before.performance_tier.as_str());
    // Resizing into what would need approval is no way around it: those who may approve
    // (center admins) resize at once, team leads ask for a new project.
    if changes_entry
        && !caller.role.may(Action::DecideProject)
        && let Some(why) = entry.approval_reason(&sla, &tier, ctx.config.approval.cpu_above)
    {
        return Err(AppError::conflict(
            "approval_required",
            format!(
                "{why}: ask for a new project, which a field admin approves, instead of resizing"
            ),
        )
        .with_details(json!({ "sla_type": sla, "performance_tier": tier })));
    }
    let old = Resources::new(before.cpu.into(), before.ram_gb.into());
    let reserved = reserve(
        &mut tx,
        before.field_id,
        before.department_id,
        before.site_id,
        old,
        entry.resources(),
        old,
    )
    .await?;
    reserved.warn_if_nearly_full(&mut tx, ctx, &before).await?;
    let (cpu, ram_gb, extra) = (entry.cpu as i32, entry.ram_gb as i32, json!(entry.extra));
    projects::resize(&mut tx, id, &sla, &tier, cpu, ram_gb, &extra, step.to).await?;
    if changes_entry {
        // New desired manifests: deliveries of the old ones must not write any more.
        projects::next_generation(&mut tx, id).await?;
    }
    finish_change(tx, ctx, caller, &before, Event::Resize, step).await
}

/// Deletes a project: after the grace period (`deletion.grace_secs`, during which it keeps
/// its namespace and quota and [`restore`] cancels it), its manifests are removed, and its
/// quota is freed once they are gone. Without a grace period, or for a deletion asked again
/// after one failed, the removal starts at once; a request still waiting for approval is
/// withdrawn at once.
pub async fn delete(ctx: &Context, caller: &Caller, id: Uuid) -> AppResult<ProjectSubmitted> {
    let grace = ctx.config.deletion.grace();
    let choose =
        |p: &Project| lifecycle::deletion(p.status, p.failed_from.as_deref(), grace.is_some());
    let (mut tx, before, event, step) =
        begin_change(ctx, caller, id, choose, Action::ChangeProject).await?;
    let after = grace.map(|grace| grace.num_seconds());
    projects::transition_at(&mut tx, id, &event.sources(), step.to, None, None, after).await?;
    projects::next_generation(&mut tx, id).await?;
    finish_change(tx, ctx, caller, &before, event, step).await
}

/// Cancels a scheduled deletion during its grace period: the project is provisioned again
/// (what is delivered is its desired state, whatever happened meanwhile). A time to live that
/// had run out is forgotten.
pub async fn restore(ctx: &Context, caller: &Caller, id: Uuid) -> AppResult<ProjectSubmitted> {
    let (mut tx, before, event, step) =
        begin_change(ctx, caller, id, |_| Event::Restore, Action::ChangeProject).await?;
    projects::transition(&mut tx, id, &event.sources(), step.to, None, None).await?;
    projects::clear_expired_ttl(&mut tx, id).await?;
    finish_change(tx, ctx, caller, &before, event, step).await
}

/// Runs a failed provisioning again.
pub async fn retry(ctx: &Context, caller: &Caller, id: Uuid) -> AppResult<ProjectSubmitted> {
    move_on(ctx, caller, id, Event::Retry, Action::ChangeProject, None).await
}

/// Approves a request that waits for approval (a field admin of its field, or a center
/// admin): provisioning starts. Its quota was reserved with the request, so approving never
/// overcommits the department.
pub async fn approve(ctx: &Context, caller: &Caller, id: Uuid) -> AppResult<ProjectSubmitted> {
    move_on(ctx, caller, id, Event::Approve, Action::DecideProject, None).await
}

/// Why a request was rejected.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RejectProject {
    /// Shown to the team lead as the project's `failure_reason`, and audited.
    pub reason: String,
}

/// Rejects a request that waits for approval, with a reason (a field admin of its field, or a
/// center admin): the project ends `rejected` and its reservation is freed.
pub async fn reject(
    ctx: &Context,
    caller: &Caller,
    id: Uuid,
    input: RejectProject,
) -> AppResult<ProjectSubmitted> {
    caller.authorize(Action::DecideProject)?;
    let reason = super::reason_text(&input.reason)?;
    let why = format!("rejected by {}: {reason}", caller.username);
    move_on(ctx, caller, id, Event::Reject, Action::DecideProject, Some(&why)).await
}

/// A person's change that only moves the project's status (with `reason` as its failure
/// reason), and starts its job if the move starts one.
async fn move_on(
    ctx: &Context,
    caller: &Caller,
    id: Uuid,
    event: Event,
    action: Action,
    reason: Option<&str>,
) -> AppResult<ProjectSubmitted> {
    let (mut tx, before, event, step) = begin_change(ctx, caller, id, |_| event, action).await?;
    projects::transition(&mut tx, id, &event.sources(), step.to, reason, None).await?;
    if event.supersedes_deliveries() {
        projects::next_generation(&mut tx, id).await?;
    }
    finish_change(tx, ctx, caller, &before, event, step).await
}

/// The start of a person's change to a project: role (for `action`), scope (404 outside it),
/// the row lock, and the state machine's verdict on the event `choose` picks for the locked
/// project (with what it means for this project).
async fn begin_change(
    ctx: &Context,
    caller: &Caller,
    id: Uuid,
    choose: impl FnOnce(&Project) -> Event,
    action: Action,
) -> AppResult<(Transaction<'static, Postgres>, Project, Event, Transition)> {
    caller.authorize(action)?;
    let mut tx = ctx.pool.begin().await?;
    visible(&mut tx, caller, id).await?;
    let before = projects::lock(&mut tx, id).await?;
    let event = choose(&before);
    let (event, step) = lifecycle::decide(before.status, before.failed_from.as_deref(), event)?;
    Ok((tx, before, event, step))
}

/// The end of a person's change: the job it starts (if any), the audit event, the commit.
async fn finish_change(
    mut tx: Transaction<'static, Postgres>,
    ctx: &Context,
    caller: &Caller,
    before: &Project,
    event: Event,
    step: Transition,
) -> AppResult<ProjectSubmitted> {
    let mut enqueued = None;
    if let Some(work) = step.starts {
        let project = projects::get(&mut tx, before.id).await?;
        let meta = JobMeta::by(caller);
        enqueued = Some(start_work(&mut tx, ctx, &project, work, meta, &caller.username).await?);
    }
    let after = projects::get(&mut tx, before.id).await?;
    let change = Change::new("project", event.verb(), before.id).before(before).after(&after);
    audit::record(&mut tx, &caller.actor(), change).await?;
    announce(&mut tx, ctx, event, &after).await?;
    super::commit(tx).await?;
    Ok(ProjectSubmitted { project: after, submitted: enqueued.map(Into::into) })
}

/// The project a job is about, if the job still has something to do: `Err` says why not (the
/// project moved on to a later job, or is in a status where `event` does not apply).
pub async fn current_for_job(
    ctx: &Context,
    job_id: Uuid,
    project_id: Uuid,
    event: Event,
) -> AppResult<Result<Project, String>> {
    let mut conn = ctx.pool.acquire().await?;
    let project = projects::get(&mut conn, project_id)
        .await
        .map_err(|e| AppError::from_store("project", e))?;
    if project.last_job_id != Some(job_id) {
        return Ok(Err("a later job superseded this one".to_owned()));
    }
    if let Err(refusal) = lifecycle::transition(project.status, event) {
        return Ok(Err(refusal.message));
    }
    Ok(Ok(project))
}

/// Moves the project on by `event` and records it, in one transaction, if `job_id` is still
/// its latest job and the event applies; false otherwise (also when the project is gone).
pub async fn settle(
    ctx: &Context,
    job_id: Uuid,
    project_id: Uuid,
    event: Event,
    reason: Option<&str>,
) -> AppResult<bool> {
    let mut tx = ctx.pool.begin().await?;
    let moved = settle_in(&mut tx, ctx, job_id, project_id, event, reason).await?;
    super::commit(tx).await?;
    Ok(moved)
}

/// Settles the project of a job that ended without success (failed, lost or cancelled), in
/// the transaction that records the job's end: a project still waiting on that job fails with
/// `reason`.
pub async fn settle_failed(
    conn: &mut PgConnection,
    ctx: &Context,
    job_id: Uuid,
    project_id: Uuid,
    reason: &str,
) -> AppResult<bool> {
    let status = match projects::lock(conn, project_id).await {
        Ok(project) => project.status,
        Err(StoreError::NotFound) => return Ok(false),
        Err(other) => return Err(other.into()),
    };
    let Some(event) = lifecycle::failure_event(status) else { return Ok(false) };
    settle_in(conn, ctx, job_id, project_id, event, Some(reason)).await
}

/// [`settle`] in the caller's transaction.
async fn settle_in(
    conn: &mut PgConnection,
    ctx: &Context,
    job_id: Uuid,
    project_id: Uuid,
    event: Event,
    reason: Option<&str>,
) -> AppResult<bool> {
    let project = match projects::lock(conn, project_id).await {
        Ok(project) => project,
        Err(StoreError::NotFound) => return Ok(false),
        Err(other) => return Err(other.into()),
    };
    let Ok(step) = lifecycle::transition(project.status, event) else { return Ok(false) };
    let moved =
        projects::transition(conn, project_id, &event.sources(), step.to, reason, Some(job_id))
            .await?;
    if moved {
        let change = Change::new("project", step.to.as_str(), project_id)
            .after(&json!({ "status": step.to, "reason": reason }));
        audit::record(conn, &Actor::job(job_id), change).await?;
        let after = projects::get(conn, project_id).await?;
        announce(conn, ctx, event, &after).await?;
    }
    Ok(moved)
}

/// Makes a `poll_argocd` job the project's latest job, in one transaction; called by the job
/// that delivered the manifests (as `revision`, when it committed), while it is still the
/// project's latest.
pub async fn hand_over_to_poll(
    ctx: &Context,
    job_id: Uuid,
    project: &Project,
    expect: Expect,
    revision: Option<String>,
) -> AppResult<Option<Uuid>> {
    let mut tx = ctx.pool.begin().await?;
    let current = projects::lock(&mut tx, project.id).await?;
    // Still its job, and the project still waits on it (not, say, scheduled for deletion
    // meanwhile, which leaves a degraded project's job in place).
    if current.last_job_id != Some(job_id) || lifecycle::failure_event(current.status).is_none() {
        return Ok(None);
    }
    let payload =
        PollPayload { project_id: project.id, expect, since: chrono::Utc::now(), revision };
    let meta = JobMeta::system("delivery").about("project", project.id, owner(project));
    let poll = enqueue::<PollArgocd>(&mut tx, ctx, &payload, meta).await?.into_job();
    projects::set_job(&mut tx, project.id, poll.id).await?;
    super::commit(tx).await?;
    Ok(Some(poll.id))
}

/// Active projects, a page at a time (for the reconciler).
pub async fn list_active(ctx: &Context, page: PageRequest) -> AppResult<Page<Project>> {
    let filter = ProjectFilter { status: Some(ProjectStatus::Active), ..ProjectFilter::default() };
    let mut conn = ctx.pool.acquire().await?;
    Ok(projects::list(&mut conn, Scope::Center, &filter, page).await?)
}

/// Marks an active project degraded with `why` and enqueues its re-provisioning, in one
/// transaction; false when it was no longer active.
pub async fn mark_drifted(
    ctx: &Context,
    job_id: Uuid,
    project: &Project,
    why: &str,
) -> AppResult<bool> {
    let mut tx = ctx.pool.begin().await?;
    let current = projects::lock(&mut tx, project.id).await?;
    let Ok(step) = lifecycle::transition(current.status, Event::DriftFound) else {
        return Ok(false);
    };
    let sources = Event::DriftFound.sources();
    if !projects::transition(&mut tx, project.id, &sources, step.to, Some(why), None).await? {
        return Ok(false);
    }
    let work = step.starts.ok_or_else(|| AppError::internal("drift that starts no work"))?;
    let meta = JobMeta::system("resync");
    let provision = start_work(&mut tx, ctx, &current, work, meta, "resync").await?.into_job();
    let change = Change::new("project", "drift", project.id)
        .after(&json!({ "reason": why, "job_id": provision.id }));
    audit::record(&mut tx, &Actor::job(job_id), change).await?;
    super::commit(tx).await?;
    tracing::warn!(namespace = %project.namespace, reason = why, "drift found; re-provisioning");
    Ok(true)
}

/// What [`reconcile`] did.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Reconciled {
    /// `namespace: status` of each project whose work was started again.
    pub restarted: Vec<String>,
    /// The namespaces of requests rejected because nobody decided them in time.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub expired: Vec<String>,
    /// The namespaces of projects whose grace period ended: their removal started.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub deleting: Vec<String>,
    /// The namespaces of projects whose time to live ran out: deleted as their owner would.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ttl_expired: Vec<String>,
    /// The namespaces of projects whose time to live runs out soon: webhooks were told.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub reminded: Vec<String>,
}

/// Finds projects waiting (provisioning, degraded, deleting) on a job that is no longer live
/// and starts their work again: the repair of the lifecycle's invariant, whatever broke it.
pub async fn reconcile(ctx: &Context, job_id: Uuid) -> AppResult<Reconciled> {
    let waiting = Event::Restart.sources();
    let mut report = Reconciled::default();
    let stranded = projects::stranded(&mut *ctx.pool.acquire().await?, &waiting, 500).await?;
    for id in stranded {
        let mut tx = ctx.pool.begin().await?;
        let project = projects::lock(&mut tx, id).await?;
        // Re-checked under the lock: its job may have moved it on meanwhile.
        let Ok(step) = lifecycle::transition(project.status, Event::Restart) else { continue };
        if projects::job_is_live(&mut tx, project.last_job_id).await? {
            continue;
        }
        let work = step.starts.ok_or_else(|| AppError::internal("a restart with no work"))?;
        let meta = JobMeta::system("reconciler");
        let job = start_work(&mut tx, ctx, &project, work, meta, "reconciler").await?.into_job();
        let change = Change::new("project", Event::Restart.verb(), id)
            .before(&json!({ "status": project.status, "job_id": project.last_job_id }))
            .after(&json!({ "status": step.to, "job_id": job.id }));
        audit::record(&mut tx, &Actor::job(job_id), change).await?;
        super::commit(tx).await?;
        tracing::warn!(namespace = %project.namespace, status = %project.status, "a project waited on no live job; its work is restarted");
        report.restarted.push(format!("{}: {}", project.namespace, project.status));
    }
    report.expired = expire_approvals(ctx, job_id).await?;
    report.reminded = remind_expiring(ctx).await?;
    report.ttl_expired = expire_ttls(ctx, job_id).await?;
    report.deleting = start_due_deletions(ctx, job_id).await?;
    Ok(report)
}

/// Rejects the requests whose approval expired (nobody decided them in time), freeing their
/// quota; returns their namespaces.
async fn expire_approvals(ctx: &Context, job_id: Uuid) -> AppResult<Vec<String>> {
    let due = projects::due(&mut *ctx.pool.acquire().await?, Due::ApprovalExpired, 500).await?;
    let mut expired = Vec::new();
    for id in due {
        let why = |p: &Project| match p.approval_expires_at {
            Some(at) => format!("the request expired: nobody approved or rejected it by {at}"),
            None => "the request expired".to_owned(),
        };
        let choose = |_: &Project| Event::ApprovalExpired;
        let moved = system_move(ctx, job_id, id, Due::ApprovalExpired, choose, Some(&why)).await?;
        if let Some(project) = moved {
            tracing::info!(namespace = %project.namespace, "a request waiting for approval expired");
            expired.push(project.namespace);
        }
    }
    Ok(expired)
}

/// Tells the webhooks, once per project, that its time to live runs out within
/// `deletion.remind_before_secs` (0: never); returns the namespaces.
async fn remind_expiring(ctx: &Context) -> AppResult<Vec<String>> {
    let within = ctx.config.deletion.remind_before_secs as i64;
    if within == 0 {
        return Ok(Vec::new());
    }
    let mut tx = ctx.pool.begin().await?;
    let due = projects::expiry_reminders(&mut tx, within, 500).await?;
    let mut reminded = Vec::new();
    for id in due {
        let project = projects::get(&mut tx, id).await?;
        let at = project.expires_at.map(|at| at.to_rfc3339()).unwrap_or_default();
        let runs_out = match project.expires_at {
            Some(when) if when <= chrono::Utc::now() => "ran out",
            _ => "runs out",
        };
        let text = format!(
            "project {} ({} at {}) will be deleted: its time to live {runs_out} at {at}",
            project.name, project.department, project.site
        );
        let note = Notification::new(EventKind::Expiring, text, project_data(&project));
        super::webhooks::emit(&mut tx, ctx, note).await?;
        reminded.push(project.namespace);
    }
    super::commit(tx).await?;
    Ok(reminded)
}

/// Starts the removal of the projects whose grace period is over; returns their namespaces.
async fn start_due_deletions(ctx: &Context, job_id: Uuid) -> AppResult<Vec<String>> {
    let due = projects::due(&mut *ctx.pool.acquire().await?, Due::Deletion, 500).await?;
    let mut started = Vec::new();
    for id in due {
        let choose = |_: &Project| Event::DeletionDue;
        if let Some(project) = system_move(ctx, job_id, id, Due::Deletion, choose, None).await? {
            tracing::info!(namespace = %project.namespace, "the grace period is over; deleting");
            started.push(project.namespace);
        }
    }
    Ok(started)
}

/// Deletes the projects whose time to live ran out, as their owner's deletion would (after the
/// grace period, when there is one), and rejects requests still waiting for approval by then;
/// returns their namespaces.
async fn expire_ttls(ctx: &Context, job_id: Uuid) -> AppResult<Vec<String>> {
    let due = projects::due(&mut *ctx.pool.acquire().await?, Due::TimeToLive, 500).await?;
    let grace = ctx.config.deletion.grace().is_some();
    let mut expired = Vec::new();
    for id in due {
        let choose = |p: &Project| match p.status {
            ProjectStatus::PendingApproval => Event::ApprovalExpired,
            _ => lifecycle::deletion(p.status, p.failed_from.as_deref(), grace),
        };
        let why = |p: &Project| match p.expires_at {
            Some(at) => format!("its time to live ran out at {at}"),
            None => "its time to live ran out".to_owned(),
        };
        if let Some(project) =
            system_move(ctx, job_id, id, Due::TimeToLive, choose, Some(&why)).await?
        {
            tracing::info!(namespace = %project.namespace, "a project's time to live ran out");
            expired.push(project.namespace);
        }
    }
    Ok(expired)
}

/// A move the system makes on its own (a sweep of the reconciler, `job_id`), in one
/// transaction: if the project is still `due` under its lock, the event `choose` picks for it,
/// if that still applies, the job it starts, and the audit event (with `why`). The project as
/// it was, when it moved.
async fn system_move(
    ctx: &Context,
    job_id: Uuid,
    id: Uuid,
    due: Due,
    choose: impl FnOnce(&Project) -> Event,
    why: Option<&(dyn Fn(&Project) -> String + Sync)>,
) -> AppResult<Option<Project>> {
    let mut tx = ctx.pool.begin().await?;
    let before = projects::lock(&mut tx, id).await?;
    // Listed before the lock: a restore and a new deletion, say, may have moved its deadline.
    if !projects::still_due(&mut tx, id, due).await? {
        return Ok(None);
    }
    // Re-decided under the lock: someone may have moved it meanwhile.
    let Ok((event, step)) =
        lifecycle::decide(before.status, before.failed_from.as_deref(), choose(&before))
    else {
        return Ok(None);
    };
    let reason = why.map(|why| why(&before));
    // A failure reason only where the project ends for it (a rejection).
    let failure = reason.as_deref().filter(|_| step.to == ProjectStatus::Rejected);
    let after = ctx.config.deletion.grace().map(|grace| grace.num_seconds());
    let sources = event.sources();
    if !projects::transition_at(&mut tx, id, &sources, step.to, failure, None, after).await? {
        return Ok(None);
    }
    if event.supersedes_deliveries() {
        projects::next_generation(&mut tx, id).await?;
    }
    let mut job = None;
    if let Some(work) = step.starts {
        let project = projects::get(&mut tx, id).await?;
        let meta = JobMeta::system("reconciler");
        job =
            Some(start_work(&mut tx, ctx, &project, work, meta, "reconciler").await?.into_job().id);
    }
    let after = projects::get(&mut tx, id).await?;
    let change = Change::new("project", event.verb(), id)
        .before(&before)
        .after(&json!({ "project": after, "reason": reason, "job_id": job }));
    audit::record(&mut tx, &Actor::job(job_id), change).await?;
    announce(&mut tx, ctx, event, &after).await?;
    super::commit(tx).await?;
    Ok(Some(before))
}

/// A center admin's forced step on a stuck project, with the reason recorded.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ForceProject {
    /// Why: recorded in the audit trail (and, when failing, as the failure reason).
    pub reason: String,
}

/// Runs the work of a project's status again (provisioning for a failed one), replacing its
/// job (center admins): for a change that is stuck, e.g. waiting on a system that was fixed.
pub async fn force_retry(
    ctx: &Context,
    caller: &Caller,
    id: Uuid,
    input: ForceProject,
) -> AppResult<ProjectSubmitted> {
    caller.authorize(Action::ForceProject)?;
    let reason = super::reason_text(&input.reason)?;
    let (mut tx, before, event, step) = begin_forced(ctx, id, Event::ForceRetry).await?;
    projects::transition(&mut tx, id, &event.sources(), step.to, None, None).await?;
    if event.supersedes_deliveries() {
        projects::next_generation(&mut tx, id).await?;
    }
    let project = projects::get(&mut tx, id).await?;
    let work = step.starts.ok_or_else(|| AppError::internal("a forced retry with no work"))?;
    let enqueued =
        start_work(&mut tx, ctx, &project, work, JobMeta::by(caller), &caller.username).await?;
    let after = projects::get(&mut tx, id).await?;
    let change = Change::new("project", Event::ForceRetry.verb(), id)
        .before(&before)
        .after(&json!({ "project": after, "reason": reason }));
    audit::record(&mut tx, &caller.actor(), change).await?;
    super::commit(tx).await?;
    Ok(ProjectSubmitted { project: after, submitted: Some(enqueued.into()) })
}

/// Fails a project whose change is stuck (center admins), with the reason: its job is
/// cancelled, and a delivery still running can no longer write.
pub async fn force_fail(
    ctx: &Context,
    caller: &Caller,
    id: Uuid,
    input: ForceProject,
) -> AppResult<Project> {
    caller.authorize(Action::ForceProject)?;
    let reason = super::reason_text(&input.reason)?;
    let (mut tx, before, _, step) = begin_forced(ctx, id, Event::ForceFail).await?;
    let sources = Event::ForceFail.sources();
    let why = format!("failed by {}: {reason}", caller.username);
    projects::transition(&mut tx, id, &sources, step.to, Some(&why), None).await?;
    projects::next_generation(&mut tx, id).await?;
    let after = projects::get(&mut tx, id).await?;
    let change = Change::new("project", Event::ForceFail.verb(), id).before(&before).after(&after);
    audit::record(&mut tx, &caller.actor(), change).await?;
    announce(&mut tx, ctx, Event::ForceFail, &after).await?;
    super::commit(tx).await?;
    Ok(after)
}

/// The start of a forced step: the row lock, the state machine's verdict, and the project's
/// job cancelled if it has not started (one that runs is fenced by the next generation).
async fn begin_forced(
    ctx: &Context,
    id: Uuid,
    event: Event,
) -> AppResult<(Transaction<'static, Postgres>, Project, Event, Transition)> {
    let mut tx = ctx.pool.begin().await?;
    // The job's row before the project's, as a job's end takes them: the other order could
    // deadlock with a job failing at this moment. Should a new job come in between, its row
    // is locked too.
    let mut locked = projects::lock_last_job(&mut tx, id).await?;
    let before = loop {
        let project =
            projects::lock(&mut tx, id).await.map_err(|e| AppError::from_store("project", e))?;
        if project.last_job_id == locked {
            break project;
        }
        locked = projects::lock_last_job(&mut tx, id).await?;
    };
    let (event, step) = lifecycle::decide(before.status, before.failed_from.as_deref(), event)?;
    if let Some(job) = before.last_job_id {
        store_jobs::cancel(&mut tx, job).await?;
    }
    Ok((tx, before, event, step))
}

/// Everything a project's manifests depend on.
pub async fn spec(ctx: &Context, project: &Project) -> AppResult<ProjectSpec> {
    let mut conn = ctx.pool.acquire().await?;
    let dept = org::get_department(&mut conn, project.department_id).await?;
    let labels = ctx
        .config
        .catalog
        .entry(&project.sla_type, &project.performance_tier)
        .map(|entry| entry.labels.clone())
        .unwrap_or_default();
    let extra_quota: BTreeMap<String, String> =
        serde_json::from_value(project.extra_quota.clone()).unwrap_or_default();
    Ok(ProjectSpec {
        project_id: project.id.to_string(),
        namespace: project.namespace.clone(),
        department: project.department.clone(),
        field: project.field.clone(),
        site: project.site.clone(),
        sla_type: project.sla_type.clone(),
        performance_tier: project.performance_tier.clone(),
        cpu: project.cpu.into(),
        ram_gb: project.ram_gb.into(),
        extra_quota,
        labels,
        group: dept.k8s_group.unwrap_or(dept.name),
        generation: project.generation,
    })
}

/// The project's delivery lock, held while a job writes its manifests or objects: one
/// delivery at a time per project, on any daemon. Release it once the write is done.
pub struct DeliveryLock {
    tx: Transaction<'static, Postgres>,
}

impl DeliveryLock {
    pub async fn release(self) -> AppResult<()> {
        Ok(self.tx.commit().await?)
    }
}

/// Takes the project's delivery lock for a job started for `generation` (`None`: a job from
/// before generations, which is not checked). `Err` says why the job must not write: a newer
/// change superseded it. Dropping the lock without releasing it also lets it go.
pub async fn lock_delivery(
    ctx: &Context,
    project_id: Uuid,
    generation: Option<i64>,
) -> AppResult<Result<DeliveryLock, String>> {
    // On the lock pool: the lock is held while git or GitLab works, which may take a while.
    let mut tx = ctx.locks.begin().await?;
    let current = projects::lock_delivery(&mut tx, project_id)
        .await
        .map_err(|e| AppError::from_store("project", e))?;
    match generation {
        Some(generation) if generation != current => Ok(Err(format!(
            "superseded: generation {generation} of the project was replaced by generation {current}"
        ))),
        _ => Ok(Ok(DeliveryLock { tx })),
    }
}

/// The repository file of a project: `<site>/<namespace>.yaml`.
pub fn manifest_path(project: &Project) -> String {
    format!("{}/{}.yaml", project.site, project.namespace)
}
