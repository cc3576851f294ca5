//! The daemon, assembled in one place: [`prepare`] builds everything from configuration (the
//! database, migrations, the demo's data, the [`Context`]); [`Daemon::start`] runs a part of it
//! (HTTP intake, job workers and cron) on a listener it is given; [`Daemon::stop`] drains it.
//! `infrahub serve` and `infrahub demo` go through [`run`]; the test harness starts the same
//! daemon on port 0.

use std::future::Future;
use std::io::Write;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::app;
use crate::config::{Config, Mode};
use crate::context::{Context, ContextError};
use crate::jobs::{engine, scheduler};
use crate::{http, store, telemetry};

/// What one daemon runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DaemonRole {
    /// HTTP intake, job workers and cron.
    All,
    /// HTTP intake only.
    Api,
    /// Job workers and cron only.
    Worker,
}

impl DaemonRole {
    fn serves_http(self) -> bool {
        self != DaemonRole::Worker
    }

    fn runs_jobs(self) -> bool {
        self != DaemonRole::Api
    }
}

/// Why the daemon could not start or run.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// Bad configuration: fix it and start again.
    #[error(transparent)]
    Config(#[from] ContextError),
    /// Something in the way at run time (the database, the port).
    #[error("{0}")]
    Runtime(String),
}

fn runtime(err: impl std::fmt::Display) -> DaemonError {
    DaemonError::Runtime(err.to_string())
}

/// Builds the context from `config`: for the demo, creates its database when missing;
/// connects; applies migrations (unless turned off); for the demo, creates its organisation,
/// accounts and capacity.
pub async fn prepare(config: Config, mode: Mode) -> Result<Context, DaemonError> {
    // Configuration errors first: they need no database to be found.
    Context::check(&config, mode)?;
    if mode == Mode::Demo && store::ensure_database(&config.database.url).await.map_err(runtime)? {
        tracing::info!("created the demo database");
    }
    let pool = store::connect(&config.database).await.map_err(runtime)?;
    if mode == Mode::Demo || config.database.migrate_on_start {
        store::migrate_up(&pool).await.map_err(|e| runtime(format!("migrations failed: {e}")))?;
    } else if !store::schema_is_current(&pool).await.map_err(runtime)? {
        tracing::warn!("database migrations are pending: run `infrahub migrate up`");
    }
    let ctx = Context::new(pool, config, mode)?;
    if mode == Mode::Demo {
        let report = app::demo::bootstrap(&ctx).await.map_err(runtime)?;
        tracing::info!(created = report.created.len(), "demo organisation and accounts ready");
        match app::demo::seed_capacity(&ctx).await {
            Ok(seed) => tracing::info!(?seed, "demo inventory synced and capacity allocated"),
            Err(err) => {
                tracing::warn!(error = %err, "demo inventory not loaded; run the demo from the repository root")
            }
        }
    }
    Ok(ctx)
}

/// A running daemon.
pub struct Daemon {
    ctx: Context,
    address: Option<SocketAddr>,
    stop: watch::Sender<bool>,
    http: Option<JoinHandle<std::io::Result<()>>>,
    engine: Option<engine::EngineHandle>,
    scheduler: Vec<JoinHandle<()>>,
}

impl Daemon {
    /// Starts `role`'s parts: the HTTP intake on `listener` (when the role serves HTTP), the
    /// job engine and the cron scheduler (when it runs jobs).
    pub fn start(ctx: Context, listener: Option<TcpListener>, role: DaemonRole) -> Self {
        let (stop, stopping) = watch::channel(false);
        let mut address = None;
        let http = match listener.filter(|_| role.serves_http()) {
            Some(listener) => {
                address = listener.local_addr().ok();
                let mut stopped = stopping.clone();
                Some(tokio::spawn(http::serve(listener, ctx.clone(), async move {
                    let _ = stopped.wait_for(|stop| *stop).await;
                })))
            }
            None => None,
        };
        let (engine, scheduler) = if role.runs_jobs() {
            let entries = scheduler::configured(&ctx.config.schedule);
            (Some(engine::start(ctx.clone())), scheduler::spawn(ctx.clone(), entries, stopping))
        } else {
            (None, Vec::new())
        };
        Self { ctx, address, stop, http, engine, scheduler }
    }

    /// Where the HTTP intake listens, if this daemon serves HTTP.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.address
    }

    pub fn context(&self) -> &Context {
        &self.ctx
    }

    /// Stops taking requests and jobs; gives in-flight requests `http.shutdown_grace_secs`
    /// and running jobs `workers.shutdown_grace_secs` to finish, and hands back the jobs that
    /// did not.
    pub async fn stop(self) -> Result<(), DaemonError> {
        let _ = self.stop.send(true);
        let http_grace = Duration::from_secs(self.ctx.config.http.shutdown_grace_secs);
        let job_grace = Duration::from_secs(self.ctx.config.workers.shutdown_grace_secs);
        let served = async {
            let Some(mut task) = self.http else { return Ok(()) };
            match tokio::time::timeout(http_grace, &mut task).await {
                Ok(Ok(result)) => result.map_err(runtime),
                Ok(Err(join)) => Err(runtime(join)),
                Err(_) => {
                    tracing::warn!("grace period over; dropping the requests still in flight");
                    task.abort();
                    Ok(())
                }
            }
        };
        let jobs = async {
            for task in self.scheduler {
                let _ = task.await;
            }
            if let Some(engine) = self.engine {
                engine.shutdown(job_grace).await;
            }
        };
        let (served, ()) = tokio::join!(served, jobs);
        served
    }
}

/// `infrahub serve` and `infrahub demo`: prepares, binds `listen` (or `http.listen`), starts
/// `role`, says where it listens, and runs until `shutdown` resolves.
pub async fn run(
    mut config: Config,
    mode: Mode,
    listen: Option<SocketAddr>,
    role: DaemonRole,
    shutdown: impl Future<Output = ()>,
) -> Result<(), DaemonError> {
    if let Some(listen) = listen {
        config.http.listen = listen;
    }
    telemetry::init_logging(&config.logging);
    let listen = config.http.listen;
    let ctx = prepare(config, mode).await?;
    let listener = match role.serves_http() {
        true => Some(
            TcpListener::bind(listen)
                .await
                .map_err(|e| runtime(format!("cannot listen on {listen}: {e}")))?,
        ),
        false => None,
    };
    let daemon = Daemon::start(ctx.clone(), listener, role);
    announce(mode, daemon.local_addr());
    shutdown.await;
    tracing::info!("shutting down: no new requests or jobs; finishing what is running");
    let stopped = daemon.stop().await;
    ctx.pool.close().await;
    tracing::info!("stopped");
    stopped
}

/// Tells a person (and the end-to-end tests) where to find the server.
fn announce(mode: Mode, address: Option<SocketAddr>) {
    let mut out = std::io::stdout();
    let _ = match (address, mode) {
        (None, _) => {
            tracing::info!("worker running (no HTTP intake)");
            writeln!(out, "InfraHub worker running")
        }
        (Some(address), Mode::Demo) => {
            tracing::info!(%address, "listening");
            writeln!(
                out,
                "InfraHub demo listening on http://{address} (accounts: admin/admin, \
                 field-berlin/password, team-platform/password; API docs: http://{address}/docs/)"
            )
        }
        (Some(address), Mode::Serve) => {
            tracing::info!(%address, "listening");
            writeln!(out, "InfraHub listening on http://{address}")
        }
    };
    let _ = out.flush();
}
