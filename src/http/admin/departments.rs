//! Departments of fields.

use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::app::organisation::{CreateDepartment, UpdateDepartment};
use crate::app::{self, Caller, PageParams};
use crate::context::Context;
use crate::http::auth::{ManagesOrganisation, Permitted};
use crate::http::error::{ApiError, ErrorEnvelope};
use crate::http::extract::{Json, Path, Query};
use crate::store::Page;
use crate::store::org::Department;

pub fn router() -> OpenApiRouter<Context> {
    OpenApiRouter::new().routes(routes!(list_departments, create_department)).routes(routes!(
        get_department,
        update_department,
        delete_department
    ))
}

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DepartmentFilter {
    /// Only the departments of this field.
    pub field_id: Option<Uuid>,
}

/// List departments, optionally of one field.
#[utoipa::path(get, path = "/admin/departments", tag = "admin", params(PageParams, DepartmentFilter),
    responses((status = 200, body = Page<Department>), (status = 403, body = ErrorEnvelope)),
    security(("bearer" = [])))]
async fn list_departments(
    State(ctx): State<Context>,
    caller: Caller,
    Query(params): Query<PageParams>,
    Query(filter): Query<DepartmentFilter>,
) -> Result<Json<Page<Department>>, ApiError> {
    Ok(Json(app::organisation::list_departments(&ctx, &caller, filter.field_id, params).await?))
}

/// Create a department in a field.
#[utoipa::path(post, path = "/admin/departments", tag = "admin", request_body = CreateDepartment,
    responses((status = 201, body = Department), (status = 409, body = ErrorEnvelope), (status = 422, body = ErrorEnvelope)),
    security(("bearer" = [])))]
async fn create_department(
    State(ctx): State<Context>,
    Permitted(caller, _): Permitted<ManagesOrganisation>,
    Json(body): Json<CreateDepartment>,
) -> Result<(StatusCode, Json<Department>), ApiError> {
    let dept = app::organisation::create_department(&ctx, &caller, body).await?;
    Ok((StatusCode::CREATED, Json(dept)))
}

/// Get a department.
#[utoipa::path(get, path = "/admin/departments/{id}", tag = "admin", params(("id" = Uuid, Path)),
    responses((status = 200, body = Department), (status = 404, body = ErrorEnvelope)),
    security(("bearer" = [])))]
async fn get_department(
    State(ctx): State<Context>,
    caller: Caller,
    Path(id): Path<Uuid>,
) -> Result<Json<Department>, ApiError> {
    Ok(Json(app::organisation::get_department(&ctx, &caller, id).await?))
}

/// Change a department's display name or group. Its field and name are fixed.
#[utoipa::path(patch, path = "/admin/departments/{id}", tag = "admin", params(("id" = Uuid, Path)),
    request_body = UpdateDepartment,
    responses((status = 200, body = Department), (status = 404, body = ErrorEnvelope), (status = 422, body = ErrorEnvelope)),
    security(("bearer" = [])))]
async fn update_department(
    State(ctx): State<Context>,
    Permitted(caller, _): Permitted<ManagesOrganisation>,
    Path(id): Path<Uuid>,
    Json(body): Json<UpdateDepartment>,
) -> Result<Json<Department>, ApiError> {
    Ok(Json(app::organisation::update_department(&ctx, &caller, id, body).await?))
}

/// Delete a department; refused (409) while team leads, quotas or projects refer to it.
#[utoipa::path(delete, path = "/admin/departments/{id}", tag = "admin", params(("id" = Uuid, Path)),
    responses((status = 204), (status = 404, body = ErrorEnvelope), (status = 409, body = ErrorEnvelope)),
    security(("bearer" = [])))]
async fn delete_department(
    State(ctx): State<Context>,
    caller: Caller,
    Path(id): Path<Uuid>,
) -> Result<StatusCode, ApiError> {
    app::organisation::delete_department(&ctx, &caller, id).await?;
    Ok(StatusCode::NO_CONTENT)
}
