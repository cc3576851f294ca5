//! Projects: create (reserving quota), read, resize, delete, retry; and the catalog.

use axum::extract::State;
use axum::response::Response;
use serde::Deserialize;
use serde_json::json;
use sqlx::PgConnection;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::auth::Caller;
use super::error::{ApiError, ErrorEnvelope};
use super::extract::{Json, Path, Query};
use super::jobs::{Accepted, IdempotencyKey, accepted};
use super::page::PageParams;
use crate::config::{CatalogEntry, Config};
use crate::context::Context;
use crate::domain::capacity::Resources;
use crate::domain::name::Label;
use crate::domain::project::{ProjectStatus, namespace_for};
use crate::domain::role::{Role, Scope};
use crate::jobs::deprovision_namespace::DEPROVISION_NAMESPACE;
use crate::jobs::provision_namespace::{PROVISION_NAMESPACE, ProjectJob};
use crate::store::audit::{self, Change};
use crate::store::capacity as store_capacity;
use crate::store::jobs::{self, JobScope, NewJob};
use crate::store::org::{self, UnitKind};
use crate::store::projects::{self, NewProject, Project, ProjectFilter, ProjectScope};
use crate::store::{Page, StoreError};

pub fn router() -> OpenApiRouter<Context> {
    OpenApiRouter::new()
        .routes(routes!(list_projects, create_project))
        .routes(routes!(get_project, resize_project, delete_project))
        .routes(routes!(retry_project))
        .routes(routes!(catalog))
}

/// The catalog: SLA type -> performance tier -> quota.
#[utoipa::path(get, path = "/catalog", tag = "projects",
    responses((status = 200, body = BTreeMap<String, BTreeMap<String, CatalogEntry>>)),
    security(("bearer" = [])))]
async fn catalog(State(ctx): State<Context>, _caller: Caller) -> Json<crate::config::Catalog> {
    Json(ctx.config.catalog.clone())
}

fn catalog_entry<'a>(
    config: &'a Config,
    sla: &str,
    tier: &str,
) -> Result<&'a CatalogEntry, ApiError> {
    let tiers = config.catalog.get(sla).ok_or_else(|| {
        let known: Vec<&String> = config.catalog.keys().collect();
        ApiError::unprocessable("invalid_value", format!("sla_type must be one of {known:?}"))
            .with_details(json!({ "field": "sla_type" }))
    })?;
    tiers.get(tier).ok_or_else(|| {
        let known: Vec<&String> = tiers.keys().collect();
        ApiError::unprocessable(
            "invalid_value",
            format!("performance_tier must be one of {known:?}"),
        )
        .with_details(json!({ "field": "performance_tier" }))
    })
}

/// Whether the department's quota at the site holds `usage - freed + wanted`; 409 naming
/// what is free otherwise. Call under the (field, site) lock.
async fn reserve(
    conn: &mut PgConnection,
    field_id: Uuid,
    department_id: Uuid,
    site_id: Uuid,
    freed: Resources,
    wanted: Resources,
) -> Result<(), ApiError> {
    store_capacity::lock_field_site(conn, field_id, site_id).await?;
    let quota = projects::department_quota(conn, department_id, site_id).await?;
    let quota = quota.map(|(cpu, ram)| Resources::new(cpu, ram)).unwrap_or(Resources::ZERO);
    let used = store_capacity::project_usage(conn, department_id, site_id).await? - freed;
    let free = (quota - used).positive_part();
    if wanted.fits_in(free) {
        return Ok(());
    }
    Err(ApiError::conflict(
        "over_quota",
        format!(
            "the department's quota at this site has {} CPU and {} GB RAM free; {} CPU and {} GB RAM do not fit",
            free.cpu, free.ram_gb, wanted.cpu, wanted.ram_gb
        ),
    )
    .with_details(json!({ "free": free, "quota": quota, "used": used, "requested": wanted })))
}

