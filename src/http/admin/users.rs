//! Accounts, managed by center admins.

use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use sqlx::PgConnection;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::context::Context;
use crate::domain::name::Username;
use crate::domain::password;
use crate::domain::role::{Role, Scope};
use crate::http::auth::Caller;
use crate::http::error::{ApiError, ErrorEnvelope};
use crate::http::extract::{Json, Path, Query};
use crate::http::page::PageParams;
use crate::store::Page;
use crate::store::audit::{self, Change};
use crate::store::users::{self, NewUser, User, UserFilter};

pub fn router() -> OpenApiRouter<Context> {
    OpenApiRouter::new().routes(routes!(list_users, create_user)).routes(routes!(
        get_user,
        update_user,
        delete_user
    ))
}

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UserQuery {
    pub role: Option<Role>,
    pub field_id: Option<Uuid>,
    pub department_id: Option<Uuid>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateUser {
    pub username: String,
    /// At least 8 characters.
    pub password: String,
    pub role: Role,
    /// Required for a field admin.
    pub field_id: Option<Uuid>,
    /// Required for a team lead.
    pub department_id: Option<Uuid>,
}

/// Absent keys keep their value. Changing `role` clears a scope id that is not given again.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateUser {
    pub password: Option<String>,
    pub role: Option<Role>,
    pub field_id: Option<Uuid>,
    pub department_id: Option<Uuid>,
    pub disabled: Option<bool>,
}

async fn hash_password(password: String) -> Result<String, ApiError> {
    password::check_policy(&password)?;
    password::hash_blocking(password).await.map_err(ApiError::internal)
}

/// 409 when `user` is the last enabled center admin, which would lock everyone out.
async fn ensure_not_last_admin(conn: &mut PgConnection, user: &User) -> Result<(), ApiError> {
    if user.role != Role::CenterAdmin || user.disabled {
        return Ok(());
    }
    let admins = users::lock_active_center_admins(conn).await?;
    if admins.iter().all(|id| *id == user.id) {
        return Err(ApiError::conflict(
            "last_center_admin",
            "this is the last enabled center_admin; create another one first",
        ));
    }
    Ok(())
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
    caller.require(&[Role::CenterAdmin])?;
    let page = params.request()?;
    let filter = UserFilter {
        role: query.role,
        field_id: query.field_id,
        department_id: query.department_id,
    };
    let mut conn = ctx.pool.acquire().await?;
    Ok(Json(users::list(&mut conn, &filter, page).await?))
}

/// Create an account.
#[utoipa::path(post, path = "/admin/users", tag = "admin", request_body = CreateUser,
    responses((status = 201, body = User), (status = 409, body = ErrorEnvelope), (status = 422, body = ErrorEnvelope)),
    security(("bearer" = [])))]
async fn create_user(
    State(ctx): State<Context>,
    caller: Caller,
    Json(body): Json<CreateUser>,
) -> Result<(StatusCode, Json<User>), ApiError> {
    caller.require(&[Role::CenterAdmin])?;
    let username = Username::parse(&body.username)?;
    let scope = Scope::for_role(body.role, body.field_id, body.department_id)?;
    let password_hash = hash_password(body.password).await?;
    let new = NewUser {
        username: username.as_str(),
        password_hash: &password_hash,
        role: body.role,
        scope,
        is_demo: false,
    };
    let mut tx = ctx.pool.begin().await?;
    let user = users::insert(&mut tx, &new).await.map_err(|e| ApiError::from_store("user", e))?;
    let change = Change::create("user", user.id, &user);
    audit::record(&mut tx, &caller.actor(), change).await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, Json(user)))
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
    caller.require(&[Role::CenterAdmin])?;
    let mut conn = ctx.pool.acquire().await?;
    Ok(Json(users::get(&mut conn, id).await.map_err(|e| ApiError::from_store("user", e))?))
}

/// Change an account's role, scope, password or disabled flag.
#[utoipa::path(patch, path = "/admin/users/{id}", tag = "admin", params(("id" = Uuid, Path)),
    request_body = UpdateUser,
    responses((status = 200, body = User), (status = 404, body = ErrorEnvelope),
              (status = 409, body = ErrorEnvelope), (status = 422, body = ErrorEnvelope)),
    security(("bearer" = [])))]
async fn update_user(
    State(ctx): State<Context>,
    caller: Caller,
    Path(id): Path<Uuid>,
    Json(body): Json<UpdateUser>,
) -> Result<Json<User>, ApiError> {
    caller.require(&[Role::CenterAdmin])?;
    let password_hash = match body.password {
        Some(password) => Some(hash_password(password).await?),
        None => None,
    };
    let mut tx = ctx.pool.begin().await?;
    let before = users::get(&mut tx, id).await.map_err(|e| ApiError::from_store("user", e))?;
    let role = body.role.unwrap_or(before.role);
    let keep = role == before.role;
    let field_id = body.field_id.or(before.field_id.filter(|_| keep));
    let department_id = body.department_id.or(before.department_id.filter(|_| keep));
    let scope = Scope::for_role(role, field_id, department_id)?;
    let disabled = body.disabled.unwrap_or(before.disabled);
    if role != Role::CenterAdmin || disabled {
        ensure_not_last_admin(&mut tx, &before).await?;
    }
    let mut after = users::update_role_scope(&mut tx, id, role, scope, disabled)
        .await
        .map_err(|e| ApiError::from_store("user", e))?;
    if let Some(hash) = &password_hash {
        after = users::set_password(&mut tx, id, hash).await?;
    }
    let verb = if password_hash.is_some() { "update_with_password" } else { "update" };
    let change = Change::new("user", verb, id).before(&before).after(&after);
    audit::record(&mut tx, &caller.actor(), change).await?;
    tx.commit().await?;
    Ok(Json(after))
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
    caller.require(&[Role::CenterAdmin])?;
    if id == caller.user.id {
        return Err(ApiError::conflict("cannot_delete_self", "you cannot delete your own account"));
    }
    let mut tx = ctx.pool.begin().await?;
    let before = users::get(&mut tx, id).await.map_err(|e| ApiError::from_store("user", e))?;
    ensure_not_last_admin(&mut tx, &before).await?;
    users::delete(&mut tx, id).await.map_err(|e| ApiError::from_store("user", e))?;
    let change = Change::delete("user", id, &before);
    audit::record(&mut tx, &caller.actor(), change).await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}
