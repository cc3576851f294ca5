//! The `infrahub` command line: parse, load configuration, call into the library.
//! Exit codes: 0 ok, 2 usage or configuration error, 1 runtime failure.

use std::io::{BufRead, IsTerminal, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use sqlx::PgPool;
use tokio::net::TcpListener;

use crate::config::{Config, ConfigError, Mode};
use crate::context::Context;
use crate::domain::name::Username;
use crate::domain::password;
use crate::domain::role::{Role, Scope};
use crate::store::audit::{self, Actor, Change};
use crate::store::org::{self, UnitKind};
use crate::store::users::{self, NewUser, UserFilter};
use crate::store::{self, PageRequest};
use crate::{demo, http, jobs, telemetry};

#[derive(Debug, Parser)]
#[command(
    name = "infrahub",
    version,
    about = "Capacity and namespace broker for on-prem Kubernetes platforms",
    long_about = "InfraHub brokers compute capacity: servers from an inventory are assigned to \
                  fields, fields split their capacity into department quotas, and team leads \
                  get namespaces with quotas delivered through GitOps or Kubernetes.\n\n\
                  Configuration: built-in defaults < config/infrahub.toml (or --config) < \
                  INFRAHUB_* environment variables (`__` nests: INFRAHUB_DATABASE__URL)."
)]
pub struct Cli {
    /// Configuration file [default: config/infrahub.toml when it exists]
    #[arg(long, global = true, env = "INFRAHUB_CONFIG", value_name = "PATH")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the daemon: the HTTP intake on `http.listen`, the job workers and the cron
    /// scheduler (`--role` picks a part). Applies pending migrations first unless
    /// `database.migrate_on_start = false`. On SIGTERM or Ctrl-C it stops taking requests and
    /// jobs, lets running ones finish within their grace periods, then exits 0.
    Serve(ServeArgs),
    /// Run the self-contained demo: creates the PostgreSQL database `infrahub_demo` on
    /// 127.0.0.1:5432 if missing, migrates, creates the demo organisation and accounts
    /// (admin/admin, field-berlin/password, team-platform/password) and serves on
    /// 127.0.0.1:8000. Safe to run again.
    Demo(ListenArgs),
    /// Apply, revert or list schema migrations.
    Migrate {
        #[command(subcommand)]
        action: MigrateAction,
    },
    /// Manage accounts without the API (e.g. the first center admin).
    User {
        #[command(subcommand)]
        action: UserAction,
    },
    /// Inspect the configuration.
    Config {
        #[command(subcommand)]
        action: ConfigAction,
    },
    /// Measure performance on the local PostgreSQL (in a scratch database).
    Bench {
        #[command(subcommand)]
        action: BenchAction,
    },
}

#[derive(Debug, Subcommand)]
enum BenchAction {
    /// The job engine against a minimal hand-written SKIP LOCKED queue: enqueue rate (single
    /// and batched), drain throughput of no-op jobs per concurrency, pickup latency of jobs
    /// submitted one by one into an idle queue. Uses the server of `database.url`; drops and
    /// re-creates the scratch database.
    Queue {
        /// No-op jobs drained per concurrency level
        #[arg(long, default_value_t = 20_000)]
        drain_jobs: usize,
        /// Concurrency levels, comma-separated
        #[arg(long, value_delimiter = ',', default_values_t = [1u32, 4, 16])]
        concurrency: Vec<u32>,
        /// Jobs submitted one by one for the pickup latency
        #[arg(long, default_value_t = 1_000)]
        latency_jobs: usize,
        /// Milliseconds between two of those submissions
        #[arg(long, default_value_t = 5)]
        latency_gap_ms: u64,
        /// Jobs enqueued one transaction each
        #[arg(long, default_value_t = 2_000)]
        single_enqueues: usize,
        /// Scratch database, dropped and re-created
        #[arg(long, default_value = "infrahub_bench")]
        database: String,
    },
}

#[derive(Debug, Args)]
struct ListenArgs {
    /// Address to listen on, overriding `http.listen` (port 0 picks a free port)
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,
}

