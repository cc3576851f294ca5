//! Accounts. The password hash never leaves this module's row type towards clients: the HTTP
//! layer answers with [`User`], which has no hash.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgConnection, PgPool};
use tracing::Instrument;
use uuid::Uuid;

use super::gather::{self, Asked, Gather, Statement, Unreachable, fail_all};
use super::{Page, PageRequest, StoreError};
use crate::domain::role::Role;
use crate::domain::scope::Scope;

/// An account as clients see it.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct User {
    pub id: Uuid,
    pub username: String,
    #[sqlx(try_from = "String")]
    pub role: Role,
    /// Set for field admins.
    pub field_id: Option<Uuid>,
    /// Set for team leads.
    pub department_id: Option<Uuid>,
    pub disabled: bool,
    /// Demo accounts log in only to `infrahub demo`.
    pub is_demo: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl User {
    pub fn scope(&self) -> Scope {
        Scope::of(self.field_id, self.department_id)
    }
}

/// What login and token checks need besides the public fields.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Credentials {
    #[sqlx(flatten)]
    pub user: User,
    pub password_hash: String,
    pub password_changed_at: DateTime<Utc>,
}

macro_rules! user_columns {
    () => {
        "id, username, role, field_id, department_id, disabled, is_demo, created_at, updated_at"
    };
}

/// Looks an account up by name, case-insensitively.
pub async fn find_credentials(
    conn: &mut PgConnection,
    username: &str,
) -> Result<Option<Credentials>, StoreError> {
    Ok(sqlx::query_as(concat!(
        "SELECT ",
        user_columns!(),
        ", password_hash, password_changed_at FROM users WHERE lower(username) = lower($1)"
    ))
    .bind(username)
    .fetch_optional(conn)
    .await?)
}

