//! Logging in, recognising a token's account, and who the caller is.

use serde::Serialize;
use uuid::Uuid;

use super::{Actor, AppError, AppResult, Caller};
use crate::config::Mode;
use crate::context::Context;
use crate::domain::name::Username;
use crate::domain::password;
use crate::domain::role::Role;
use crate::store::audit::{self, Change};
use crate::store::org::{self, UnitKind};
use crate::store::throttle::{self, ThrottlePolicy};
use crate::store::users::{self, Credentials};

/// A signed access token.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct TokenResponse {
    pub access_token: String,
    /// Always `bearer`.
    pub token_type: String,
    /// Seconds until the token expires.
    pub expires_in: i64,
}

/// Whether the account may be logged in (or its tokens used) in this mode.
fn admits(mode: Mode, account: &Credentials) -> bool {
    !account.user.disabled && (mode == Mode::Demo || !account.user.is_demo)
}

fn refused() -> AppError {
    AppError::unauthorized("invalid_credentials", "invalid username or password")
}

/// Exchanges a username and password for a token. Unknown usernames and wrong passwords get
/// the same answer after the same work; repeated failures for one username lock it for a while.
pub async fn login(
    ctx: &Context,
    username: &str,
    password: String,
    request_id: Option<String>,
) -> AppResult<TokenResponse> {
    let account = check_credentials(ctx, username, password, request_id).await?;
    let access_token = ctx.tokens.issue(&account).map_err(AppError::internal)?;
    Ok(TokenResponse {
        access_token,
        token_type: "bearer".to_owned(),
        expires_in: ctx.tokens.ttl_secs(),
    })
}

/// The account behind a username and password, checked the one way every login goes (the API
/// token and the console session alike): throttled per username, the same work for unknown
/// names, refusals audited.
#[tracing::instrument(skip_all, fields(username = %username))]
pub async fn check_credentials(
    ctx: &Context,
    username: &str,
    password: String,
    request_id: Option<String>,
) -> AppResult<Credentials> {
    // A malformed name is refused without a trace in the audit trail (nor any work): anyone
    // could otherwise fill it for free. Refusals of checked passwords are audited below; the
    // throttle bounds them per username.
    if Username::parse(username).is_err() {
        metrics::counter!("infrahub_logins_total", "outcome" => "failure").increment(1);
        return Err(refused());
    }
    let key = username.to_lowercase();
    let auth = &ctx.config.auth;
    let policy = ThrottlePolicy {
        max_failures: auth.login_max_failures,
        window_secs: auth.login_failure_window_secs,
        lockout_secs: auth.login_lockout_secs,
    };
    let mut conn = ctx.pool.acquire().await?;
    if let Some(secs) = throttle::attempt(&mut conn, &key, policy).await? {
        metrics::counter!("infrahub_logins_total", "outcome" => "locked").increment(1);
        return Err(too_many(secs));
    }
    let account = users::find_credentials(&mut conn, username).await?;
    let stored =
        account.as_ref().map_or_else(|| ctx.dummy_hash.to_string(), |a| a.password_hash.clone());
    let matches = password::verify_blocking(password, stored).await;
    match account.filter(|a| matches && admits(ctx.mode, a)) {
        Some(account) => {
            throttle::clear(&mut conn, &key).await?;
            metrics::counter!("infrahub_logins_total", "outcome" => "success").increment(1);
            tracing::info!(user = %account.user.username, "login");
            Ok(account)
        }
        None => {
            metrics::counter!("infrahub_logins_total", "outcome" => "failure").increment(1);
            tracing::info!("login refused");
            audit_refusal(&mut conn, username, "invalid_credentials", request_id).await?;
            Err(refused())
        }
    }
}

/// Whether an account read afresh may still use a token or session issued when its password
/// dated from `password_changed_at`: enabled, admitted in this mode, same password.
pub fn still_valid(ctx: &Context, account: &Credentials, password_changed_at_micros: i64) -> bool {
    admits(ctx.mode, account)
        && account.password_changed_at.timestamp_micros() == password_changed_at_micros
}

/// Writes a refused login whose password was checked to the audit trail: `login.failed` on
/// the username tried, with why. Who tried is unknown, so the actor is `anonymous`. Attempts
/// refused by the lockout are not written (only counted in `infrahub_logins_total`): each
/// would be a free row.
/// Uses the login's own connection: a second one per refused login would let a burst of
/// guesses exhaust the pool.
async fn audit_refusal(
    conn: &mut sqlx::PgConnection,
    username: &str,
    reason: &str,
    request_id: Option<String>,
) -> AppResult<()> {
    let tried = username.to_lowercase();
    let actor = Actor { user_id: None, name: "anonymous".to_owned(), request_id };
    let change =
        Change::new("login", "failed", tried).after(&serde_json::json!({ "reason": reason }));
    audit::record(conn, &actor, change).await?;
    Ok(())
}

fn too_many(secs: i64) -> AppError {
    let retry_after_secs = u64::try_from(secs).unwrap_or(1).max(1);
    AppError::new(
        super::ErrorKind::TooManyRequests { retry_after_secs },
        "too_many_requests",
        "too many failed logins for this username; try again later",
    )
}

/// The account behind a bearer token, read afresh: a disabled account, a changed password or
/// a demo account outside the demo ends the token at once.
pub async fn authenticate(
    ctx: &Context,
    token: &str,
    request_id: Option<String>,
) -> AppResult<Caller> {
    let claims = ctx.tokens.verify(token).map_err(|e| {
        tracing::debug!(error = %e, "token refused");
        AppError::unauthorized("unauthorized", "the token is invalid or expired")
    })?;
    let account = ctx.accounts.find(claims.sub).await?;
    let account = account
        .filter(|a| still_valid(ctx, a, claims.pwd_at))
        .ok_or_else(|| AppError::unauthorized("unauthorized", "the token is no longer valid"))?;
    Ok(Caller::new(&account.user, request_id))
}

/// A reference to a named unit of the organisation.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct NamedRef {
    pub id: Uuid,
    pub name: String,
}

/// Who the caller is: role and scope, with names.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Me {
    pub id: Uuid,
    pub username: String,
    pub role: Role,
    /// The field a field admin administers, or the field of a team lead's department.
    pub field: Option<NamedRef>,
    /// A team lead's department.
    pub department: Option<NamedRef>,
}

pub async fn me(ctx: &Context, caller: &Caller) -> AppResult<Me> {
    let mut conn = ctx.pool.acquire().await?;
    let department = match caller.scope.department_id() {
        Some(id) => Some(org::get_department(&mut conn, id).await?),
        None => None,
    };
    let field_id = caller.scope.field_id().or(department.as_ref().map(|d| d.field_id));
    let department = department.map(|d| NamedRef { id: d.id, name: d.name });
    let field = match field_id {
        Some(id) => {
            let unit = org::get_unit(&mut conn, UnitKind::Field, id).await?;
            Some(NamedRef { id: unit.id, name: unit.name })
        }
        None => None,
    };
    Ok(Me {
        id: caller.id,
        username: caller.username.clone(),
        role: caller.role,
        field,
        department,
    })
}