#[derive(Debug, Args)]
struct ServeArgs {
    #[command(flatten)]
    listen: ListenArgs,
    /// What this daemon runs: `api` (HTTP intake only), `worker` (jobs and cron only) or `all`
    #[arg(long, value_enum, default_value_t = ServeRole::All)]
    role: ServeRole,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum ServeRole {
    All,
    Api,
    Worker,
}

#[derive(Debug, Subcommand)]
enum MigrateAction {
    /// Apply every pending migration.
    Up,
    /// Revert the newest applied migrations.
    Down {
        /// How many migrations to revert
        #[arg(long, default_value_t = 1)]
        steps: usize,
    },
    /// List migrations and whether each is applied.
    Status,
}

#[derive(Debug, Subcommand)]
enum UserAction {
    /// Create an account. The password is prompted for, or read from stdin.
    Add {
        username: String,
        /// center_admin, field_admin (needs --field) or team_lead (needs --department)
        #[arg(long, value_parser = ["center_admin", "field_admin", "team_lead"])]
        role: String,
        /// Field name, for a field_admin
        #[arg(long)]
        field: Option<String>,
        /// Department name, for a team_lead
        #[arg(long)]
        department: Option<String>,
        /// Read the password from the first line of stdin instead of prompting
        #[arg(long)]
        password_stdin: bool,
    },
    /// Set an account's password; its existing tokens stop working.
    Passwd {
        username: String,
        /// Read the password from the first line of stdin instead of prompting
        #[arg(long)]
        password_stdin: bool,
    },
    /// List accounts.
    List,
}

#[derive(Debug, Subcommand)]
enum ConfigAction {
    /// Load and validate the configuration, then print it with secrets redacted.
    Check {
        /// Check the demo's configuration instead of the daemon's
        #[arg(long)]
        demo: bool,
    },
}

/// Why a command failed, deciding its exit code.
#[derive(Debug)]
enum Failure {
    /// Bad usage or configuration: exit 2.
    Usage(String),
    /// The command could not do its work: exit 1.
    Runtime(String),
}

impl From<ConfigError> for Failure {
    fn from(err: ConfigError) -> Self {
        Failure::Usage(err.to_string())
    }
}

fn runtime(err: impl std::fmt::Display) -> Failure {
    Failure::Runtime(err.to_string())
}

/// Entry point used by `main`.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => {
            let _ = err.print();
            return if err.use_stderr() { ExitCode::from(2) } else { ExitCode::SUCCESS };
        }
    };
    crate::install_crypto_provider();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("infrahub: cannot start the async runtime: {err}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Usage(message)) => {
            eprintln!("infrahub: {message}");
            ExitCode::from(2)
        }
        Err(Failure::Runtime(message)) => {
            eprintln!("infrahub: {message}");
            ExitCode::from(1)
        }
    }
}

async fn run(cli: Cli) -> Result<(), Failure> {
    let path = cli.config.as_deref();
    match cli.command {
        Command::Serve(args) => {
            serve(Config::load(Mode::Serve, path)?, Mode::Serve, args.listen, args.role).await
        }
        Command::Demo(args) => {
            serve(Config::load(Mode::Demo, path)?, Mode::Demo, args, ServeRole::All).await
        }
        Command::Migrate { action } => migrate(Config::load(Mode::Serve, path)?, action).await,
        Command::User { action } => user(Config::load(Mode::Serve, path)?, action).await,
        Command::Bench { action } => bench(Config::load(Mode::Serve, path)?, action).await,
        Command::Config { action: ConfigAction::Check { demo } } => {
            let mode = if demo { Mode::Demo } else { Mode::Serve };
            let config = Config::load(mode, path)?;
            config.jwt_secret(mode)?;
            print!("{}", config.to_redacted_toml());
            eprintln!("infrahub: configuration is valid");
            Ok(())
        }
    }
}

