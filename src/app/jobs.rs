//! Jobs as people see them (status, listing, cancellation, maintenance jobs started by hand),
//! and the one way every use case enqueues a job: in its own transaction, beside the change
//! that causes it.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sqlx::PgConnection;
use uuid::Uuid;

use super::{AppError, AppResult, Caller, ErrorKind, PageParams, Submitted};
use crate::context::Context;
use crate::domain::job::JobStatus;
use crate::domain::scope::{Action, Owner, may_cancel_job};
use crate::jobs::diagnostic::{Noop, Sleep, SleepParams};
use crate::jobs::prune::PruneJobs;
use crate::jobs::wake;
use crate::jobs::{Job, Trigger};
use crate::store::Page;
use crate::store::audit::{self, Change};
use crate::store::jobs::{self, Claimed, Enqueued, Job as JobRow, JobFilter, NewJob, Visibility};

/// Who submits a job, what it is about and whose it is.
#[derive(Debug, Clone)]
pub struct JobMeta {
    /// What the job is about, e.g. `("project", "<id>")`.
    pub subject: Option<(&'static str, String)>,
    /// Whose people may see it.
    pub owner: Owner,
    pub submitted_by: Option<Uuid>,
    pub submitted_by_name: String,
}

impl JobMeta {
    /// Submitted by a person.
    pub fn by(caller: &Caller) -> Self {
        Self {
            subject: None,
            owner: Owner::default(),
            submitted_by: Some(caller.id),
            submitted_by_name: caller.username.clone(),
        }
    }

    /// Submitted by InfraHub itself, e.g. `system:resync`.
    pub fn system(name: &str) -> Self {
        Self {
            subject: None,
            owner: Owner::default(),
            submitted_by: None,
            submitted_by_name: format!("system:{name}"),
        }
    }

    pub fn about(mut self, subject_type: &'static str, id: impl ToString, owner: Owner) -> Self {
        self.subject = Some((subject_type, id.to_string()));
        self.owner = owner;
        self
    }
}

/// Enqueues a `J` job with `payload` in the caller's transaction (its wake-up goes out when the
/// unit of work commits: [`wake::on_commit`]). Kinds that run one at a time return the active
/// job instead.
pub async fn enqueue<J: Job>(
    conn: &mut PgConnection,
    ctx: &Context,
    payload: &J::Payload,
    meta: JobMeta,
) -> AppResult<Enqueued> {
    let enqueued = jobs::enqueue(conn, &prepare::<J>(ctx, payload, meta)?).await?;
    wake::on_commit(&ctx.wake_ups, enqueued.wake_up());
    Ok(enqueued)
}

/// Enqueues a `J` job for the caller, with its `job.create` audit event when a new job was
/// made, in one statement: the job and the event commit together, the wake-up after. Under an
/// `Idempotency-Key` the statement runs in a transaction that commits with the request's
/// stored answer ([`super::commit`]); otherwise with no `BEGIN` and `COMMIT` around it, in a
/// statement it may share with concurrent submissions ([`crate::jobs::submissions`]).
pub async fn submit<J: Job>(
    ctx: &Context,
    caller: &Caller,
    payload: &J::Payload,
    meta: JobMeta,
) -> AppResult<Submitted> {
    let new = prepare::<J>(ctx, payload, meta)?;
    let actor = caller.actor();
    if super::idempotency::under_key() {
        let mut tx = ctx.pool.begin().await?;
        let enqueued = jobs::enqueue_recorded(&mut tx, &new, &actor).await?;
        super::commit(tx).await?;
        // Deferred to the end of the request: the transaction commits with its answer.
        wake::on_commit(&ctx.wake_ups, enqueued.wake_up());
        return Ok(enqueued.into());
    }
    // Its wake-up goes out with its statement's, also if the client has gone meanwhile.
    let enqueued = ctx.submissions.enqueue(new, actor).await?;
    Ok(enqueued.into())
}

/// The `J` job of `payload` as [`enqueue`] and [`submit`] write it (a new project's job is
/// written with the project: [`super::project_writes`]).
pub(super) fn prepare<J: Job>(
    ctx: &Context,
    payload: &J::Payload,
    meta: JobMeta,
) -> AppResult<NewJob<'static>> {
    let value = payload_value::<J>(payload)?;
    Ok(new_job::<J>(ctx, payload, value, meta))
}

fn payload_value<J: Job>(payload: &J::Payload) -> AppResult<Value> {
    serde_json::to_value(payload)
        .map_err(|e| AppError::internal(format!("{} payload: {e}", J::KIND)))
}

/// The row a `J` job with `payload` (already as JSON: `value`) is inserted as.
fn new_job<J: Job>(
    ctx: &Context,
    payload: &J::Payload,
    value: Value,
    meta: JobMeta,
) -> NewJob<'static> {
    let settings = ctx.registry.settings(J::KIND);
    let coalesce_key = J::coalesce_key(payload);
    NewJob {
        subject: meta.subject,
        scope: meta.owner,
        submitted_by: meta.submitted_by,
        dedupe_key: J::DEDUPE.then(|| J::KIND.to_owned()),
        delay: if coalesce_key.is_some() { settings.coalesce_delay } else { Duration::ZERO },
        coalesce_key,
        ..NewJob::new(J::KIND, value, meta.submitted_by_name, settings.max_attempts_i32())
    }
}

