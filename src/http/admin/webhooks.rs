//! Webhooks: where notifications go (center admins).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::json;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::app::webhooks::{CreateWebhook, CreatedWebhook, UpdateWebhook};
use crate::app::{self, Caller, PageParams};
use crate::context::Context;
use crate::http::auth::{ManagesOrganisation, Permitted};
use crate::http::error::{ApiError, ErrorEnvelope};
use crate::http::extract::{Json, Path, Query};
use crate::http::jobs::{Accepted, accepted};
use crate::store::Page;
use crate::store::webhooks::Webhook;

pub fn router() -> OpenApiRouter<Context> {
    OpenApiRouter::new()
        .routes(routes!(list_webhooks, create_webhook))
        .routes(routes!(get_webhook, update_webhook, delete_webhook))
        .routes(routes!(ping_webhook))
}

/// List webhooks (never their secrets).
#[utoipa::path(get, path = "/admin/webhooks", tag = "admin", params(PageParams),
    responses((status = 200, body = Page<Webhook>), (status = 403, body = ErrorEnvelope)),
    security(("bearer" = [])))]
async fn list_webhooks(
    State(ctx): State<Context>,
    caller: Caller,
    Query(params): Query<PageParams>,
) -> Result<Json<Page<Webhook>>, ApiError> {
    Ok(Json(app::webhooks::list(&ctx, &caller, params).await?))
}

/// Create a webhook: 201 with its `secret`, shown this once (generated when not given). Each
/// event it wants is POSTed to its URL as a durable job, signed: `X-InfraHub-Signature:
/// sha256=<hex HMAC-SHA256 of "{X-InfraHub-Timestamp}.{body}">`.
#[utoipa::path(post, path = "/admin/webhooks", tag = "admin", request_body = CreateWebhook,
    responses((status = 201, body = CreatedWebhook), (status = 403, body = ErrorEnvelope),
              (status = 409, body = ErrorEnvelope), (status = 422, body = ErrorEnvelope)),
    security(("bearer" = [])))]
async fn create_webhook(
    State(ctx): State<Context>,
    Permitted(caller, _): Permitted<ManagesOrganisation>,
    Json(body): Json<CreateWebhook>,
) -> Result<(StatusCode, Json<CreatedWebhook>), ApiError> {
    Ok((StatusCode::CREATED, Json(app::webhooks::create(&ctx, &caller, body).await?)))
}

/// Get a webhook.
#[utoipa::path(get, path = "/admin/webhooks/{id}", tag = "admin", params(("id" = Uuid, Path)),
    responses((status = 200, body = Webhook), (status = 404, body = ErrorEnvelope)),
    security(("bearer" = [])))]
async fn get_webhook(
    State(ctx): State<Context>,
    caller: Caller,
    Path(id): Path<Uuid>,
) -> Result<Json<Webhook>, ApiError> {
    Ok(Json(app::webhooks::get(&ctx, &caller, id).await?))
}

/// Change a webhook's URL, format, events, secret or whether it is enabled.
#[utoipa::path(patch, path = "/admin/webhooks/{id}", tag = "admin", params(("id" = Uuid, Path)),
    request_body = UpdateWebhook,
    responses((status = 200, body = Webhook), (status = 404, body = ErrorEnvelope),
              (status = 422, body = ErrorEnvelope)),
    security(("bearer" = [])))]
async fn update_webhook(
    State(ctx): State<Context>,
    Permitted(caller, _): Permitted<ManagesOrganisation>,
    Path(id): Path<Uuid>,
    Json(body): Json<UpdateWebhook>,
) -> Result<Json<Webhook>, ApiError> {
    Ok(Json(app::webhooks::update(&ctx, &caller, id, body).await?))
}

/// Delete a webhook; deliveries still queued for it are skipped.
#[utoipa::path(delete, path = "/admin/webhooks/{id}", tag = "admin", params(("id" = Uuid, Path)),
    responses((status = 204), (status = 404, body = ErrorEnvelope)),
    security(("bearer" = [])))]
async fn delete_webhook(
    State(ctx): State<Context>,
    caller: Caller,
    Path(id): Path<Uuid>,
) -> Result<StatusCode, ApiError> {
    app::webhooks::delete(&ctx, &caller, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Send the webhook a `ping` now: 202 with the delivery job.
#[utoipa::path(post, path = "/admin/webhooks/{id}/ping", tag = "admin", params(("id" = Uuid, Path)),
    responses((status = 202, body = Accepted), (status = 404, body = ErrorEnvelope)),
    security(("bearer" = [])))]
async fn ping_webhook(
    State(ctx): State<Context>,
    caller: Caller,
    Path(id): Path<Uuid>,
) -> Result<Response, ApiError> {
    let submitted = app::webhooks::ping(&ctx, &caller, id).await?;
    Ok(accepted(&submitted, json!({})))
}