async fn serve(
    mut config: Config,
    mode: Mode,
    args: ListenArgs,
    role: ServeRole,
) -> Result<(), Failure> {
    let secret = config.jwt_secret(mode)?;
    if let Some(listen) = args.listen {
        config.http.listen = listen;
    }
    telemetry::init_logging(&config.logging);
    if mode == Mode::Demo && demo::ensure_database(&config.database.url).await.map_err(runtime)? {
        tracing::info!("created the demo database");
    }
    let pool = store::connect(&config.database).await.map_err(runtime)?;
    if mode == Mode::Demo || config.database.migrate_on_start {
        store::migrate_up(&pool).await.map_err(|e| runtime(format!("migrations failed: {e}")))?;
    } else if !store::schema_is_current(&pool).await.map_err(runtime)? {
        tracing::warn!("database migrations are pending: run `infrahub migrate up`");
    }
    if mode == Mode::Demo {
        let report = demo::bootstrap(&pool).await.map_err(runtime)?;
        tracing::info!(created = report.created.len(), "demo organisation and accounts ready");
        match demo::seed_capacity(&pool, &config).await {
            Ok(seed) => tracing::info!(?seed, "demo inventory synced and capacity allocated"),
            Err(err) => {
                tracing::warn!(error = %err, "demo inventory not loaded; run the demo from the repository root")
            }
        }
    }
    let listener = match role {
        ServeRole::Worker => None,
        _ => Some(
            TcpListener::bind(config.http.listen)
                .await
                .map_err(|e| runtime(format!("cannot listen on {}: {e}", config.http.listen)))?,
        ),
    };
    let http_grace = Duration::from_secs(config.http.shutdown_grace_secs);
    let job_grace = Duration::from_secs(config.workers.shutdown_grace_secs);
    let ctx = Context::new(pool.clone(), config, mode, &secret).map_err(runtime)?;
    let background = match role {
        ServeRole::Api => None,
        _ => Some(Background::start(&ctx)),
    };
    let (stop, stopping) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("shutting down: no new requests or jobs; finishing what is running");
        let _ = stop.send(true);
    });
    let http = async {
        match listener {
            Some(listener) => {
                announce(mode, listener.local_addr().map_err(runtime)?);
                serve_http(listener, ctx, stopping.clone(), http_grace).await
            }
            None => {
                announce_worker();
                let _ = stopping.clone().wait_for(|stop| *stop).await;
                Ok(())
            }
        }
    };
    let workers = async {
        if let Some(background) = background {
            let _ = stopping.clone().wait_for(|stop| *stop).await;
            background.stop(job_grace).await;
        }
    };
    let (served, ()) = tokio::join!(http, workers);
    pool.close().await;
    tracing::info!("stopped");
    served
}

/// The job engine and the cron scheduler of a daemon that runs workers.
struct Background {
    engine: jobs::engine::EngineHandle,
    stop_scheduler: tokio::sync::watch::Sender<bool>,
}

impl Background {
    fn start(ctx: &Context) -> Self {
        let engine = jobs::engine::start(ctx.clone());
        let (stop_scheduler, stopped) = tokio::sync::watch::channel(false);
        jobs::scheduler::spawn(ctx.clone(), jobs::scheduler::configured(ctx), stopped);
        Self { engine, stop_scheduler }
    }

    async fn stop(self, grace: Duration) {
        let _ = self.stop_scheduler.send(true);
        self.engine.shutdown(grace).await;
    }
}

fn announce_worker() {
    tracing::info!("worker running (no HTTP intake)");
    let mut out = std::io::stdout();
    let _ = writeln!(out, "InfraHub worker running");
    let _ = out.flush();
}

/// Tells a person (and the end-to-end test) where to find the server.
fn announce(mode: Mode, address: SocketAddr) {
    tracing::info!(%address, "listening");
    let mut out = std::io::stdout();
    let _ = match mode {
        Mode::Demo => writeln!(
            out,
            "InfraHub demo listening on http://{address} (accounts: admin/admin, \
             field-berlin/password, team-platform/password; docs: http://{address}/api/v1/docs)"
        ),
        Mode::Serve => writeln!(out, "InfraHub listening on http://{address}"),
    };
    let _ = out.flush();
}

