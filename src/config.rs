//! Configuration: built-in defaults < TOML file < `INFRAHUB_*` environment (`__` nests).
//!
//! Every struct denies unknown keys, so a typo is an error that names the key instead of a
//! setting silently ignored. Secrets are [`Secret`]s: they never print, serialize or log.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use figment::Figment;
use figment::providers::{Env, Format, Toml};
use serde::{Deserialize, Serialize, Serializer};

/// The configuration file read when `--config` is not given (it may be absent).
pub const DEFAULT_CONFIG_PATH: &str = "config/infrahub.toml";

/// The demo's own configuration, embedded so `infrahub demo` works from any directory.
const DEMO_CONFIG: &str = include_str!("../config/demo/infrahub.toml");

/// JWT secrets that are public knowledge; `serve` refuses them.
const KNOWN_JWT_SECRETS: &[&str] = &[
    "infrahub-demo-jwt-secret-do-not-use-in-production",
    "changeme-changeme-changeme-changeme",
    "secret-secret-secret-secret-secret",
];

/// Shortest JWT secret accepted: HS256 wants at least 256 bits of key.
const MIN_JWT_SECRET_BYTES: usize = 32;

/// Whether configuration is loaded for the demo (which may use its public secret and accounts).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Serve,
    Demo,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Parsing or merging failed; figment's message names the key and the source.
    #[error("configuration: {0}")]
    Load(String),
    /// A value parsed but makes no sense.
    #[error("configuration key `{key}`: {message}")]
    Invalid { key: &'static str, message: String },
}

impl ConfigError {
    fn invalid(key: &'static str, message: impl Into<String>) -> Self {
        Self::Invalid { key, message: message.into() }
    }
}

impl From<figment::Error> for ConfigError {
    fn from(err: figment::Error) -> Self {
        let messages: Vec<String> = err.into_iter().map(describe).collect();
        Self::Load(messages.join("; "))
    }
}

/// One figment error as `key `a.b` in <source>: <problem>`, naming the exact environment
/// variable when the value came from one (figment itself only names the prefix).
fn describe(err: figment::Error) -> String {
    let key = err.path.join(".");
    let unknown_field = matches!(err.kind, figment::error::Kind::UnknownField(..));
    let source = match err.metadata.as_ref() {
        Some(meta) if meta.name.contains("environment") => {
            if unknown_field || key.is_empty() {
                " in the INFRAHUB_* environment".to_owned()
            } else {
                format!(" in environment variable INFRAHUB_{}", err.path.join("__").to_uppercase())
            }
        }
        Some(meta) => match &meta.source {
            Some(figment::Source::File(path)) => format!(" in {}", path.display()),
            _ => format!(" in {}", meta.name),
        },
        None => String::new(),
    };
    if key.is_empty() {
        format!("{}{source}", err.kind)
    } else {
        format!("key `{key}`{source}: {}", err.kind)
    }
}

/// A string that must not leak: `Debug` and `Serialize` show `[redacted]`.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself, for the one place that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str("[redacted]")
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub http: HttpConfig,
    pub database: DatabaseConfig,
    pub auth: AuthConfig,
    pub workers: WorkersConfig,
    pub schedule: ScheduleConfig,
    pub inventory: InventoryConfig,
    pub capacity: CapacityConfig,
    pub delivery: DeliveryConfig,
    pub argocd: ArgocdConfig,
    pub kubernetes: KubernetesConfig,
    /// SLA type -> performance tier -> quota. A `[catalog]` in the file replaces the built-in
    /// one as a whole.
    pub catalog: Catalog,
    pub logging: LoggingConfig,
}

/// What a project of one SLA type and performance tier gets.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CatalogEntry {
    pub cpu: u32,
    pub ram_gb: u32,
    /// Further ResourceQuota `hard` entries, e.g. `pods = "100"`, `"requests.storage" = "500Gi"`.
    #[serde(default)]
    pub extra: std::collections::BTreeMap<String, String>,
    /// Further namespace labels.
    #[serde(default)]
    pub labels: std::collections::BTreeMap<String, String>,
}

pub type Catalog =
    std::collections::BTreeMap<String, std::collections::BTreeMap<String, CatalogEntry>>;

/// Bronze, silver and gold, each regular or high.
pub fn default_catalog() -> Catalog {
    let entry = |cpu, ram_gb, pods: &str, storage: Option<&str>, backup: &str| {
        let mut extra = std::collections::BTreeMap::from([("pods".to_owned(), pods.to_owned())]);
        if let Some(storage) = storage {
            extra.insert("requests.storage".to_owned(), storage.to_owned());
        }
        let labels = std::collections::BTreeMap::from([(
            "infrahub.io/backup".to_owned(),
            backup.to_owned(),
        )]);
        CatalogEntry { cpu, ram_gb, extra, labels }
    };
    let mut catalog = Catalog::new();
    for (sla, scale, pods, storage, backup) in [
        ("bronze", 1, "50", None, "none"),
        ("silver", 2, "100", Some("200Gi"), "daily"),
        ("gold", 4, "200", Some("1Ti"), "hourly"),
    ] {
        let tiers = std::collections::BTreeMap::from([
            ("regular".to_owned(), entry(2 * scale, 8 * scale, pods, storage, backup)),
            ("high".to_owned(), entry(4 * scale, 16 * scale, pods, storage, backup)),
        ]);
        catalog.insert(sla.to_owned(), tiers);
    }
    catalog
}

