//! Sites and fields: the same shape, so one implementation serves both resources.

use axum::extract::State;
use axum::http::StatusCode;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::app::organisation::{CreateUnit, UpdateUnit};
use crate::app::{self, Caller, PageParams};
use crate::context::Context;
use crate::http::auth::{ManagesOrganisation, Permitted};
use crate::http::error::{ApiError, ErrorEnvelope};
use crate::http::extract::{Json, Path, Query};
use crate::store::Page;
use crate::store::org::{OrgUnit, UnitKind};

async fn list(
    ctx: Context,
    caller: Caller,
    kind: UnitKind,
    params: PageParams,
) -> Result<Json<Page<OrgUnit>>, ApiError> {
    Ok(Json(app::organisation::list_units(&ctx, &caller, kind, params).await?))
}

async fn get(
    ctx: Context,
    caller: Caller,
    kind: UnitKind,
    id: Uuid,
) -> Result<Json<OrgUnit>, ApiError> {
    Ok(Json(app::organisation::get_unit(&ctx, &caller, kind, id).await?))
}

async fn create(
    ctx: Context,
    caller: Caller,
    kind: UnitKind,
    body: CreateUnit,
) -> Result<(StatusCode, Json<OrgUnit>), ApiError> {
    let unit = app::organisation::create_unit(&ctx, &caller, kind, body).await?;
    Ok((StatusCode::CREATED, Json(unit)))
}

async fn update(
    ctx: Context,
    caller: Caller,
    kind: UnitKind,
    id: Uuid,
    body: UpdateUnit,
) -> Result<Json<OrgUnit>, ApiError> {
    Ok(Json(app::organisation::update_unit(&ctx, &caller, kind, id, body).await?))
}

async fn delete(
    ctx: Context,
    caller: Caller,
    kind: UnitKind,
    id: Uuid,
) -> Result<StatusCode, ApiError> {
    app::organisation::delete_unit(&ctx, &caller, kind, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub fn router() -> OpenApiRouter<Context> {
    OpenApiRouter::new()
        .routes(routes!(list_sites, create_site))
        .routes(routes!(get_site, update_site, delete_site))
        .routes(routes!(list_fields, create_field))
        .routes(routes!(get_field, update_field, delete_field))
}

/// List sites (data centres).
#[utoipa::path(get, path = "/admin/sites", tag = "admin", params(PageParams),
    responses((status = 200, body = Page<OrgUnit>), (status = 403, body = ErrorEnvelope)),
    security(("bearer" = [])))]
async fn list_sites(
    State(ctx): State<Context>,
    caller: Caller,
    Query(p): Query<PageParams>,
) -> Result<Json<Page<OrgUnit>>, ApiError> {
    list(ctx, caller, UnitKind::Site, p).await
}

/// Create a site.
#[utoipa::path(post, path = "/admin/sites", tag = "admin", request_body = CreateUnit,
    responses((status = 201, body = OrgUnit), (status = 409, body = ErrorEnvelope), (status = 422, body = ErrorEnvelope)),
    security(("bearer" = [])))]
async fn create_site(
    State(ctx): State<Context>,
    Permitted(caller, _): Permitted<ManagesOrganisation>,
    Json(body): Json<CreateUnit>,
) -> Result<(StatusCode, Json<OrgUnit>), ApiError> {
    create(ctx, caller, UnitKind::Site, body).await
}

/// Get a site.
#[utoipa::path(get, path = "/admin/sites/{id}", tag = "admin", params(("id" = Uuid, Path)),
    responses((status = 200, body = OrgUnit), (status = 404, body = ErrorEnvelope)),
    security(("bearer" = [])))]
async fn get_site(
    State(ctx): State<Context>,
    caller: Caller,
    Path(id): Path<Uuid>,
) -> Result<Json<OrgUnit>, ApiError> {
    get(ctx, caller, UnitKind::Site, id).await
}

