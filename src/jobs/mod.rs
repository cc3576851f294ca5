//! Durable jobs. One file per job kind, this module registering them all, [`engine`] running
//! them and [`scheduler`] firing cron schedules. `docs/JOBS.md` explains the design.
//!
//! A kind implements [`JobHandler`]: it returns [`Outcome::Done`] with a result,
//! [`Outcome::Reschedule`] to poll again later without spending an attempt, or a
//! [`JobError`] that is either permanent (fail now, with the reason) or transient (retry with
//! exponential backoff and full jitter, durably, up to the kind's maximum of attempts).
//! Handlers must be idempotent: after a crash an attempt can run twice.

pub mod allocate_quota;
pub mod allocate_servers;
pub mod deprovision_namespace;
pub mod diagnostic;
pub mod engine;
pub mod poll_argocd;
pub mod provision_namespace;
pub mod prune;
pub mod resync;
pub mod scheduler;
pub mod sync_servers;

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use crate::config::{Config, KindConfig};
use crate::context::Context;
use crate::store::jobs::Claimed;

/// What an attempt achieved.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Finished; the value becomes the job's result.
    Done(Value),
    /// Not finished, nothing failed (e.g. ArgoCD still syncing): run again after `after`
    /// without spending an attempt. `progress` is shown as the job's result meanwhile.
    Reschedule { after: Duration, progress: Value },
}

/// Why an attempt failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JobError {
    /// Retrying cannot help (bad input, refused by a rule, 401 from a remote): fail now.
    #[error("{0}")]
    Permanent(String),
    /// Might work later (timeouts, 5xx, connection refused): retry with backoff.
    #[error("{0}")]
    Transient(String),
}

impl JobError {
    pub fn permanent(message: impl Into<String>) -> Self {
        Self::Permanent(message.into())
    }

    pub fn transient(message: impl Into<String>) -> Self {
        Self::Transient(message.into())
    }
}

/// Database errors are transient: the next attempt may find PostgreSQL back.
impl From<crate::store::StoreError> for JobError {
    fn from(err: crate::store::StoreError) -> Self {
        Self::Transient(format!("database: {err}"))
    }
}

impl From<sqlx::Error> for JobError {
    fn from(err: sqlx::Error) -> Self {
        Self::Transient(format!("database: {err}"))
    }
}

pub type JobFuture<'a> = Pin<Box<dyn Future<Output = Result<Outcome, JobError>> + Send + 'a>>;

/// One kind of job.
pub trait JobHandler: Send + Sync + 'static {
    /// The stable queue name, stored in every job row: never rename it.
    fn kind(&self) -> &'static str;

    /// Concurrency, attempts, timeout and backoff unless configured otherwise.
    fn defaults(&self) -> KindSettings {
        KindSettings::default()
    }

    /// While a job of this kind with this key is queued or running, submissions and cron ticks
    /// return it instead of adding another (e.g. one server sync at a time).
    fn dedupe_key(&self) -> Option<&'static str> {
        None
    }

    /// Runs one attempt. `job.payload` holds the submission's parameters.
    fn run<'a>(&'a self, ctx: &'a Context, job: &'a Claimed) -> JobFuture<'a>;

    /// Called once the job has failed for good (a permanent error, or its last attempt), after
    /// that is recorded: the place to mark its subject failed. Must be idempotent.
    fn on_failure<'a>(
        &'a self,
        _ctx: &'a Context,
        _job: &'a Claimed,
        _reason: &'a str,
    ) -> HookFuture<'a> {
        Box::pin(async { Ok(()) })
    }
}

pub type HookFuture<'a> = Pin<Box<dyn Future<Output = Result<(), JobError>> + Send + 'a>>;

/// How one kind runs: built from the kind's defaults and `workers.kinds.<kind>`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KindSettings {
    /// Attempts of this kind one daemon runs at once; 0 runs none here.
    pub concurrency: u32,
    pub max_attempts: u32,
    /// An attempt running longer fails transiently.
    pub timeout: Duration,
    pub backoff_base: Duration,
    pub backoff_max: Duration,
}