/// Argo CD, watching the GitOps repository. Without a URL (or for sites without an
/// application) delivery itself makes a project active.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ArgocdConfig {
    /// e.g. `https://argocd.example.com`; empty: no Argo CD.
    pub url: String,
    pub token: Option<Secret>,
    pub token_file: Option<PathBuf>,
    /// Site name -> the Argo CD Application that deploys that site's directory.
    pub apps: std::collections::BTreeMap<String, String>,
    /// How often a project's Application is read while it is not there yet.
    pub poll_interval_ms: u64,
    /// A project not Synced and Healthy after this long fails with Argo CD's message.
    pub deadline_secs: u64,
    /// Read with `refresh=hard` (re-reads Git at once instead of at its next poll).
    pub hard_refresh: bool,
    /// Ask for a sync when the Application has no automated sync policy.
    pub sync: bool,
    pub timeout_secs: u64,
}

impl Default for ArgocdConfig {
    fn default() -> Self {
        Self {
            url: String::new(),
            token: None,
            token_file: None,
            apps: Default::default(),
            poll_interval_ms: 10_000,
            deadline_secs: 1800,
            hard_refresh: false,
            sync: true,
            timeout_secs: 15,
        }
    }
}

impl ArgocdConfig {
    /// The Application of `site`, when Argo CD is configured for it.
    pub fn app_for(&self, site: &str) -> Option<&str> {
        if self.url.is_empty() { None } else { self.apps.get(site).map(String::as_str) }
    }
}

/// How project manifests reach the clusters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryKind {
    /// Commit them to a Git repository that ArgoCD watches.
    #[default]
    Gitops,
    /// Apply them to the site's cluster with server-side apply.
    Kubernetes,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct DeliveryConfig {
    pub kind: DeliveryKind,
    /// Namespace name; `{department}` and `{name}` are replaced. The result must be a
    /// DNS-1123 label.
    pub namespace_template: String,
    pub git: GitConfig,
    pub gitlab: GitlabConfig,
}

/// The clusters, for `delivery.kind = "kubernetes"`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct KubernetesConfig {
    /// The kubeconfig file; the usual lookup (`KUBECONFIG`, `~/.kube/config`) when unset.
    pub kubeconfig: Option<PathBuf>,
    /// Site name -> kubeconfig context of that site's cluster.
    pub contexts: std::collections::BTreeMap<String, String>,
    /// Field manager of server-side apply.
    pub field_manager: String,
    /// While a deleted namespace is still terminating, look again this often.
    pub poll_interval_ms: u64,
}

impl Default for KubernetesConfig {
    fn default() -> Self {
        Self {
            kubeconfig: None,
            contexts: Default::default(),
            field_manager: "infrahub".to_owned(),
            poll_interval_ms: 5000,
        }
    }
}

/// The GitLab project that holds the manifests (`delivery.git.kind = "gitlab"`); branch and
/// author come from `delivery.git`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct GitlabConfig {
    /// e.g. `https://gitlab.example.com`.
    pub url: String,
    /// Project id, or its path such as `platform/gitops`.
    pub project: String,
    pub token: Option<Secret>,
    pub token_file: Option<PathBuf>,
    pub timeout_secs: u64,
}

impl Default for GitlabConfig {
    fn default() -> Self {
        Self {
            url: String::new(),
            project: String::new(),
            token: None,
            token_file: None,
            timeout_secs: 30,
        }
    }
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        Self {
            kind: DeliveryKind::Gitops,
            namespace_template: "{department}-{name}".to_owned(),
            git: GitConfig::default(),
            gitlab: GitlabConfig::default(),
        }
    }
}

/// Where GitOps manifests are committed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum GitKind {
    /// A repository on this host's disk (created if missing), optionally pushed to a remote.
    #[default]
    Local,
    /// A GitLab project, through its commits API (one commit per change).
    Gitlab,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct GitConfig {
    pub kind: GitKind,
    /// The repository's directory; `<site>/<namespace>.yaml` files are written in it.
    pub path: PathBuf,
    pub branch: String,
    /// Pushed to after every commit when set (a remote name or URL).
    pub remote: Option<String>,
    pub author_name: String,
    pub author_email: String,
}

impl Default for GitConfig {
    fn default() -> Self {
        Self {
            kind: GitKind::Local,
            path: PathBuf::from("var/gitops"),
            branch: "main".to_owned(),
            remote: None,
            author_name: "InfraHub".to_owned(),
            author_email: "infrahub@localhost".to_owned(),
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            http: HttpConfig::default(),
            database: DatabaseConfig::default(),
            auth: AuthConfig::default(),
            workers: WorkersConfig::default(),
            schedule: ScheduleConfig::default(),
            inventory: InventoryConfig::default(),
            capacity: CapacityConfig::default(),
            delivery: DeliveryConfig::default(),
            argocd: ArgocdConfig::default(),
            kubernetes: KubernetesConfig::default(),
            catalog: default_catalog(),
            logging: LoggingConfig::default(),
        }
    }
}

