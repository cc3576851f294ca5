//! Projects: create (reserving quota), read, resize, delete, retry; and the catalog.

use axum::extract::State;
use axum::response::Response;
use serde_json::json;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::error::{ApiError, ErrorEnvelope};
use super::extract::{Json, Path, Query};
use super::jobs::{Accepted, accepted};
use crate::app::projects::{
    CreateProject, ForceProject, ProjectQuery, ProjectSubmitted, ResizeProject,
};
use crate::app::{self, Caller, PageParams};
use crate::context::Context;
use crate::domain::catalog::{Catalog, CatalogEntry};
use crate::http::auth::{ChangesProjects, CreatesProjects, ForcesProjects, Permitted};
use crate::store::Page;
use crate::store::projects::Project;

pub fn router() -> OpenApiRouter<Context> {
    OpenApiRouter::new()
        .routes(routes!(list_projects, create_project))
        .routes(routes!(get_project, resize_project, delete_project))
        .routes(routes!(retry_project))
        .routes(routes!(force_retry_project))
        .routes(routes!(force_fail_project))
        .routes(routes!(catalog))
}

/// 202 with the project's id, status and namespace, the whole project, and its job.
fn project_answer(done: &ProjectSubmitted) -> Response {
    let project = &done.project;
    accepted(
        &done.submitted,
        json!({ "id": project.id, "status": project.status, "namespace": project.namespace, "project": project }),
    )
}

/// The catalog: SLA type -> performance tier -> quota.
#[utoipa::path(get, path = "/catalog", tag = "projects",
    responses((status = 200, body = BTreeMap<String, BTreeMap<String, CatalogEntry>>)),
    security(("bearer" = [])))]
async fn catalog(State(ctx): State<Context>, caller: Caller) -> Json<Catalog> {
    Json(app::projects::catalog(&ctx, &caller).clone())
}

/// Create a project in the caller's department (team leads): reserves the catalog's quota and
/// starts provisioning. 202 with the project's id, namespace and job.
#[utoipa::path(post, path = "/projects", tag = "projects", request_body = CreateProject,
    responses((status = 202, body = Accepted), (status = 403, body = ErrorEnvelope),
              (status = 409, body = ErrorEnvelope), (status = 422, body = ErrorEnvelope)),
    security(("bearer" = [])))]
async fn create_project(
    State(ctx): State<Context>,
    Permitted(caller, _): Permitted<CreatesProjects>,
    Json(body): Json<CreateProject>,
) -> Result<Response, ApiError> {
    Ok(project_answer(&app::projects::create(&ctx, &caller, body).await?))
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
    Ok(project_answer(&app::projects::resize(&ctx, &caller, id, body).await?))
}

/// Delete a project: its manifests are removed, and its quota is freed once they are gone.
/// Refused while it is still provisioning.
#[utoipa::path(delete, path = "/projects/{id}", tag = "projects", params(("id" = Uuid, Path)),
    responses((status = 202, body = Accepted), (status = 404, body = ErrorEnvelope), (status = 409, body = ErrorEnvelope)),
    security(("bearer" = [])))]
async fn delete_project(
    State(ctx): State<Context>,
    caller: Caller,
    Path(id): Path<Uuid>,
) -> Result<Response, ApiError> {
    Ok(project_answer(&app::projects::delete(&ctx, &caller, id).await?))
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
    Ok(project_answer(&app::projects::retry(&ctx, &caller, id).await?))
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
    Ok(project_answer(&done))
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
