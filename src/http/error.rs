//! The one error type of the HTTP layer. It decides status and code; a 5xx logs its cause and
//! shows the client nothing internal.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::{Value, json};

use crate::domain::ValidationError;
use crate::store::StoreError;

/// `{ "error": { "code", "message", "details" } }` with its status.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub details: Value,
    /// Seconds for a `Retry-After` header (429, 503).
    pub retry_after: Option<u64>,
}

/// The error envelope, as documented in the OpenAPI document.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorEnvelope {
    pub error: ErrorBody,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// Stable, machine-readable: `malformed_json`, `invalid_value`, `not_found`, ...
    pub code: String,
    /// For people; may change between versions.
    pub message: String,
    /// Structured context, e.g. the offending field.
    #[schema(value_type = Object)]
    pub details: Value,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into(), details: json!({}), retry_after: None }
    }

    pub fn with_details(mut self, details: Value) -> Self {
        self.details = details;
        self
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    /// 404 for `what` (e.g. `site`), also used for resources outside the caller's scope.
    pub fn not_found(what: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", format!("{what} not found"))
    }

    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, code, message)
    }

    pub fn unprocessable(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, code, message)
    }

    pub fn too_many_requests(message: impl Into<String>, retry_after_secs: u64) -> Self {
        let mut err = Self::new(StatusCode::TOO_MANY_REQUESTS, "too_many_requests", message);
        err.retry_after = Some(retry_after_secs);
        err
    }

    /// A failure that is ours, not the client's: logged with its cause, shown as a bare 500.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "request failed");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "internal error")
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
            StoreError::MissingReference { constraint } => Self::unprocessable(
                "unknown_reference",
                format!("the {what} refers to something that does not exist"),
            )
            .with_details(json!({ "constraint": constraint })),
            StoreError::KeyReused { job_id } => Self::unprocessable(
                "idempotency_key_reused",
                "this Idempotency-Key already answered a different request; use a new key",
            )
            .with_details(json!({ "job_id": job_id })),
            StoreError::Database(err) => Self::internal(err),
        }
    }
}

impl From<ValidationError> for ApiError {
    fn from(err: ValidationError) -> Self {
        Self::unprocessable("invalid_value", err.to_string())
            .with_details(json!({ "field": err.field, "reason": err.message }))
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        Self::from_store("resource", err)
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(err: sqlx::Error) -> Self {
        Self::from(StoreError::from(err))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({
            "error": { "code": self.code, "message": self.message, "details": self.details }
        });
        let mut response = (self.status, axum::Json(body)).into_response();
        if let Some(secs) = self.retry_after {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}
