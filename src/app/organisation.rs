//! The organisation: sites (data centres), fields (business areas) and their departments.
//! Managed by center admins; each change is audited in its own transaction.

use serde::Deserialize;
use uuid::Uuid;

use super::{Actor, AppError, AppResult, Caller, PageParams};
use crate::context::Context;
use crate::domain::ValidationError;
use crate::domain::name::{Label, parse_display_name};
use crate::domain::scope::Action;
use crate::store::Page;
use crate::store::audit::{self, Change};
use crate::store::org::{self, Department, DepartmentValues, OrgUnit, UnitKind};

pub async fn list_units(
    ctx: &Context,
    caller: &Caller,
    kind: UnitKind,
    page: PageParams,
) -> AppResult<Page<OrgUnit>> {
    caller.authorize(Action::ManageOrganisation)?;
    let page = page.request()?;
    let mut conn = ctx.pool.acquire().await?;
    Ok(org::list_units(&mut conn, kind, page).await?)
}

pub async fn get_unit(
    ctx: &Context,
    caller: &Caller,
    kind: UnitKind,
    id: Uuid,
) -> AppResult<OrgUnit> {
    caller.authorize(Action::ManageOrganisation)?;
    let mut conn = ctx.pool.acquire().await?;
    org::get_unit(&mut conn, kind, id).await.map_err(|e| AppError::from_store(kind.noun(), e))
}

/// A new site or field.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateUnit {
    /// DNS-1123 label; cannot be changed later.
    pub name: String,
    /// Defaults to the name.
    pub display_name: Option<String>,
}

pub async fn create_unit(
    ctx: &Context,
    caller: &Caller,
    kind: UnitKind,
    input: CreateUnit,
) -> AppResult<OrgUnit> {
    caller.authorize(Action::ManageOrganisation)?;
    let name = Label::parse("name", &input.name)?;
    let display_name =
        parse_display_name("display_name", input.display_name.as_deref(), name.as_str())?;
    let mut tx = ctx.pool.begin().await?;
    let unit = org::insert_unit(&mut tx, kind, name.as_str(), &display_name)
        .await
        .map_err(|e| AppError::from_store(kind.noun(), e))?;
    audit::record(&mut tx, &caller.actor(), Change::create(kind.noun(), unit.id, &unit)).await?;
    super::commit(tx).await?;
    Ok(unit)
}

/// What may change of a site or field.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateUnit {
    pub display_name: String,
}

pub async fn update_unit(
    ctx: &Context,
    caller: &Caller,
    kind: UnitKind,
    id: Uuid,
    input: UpdateUnit,
) -> AppResult<OrgUnit> {
    caller.authorize(Action::ManageOrganisation)?;
    let mut tx = ctx.pool.begin().await?;
    let before =
        org::get_unit(&mut tx, kind, id).await.map_err(|e| AppError::from_store(kind.noun(), e))?;
    let display_name = parse_display_name("display_name", Some(&input.display_name), &before.name)?;
    let after = org::rename_unit(&mut tx, kind, id, &display_name).await?;
    audit::record(&mut tx, &caller.actor(), Change::update(kind.noun(), id, &before, &after))
        .await?;
    super::commit(tx).await?;
    Ok(after)
}

/// Deletes a site or field; refused while anything refers to it.
pub async fn delete_unit(
    ctx: &Context,
    caller: &Caller,
    kind: UnitKind,
    id: Uuid,
) -> AppResult<()> {
    caller.authorize(Action::ManageOrganisation)?;
    let mut tx = ctx.pool.begin().await?;
    let before = org::delete_unit(&mut tx, kind, id)
        .await
        .map_err(|e| AppError::from_store(kind.noun(), e))?;
    audit::record(&mut tx, &caller.actor(), Change::delete(kind.noun(), id, &before)).await?;
    super::commit(tx).await?;
    Ok(())
}

pub async fn list_departments(
    ctx: &Context,
    caller: &Caller,
    field_id: Option<Uuid>,
    page: PageParams,
) -> AppResult<Page<Department>> {
    caller.authorize(Action::ManageOrganisation)?;
    let page = page.request()?;
    let mut conn = ctx.pool.acquire().await?;
    Ok(org::list_departments(&mut conn, field_id, page).await?)
}

pub async fn get_department(ctx: &Context, caller: &Caller, id: Uuid) -> AppResult<Department> {
    caller.authorize(Action::ManageOrganisation)?;
    let mut conn = ctx.pool.acquire().await?;
    org::get_department(&mut conn, id).await.map_err(|e| AppError::from_store("department", e))
}

/// A new department of a field.
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

/// What may change of a department; absent keys keep their value.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateDepartment {
    pub display_name: Option<String>,
    /// `null` removes the group.
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>)]
    pub k8s_group: Option<Option<String>>,
}

