//! Projects: create (reserving quota), read, resize, delete, retry; and the catalog.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::error::{ApiError, ErrorEnvelope};
use super::extract::{Json, Path, Query};
use super::jobs::{Accepted, accepted};
use crate::app::projects::{
    CreateProject, ForceProject, ProjectQuery, ProjectSubmitted, RejectProject, ResizeProject,
};
use crate::app::{self, Caller, PageParams};
use crate::context::Context;
use crate::domain::catalog::{Catalog, CatalogEntry};
use crate::domain::project::ProjectStatus;
use crate::http::auth::{
    ChangesProjects, CreatesProjects, DecidesProjects, ForcesProjects, Permitted,
};
use crate::store::Page;
use crate::store::projects::Project;

pub fn router() -> OpenApiRouter<Context> {
    OpenApiRouter::new()
        .routes(routes!(list_projects, create_project))
        .routes(routes!(get_project, resize_project, delete_project))
        .routes(routes!(retry_project))
        .routes(routes!(force_retry_project))
        .routes(routes!(force_fail_project))
        .routes(routes!(approve_project))
        .routes(routes!(restore_project))
        .routes(routes!(reject_project))
        .routes(routes!(catalog))
}

/// The answer to a change that started no job: a request waiting for approval (201 when it
/// was just made), a scheduled deletion (202), or a request rejected or withdrawn (200).
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct ProjectSettled {
    pub id: Uuid,
    pub status: ProjectStatus,
    pub namespace: String,
    pub project: Project,
    /// No job: the project waits for a person (`project.approval_reason` says why), or has
    /// ended.
    #[schema(value_type = Option<Uuid>)]
    pub job_id: Option<Uuid>,
}

/// 202 with the project's id, status and namespace, the whole project, and its job; when no
/// job was started, `settled` (201 or 200) with the same fields and `job_id: null`.
fn project_answer(done: ProjectSubmitted, settled: StatusCode) -> Response {
    let project = &done.project;
    match &done.submitted {
        Some(submitted) => accepted(
            submitted,
            json!({ "id": project.id, "status": project.status, "namespace": project.namespace, "project": project }),
        ),
        None => {
            let body = ProjectSettled {
                id: project.id,
                status: project.status,
                namespace: project.namespace.clone(),
                job_id: None,
                project: done.project,
            };
            (settled, axum::Json(body)).into_response()
        }
    }
}

/// The catalog: SLA type -> performance tier -> quota.
#[utoipa::path(get, path = "/catalog", tag = "projects",
    responses((status = 200, body = BTreeMap<String, BTreeMap<String, CatalogEntry>>)),
    security(("bearer" = [])))]
async fn catalog(State(ctx): State<Context>, caller: Caller) -> Json<Catalog> {
    Json(app::projects::catalog(&ctx, &caller).clone())
}

/// Create a project in the caller's department (team leads): reserves the catalog's quota and
/// starts provisioning. 202 with the project's id, namespace and job; 201 with
/// `status: pending_approval` and no job when the request needs a field admin's approval.
#[utoipa::path(post, path = "/projects", tag = "projects", request_body = CreateProject,
    responses((status = 202, body = Accepted), (status = 201, body = ProjectSettled),
              (status = 403, body = ErrorEnvelope),
              (status = 409, body = ErrorEnvelope), (status = 422, body = ErrorEnvelope)),
    security(("bearer" = [])))]
async fn create_project(
    State(ctx): State<Context>,
    Permitted(caller, _): Permitted<CreatesProjects>,
    Json(body): Json<CreateProject>,
) -> Result<Response, ApiError> {
    Ok(project_answer(app::projects::create(&ctx, &caller, body).await?, StatusCode::CREATED))
}

/// List the projects the caller may see (deleted ones only when asked for by status).
#[utoipa::path(get, path = "/projects", tag = "projects", params(PageParams, ProjectQuery),
    responses((status = 200, body = Page<Project>)), security(("bearer" = [])))]
