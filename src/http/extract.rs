//! Extractors whose rejections speak our error envelope instead of axum's plain text.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;

use super::error::ApiError;

/// A JSON body, accepted whatever the `Content-Type` says (the documented curl flows send
/// `-d` without one). Broken JSON is 400 `malformed_json`; JSON of the wrong shape is 422
/// `invalid_body` naming the path of the offending field.
#[derive(Debug, Clone, Copy, Default)]
pub struct Json<T>(pub T);

impl<T, S> FromRequest<S> for Json<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = Bytes::from_request(req, state).await.map_err(body_rejection)?;
        parse_json(&bytes).map(Json)
    }
}

impl<T: Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

fn body_rejection(rejection: BytesRejection) -> ApiError {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", rejection.body_text())
    } else {
        ApiError::bad_request("unreadable_body", rejection.body_text())
    }
}

/// Parses a request body; public for tests of the mapping.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_request(
            "malformed_json",
            "the request body is empty; JSON expected",
        ));
    }
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut deserializer).map_err(|err| {
        let path = err.path().to_string();
        let inner = err.into_inner();
        if inner.is_data() {
            ApiError::unprocessable("invalid_body", format!("{path}: {inner}"))
                .with_details(json!({ "field": path }))
        } else {
            ApiError::bad_request(
                "malformed_json",
                format!("the request body is not valid JSON: {inner}"),
            )
        }
    })?;
    deserializer.end().map_err(|err| {
        ApiError::bad_request("malformed_json", format!("trailing data after the JSON body: {err}"))
    })?;
    if holds_nul(bytes) {
        return Err(ApiError::unprocessable("invalid_body", NUL_REFUSED));
    }
    Ok(value)
}

/// PostgreSQL's text cannot hold the NUL character: a request carrying one is refused here,
/// as the client's mistake, rather than by the database as a statement that failed.
const NUL_REFUSED: &str = "text may not contain the NUL character (\\u0000)";

/// Whether valid JSON `bytes` hold a NUL character: the escape `\u0000` in a string (a raw
/// NUL is not valid JSON). Every backslash in valid JSON starts an escape, so skipping each
/// escape whole tells `\\u0000` (a backslash, then `u0000`) apart.
fn holds_nul(bytes: &[u8]) -> bool {
    let mut at = 0;
    while let Some(found) = bytes[at..].iter().position(|&b| b == b'\\') {
        let escape = &bytes[at + found + 1..];
        if escape.starts_with(b"u0000") {
            return true;
        }
        at += found + 2;
        if at >= bytes.len() {
            return false;
        }
    }
    false
}

/// Whether a URI's query or a form's urlencoded body carries a NUL character (`%00`: a raw
/// one is not valid in either). The API's path parameters are ids, whose parsing refuses it
/// already; the console refuses it in its queries and forms (`console::guard`).
pub(crate) fn encodes_nul(text: impl AsRef<[u8]>) -> bool {
    text.as_ref().windows(3).any(|w| w == b"%00")
}

/// Query string parameters; a bad one is 400 `invalid_query`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Query<T>(pub T);

impl<T, S> FromRequestParts<S> for Query<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        if parts.uri.query().is_some_and(encodes_nul) {
            return Err(ApiError::bad_request("invalid_query", NUL_REFUSED));
        }
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| Query(q.0))
            .map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))
    }
}

/// Path parameters; an id that is not a UUID is 400 `invalid_path`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Path<T>(pub T);

impl<T, S> FromRequestParts<S> for Path<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| Path(p.0))
            .map_err(|e| ApiError::bad_request("invalid_path", e.body_text()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Body {
        name: String,
        cpu: u32,
    }

    #[test]
    fn json_errors_map_to_400_and_422() {
        let cases: [(&[u8], StatusCode, &str); 6] = [
            (b"", StatusCode::BAD_REQUEST, "malformed_json"),
            (b"{\"name\":", StatusCode::BAD_REQUEST, "malformed_json"),
            (b"{\"name\":\"a\",\"cpu\":1} x", StatusCode::BAD_REQUEST, "malformed_json"),
            (b"{\"name\":\"a\",\"cpu\":\"x\"}", StatusCode::UNPROCESSABLE_ENTITY, "invalid_body"),
            (b"{\"name\":\"a\"}", StatusCode::UNPROCESSABLE_ENTITY, "invalid_body"),
            (
                b"{\"name\":\"a\",\"cpu\":1,\"x\":1}",
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_body",
            ),
        ];
        for (body, status, code) in cases {
            let err = parse_json::<Body>(body).unwrap_err();
            assert_eq!((err.status, err.code), (status, code), "{}", String::from_utf8_lossy(body));
        }
        let err = parse_json::<Body>(b"{\"name\":\"a\",\"cpu\":-1}").unwrap_err();
        assert_eq!(err.details["field"], "cpu");
        assert_eq!(parse_json::<Body>(b"{\"name\":\"a\",\"cpu\":2}").unwrap().cpu, 2);
    }

    #[test]
    fn a_nul_character_is_refused_and_an_escaped_backslash_is_not_one() {
        let err = parse_json::<Body>(br#"{"name":"a\u0000b","cpu":1}"#).unwrap_err();
        assert_eq!((err.status, err.code), (StatusCode::UNPROCESSABLE_ENTITY, "invalid_body"));
        let name = |body: &[u8]| parse_json::<Body>(body).unwrap().name;
        assert_eq!(name(br#"{"name":"a\\u0000b","cpu":1}"#), "a\\u0000b");
        assert_eq!(name(br#"{"name":"a\u0041\\","cpu":1}"#), "aA\\");
        assert_eq!(name(br#"{"name":"\\\\","cpu":1}"#), "\\\\");
        assert!(encodes_nul("site=fr%00a") && !encodes_nul("site=fr%2500a"));
    }
}
