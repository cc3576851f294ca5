//! Job status, listing and cancellation, and the 202 answer every submission gives.

use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::auth::Caller;
use super::error::{ApiError, ErrorEnvelope};
use super::extract::{Json, Path, Query};
use super::page::PageParams;
use crate::context::Context;
use crate::domain::job::JobStatus;
use crate::domain::role::{Role, Scope};
use crate::jobs::{diagnostic, prune};
use crate::store::Page;
use crate::store::audit::{self, Change};
use crate::store::jobs::{self, Enqueued, Job, JobFilter, JobScope, NewJob, Visibility};

pub fn router() -> OpenApiRouter<Context> {
    OpenApiRouter::new()
        .routes(routes!(list_jobs))
        .routes(routes!(get_job))
        .routes(routes!(cancel_job))
        .routes(routes!(submit_job))
}

/// The answer to an accepted submission: 202, `Location` of the job, and its id.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Accepted {
    pub job_id: Uuid,
    /// `queued` for a new job; an existing job's status when deduplicated.
    pub status: JobStatus,
    /// Where to poll the job.
    pub location: String,
    /// True when an active job (or the same Idempotency-Key) already covered this request.
    pub existing: bool,
}

/// Builds the 202 answer for `enqueued`, merging `extra` fields (e.g. the project) into it.
pub fn accepted(enqueued: &Enqueued, extra: Value) -> Response {
    let job = enqueued.job();
    let location = format!("/api/v1/jobs/{}", job.id);
    let mut body = json!({
        "job_id": job.id,
        "status": job.status,
        "location": location,
        "existing": matches!(enqueued, Enqueued::Existing(_)),
    });
    if let (Some(body), Value::Object(extra)) = (body.as_object_mut(), extra) {
        body.extend(extra);
    }
    let mut response = (StatusCode::ACCEPTED, axum::Json(body)).into_response();
    if let Ok(value) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response
}

/// The `Idempotency-Key` header: the same key from the same user within 24 h gets the first
/// answer and never a second job.
#[derive(Debug, Clone, Default)]
pub struct IdempotencyKey(pub Option<String>);

impl<S: Send + Sync> FromRequestParts<S> for IdempotencyKey {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let Some(value) = parts.headers.get("idempotency-key") else { return Ok(Self(None)) };
        match value.to_str() {
            Ok(key) if !key.trim().is_empty() && key.len() <= 255 => {
                Ok(Self(Some(key.trim().to_owned())))
            }
            _ => Err(ApiError::bad_request(
                "invalid_header",
                "Idempotency-Key must be 1 to 255 visible ASCII characters",
            )),
        }
    }
}

impl IdempotencyKey {
    /// The `(user, key)` pair stored with the job.
    pub fn for_caller(&self, caller: &Caller) -> Option<(Uuid, String)> {
        self.0.clone().map(|key| (caller.user.id, key))
    }
}

/// Enqueues `kind` for the caller in one transaction with an audit event; answers 202.
pub async fn submit(
    ctx: &Context,
    caller: &Caller,
    idempotency: &IdempotencyKey,
    kind: &'static str,
    payload: serde_json::Value,
    subject: Option<(&'static str, String)>,
    scope: JobScope,
) -> Result<Response, ApiError> {
    let registered = ctx
        .registry
        .get(kind)
        .ok_or_else(|| ApiError::internal(format!("{kind} not registered")))?;
    let new = NewJob {
        subject,
        scope,
        submitted_by: Some(caller.user.id),
        dedupe_key: registered.handler.dedupe_key().map(str::to_owned),
        idempotency: idempotency.for_caller(caller),
        ..NewJob::new(kind, payload, &caller.user.username, registered.settings.max_attempts as i32)
    };
    let mut tx = ctx.pool.begin().await?;
    let enqueued = jobs::enqueue(&mut tx, &new).await?;
    if let Enqueued::Created(job) = &enqueued {
        audit::record(&mut tx, &caller.actor(), Change::create("job", job.id, job)).await?;
    }
    tx.commit().await?;
    Ok(accepted(&enqueued, json!({})))
}

/// What a caller may see: center admins everything, others their scope and their own jobs.
pub fn visibility(caller: &Caller) -> Visibility {
    let scope = match caller.user.scope() {
        Scope::Center => None,
        Scope::Field(field) => Some(JobScope { field_id: Some(field), department_id: None }),
        Scope::Department(dept) => Some(JobScope { field_id: None, department_id: Some(dept) }),
    };
    Visibility { user: caller.user.id, scope }
}

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct JobQuery {
    pub kind: Option<String>,
    pub status: Option<JobStatus>,
    /// `type:id` (e.g. `project:0192…`) or a bare subject id.
    pub subject: Option<String>,
}

/// List the jobs the caller may see, newest first.
#[utoipa::path(get, path = "/jobs", tag = "jobs", params(PageParams, JobQuery),
    responses((status = 200, body = Page<Job>), (status = 401, body = ErrorEnvelope)),
    security(("bearer" = [])))]
