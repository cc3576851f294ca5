//! Durable jobs. One file per job kind, [`Registry::new`] registering them all in one list,
//! [`engine`] running them and [`scheduler`] firing cron schedules. `docs/JOBS.md` explains the
//! design.
//!
//! A kind implements [`Job`]: a stable kind name, a typed payload (decoded once, here, before
//! `run` sees it) and `run`, which returns [`Outcome::Done`] with a result,
//! [`Outcome::Reschedule`] to poll again later without spending an attempt, or a [`JobError`]
//! that is either permanent (fail now, with the reason) or transient (retry with exponential
//! backoff and equal jitter, durably, up to the kind's maximum of attempts). A kind may also
//! have a failure hook. Jobs are adapters: what they change in the database, they change
//! through the use cases of [`crate::app`]. Handlers must be idempotent: after a crash an
//! attempt can run twice.

pub mod allocate_quota;
pub mod allocate_servers;
pub mod deliver_webhook;
pub mod deprovision_namespace;
pub mod diagnostic;
pub mod engine;
pub mod poll_argocd;
pub mod provision_namespace;
pub mod prune;
pub mod raise_quota;
pub mod read_usage;
pub mod reconcile;
pub mod resync;
pub mod scheduler;
pub mod submissions;
pub mod sync_servers;
pub mod wake;

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use sqlx::PgConnection;

use crate::app::AppError;
use crate::clients::ClientError;
use crate::config::{ConfigError, KindConfig, WorkersConfig};
use crate::context::Context;
use crate::store::StoreError;
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

impl Outcome {
    /// A finished attempt whose result is `value` serialized.
    pub fn done(value: impl Serialize) -> Self {
        Self::Done(serde_json::to_value(value).unwrap_or(Value::Null))
    }
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
impl From<StoreError> for JobError {
    fn from(err: StoreError) -> Self {
        Self::Transient(format!("database: {err}"))
    }
}

impl From<ClientError> for JobError {
    fn from(err: ClientError) -> Self {
        match err {
            ClientError::Permanent(m) => JobError::Permanent(m),
            ClientError::Transient(m) => JobError::Transient(m),
        }
    }
}

/// A refusal by a rule is permanent; the database or a bug being in the way is not.
impl From<AppError> for JobError {
    fn from(err: AppError) -> Self {
        if err.is_transient() {
            JobError::Transient(err.to_string())
        } else {
            JobError::Permanent(err.to_string())
        }
    }
}

/// One attempt of a job, with its payload decoded.
#[derive(Debug, Clone)]
pub struct Run<P> {
    pub id: uuid::Uuid,
    /// 1 for the first attempt.
    pub attempt: i32,
    pub max_attempts: i32,
    /// Claims so far, re-scheduled polls included.
    pub claim: i32,
    /// When the job was submitted: deadlines of a change count from here.
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub payload: P,
}

/// The payload of kinds that need no input: empty when submitted by hand, the schedule and
/// its tick when cron fires them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, serde::Deserialize)]
#[serde(default)]
pub struct Trigger {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tick: Option<chrono::DateTime<chrono::Utc>>,
}

/// One kind of job.
pub trait Job: Send + Sync + 'static {
    /// The stable queue name, stored in every job row: never rename it.
    const KIND: &'static str;

    /// While a job of this kind is queued or running, submissions and cron ticks return it
    /// instead of adding another (e.g. one server sync at a time).
    const DEDUPE: bool = false;

    /// What a submission hands the job.
    type Payload: Serialize + DeserializeOwned + Send + Sync + 'static;

    /// Jobs of this kind with the same key carry changes where only the newest matters (a
    /// quota set again, a server moved again): enqueueing one supersedes the queued older
    /// ones, which end `superseded` naming it. `None`: no coalescing.
    fn coalesce_key(_payload: &Self::Payload) -> Option<String> {
        None
    }

    /// Concurrency, attempts, timeout and backoff unless configured otherwise.
    fn settings(&self) -> KindSettings {
        KindSettings::default()
    }

    /// Runs one attempt.
    fn run(
        &self,
        ctx: &Context,
        job: &Run<Self::Payload>,
    ) -> impl Future<Output = Result<Outcome, JobError>> + Send;

    /// Called when the job ends without success, however that happens: a permanent error, its
    /// last attempt failing or lost with its worker, or a cancellation. It runs in the
    /// transaction (`conn`) that records the job's end, so the job and its subject settle
    /// together or not at all; an error rolls both back.
    fn on_failure(
        &self,
        _ctx: &Context,
        _conn: &mut PgConnection,
        _job: &Run<Self::Payload>,
        _reason: &str,
    ) -> impl Future<Output = Result<(), JobError>> + Send {
        async { Ok(()) }
    }
}

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A [`Job`] with its payload type erased, as the engine runs it.
pub trait Handler: Send + Sync {
    fn run<'a>(
        &'a self,
        ctx: &'a Context,
        job: &'a Claimed,
    ) -> BoxFuture<'a, Result<Outcome, JobError>>;

    fn on_failure<'a>(
        &'a self,
        ctx: &'a Context,
        conn: &'a mut PgConnection,
        job: &'a Claimed,
        reason: &'a str,
    ) -> BoxFuture<'a, Result<(), JobError>>;
}

