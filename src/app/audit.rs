//! Reading the audit trail: center admins read all of it, field admins their field's events.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{AppError, AppResult, Caller, DEFAULT_LIMIT, ErrorKind, MAX_LIMIT};
use crate::context::Context;
use crate::domain::scope::{Action, Scope};
use crate::store::audit::{self, AuditEvent, AuditFilter};

/// Filters and paging of `GET /audit`; all optional.
#[derive(Debug, Clone, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// Who acted: a username, `system:<name>` or `job:<id>`.
    pub actor: Option<String>,
    /// The kind of subject: `project`, `department`, `department_quota`, `server`, `user`,
    /// `field`, `site`, `job`, `inventory`, `login`.
    pub subject_type: Option<String>,
    /// One subject's id (with `subject_type`).
    pub subject_id: Option<String>,
    /// An action (`project.create`) or a prefix ending in a dot (`project.`).
    pub action: Option<String>,
    /// Events at or after this instant (RFC 3339).
    pub since: Option<DateTime<Utc>>,
    /// Events before this instant (RFC 3339).
    pub until: Option<DateTime<Utc>>,
    /// Only this field's events (center admins; a field admin always reads its own field).
    pub field_id: Option<Uuid>,
    /// Events per page, 1 to 500 (default 50).
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page: older events follow.
    pub cursor: Option<i64>,
}

/// One page of events, newest first.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AuditPage {
    pub items: Vec<AuditEvent>,
    /// Pass as `cursor` for the next (older) page; absent on the last page.
    pub next_cursor: Option<i64>,
}

fn bad_query(message: impl Into<String>) -> AppError {
    AppError::new(ErrorKind::BadRequest, "invalid_query", message)
}

/// A page of the events the caller may read, newest first.
pub async fn list(ctx: &Context, caller: &Caller, query: AuditQuery) -> AppResult<AuditPage> {
    caller.authorize(Action::ReadAudit)?;
    let limit = query.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(bad_query(format!("limit must be between 1 and {MAX_LIMIT}")));
    }
    if let (Some(since), Some(until)) = (query.since, query.until)
        && since >= until
    {
        return Err(bad_query("since must be before until"));
    }
    let field_id = match caller.scope {
        Scope::Center => query.field_id,
        Scope::Field(own) if query.field_id.is_none_or(|asked| asked == own) => Some(own),
        Scope::Field(_) => {
            return Err(AppError::forbidden("a field admin reads its own field's events"));
        }
        Scope::Department(_) => {
            return Err(AppError::forbidden("team leads do not read the audit trail"));
        }
    };
    let filter = AuditFilter {
        field_id,
        actor: query.actor,
        subject_type: query.subject_type,
        subject_id: query.subject_id,
        action: query.action,
        since: query.since,
        until: query.until,
        before_id: query.cursor,
    };
    let mut conn = ctx.pool.acquire().await?;
    let mut items = audit::list(&mut conn, &filter, limit).await?;
    let next_cursor = if items.len() > limit as usize {
        items.truncate(limit as usize);
        items.last().map(|e| e.id)
    } else {
        None
    };
    Ok(AuditPage { items, next_cursor })
}
