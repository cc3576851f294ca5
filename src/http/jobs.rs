//! Job status, listing and cancellation, maintenance jobs, and the 202 answer every
//! submission gives.

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::{Value, json};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::error::{ApiError, ErrorEnvelope};
use super::extract::{Json, Path, Query};
use crate::app::jobs::{JobQuery, SubmitJob};
use crate::app::{self, Caller, PageParams, Submitted};
use crate::context::Context;
use crate::domain::job::JobStatus;
use crate::http::auth::{Permitted, RunsMaintenance};
use crate::store::Page;
use crate::store::jobs::Job;

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

/// Builds the 202 answer for `submitted`, merging `extra` fields (e.g. the project) into it.
pub fn accepted(submitted: &Submitted, extra: Value) -> Response {
    let job = &submitted.job;
    let location = format!("/api/v1/jobs/{}", job.id);
    let mut body = json!({
        "job_id": job.id,
        "status": job.status,
        "location": location,
        "existing": submitted.existing,
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
    Ok(Json(app::jobs::list(&ctx, &caller, query, params).await?))
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
    Ok(Json(app::jobs::get(&ctx, &caller, id).await?))
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
    Ok(Json(app::jobs::cancel(&ctx, &caller, id).await?))
}

/// Start a maintenance or diagnostic job (center admins). Answers 202 with the job id.
#[utoipa::path(post, path = "/admin/jobs", tag = "jobs", request_body = SubmitJob,
    responses((status = 202, body = Accepted), (status = 403, body = ErrorEnvelope),
              (status = 422, body = ErrorEnvelope)),
    security(("bearer" = [])))]
async fn submit_job(
    State(ctx): State<Context>,
    Permitted(caller, _): Permitted<RunsMaintenance>,
    Json(body): Json<SubmitJob>,
) -> Result<Response, ApiError> {
    let submitted = app::jobs::submit_manual(&ctx, &caller, body).await?;
    Ok(accepted(&submitted, json!({})))
}
