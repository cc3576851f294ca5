//! The shared context: built once at start-up, cloned cheaply into every request handler,
//! console page and job.

use std::sync::Arc;

use metrics_exporter_prometheus::PrometheusHandle;
use sqlx::PgPool;

use crate::app::project_writes::ProjectWrites;
use crate::app::token::TokenKeys;
use crate::clients::Clients;
use crate::config::{Config, ConfigError, Mode, Secret};
use crate::domain::password;
use crate::jobs::Registry;
use crate::jobs::submissions::Submissions;
use crate::jobs::wake::WakeUps;
use crate::store::capacity::QuotaChangeReads;
use crate::store::users::AccountReads;
use crate::telemetry;

#[derive(Clone)]
pub struct Context {
    pub pool: PgPool,
    /// Connections that hold a lock while something slower runs: an `Idempotency-Key`'s while
    /// its request runs, a project's delivery lock while its manifests are written. Apart from
    /// `pool`, so that what waits on them never starves what they wait for; `/readyz` checks it
    /// too.
    pub locks: PgPool,
    pub config: Arc<Config>,
    /// The demo admits its well-known accounts; `serve` refuses them.
    pub mode: Mode,
    pub tokens: Arc<TokenKeys>,
    /// Every job kind with its effective settings.
    pub registry: Arc<Registry>,
    /// The external systems, each behind its trait (tests put their doubles here).
    pub clients: Clients,
    /// Renders the process-wide metrics for `/metrics`.
    pub metrics: PrometheusHandle,
    /// A real argon2id hash checked when a username is unknown, so that an unknown user and a
    /// wrong password cost the same time.
    pub dummy_hash: Arc<str>,
    /// Keys the fingerprints of requests made with an `Idempotency-Key`.
    pub fingerprint_key: Arc<[u8]>,
    /// The bearer token `/metrics` wants (`http.metrics_token`), if any.
    pub metrics_token: Option<Secret>,
    /// Sends the wake-ups of jobs whose transactions committed to every daemon's dispatchers.
    pub wake_ups: Arc<WakeUps>,
    /// Writes the jobs of concurrent submissions, several to a statement under load.
    pub submissions: Submissions,
    /// Reads the accounts behind tokens, several to a statement under load.
    pub accounts: AccountReads,
    /// Reads what quota changes are checked against, several to a statement under load.
    pub quota_reads: QuotaChangeReads,
    /// Writes new projects, several to a statement under load.
    pub project_writes: ProjectWrites,
    /// The pool of those four's statements ([`crate::store::gather::pool`]): every
    /// authenticated request uses it, so `/readyz` checks it too.
    pub gathers_pool: PgPool,
}

/// What shares statements between concurrent requests, and their pool.
struct Gathers {
    submissions: Submissions,
    accounts: AccountReads,
    quota_reads: QuotaChangeReads,
    project_writes: ProjectWrites,
    pool: PgPool,
}

/// The gathers, on a pool of their own ([`crate::store::gather::pool`]); jobs with a dedupe
/// key are written on the main pool (the `pool` given).
fn gathers(pool: &PgPool, config: &Config, wake_ups: &Arc<WakeUps>) -> Gathers {
    let connections = Submissions::CONNECTIONS
        + AccountReads::CONNECTIONS
        + QuotaChangeReads::CONNECTIONS
        + ProjectWrites::CONNECTIONS;
    let shared = crate::store::gather::pool(pool, &config.database, connections);
    Gathers {
        submissions: Submissions::new(pool.clone(), shared.clone(), Arc::clone(wake_ups)),
        accounts: AccountReads::new(shared.clone()),
        quota_reads: QuotaChangeReads::new(shared.clone()),
        project_writes: ProjectWrites::new(
            shared.clone(),
            config.delivery.namespace_template.clone(),
            Arc::clone(wake_ups),
        ),
        pool: shared,
    }
}

