//! `[auth]`: token signing and the login lockout.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::secret::{Secret, SecretSource};
use super::{ConfigError, Mode};

/// JWT secrets that are public knowledge; `serve` refuses them.
pub(super) const KNOWN_JWT_SECRETS: &[&str] = &[
    "infrahub-demo-jwt-secret-do-not-use-in-production",
    "changeme-changeme-changeme-changeme",
    "secret-secret-secret-secret-secret",
];

/// Shortest JWT secret accepted: HS256 wants at least 256 bits of key.
const MIN_JWT_SECRET_BYTES: usize = 32;

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// HS256 signing key (at least 32 bytes); prefer `jwt_secret_file` or the environment.
    pub jwt_secret: Option<Secret>,
    /// File holding the signing key (surrounding whitespace is ignored), e.g. a systemd credential.
    pub jwt_secret_file: Option<PathBuf>,
    /// `iss` claim written into and required from every token.
    pub issuer: String,
    /// Lifetime of an access token.
    pub token_ttl_secs: u64,
    /// Failed logins for one username within `login_failure_window_secs` before it is locked.
    pub login_max_failures: u32,
    /// Window in which failures are counted.
    pub login_failure_window_secs: u64,
    /// How long a locked username is answered 429.
    pub login_lockout_secs: u64,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            jwt_secret: None,
            jwt_secret_file: None,
            issuer: "infrahub".to_owned(),
            token_ttl_secs: 3600,
            login_max_failures: 5,
            login_failure_window_secs: 900,
            login_lockout_secs: 300,
        }
    }
}

impl AuthConfig {
    fn secret_source(&self) -> SecretSource<'_> {
        SecretSource {
            key: "auth.jwt_secret",
            value: self.jwt_secret.as_ref(),
            file: self.jwt_secret_file.as_ref(),
        }
    }

    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        self.secret_source().check_exclusive()?;
        if self.issuer.trim().is_empty() {
            return Err(ConfigError::invalid("auth.issuer", "must not be empty"));
        }
        if self.token_ttl_secs == 0 {
            return Err(ConfigError::invalid("auth.token_ttl_secs", "must be at least 1"));
        }
        if self.login_max_failures == 0 {
            return Err(ConfigError::invalid("auth.login_max_failures", "must be at least 1"));
        }
        if self.login_failure_window_secs == 0 {
            return Err(ConfigError::invalid(
                "auth.login_failure_window_secs",
                "must be at least 1",
            ));
        }
        if self.login_lockout_secs == 0 {
            return Err(ConfigError::invalid("auth.login_lockout_secs", "must be at least 1"));
        }
        Ok(())
    }

    /// The JWT signing key. Outside the demo a missing, short or publicly known key is refused.
    pub fn jwt_secret(&self, mode: Mode) -> Result<Secret, ConfigError> {
        let secret = self.secret_source().require(
            "set auth.jwt_secret_file or INFRAHUB_AUTH__JWT_SECRET (e.g. `openssl rand -hex 32`)",
        )?;
        if secret.expose().len() < MIN_JWT_SECRET_BYTES {
            return Err(ConfigError::invalid(
                "auth.jwt_secret",
                format!("too short: at least {MIN_JWT_SECRET_BYTES} bytes are required"),
            ));
        }
        if mode == Mode::Serve && KNOWN_JWT_SECRETS.contains(&secret.expose()) {
            return Err(ConfigError::invalid(
                "auth.jwt_secret",
                "is a publicly known default (the demo's); generate your own",
            ));
        }
        Ok(secret)
    }
}