async fn list_projects(
    State(ctx): State<Context>,
    caller: Caller,
    Query(params): Query<PageParams>,
    Query(query): Query<ProjectQuery>,
) -> Result<Json<Page<Project>>, ApiError> {
    Ok(Json(app::projects::list(&ctx, &caller, query, params).await?))
}

/// A project: status, namespace, quota, SLA, tier, site, latest job, failure reason.
#[utoipa::path(get, path = "/projects/{id}", tag = "projects", params(("id" = Uuid, Path)),
    responses((status = 200, body = Project), (status = 404, body = ErrorEnvelope)), security(("bearer" = [])))]
async fn get_project(
    State(ctx): State<Context>,
    caller: Caller,
    Path(id): Path<Uuid>,
) -> Result<Json<Project>, ApiError> {
    Ok(Json(app::projects::get(&ctx, &caller, id).await?))
}

/// Change SLA type or tier: the quota difference is checked and reserved, then the project is
/// provisioned again.
#[utoipa::path(patch, path = "/projects/{id}", tag = "projects", params(("id" = Uuid, Path)), request_body = ResizeProject,
    responses((status = 202, body = Accepted), (status = 404, body = ErrorEnvelope),
              (status = 409, body = ErrorEnvelope), (status = 422, body = ErrorEnvelope)),
    security(("bearer" = [])))]
async fn resize_project(
    State(ctx): State<Context>,
    Permitted(caller, _): Permitted<ChangesProjects>,
    Path(id): Path<Uuid>,
    Json(body): Json<ResizeProject>,
) -> Result<Response, ApiError> {
    Ok(project_answer(app::projects::resize(&ctx, &caller, id, body).await?, StatusCode::OK))
}

/// Delete a project. With a grace period (`deletion.grace_secs`, a day by default) it waits in
/// `deletion_scheduled` until `delete_at`, namespace and quota kept, and `restore` cancels it
/// (202, no job yet); then, or at once without a grace period (202 with the job), its
/// manifests are removed, and its quota is freed once they are gone. Refused while it is
/// still provisioning. A request still waiting for approval is withdrawn at once (200,
/// `deleted`, no job).
#[utoipa::path(delete, path = "/projects/{id}", tag = "projects", params(("id" = Uuid, Path)),
    responses((status = 202, body = Accepted), (status = 200, body = ProjectSettled),
              (status = 404, body = ErrorEnvelope), (status = 409, body = ErrorEnvelope)),
    security(("bearer" = [])))]
async fn delete_project(
    State(ctx): State<Context>,
    caller: Caller,
    Path(id): Path<Uuid>,
) -> Result<Response, ApiError> {
    let done = app::projects::delete(&ctx, &caller, id).await?;
    let settled = match done.project.status {
        ProjectStatus::DeletionScheduled => StatusCode::ACCEPTED,
        _ => StatusCode::OK,
    };
    Ok(project_answer(done, settled))
}

/// Cancel a scheduled deletion during its grace period: the project is provisioned again
/// (202 with the job); a time to live that had run out is forgotten. 409 `not_scheduled`
/// otherwise.
#[utoipa::path(post, path = "/projects/{id}/restore", tag = "projects", params(("id" = Uuid, Path)),
    responses((status = 202, body = Accepted), (status = 404, body = ErrorEnvelope), (status = 409, body = ErrorEnvelope)),
    security(("bearer" = [])))]
async fn restore_project(
    State(ctx): State<Context>,
    Permitted(caller, _): Permitted<ChangesProjects>,
    Path(id): Path<Uuid>,
) -> Result<Response, ApiError> {
    Ok(project_answer(app::projects::restore(&ctx, &caller, id).await?, StatusCode::OK))
}

/// Run a failed provisioning again.
#[utoipa::path(post, path = "/projects/{id}/retry", tag = "projects", params(("id" = Uuid, Path)),
    responses((status = 202, body = Accepted), (status = 404, body = ErrorEnvelope), (status = 409, body = ErrorEnvelope)),
    security(("bearer" = [])))]