/// Where servers come from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum InventorySource {
    #[default]
    File,
    Netbox,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct InventoryConfig {
    pub source: InventorySource,
    pub file: FileInventoryConfig,
    pub netbox: NetboxConfig,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct FileInventoryConfig {
    /// A JSON list of `{id, name, site, cpu_cores, ram_gb, ...}`; relative to the working
    /// directory.
    pub path: PathBuf,
}

impl Default for FileInventoryConfig {
    fn default() -> Self {
        Self { path: PathBuf::from("config/inventory.json") }
    }
}

/// NetBox token styles: v2 tokens go as `Bearer nbt_<key>.<token>`, v1 as `Token <token>`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum NetboxTokenVersion {
    #[default]
    V2,
    V1,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct NetboxConfig {
    /// Base URL, e.g. `https://netbox.example.com` (the client appends `/api/dcim/devices/`).
    pub url: String,
    pub token: Option<Secret>,
    pub token_file: Option<PathBuf>,
    pub token_version: NetboxTokenVersion,
    /// Device role slug of servers.
    pub role: String,
    /// Only these site slugs (all sites when empty); servers of other sites are left alone.
    pub sites: Vec<String>,
    /// Device status to sync.
    pub status: String,
    /// Devices per page, at most 1000.
    pub page_size: u32,
    /// Custom field holding the CPU core count.
    pub cpu_field: String,
    /// Custom field holding the RAM in GB.
    pub ram_field: String,
    /// Per request.
    pub timeout_secs: u64,
    /// Further tries of a page after a 5xx, a timeout or a connection error.
    pub retries: u32,
}

impl Default for NetboxConfig {
    fn default() -> Self {
        Self {
            url: String::new(),
            token: None,
            token_file: None,
            token_version: NetboxTokenVersion::V2,
            role: "server".to_owned(),
            sites: Vec::new(),
            status: "active".to_owned(),
            page_size: 1000,
            cpu_field: "cpu_cores".to_owned(),
            ram_field: "ram_gb".to_owned(),
            timeout_secs: 30,
            retries: 3,
        }
    }
}

/// Overcommit factors: capacity = factor × the servers' CPU or RAM.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct CapacityConfig {
    pub cpu_overcommit: f64,
    pub ram_overcommit: f64,
}

impl Default for CapacityConfig {
    fn default() -> Self {
        Self { cpu_overcommit: 1.0, ram_overcommit: 1.0 }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct WorkersConfig {
    /// How long a claimed job stays with its worker without a renewal (renewed every third of
    /// it). A daemon killed mid-job loses its jobs to another daemon after this long.
    pub lease_secs: u64,
    /// Idle dispatchers look for due jobs this often even without a notification (retries and
    /// re-scheduled polls become due without one).
    pub poll_interval_ms: u64,
    /// How long running jobs get to finish after SIGTERM before they are handed back.
    pub shutdown_grace_secs: u64,
    /// Finished jobs older than this are deleted by the `prune_jobs` job.
    pub retention_days: u64,
    /// Per kind: `concurrency`, `max_attempts`, `timeout_secs`, `backoff_base_ms`,
    /// `backoff_max_secs`.
    pub kinds: std::collections::BTreeMap<String, KindConfig>,
}

impl Default for WorkersConfig {
    fn default() -> Self {
        Self {
            lease_secs: 30,
            poll_interval_ms: 1000,
            shutdown_grace_secs: 30,
            retention_days: 14,
            kinds: Default::default(),
        }
    }
}

/// Settings of one job kind; anything left out keeps the kind's default.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct KindConfig {
    pub concurrency: Option<u32>,
    pub max_attempts: Option<u32>,
    pub timeout_secs: Option<u64>,
    pub backoff_base_ms: Option<u64>,
    pub backoff_max_secs: Option<u64>,
}

/// Cron expressions with seconds (`sec min hour day-of-month month day-of-week`), in UTC. An
/// empty string turns a schedule off.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ScheduleConfig {
    /// Pulls the server inventory.
    pub server_sync: String,
    /// Compares active projects with what was delivered and repairs drift.
    pub resync: String,
    /// Deletes old finished jobs.
    pub prune_jobs: String,
}

impl Default for ScheduleConfig {
    fn default() -> Self {
        Self {
            server_sync: "0 */15 * * * *".to_owned(),
            resync: "0 0 * * * *".to_owned(),
            prune_jobs: "0 17 3 * * *".to_owned(),
        }
    }
}

impl ScheduleConfig {
    /// `(schedule name, job kind, cron expression)` of every schedule that is on.
    pub fn entries(&self) -> Vec<(&'static str, &'static str, &str)> {
        [
            ("server_sync", crate::jobs::sync_servers::SYNC_SERVERS, self.server_sync.as_str()),
            ("resync", crate::jobs::resync::RESYNC, self.resync.as_str()),
            ("prune_jobs", crate::jobs::prune::PRUNE_JOBS, self.prune_jobs.as_str()),
        ]
        .into_iter()
        .filter(|(_, _, expr)| !expr.trim().is_empty())
        .collect()
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// Address the intake binds; behind a reverse proxy this stays on loopback.
    pub listen: SocketAddr,
    /// Largest request body accepted; every request of the API is small JSON.
    pub body_limit_bytes: usize,
    /// How long in-flight requests may take to finish after SIGTERM before the process exits.
    pub shutdown_grace_secs: u64,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8000)),
            body_limit_bytes: 256 * 1024,
            shutdown_grace_secs: 30,
        }
    }
}

#[derive(Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseConfig {
    /// PostgreSQL URL; a password in it is redacted wherever the URL is shown.
    #[serde(serialize_with = "serialize_redacted_url")]
    pub url: String,
    /// Upper bound of pooled connections per daemon; N daemons use N times this many.
    pub max_connections: u32,
    /// Connections kept open while idle, so the first requests after a lull are fast.
    pub min_connections: u32,
    /// How long a request waits for a pooled connection (and for the first connect) before failing.
    pub acquire_timeout_secs: u64,
    /// Idle connections above `min_connections` are closed after this long.
    pub idle_timeout_secs: u64,
    /// Apply pending migrations when `serve` starts (under PostgreSQL's advisory lock, so
    /// several daemons starting together migrate once). Turn off to migrate by hand.
    pub migrate_on_start: bool,
}

impl fmt::Debug for DatabaseConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DatabaseConfig")
            .field("url", &redact_url(&self.url))
            .field("max_connections", &self.max_connections)
            .field("min_connections", &self.min_connections)
            .field("acquire_timeout_secs", &self.acquire_timeout_secs)
            .field("idle_timeout_secs", &self.idle_timeout_secs)
            .field("migrate_on_start", &self.migrate_on_start)
            .finish()
    }
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            url: "postgres://postgres@127.0.0.1:5432/infrahub".to_owned(),
            max_connections: 10,
            min_connections: 0,
            acquire_timeout_secs: 5,
            idle_timeout_secs: 600,
            migrate_on_start: true,
        }
    }
}

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

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct LoggingConfig {
    pub format: LogFormat,
    /// A `tracing` filter such as `info` or `infrahub=debug,sqlx=warn`; `RUST_LOG` overrides it.
    pub level: String,
}

