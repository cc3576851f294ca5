//! `Idempotency-Key`: a request that changes something, sent again with the same key, gets the
//! first answer again and is never run twice. The key is bound to its request (user, method,
//! path with query, body): the same key with another request is refused (422
//! `idempotency_key_reused`). Identical requests that arrive at the same moment, on any
//! daemon, wait for the first and get its answer. Keys live 24 hours, whatever
//! `workers.retention_days` says.
//!
//! Adapters wrap the handling of one request in [`once`]; the JSON API does it for every
//! POST, PUT, PATCH and DELETE, the console for every form.

use std::collections::BTreeMap;
use std::future::Future;

use serde_json::json;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::{AppError, AppResult, ErrorKind};
use crate::context::Context;
use crate::store::idempotency::{self, NewAnswer};

/// A request made with an `Idempotency-Key`.
#[derive(Debug, Clone)]
pub struct Request {
    pub user: Uuid,
    pub key: String,
    pub method: String,
    /// Path and query.
    pub path: String,
    /// SHA-256 over method, path and body.
    fingerprint: String,
}

impl Request {
    /// Checks the key (1 to 255 visible ASCII characters) and fingerprints the request.
    pub fn new(user: Uuid, key: &str, method: &str, path: &str, body: &[u8]) -> AppResult<Self> {
        let key = key.trim();
        let visible = key.bytes().all(|b| b == b' ' || b.is_ascii_graphic());
        if key.is_empty() || key.len() > 255 || !visible {
            return Err(AppError::new(
                ErrorKind::BadRequest,
                "invalid_header",
                "Idempotency-Key must be 1 to 255 visible ASCII characters",
            ));
        }
        let mut hash = Sha256::new();
        for part in [method.as_bytes(), b"\n", path.as_bytes(), b"\n", body] {
            hash.update(part);
        }
        let fingerprint = hash.finalize().iter().map(|b| format!("{b:02x}")).collect();
        Ok(Self {
            user,
            key: key.to_owned(),
            method: method.to_owned(),
            path: path.to_owned(),
            fingerprint,
        })
    }
}

/// An answer, as it is stored and replayed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    /// The headers that matter to a client (e.g. `location`, `content-type`).
    pub headers: BTreeMap<String, String>,
    pub body: String,
    /// Whether this is the stored answer of an earlier request.
    pub replayed: bool,
}

/// Runs `handle` for `request` unless its key already answered it: then the stored answer
/// comes back instead. Answers of 5xx are not kept, so the request can be tried again.
pub async fn once<F, Fut>(ctx: &Context, request: &Request, handle: F) -> AppResult<Answer>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Answer>,
{
    // The lock is held on a connection of its own while the request runs, so a request
    // sent again at the same moment waits here for this one's answer.
    let mut lock = ctx.locks.begin().await?;
    idempotency::lock(&mut lock, request.user, &request.key).await?;
    if let Some(stored) = idempotency::find(&mut lock, request.user, &request.key).await? {
        if stored.fingerprint != request.fingerprint {
            return Err(AppError::invalid(
                "idempotency_key_reused",
                "this Idempotency-Key already answered a different request; use a new key",
            )
            .with_details(json!({ "key": request.key })));
        }
        let headers = serde_json::from_value(stored.response_headers).unwrap_or_default();
        return Ok(Answer {
            status: u16::try_from(stored.response_status).unwrap_or(500),
            headers,
            body: stored.response_body,
            replayed: true,
        });
    }
    let answer = handle().await;
    if answer.status < 500 {
        let headers = json!(answer.headers);
        let new = NewAnswer {
            user: request.user,
            key: &request.key,
            method: &request.method,
            path: &request.path,
            fingerprint: &request.fingerprint,
            status: i16::try_from(answer.status).unwrap_or(i16::MAX),
            headers: &headers,
            body: &answer.body,
        };
        idempotency::save(&mut lock, &new).await?;
    }
    lock.commit().await?;
    Ok(answer)
}

/// Deletes keys past their 24 hours; returns how many.
pub async fn prune(ctx: &Context) -> AppResult<u64> {
    Ok(idempotency::prune(&mut *ctx.pool.acquire().await?).await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fingerprint_binds_method_path_and_body() {
        let user = Uuid::now_v7();
        let print = |method, path, body: &[u8]| {
            Request::new(user, "k", method, path, body).unwrap().fingerprint
        };
        let base = print("POST", "/api/v1/projects", b"{}");
        assert_eq!(base, print("POST", "/api/v1/projects", b"{}"));
        assert_ne!(base, print("PATCH", "/api/v1/projects", b"{}"));
        assert_ne!(base, print("POST", "/api/v1/projects?x=1", b"{}"));
        assert_ne!(base, print("POST", "/api/v1/projects", b"{ }"));
        assert_eq!(base.len(), 64);
    }

    #[test]
    fn keys_are_visible_ascii_of_bounded_length() {
        let user = Uuid::now_v7();
        assert_eq!(Request::new(user, " key-1 ", "POST", "/", b"").unwrap().key, "key-1");
        assert!(Request::new(user, "nightly check 42", "POST", "/", b"").is_ok());
        for bad in ["", "   ", "tab\there", "é", &"k".repeat(256)] {
            let err = Request::new(user, bad, "POST", "/", b"").unwrap_err();
            assert_eq!(err.code, "invalid_header", "{bad:?}");
        }
    }
}
