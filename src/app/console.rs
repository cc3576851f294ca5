//! Sessions of the web console: opened by the same credential check as the API's login, found
//! again per request with the account read afresh (a disabled account or a new password ends
//! them at once), closed at logout. The cookie holds a random token; the database its SHA-256.

use chrono::{DateTime, Utc};
use rand::RngCore;
use sha2::{Digest, Sha256};

use super::{AppError, AppResult, Caller};
use crate::context::Context;
use crate::store::{sessions, users};

/// A session just opened: the cookie's token, its form token and when it ends.
#[derive(Debug, Clone)]
pub struct Opened {
    pub token: String,
    pub csrf: String,
    pub expires_at: DateTime<Utc>,
}

/// The person behind a live session, and the token its forms must carry.
#[derive(Debug, Clone)]
pub struct Session {
    pub caller: Caller,
    pub csrf: String,
    pub expires_at: DateTime<Utc>,
}

fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn hash(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

/// Logs in (throttled and audited like the API's login) and opens a session that lasts as
/// long as an API token would (`auth.token_ttl_secs`).
pub async fn open(
    ctx: &Context,
    username: &str,
    password: String,
    request_id: Option<String>,
) -> AppResult<Opened> {
    let account = super::auth::check_credentials(ctx, username, password, request_id).await?;
    let opened = Opened {
        token: random_token(),
        csrf: random_token(),
        expires_at: Utc::now() + chrono::Duration::seconds(ctx.tokens.ttl_secs()),
    };
    let mut conn = ctx.pool.acquire().await?;
    sessions::insert(
        &mut conn,
        &hash(&opened.token),
        account.user.id,
        account.password_changed_at,
        &opened.csrf,
        opened.expires_at,
    )
    .await?;
    Ok(opened)
}

/// The session of `token`, if it is still good.
pub async fn resume(ctx: &Context, token: &str, request_id: Option<String>) -> AppResult<Session> {
    let ended = || AppError::unauthorized("unauthorized", "the session has ended; log in again");
    let mut conn = ctx.pool.acquire().await?;
    let row = sessions::find(&mut conn, &hash(token)).await?.ok_or_else(ended)?;
    let account = users::find_credentials_by_id(&mut conn, row.user_id).await?.ok_or_else(ended)?;
    if !super::auth::still_valid(ctx, &account, row.password_changed_at.timestamp_micros()) {
        sessions::delete(&mut conn, &hash(token)).await?;
        return Err(ended());
    }
    Ok(Session {
        caller: Caller::new(&account.user, request_id),
        csrf: row.csrf_token,
        expires_at: row.expires_at,
    })
}

/// Ends the session of `token` (logout); nothing happens for an unknown one.
pub async fn close(ctx: &Context, token: &str) -> AppResult<()> {
    let mut conn = ctx.pool.acquire().await?;
    sessions::delete(&mut conn, &hash(token)).await?;
    Ok(())
}