impl Default for LoggingConfig {
    fn default() -> Self {
        Self { format: LogFormat::Text, level: "info".to_owned() }
    }
}

impl Config {
    /// Loads configuration for `mode`. `path` is the `--config` argument: when given, the file
    /// must exist; when absent, [`DEFAULT_CONFIG_PATH`] is read if present (serve) and the
    /// embedded demo configuration is the base (demo).
    pub fn load(mode: Mode, path: Option<&Path>) -> Result<Self, ConfigError> {
        let config: Config = Self::figment(mode, path)?.extract()?;
        config.validate()?;
        Ok(config)
    }

    fn figment(mode: Mode, path: Option<&Path>) -> Result<Figment, ConfigError> {
        let mut figment = Figment::new();
        if mode == Mode::Demo {
            figment = figment.merge(Toml::string(DEMO_CONFIG));
        }
        match path {
            Some(path) if !path.is_file() => {
                return Err(ConfigError::Load(format!(
                    "configuration file {} does not exist",
                    path.display()
                )));
            }
            Some(path) => figment = figment.merge(Toml::file_exact(path)),
            None if mode == Mode::Serve => figment = figment.merge(Toml::file(DEFAULT_CONFIG_PATH)),
            None => {}
        }
        // INFRAHUB_CONFIG names the file (a CLI option), it is not a configuration key.
        let env = Env::prefixed("INFRAHUB_").split("__").filter(|key| key != "config");
        Ok(figment.merge(env))
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let db = &self.database;
        let url = url::Url::parse(&db.url)
            .map_err(|e| ConfigError::invalid("database.url", format!("not a URL: {e}")))?;
        if !matches!(url.scheme(), "postgres" | "postgresql") {
            return Err(ConfigError::invalid(
                "database.url",
                "must start with postgres:// or postgresql://",
            ));
        }
        if db.max_connections == 0 {
            return Err(ConfigError::invalid("database.max_connections", "must be at least 1"));
        }
        if db.min_connections > db.max_connections {
            return Err(ConfigError::invalid(
                "database.min_connections",
                "must not exceed database.max_connections",
            ));
        }
        if db.acquire_timeout_secs == 0 {
            return Err(ConfigError::invalid(
                "database.acquire_timeout_secs",
                "must be at least 1",
            ));
        }
        let auth = &self.auth;
        if auth.jwt_secret.is_some() && auth.jwt_secret_file.is_some() {
            return Err(ConfigError::invalid(
                "auth.jwt_secret",
                "set either auth.jwt_secret or auth.jwt_secret_file, not both",
            ));
        }
        if auth.issuer.trim().is_empty() {
            return Err(ConfigError::invalid("auth.issuer", "must not be empty"));
        }
        if auth.token_ttl_secs == 0 {
            return Err(ConfigError::invalid("auth.token_ttl_secs", "must be at least 1"));
        }
        if auth.login_max_failures == 0 {
            return Err(ConfigError::invalid("auth.login_max_failures", "must be at least 1"));
        }
        self.validate_workers()?;
        if self.http.body_limit_bytes < 1024 {
            return Err(ConfigError::invalid("http.body_limit_bytes", "must be at least 1024"));
        }
        tracing_subscriber::EnvFilter::try_new(&self.logging.level).map_err(|e| {
            ConfigError::invalid("logging.level", format!("not a tracing filter: {e}"))
        })?;
        Ok(())
    }

    fn validate_workers(&self) -> Result<(), ConfigError> {
        let workers = &self.workers;
        if workers.lease_secs < 3 {
            return Err(ConfigError::invalid("workers.lease_secs", "must be at least 3"));
        }
        if workers.poll_interval_ms == 0 {
            return Err(ConfigError::invalid("workers.poll_interval_ms", "must be at least 1"));
        }
        for (kind, settings) in &workers.kinds {
            if !crate::jobs::KIND_NAMES.contains(&kind.as_str()) {
                return Err(ConfigError::invalid(
                    "workers.kinds",
                    format!(
                        "unknown job kind `{kind}`; known: {}",
                        crate::jobs::KIND_NAMES.join(", ")
                    ),
                ));
            }
            if settings.max_attempts == Some(0) {
                return Err(ConfigError::invalid(
                    "workers.kinds",
                    format!("{kind}.max_attempts must be at least 1"),
                ));
            }
            if settings.timeout_secs == Some(0) {
                return Err(ConfigError::invalid(
                    "workers.kinds",
                    format!("{kind}.timeout_secs must be at least 1"),
                ));
            }
        }
        self.validate_inventory()?;
        self.validate_delivery()?;
        for (name, _, expr) in self.schedule.entries() {
            cron::Schedule::from_str(expr).map_err(|e| ConfigError::Invalid {
                key: "schedule",
                message: format!("{name} = {expr:?} is not a cron expression with seconds: {e}"),
            })?;
        }
        Ok(())
    }