/// Change a site's display name.
#[utoipa::path(patch, path = "/admin/sites/{id}", tag = "admin", params(("id" = Uuid, Path)), request_body = UpdateUnit,
    responses((status = 200, body = OrgUnit), (status = 404, body = ErrorEnvelope)),
    security(("bearer" = [])))]
async fn update_site(
    State(ctx): State<Context>,
    Permitted(caller, _): Permitted<ManagesOrganisation>,
    Path(id): Path<Uuid>,
    Json(body): Json<UpdateUnit>,
) -> Result<Json<OrgUnit>, ApiError> {
    update(ctx, caller, UnitKind::Site, id, body).await
}

/// Delete a site; refused (409) while servers, quotas or projects refer to it.
#[utoipa::path(delete, path = "/admin/sites/{id}", tag = "admin", params(("id" = Uuid, Path)),
    responses((status = 204), (status = 404, body = ErrorEnvelope), (status = 409, body = ErrorEnvelope)),
    security(("bearer" = [])))]
async fn delete_site(
    State(ctx): State<Context>,
    caller: Caller,
    Path(id): Path<Uuid>,
) -> Result<StatusCode, ApiError> {
    delete(ctx, caller, UnitKind::Site, id).await
}

/// List fields (business areas).
#[utoipa::path(get, path = "/admin/fields", tag = "admin", params(PageParams),
    responses((status = 200, body = Page<OrgUnit>), (status = 403, body = ErrorEnvelope)),
    security(("bearer" = [])))]
async fn list_fields(
    State(ctx): State<Context>,
    caller: Caller,
    Query(p): Query<PageParams>,
) -> Result<Json<Page<OrgUnit>>, ApiError> {
    list(ctx, caller, UnitKind::Field, p).await
}

/// Create a field.
#[utoipa::path(post, path = "/admin/fields", tag = "admin", request_body = CreateUnit,
    responses((status = 201, body = OrgUnit), (status = 409, body = ErrorEnvelope), (status = 422, body = ErrorEnvelope)),
    security(("bearer" = [])))]
async fn create_field(
    State(ctx): State<Context>,
    Permitted(caller, _): Permitted<ManagesOrganisation>,
    Json(body): Json<CreateUnit>,
) -> Result<(StatusCode, Json<OrgUnit>), ApiError> {
    create(ctx, caller, UnitKind::Field, body).await
}

/// Get a field.
#[utoipa::path(get, path = "/admin/fields/{id}", tag = "admin", params(("id" = Uuid, Path)),
    responses((status = 200, body = OrgUnit), (status = 404, body = ErrorEnvelope)),
    security(("bearer" = [])))]
async fn get_field(
    State(ctx): State<Context>,
    caller: Caller,
    Path(id): Path<Uuid>,
) -> Result<Json<OrgUnit>, ApiError> {
    get(ctx, caller, UnitKind::Field, id).await
}

/// Change a field's display name.
#[utoipa::path(patch, path = "/admin/fields/{id}", tag = "admin", params(("id" = Uuid, Path)), request_body = UpdateUnit,
    responses((status = 200, body = OrgUnit), (status = 404, body = ErrorEnvelope)),
    security(("bearer" = [])))]
async fn update_field(
    State(ctx): State<Context>,
    Permitted(caller, _): Permitted<ManagesOrganisation>,
    Path(id): Path<Uuid>,
    Json(body): Json<UpdateUnit>,
) -> Result<Json<OrgUnit>, ApiError> {
    update(ctx, caller, UnitKind::Field, id, body).await
}

/// Delete a field; refused (409) while departments, users or servers refer to it.
#[utoipa::path(delete, path = "/admin/fields/{id}", tag = "admin", params(("id" = Uuid, Path)),
    responses((status = 204), (status = 404, body = ErrorEnvelope), (status = 409, body = ErrorEnvelope)),
    security(("bearer" = [])))]
async fn delete_field(
    State(ctx): State<Context>,
    caller: Caller,
    Path(id): Path<Uuid>,
) -> Result<StatusCode, ApiError> {
    delete(ctx, caller, UnitKind::Field, id).await
}
