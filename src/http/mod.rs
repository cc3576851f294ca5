//! The JSON API under `/api/v1`: routing, extractors, the error envelope, OpenAPI. Handlers
//! extract the request, call one use case of [`crate::app`] and shape its answer; they hold no
//! rule of their own.

pub mod admin;
pub mod audit;
pub mod auth;
pub mod docs;
pub mod error;
pub mod extract;
pub mod idempotency;
pub mod inventory;
pub mod jobs;
pub mod ops;
pub mod projects;
pub mod quota_requests;

use std::future::Future;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{HeaderName, StatusCode};
use axum::middleware::{self, Next};
use axum::response::Response;
use tokio::net::TcpListener;
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;
use tracing::{Span, field};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;

use crate::context::Context;
use error::ApiError;

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The API's routes under `/api/v1`, with the OpenAPI document they describe.
pub fn api() -> (Router<Context>, utoipa::openapi::OpenApi) {
    let v1 = OpenApiRouter::new()
        .merge(auth::router())
        .merge(admin::router())
        .merge(jobs::router())
        .merge(inventory::router())
        .merge(projects::router())
        .merge(quota_requests::router())
        .merge(audit::router())
        .merge(ops::router());
    let (router, mut openapi) =
        OpenApiRouter::with_openapi(docs::ApiDoc::openapi()).nest("/api/v1", v1).split_for_parts();
    docs::IdempotencyHeader.modify(&mut openapi);
    docs::ResponseDescriptions.modify(&mut openapi);
    (router, openapi)
}

/// The whole application: API, docs, health probes at the root, and the middleware stack.
pub fn router(ctx: Context) -> Router {
    let (api, openapi) = api();
    let body_limit = ctx.config.http.body_limit_bytes;
    api.route_layer(middleware::from_fn_with_state(ctx.clone(), idempotency::layer))
        .merge(ops::root_router())
        .merge(docs::router(openapi))
        .merge(crate::console::router(ctx.clone()))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(
            ServiceBuilder::new()
                .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
                .layer(
                    TraceLayer::new_for_http()
                        .make_span_with(make_request_span)
                        .on_response(record_response),
                )
                .layer(PropagateRequestIdLayer::new(REQUEST_ID))
                .layer(CatchPanicLayer::custom(|_| {
                    axum::response::IntoResponse::into_response(ApiError::internal(
                        "handler panicked",
                    ))
                }))
                .layer(middleware::from_fn(record_metrics))
                .layer(middleware::from_fn_with_state(ctx.clone(), wake_after))
                .layer(DefaultBodyLimit::max(body_limit)),
        )
        .with_state(ctx)
}

/// Runs the request as one unit of work: the wake-ups of the jobs it enqueued go out once its
/// transactions have committed (with an `Idempotency-Key`, once the answer is stored with them).
async fn wake_after(State(ctx): State<Context>, request: Request, next: Next) -> Response {
    crate::jobs::wake::unit(&ctx.wake_ups, next.run(request)).await
}

fn make_request_span(request: &Request) -> Span {
    let route = request.extensions().get::<MatchedPath>().map_or("unmatched", |p| p.as_str());
    let request_id = request.headers().get(&REQUEST_ID).and_then(|v| v.to_str().ok()).unwrap_or("");
    tracing::info_span!(
        "request",
        method = %request.method(),
        route,
        request_id,
        user = field::Empty,
        status = field::Empty,
        latency_ms = field::Empty,
    )
}

fn record_response<B>(response: &axum::http::Response<B>, latency: Duration, span: &Span) {
    span.record("status", response.status().as_u16());
    span.record("latency_ms", latency.as_secs_f64() * 1000.0);
    tracing::info!("finished");
}

/// Counts requests and their durations by method, matched route and status.
async fn record_metrics(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().to_string();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    let labels = [("method", method), ("route", route), ("status", status)];
    metrics::counter!("infrahub_http_requests_total", &labels).increment(1);
    metrics::histogram!("infrahub_http_request_duration_seconds", &labels)
        .record(started.elapsed().as_secs_f64());
    response
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "method not allowed here")
}

/// A worker's small listener: `/healthz`, `/readyz` and `/metrics` only.
pub fn probes(ctx: Context) -> Router {
    ops::root_router()
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn(record_metrics))
        .with_state(ctx)
}

/// Serves `router` until `shutdown` resolves, then lets in-flight requests finish. Takes its
/// listener so tests can bind port 0.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router).with_graceful_shutdown(shutdown).await
}