    fn validate_inventory(&self) -> Result<(), ConfigError> {
        let netbox = &self.inventory.netbox;
        if self.inventory.source == InventorySource::Netbox {
            let url = url::Url::parse(&netbox.url).map_err(|e| {
                ConfigError::invalid(
                    "inventory.netbox.url",
                    format!("not a URL ({e}); NetBox is the inventory source"),
                )
            })?;
            if !matches!(url.scheme(), "http" | "https") {
                return Err(ConfigError::invalid(
                    "inventory.netbox.url",
                    "must be http:// or https://",
                ));
            }
            if netbox.token.is_none() && netbox.token_file.is_none() {
                return Err(ConfigError::invalid(
                    "inventory.netbox.token",
                    "missing: set inventory.netbox.token_file or INFRAHUB_INVENTORY__NETBOX__TOKEN",
                ));
            }
        }
        if netbox.token.is_some() && netbox.token_file.is_some() {
            return Err(ConfigError::invalid(
                "inventory.netbox.token",
                "set either token or token_file, not both",
            ));
        }
        if !(1..=1000).contains(&netbox.page_size) {
            return Err(ConfigError::invalid(
                "inventory.netbox.page_size",
                "must be between 1 and 1000",
            ));
        }
        if netbox.timeout_secs == 0 {
            return Err(ConfigError::invalid(
                "inventory.netbox.timeout_secs",
                "must be at least 1",
            ));
        }
        for (key, value) in [
            ("capacity.cpu_overcommit", self.capacity.cpu_overcommit),
            ("capacity.ram_overcommit", self.capacity.ram_overcommit),
        ] {
            if !(value.is_finite() && (0.1..=100.0).contains(&value)) {
                return Err(ConfigError::invalid(key, "must be a number between 0.1 and 100"));
            }
        }
        Ok(())
    }

    fn validate_delivery(&self) -> Result<(), ConfigError> {
        let template = &self.delivery.namespace_template;
        if !template.contains("{name}") {
            return Err(ConfigError::invalid("delivery.namespace_template", "must contain {name}"));
        }
        crate::domain::project::namespace_for(template, "department", "name")
            .map_err(|e| ConfigError::invalid("delivery.namespace_template", e.message))?;
        if self.delivery.kind == DeliveryKind::Kubernetes && self.kubernetes.contexts.is_empty() {
            return Err(ConfigError::invalid(
                "kubernetes.contexts",
                "needs the kubeconfig context of each site",
            ));
        }
        if self.kubernetes.field_manager.trim().is_empty() || self.kubernetes.poll_interval_ms == 0
        {
            return Err(ConfigError::invalid(
                "kubernetes",
                "field_manager must be set and poll_interval_ms at least 1",
            ));
        }
        if self.delivery.git.kind == GitKind::Gitlab {
            let gitlab = &self.delivery.gitlab;
            url::Url::parse(&gitlab.url).map_err(|e| {
                ConfigError::invalid(
                    "delivery.gitlab.url",
                    format!("not a URL ({e}); GitLab delivery is on"),
                )
            })?;
            if gitlab.project.trim().is_empty() {
                return Err(ConfigError::invalid(
                    "delivery.gitlab.project",
                    "missing: a project id or path",
                ));
            }
            if gitlab.token.is_none() && gitlab.token_file.is_none() {
                return Err(ConfigError::invalid(
                    "delivery.gitlab.token",
                    "missing: set token_file or INFRAHUB_DELIVERY__GITLAB__TOKEN",
                ));
            }
        }
        let argocd = &self.argocd;
        if !argocd.url.is_empty() {
            let url = url::Url::parse(&argocd.url)
                .map_err(|e| ConfigError::invalid("argocd.url", format!("not a URL: {e}")))?;
            if !matches!(url.scheme(), "http" | "https") {
                return Err(ConfigError::invalid("argocd.url", "must be http:// or https://"));
            }
            if argocd.token.is_none() && argocd.token_file.is_none() {
                return Err(ConfigError::invalid(
                    "argocd.token",
                    "missing: set argocd.token_file or INFRAHUB_ARGOCD__TOKEN",
                ));
            }
            if argocd.poll_interval_ms == 0 || argocd.deadline_secs == 0 || argocd.timeout_secs == 0
            {
                return Err(ConfigError::invalid(
                    "argocd",
                    "poll_interval_ms, deadline_secs and timeout_secs must be at least 1",
                ));
            }
        }
        if self.delivery.git.branch.trim().is_empty() {
            return Err(ConfigError::invalid("delivery.git.branch", "must not be empty"));
        }
        if self.catalog.is_empty() || self.catalog.values().any(|tiers| tiers.is_empty()) {
            return Err(ConfigError::invalid(
                "catalog",
                "needs at least one SLA type with one tier",
            ));
        }
        for (sla, tiers) in &self.catalog {
            for (tier, entry) in tiers {
                crate::domain::name::Label::parse("catalog", sla)
                    .and_then(|_| crate::domain::name::Label::parse("catalog", tier))
                    .map_err(|_| {
                        ConfigError::invalid(
                            "catalog",
                            format!("{sla}.{tier}: names must be DNS-1123 labels"),
                        )
                    })?;
                if entry.cpu == 0 || entry.ram_gb == 0 {
                    return Err(ConfigError::invalid(
                        "catalog",
                        format!("{sla}.{tier}: cpu and ram_gb must be at least 1"),
                    ));
                }
            }
        }
        Ok(())
    }

    /// The GitLab token, from `delivery.gitlab.token` or `delivery.gitlab.token_file`.
    pub fn gitlab_token(&self) -> Result<Secret, ConfigError> {
        let gitlab = &self.delivery.gitlab;
        match (&gitlab.token, &gitlab.token_file) {
            (Some(token), _) => Ok(token.clone()),
            (None, Some(path)) => {
                std::fs::read_to_string(path).map(|t| Secret::new(t.trim())).map_err(|e| {
                    ConfigError::invalid(
                        "delivery.gitlab.token_file",
                        format!("cannot read {}: {e}", path.display()),
                    )
                })
            }
            (None, None) => Err(ConfigError::invalid("delivery.gitlab.token", "missing")),
        }
    }

