//! Accounts: created, changed and deleted by center admins through the API, by operators
//! through `infrahub user`, and by the demo. One implementation serves them all.

use serde::Deserialize;
use sqlx::PgConnection;
use uuid::Uuid;

use super::{Actor, AppError, AppResult, Caller, PageParams};
use crate::context::Context;
use crate::domain::name::Username;
use crate::domain::password;
use crate::domain::role::Role;
use crate::domain::scope::{Action, Scope, removes_an_admin};
use crate::store::audit::{self, Change};
use crate::store::org::{self, UnitKind};
use crate::store::users::{self, NewUser, User, UserFilter};
use crate::store::{Page, PageRequest};

/// A field or department named by id (the API) or by name (the command line).
#[derive(Debug, Clone)]
pub enum UnitRef {
    Id(Uuid),
    Name(String),
}

/// A new account.
#[derive(Debug, Clone)]
pub struct NewAccount {
    pub username: String,
    pub password: String,
    pub role: Role,
    /// Required for a field admin.
    pub field: Option<UnitRef>,
    /// Required for a team lead.
    pub department: Option<UnitRef>,
    /// A demo account: logs in only to `infrahub demo`, and its well-known password skips
    /// the policy.
    pub demo: bool,
}

/// A new account, as the API takes it.
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

/// Filters of the account list.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UserQuery {
    pub role: Option<Role>,
    pub field_id: Option<Uuid>,
    pub department_id: Option<Uuid>,
}

pub async fn list(
    ctx: &Context,
    caller: &Caller,
    query: UserQuery,
    page: PageParams,
) -> AppResult<Page<User>> {
    caller.authorize(Action::ManageOrganisation)?;
    let page = page.request()?;
    let filter = UserFilter {
        role: query.role,
        field_id: query.field_id,
        department_id: query.department_id,
    };
    let mut conn = ctx.pool.acquire().await?;
    Ok(users::list(&mut conn, &filter, page).await?)
}

pub async fn get(ctx: &Context, caller: &Caller, id: Uuid) -> AppResult<User> {
    caller.authorize(Action::ManageOrganisation)?;
    let mut conn = ctx.pool.acquire().await?;
    users::get(&mut conn, id).await.map_err(|e| AppError::from_store("user", e))
}

/// A center admin creates an account.
pub async fn create(ctx: &Context, caller: &Caller, input: CreateUser) -> AppResult<User> {
    caller.authorize(Action::ManageOrganisation)?;
    let account = NewAccount {
        username: input.username,
        password: input.password,
        role: input.role,
        field: input.field_id.map(UnitRef::Id),
        department: input.department_id.map(UnitRef::Id),
        demo: false,
    };
    add(ctx, &caller.actor(), account).await
}

/// The name of a new account, and the ids its role needs (judged by which are given).
pub fn check_name_and_scope(account: &NewAccount) -> AppResult<Username> {
    let username = Username::parse(&account.username)?;
    let placeholder = |given: &Option<UnitRef>| given.as_ref().map(|_| Uuid::nil());
    Scope::for_role(account.role, placeholder(&account.field), placeholder(&account.department))?;
    Ok(username)
}

/// The checks of a new account that need no database: [`check_name_and_scope`] and the
/// password policy (not for demo accounts). [`add`] makes them first; an operator's command
/// can make them before it even connects.
pub fn check(account: &NewAccount) -> AppResult<Username> {
    let username = check_name_and_scope(account)?;
    if !account.demo {
        password::check_policy(&account.password)?;
    }
    Ok(username)
}

/// Creates an account: checks it, hashes the password, resolves its field or department,
/// stores the account and audits it, in one transaction.
pub async fn add(ctx: &Context, actor: &Actor, account: NewAccount) -> AppResult<User> {
    let username = check(&account)?;
    let hash = password::hash_blocking(account.password).await.map_err(AppError::internal)?;
    let mut tx = ctx.pool.begin().await?;
    let field_id = resolve(&mut tx, UnitKind::Field, account.field).await?;
    let department_id = match account.department {
        Some(UnitRef::Name(name)) => Some(
            org::find_department_by_name(&mut tx, &name)
                .await?
                .ok_or_else(|| {
                    AppError::unknown("department_id", format!("no department named {name:?}"))
                })?
                .id,
        ),
        Some(UnitRef::Id(id)) => Some(id),
        None => None,
    };
    let scope = Scope::for_role(account.role, field_id, department_id)?;
    let new = NewUser {
        username: username.as_str(),
        password_hash: &hash,
        role: account.role,
        scope,
        is_demo: account.demo,
    };
    let user = users::insert(&mut tx, &new).await.map_err(|e| AppError::from_store("user", e))?;
    audit::record(&mut tx, actor, Change::create("user", user.id, &user)).await?;
    super::commit(tx).await?;
    Ok(user)
}

async fn resolve(
    conn: &mut PgConnection,
    kind: UnitKind,
    unit: Option<UnitRef>,
) -> AppResult<Option<Uuid>> {
    match unit {
        Some(UnitRef::Id(id)) => Ok(Some(id)),
        Some(UnitRef::Name(name)) => Ok(Some(
            org::find_unit_by_name(conn, kind, &name)
                .await?
                .ok_or_else(|| {
                    AppError::unknown(
                        &format!("{}_id", kind.noun()),
                        format!("no {} named {name:?}", kind.noun()),
                    )
                })?
                .id,
        )),
        None => Ok(None),
    }
}