/// A pool like `pool` (same server and database), connecting when first used.
/// As large as the main pool (requests holding their key's lock), plus one connection for each
/// delivery worker (provision and deprovision jobs holding their project's delivery lock).
fn lock_pool(pool: &PgPool, config: &Config, registry: &Registry) -> PgPool {
    let deliveries: u32 = ["provision_namespace", "deprovision_namespace"]
        .iter()
        .map(|kind| registry.settings(kind).concurrency)
        .sum();
    let connections = config.database.max_connections + deliveries;
    crate::store::pool_like(pool, &config.database, connections, std::convert::identity)
}

/// Why the context could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ContextError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Hash(#[from] password::HashError),
}

impl Context {
    /// Everything the daemon shares, from configuration: token keys (the JWT secret is checked
    /// for `mode`), the job registry (unknown job kinds in `workers.kinds` are refused) and the
    /// clients of external systems.
    pub fn new(pool: PgPool, config: Config, mode: Mode) -> Result<Self, ContextError> {
        let (secret, registry, clients) = Self::parts(&config, mode)?;
        let tokens = TokenKeys::new(&secret, &config.auth.issuer, config.auth.token_ttl_secs);
        let dummy_hash = password::hash("infrahub-unknown-user-placeholder")?;
        let metrics_token = config.http.metrics_token()?;
        let wake_ups = Arc::new(WakeUps::new(pool.clone()));
        let gathers = gathers(&pool, &config, &wake_ups);
        Ok(Self {
            locks: lock_pool(&pool, &config, &registry),
            submissions: gathers.submissions,
            accounts: gathers.accounts,
            quota_reads: gathers.quota_reads,
            project_writes: gathers.project_writes,
            gathers_pool: gathers.pool,
            wake_ups,
            pool,
            config: Arc::new(config),
            mode,
            tokens: Arc::new(tokens),
            registry: Arc::new(registry),
            clients,
            metrics: telemetry::metrics_handle(),
            dummy_hash: dummy_hash.into(),
            fingerprint_key: crate::app::idempotency::fingerprint_key(secret.expose().as_bytes()),
            metrics_token,
        })
    }

    /// The context of administrative commands (`infrahub user ...`), which act on the database
    /// but never sign or check a token nor reach another system: it needs no JWT secret (its
    /// token keys are a throwaway random one) and reads no client token.
    pub fn for_admin(pool: PgPool, config: Config) -> Result<Self, ContextError> {
        let throwaway = Secret::new(uuid::Uuid::new_v4().simple().to_string().repeat(2));
        let tokens = TokenKeys::new(&throwaway, &config.auth.issuer, config.auth.token_ttl_secs);
        let registry = Registry::new(&config.workers)?;
        let wake_ups = Arc::new(WakeUps::new(pool.clone()));
        let gathers = gathers(&pool, &config, &wake_ups);
        Ok(Self {
            locks: lock_pool(&pool, &config, &registry),
            submissions: gathers.submissions,
            accounts: gathers.accounts,
            quota_reads: gathers.quota_reads,
            project_writes: gathers.project_writes,
            gathers_pool: gathers.pool,
            wake_ups,
            pool,
            registry: Arc::new(registry),
            clients: Clients::offline(),
            config: Arc::new(config),
            mode: Mode::Serve,
            tokens: Arc::new(tokens),
            metrics: telemetry::metrics_handle(),
            dummy_hash: Arc::from(""),
            fingerprint_key: crate::app::idempotency::fingerprint_key(
                throwaway.expose().as_bytes(),
            ),
            metrics_token: None,
        })
    }

    /// Checks what [`new`](Self::new) would refuse, without a database: the JWT secret, the
    /// job kinds, and the clients' settings (token files are read).
    pub fn check(config: &Config, mode: Mode) -> Result<(), ContextError> {
        config.http.metrics_token()?;
        Self::parts(config, mode).map(|_| ()).map_err(ContextError::from)
    }

    fn parts(config: &Config, mode: Mode) -> Result<(Secret, Registry, Clients), ConfigError> {
        Ok((
            config.jwt_secret(mode)?,
            Registry::new(&config.workers)?,
            Clients::from_config(config)?,
        ))
    }
}
