//! Quota requests: team leads ask for more quota at a site; field admins approve (an
//! `allocate_quota` job raises the quota) or reject them.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::error::{ApiError, ErrorEnvelope};
use super::extract::{Json, Path, Query};
use super::jobs::{Accepted, accepted};
use crate::app::quota_requests::{
    AskQuota, QuotaRequestQuery, QuotaRequestView, RejectQuotaRequest,
};
use crate::app::{self, Caller, PageParams};
use crate::context::Context;
use crate::http::auth::{Permitted, RequestsQuota, SetsQuotas};
use crate::store::Page;

pub fn router() -> OpenApiRouter<Context> {
    OpenApiRouter::new()
        .routes(routes!(list_requests, ask_quota))
        .routes(routes!(get_request))
        .routes(routes!(approve_request))
        .routes(routes!(reject_request))
}

/// Ask for more quota for your department at a site, with a reason (team leads). 201 with the
/// request and, as `fit`, what approving it would do now; 409 `already_pending` while the
/// department has an open request at that site.
#[utoipa::path(post, path = "/quota-requests", tag = "inventory", request_body = AskQuota,
    responses((status = 201, body = QuotaRequestView), (status = 403, body = ErrorEnvelope),
              (status = 409, body = ErrorEnvelope), (status = 422, body = ErrorEnvelope)),
    security(("bearer" = [])))]
async fn ask_quota(
    State(ctx): State<Context>,
    Permitted(caller, _): Permitted<RequestsQuota>,
    Json(body): Json<AskQuota>,
) -> Result<Response, ApiError> {
    let view = app::quota_requests::ask(&ctx, &caller, body).await?;
    Ok((StatusCode::CREATED, axum::Json(view)).into_response())
}

/// The quota requests you may see (a team lead: its department's; a field admin: its
/// field's), oldest first (newest first with `newest_first=true`); pending ones with `fit`:
/// the quota now and after, the field's free capacity for the department at the site, and
/// whether it fits.
#[utoipa::path(get, path = "/quota-requests", tag = "inventory", params(PageParams, QuotaRequestQuery),
    responses((status = 200, body = Page<QuotaRequestView>), (status = 422, body = ErrorEnvelope)),
    security(("bearer" = [])))]
async fn list_requests(
    State(ctx): State<Context>,
    caller: Caller,
    Query(params): Query<PageParams>,
    Query(query): Query<QuotaRequestQuery>,
) -> Result<Json<Page<QuotaRequestView>>, ApiError> {
    Ok(Json(app::quota_requests::list(&ctx, &caller, query, params).await?))
}

/// One quota request.
#[utoipa::path(get, path = "/quota-requests/{id}", tag = "inventory", params(("id" = Uuid, Path)),
    responses((status = 200, body = QuotaRequestView), (status = 404, body = ErrorEnvelope)),
    security(("bearer" = [])))]
async fn get_request(
    State(ctx): State<Context>,
    caller: Caller,
    Path(id): Path<Uuid>,
) -> Result<Json<QuotaRequestView>, ApiError> {
    Ok(Json(app::quota_requests::get(&ctx, &caller, id).await?))
}

/// Approve a pending request (the field admin of its field, or a center admin): 202 with the
/// `allocate_quota` job that raises the department's quota at the site by the amount asked
/// (checked now, and again by the job under the lock). 409 `over_quota` when the field's
/// free capacity cannot hold it (the request stays pending), `not_pending` once decided.
#[utoipa::path(post, path = "/quota-requests/{id}/approve", tag = "inventory", params(("id" = Uuid, Path)),
    responses((status = 202, body = Accepted), (status = 403, body = ErrorEnvelope),
              (status = 404, body = ErrorEnvelope), (status = 409, body = ErrorEnvelope)),
    security(("bearer" = [])))]
async fn approve_request(
    State(ctx): State<Context>,
    Permitted(caller, _): Permitted<SetsQuotas>,
    Path(id): Path<Uuid>,
) -> Result<Response, ApiError> {
    let (view, submitted) = app::quota_requests::approve(&ctx, &caller, id).await?;
    Ok(accepted(&submitted, json!({ "request": view })))
}

/// Reject a pending request with a reason (the field admin of its field, or a center admin).
#[utoipa::path(post, path = "/quota-requests/{id}/reject", tag = "inventory", params(("id" = Uuid, Path)),
    request_body = RejectQuotaRequest,
    responses((status = 200, body = QuotaRequestView), (status = 403, body = ErrorEnvelope),
              (status = 404, body = ErrorEnvelope), (status = 409, body = ErrorEnvelope),
              (status = 422, body = ErrorEnvelope)),
    security(("bearer" = [])))]
async fn reject_request(
    State(ctx): State<Context>,
    Permitted(caller, _): Permitted<SetsQuotas>,
    Path(id): Path<Uuid>,
    Json(body): Json<RejectQuotaRequest>,
) -> Result<Json<QuotaRequestView>, ApiError> {
    Ok(Json(app::quota_requests::reject(&ctx, &caller, id, body).await?))
}
