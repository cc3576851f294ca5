//! Login, the authenticated-caller extractor, and `/me`.

use std::marker::PhantomData;

use axum::extract::{FromRequestParts, State};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use serde::Deserialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{ApiError, ErrorEnvelope};
use super::extract::Json;
use crate::app::auth::{Me, TokenResponse};
use crate::app::{self, Caller};
use crate::context::Context;
use crate::domain::scope::Action;

pub fn router() -> OpenApiRouter<Context> {
    OpenApiRouter::new().routes(routes!(login)).routes(routes!(me))
}

/// The caller behind a request's bearer token, recognised by [`app::auth::authenticate`].
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
        let request_id =
            parts.headers.get("x-request-id").and_then(|v| v.to_str().ok()).map(str::to_owned);
        let caller = app::auth::authenticate(ctx, token, request_id).await?;
        tracing::Span::current().record("user", caller.username.as_str());
        Ok(caller)
    }
}

/// An action a route needs its caller's role to allow (see [`Permitted`]).
pub trait Needs {
    const ACTION: Action;
}

/// The caller, once its role is known to allow `N`'s action: a route that takes a body asks
/// for this before the body, so a role that may not use the route is refused (403) whatever
/// it sent.
pub struct Permitted<N>(pub Caller, pub PhantomData<N>);

impl<N: Needs> FromRequestParts<Context> for Permitted<N> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, ctx: &Context) -> Result<Self, ApiError> {
        let caller = Caller::from_request_parts(parts, ctx).await?;
        caller.authorize(N::ACTION)?;
        Ok(Self(caller, PhantomData))
    }
}

macro_rules! needs {
    ($($(#[$doc:meta])* $name:ident => $action:ident;)*) => {$(
        $(#[$doc])*
        pub struct $name;

        impl Needs for $name {
            const ACTION: Action = Action::$action;
        }
    )*};
}

needs! {
    /// Center admins: sites, fields, departments, accounts.
    ManagesOrganisation => ManageOrganisation;
    /// Center admins: maintenance jobs.
    RunsMaintenance => RunMaintenance;
    /// Center admins: servers to fields.
    AllocatesServers => AllocateServers;
    /// Center and field admins: department quotas.
    SetsQuotas => SetQuota;
    /// Team leads: new projects.
    CreatesProjects => CreateProject;
    /// Team leads and center admins: project changes.
    ChangesProjects => ChangeProject;
    /// Center admins: forced steps of stuck projects.
    ForcesProjects => ForceProject;
    /// Field admins and center admins: approving and rejecting project requests.
    DecidesProjects => DecideProject;
    /// Team leads: quota requests for their department.
    RequestsQuota => RequestQuota;
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    pub username: String,
    pub password: String,
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
async fn login(
    State(ctx): State<Context>,
    headers: axum::http::HeaderMap,
    Json(request): Json<LoginRequest>,
) -> Result<Json<TokenResponse>, ApiError> {
    let request_id = headers.get("x-request-id").and_then(|v| v.to_str().ok()).map(str::to_owned);
    Ok(Json(app::auth::login(&ctx, &request.username, request.password, request_id).await?))
}

/// The authenticated caller: who it is, its role and scope.
#[utoipa::path(get, path = "/me", tag = "auth",
    responses((status = 200, body = Me), (status = 401, body = ErrorEnvelope)),
    security(("bearer" = [])))]
async fn me(State(ctx): State<Context>, caller: Caller) -> Result<Json<Me>, ApiError> {
    Ok(Json(app::auth::me(&ctx, &caller).await?))
}