fn visibility(caller: &Caller) -> Visibility {
    Visibility { user: caller.id, scope: caller.scope }
}

/// Filters of the job list.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct JobQuery {
    pub kind: Option<String>,
    pub status: Option<JobStatus>,
    /// `type:id` (e.g. `project:0192…`) or a bare subject id.
    pub subject: Option<String>,
}

/// The jobs the caller may see, newest first.
pub async fn list(
    ctx: &Context,
    caller: &Caller,
    query: JobQuery,
    page: PageParams,
) -> AppResult<Page<JobRow>> {
    let page = page.request()?;
    let filter = JobFilter { kind: query.kind, status: query.status, subject: query.subject };
    let mut conn = ctx.pool.acquire().await?;
    Ok(jobs::list_visible(&mut conn, visibility(caller), &filter, page).await?)
}

/// A job, if the caller may see it.
pub async fn get(ctx: &Context, caller: &Caller, id: Uuid) -> AppResult<JobRow> {
    let mut conn = ctx.pool.acquire().await?;
    let job = jobs::find_visible(&mut conn, id, visibility(caller)).await?;
    job.ok_or_else(|| AppError::not_found("job"))
}

/// Cancels a queued or retrying job (center admins, or whoever submitted it); its subject
/// settles in the same transaction (a project waiting on it fails, with who cancelled it).
pub async fn cancel(ctx: &Context, caller: &Caller, id: Uuid) -> AppResult<JobRow> {
    let mut tx = ctx.pool.begin().await?;
    let before = jobs::find_visible(&mut tx, id, visibility(caller))
        .await?
        .ok_or_else(|| AppError::not_found("job"))?;
    if !may_cancel_job(caller.role, caller.id, before.submitted_by) {
        return Err(AppError::forbidden("only center admins and the submitter may cancel a job"));
    }
    match jobs::cancel(&mut tx, id).await? {
        Some(Ok(after)) => {
            let reason = format!("cancelled by {}", caller.username);
            run_failure_hook(ctx, &mut tx, &after.as_claimed(), &reason).await?;
            let change =
                Change::new("job", "cancel", id).before(&before.status).after(&after.status);
            audit::record(&mut tx, &caller.actor(), change).await?;
            super::commit(tx).await?;
            Ok(after)
        }
        Some(Err(status)) => Err(AppError::conflict(
            "not_cancellable",
            format!("a {status} job cannot be cancelled; only queued and retrying ones can"),
        )
        .with_details(json!({ "status": status }))),
        None => Err(AppError::not_found("job")),
    }
}

/// The kind's failure hook, in the caller's transaction.
async fn run_failure_hook(
    ctx: &Context,
    conn: &mut PgConnection,
    job: &Claimed,
    reason: &str,
) -> AppResult<()> {
    let Some(registered) = ctx.registry.get(&job.kind) else { return Ok(()) };
    registered.handler.on_failure(ctx, conn, job, reason).await.map_err(|e| {
        AppError::new(
            ErrorKind::Internal,
            "failure_hook",
            format!("settling the subject of {} {} failed: {e}", job.kind, job.id),
        )
    })
}

/// Records a failed attempt of `job`, claimed by `owner`: with `retry_at` it waits in
/// `retrying`; without, it fails for good and its kind's failure hook settles its subject in the
/// same transaction. False when the claim was lost (nothing is written then).
pub async fn fail_attempt(
    ctx: &Context,
    job: &Claimed,
    owner: &str,
    error: &str,
    retry_at: Option<DateTime<Utc>>,
) -> AppResult<bool> {
    // A unit of work: what the failure hook enqueues (a webhook's delivery) wakes the workers
    // once this commits.
    wake::unit(&ctx.wake_ups, async {
        let mut tx = ctx.pool.begin().await?;
        let Some(written) = jobs::fail(&mut tx, job, owner, error, retry_at).await? else {
            return Ok(false);
        };
        if retry_at.is_none() {
            run_failure_hook(ctx, &mut tx, job, error).await?;
        }
        super::commit(tx).await?;
        ctx.wake_ups.send(written.wake_up);
        Ok(true)
    })
    .await
}

/// Hands back the jobs of workers that stopped answering (expired leases); those that had no
/// attempt left fail, and their subjects settle in the same transaction. Returns the ids.
pub async fn reap_expired_leases(ctx: &Context) -> AppResult<Vec<Uuid>> {
    // A unit of work, like a failed attempt's record.
    wake::unit(&ctx.wake_ups, async {
        let mut tx = ctx.pool.begin().await?;
        let reaped = jobs::reap_expired_leases(&mut tx).await?;
        for lost in reaped.iter().filter(|r| r.failed) {
            let reason = "the worker running the last attempt stopped answering (lease expired)";
            run_failure_hook(ctx, &mut tx, &lost.job, reason).await?;
        }
        super::commit(tx).await?;
        ctx.wake_ups.send(reaped.iter().filter_map(|r| r.wake_up.clone()));
        Ok(reaped.into_iter().map(|r| r.job.id).collect())
    })
    .await
}

