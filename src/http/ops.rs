//! Liveness, readiness and metrics: at the root (for probes and scrapers) and under `/api/v1`.

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Serialize;
use serde_json::json;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{ApiError, ErrorEnvelope};
use super::extract::Json;
use crate::app;
use crate::context::Context;

pub fn router() -> OpenApiRouter<Context> {
    OpenApiRouter::new().routes(routes!(healthz)).routes(routes!(readyz)).routes(routes!(metrics))
}

/// The same probes at the root, where process supervisors and Prometheus look by default.
pub fn root_router() -> Router<Context> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Health {
    /// `ok` or `ready`.
    pub status: String,
}

/// Liveness: the process is up and serving.
#[utoipa::path(get, path = "/healthz", tag = "ops", responses((status = 200, body = Health)))]
async fn healthz() -> Json<Health> {
    Json(Health { status: "ok".to_owned() })
}

/// Readiness: the database answers and every migration of this binary is applied.
#[utoipa::path(get, path = "/readyz", tag = "ops",
    responses((status = 200, body = Health), (status = 503, body = ErrorEnvelope)))]
async fn readyz(State(ctx): State<Context>) -> Result<Json<Health>, ApiError> {
    let not_ready = |reason: String| {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "not_ready", reason.clone())
            .with_details(json!({ "reason": reason }))
    };
    app::ops::readiness(&ctx).await.map_err(not_ready)?;
    Ok(Json(Health { status: "ready".to_owned() }))
}

/// Prometheus text exposition: what the process records (HTTP requests by route and status
/// with latency histograms, job outcomes, durations and pickup latency, logins) and gauges
/// read from the database at each scrape (job backlog and the age of the oldest ready job,
/// projects by status, servers by status, field capacity and department quotas). With
/// `http.metrics_token` set it wants that token as a bearer.
#[utoipa::path(get, path = "/metrics", tag = "ops",
    responses((status = 200, content_type = "text/plain", body = String),
        (status = 401, body = ErrorEnvelope)),
    security((), ("metrics_bearer" = [])))]
async fn metrics(State(ctx): State<Context>, headers: HeaderMap) -> Response {
    if let Some(token) = &ctx.metrics_token {
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim());
        let matches = given.is_some_and(|given| {
            crate::app::token::constant_time_eq(given.as_bytes(), token.expose().as_bytes())
        });
        if !matches {
            return ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "metrics want the bearer token of http.metrics_token",
            )
            .into_response();
        }
    }
    let mut body = ctx.metrics.render();
    body.push_str(&app::ops::gauges(&ctx).await);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response()
}