fn decode<P: DeserializeOwned>(job: &Claimed) -> Result<Run<P>, JobError> {
    let payload = serde_json::from_value(job.payload.clone())
        .map_err(|e| JobError::permanent(format!("bad payload: {e}")))?;
    Ok(Run {
        id: job.id,
        attempt: job.attempt,
        max_attempts: job.max_attempts,
        claim: job.claim,
        created_at: job.created_at,
        payload,
    })
}

impl<J: Job> Handler for J {
    fn run<'a>(
        &'a self,
        ctx: &'a Context,
        job: &'a Claimed,
    ) -> BoxFuture<'a, Result<Outcome, JobError>> {
        Box::pin(async move {
            let run = decode::<J::Payload>(job)?;
            Job::run(self, ctx, &run).await
        })
    }

    fn on_failure<'a>(
        &'a self,
        ctx: &'a Context,
        conn: &'a mut PgConnection,
        job: &'a Claimed,
        reason: &'a str,
    ) -> BoxFuture<'a, Result<(), JobError>> {
        Box::pin(async move {
            // A payload that does not decode names no subject to settle.
            let Ok(run) = decode::<J::Payload>(job) else { return Ok(()) };
            Job::on_failure(self, ctx, conn, &run, reason).await
        })
    }
}

/// The default delay of the kinds that coalesce: short enough to go unnoticed by a person,
/// long enough that a burst of changes to one key runs as one job (docs/BENCHMARKS.md).
pub const COALESCE_DELAY: Duration = Duration::from_millis(100);

/// How one kind runs: built from the kind's defaults and `workers.kinds.<kind>`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KindSettings {
    /// Attempts of this kind one daemon runs at once; 0 runs none here.
    pub concurrency: u32,
    /// Jobs one daemon claims ahead of its free slots and holds in a local queue (under the
    /// lease, renewed like running ones), so a worker that finishes finds its next job without
    /// a round trip and claims go out in batches. 0 claims only for free slots. Worth it for
    /// many short jobs; for long ones it keeps jobs from idle daemons elsewhere.
    pub prefetch: u32,
    pub max_attempts: u32,
    /// An attempt running longer fails transiently.
    pub timeout: Duration,
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    /// Transient failures retry until this long after the job was submitted (then it fails
    /// with the last reason), however many attempts that takes, up to `max_attempts`: an
    /// outage of a remote system is outlasted, not counted in attempts.
    pub deadline: Option<Duration>,
    /// Kinds that coalesce: a job is due this long after it is submitted (or when the queued
    /// job of its key it supersedes was due, if sooner), so changes of one key that come
    /// close together run once, with the newest value. Zero: due at once.
    pub coalesce_delay: Duration,
}

impl Default for KindSettings {
    fn default() -> Self {
        Self {
            concurrency: 4,
            prefetch: 0,
            max_attempts: 5,
            timeout: Duration::from_secs(300),
            backoff_base: Duration::from_secs(2),
            backoff_max: Duration::from_secs(600),
            deadline: None,
            coalesce_delay: Duration::ZERO,
        }
    }
}

impl KindSettings {
    fn with_overrides(mut self, config: Option<&KindConfig>) -> Self {
        let Some(config) = config else { return self };
        if let Some(v) = config.concurrency {
            self.concurrency = v;
        }
        if let Some(v) = config.prefetch {
            self.prefetch = v;
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
        if let Some(v) = config.deadline_secs {
            self.deadline = Some(Duration::from_secs(v));
        }
        if let Some(v) = config.coalesce_delay_ms {
            self.coalesce_delay = Duration::from_millis(v);
        }
        self
    }

    /// Whether a transient failure of attempt `attempt` of a job submitted at `created_at`
    /// is retried.
    pub fn retries(
        &self,
        attempt: i32,
        max_attempts: i32,
        created_at: chrono::DateTime<chrono::Utc>,
    ) -> bool {
        let within = |deadline: Duration| {
            (chrono::Utc::now() - created_at).to_std().unwrap_or_default() < deadline
        };
        attempt < max_attempts && self.deadline.is_none_or(within)
    }

    /// The maximum of attempts as stored in a job row.
    pub fn max_attempts_i32(&self) -> i32 {
        i32::try_from(self.max_attempts).unwrap_or(i32::MAX)
    }
}

/// A registered kind with its effective settings.
#[derive(Clone)]
pub struct Registered {
    pub handler: Arc<dyn Handler>,
    pub settings: KindSettings,
    /// One active job of this kind at a time.
    pub dedupe: bool,
}

/// Every job kind of InfraHub, by stable name, with its effective settings.
#[derive(Clone, Default)]
pub struct Registry {
    kinds: BTreeMap<&'static str, Registered>,
}

impl Registry {
    /// All kinds (the one registration list), with settings from `config`; a configured kind
    /// that does not exist is refused.
    pub fn new(config: &WorkersConfig) -> Result<Self, ConfigError> {
        let mut registry = Registry::default();
        registry.add(diagnostic::Noop, config);
        registry.add(diagnostic::Sleep, config);
        registry.add(prune::PruneJobs, config);
        registry.add(sync_servers::SyncServers, config);
        registry.add(allocate_servers::AllocateServers, config);
        registry.add(allocate_quota::AllocateQuota, config);
        registry.add(provision_namespace::ProvisionNamespace, config);
        registry.add(deprovision_namespace::DeprovisionNamespace, config);
        registry.add(poll_argocd::PollArgocd, config);
        registry.add(resync::Resync, config);
        registry.add(reconcile::Reconcile, config);
        registry.add(deliver_webhook::DeliverWebhook, config);
        registry.add(read_usage::ReadUsage, config);
        registry.add(raise_quota::RaiseQuota, config);
        if let Some(unknown) =
            config.kinds.keys().find(|k| !registry.kinds.contains_key(k.as_str()))
        {
            let known: Vec<&str> = registry.kinds.keys().copied().collect();
            return Err(ConfigError::invalid(
                "workers.kinds",
                format!("unknown job kind `{unknown}`; known: {}", known.join(", ")),
            ));
        }
        Ok(registry)
    }