    /// The Argo CD token, from `argocd.token` or `argocd.token_file`.
    pub fn argocd_token(&self) -> Result<Secret, ConfigError> {
        match (&self.argocd.token, &self.argocd.token_file) {
            (Some(token), _) => Ok(token.clone()),
            (None, Some(path)) => {
                std::fs::read_to_string(path).map(|t| Secret::new(t.trim())).map_err(|e| {
                    ConfigError::invalid(
                        "argocd.token_file",
                        format!("cannot read {}: {e}", path.display()),
                    )
                })
            }
            (None, None) => Err(ConfigError::invalid("argocd.token", "missing")),
        }
    }

    /// The configured overcommit factors.
    pub fn overcommit(&self) -> crate::domain::capacity::Overcommit {
        crate::domain::capacity::Overcommit {
            cpu: self.capacity.cpu_overcommit,
            ram: self.capacity.ram_overcommit,
        }
    }

    /// The NetBox API token, from `inventory.netbox.token` or `inventory.netbox.token_file`.
    pub fn netbox_token(&self) -> Result<Secret, ConfigError> {
        let netbox = &self.inventory.netbox;
        match (&netbox.token, &netbox.token_file) {
            (Some(token), _) => Ok(token.clone()),
            (None, Some(path)) => {
                std::fs::read_to_string(path).map(|t| Secret::new(t.trim())).map_err(|e| {
                    ConfigError::invalid(
                        "inventory.netbox.token_file",
                        format!("cannot read {}: {e}", path.display()),
                    )
                })
            }
            (None, None) => Err(ConfigError::invalid("inventory.netbox.token", "missing")),
        }
    }

    /// The JWT signing key, from `auth.jwt_secret` or `auth.jwt_secret_file`. Outside the demo a
    /// missing, short or publicly known key is refused.
    pub fn jwt_secret(&self, mode: Mode) -> Result<Secret, ConfigError> {
        let secret = match (&self.auth.jwt_secret, &self.auth.jwt_secret_file) {
            (Some(secret), _) => secret.clone(),
            (None, Some(path)) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    ConfigError::invalid(
                        "auth.jwt_secret_file",
                        format!("cannot read {}: {e}", path.display()),
                    )
                })?;
                Secret::new(text.trim())
            }
            (None, None) => {
                return Err(ConfigError::invalid(
                    "auth.jwt_secret",
                    "missing: set auth.jwt_secret_file or INFRAHUB_AUTH__JWT_SECRET \
                     (e.g. `openssl rand -hex 32`)",
                ));
            }
        };
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

    /// The configuration as TOML with every secret redacted, for `config check`.
    pub fn to_redacted_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot render: {e}\n"))
    }
}

/// Renders a database URL with its password replaced, for messages and `config check`.
pub fn redact_url(raw: &str) -> String {
    match url::Url::parse(raw) {
        Ok(mut url) => {
            // A placeholder the URL encoder leaves alone, swapped for the readable marker.
            if url.password().is_some() && url.set_password(Some("REDACTED")).is_ok() {
                return url.to_string().replacen(":REDACTED@", ":[redacted]@", 1);
            }
            url.to_string()
        }
        Err(_) => "[unparsable URL]".to_owned(),
    }
}

fn serialize_redacted_url<S: Serializer>(url: &str, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&redact_url(url))
}

