//! Access tokens: HS256 JWTs with issuer, subject, lifetime, role and scope claims.

use chrono::Utc;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::config::Secret;
use crate::domain::role::Role;
use crate::store::users::Credentials;

/// The claims InfraHub signs. Role and scope are informational for clients: each request
/// re-reads the account, so a changed role or a deleted account takes effect at once.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    pub sub: Uuid,
    pub iat: i64,
    pub exp: i64,
    pub username: String,
    pub role: Role,
    pub field_id: Option<Uuid>,
    pub department_id: Option<Uuid>,
    /// When the password was last set (µs since the epoch): a password change revokes tokens.
    pub pwd_at: i64,
}

/// Signing and checking keys, built once from the configured secret.
pub struct TokenKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    issuer: String,
    ttl_secs: i64,
}

impl TokenKeys {
    pub fn new(secret: &Secret, issuer: &str, ttl_secs: u64) -> Self {
        // Only HS256 is accepted, whatever a token's header claims (`alg: none` included).
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[issuer]);
        validation.set_required_spec_claims(&["exp", "iat", "iss", "sub"]);
        validation.leeway = 5;
        Self {
            encoding: EncodingKey::from_secret(secret.expose().as_bytes()),
            decoding: DecodingKey::from_secret(secret.expose().as_bytes()),
            validation,
            issuer: issuer.to_owned(),
            ttl_secs: i64::try_from(ttl_secs).unwrap_or(i64::MAX / 2),
        }
    }

    pub fn ttl_secs(&self) -> i64 {
        self.ttl_secs
    }

    /// Signs a token for the account.
    pub fn issue(&self, account: &Credentials) -> Result<String, jsonwebtoken::errors::Error> {
        let now = Utc::now().timestamp();
        let user = &account.user;
        let claims = Claims {
            iss: self.issuer.clone(),
            sub: user.id,
            iat: now,
            exp: now.saturating_add(self.ttl_secs),
            username: user.username.clone(),
            role: user.role,
            field_id: user.field_id,
            department_id: user.department_id,
            pwd_at: account.password_changed_at.timestamp_micros(),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
    }

    /// Checks signature, algorithm, issuer and lifetime.
    pub fn verify(&self, token: &str) -> Result<Claims, jsonwebtoken::errors::Error> {
        jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation).map(|t| t.claims)
    }
}

/// Compares two secrets without an early exit, so the time taken says nothing about where
/// they differ (their lengths may show).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