/// Whether an account of that name exists.
pub async fn exists(ctx: &Context, username: &str) -> AppResult<bool> {
    let mut conn = ctx.pool.acquire().await?;
    Ok(users::find_credentials(&mut conn, username).await?.is_some())
}

/// 409 when the change (`after`; `None`: deletion) takes away the last enabled center
/// admin, which would lock everyone out.
async fn ensure_not_last_admin(
    conn: &mut PgConnection,
    user: &User,
    after: Option<(Role, bool)>,
) -> AppResult<()> {
    if !removes_an_admin(user.role, user.disabled, after) {
        return Ok(());
    }
    let admins = users::lock_active_center_admins(conn).await?;
    if admins.iter().all(|id| *id == user.id) {
        return Err(AppError::conflict(
            "last_center_admin",
            "this is the last enabled center_admin; create another one first",
        ));
    }
    Ok(())
}

async fn hash_password(password: String) -> AppResult<String> {
    password::check_policy(&password)?;
    password::hash_blocking(password).await.map_err(AppError::internal)
}

/// Changes an account's role, scope, password or disabled flag.
pub async fn update(
    ctx: &Context,
    caller: &Caller,
    id: Uuid,
    input: UpdateUser,
) -> AppResult<User> {
    caller.authorize(Action::ManageOrganisation)?;
    let password_hash = match input.password {
        Some(password) => Some(hash_password(password).await?),
        None => None,
    };
    let mut tx = ctx.pool.begin().await?;
    let before = users::get(&mut tx, id).await.map_err(|e| AppError::from_store("user", e))?;
    let role = input.role.unwrap_or(before.role);
    let keep = role == before.role;
    let field_id = input.field_id.or(before.field_id.filter(|_| keep));
    let department_id = input.department_id.or(before.department_id.filter(|_| keep));
    let scope = Scope::for_role(role, field_id, department_id)?;
    let disabled = input.disabled.unwrap_or(before.disabled);
    ensure_not_last_admin(&mut tx, &before, Some((role, disabled))).await?;
    let mut after = users::update_role_scope(&mut tx, id, role, scope, disabled)
        .await
        .map_err(|e| AppError::from_store("user", e))?;
    if let Some(hash) = &password_hash {
        after = users::set_password(&mut tx, id, hash).await?;
    }
    let verb = if password_hash.is_some() { "update_with_password" } else { "update" };
    let change = Change::new("user", verb, id).before(&before).after(&after);
    audit::record(&mut tx, &caller.actor(), change).await?;
    super::commit(tx).await?;
    Ok(after)
}

/// Deletes an account; not one's own, nor the last enabled center admin.
pub async fn delete(ctx: &Context, caller: &Caller, id: Uuid) -> AppResult<()> {
    caller.authorize(Action::ManageOrganisation)?;
    if id == caller.id {
        return Err(AppError::conflict("cannot_delete_self", "you cannot delete your own account"));
    }
    let mut tx = ctx.pool.begin().await?;
    let before = users::get(&mut tx, id).await.map_err(|e| AppError::from_store("user", e))?;
    ensure_not_last_admin(&mut tx, &before, None).await?;
    users::delete(&mut tx, id).await.map_err(|e| AppError::from_store("user", e))?;
    audit::record(&mut tx, &caller.actor(), Change::delete("user", id, &before)).await?;
    super::commit(tx).await?;
    Ok(())
}

/// Sets the password of the account named `username` (operators, from the command line);
/// its existing tokens stop working.
pub async fn set_password(
    ctx: &Context,
    actor: &Actor,
    username: &str,
    password: String,
) -> AppResult<User> {
    let hash = hash_password(password).await?;
    let mut tx = ctx.pool.begin().await?;
    let account = users::find_credentials(&mut tx, username).await?.ok_or_else(|| {
        AppError::new(
            super::ErrorKind::NotFound,
            "not_found",
            format!("no user named {username:?}"),
        )
    })?;
    let user = users::set_password(&mut tx, account.user.id, &hash).await?;
    audit::record(&mut tx, actor, Change::new("user", "password", user.id)).await?;
    super::commit(tx).await?;
    Ok(user)
}

/// An account with the names of its field or department, for listings.
#[derive(Debug, Clone)]
pub struct AccountSummary {
    pub user: User,
    pub field: Option<String>,
    pub department: Option<String>,
}

/// Every account, with the names of what it is bound to (operators, from the command line).
pub async fn directory(ctx: &Context) -> AppResult<Vec<AccountSummary>> {
    let mut conn = ctx.pool.acquire().await?;
    let mut page = PageRequest { after: None, limit: 500 };
    let mut out = Vec::new();
    loop {
        let batch = users::list(&mut conn, &UserFilter::default(), page).await?;
        for user in batch.items {
            let field = match user.scope().field_id() {
                Some(id) => Some(org::get_unit(&mut conn, UnitKind::Field, id).await?.name),
                None => None,
            };
            let department = match user.scope().department_id() {
                Some(id) => Some(org::get_department(&mut conn, id).await?.name),
                None => None,
            };
            out.push(AccountSummary { user, field, department });
        }
        match batch.next_cursor {
            Some(cursor) => page.after = Some(cursor),
            None => return Ok(out),
        }
    }
}