#[cfg(test)]
// figment's Jail closures must return figment's own (large) error type.
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;
    use figment::Jail;

    const GOOD_SECRET: &str = "0123456789abcdef0123456789abcdef";

    fn load_err(mode: Mode, path: Option<&Path>) -> String {
        Config::load(mode, path).expect_err("configuration should be refused").to_string()
    }

    #[test]
    fn defaults_apply_without_file_or_env() {
        Jail::expect_with(|_| {
            let config = Config::load(Mode::Serve, None).expect("defaults load");
            assert_eq!(config.http.listen.to_string(), "127.0.0.1:8000");
            assert_eq!(config.database.max_connections, 10);
            assert_eq!(config.auth.issuer, "infrahub");
            assert_eq!(config.logging.format, LogFormat::Text);
            Ok(())
        });
    }

    #[test]
    fn file_overrides_defaults_and_env_overrides_file() {
        Jail::expect_with(|jail| {
            jail.create_file(
                DEFAULT_CONFIG_PATH.rsplit('/').next().unwrap(),
                "[http]\nlisten = \"0.0.0.0:9000\"\n[database]\nmax_connections = 3\n",
            )?;
            let path = jail.directory().join("infrahub.toml");
            let from_file = Config::load(Mode::Serve, Some(&path)).expect("file loads");
            assert_eq!(from_file.http.listen.to_string(), "0.0.0.0:9000");
            assert_eq!(from_file.database.max_connections, 3);
            assert_eq!(from_file.database.min_connections, 0, "unset keys keep defaults");

            jail.set_env("INFRAHUB_DATABASE__MAX_CONNECTIONS", "7");
            jail.set_env("INFRAHUB_LOGGING__FORMAT", "json");
            let layered = Config::load(Mode::Serve, Some(&path)).expect("env loads");
            assert_eq!(layered.database.max_connections, 7);
            assert_eq!(layered.http.listen.to_string(), "0.0.0.0:9000");
            assert_eq!(layered.logging.format, LogFormat::Json);
            Ok(())
        });
    }

    #[test]
    fn default_path_is_read_when_present() {
        Jail::expect_with(|jail| {
            std::fs::create_dir_all(jail.directory().join("config")).unwrap();
            jail.create_file(DEFAULT_CONFIG_PATH, "[auth]\ntoken_ttl_secs = 60\n")?;
            let config = Config::load(Mode::Serve, None).expect("loads");
            assert_eq!(config.auth.token_ttl_secs, 60);
            Ok(())
        });
    }

    #[test]
    fn infrahub_config_env_is_not_a_key() {
        Jail::expect_with(|jail| {
            jail.set_env("INFRAHUB_CONFIG", "/nonexistent.toml");
            Config::load(Mode::Serve, None).expect("INFRAHUB_CONFIG is ignored by figment");
            Ok(())
        });
    }

    #[test]
    fn unknown_key_in_file_is_named() {
        Jail::expect_with(|jail| {
            jail.create_file("c.toml", "[http]\nlisten = \"127.0.0.1:1\"\nlistne = 3\n")?;
            let err = load_err(Mode::Serve, Some(&jail.directory().join("c.toml")));
            assert!(err.contains("listne"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn unknown_section_is_named() {
        Jail::expect_with(|jail| {
            jail.create_file("c.toml", "[htpp]\nlisten = \"127.0.0.1:1\"\n")?;
            let err = load_err(Mode::Serve, Some(&jail.directory().join("c.toml")));
            assert!(err.contains("htpp"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn unknown_env_key_is_named() {
        Jail::expect_with(|jail| {
            jail.set_env("INFRAHUB_DATABASE__MAX_CONECTIONS", "4");
            let err = load_err(Mode::Serve, None);
            assert!(err.contains("max_conections"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn wrong_type_names_key_and_source() {
        Jail::expect_with(|jail| {
            jail.set_env("INFRAHUB_HTTP__LISTEN", "not-an-address");
            let err = load_err(Mode::Serve, None);
            assert!(err.contains("http.listen"), "{err}");
            assert!(err.contains("INFRAHUB_HTTP__LISTEN"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn bad_toml_is_reported() {
        Jail::expect_with(|jail| {
            jail.create_file("c.toml", "[http\nlisten=")?;
            let err = load_err(Mode::Serve, Some(&jail.directory().join("c.toml")));
            assert!(err.starts_with("configuration:"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn explicit_missing_file_is_an_error() {
        Jail::expect_with(|jail| {
            let err = load_err(Mode::Serve, Some(&jail.directory().join("absent.toml")));
            assert!(err.contains("absent.toml") && err.contains("does not exist"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn invalid_values_name_their_key() {
        let cases = [
            ("INFRAHUB_DATABASE__URL", "mysql://x/y", "database.url"),
            ("INFRAHUB_DATABASE__URL", "not a url", "database.url"),
            ("INFRAHUB_DATABASE__MAX_CONNECTIONS", "0", "database.max_connections"),
            ("INFRAHUB_DATABASE__MIN_CONNECTIONS", "11", "database.min_connections"),
            ("INFRAHUB_DATABASE__ACQUIRE_TIMEOUT_SECS", "0", "database.acquire_timeout_secs"),
            ("INFRAHUB_AUTH__ISSUER", "\" \"", "auth.issuer"),
            ("INFRAHUB_AUTH__TOKEN_TTL_SECS", "0", "auth.token_ttl_secs"),
            ("INFRAHUB_AUTH__LOGIN_MAX_FAILURES", "0", "auth.login_max_failures"),
            ("INFRAHUB_HTTP__BODY_LIMIT_BYTES", "10", "http.body_limit_bytes"),
            ("INFRAHUB_LOGGING__LEVEL", "info,[bad", "logging.level"),
            ("INFRAHUB_LOGGING__FORMAT", "xml", "logging.format"),
            ("INFRAHUB_WORKERS__LEASE_SECS", "1", "workers.lease_secs"),
            ("INFRAHUB_WORKERS__POLL_INTERVAL_MS", "0", "workers.poll_interval_ms"),
            ("INFRAHUB_WORKERS__KINDS__BOGUS__CONCURRENCY", "1", "unknown job kind `bogus`"),
            ("INFRAHUB_WORKERS__KINDS__NOOP__MAX_ATTEMPTS", "0", "noop.max_attempts"),
            ("INFRAHUB_WORKERS__KINDS__NOOP__CONCURENCY", "1", "concurency"),
            ("INFRAHUB_SCHEDULE__PRUNE_JOBS", "every day", "prune_jobs"),
            ("INFRAHUB_SCHEDULE__NIGHTLY", "0 0 0 * * *", "nightly"),
            ("INFRAHUB_SCHEDULE__SERVER_SYNC", "*/15 * * * *", "server_sync"),
            ("INFRAHUB_INVENTORY__SOURCE", "ldap", "inventory.source"),
            ("INFRAHUB_INVENTORY__NETBOX__PAGE_SIZE", "5000", "inventory.netbox.page_size"),
            ("INFRAHUB_CAPACITY__CPU_OVERCOMMIT", "0", "capacity.cpu_overcommit"),
            (
                "INFRAHUB_DELIVERY__NAMESPACE_TEMPLATE",
                "{department}",
                "delivery.namespace_template",
            ),
            ("INFRAHUB_DELIVERY__NAMESPACE_TEMPLATE", "Team_{name}", "delivery.namespace_template"),
            ("INFRAHUB_DELIVERY__KIND", "carrier-pigeon", "delivery.kind"),
            ("INFRAHUB_CATALOG__GOLD__HIGH__CPU", "0", "catalog"),
        ];
        for (var, value, key) in cases {
            Jail::expect_with(|jail| {
                jail.set_env(var, value);
                let err = load_err(Mode::Serve, None);
                assert!(err.contains(key), "{var}={value}: {err}");
                Ok(())
            });
        }
    }

    #[test]
    fn job_kinds_and_schedules_layer_like_everything_else() {
        Jail::expect_with(|jail| {
            jail.create_file(
                "c.toml",
                "[workers.kinds.noop]\nconcurrency = 2\n[schedule]\nprune_jobs = \"\"\n",
            )?;
            jail.set_env("INFRAHUB_WORKERS__KINDS__NOOP__MAX_ATTEMPTS", "9");
            let config = Config::load(Mode::Serve, Some(&jail.directory().join("c.toml"))).unwrap();
            let noop = &config.workers.kinds["noop"];
            assert_eq!((noop.concurrency, noop.max_attempts), (Some(2), Some(9)));
            assert_eq!(config.schedule.entries().len(), 2, "an empty expression turns it off");
            assert_eq!(Config::default().schedule.entries().len(), 3);
            Ok(())
        });
    }

    #[test]
    fn the_example_configuration_is_valid() {
        Jail::expect_with(|_| {
            let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/infrahub.example.toml");
            let config = Config::load(Mode::Serve, Some(&path)).expect("the example loads");
            assert_eq!(config.inventory.source, InventorySource::Netbox);
            assert_eq!(config.argocd.app_for("berlin"), Some("infrahub-berlin"));
            assert_eq!(config.argocd.app_for("munich"), None);
            Ok(())
        });
    }

    #[test]
    fn netbox_needs_a_url_and_a_token() {
        Jail::expect_with(|jail| {
            jail.set_env("INFRAHUB_INVENTORY__SOURCE", "netbox");
            let err = load_err(Mode::Serve, None);
            assert!(err.contains("inventory.netbox.url"), "{err}");
            jail.set_env("INFRAHUB_INVENTORY__NETBOX__URL", "https://netbox.example");
            let err = load_err(Mode::Serve, None);
            assert!(err.contains("inventory.netbox.token"), "{err}");
            jail.set_env("INFRAHUB_INVENTORY__NETBOX__TOKEN", "nbt_abc.def");
            let config = Config::load(Mode::Serve, None).unwrap();
            assert_eq!(config.netbox_token().unwrap().expose(), "nbt_abc.def");
            assert!(!config.to_redacted_toml().contains("nbt_abc.def"));
            Ok(())
        });
    }

    #[test]
    fn secret_and_secret_file_together_are_refused() {
        Jail::expect_with(|jail| {
            jail.set_env("INFRAHUB_AUTH__JWT_SECRET", GOOD_SECRET);
            jail.set_env("INFRAHUB_AUTH__JWT_SECRET_FILE", "/run/secret");
            let err = load_err(Mode::Serve, None);
            assert!(err.contains("not both"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn jwt_secret_missing_short_or_known_is_refused_outside_demo() {
        Jail::expect_with(|jail| {
            let config = Config::load(Mode::Serve, None).unwrap();
            let err = config.jwt_secret(Mode::Serve).unwrap_err().to_string();
            assert!(err.contains("auth.jwt_secret") && err.contains("missing"), "{err}");

            jail.set_env("INFRAHUB_AUTH__JWT_SECRET", "short-secret");
            let config = Config::load(Mode::Serve, None).unwrap();
            let err = config.jwt_secret(Mode::Serve).unwrap_err().to_string();
            assert!(err.contains("too short"), "{err}");

            jail.set_env("INFRAHUB_AUTH__JWT_SECRET", KNOWN_JWT_SECRETS[0]);
            let config = Config::load(Mode::Serve, None).unwrap();
            let err = config.jwt_secret(Mode::Serve).unwrap_err().to_string();
            assert!(err.contains("publicly known"), "{err}");
            assert!(config.jwt_secret(Mode::Demo).is_ok(), "the demo may use its own secret");

            jail.set_env("INFRAHUB_AUTH__JWT_SECRET", GOOD_SECRET);
            let config = Config::load(Mode::Serve, None).unwrap();
            assert_eq!(config.jwt_secret(Mode::Serve).unwrap().expose(), GOOD_SECRET);
            Ok(())
        });
    }

    #[test]
    fn jwt_secret_file_is_read_and_trimmed() {
        Jail::expect_with(|jail| {
            jail.create_file("jwt", &format!("{GOOD_SECRET}\n"))?;
            jail.set_env("INFRAHUB_AUTH__JWT_SECRET_FILE", jail.directory().join("jwt").display());
            let config = Config::load(Mode::Serve, None).unwrap();
            assert_eq!(config.jwt_secret(Mode::Serve).unwrap().expose(), GOOD_SECRET);

            jail.set_env("INFRAHUB_AUTH__JWT_SECRET_FILE", jail.directory().join("nope").display());
            let config = Config::load(Mode::Serve, None).unwrap();
            let err = config.jwt_secret(Mode::Serve).unwrap_err().to_string();
            assert!(err.contains("auth.jwt_secret_file") && err.contains("cannot read"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn demo_mode_uses_embedded_demo_config() {
        Jail::expect_with(|_| {
            let config = Config::load(Mode::Demo, None).expect("demo config loads");
            assert!(config.database.url.ends_with("/infrahub_demo"), "{}", config.database.url);
            assert!(config.jwt_secret(Mode::Demo).is_ok());
            assert!(config.jwt_secret(Mode::Serve).is_err());
            Ok(())
        });
    }

    #[test]
    fn redacted_output_hides_secrets() {
        Jail::expect_with(|jail| {
            jail.set_env("INFRAHUB_AUTH__JWT_SECRET", GOOD_SECRET);
            jail.set_env(
                "INFRAHUB_DATABASE__URL",
                "postgres://app:hunter2hunter2@db.internal/infrahub",
            );
            let config = Config::load(Mode::Serve, None).unwrap();
            let text = config.to_redacted_toml();
            assert!(!text.contains(GOOD_SECRET), "{text}");
            assert!(!text.contains("hunter2hunter2"), "{text}");
            assert!(text.contains("[redacted]"), "{text}");
            assert!(text.contains("db.internal"), "{text}");
            let debug = format!("{config:?}");
            assert!(!debug.contains(GOOD_SECRET) && !debug.contains("hunter2hunter2"), "{debug}");
            Ok(())
        });
    }
}
