//! Servers, their allocation to fields, department quotas, and the capacity views.

use axum::extract::State;
use axum::response::Response;
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::auth::Caller;
use super::error::{ApiError, ErrorEnvelope};
use super::extract::{Json, Path, Query};
use super::jobs::{Accepted, IdempotencyKey, submit};
use super::page::PageParams;
use crate::context::Context;
use crate::domain::capacity::{Resources, capacity};
use crate::domain::role::{Role, Scope};
use crate::jobs::allocate_quota::{self, ALLOCATE_QUOTA, QuotaRequest};
use crate::jobs::allocate_servers::{self, ALLOCATE_SERVERS, Allocation};
use crate::jobs::sync_servers::SYNC_SERVERS;
use crate::store::Page;
use crate::store::StoreError;
use crate::store::capacity as store_capacity;
use crate::store::jobs::JobScope;
use crate::store::org::{self, UnitKind};
use crate::store::servers::{self, Server, ServerFilter};

pub fn router() -> OpenApiRouter<Context> {
    OpenApiRouter::new()
        .routes(routes!(sync_servers))
        .routes(routes!(list_servers))
        .routes(routes!(assign_server))
        .routes(routes!(unassign_server))
        .routes(routes!(set_department_quota))
        .routes(routes!(field_capacity))
        .routes(routes!(department_quota))
}

/// Pull the server inventory now (center admins). While a sync is queued or running, answers
/// with that job instead of starting another.
#[utoipa::path(post, path = "/admin/sync/servers", tag = "inventory",
    responses((status = 202, body = Accepted), (status = 403, body = ErrorEnvelope)),
    security(("bearer" = [])))]
async fn sync_servers(
    State(ctx): State<Context>,
    caller: Caller,
    idempotency: IdempotencyKey,
) -> Result<Response, ApiError> {
    caller.require(&[Role::CenterAdmin])?;
    submit(&ctx, &caller, &idempotency, SYNC_SERVERS, json!({}), None, JobScope::default()).await
}

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ServerQuery {
    /// Site name.
    pub site: Option<String>,
    pub field_id: Option<Uuid>,
    /// `active`, `missing` or `retired`.
    pub status: Option<String>,
    /// Only servers assigned to no field.
    #[serde(default)]
    pub unassigned: bool,
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
    caller.require(&[Role::CenterAdmin, Role::FieldAdmin])?;
    let page = params.request()?;
    let mut filter = ServerFilter {
        site: query.site,
        field_id: query.field_id,
        status: query.status,
        unassigned: query.unassigned,
    };
    if let Scope::Field(own) = caller.user.scope() {
        if filter.field_id.is_some_and(|f| f != own) {
            return Err(ApiError::forbidden("field admins see their own field's servers only"));
        }
        if filter.unassigned {
            return Err(ApiError::forbidden(
                "unassigned servers belong to no field; ask a center admin",
            ));
        }
        filter.field_id = Some(own);
    }
    let mut conn = ctx.pool.acquire().await?;
    Ok(Json(servers::list(&mut conn, &filter, page).await?))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AssignServer {
    pub server_id: Uuid,
    pub field_id: Uuid,
}

/// Assign a server to a field, or move it to another (center admins). The job re-checks that
/// a field it leaves still holds its quotas.
#[utoipa::path(post, path = "/allocations/servers", tag = "inventory", request_body = AssignServer,
    responses((status = 202, body = Accepted), (status = 404, body = ErrorEnvelope),
              (status = 409, body = ErrorEnvelope), (status = 422, body = ErrorEnvelope)),
    security(("bearer" = [])))]