async fn retry_project(
    State(ctx): State<Context>,
    caller: Caller,
    Path(id): Path<Uuid>,
) -> Result<Response, ApiError> {
    Ok(project_answer(app::projects::retry(&ctx, &caller, id).await?, StatusCode::OK))
}

/// Run the work of a stuck project's status again (center admins): provisioning for one that
/// is provisioning, degraded or failed, deprovisioning for one that is deleting. Its job is
/// replaced; the reason is audited.
#[utoipa::path(post, path = "/projects/{id}/force-retry", tag = "projects", params(("id" = Uuid, Path)),
    request_body = ForceProject,
    responses((status = 202, body = Accepted), (status = 403, body = ErrorEnvelope),
              (status = 404, body = ErrorEnvelope), (status = 409, body = ErrorEnvelope)),
    security(("bearer" = [])))]
async fn force_retry_project(
    State(ctx): State<Context>,
    Permitted(caller, _): Permitted<ForcesProjects>,
    Path(id): Path<Uuid>,
    Json(body): Json<ForceProject>,
) -> Result<Response, ApiError> {
    let done = app::projects::force_retry(&ctx, &caller, id, body).await?;
    Ok(project_answer(done, StatusCode::OK))
}

/// Fail a stuck project (center admins): provisioning, degraded or deleting becomes failed
/// with the reason; its job is cancelled, and a delivery still running can no longer write.
#[utoipa::path(post, path = "/projects/{id}/force-fail", tag = "projects", params(("id" = Uuid, Path)),
    request_body = ForceProject,
    responses((status = 200, body = Project), (status = 403, body = ErrorEnvelope),
              (status = 404, body = ErrorEnvelope), (status = 409, body = ErrorEnvelope)),
    security(("bearer" = [])))]
async fn force_fail_project(
    State(ctx): State<Context>,
    Permitted(caller, _): Permitted<ForcesProjects>,
    Path(id): Path<Uuid>,
    Json(body): Json<ForceProject>,
) -> Result<Json<Project>, ApiError> {
    Ok(Json(app::projects::force_fail(&ctx, &caller, id, body).await?))
}

/// Approve a request waiting for approval (the field admin of its field, or a center admin):
/// provisioning starts. 202 with the project and its job; 409 `not_pending` when it is not
/// waiting (already decided, withdrawn or expired).
#[utoipa::path(post, path = "/projects/{id}/approve", tag = "projects", params(("id" = Uuid, Path)),
    responses((status = 202, body = Accepted), (status = 403, body = ErrorEnvelope),
              (status = 404, body = ErrorEnvelope), (status = 409, body = ErrorEnvelope)),
    security(("bearer" = [])))]
async fn approve_project(
    State(ctx): State<Context>,
    caller: Caller,
    Path(id): Path<Uuid>,
) -> Result<Response, ApiError> {
    Ok(project_answer(app::projects::approve(&ctx, &caller, id).await?, StatusCode::OK))
}

/// Reject a request waiting for approval, with a reason (the field admin of its field, or a
/// center admin): the project ends `rejected`, the reason as its `failure_reason`, and its
/// quota is freed. 200 with the project; 409 `not_pending` when it is not waiting.
#[utoipa::path(post, path = "/projects/{id}/reject", tag = "projects", params(("id" = Uuid, Path)),
    request_body = RejectProject,
    responses((status = 200, body = ProjectSettled), (status = 403, body = ErrorEnvelope),
              (status = 404, body = ErrorEnvelope), (status = 409, body = ErrorEnvelope),
              (status = 422, body = ErrorEnvelope)),
    security(("bearer" = [])))]
async fn reject_project(
    State(ctx): State<Context>,
    Permitted(caller, _): Permitted<DecidesProjects>,
    Path(id): Path<Uuid>,
    Json(body): Json<RejectProject>,
) -> Result<Response, ApiError> {
    Ok(project_answer(app::projects::reject(&ctx, &caller, id, body).await?, StatusCode::OK))
}
