//! The use cases: everything InfraHub does, once, for every adapter (the JSON API, the web
//! console, the jobs, the command line and the demo).
//!
//! A use case takes the caller (a person's [`Caller`], or a system [`Actor`] for jobs and
//! bootstrapping) and its input. It owns its transaction: it checks the caller's role and
//! scope through [`crate::domain::scope`], validates, reserves quota, writes through
//! [`crate::store`], enqueues its job and records its audit event, all in that transaction.
//! It answers with its result or an [`AppError`], which each adapter maps: an HTTP status and
//! envelope, a console message, a CLI exit code.

pub mod allocation;
pub mod audit;
pub mod auth;
pub mod console;
pub mod demo;
pub mod idempotency;
pub mod inventory;
pub mod jobs;
pub mod ops;
pub mod organisation;
pub mod project_writes;
pub mod projects;
pub mod quota_requests;
pub mod token;
pub mod usage;
pub mod users;
pub mod webhooks;

pub use idempotency::{commit, commit_unless_reservation_refused};

use serde_json::{Value, json};
use uuid::Uuid;

use crate::domain::ValidationError;
use crate::domain::lifecycle::Refusal;
use crate::domain::role::Role;
use crate::domain::scope::{Action, Denied, Scope};
use crate::store::StoreError;
pub use crate::store::audit::Actor;
use crate::store::users::User;

/// The authenticated person behind a request, as the account is now (re-read per request).
#[derive(Debug, Clone)]
pub struct Caller {
    pub id: Uuid,
    pub username: String,
    pub role: Role,
    pub scope: Scope,
    /// The request's id, carried into audit events.
    pub request_id: Option<String>,
}

impl Caller {
    pub fn new(user: &User, request_id: Option<String>) -> Self {
        Self {
            id: user.id,
            username: user.username.clone(),
            role: user.role,
            scope: user.scope(),
            request_id,
        }
    }

    /// 403 unless the caller's role may take `action`.
    pub fn authorize(&self, action: Action) -> Result<(), AppError> {
        Ok(self.role.authorize(action)?)
    }

    /// Who the audit trail names.
    pub fn actor(&self) -> Actor {
        Actor {
            user_id: Some(self.id),
            name: self.username.clone(),
            request_id: self.request_id.clone(),
        }
    }
}

/// What kind of failure a use case met; each adapter maps it (HTTP status, exit code).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The request is malformed (400).
    BadRequest,
    /// No valid credentials (401).
    Unauthorized,
    /// The role may not do this, or a write names something outside the caller's scope (403).
    Forbidden,
    /// No such thing, or not in the caller's scope (404).
    NotFound,
    /// The current state does not allow it (409).
    Conflict,
    /// A value breaks a rule (422).
    Invalid,
    /// Too many attempts; try again after the given seconds (429).
    TooManyRequests { retry_after_secs: u64 },
    /// The database is away; try again (503).
    Unavailable,
    /// A fault of ours (500): logged where it happened, shown to nobody.
    Internal,
}

/// The error of every use case: a kind, a stable machine-readable code, a sentence for people
/// and structured details.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct AppError {
    pub kind: ErrorKind,
    pub code: &'static str,
    pub message: String,
    pub details: Value,
}

impl AppError {
    pub fn new(kind: ErrorKind, code: &'static str, message: impl Into<String>) -> Self {
        Self { kind, code, message: message.into(), details: json!({}) }
    }

    pub fn with_details(mut self, details: Value) -> Self {
        self.details = details;
        self
    }

    pub fn unauthorized(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unauthorized, code, message)
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Forbidden, "forbidden", message)
    }

    /// `what` (e.g. `project`) was not found, or is outside the caller's scope.
    pub fn not_found(what: &str) -> Self {
        Self::new(ErrorKind::NotFound, "not_found", format!("{what} not found"))
    }

    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Conflict, code, message)
    }

    pub fn invalid(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Invalid, code, message)
    }

    /// A value that names something that does not exist, e.g. `no site named "x"`.
    pub fn unknown(field: &str, message: impl Into<String>) -> Self {
        Self::invalid("invalid_value", message).with_details(json!({ "field": field }))
    }

    /// A request's `site` that names no site.
    pub fn unknown_site(name: &str) -> Self {
        Self::unknown("site", format!("no site named {name:?}"))
    }

    /// A failure that is ours, not the caller's: logged here with its cause, shown as a bare
    /// internal error.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "use case failed");
        Self::new(ErrorKind::Internal, "internal", "internal error")
    }

    /// Whether trying again later may succeed (the database was away, or a fault of ours).
    pub fn is_transient(&self) -> bool {
        matches!(self.kind, ErrorKind::Unavailable | ErrorKind::Internal)
    }

    /// Maps a store error about `what`, so that 404s and 409s name the resource.
    pub fn from_store(what: &str, err: StoreError) -> Self {
        match err {
            StoreError::NotFound => Self::not_found(what),
            StoreError::Duplicate { constraint } => {
                Self::conflict("already_exists", format!("a {what} with that name already exists"))
                    .with_details(json!({ "constraint": constraint }))
            }
            StoreError::InUse { table } => Self::conflict(
                "in_use",
                format!("the {what} is still referenced by {table}; remove those first"),
            )
            .with_details(json!({ "referenced_by": table })),
            StoreError::MissingReference { constraint } => Self::invalid(
                "unknown_reference",
                format!("the {what} refers to something that does not exist"),
            )
            .with_details(json!({ "constraint": constraint })),
            StoreError::Database(err) => Self::from_database(&err),
            StoreError::Shared(err) => Self::from_database(&err),
        }
    }

    /// 503 when the database is away or the transaction gave way to a concurrent one (trying
    /// again may pass), 422 for a text PostgreSQL cannot store (the sender's NUL character,
    /// should one get past the adapters' own checks), 500 otherwise.
    fn from_database(err: &sqlx::Error) -> Self {
        if is_unavailable(err) {
            tracing::warn!(error = %err, "the database is unavailable");
            Self::new(
                ErrorKind::Unavailable,
                "unavailable",
                "the database is unavailable; try again shortly",
            )
        } else if is_contended(err) {
            tracing::warn!(error = %err, "a transaction rolled back by a concurrent one");
            Self::new(
                ErrorKind::Unavailable,
                "contended",
                "the request met a concurrent one and was rolled back; try again",
            )
        } else if holds_nul(err) {
            tracing::info!(error = %err, "PostgreSQL refused a NUL character");
            Self::invalid(
                "invalid_value",
                "a value contains a NUL character, which cannot be stored",
            )
        } else {
            Self::internal(err)
        }
    }
}

