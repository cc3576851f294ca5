//! Accounts, managed by center admins.

use axum::extract::State;
use axum::http::StatusCode;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::app::users::{CreateUser, UpdateUser, UserQuery};
use crate::app::{self, Caller, PageParams};
use crate::context::Context;
use crate::http::auth::{ManagesOrganisation, Permitted};
use crate::http::error::{ApiError, ErrorEnvelope};
use crate::http::extract::{Json, Path, Query};
use crate::store::Page;
use crate::store::users::User;

pub fn router() -> OpenApiRouter<Context> {
    OpenApiRouter::new().routes(routes!(list_users, create_user)).routes(routes!(
        get_user,
        update_user,
        delete_user
    ))
}

/// List accounts, filtered by role, field or department.
#[utoipa::path(get, path = "/admin/users", tag = "admin", params(PageParams, UserQuery),
    responses((status = 200, body = Page<User>), (status = 403, body = ErrorEnvelope)),
    security(("bearer" = [])))]
async fn list_users(
    State(ctx): State<Context>,
    caller: Caller,
    Query(params): Query<PageParams>,
    Query(query): Query<UserQuery>,
) -> Result<Json<Page<User>>, ApiError> {
    Ok(Json(app::users::list(&ctx, &caller, query, params).await?))
}

/// Create an account.
#[utoipa::path(post, path = "/admin/users", tag = "admin", request_body = CreateUser,
    responses((status = 201, body = User), (status = 409, body = ErrorEnvelope), (status = 422, body = ErrorEnvelope)),
    security(("bearer" = [])))]
async fn create_user(
    State(ctx): State<Context>,
    Permitted(caller, _): Permitted<ManagesOrganisation>,
    Json(body): Json<CreateUser>,
) -> Result<(StatusCode, Json<User>), ApiError> {
    Ok((StatusCode::CREATED, Json(app::users::create(&ctx, &caller, body).await?)))
}

/// Get an account.
#[utoipa::path(get, path = "/admin/users/{id}", tag = "admin", params(("id" = Uuid, Path)),
    responses((status = 200, body = User), (status = 404, body = ErrorEnvelope)),
    security(("bearer" = [])))]
async fn get_user(
    State(ctx): State<Context>,
    caller: Caller,
    Path(id): Path<Uuid>,
) -> Result<Json<User>, ApiError> {
    Ok(Json(app::users::get(&ctx, &caller, id).await?))
}

/// Change an account's role, scope, password or disabled flag.
#[utoipa::path(patch, path = "/admin/users/{id}", tag = "admin", params(("id" = Uuid, Path)),
    request_body = UpdateUser,
    responses((status = 200, body = User), (status = 404, body = ErrorEnvelope),
              (status = 409, body = ErrorEnvelope), (status = 422, body = ErrorEnvelope)),
    security(("bearer" = [])))]
async fn update_user(
    State(ctx): State<Context>,
    Permitted(caller, _): Permitted<ManagesOrganisation>,
    Path(id): Path<Uuid>,
    Json(body): Json<UpdateUser>,
) -> Result<Json<User>, ApiError> {
    Ok(Json(app::users::update(&ctx, &caller, id, body).await?))
}

/// Delete an account; not one's own, nor the last enabled center admin.
#[utoipa::path(delete, path = "/admin/users/{id}", tag = "admin", params(("id" = Uuid, Path)),
    responses((status = 204), (status = 404, body = ErrorEnvelope), (status = 409, body = ErrorEnvelope)),
    security(("bearer" = [])))]
async fn delete_user(
    State(ctx): State<Context>,
    caller: Caller,
    Path(id): Path<Uuid>,
) -> Result<StatusCode, ApiError> {
    app::users::delete(&ctx, &caller, id).await?;
    Ok(StatusCode::NO_CONTENT)
}
