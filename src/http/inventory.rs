//! Servers, their allocation to fields, department quotas, and the capacity views.

use axum::extract::{RawQuery, State};
use axum::response::Response;
use serde_json::json;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::error::{ApiError, ErrorEnvelope};
use super::extract::{Json, Path, Query};
use super::jobs::{Accepted, accepted};
use crate::app::allocation::{
    AssignServer, CapacityImpact, DepartmentQuotas, FieldCapacity, SetQuota,
};
use crate::app::inventory::ServerQuery;
use crate::app::{self, Caller, PageParams};
use crate::context::Context;
use crate::http::auth::{AllocatesServers, Permitted, SetsQuotas};
use crate::store::Page;
use crate::store::servers::Server;

pub fn router() -> OpenApiRouter<Context> {
    OpenApiRouter::new()
        .routes(routes!(sync_servers))
        .routes(routes!(list_servers))
        .routes(routes!(assign_server))
        .routes(routes!(unassign_server))
        .routes(routes!(set_department_quota))
        .routes(routes!(field_capacity))
        .routes(routes!(capacity_impact))
        .routes(routes!(department_quota))
}

/// `?force=true` on a sync.
#[derive(Debug, Default, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SyncQuery {
    /// Mark servers missing even when that takes more than `inventory.missing_guard` of a
    /// site's servers away at once.
    #[serde(default)]
    pub force: bool,
}

/// Pull the server inventory now (center admins). While a sync is queued or running, answers
/// with that job instead of starting another. A sync that would mark more than
/// `inventory.missing_guard` of a site's servers missing fails instead, unless forced.
#[utoipa::path(post, path = "/admin/sync/servers", tag = "inventory", params(SyncQuery),
    responses((status = 202, body = Accepted), (status = 403, body = ErrorEnvelope)),
    security(("bearer" = [])))]
async fn sync_servers(
    State(ctx): State<Context>,
    caller: Caller,
    Query(query): Query<SyncQuery>,
) -> Result<Response, ApiError> {
    let submitted = app::inventory::request_sync(&ctx, &caller, query.force).await?;
    Ok(accepted(&submitted, json!({})))
}

/// List servers. Field admins see their field's servers only.
#[utoipa::path(get, path = "/servers", tag = "inventory", params(PageParams, ServerQuery),
    responses((status = 200, body = Page<Server>), (status = 403, body = ErrorEnvelope)),
    security(("bearer" = [])))]
async fn list_servers(
    State(ctx): State<Context>,
    caller: Caller,
    Query(params): Query<PageParams>,
    Query(query): Query<ServerQuery>,
) -> Result<Json<Page<Server>>, ApiError> {
    Ok(Json(app::inventory::list_servers(&ctx, &caller, query, params).await?))
}

/// Assign a server to a field, or move it to another (center admins). The job re-checks that
/// a field it leaves still holds its quotas.
#[utoipa::path(post, path = "/allocations/servers", tag = "inventory", request_body = AssignServer,
    responses((status = 202, body = Accepted), (status = 404, body = ErrorEnvelope),
              (status = 409, body = ErrorEnvelope), (status = 422, body = ErrorEnvelope)),
    security(("bearer" = [])))]
async fn assign_server(
    State(ctx): State<Context>,
    Permitted(caller, _): Permitted<AllocatesServers>,
    Json(body): Json<AssignServer>,
) -> Result<Response, ApiError> {
    let submitted = app::allocation::assign_server(&ctx, &caller, body).await?;
    Ok(accepted(&submitted, json!({})))
}

/// Take a server away from its field (center admins); refused when the field's department
/// quotas at that site would no longer fit.
#[utoipa::path(delete, path = "/allocations/servers/{server_id}", tag = "inventory",
    params(("server_id" = Uuid, Path)),
    responses((status = 202, body = Accepted), (status = 404, body = ErrorEnvelope), (status = 409, body = ErrorEnvelope)),
    security(("bearer" = [])))]