/// Enqueues a (de)provisioning job for the project and makes it the project's latest job.
async fn enqueue_for(
    conn: &mut PgConnection,
    ctx: &Context,
    caller: &Caller,
    idempotency: &IdempotencyKey,
    kind: &'static str,
    project: &Project,
) -> Result<crate::store::jobs::Enqueued, ApiError> {
    let registered = ctx
        .registry
        .get(kind)
        .ok_or_else(|| ApiError::internal(format!("{kind} not registered")))?;
    let payload =
        json!(ProjectJob { project_id: project.id, requested_by: caller.user.username.clone() });
    let new = NewJob {
        subject: Some(("project", project.id.to_string())),
        scope: JobScope {
            field_id: Some(project.field_id),
            department_id: Some(project.department_id),
        },
        submitted_by: Some(caller.user.id),
        idempotency: idempotency.for_caller(caller),
        ..NewJob::new(kind, payload, &caller.user.username, registered.settings.max_attempts as i32)
    };
    let enqueued = jobs::enqueue(conn, &new).await?;
    projects::set_job(conn, project.id, enqueued.job().id).await?;
    Ok(enqueued)
}

/// Enqueues `kind` for the project (now its latest job), audits `verb` with the project before
/// and after, commits, and answers 202.
async fn enqueue_and_answer(
    mut tx: sqlx::Transaction<'_, sqlx::Postgres>,
    ctx: &Context,
    caller: &Caller,
    idempotency: &IdempotencyKey,
    kind: &'static str,
    before: &Project,
    verb: &str,
) -> Result<Response, ApiError> {
    let project = projects::get(&mut tx, before.id).await?;
    let enqueued = enqueue_for(&mut tx, ctx, caller, idempotency, kind, &project).await?;
    let after = projects::get(&mut tx, before.id).await?;
    let change = Change::new("project", verb, before.id).before(before).after(&after);
    audit::record(&mut tx, &caller.actor(), change).await?;
    tx.commit().await?;
    Ok(project_answer(&enqueued, &after))
}

fn project_answer(enqueued: &crate::store::jobs::Enqueued, project: &Project) -> Response {
    accepted(
        enqueued,
        json!({ "id": project.id, "status": project.status, "namespace": project.namespace, "project": project }),
    )
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateProject {
    /// DNS-1123 label; the namespace is `{department}-{name}` by default.
    pub name: String,
    /// Site name.
    pub site: String,
    pub sla_type: String,
    pub performance_tier: String,
}

/// Create a project in the caller's department (team leads): reserves the catalog's quota and
/// starts provisioning. 202 with the project's id, namespace and job.
#[utoipa::path(post, path = "/projects", tag = "projects", request_body = CreateProject,
    params(("Idempotency-Key" = Option<String>, Header, description = "repeat-safe submission key")),
    responses((status = 202, body = Accepted), (status = 403, body = ErrorEnvelope),
              (status = 409, body = ErrorEnvelope), (status = 422, body = ErrorEnvelope)),
    security(("bearer" = [])))]
async fn create_project(
    State(ctx): State<Context>,
    caller: Caller,
    idempotency: IdempotencyKey,
    Json(body): Json<CreateProject>,
) -> Result<Response, ApiError> {
    let Scope::Department(department_id) = caller.user.scope() else {
        return Err(ApiError::forbidden(
            "projects are created by team leads, in their own department",
        ));
    };
    let name = Label::parse("name", &body.name)?;
    let entry = catalog_entry(&ctx.config, &body.sla_type, &body.performance_tier)?.clone();
    let mut tx = ctx.pool.begin().await?;
    if let Some(existing) = existing_idempotent(&mut tx, &caller, &idempotency).await? {
        return Ok(existing);
    }
    let dept = org::get_department(&mut tx, department_id).await?;
    let namespace =
        namespace_for(&ctx.config.delivery.namespace_template, &dept.name, name.as_str())?;
    let site =
        org::find_unit_by_name(&mut tx, UnitKind::Site, &body.site).await?.ok_or_else(|| {
            ApiError::unprocessable("invalid_value", format!("no site named {:?}", body.site))
                .with_details(json!({ "field": "site" }))
        })?;
    let wanted = Resources::new(entry.cpu.into(), entry.ram_gb.into());
    reserve(&mut tx, dept.field_id, dept.id, site.id, Resources::ZERO, wanted).await?;
    let extra = json!(entry.extra);
    let new = NewProject {
        name: name.as_str(),
        namespace: namespace.as_str(),
        department_id: dept.id,
        site_id: site.id,
        sla_type: &body.sla_type,
        performance_tier: &body.performance_tier,
        cpu: entry.cpu as i32,
        ram_gb: entry.ram_gb as i32,
        extra_quota: &extra,
        created_by: caller.user.id,
    };
    let id = projects::insert(&mut tx, &new).await.map_err(|e| match e {
        StoreError::Duplicate { .. } => ApiError::conflict(
            "already_exists",
            format!(
                "a project named {} (namespace {}) already exists at {}",
                name, namespace, site.name
            ),
        ),
        other => other.into(),
    })?;
    let project = projects::get(&mut tx, id).await?;
    let enqueued =
        enqueue_for(&mut tx, &ctx, &caller, &idempotency, PROVISION_NAMESPACE, &project).await?;
    let project = projects::get(&mut tx, id).await?;
    audit::record(&mut tx, &caller.actor(), Change::create("project", id, &project)).await?;
    tx.commit().await?;
    Ok(project_answer(&enqueued, &project))
}