    fn add<J: Job>(&mut self, job: J, config: &WorkersConfig) {
        let settings = job.settings().with_overrides(config.kinds.get(J::KIND));
        let registered = Registered { handler: Arc::new(job), settings, dedupe: J::DEDUPE };
        self.kinds.insert(J::KIND, registered);
    }

    pub fn get(&self, kind: &str) -> Option<&Registered> {
        self.kinds.get(kind)
    }

    /// The settings of `kind` (defaults for a kind this binary does not know).
    pub fn settings(&self, kind: &str) -> KindSettings {
        self.get(kind).map(|r| r.settings).unwrap_or_default()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&'static str, &Registered)> {
        self.kinds.iter().map(|(k, v)| (*k, v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_is_registered_once_under_its_stable_name() {
        let registry = Registry::new(&WorkersConfig::default()).unwrap();
        let names: Vec<&str> = registry.iter().map(|(kind, _)| kind).collect();
        assert_eq!(
            names,
            [
                "allocate_quota",
                "allocate_servers",
                "deliver_webhook",
                "deprovision_namespace",
                "noop",
                "poll_argocd",
                "provision_namespace",
                "prune_jobs",
                "raise_quota",
                "read_usage",
                "reconcile",
                "resync",
                "sleep",
                "sync_servers"
            ]
        );
        let deduped: Vec<&str> =
            registry.iter().filter(|(_, r)| r.dedupe).map(|(kind, _)| kind).collect();
        assert_eq!(deduped, ["prune_jobs", "read_usage", "reconcile", "resync", "sync_servers"]);
    }

    #[test]
    fn configuration_overrides_a_kinds_defaults() {
        let mut config = WorkersConfig::default();
        let noop = config.kinds.entry("noop".to_owned()).or_default();
        noop.concurrency = Some(2);
        noop.backoff_base_ms = Some(50);
        let registry = Registry::new(&config).unwrap();
        let settings = registry.settings("noop");
        assert_eq!(settings.concurrency, 2);
        assert_eq!(settings.backoff_base, Duration::from_millis(50));
        assert_eq!(settings.max_attempts, KindSettings::default().max_attempts);
        assert_eq!(registry.settings("prune_jobs").concurrency, 1);
    }

    #[test]
    fn the_kinds_that_coalesce_wait_a_little_by_default_and_can_be_told_not_to() {
        let registry = Registry::new(&WorkersConfig::default()).unwrap();
        assert_eq!(registry.settings("allocate_quota").coalesce_delay, COALESCE_DELAY);
        assert_eq!(registry.settings("allocate_servers").coalesce_delay, COALESCE_DELAY);
        assert_eq!(registry.settings("provision_namespace").coalesce_delay, Duration::ZERO);
        let mut config = WorkersConfig::default();
        config.kinds.entry("allocate_quota".to_owned()).or_default().coalesce_delay_ms = Some(0);
        let registry = Registry::new(&config).unwrap();
        assert_eq!(registry.settings("allocate_quota").coalesce_delay, Duration::ZERO);
    }

    #[test]
    fn unknown_kinds_in_configuration_are_refused() {
        let mut config = WorkersConfig::default();
        config.kinds.entry("bogus".to_owned()).or_default().concurrency = Some(1);
        let err = Registry::new(&config).err().expect("refused").to_string();
        assert!(err.contains("unknown job kind `bogus`") && err.contains("noop"), "{err}");
    }
}
