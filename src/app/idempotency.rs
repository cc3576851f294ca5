//! `Idempotency-Key`: a request that changes something, sent again with the same key, gets the
//! first answer again and is never run twice. The key is bound to its request (user, method,
//! path with query, body): the same key with another request is refused (422
//! `idempotency_key_reused`). Identical requests that arrive at the same moment, on any
//! daemon, wait for the first and get its answer. Keys live 24 hours, whatever
//! `workers.retention_days` says.
//!
//! Adapters wrap the handling of one request in [`once`]; the JSON API does it for every
//! POST, PUT, PATCH and DELETE, the console for every form.
//!
//! The change and its stored answer commit in one transaction: under [`once`], a use case's
//! [`commit`] parks its transaction until the answer is known, and the answer is written into
//! it. A daemon killed in between loses both, so the request sent again runs once, for the
//! first time; it never finds a change made without its answer.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex};

use hmac::{Hmac, Mac};
use serde_json::json;
use sha2::{Digest, Sha256};
use sqlx::{Postgres, Transaction};
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
    /// HMAC-SHA-256 over method, path and body, keyed by [`fingerprint_key`]: a body holding a
    /// password (a new account's) leaves nothing in the table to guess it from.
    fingerprint: String,
}

/// The key of request fingerprints, derived from the JWT secret (a daemon's only secret).
pub fn fingerprint_key(jwt_secret: &[u8]) -> Arc<[u8]> {
    let mut hash = Sha256::new();
    hash.update(b"infrahub idempotency fingerprint\n");
    hash.update(jwt_secret);
    let digest: [u8; 32] = hash.finalize().into();
    Arc::from(digest)
}

impl Request {
    /// Checks the key (1 to 255 visible ASCII characters) and fingerprints the request with
    /// `secret` ([`fingerprint_key`]).
    pub fn new(
        user: Uuid,
        key: &str,
        method: &str,
        path: &str,
        body: &[u8],
        secret: &[u8],
    ) -> AppResult<Self> {
        let key = key.trim();
        let visible = key.bytes().all(|b| b == b' ' || b.is_ascii_graphic());
        if key.is_empty() || key.len() > 255 || !visible {
            return Err(AppError::new(
                ErrorKind::BadRequest,
                "invalid_header",
                "Idempotency-Key must be 1 to 255 visible ASCII characters",
            ));
        }
        let mut mac = Hmac::<Sha256>::new_from_slice(secret)
            .map_err(|e| AppError::internal(format!("fingerprint key: {e}")))?;
        for part in [method.as_bytes(), b"\n", path.as_bytes(), b"\n", body] {
            mac.update(part);
        }
        let fingerprint = mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect();
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

/// The transaction of a use case run under [`once`], waiting for its answer.
#[derive(Default)]
struct Parked(Mutex<Option<Transaction<'static, Postgres>>>);

impl Parked {
    fn put(&self, tx: Transaction<'static, Postgres>) -> Option<Transaction<'static, Postgres>> {
        self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).replace(tx)
    }

    fn take(&self) -> Option<Transaction<'static, Postgres>> {
        self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).take()
    }
}

tokio::task_local! {
    static PARKED: Arc<Parked>;
}

/// Commits a use case's transaction. Inside [`once`] it is parked instead and commits with
/// the request's stored answer; a use case run there must commit once.
pub async fn commit(tx: Transaction<'static, Postgres>) -> AppResult<()> {
    let Ok(parked) = PARKED.try_with(Arc::clone) else {
        tx.commit().await?;
        crate::jobs::wake::committed();
        return Ok(());
    };
    if parked.put(tx).is_some() {
        // Its second transaction might wait on rows the parked first one holds, for ever:
        // under a key, a use case commits once. Both roll back (a 5xx is not kept).
        return Err(AppError::internal("a use case committed twice under an Idempotency-Key"));
    }
    Ok(())
}

/// Commits a use case's transaction whose new project's reservation the database checks as
/// it commits (migration 24): false, everything rolled back, when the check refused it (over
/// quota, or past 90 % of it). Not inside [`once`], which commits with the answer instead.
pub async fn commit_unless_reservation_refused(
    tx: Transaction<'static, Postgres>,
) -> AppResult<bool> {
    if under_key() {
        return Err(AppError::internal(
            "a reservation checked at the commit under an Idempotency-Key",
        ));
    }
    match tx.commit().await {
        Ok(()) => {
            crate::jobs::wake::committed();
            Ok(true)
        }
        Err(err) if crate::store::capacity::reservation_refused_at_commit(&err) => Ok(false),
        Err(err) => Err(err.into()),
    }
}

/// Whether the running use case is inside [`once`]: its change must then go through a
/// transaction and [`commit`], to commit with the answer.
pub fn under_key() -> bool {
    PARKED.try_with(|_| ()).is_ok()
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
    let parked = Arc::new(Parked::default());
    let answer = PARKED.scope(Arc::clone(&parked), handle()).await;
    let change = parked.take();
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
        match change {
            // The change and its answer, together or not at all.
            Some(mut tx) => {
                idempotency::save(&mut tx, &new).await?;
                tx.commit().await?;
                crate::jobs::wake::committed();
            }
            None => idempotency::save(&mut lock, &new).await?,
        }
    } else if let Some(tx) = change {
        // The request failed (5xx): its change is not kept either, so sending it again runs
        // it once.
        tx.rollback().await?;
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
            Request::new(user, "k", method, path, body, b"secret").unwrap().fingerprint
        };
        let base = print("POST", "/api/v1/projects", b"{}");
        assert_eq!(base, print("POST", "/api/v1/projects", b"{}"));
        assert_ne!(base, print("PATCH", "/api/v1/projects", b"{}"));
        assert_ne!(base, print("POST", "/api/v1/projects?x=1", b"{}"));
        assert_ne!(base, print("POST", "/api/v1/projects", b"{ }"));
        assert_eq!(base.len(), 64);
        let keyed_otherwise = Request::new(user, "k", "POST", "/api/v1/projects", b"{}", b"other");
        assert_ne!(base, keyed_otherwise.unwrap().fingerprint, "keyed by the daemon's secret");
    }

    #[test]
    fn keys_are_visible_ascii_of_bounded_length() {
        let user = Uuid::now_v7();
        assert_eq!(
            Request::new(user, " key-1 ", "POST", "/", b"", b"secret").unwrap().key,
            "key-1"
        );
        assert!(Request::new(user, "nightly check 42", "POST", "/", b"", b"secret").is_ok());
        for bad in ["", "   ", "tab\there", "é", &"k".repeat(256)] {
            let err = Request::new(user, bad, "POST", "/", b"", b"secret").unwrap_err();
            assert_eq!(err.code, "invalid_header", "{bad:?}");
        }
    }
}
