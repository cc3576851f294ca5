//! Login, the authenticated-caller extractor, and `/me`.

use axum::extract::{FromRequestParts, State};
use axum::http::StatusCode;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::error::{ApiError, ErrorEnvelope};
use super::extract::Json;
use crate::config::Mode;
use crate::context::Context;
use crate::domain::name::Username;
use crate::domain::password;
use crate::domain::role::{Role, Scope};
use crate::store::audit::Actor;
use crate::store::org::{self, UnitKind};
use crate::store::throttle::{self, ThrottlePolicy};
use crate::store::users::{self, Credentials, User};

pub fn router() -> OpenApiRouter<Context> {
    OpenApiRouter::new().routes(routes!(login)).routes(routes!(me))
}

/// The authenticated account behind a request's bearer token, read afresh from the database.
#[derive(Debug, Clone)]
pub struct Caller {
    pub user: User,
    /// The request's `x-request-id`, carried into audit events.
    pub request_id: Option<String>,
}

impl Caller {
    /// 403 unless the caller has one of `roles`.
    pub fn require(&self, roles: &[Role]) -> Result<(), ApiError> {
        if roles.contains(&self.user.role) {
            Ok(())
        } else {
            Err(ApiError::forbidden(format!(
                "the {} role may not use this endpoint",
                self.user.role
            )))
        }
    }

    pub fn actor(&self) -> Actor {
        Actor {
            user_id: Some(self.user.id),
            name: self.user.username.clone(),
            request_id: self.request_id.clone(),
        }
    }
}

impl FromRequestParts<Context> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, ctx: &Context) -> Result<Self, ApiError> {
        let header = parts.headers.get(AUTHORIZATION).ok_or_else(|| {
            ApiError::unauthorized("missing Authorization: Bearer <token> header")
        })?;
        let token = header
            .to_str()
            .ok()
            .and_then(|h| h.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim())
            .ok_or_else(|| {
                ApiError::unauthorized("the Authorization header must be `Bearer <token>`")
            })?;
        let claims = ctx.tokens.verify(token).map_err(|e| {
            tracing::debug!(error = %e, "token refused");
            ApiError::unauthorized("the token is invalid or expired")
        })?;
        let mut conn = ctx.pool.acquire().await?;
        let account = users::find_credentials_by_id(&mut conn, claims.sub).await?;
        let account = account
            .filter(|a| admits(ctx.mode, a))
            .filter(|a| a.password_changed_at.timestamp_micros() == claims.pwd_at)
            .ok_or_else(|| ApiError::unauthorized("the token is no longer valid"))?;
        tracing::Span::current().record("user", account.user.username.as_str());
        let request_id =
            parts.headers.get("x-request-id").and_then(|v| v.to_str().ok()).map(str::to_owned);
        Ok(Caller { user: account.user, request_id })
    }
}

/// Whether the account may be logged in (or its tokens used) in this mode.
fn admits(mode: Mode, account: &Credentials) -> bool {
    !account.user.disabled && (mode == Mode::Demo || !account.user.is_demo)
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    pub username: String,
    pub password: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TokenResponse {
    pub access_token: String,
    /// Always `bearer`.
    pub token_type: String,
    /// Seconds until the token expires.
    pub expires_in: i64,
}

/// Exchange a username and password for a bearer token.
///
/// Unknown usernames and wrong passwords get the same answer after the same work. Repeated
/// failures for one username lock it for a while (429 with `Retry-After`).
#[utoipa::path(post, path = "/auth/login", tag = "auth",
    request_body = LoginRequest,
    responses(
        (status = 200, body = TokenResponse),
        (status = 401, description = "Bad credentials", body = ErrorEnvelope),
        (status = 429, description = "Too many failures for this username", body = ErrorEnvelope),
    ))]
#[tracing::instrument(skip_all, fields(username = %request.username))]
async fn login(
    State(ctx): State<Context>,
    Json(request): Json<LoginRequest>,
) -> Result<Json<TokenResponse>, ApiError> {
    let refused = || {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "invalid_credentials",
            "invalid username or password",
        )
    };
    if Username::parse(&request.username).is_err() {
        return Err(refused());
    }
    let key = request.username.to_lowercase();
    let mut conn = ctx.pool.acquire().await?;
    if let Some(secs) = throttle::locked_for(&mut conn, &key).await? {
        metrics::counter!("infrahub_logins_total", "outcome" => "locked").increment(1);
        return Err(ApiError::too_many_requests(
            "too many failed logins for this username; try again later",
            u64::try_from(secs).unwrap_or(1).max(1),
        ));
    }
    let account = users::find_credentials(&mut conn, &request.username).await?;
    let stored =
        account.as_ref().map_or_else(|| ctx.dummy_hash.to_string(), |a| a.password_hash.clone());
    let matches = password::verify_blocking(request.password, stored).await;
    match account.filter(|a| matches && admits(ctx.mode, a)) {
        Some(account) => {
            throttle::clear(&mut conn, &key).await?;
            let access_token = ctx.tokens.issue(&account).map_err(ApiError::internal)?;
            metrics::counter!("infrahub_logins_total", "outcome" => "success").increment(1);
            tracing::info!(user = %account.user.username, "login");
            Ok(Json(TokenResponse {
                access_token,
                token_type: "bearer".to_owned(),
                expires_in: ctx.tokens.ttl_secs(),
            }))
        }
        None => {
            let auth = &ctx.config.auth;
            let policy = ThrottlePolicy {
                max_failures: auth.login_max_failures,
                window_secs: auth.login_failure_window_secs,
                lockout_secs: auth.login_lockout_secs,
            };
            throttle::record_failure(&mut conn, &key, policy).await?;
            metrics::counter!("infrahub_logins_total", "outcome" => "failure").increment(1);
            tracing::info!("login refused");
            Err(refused())
        }
    }
}

/// A reference to a named unit of the organisation.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct NamedRef {
    pub id: Uuid,
    pub name: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Me {
    pub id: Uuid,
    pub username: String,
    pub role: Role,
    /// The field a field admin administers, or the field of a team lead's department.
    pub field: Option<NamedRef>,
    /// A team lead's department.
    pub department: Option<NamedRef>,
}

/// The authenticated caller: who it is, its role and scope.
#[utoipa::path(get, path = "/me", tag = "auth",
    responses((status = 200, body = Me), (status = 401, body = ErrorEnvelope)),
    security(("bearer" = [])))]
async fn me(State(ctx): State<Context>, caller: Caller) -> Result<Json<Me>, ApiError> {
    let mut conn = ctx.pool.acquire().await?;
    let (field_id, department) = match caller.user.scope() {
        Scope::Center => (None, None),
        Scope::Field(field) => (Some(field), None),
        Scope::Department(dept) => {
            let dept = org::get_department(&mut conn, dept).await?;
            (Some(dept.field_id), Some(NamedRef { id: dept.id, name: dept.name }))
        }
    };
    let field = match field_id {
        Some(id) => {
            let unit = org::get_unit(&mut conn, UnitKind::Field, id).await?;
            Some(NamedRef { id: unit.id, name: unit.name })
        }
        None => None,
    };
    let user = caller.user;
    Ok(Json(Me { id: user.id, username: user.username, role: user.role, field, department }))
}