/// A repeated `Idempotency-Key`: the first answer again, without creating anything.
async fn existing_idempotent(
    conn: &mut PgConnection,
    caller: &Caller,
    idempotency: &IdempotencyKey,
) -> Result<Option<Response>, ApiError> {
    let Some(key) = &idempotency.0 else { return Ok(None) };
    let Some(job) = jobs::find_by_key(conn, caller.user.id, key).await? else { return Ok(None) };
    let Some(project_id) = job.subject_id.as_deref().and_then(|s| s.parse::<Uuid>().ok()) else {
        return Ok(None);
    };
    let project = projects::get(conn, project_id).await?;
    Ok(Some(project_answer(&crate::store::jobs::Enqueued::Existing(job), &project)))
}

fn project_scope(caller: &Caller) -> ProjectScope {
    match caller.user.scope() {
        Scope::Center => ProjectScope::default(),
        Scope::Field(field) => ProjectScope { field_id: Some(field), department_id: None },
        Scope::Department(dept) => ProjectScope { field_id: None, department_id: Some(dept) },
    }
}

/// The project, if the caller may see it (404 otherwise).
async fn visible(conn: &mut PgConnection, caller: &Caller, id: Uuid) -> Result<Project, ApiError> {
    let project = projects::get(conn, id).await.map_err(|e| ApiError::from_store("project", e))?;
    let seen = match caller.user.scope() {
        Scope::Center => true,
        Scope::Field(field) => project.field_id == field,
        Scope::Department(dept) => project.department_id == dept,
    };
    if seen { Ok(project) } else { Err(ApiError::not_found("project")) }
}

/// Team leads and center admins change projects; field admins only read them.
fn require_writer(caller: &Caller) -> Result<(), ApiError> {
    caller.require(&[Role::CenterAdmin, Role::TeamLead])
}

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ProjectQuery {
    pub site: Option<String>,
    pub status: Option<ProjectStatus>,
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
    let page = params.request()?;
    let filter = ProjectFilter { site: query.site, status: query.status, include_deleted: false };
    let mut conn = ctx.pool.acquire().await?;
    Ok(Json(projects::list(&mut conn, project_scope(&caller), &filter, page).await?))
}

/// A project: status, namespace, quota, SLA, tier, site, latest job, failure reason.
#[utoipa::path(get, path = "/projects/{id}", tag = "projects", params(("id" = Uuid, Path)),
    responses((status = 200, body = Project), (status = 404, body = ErrorEnvelope)), security(("bearer" = [])))]
async fn get_project(
    State(ctx): State<Context>,
    caller: Caller,
    Path(id): Path<Uuid>,
) -> Result<Json<Project>, ApiError> {
    let mut conn = ctx.pool.acquire().await?;
    Ok(Json(visible(&mut conn, &caller, id).await?))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResizeProject {
    pub sla_type: Option<String>,
    pub performance_tier: Option<String>,
}

/// Change SLA type or tier: the quota difference is checked and reserved, then the project is
/// provisioned again.
#[utoipa::path(patch, path = "/projects/{id}", tag = "projects", params(("id" = Uuid, Path)), request_body = ResizeProject,
    responses((status = 202, body = Accepted), (status = 404, body = ErrorEnvelope),
              (status = 409, body = ErrorEnvelope), (status = 422, body = ErrorEnvelope)),
    security(("bearer" = [])))]
