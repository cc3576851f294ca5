//! The `infrahub` command line: parse, load configuration, call into the library.
//! Exit codes: 0 ok, 2 usage or configuration error, 1 runtime failure.

use std::io::{BufRead, IsTerminal};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, CommandFactory, Parser, Subcommand};

use crate::api_client::commands::{
    Common, JobsAction, Output, ProjectsAction, QuotaAction, Request, ServersAction, WebhooksAction,
};
use crate::api_client::{self, ClientError};
use crate::app::users::{NewAccount, UnitRef};
use crate::app::{self, Actor, AppError, ErrorKind};
use crate::config::{Config, ConfigError, Mode};
use crate::context::{Context, ContextError};
use crate::daemon::{self, DaemonError, DaemonRole};
use crate::domain::role::Role;
use crate::{store, telemetry};

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
    /// Client: log in to an InfraHub daemon and save the token for the other client commands
    /// (in $XDG_CONFIG_HOME/infrahub/session.json, mode 0600).
    Login {
        /// User name [default: the last one logged in, or asked for]
        #[arg(long, short = 'u')]
        username: Option<String>,
        /// Read the password from the first line of stdin instead of prompting
        #[arg(long)]
        password_stdin: bool,
        #[command(flatten)]
        common: Common,
    },
    /// Client: forget the saved session.
    Logout,
    /// Client: list, show, create, resize, delete and retry projects.
    Projects {
        #[command(subcommand)]
        action: ProjectsAction,
        #[command(flatten)]
        common: Common,
    },
    /// Client: list and show jobs, or wait for one to end.
    Jobs {
        #[command(subcommand)]
        action: JobsAction,
        #[command(flatten)]
        common: Common,
    },
    /// Client: list servers, or sync the inventory.
    Servers {
        #[command(subcommand)]
        action: ServersAction,
        #[command(flatten)]
        common: Common,
    },
    /// Client: a field's capacity per site (capacity, allocated, free, deficit).
    Capacity {
        /// Field name or id
        field: String,
        /// Show instead what losing this server (name or id; repeat for several) would do:
        /// capacity after, and the departments that would fall into deficit and by how much
        #[arg(long = "without", value_name = "SERVER")]
        without: Vec<String>,
        #[command(flatten)]
        common: Common,
    },
    /// Client: show or set a department's quota per site; ask for more, and decide requests.
    Quota {
        #[command(subcommand)]
        action: QuotaAction,
        #[command(flatten)]
        common: Common,
    },
    /// Client: webhooks that get notifications (center admins).
    Webhooks {
        #[command(subcommand)]
        action: WebhooksAction,
        #[command(flatten)]
        common: Common,
    },
    /// Print a shell completion script (e.g. `infrahub completions bash >
    /// /etc/bash_completion.d/infrahub`).
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff), or write one page per command into --dir.
    #[command(hide = true)]
    Manpage {
        /// Write infrahub.1 and infrahub-<command>.1 here instead of printing infrahub.1
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
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
    #[arg(long, value_enum, default_value_t = DaemonRole::All)]
    role: DaemonRole,
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
    /// A client command's own exit code (see `api_client::ClientError`).
    Client(ClientError),
}

impl From<ClientError> for Failure {
    fn from(err: ClientError) -> Self {
        Failure::Client(err)
    }
}

impl From<ConfigError> for Failure {
    fn from(err: ConfigError) -> Self {
        Failure::Usage(err.to_string())
    }
}

impl From<ContextError> for Failure {
    fn from(err: ContextError) -> Self {
        Failure::Usage(err.to_string())
    }
}

impl From<DaemonError> for Failure {
    fn from(err: DaemonError) -> Self {
        match err {
            DaemonError::Config(err) => err.into(),
            DaemonError::Runtime(message) => Failure::Runtime(message),
        }
    }
}

/// A refusal (bad input, a conflict, nothing found) is the operator's to fix: exit 2, worded
/// with the command's own flags. Anything else is a runtime failure: exit 1.
impl From<AppError> for Failure {
    fn from(err: AppError) -> Self {
        match err.kind {
            ErrorKind::Unavailable | ErrorKind::Internal => Failure::Runtime(err.message),
            _ => Failure::Usage(
                err.message.replace("field_id", "--field").replace("department_id", "--department"),
            ),
        }
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
        Err(Failure::Client(err)) => {
            eprintln!("infrahub: {}", err.message());
            ExitCode::from(err.exit_code())
        }
    }
}