/// Jobs a center admin may start by hand.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ManualKind {
    /// Does nothing: checks that workers pick jobs up.
    Noop,
    /// Sleeps, then succeeds, fails or re-schedules as the payload says (diagnostics).
    Sleep,
    /// Deletes finished jobs older than `workers.retention_days` now.
    PruneJobs,
    /// Reads what projects use from Prometheus now (`usage.prometheus`).
    ReadUsage,
}

/// A maintenance or diagnostic job to start.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubmitJob {
    pub kind: ManualKind,
    /// For `sleep`: `{millis, transient_failures, permanent, polls, poll_millis}`.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub payload: Value,
}

/// Starts a maintenance or diagnostic job (center admins).
pub async fn submit_manual(
    ctx: &Context,
    caller: &Caller,
    input: SubmitJob,
) -> AppResult<Submitted> {
    caller.authorize(Action::RunMaintenance)?;
    let payload = if input.payload.is_null() { json!({}) } else { input.payload };
    let meta = JobMeta::by(caller);
    match input.kind {
        ManualKind::Noop => submit::<Noop>(ctx, caller, &payload, meta).await,
        ManualKind::Sleep => {
            let params: SleepParams = serde_json::from_value(payload).map_err(|e| {
                AppError::invalid("invalid_value", format!("payload: {e}"))
                    .with_details(json!({ "field": "payload" }))
            })?;
            submit::<Sleep>(ctx, caller, &params, meta).await
        }
        ManualKind::PruneJobs => {
            let trigger: Trigger = serde_json::from_value(payload).map_err(|e| {
                AppError::invalid("invalid_value", format!("payload: {e}"))
                    .with_details(json!({ "field": "payload" }))
            })?;
            submit::<PruneJobs>(ctx, caller, &trigger, meta).await
        }
        ManualKind::ReadUsage => {
            let trigger = Trigger { schedule: None, tick: None };
            submit::<crate::jobs::read_usage::ReadUsage>(ctx, caller, &trigger, meta).await
        }
    }
}

/// Enqueues the job of a cron tick unless another daemon already fired it; returns the job.
/// The tick and the job are one transaction, so a fired tick always has its job.
pub async fn fire_tick(
    ctx: &Context,
    schedule: &str,
    kind: &'static str,
    tick: DateTime<Utc>,
) -> AppResult<Option<Uuid>> {
    let Some(registered) = ctx.registry.get(kind) else { return Ok(None) };
    let mut tx = ctx.pool.begin().await?;
    if !jobs::record_tick(&mut tx, schedule, tick).await? {
        return Ok(None);
    }
    let trigger = Trigger { schedule: Some(schedule.to_owned()), tick: Some(tick) };
    let payload = serde_json::to_value(&trigger).map_err(AppError::internal)?;
    let new = NewJob {
        dedupe_key: registered.dedupe.then(|| kind.to_owned()),
        ..NewJob::new(kind, payload, "system:cron", registered.settings.max_attempts_i32())
    };
    let enqueued = jobs::enqueue(&mut tx, &new).await?;
    let id = enqueued.job().id;
    jobs::set_tick_job(&mut tx, schedule, tick, id).await?;
    super::commit(tx).await?;
    ctx.wake_ups.send(enqueued.wake_up().cloned());
    Ok(Some(id))
}

/// The latest tick `schedule` fired for, if it ever did.
pub async fn last_tick(ctx: &Context, schedule: &str) -> AppResult<Option<DateTime<Utc>>> {
    let mut conn = ctx.pool.acquire().await?;
    Ok(jobs::last_tick(&mut conn, schedule).await?)
}

/// What [`prune`] deleted.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Pruned {
    pub deleted_jobs: u64,
    pub deleted_ticks: u64,
    pub deleted_idempotency_keys: u64,
    pub deleted_sessions: u64,
}

/// Deletes finished jobs older than `workers.retention_days`, cron ticks older than that
/// except each schedule's latest, `Idempotency-Key` answers past their 24 hours, and expired
/// console sessions.
pub async fn prune(ctx: &Context) -> AppResult<Pruned> {
    let age = ctx.config.workers.retention_days as f64 * 86_400.0;
    let mut conn = ctx.pool.acquire().await?;
    let deleted_jobs = jobs::prune_finished(&mut conn, age).await?;
    let deleted_ticks = jobs::prune_ticks(&mut conn, age).await?;
    let deleted_idempotency_keys = super::idempotency::prune(ctx).await?;
    let deleted_sessions = crate::store::sessions::prune(&mut conn).await?;
    Ok(Pruned { deleted_jobs, deleted_ticks, deleted_idempotency_keys, deleted_sessions })
}