async fn assign_server(
    State(ctx): State<Context>,
    caller: Caller,
    idempotency: IdempotencyKey,
    Json(body): Json<AssignServer>,
) -> Result<Response, ApiError> {
    caller.require(&[Role::CenterAdmin])?;
    let mut conn = ctx.pool.acquire().await?;
    let server = servers::get(&mut conn, body.server_id)
        .await
        .map_err(|e| ApiError::from_store("server", e))?;
    org::get_unit(&mut conn, UnitKind::Field, body.field_id).await.map_err(|e| match e {
        StoreError::NotFound => ApiError::unprocessable("unknown_reference", "no such field")
            .with_details(json!({ "field": "field_id" })),
        other => other.into(),
    })?;
    if server.status != "active" {
        return Err(ApiError::conflict(
            "server_not_active",
            format!(
                "server {} is {}: only active servers can be assigned",
                server.name, server.status
            ),
        )
        .with_details(json!({ "status": server.status })));
    }
    if server.field_id != Some(body.field_id) {
        refuse_if_release_breaks_quotas(&mut conn, &ctx, &server).await?;
    }
    drop(conn);
    let allocation = Allocation { server_id: server.id, field_id: Some(body.field_id) };
    let scope = JobScope { field_id: Some(body.field_id), department_id: None };
    let subject = Some(("server", server.id.to_string()));
    submit(&ctx, &caller, &idempotency, ALLOCATE_SERVERS, json!(allocation), subject, scope).await
}

