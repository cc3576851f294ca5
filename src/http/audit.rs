//! The audit trail, read back.

use axum::extract::State;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{ApiError, ErrorEnvelope};
use super::extract::{Json, Query};
use crate::app::audit::{AuditPage, AuditQuery};
use crate::app::{self, Caller};
use crate::context::Context;

pub fn router() -> OpenApiRouter<Context> {
    OpenApiRouter::new().routes(routes!(list_audit))
}

/// Audit events, newest first: every state change (who, what, subject, before and after, the
/// request id) and every refused login. Center admins read all of them, field admins their
/// field's. Filter by actor, subject, action (or an action prefix ending in `.`) and time.
#[utoipa::path(get, path = "/audit", tag = "audit", params(AuditQuery),
    responses((status = 200, body = AuditPage), (status = 400, body = ErrorEnvelope),
        (status = 403, body = ErrorEnvelope)),
    security(("bearer" = [])))]
async fn list_audit(
    State(ctx): State<Context>,
    caller: Caller,
    Query(query): Query<AuditQuery>,
) -> Result<Json<AuditPage>, ApiError> {
    Ok(Json(app::audit::list(&ctx, &caller, query).await?))
}