async fn list_jobs(
    State(ctx): State<Context>,
    caller: Caller,
    Query(params): Query<PageParams>,
    Query(query): Query<JobQuery>,
) -> Result<Json<Page<Job>>, ApiError> {
    let page = params.request()?;
    let filter = JobFilter { kind: query.kind, status: query.status, subject: query.subject };
    let mut conn = ctx.pool.acquire().await?;
    Ok(Json(jobs::list_visible(&mut conn, visibility(&caller), &filter, page).await?))
}

/// A job: kind, status, attempts, next run, timestamps, every attempt's error, result, subject.
#[utoipa::path(get, path = "/jobs/{id}", tag = "jobs", params(("id" = Uuid, Path)),
    responses((status = 200, body = Job), (status = 404, body = ErrorEnvelope)),
    security(("bearer" = [])))]
async fn get_job(
    State(ctx): State<Context>,
    caller: Caller,
    Path(id): Path<Uuid>,
) -> Result<Json<Job>, ApiError> {
    let mut conn = ctx.pool.acquire().await?;
    let job = jobs::find_visible(&mut conn, id, visibility(&caller)).await?;
    job.map(Json).ok_or_else(|| ApiError::not_found("job"))
}

/// Cancel a queued or retrying job (center admins, or whoever submitted it).
#[utoipa::path(post, path = "/jobs/{id}/cancel", tag = "jobs", params(("id" = Uuid, Path)),
    responses((status = 200, body = Job), (status = 403, body = ErrorEnvelope),
              (status = 404, body = ErrorEnvelope), (status = 409, body = ErrorEnvelope)),
    security(("bearer" = [])))]
async fn cancel_job(
    State(ctx): State<Context>,
    caller: Caller,
    Path(id): Path<Uuid>,
) -> Result<Json<Job>, ApiError> {
    let mut tx = ctx.pool.begin().await?;
    let before = jobs::find_visible(&mut tx, id, visibility(&caller))
        .await?
        .ok_or_else(|| ApiError::not_found("job"))?;
    if caller.user.role != Role::CenterAdmin && before.submitted_by != Some(caller.user.id) {
        return Err(ApiError::forbidden("only center admins and the submitter may cancel a job"));
    }
    match jobs::cancel(&mut tx, id).await? {
        Some(Ok(after)) => {
            let change =
                Change::new("job", "cancel", id).before(&before.status).after(&after.status);
            audit::record(&mut tx, &caller.actor(), change).await?;
            tx.commit().await?;
            Ok(Json(after))
        }
        Some(Err(status)) => Err(ApiError::conflict(
            "not_cancellable",
            format!("a {status} job cannot be cancelled; only queued and retrying ones can"),
        )
        .with_details(json!({ "status": status }))),
        None => Err(ApiError::not_found("job")),
    }
}

/// Jobs a center admin may start by hand.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ManualKind {
    /// Does nothing: checks that workers pick jobs up.
    Noop,
    /// Sleeps, then succeeds, fails or re-schedules as the payload says (diagnostics).
    Sleep,
    /// Deletes finished jobs older than `workers.retention_days` now.
    PruneJobs,
}

impl ManualKind {
    fn kind(self) -> &'static str {
        match self {
            ManualKind::Noop => diagnostic::NOOP,
            ManualKind::Sleep => diagnostic::SLEEP,
            ManualKind::PruneJobs => prune::PRUNE_JOBS,
        }
    }
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubmitJob {
    pub kind: ManualKind,
    /// For `sleep`: `{millis, transient_failures, permanent, polls, poll_millis}`.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub payload: Value,
}

/// Start a maintenance or diagnostic job (center admins). Answers 202 with the job id.
#[utoipa::path(post, path = "/admin/jobs", tag = "jobs", request_body = SubmitJob,
    params(("Idempotency-Key" = Option<String>, Header, description = "repeat-safe submission key")),
    responses((status = 202, body = Accepted), (status = 403, body = ErrorEnvelope),
              (status = 422, body = ErrorEnvelope)),
    security(("bearer" = [])))]
async fn submit_job(
    State(ctx): State<Context>,
    caller: Caller,
    idempotency: IdempotencyKey,
    Json(body): Json<SubmitJob>,
) -> Result<Response, ApiError> {
    caller.require(&[Role::CenterAdmin])?;
    let kind = body.kind.kind();
    let payload = if body.payload.is_null() { json!({}) } else { body.payload };
    if body.kind == ManualKind::Sleep {
        serde_json::from_value::<diagnostic::SleepParams>(payload.clone()).map_err(|e| {
            ApiError::unprocessable("invalid_value", format!("payload: {e}"))
                .with_details(json!({ "field": "payload" }))
        })?;
    }
    submit(&ctx, &caller, &idempotency, kind, payload, None, JobScope::default()).await
}