async fn refuse_if_release_breaks_quotas(
    conn: &mut sqlx::PgConnection,
    ctx: &Context,
    server: &Server,
) -> Result<(), ApiError> {
    match allocate_servers::check_release(conn, &ctx.config, server).await? {
        Ok(()) => Ok(()),
        Err(reason) => Err(ApiError::conflict("capacity_in_use", reason)
            .with_details(json!({ "field_id": server.field_id, "site": server.site }))),
    }
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
    idempotency: IdempotencyKey,
    Path(server_id): Path<Uuid>,
) -> Result<Response, ApiError> {
    caller.require(&[Role::CenterAdmin])?;
    let mut conn = ctx.pool.acquire().await?;
    let server =
        servers::get(&mut conn, server_id).await.map_err(|e| ApiError::from_store("server", e))?;
    let Some(field_id) = server.field_id else {
        return Err(ApiError::conflict(
            "not_assigned",
            format!("server {} belongs to no field", server.name),
        ));
    };
    refuse_if_release_breaks_quotas(&mut conn, &ctx, &server).await?;
    drop(conn);
    let allocation = Allocation { server_id, field_id: None };
    let scope = JobScope { field_id: Some(field_id), department_id: None };
    let subject = Some(("server", server_id.to_string()));
    submit(&ctx, &caller, &idempotency, ALLOCATE_SERVERS, json!(allocation), subject, scope).await
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetQuota {
    pub field_id: Uuid,
    /// The department, which must belong to the field.
    pub dept_id: Uuid,
    /// Site name.
    pub site: String,
    pub cpu_limit: u32,
    pub ram_gb_limit: u32,
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
    caller: Caller,
    idempotency: IdempotencyKey,
    Json(body): Json<SetQuota>,
) -> Result<Response, ApiError> {
    caller.require(&[Role::CenterAdmin, Role::FieldAdmin])?;
    if let Scope::Field(own) = caller.user.scope()
        && own != body.field_id
    {
        return Err(ApiError::forbidden("field admins set quotas of their own field only"));
    }
    let mut conn = ctx.pool.acquire().await?;
    let dept = org::get_department(&mut conn, body.dept_id).await.map_err(|e| match e {
        StoreError::NotFound => ApiError::unprocessable("unknown_reference", "no such department")
            .with_details(json!({ "field": "dept_id" })),
        other => other.into(),
    })?;
    if dept.field_id != body.field_id {
        return Err(ApiError::unprocessable(
            "invalid_value",
            "the department does not belong to that field",
        )
        .with_details(json!({ "field": "dept_id" })));
    }
    let site =
        org::find_unit_by_name(&mut conn, UnitKind::Site, &body.site).await?.ok_or_else(|| {
            ApiError::unprocessable("invalid_value", format!("no site named {:?}", body.site))
                .with_details(json!({ "field": "site" }))
        })?;
    let request = QuotaRequest {
        field_id: body.field_id,
        department_id: dept.id,
        site_id: site.id,
        cpu_limit: body.cpu_limit.into(),
        ram_gb_limit: body.ram_gb_limit.into(),
    };
    let (check, verdict) = allocate_quota::evaluate(&mut conn, &ctx.config, &request).await?;
    if let Err(err) = verdict {
        return Err(ApiError::conflict("over_quota", err.to_string()).with_details(json!({
            "free": check.free(),
            "capacity": check.capacity,
            "other_quotas": check.other_quotas,
            "used_by_projects": check.used_by_projects,
        })));
    }
    drop(conn);
    let scope = JobScope { field_id: Some(body.field_id), department_id: Some(dept.id) };
    let subject = Some(("department", dept.id.to_string()));
    submit(&ctx, &caller, &idempotency, ALLOCATE_QUOTA, json!(request), subject, scope).await
}

/// One site of a field's capacity.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SiteCapacity {
    pub site_id: Uuid,
    pub site: String,
    /// Active servers of the field there, and their CPU and RAM.
    pub servers: i64,
    pub hardware: Resources,
    /// Hardware times the configured overcommit: what can be promised.
    pub capacity: Resources,
    /// Sum of the department quotas.
    pub allocated: Resources,
    pub free: Resources,
    /// Quotas above capacity, e.g. after servers went missing; zero when the invariant holds.
    pub deficit: Resources,
    pub missing_servers: i64,
    pub missing: Resources,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct FieldCapacity {
    pub field_id: Uuid,
    pub field: String,
    pub sites: Vec<SiteCapacity>,
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
    caller.require(&[Role::CenterAdmin, Role::FieldAdmin])?;
    if let Scope::Field(own) = caller.user.scope()
        && own != id
    {
        return Err(ApiError::not_found("field"));
    }
    let mut conn = ctx.pool.acquire().await?;
    let field = org::get_unit(&mut conn, UnitKind::Field, id)
        .await
        .map_err(|e| ApiError::from_store("field", e))?;
    let overcommit = ctx.config.overcommit();
    let sites = store_capacity::field_report(&mut conn, id)
        .await?
        .into_iter()
        .map(|row| {
            let hardware = Resources::new(row.active_cpu, row.active_ram_gb);
            let capacity = capacity(hardware, overcommit);
            let allocated = Resources::new(row.allocated_cpu, row.allocated_ram_gb);
            SiteCapacity {
                site_id: row.site_id,
                site: row.site,
                servers: row.active_servers,
                hardware,
                capacity,
                allocated,
                free: (capacity - allocated).positive_part(),
                deficit: (allocated - capacity).positive_part(),
                missing_servers: row.missing_servers,
                missing: Resources::new(row.missing_cpu, row.missing_ram_gb),
            }
        })
        .collect();
    Ok(Json(FieldCapacity { field_id: field.id, field: field.name, sites }))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SiteQuota {
    pub site_id: Uuid,
    pub site: String,
    pub quota: Resources,
    /// Reserved by the department's projects.
    pub used: Resources,
    pub free: Resources,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DepartmentQuotas {
    pub department_id: Uuid,
    pub department: String,
    pub field_id: Uuid,
    pub sites: Vec<SiteQuota>,
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
    let mut conn = ctx.pool.acquire().await?;
    let dept = org::get_department(&mut conn, id)
        .await
        .map_err(|e| ApiError::from_store("department", e))?;
    let visible = match caller.user.scope() {
        Scope::Center => true,
        Scope::Field(field) => field == dept.field_id,
        Scope::Department(own) => own == dept.id,
    };
    if !visible {
        return Err(ApiError::not_found("department"));
    }
    let sites = store_capacity::department_report(&mut conn, id)
        .await?
        .into_iter()
        .map(|row| {
            let quota = Resources::new(row.cpu_limit, row.ram_gb_limit);
            let used = Resources::new(row.used_cpu, row.used_ram_gb);
            SiteQuota {
                site_id: row.site_id,
                site: row.site,
                quota,
                used,
                free: (quota - used).positive_part(),
            }
        })
        .collect();
    Ok(Json(DepartmentQuotas {
        department_id: dept.id,
        department: dept.name,
        field_id: dept.field_id,
        sites,
    }))
}
