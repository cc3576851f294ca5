//! Password policy and argon2id hashing. Hashing is CPU-heavy on purpose: callers on the
//! async runtime run these functions in `spawn_blocking`.

use argon2::Argon2;
use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};

use super::ValidationError;

/// Shortest password accepted for new accounts and password changes.
pub const MIN_PASSWORD_CHARS: usize = 8;
/// Longest password accepted: bounds the work one login request can cause.
pub const MAX_PASSWORD_BYTES: usize = 1024;

/// Checks a new password against the policy (the demo's well-known passwords bypass it).
pub fn check_policy(password: &str) -> Result<(), ValidationError> {
    if password.chars().count() < MIN_PASSWORD_CHARS {
        return Err(ValidationError::new(
            "password",
            format!("must be at least {MIN_PASSWORD_CHARS} characters long"),
        ));
    }
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(ValidationError::new(
            "password",
            format!("must be at most {MAX_PASSWORD_BYTES} bytes long"),
        ));
    }
    Ok(())
}

#[derive(Debug, thiserror::Error)]
#[error("password hashing failed: {0}")]
pub struct HashError(String);

/// Hashes `password` with argon2id (default parameters, random salt) into a PHC string.
pub fn hash(password: &str) -> Result<String, HashError> {
    Argon2::default()
        .hash_password(password.as_bytes())
        .map(|hash| hash.to_string())
        .map_err(|e| HashError(e.to_string()))
}

/// Whether `password` matches the PHC string `stored`. A malformed hash never matches.
pub fn verify(password: &str, stored: &str) -> bool {
    if password.len() > MAX_PASSWORD_BYTES {
        return false;
    }
    match PasswordHash::new(stored) {
        Ok(parsed) => Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok(),
        Err(_) => false,
    }
}

/// [`hash`] on the blocking thread pool, so the async runtime's threads keep serving.
pub async fn hash_blocking(password: String) -> Result<String, HashError> {
    tokio::task::spawn_blocking(move || hash(&password))
        .await
        .map_err(|e| HashError(format!("hashing task failed: {e}")))?
}

/// [`verify`] on the blocking thread pool.
pub async fn verify_blocking(password: String, stored: String) -> bool {
    tokio::task::spawn_blocking(move || verify(&password, &stored)).await.unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_then_verify() {
        let stored = hash("correct horse").unwrap();
        assert!(stored.starts_with("$argon2id$"), "{stored}");
        assert!(verify("correct horse", &stored));
        assert!(!verify("correct horse ", &stored));
        assert!(!verify("anything", "not-a-phc-string"));
    }

    #[test]
    fn salts_differ() {
        assert_ne!(hash("same").unwrap(), hash("same").unwrap());
    }

    #[test]
    fn policy() {
        assert!(check_policy("1234567").is_err());
        assert!(check_policy("12345678").is_ok());
        assert!(check_policy(&"x".repeat(MAX_PASSWORD_BYTES + 1)).is_err());
    }
}