/// Reads a JSON field that may be absent (keep), `null` (clear) or a value (set).
fn double_option<'de, T, D>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    T: serde::Deserialize<'de>,
    D: serde::Deserializer<'de>,
{
    serde::Deserialize::deserialize(deserializer).map(Some)
}

fn parse_group(value: Option<&str>) -> Result<Option<&str>, ValidationError> {
    match value.map(str::trim) {
        Some(group) if group.is_empty() || group.len() > 253 => {
            Err(ValidationError::new("k8s_group", "must be 1 to 253 characters long"))
        }
        other => Ok(other),
    }
}

pub async fn create_department(
    ctx: &Context,
    caller: &Caller,
    input: CreateDepartment,
) -> AppResult<Department> {
    caller.authorize(Action::ManageOrganisation)?;
    let name = Label::parse("name", &input.name)?;
    let display_name =
        parse_display_name("display_name", input.display_name.as_deref(), name.as_str())?;
    let values = DepartmentValues {
        field_id: input.field_id,
        name: name.as_str(),
        display_name: &display_name,
        k8s_group: parse_group(input.k8s_group.as_deref())?,
    };
    let mut tx = ctx.pool.begin().await?;
    let dept = org::insert_department(&mut tx, &values)
        .await
        .map_err(|e| AppError::from_store("department", e))?;
    audit::record(&mut tx, &caller.actor(), Change::create("department", dept.id, &dept)).await?;
    super::commit(tx).await?;
    Ok(dept)
}

pub async fn update_department(
    ctx: &Context,
    caller: &Caller,
    id: Uuid,
    input: UpdateDepartment,
) -> AppResult<Department> {
    caller.authorize(Action::ManageOrganisation)?;
    let mut tx = ctx.pool.begin().await?;
    let before = org::get_department(&mut tx, id)
        .await
        .map_err(|e| AppError::from_store("department", e))?;
    let display_name = parse_display_name(
        "display_name",
        Some(input.display_name.as_deref().unwrap_or(&before.display_name)),
        &before.name,
    )?;
    let group = match &input.k8s_group {
        Some(new) => parse_group(new.as_deref())?,
        None => before.k8s_group.as_deref(),
    };
    let after = org::update_department(&mut tx, id, &display_name, group).await?;
    audit::record(&mut tx, &caller.actor(), Change::update("department", id, &before, &after))
        .await?;
    super::commit(tx).await?;
    Ok(after)
}

/// Deletes a department; refused while team leads, quotas or projects refer to it.
pub async fn delete_department(ctx: &Context, caller: &Caller, id: Uuid) -> AppResult<()> {
    caller.authorize(Action::ManageOrganisation)?;
    let mut tx = ctx.pool.begin().await?;
    let before = org::delete_department(&mut tx, id)
        .await
        .map_err(|e| AppError::from_store("department", e))?;
    audit::record(&mut tx, &caller.actor(), Change::delete("department", id, &before)).await?;
    super::commit(tx).await?;
    Ok(())
}

/// What [`ensure`] found or made.
#[derive(Debug, Clone)]
pub struct Ensured {
    pub sites: Vec<OrgUnit>,
    pub field: OrgUnit,
    pub department: Department,
    /// `<kind> <id>` of everything created.
    pub created: Vec<String>,
}

/// The sites, one field and one department of it, each created only if missing, in one
/// transaction with an audit event per creation (for bootstrapping, e.g. the demo).
pub async fn ensure(
    ctx: &Context,
    actor: &Actor,
    sites: &[(&str, &str)],
    field: (&str, &str),
    department: DepartmentValues<'_>,
) -> AppResult<Ensured> {
    let mut created = Vec::new();
    let mut tx = ctx.pool.begin().await?;
    let mut ensured_sites = Vec::new();
    for (name, title) in sites {
        let (site, new) = org::ensure_unit(&mut tx, UnitKind::Site, name, title).await?;
        if new {
            audit::record(&mut tx, actor, Change::create("site", site.id, &site)).await?;
            created.push(format!("site {}", site.id));
        }
        ensured_sites.push(site);
    }
    let (field, new) = org::ensure_unit(&mut tx, UnitKind::Field, field.0, field.1).await?;
    if new {
        audit::record(&mut tx, actor, Change::create("field", field.id, &field)).await?;
        created.push(format!("field {}", field.id));
    }
    let values = DepartmentValues { field_id: field.id, ..department };
    let (dept, new) = org::ensure_department(&mut tx, &values).await?;
    if new {
        audit::record(&mut tx, actor, Change::create("department", dept.id, &dept)).await?;
        created.push(format!("department {}", dept.id));
    }
    super::commit(tx).await?;
    Ok(Ensured { sites: ensured_sites, field, department: dept, created })
}