async fn run(cli: Cli) -> Result<(), Failure> {
    let path = cli.config.as_deref();
    match cli.command {
        Command::Serve(args) => {
            let config = Config::load(Mode::Serve, path)?;
            serve(config, Mode::Serve, args.listen.listen, args.role).await
        }
        Command::Demo(args) => {
            let config = Config::load(Mode::Demo, path)?;
            serve(config, Mode::Demo, args.listen, DaemonRole::All).await
        }
        Command::Migrate { action } => migrate(Config::load(Mode::Serve, path)?, action).await,
        Command::User { action } => user(Config::load(Mode::Serve, path)?, action).await,
        Command::Config { action: ConfigAction::Check { demo } } => {
            let mode = if demo { Mode::Demo } else { Mode::Serve };
            let config = Config::load(mode, path)?;
            Context::check(&config, mode)?;
            print!("{}", config.to_redacted_toml());
            eprintln!("infrahub: configuration is valid");
            Ok(())
        }
        Command::Login { username, password_stdin, common } => {
            Ok(api_client::commands::run(common, Request::Login { username, password_stdin })
                .await?)
        }
        Command::Logout => {
            let common = Common { url: None, output: Output::Table, idempotency_key: None };
            Ok(api_client::commands::run(common, Request::Logout).await?)
        }
        Command::Projects { action, common } => {
            Ok(api_client::commands::run(common, Request::Projects(action)).await?)
        }
        Command::Jobs { action, common } => {
            Ok(api_client::commands::run(common, Request::Jobs(action)).await?)
        }
        Command::Servers { action, common } => {
            Ok(api_client::commands::run(common, Request::Servers(action)).await?)
        }
        Command::Capacity { field, without, common } => {
            Ok(api_client::commands::run(common, Request::Capacity { field, without }).await?)
        }
        Command::Quota { action, common } => {
            Ok(api_client::commands::run(common, Request::Quota(action)).await?)
        }
        Command::Webhooks { action, common } => {
            Ok(api_client::commands::run(common, Request::Webhooks(action)).await?)
        }
        Command::Completions { shell } => {
            let mut command = Cli::command();
            clap_complete::generate(shell, &mut command, "infrahub", &mut std::io::stdout());
            Ok(())
        }
        Command::Manpage { dir: None } => {
            let page = clap_mangen::Man::new(Cli::command());
            page.render(&mut std::io::stdout()).map_err(runtime)
        }
        Command::Manpage { dir: Some(dir) } => {
            std::fs::create_dir_all(&dir).map_err(runtime)?;
            clap_mangen::generate_to(Cli::command(), &dir).map_err(runtime)
        }
    }
}

async fn serve(
    config: Config,
    mode: Mode,
    listen: Option<SocketAddr>,
    role: DaemonRole,
) -> Result<(), Failure> {
    Ok(daemon::run(config, mode, listen, role, shutdown_signal()).await?)
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

async fn connect(config: &Config) -> Result<sqlx::PgPool, Failure> {
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
    let actor = Actor::system("cli");
    match action {
        UserAction::Add { username, role, field, department, password_stdin } => {
            let role: Role = role
                .parse()
                .map_err(|e: crate::domain::ValidationError| Failure::Usage(e.to_string()))?;
            let mut account = NewAccount {
                username,
                password: String::new(),
                role,
                field: field.map(UnitRef::Name),
                department: department.map(UnitRef::Name),
                demo: false,
            };
            // Refuse a bad name or a missing --field before asking for the password.
            app::users::check_name_and_scope(&account)?;
            account.password = read_password(password_stdin)?;
            app::users::check(&account)?;
            let ctx = admin_context(config).await?;
            let user = app::users::add(&ctx, &actor, account).await?;
            println!("created {} ({}) {}", user.username, user.role, user.id);
        }
        UserAction::Passwd { username, password_stdin } => {
            let password = read_password(password_stdin)?;
            let ctx = admin_context(config).await?;
            let user = app::users::set_password(&ctx, &actor, &username, password).await?;
            println!("password of {} changed", user.username);
        }
        UserAction::List => {
            let ctx = admin_context(config).await?;
            println!("{:<24} {:<13} {:<24} flags", "username", "role", "scope");
            for account in app::users::directory(&ctx).await? {
                let user = &account.user;
                let scope = match (&account.field, &account.department) {
                    (Some(field), _) => format!("field {field}"),
                    (None, Some(dept)) => format!("department {dept}"),
                    (None, None) => "-".to_owned(),
                };
                let mut flags = Vec::new();
                if user.disabled {
                    flags.push("disabled");
                }
                if user.is_demo {
                    flags.push("demo");
                }
                println!(
                    "{:<24} {:<13} {:<24} {}",
                    user.username,
                    user.role,
                    scope,
                    flags.join(",")
                );
            }
        }
    }
    Ok(())
}

/// The context of commands that work on the database directly (they never sign tokens).
async fn admin_context(config: Config) -> Result<Context, Failure> {
    let pool = connect(&config).await?;
    Ok(Context::for_admin(pool, config)?)
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