async fn resize_project(
    State(ctx): State<Context>,
    caller: Caller,
    idempotency: IdempotencyKey,
    Path(id): Path<Uuid>,
    Json(body): Json<ResizeProject>,
) -> Result<Response, ApiError> {
    require_writer(&caller)?;
    let mut tx = ctx.pool.begin().await?;
    visible(&mut tx, &caller, id).await?;
    let before = projects::lock(&mut tx, id).await?;
    if !matches!(
        before.status,
        ProjectStatus::Active | ProjectStatus::Failed | ProjectStatus::Degraded
    ) {
        return Err(ApiError::conflict(
            "project_busy",
            format!("the project is {}; try again when it is not", before.status),
        ));
    }
    let sla = body.sla_type.unwrap_or_else(|| before.sla_type.clone());
    let tier = body.performance_tier.unwrap_or_else(|| before.performance_tier.clone());
    let entry = catalog_entry(&ctx.config, &sla, &tier)?.clone();
    let old = Resources::new(before.cpu.into(), before.ram_gb.into());
    let wanted = Resources::new(entry.cpu.into(), entry.ram_gb.into());
    reserve(&mut tx, before.field_id, before.department_id, before.site_id, old, wanted).await?;
    projects::resize(
        &mut tx,
        id,
        &sla,
        &tier,
        entry.cpu as i32,
        entry.ram_gb as i32,
        &json!(entry.extra),
    )
    .await?;
    enqueue_and_answer(tx, &ctx, &caller, &idempotency, PROVISION_NAMESPACE, &before, "resize")
        .await
}

/// Delete a project: its manifests are removed, and its quota is freed once they are gone.
/// Refused while it is still provisioning.
#[utoipa::path(delete, path = "/projects/{id}", tag = "projects", params(("id" = Uuid, Path)),
    responses((status = 202, body = Accepted), (status = 404, body = ErrorEnvelope), (status = 409, body = ErrorEnvelope)),
    security(("bearer" = [])))]
async fn delete_project(
    State(ctx): State<Context>,
    caller: Caller,
    idempotency: IdempotencyKey,
    Path(id): Path<Uuid>,
) -> Result<Response, ApiError> {
    require_writer(&caller)?;
    let mut tx = ctx.pool.begin().await?;
    visible(&mut tx, &caller, id).await?;
    let before = projects::lock(&mut tx, id).await?;
    match before.status {
        ProjectStatus::Provisioning => {
            return Err(ApiError::conflict(
                "project_busy",
                "the project is still provisioning; delete it once that is over",
            ));
        }
        ProjectStatus::Deleted => {
            return Err(ApiError::conflict("already_deleted", "the project is already deleted"));
        }
        _ => {}
    }
    let from = [
        ProjectStatus::Active,
        ProjectStatus::Failed,
        ProjectStatus::Degraded,
        ProjectStatus::Deleting,
    ];
    projects::transition(&mut tx, id, &from, ProjectStatus::Deleting, None, None).await?;
    enqueue_and_answer(tx, &ctx, &caller, &idempotency, DEPROVISION_NAMESPACE, &before, "delete")
        .await
}

/// Run a failed provisioning again.
#[utoipa::path(post, path = "/projects/{id}/retry", tag = "projects", params(("id" = Uuid, Path)),
    responses((status = 202, body = Accepted), (status = 404, body = ErrorEnvelope), (status = 409, body = ErrorEnvelope)),
    security(("bearer" = [])))]
async fn retry_project(
    State(ctx): State<Context>,
    caller: Caller,
    idempotency: IdempotencyKey,
    Path(id): Path<Uuid>,
) -> Result<Response, ApiError> {
    require_writer(&caller)?;
    let mut tx = ctx.pool.begin().await?;
    visible(&mut tx, &caller, id).await?;
    let before = projects::lock(&mut tx, id).await?;
    if before.status != ProjectStatus::Failed {
        return Err(ApiError::conflict(
            "not_failed",
            format!("the project is {}; only failed projects are retried", before.status),
        ));
    }
    projects::transition(
        &mut tx,
        id,
        &[ProjectStatus::Failed],
        ProjectStatus::Provisioning,
        None,
        None,
    )
    .await?;
    enqueue_and_answer(tx, &ctx, &caller, &idempotency, PROVISION_NAMESPACE, &before, "retry").await
}