/// The account behind a token, with when its password last changed.
pub async fn find_credentials_by_id(
    conn: &mut PgConnection,
    id: Uuid,
) -> Result<Option<Credentials>, StoreError> {
    Ok(sqlx::query_as(concat!(
        "SELECT ",
        user_columns!(),
        ", password_hash, password_changed_at FROM users WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(conn)
    .await?)
}

/// Reads the accounts behind tokens, many to a statement under load ([`Gather`]): every
/// authenticated request reads its account afresh (a disabled account or a changed password
/// ends its tokens at once), which was a statement per request. Cheap to clone.
#[derive(Clone)]
pub struct AccountReads {
    gather: Gather<CredentialsById>,
}

impl AccountReads {
    /// The connections of [`gather::pool`] its statements may hold at once.
    pub const CONNECTIONS: u32 = gather::runners::<CredentialsById>();

    pub fn new(pool: PgPool) -> Self {
        Self { gather: Gather::new(CredentialsById { pool }) }
    }

    /// The account `id` with when its password last changed, read by a statement that started
    /// after this was called (so as fresh as [`find_credentials_by_id`] would read it).
    pub async fn find(&self, id: Uuid) -> Result<Option<Credentials>, StoreError> {
        self.gather.ask(id).await
    }
}

struct CredentialsById {
    pool: PgPool,
}

impl Statement for CredentialsById {
    type Ask = Uuid;
    type Answer = Option<Credentials>;
    const BATCH: usize = 64;
    const RUNNERS: usize = 2;

    async fn run(&self, batch: Vec<Asked<Self>>) -> Option<Unreachable> {
        let ids: Vec<Uuid> = batch.iter().map(|asked| asked.ask).collect();
        let read: Result<Vec<Credentials>, sqlx::Error> = async {
            sqlx::query_as(concat!(
                "SELECT ",
                user_columns!(),
                ", password_hash, password_changed_at FROM users WHERE id = ANY($1)"
            ))
            .bind(&ids)
            .fetch_all(&mut *self.pool.acquire().await?)
            .await
        }
        .instrument(tracing::info_span!("account_statement", accounts = ids.len()))
        .await;
        let found = match read {
            Ok(found) => found,
            Err(err) => return fail_all(batch, err),
        };
        let by_id: HashMap<Uuid, Credentials> =
            found.into_iter().map(|account| (account.user.id, account)).collect();
        for asked in batch {
            let account = by_id.get(&asked.ask).cloned();
            asked.answer(Ok(account));
        }
        None
    }
}

pub async fn get(conn: &mut PgConnection, id: Uuid) -> Result<User, StoreError> {
    Ok(sqlx::query_as(concat!("SELECT ", user_columns!(), " FROM users WHERE id = $1"))
        .bind(id)
        .fetch_one(conn)
        .await?)
}

/// Filters of the user list; every one is applied in SQL.
#[derive(Debug, Default, Clone)]
pub struct UserFilter {
    pub role: Option<Role>,
    pub field_id: Option<Uuid>,
    pub department_id: Option<Uuid>,
}

pub async fn list(
    conn: &mut PgConnection,
    filter: &UserFilter,
    page: PageRequest,
) -> Result<Page<User>, StoreError> {
    let rows = sqlx::query_as(concat!(
        "SELECT ",
        user_columns!(),
        " FROM users
          WHERE ($1::uuid IS NULL OR id > $1)
            AND ($3::text IS NULL OR role = $3)
            AND ($4::uuid IS NULL OR field_id = $4)
            AND ($5::uuid IS NULL OR department_id = $5)
          ORDER BY id LIMIT $2"
    ))
    .bind(page.after)
    .bind(page.fetch_limit())
    .bind(filter.role.map(Role::as_str))
    .bind(filter.field_id)
    .bind(filter.department_id)
    .fetch_all(conn)
    .await?;
    Ok(Page::from_rows(rows, page, |u: &User| u.id))
}

/// A new account; `password_hash` is an argon2id PHC string.
pub struct NewUser<'a> {
    pub username: &'a str,
    pub password_hash: &'a str,
    pub role: Role,
    pub scope: Scope,
    pub is_demo: bool,
}

pub async fn insert(conn: &mut PgConnection, new: &NewUser<'_>) -> Result<User, StoreError> {
    Ok(sqlx::query_as(concat!(
        "INSERT INTO users (id, username, password_hash, role, field_id, department_id, is_demo)
         VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING ",
        user_columns!()
    ))
    .bind(Uuid::now_v7())
    .bind(new.username)
    .bind(new.password_hash)
    .bind(new.role.as_str())
    .bind(new.scope.field_id())
    .bind(new.scope.department_id())
    .bind(new.is_demo)
    .fetch_one(conn)
    .await?)
}

/// Sets role, scope and the disabled flag together, so the row never breaks its scope check.
pub async fn update_role_scope(
    conn: &mut PgConnection,
    id: Uuid,
    role: Role,
    scope: Scope,
    disabled: bool,
) -> Result<User, StoreError> {
    Ok(sqlx::query_as(concat!(
        "UPDATE users SET role = $2, field_id = $3, department_id = $4, disabled = $5,
                          updated_at = now()
          WHERE id = $1 RETURNING ",
        user_columns!()
    ))
    .bind(id)
    .bind(role.as_str())
    .bind(scope.field_id())
    .bind(scope.department_id())
    .bind(disabled)
    .fetch_one(conn)
    .await?)
}

/// Replaces the password; tokens issued before now stop working.
pub async fn set_password(
    conn: &mut PgConnection,
    id: Uuid,
    password_hash: &str,
) -> Result<User, StoreError> {
    Ok(sqlx::query_as(concat!(
        "UPDATE users SET password_hash = $2, password_changed_at = now(), updated_at = now()
          WHERE id = $1 RETURNING ",
        user_columns!()
    ))
    .bind(id)
    .bind(password_hash)
    .fetch_one(conn)
    .await?)
}

pub async fn delete(conn: &mut PgConnection, id: Uuid) -> Result<User, StoreError> {
    Ok(sqlx::query_as(concat!("DELETE FROM users WHERE id = $1 RETURNING ", user_columns!()))
        .bind(id)
        .fetch_one(conn)
        .await?)
}

/// Ids of enabled center admins, locked so two admins cannot remove the last two at once.
pub async fn lock_active_center_admins(conn: &mut PgConnection) -> Result<Vec<Uuid>, StoreError> {
    Ok(sqlx::query_scalar(
        "SELECT id FROM users WHERE role = 'center_admin' AND NOT disabled ORDER BY id FOR UPDATE",
    )
    .fetch_all(conn)
    .await?)
}