impl Default for KindSettings {
    fn default() -> Self {
        Self {
            concurrency: 4,
            max_attempts: 5,
            timeout: Duration::from_secs(300),
            backoff_base: Duration::from_secs(2),
            backoff_max: Duration::from_secs(600),
        }
    }
}

impl KindSettings {
    fn with_overrides(mut self, config: Option<&KindConfig>) -> Self {
        let Some(config) = config else { return self };
        if let Some(v) = config.concurrency {
            self.concurrency = v;
        }
        if let Some(v) = config.max_attempts {
            self.max_attempts = v;
        }
        if let Some(v) = config.timeout_secs {
            self.timeout = Duration::from_secs(v);
        }
        if let Some(v) = config.backoff_base_ms {
            self.backoff_base = Duration::from_millis(v);
        }
        if let Some(v) = config.backoff_max_secs {
            self.backoff_max = Duration::from_secs(v);
        }
        self
    }
}

/// A registered kind with its effective settings.
#[derive(Clone)]
pub struct Registered {
    pub handler: Arc<dyn JobHandler>,
    pub settings: KindSettings,
}

/// Every job kind of InfraHub, by stable name.
#[derive(Clone, Default)]
pub struct Registry {
    kinds: BTreeMap<&'static str, Registered>,
}

impl Registry {
    /// All kinds, with settings from `config`.
    pub fn standard(config: &Config) -> Self {
        let mut registry = Registry::default();
        registry.register(Arc::new(diagnostic::Noop), config);
        registry.register(Arc::new(diagnostic::Sleep), config);
        registry.register(Arc::new(prune::PruneJobs), config);
        registry.register(Arc::new(sync_servers::SyncServers), config);
        registry.register(Arc::new(allocate_servers::AllocateServers), config);
        registry.register(Arc::new(allocate_quota::AllocateQuota), config);
        registry.register(Arc::new(provision_namespace::ProvisionNamespace), config);
        registry.register(Arc::new(deprovision_namespace::DeprovisionNamespace), config);
        registry.register(Arc::new(poll_argocd::PollArgocd), config);
        registry.register(Arc::new(resync::Resync), config);
        registry
    }

    pub fn register(&mut self, handler: Arc<dyn JobHandler>, config: &Config) {
        let kind = handler.kind();
        let settings = handler.defaults().with_overrides(config.workers.kinds.get(kind));
        self.kinds.insert(kind, Registered { handler, settings });
    }

    pub fn get(&self, kind: &str) -> Option<&Registered> {
        self.kinds.get(kind)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&'static str, &Registered)> {
        self.kinds.iter().map(|(k, v)| (*k, v))
    }
}

/// The names of every job kind, for validating configuration.
pub const KIND_NAMES: &[&str] = &[
    diagnostic::NOOP,
    diagnostic::SLEEP,
    prune::PRUNE_JOBS,
    sync_servers::SYNC_SERVERS,
    allocate_servers::ALLOCATE_SERVERS,
    allocate_quota::ALLOCATE_QUOTA,
    provision_namespace::PROVISION_NAMESPACE,
    deprovision_namespace::DEPROVISION_NAMESPACE,
    poll_argocd::POLL_ARGOCD,
    resync::RESYNC,
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_registered_kind_is_named_for_configuration() {
        let registry = Registry::standard(&Config::default());
        let registered: Vec<&str> = registry.iter().map(|(kind, _)| kind).collect();
        let mut named = KIND_NAMES.to_vec();
        named.sort_unstable();
        assert_eq!(registered, named);
    }

    #[test]
    fn configuration_overrides_a_kinds_defaults() {
        let mut config = Config::default();
        let noop = config.workers.kinds.entry("noop".to_owned()).or_default();
        noop.concurrency = Some(2);
        noop.backoff_base_ms = Some(50);
        let registry = Registry::standard(&config);
        let settings = registry.get("noop").unwrap().settings;
        assert_eq!(settings.concurrency, 2);
        assert_eq!(settings.backoff_base, Duration::from_millis(50));
        assert_eq!(settings.max_attempts, KindSettings::default().max_attempts);
        assert_eq!(registry.get("prune_jobs").unwrap().settings.concurrency, 1);
    }
}
