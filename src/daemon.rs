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
use crate::{http, notify, store, telemetry};

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
    fn serves_api(self) -> bool {
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
    notify::status("connecting to the database");
    let pool = store::connect(&config.database).await.map_err(runtime)?;
    if mode == Mode::Demo || config.database.migrate_on_start {
        notify::status("applying database migrations");
        store::migrate_up(&pool).await.map_err(|e| runtime(format!("migrations failed: {e}")))?;
    }
    let ctx = Context::new(pool, config, mode)?;
    if mode == Mode::Demo {
        crate::jobs::wake::unit(&ctx.wake_ups, seed_demo(&ctx)).await?;
    }
    Ok(ctx)
}

/// The demo's organisation, accounts and capacity: one unit of work, whose jobs (webhook
/// deliveries of the inventory sync) wake the workers once committed.
async fn seed_demo(ctx: &Context) -> Result<(), DaemonError> {
    let report = app::demo::bootstrap(ctx).await.map_err(runtime)?;
    tracing::info!(created = report.created.len(), "demo organisation and accounts ready");
    match app::demo::seed_capacity(ctx).await {
        Ok(seed) => tracing::info!(?seed, "demo inventory synced and capacity allocated"),
        Err(err) => {
            tracing::warn!(error = %err, "demo inventory not loaded; run the demo from the repository root")
        }
    }
    Ok(())
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
    /// Starts `role`'s parts on `listener`: the HTTP intake (API roles) or only the probes and
    /// metrics (`/healthz`, `/readyz`, `/metrics`: a worker); the job engine and the cron
    /// scheduler (roles that run jobs).
    pub fn start(ctx: Context, listener: Option<TcpListener>, role: DaemonRole) -> Self {
        let (stop, stopping) = watch::channel(false);
        let mut address = None;
        let http = match listener {
            Some(listener) => {
                address = listener.local_addr().ok();
                let mut stopped = stopping.clone();
                let stopped = async move {
                    let _ = stopped.wait_for(|stop| *stop).await;
                };
                let router = match role.serves_api() {
                    true => http::router(ctx.clone()),
                    false => http::probes(ctx.clone()),
                };
                Some(tokio::spawn(http::serve(listener, router, stopped)))
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
        // Before the pool closes: the wake-ups of the jobs handed back go to the other daemons.
        self.ctx.wake_ups.flush().await;
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
    let mut shutdown = std::pin::pin!(shutdown);
    // Started means able to work: with `database.migrate_on_start = false`, wait for someone
    // to run `infrahub migrate up` (or to stop us).
    tokio::select! {
        () = schema_current(&ctx) => {}
        () = &mut shutdown => {
            ctx.pool.close().await;
            return Ok(());
        }
    }
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|e| runtime(format!("cannot listen on {listen}: {e}")))?;
    let daemon = Daemon::start(ctx.clone(), Some(listener), role);
    announce(mode, role, daemon.local_addr());
    let (watchdog_stop, watchdog_stopping) = watch::channel(false);
    let watchdog = notify::spawn_watchdog(ctx.clone(), watchdog_stopping);
    shutdown.await;
    notify::stopping();
    tracing::info!("shutting down: no new requests or jobs; finishing what is running");
    let stopped = daemon.stop().await;
    // The watchdog keeps pinging while the daemon drains.
    let _ = watchdog_stop.send(true);
    if let Some(watchdog) = watchdog {
        let _ = watchdog.await;
    }
    ctx.pool.close().await;
    tracing::info!("stopped");
    stopped
}

/// Resolves once every migration of this binary is applied (at once, normally: `prepare`
/// applied them unless `database.migrate_on_start = false`).
async fn schema_current(ctx: &Context) {
    let mut said = false;
    loop {
        match store::schema_is_current(&ctx.pool).await {
            Ok(true) => return,
            Ok(false) => {
                if !said {
                    tracing::warn!("database migrations are pending: run `infrahub migrate up`");
                    said = true;
                }
                notify::status("waiting for migrations: run `infrahub migrate up`");
            }
            Err(err) => notify::status(&format!("waiting for the database: {err}")),
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

/// Tells systemd the daemon is ready, and a person (and the end-to-end tests) where to find it.
fn announce(mode: Mode, role: DaemonRole, address: Option<SocketAddr>) {
    let serving = match role {
        DaemonRole::All => "serving the API and running jobs",
        DaemonRole::Api => "serving the API",
        DaemonRole::Worker => "running jobs",
    };
    let listening = address.map_or_else(String::new, |a| format!(" on {a}"));
    notify::ready(&format!("ready: {serving}{listening}"));
    let mut out = std::io::stdout();
    let _ = match (address, mode) {
        (Some(address), _) if role == DaemonRole::Worker => {
            tracing::info!(%address, "worker running; probes and metrics listening");
            writeln!(
                out,
                "InfraHub worker running; probes and metrics listening on http://{address}"
            )
        }
        (None, _) => {
            tracing::info!("worker running (no HTTP listener)");
            writeln!(out, "InfraHub worker running")
        }
        (Some(address), Mode::Demo) => {
            tracing::info!(%address, "listening");
            writeln!(
                out,
                "InfraHub demo listening on http://{address} (accounts: admin/admin, \
                 field-berlin/password, team-platform/password; console: http://{address}/; API docs: http://{address}/docs/)"
            )
        }
        (Some(address), Mode::Serve) => {
            tracing::info!(%address, "listening");
            writeln!(out, "InfraHub listening on http://{address}")
        }
    };
    let _ = out.flush();
}
