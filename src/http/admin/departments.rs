//! Departments of fields.

use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::double_option;
use crate::context::Context;
use crate::domain::ValidationError;
use crate::domain::name::{Label, parse_display_name};
use crate::domain::role::Role;
use crate::http::auth::Caller;
use crate::http::error::{ApiError, ErrorEnvelope};
use crate::http::extract::{Json, Path, Query};
use crate::http::page::PageParams;
use crate::store::Page;
use crate::store::audit::{self, Change};
use crate::store::org::{self, Department, DepartmentValues};

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

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateDepartment {
    pub field_id: Uuid,
    /// DNS-1123 label, unique across fields; cannot be changed later.
    pub name: String,
    pub display_name: Option<String>,
    /// Group given edit rights in the department's namespaces.
    pub k8s_group: Option<String>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateDepartment {
    pub display_name: Option<String>,
    /// `null` removes the group.
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>)]
    pub k8s_group: Option<Option<String>>,
}

fn parse_group(value: Option<&str>) -> Result<Option<&str>, ValidationError> {
    match value.map(str::trim) {
        Some(group) if group.is_empty() || group.len() > 253 => {
            Err(ValidationError::new("k8s_group", "must be 1 to 253 characters long"))
        }
        other => Ok(other),
    }
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
    caller.require(&[Role::CenterAdmin])?;
    let page = params.request()?;
    let mut conn = ctx.pool.acquire().await?;
    Ok(Json(org::list_departments(&mut conn, filter.field_id, page).await?))
}

/// Create a department in a field.
#[utoipa::path(post, path = "/admin/departments", tag = "admin", request_body = CreateDepartment,
    responses((status = 201, body = Department), (status = 409, body = ErrorEnvelope), (status = 422, body = ErrorEnvelope)),
    security(("bearer" = [])))]
async fn create_department(
    State(ctx): State<Context>,
    caller: Caller,
    Json(body): Json<CreateDepartment>,
) -> Result<(StatusCode, Json<Department>), ApiError> {
    caller.require(&[Role::CenterAdmin])?;
    let name = Label::parse("name", &body.name)?;
    let display_name =
        parse_display_name("display_name", body.display_name.as_deref(), name.as_str())?;
    let values = DepartmentValues {
        field_id: body.field_id,
        name: name.as_str(),
        display_name: &display_name,
        k8s_group: parse_group(body.k8s_group.as_deref())?,
    };
    let mut tx = ctx.pool.begin().await?;
    let dept = org::insert_department(&mut tx, &values)
        .await
        .map_err(|e| ApiError::from_store("department", e))?;
    let change = Change::create("department", dept.id, &dept);
    audit::record(&mut tx, &caller.actor(), change).await?;
    tx.commit().await?;
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
    caller.require(&[Role::CenterAdmin])?;
    let mut conn = ctx.pool.acquire().await?;
    let dept = org::get_department(&mut conn, id).await;
    Ok(Json(dept.map_err(|e| ApiError::from_store("department", e))?))
}

/// Change a department's display name or group. Its field and name are fixed.
#[utoipa::path(patch, path = "/admin/departments/{id}", tag = "admin", params(("id" = Uuid, Path)),
    request_body = UpdateDepartment,
    responses((status = 200, body = Department), (status = 404, body = ErrorEnvelope), (status = 422, body = ErrorEnvelope)),
    security(("bearer" = [])))]
async fn update_department(
    State(ctx): State<Context>,
    caller: Caller,
    Path(id): Path<Uuid>,
    Json(body): Json<UpdateDepartment>,
) -> Result<Json<Department>, ApiError> {
    caller.require(&[Role::CenterAdmin])?;
    let mut tx = ctx.pool.begin().await?;
    let before = org::get_department(&mut tx, id)
        .await
        .map_err(|e| ApiError::from_store("department", e))?;
    let display_name = parse_display_name(
        "display_name",
        Some(body.display_name.as_deref().unwrap_or(&before.display_name)),
        &before.name,
    )?;
    let group = match &body.k8s_group {
        Some(new) => parse_group(new.as_deref())?,
        None => before.k8s_group.as_deref(),
    };
    let after = org::update_department(&mut tx, id, &display_name, group).await?;
    let change = Change::update("department", id, &before, &after);
    audit::record(&mut tx, &caller.actor(), change).await?;
    tx.commit().await?;
    Ok(Json(after))
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
    caller.require(&[Role::CenterAdmin])?;
    let mut tx = ctx.pool.begin().await?;
    let before = org::delete_department(&mut tx, id)
        .await
        .map_err(|e| ApiError::from_store("department", e))?;
    let change = Change::delete("department", id, &before);
    audit::record(&mut tx, &caller.actor(), change).await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}