/// Serves until `stopping` turns true, then gives in-flight requests `grace` to finish.
async fn serve_http(
    listener: TcpListener,
    ctx: Context,
    stopping: tokio::sync::watch::Receiver<bool>,
    grace: Duration,
) -> Result<(), Failure> {
    let mut stopped = stopping.clone();
    let server = http::serve(listener, ctx, async move {
        let _ = stopped.wait_for(|stop| *stop).await;
    });
    tokio::pin!(server);
    let mut stopping = stopping;
    tokio::select! {
        result = &mut server => return result.map_err(runtime),
        _ = stopping.wait_for(|stop| *stop) => {}
    }
    match tokio::time::timeout(grace, server).await {
        Ok(result) => result.map_err(runtime),
        Err(_) => {
            tracing::warn!("grace period over; exiting with requests still in flight");
            Ok(())
        }
    }
}

/// Resolves on SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}

async fn bench(config: Config, action: BenchAction) -> Result<(), Failure> {
    telemetry::init_logging(&config.logging);
    let BenchAction::Queue {
        drain_jobs,
        concurrency,
        latency_jobs,
        latency_gap_ms,
        single_enqueues,
        database,
    } = action;
    if database == config.database.url.rsplit('/').next().unwrap_or_default() {
        return Err(Failure::Usage(format!(
            "refusing to use the configured database {database:?} as scratch"
        )));
    }
    let plan = crate::bench::QueueBench {
        drain_jobs,
        concurrency,
        latency_jobs,
        latency_gap: Duration::from_millis(latency_gap_ms),
        single_enqueues,
        database,
    };
    let report = crate::bench::run_queue(&config, &plan)
        .await
        .map_err(|e| runtime(format!("bench failed: {e:#}")))?;
    println!("{}", report.to_markdown());
    Ok(())
}

async fn connect(config: &Config) -> Result<PgPool, Failure> {
    telemetry::init_logging(&config.logging);
    store::connect(&config.database).await.map_err(runtime)
}

async fn migrate(config: Config, action: MigrateAction) -> Result<(), Failure> {
    let pool = connect(&config).await?;
    match action {
        MigrateAction::Up => {
            store::migrate_up(&pool).await.map_err(runtime)?;
            println!("database is up to date");
        }
        MigrateAction::Down { steps } => {
            let reverted = store::migrate_down(&pool, steps).await.map_err(runtime)?;
            if reverted.is_empty() {
                println!("nothing to revert");
            }
            for version in reverted {
                println!("reverted {version}");
            }
        }
        MigrateAction::Status => {
            for m in store::migration_status(&pool).await.map_err(runtime)? {
                let state = match (m.applied, m.checksum_mismatch) {
                    (true, false) => "applied",
                    (true, true) => "applied, but the file changed since",
                    (false, _) => "pending",
                };
                println!("{:<16} {:<28} {state}", m.version, m.description);
            }
        }
    }
    Ok(())
}

async fn user(config: Config, action: UserAction) -> Result<(), Failure> {
    match action {
        UserAction::Add { username, role, field, department, password_stdin } => {
            let role: Role = role
                .parse()
                .map_err(|e: crate::domain::ValidationError| Failure::Usage(e.to_string()))?;
            let username = Username::parse(&username).map_err(|e| Failure::Usage(e.to_string()))?;
            let password = read_password(password_stdin)?;
            password::check_policy(&password).map_err(|e| Failure::Usage(e.to_string()))?;
            let pool = connect(&config).await?;
            add_user(&pool, &username, role, field.as_deref(), department.as_deref(), password)
                .await
        }
        UserAction::Passwd { username, password_stdin } => {
            let password = read_password(password_stdin)?;
            password::check_policy(&password).map_err(|e| Failure::Usage(e.to_string()))?;
            let pool = connect(&config).await?;
            set_password(&pool, &username, password).await
        }
        UserAction::List => list_users(&connect(&config).await?).await,
    }
}

