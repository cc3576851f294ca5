//! The `Idempotency-Key` header on every POST, PUT, PATCH and DELETE of the API: the request
//! runs through [`app::idempotency::once`], which replays the stored answer of an identical
//! earlier request, refuses a different one, and makes identical requests that arrive at once
//! wait for the first.

use axum::body::{Body, to_bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::error::ApiError;
use crate::app::{self, idempotency::Answer};
use crate::context::Context;

/// The headers of an answer worth keeping: what a client reads besides the body.
const KEPT: [HeaderName; 3] = [header::CONTENT_TYPE, header::LOCATION, header::RETRY_AFTER];

/// Marks a replayed answer, for people debugging a client.
const REPLAYED: HeaderName = HeaderName::from_static("idempotency-replayed");

pub async fn layer(State(ctx): State<Context>, request: Request, next: Next) -> Response {
    let changes =
        matches!(*request.method(), Method::POST | Method::PUT | Method::PATCH | Method::DELETE);
    let key = request.headers().get("idempotency-key").cloned();
    // A login answers with a token, a new webhook with its secret: nothing to keep for 24
    // hours. (A repeated webhook creation is refused by the name it takes.)
    let path = request.uri().path();
    let login = path.ends_with("/auth/login")
        || (path.ends_with("/admin/webhooks") && *request.method() == Method::POST);
    let (Some(key), true, false) = (key, changes, login) else { return next.run(request).await };
    let Ok(key) = key.to_str().map(str::to_owned) else {
        return ApiError::bad_request(
            "invalid_header",
            "Idempotency-Key must be 1 to 255 visible ASCII characters",
        )
        .into_response();
    };
    // Keys are per account; without a valid token the handler answers 401, and there is
    // nothing to remember.
    let Some(user) = bearer_subject(&ctx, &request) else { return next.run(request).await };
    let (parts, body) = request.into_parts();
    let Ok(bytes) = to_bytes(body, ctx.config.http.body_limit_bytes).await else {
        return ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            "the request body is too large",
        )
        .into_response();
    };
    let path = parts.uri.path_and_query().map_or_else(|| parts.uri.path(), |p| p.as_str());
    let method = parts.method.as_str();
    let once = match app::idempotency::Request::new(
        user,
        &key,
        method,
        path,
        &bytes,
        &ctx.fingerprint_key,
    ) {
        Ok(once) => once,
        Err(err) => return ApiError::from(err).into_response(),
    };
    let answered = app::idempotency::once(&ctx, &once, || async move {
        let response = next.run(Request::from_parts(parts, Body::from(bytes))).await;
        answer_of(response).await
    })
    .await;
    match answered {
        Ok(answer) => response_of(answer),
        Err(err) => ApiError::from(err).into_response(),
    }
}

/// The account a request's bearer token names, if the token is valid.
fn bearer_subject(ctx: &Context, request: &Request) -> Option<uuid::Uuid> {
    let value = request.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    ctx.tokens.verify(token.trim()).ok().map(|claims| claims.sub)
}

/// A response as an answer to keep. Every answer of the API is small JSON; an answer too
/// large to keep counts as a failure of ours.
pub(crate) async fn answer_of(response: Response) -> Answer {
    let (parts, body) = response.into_parts();
    let headers = KEPT
        .iter()
        .filter_map(|name| {
            let value = parts.headers.get(name)?.to_str().ok()?;
            Some((name.as_str().to_owned(), value.to_owned()))
        })
        .collect();
    match to_bytes(body, 4 * 1024 * 1024).await {
        Ok(bytes) => Answer {
            status: parts.status.as_u16(),
            headers,
            body: String::from_utf8_lossy(&bytes).into_owned(),
            replayed: false,
        },
        Err(err) => {
            let failed = ApiError::internal(format!("the answer could not be read: {err}"));
            let envelope = serde_json::json!({
                "error": { "code": failed.code, "message": failed.message, "details": failed.details }
            });
            Answer {
                status: failed.status.as_u16(),
                headers: [(
                    header::CONTENT_TYPE.as_str().to_owned(),
                    "application/json".to_owned(),
                )]
                .into(),
                body: envelope.to_string(),
                replayed: false,
            }
        }
    }
}

pub(crate) fn response_of(answer: Answer) -> Response {
    let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = (status, answer.body).into_response();
    let headers = response.headers_mut();
    headers.remove(header::CONTENT_TYPE);
    for (name, value) in &answer.headers {
        if let (Ok(name), Ok(value)) =
            (HeaderName::try_from(name.as_str()), HeaderValue::from_str(value))
        {
            headers.insert(name, value);
        }
    }
    if answer.replayed {
        headers.insert(REPLAYED, HeaderValue::from_static("true"));
    }
    response
}
