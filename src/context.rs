//! The shared context: built once, cloned cheaply into every request handler (and, later,
//! every job worker).

use std::sync::Arc;

use metrics_exporter_prometheus::PrometheusHandle;
use sqlx::PgPool;

use crate::config::{Config, Mode, Secret};
use crate::domain::password;
use crate::http::token::TokenKeys;
use crate::jobs::Registry;
use crate::telemetry;

#[derive(Clone)]
pub struct Context {
    pub pool: PgPool,
    pub config: Arc<Config>,
    /// The demo admits its well-known accounts; `serve` refuses them.
    pub mode: Mode,
    pub tokens: Arc<TokenKeys>,
    /// Every job kind with its effective settings.
    pub registry: Arc<Registry>,
    /// Renders the process-wide metrics for `/metrics`.
    pub metrics: PrometheusHandle,
    /// A real argon2id hash checked when a username is unknown, so that an unknown user and a
    /// wrong password cost the same time.
    pub dummy_hash: Arc<str>,
}

impl Context {
    pub fn new(
        pool: PgPool,
        config: Config,
        mode: Mode,
        jwt_secret: &Secret,
    ) -> Result<Self, password::HashError> {
        let tokens = TokenKeys::new(jwt_secret, &config.auth.issuer, config.auth.token_ttl_secs);
        let dummy_hash = password::hash("infrahub-unknown-user-placeholder")?;
        let registry = Registry::standard(&config);
        Ok(Self {
            registry: Arc::new(registry),
            pool,
            config: Arc::new(config),
            mode,
            tokens: Arc::new(tokens),
            metrics: telemetry::metrics_handle(),
            dummy_hash: dummy_hash.into(),
        })
    }
}