async fn add_user(
    pool: &PgPool,
    username: &Username,
    role: Role,
    field: Option<&str>,
    department: Option<&str>,
    password: String,
) -> Result<(), Failure> {
    let mut tx = pool.begin().await.map_err(runtime)?;
    let field_id = match field {
        Some(name) => Some(
            org::find_unit_by_name(&mut tx, UnitKind::Field, name)
                .await
                .map_err(runtime)?
                .ok_or_else(|| Failure::Usage(format!("no field named {name:?}")))?
                .id,
        ),
        None => None,
    };
    let department_id = match department {
        Some(name) => Some(
            org::find_department_by_name(&mut tx, name)
                .await
                .map_err(runtime)?
                .ok_or_else(|| Failure::Usage(format!("no department named {name:?}")))?
                .id,
        ),
        None => None,
    };
    let scope = Scope::for_role(role, field_id, department_id).map_err(|e| {
        Failure::Usage(
            e.to_string().replace("field_id", "--field").replace("department_id", "--department"),
        )
    })?;
    let hash = password::hash_blocking(password).await.map_err(runtime)?;
    let new =
        NewUser { username: username.as_str(), password_hash: &hash, role, scope, is_demo: false };
    let user = users::insert(&mut tx, &new).await.map_err(|e| match e {
        store::StoreError::Duplicate { .. } => {
            Failure::Usage(format!("user {:?} already exists", username.as_str()))
        }
        other => runtime(other),
    })?;
    let change = Change::create("user", user.id, &user);
    audit::record(&mut tx, &Actor::system("cli"), change).await.map_err(runtime)?;
    tx.commit().await.map_err(runtime)?;
    println!("created {} ({}) {}", user.username, user.role, user.id);
    Ok(())
}

async fn set_password(pool: &PgPool, username: &str, password: String) -> Result<(), Failure> {
    let hash = password::hash_blocking(password).await.map_err(runtime)?;
    let mut tx = pool.begin().await.map_err(runtime)?;
    let account = users::find_credentials(&mut tx, username)
        .await
        .map_err(runtime)?
        .ok_or_else(|| Failure::Usage(format!("no user named {username:?}")))?;
    let user = users::set_password(&mut tx, account.user.id, &hash).await.map_err(runtime)?;
    let change = Change::new("user", "password", user.id);
    audit::record(&mut tx, &Actor::system("cli"), change).await.map_err(runtime)?;
    tx.commit().await.map_err(runtime)?;
    println!("password of {} changed", user.username);
    Ok(())
}

async fn list_users(pool: &PgPool) -> Result<(), Failure> {
    let mut conn = pool.acquire().await.map_err(runtime)?;
    let mut page = PageRequest { after: None, limit: 500 };
    println!("{:<24} {:<13} {:<24} flags", "username", "role", "scope");
    loop {
        let batch = users::list(&mut conn, &UserFilter::default(), page).await.map_err(runtime)?;
        for user in &batch.items {
            let scope = match user.scope() {
                Scope::Center => "-".to_owned(),
                Scope::Field(id) => {
                    let field =
                        org::get_unit(&mut conn, UnitKind::Field, id).await.map_err(runtime)?;
                    format!("field {}", field.name)
                }
                Scope::Department(id) => {
                    let dept = org::get_department(&mut conn, id).await.map_err(runtime)?;
                    format!("department {}", dept.name)
                }
            };
            let mut flags = Vec::new();
            if user.disabled {
                flags.push("disabled");
            }
            if user.is_demo {
                flags.push("demo");
            }
            println!("{:<24} {:<13} {:<24} {}", user.username, user.role, scope, flags.join(","));
        }
        match batch.next_cursor {
            Some(cursor) => page.after = Some(cursor),
            None => return Ok(()),
        }
    }
}

/// Reads a password from stdin's first line, or prompts twice on a terminal.
fn read_password(from_stdin: bool) -> Result<String, Failure> {
    if from_stdin {
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line).map_err(runtime)?;
        return Ok(line.trim_end_matches(['\r', '\n']).to_owned());
    }
    if !std::io::stdin().is_terminal() {
        return Err(Failure::Usage(
            "no terminal to prompt for the password: pipe it in with --password-stdin".to_owned(),
        ));
    }
    let first = rpassword::prompt_password("Password: ").map_err(runtime)?;
    let second = rpassword::prompt_password("Repeat password: ").map_err(runtime)?;
    if first != second {
        return Err(Failure::Usage("the passwords differ".to_owned()));
    }
    Ok(first)
}