async fn unassign_server(
    State(ctx): State<Context>,
    caller: Caller,
    Path(server_id): Path<Uuid>,
) -> Result<Response, ApiError> {
    let submitted = app::allocation::unassign_server(&ctx, &caller, server_id).await?;
    Ok(accepted(&submitted, json!({})))
}

/// Create or change a department's quota at a site (center admins, or the field's admin).
/// Refused (409) above the field's free capacity there or below what the department's
/// projects use; the job re-checks under lock.
#[utoipa::path(post, path = "/allocations/department-quota", tag = "inventory", request_body = SetQuota,
    responses((status = 202, body = Accepted), (status = 403, body = ErrorEnvelope),
              (status = 409, body = ErrorEnvelope), (status = 422, body = ErrorEnvelope)),
    security(("bearer" = [])))]
async fn set_department_quota(
    State(ctx): State<Context>,
    Permitted(caller, _): Permitted<SetsQuotas>,
    Json(body): Json<SetQuota>,
) -> Result<Response, ApiError> {
    let submitted = app::allocation::set_quota(&ctx, &caller, body).await?;
    Ok(accepted(&submitted, json!({})))
}

/// A field's capacity per site: servers, CPU, RAM, allocated to departments, free, deficit.
#[utoipa::path(get, path = "/fields/{id}/capacity", tag = "inventory", params(("id" = Uuid, Path)),
    responses((status = 200, body = FieldCapacity), (status = 403, body = ErrorEnvelope), (status = 404, body = ErrorEnvelope)),
    security(("bearer" = [])))]
async fn field_capacity(
    State(ctx): State<Context>,
    caller: Caller,
    Path(id): Path<Uuid>,
) -> Result<Json<FieldCapacity>, ApiError> {
    Ok(Json(app::allocation::field_capacity(&ctx, &caller, id).await?))
}

/// What losing servers would do to the field: per site, capacity now and after, and which
/// departments would fall into deficit and by how much (each quota backed in proportion to
/// what is left). Changes nothing.
#[utoipa::path(get, path = "/fields/{id}/capacity/impact", tag = "inventory",
    params(("id" = Uuid, Path),
           ("server" = Vec<Uuid>, Query, description = "A server of the field; repeat it (or separate ids with commas) for several", explode = true)),
    responses((status = 200, body = CapacityImpact), (status = 403, body = ErrorEnvelope), (status = 404, body = ErrorEnvelope), (status = 422, body = ErrorEnvelope)),
    security(("bearer" = [])))]
async fn capacity_impact(
    State(ctx): State<Context>,
    caller: Caller,
    Path(id): Path<Uuid>,
    RawQuery(query): RawQuery,
) -> Result<Json<CapacityImpact>, ApiError> {
    let mut servers = Vec::new();
    let pairs = url::form_urlencoded::parse(query.as_deref().unwrap_or_default().as_bytes());
    for (key, value) in pairs.filter(|(key, _)| key == "server") {
        for one in value.split(',').map(str::trim).filter(|v| !v.is_empty()) {
            let server = one.parse::<Uuid>().map_err(|_| {
                app::AppError::invalid(
                    "invalid_value",
                    format!("{key}: {one:?} is not a server id"),
                )
                .with_details(json!({ "field": "server" }))
            })?;
            servers.push(server);
        }
    }
    Ok(Json(app::allocation::capacity_impact(&ctx, &caller, id, servers).await?))
}

/// A department's quota per site: quota, used by projects, free.
#[utoipa::path(get, path = "/departments/{id}/quota", tag = "inventory", params(("id" = Uuid, Path)),
    responses((status = 200, body = DepartmentQuotas), (status = 404, body = ErrorEnvelope)),
    security(("bearer" = [])))]
async fn department_quota(
    State(ctx): State<Context>,
    caller: Caller,
    Path(id): Path<Uuid>,
) -> Result<Json<DepartmentQuotas>, ApiError> {
    Ok(Json(app::allocation::department_quota(&ctx, &caller, id).await?))
}