/// Whether PostgreSQL refused a value for a NUL character: in a text (SQLSTATE 22021, the
/// only byte our UTF-8 strings can hold that it refuses) or escaped in a JSON string (22P05).
fn holds_nul(err: &sqlx::Error) -> bool {
    let code = err.as_database_error().and_then(|db| db.code());
    matches!(code.as_deref(), Some("22021" | "22P05"))
}

/// Whether PostgreSQL rolled the transaction back because of a concurrent one (a deadlock it
/// broke, or a serialization failure): nothing was written, and the same request may pass
/// when tried again.
fn is_contended(err: &sqlx::Error) -> bool {
    let code = err.as_database_error().and_then(|db| db.code());
    matches!(code.as_deref(), Some("40P01" | "40001"))
}

/// Whether a database error means the server cannot be reached (rather than a bad statement).
fn is_unavailable(err: &sqlx::Error) -> bool {
    // SQLSTATE class 08 is a connection exception; 57P01-57P03 a server shutting down or
    // starting up.
    let code = err.as_database_error().and_then(|db| db.code()).unwrap_or_default();
    code.starts_with("08")
        || code.starts_with("57P")
        || matches!(
            err,
            sqlx::Error::Io(_)
                | sqlx::Error::PoolTimedOut
                | sqlx::Error::PoolClosed
                | sqlx::Error::Tls(_)
                | sqlx::Error::Protocol(_)
                | sqlx::Error::WorkerCrashed
        )
}

impl From<ValidationError> for AppError {
    fn from(err: ValidationError) -> Self {
        Self::invalid("invalid_value", err.to_string())
            .with_details(json!({ "field": err.field, "reason": err.message }))
    }
}

impl From<StoreError> for AppError {
    fn from(err: StoreError) -> Self {
        Self::from_store("resource", err)
    }
}

impl From<sqlx::Error> for AppError {
    fn from(err: sqlx::Error) -> Self {
        Self::from(StoreError::from(err))
    }
}

impl From<Denied> for AppError {
    fn from(err: Denied) -> Self {
        Self::forbidden(err.0)
    }
}

impl From<Refusal> for AppError {
    fn from(err: Refusal) -> Self {
        Self::conflict(err.code, err.message)
    }
}

pub type AppResult<T> = Result<T, AppError>;

/// Items per page of a list when the caller does not say.
pub const DEFAULT_LIMIT: u32 = 50;
/// The most items a page may hold.
pub const MAX_LIMIT: u32 = 500;

/// `limit` and `cursor` of every list; checked by the use case, after its role check.
#[derive(Debug, Clone, Copy, Default, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageParams {
    /// Items per page, 1 to 500 (default 50).
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<Uuid>,
}

impl PageParams {
    pub fn request(&self) -> AppResult<crate::store::PageRequest> {
        let limit = self.limit.unwrap_or(DEFAULT_LIMIT);
        if !(1..=MAX_LIMIT).contains(&limit) {
            return Err(AppError::new(
                ErrorKind::BadRequest,
                "invalid_query",
                format!("limit must be between 1 and {MAX_LIMIT}"),
            ));
        }
        Ok(crate::store::PageRequest { after: self.cursor, limit })
    }
}

/// The job a submission resulted in: a new one, or the one that already covers the request
/// (the same Idempotency-Key, or an active job of a kind that runs one at a time).
#[derive(Debug, Clone)]
pub struct Submitted {
    pub job: crate::store::jobs::Job,
    pub existing: bool,
}

impl From<crate::store::jobs::Enqueued> for Submitted {
    fn from(enqueued: crate::store::jobs::Enqueued) -> Self {
        let existing = matches!(enqueued, crate::store::jobs::Enqueued::Existing(_));
        Self { job: enqueued.into_job(), existing }
    }
}
/// A reason a person gives (a forced step, a rejection): trimmed, 1 to 500 characters.
pub(crate) fn reason_text(reason: &str) -> AppResult<String> {
    let reason = reason.trim();
    if reason.is_empty() || reason.chars().count() > 500 {
        let message = "must be 1 to 500 characters long";
        return Err(crate::domain::ValidationError::new("reason", message).into());
    }
    Ok(reason.to_owned())
}
