//! The intake benchmark: the real daemon (`infrahub demo`, release build, its own process, job
//! workers running) under wrk, side by side with a minimal axum endpoint that INSERTs one row
//! into the same PostgreSQL server with as many pooled connections: the ceiling of "take a
//! request, write it down, answer" on this machine. Also the daemon's resident memory, idle and
//! after the load.
//!
//! `cargo bench --bench intake -- [--seconds 8] [--connections 16,64]` (wrk from Debian's
//! package `wrk`; the PostgreSQL server of DATABASE_URL; scratch databases
//! `infrahub_bench_intake` and `infrahub_bench_baseline`, dropped and created afresh).
//! Prints a Markdown table and one `RESULT system=... test=intake|memory|e2e|delivery ...`
//! line per number; with each load's requests per second and latency, the CPU time per
//! request of PostgreSQL (all its processes) and of the serving process, from `/proc`. After
//! the load, the rate at which the workers deliver its backlog of
//! projects (per second and per commit). Last, a second daemon delivers the same end-to-end
//! projects through an Argo CD double (`tests/api/argocd_fake.rs`) that reports each
//! namespace synced and healthy at the pushed commit on the first poll.

// Shared with the tests; the bench uses only part of them.
#[allow(dead_code)]
#[path = "../tests/api/argocd_fake.rs"]
mod argocd_fake;
#[allow(dead_code)]
#[path = "../tests/api/faults.rs"]
mod faults;
#[path = "support/load.rs"]
mod load;
#[path = "support/stats.rs"]
mod stats;
#[path = "support/mod.rs"]
mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context as _, bail};
use axum::Json;
use axum::extract::State;
use axum::routing::post;
use clap::Parser;
use serde_json::{Value, json};
use sqlx::PgPool;

use load::{Load, Reaped, free_addr, login, which_wrk, wrk};
use sqlx::postgres::PgPoolOptions;

#[derive(Debug, Parser)]
struct Args {
    /// Seconds of load per measurement
    #[arg(long, default_value_t = 8)]
    seconds: u64,
    /// Connection counts, comma-separated
    #[arg(long, value_delimiter = ',', default_values_t = [16u32, 64])]
    connections: Vec<u32>,
    /// Projects created one after another, each watched until `active`, before the load
    #[arg(long, default_value_t = 200)]
    e2e_projects: usize,
    /// Passed by `cargo bench`; ignored
    #[arg(long, hide = true)]
    bench: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    infrahub::install_crypto_provider();
    let args = Args::parse();
    which_wrk()?;
    let url = support::database_url();
    anyhow::ensure!(args.e2e_projects > 0, "--e2e-projects must be at least 1");
    let daemon = Daemon::start(&url, "intake", &[]).await?;
    let http = reqwest::Client::new();
    let base = format!("http://{}/api/v1", daemon.addr);
    let admin = login(&http, &base, "admin", "admin").await?;
    let field = login(&http, &base, "field-berlin", "password").await?;
    let lead = login(&http, &base, "team-platform", "password").await?;
    let _ = admin;
    let (field_id, dept_id) = daemon.seed_capacity().await?;
    // Settled in: a few requests of each kind, then the idle footprint.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle_rss = rss_mb(daemon.pid())?;
    let e2e = end_to_end(&http, &base, &lead, args.e2e_projects).await?;

    let baseline = Baseline::start(&url).await?;
    let scripts = tempfile::tempdir()?;
    let quota_body = json!({
        "field_id": field_id, "dept_id": dept_id, "site": "berlin",
        "cpu_limit": 900_000, "ram_gb_limit": 3_600_000,
    });
    let peak = Arc::new(AtomicU64::new(0));
    let sampler = sample_rss(daemon.pid(), peak.clone());
    let mut rows: Vec<(String, u32, Load, CpuPerRequest)> = Vec::new();
    for &connections in &args.connections {
        let run = |name: &str, url: String, token: Option<&str>, script: String| {
            let path = scripts.path().join(format!("{name}-{connections}.lua"));
            std::fs::write(&path, script).map(|()| (url, token.map(str::to_owned), path))
        };
        let plans = [
            (
                "axum-insert-baseline",
                run(
                    "baseline",
                    format!("http://{}/rows", baseline.addr),
                    None,
                    fixed_body(&json!({ "name": "row" })),
                )?,
            ),
            (
                "department-quota",
                run(
                    "quota",
                    format!("{base}/allocations/department-quota"),
                    Some(&field),
                    fixed_body(&quota_body),
                )?,
            ),
            (
                "projects",
                run(
                    "projects",
                    format!("{base}/projects"),
                    Some(&lead),
                    unique_projects(connections),
                )?,
            ),
        ];
        for (system, (url, token, script)) in plans {
            // The baseline serves from this process; the daemon from its own.
            let server =
                if system == "axum-insert-baseline" { std::process::id() } else { daemon.pid() };
            let before = CpuTicks::now(server)?;
            let load = wrk(&url, token.as_deref(), &script, connections, args.seconds)?;
            let cpu = CpuTicks::now(server)?.per_request_since(&before, &load, args.seconds);
            rows.push((system.to_owned(), connections, load, cpu));
        }
    }
    sampler.abort();
    let load_rss = peak.load(Ordering::Relaxed) as f64 / 1024.0;
    let backlog: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM jobs WHERE status IN ('queued', 'retrying', 'running')",
    )
    .fetch_one(&daemon.pool)
    .await?;
    let superseded: i64 =
        sqlx::query_scalar("SELECT count(*) FROM jobs WHERE status = 'superseded'")
            .fetch_one(&daemon.pool)
            .await?;
    let delivery = delivery_rate(&daemon, Duration::from_secs(args.seconds)).await?;

    println!(
        "| endpoint | connections | req/s | p50 ms | p99 ms | errors | vs baseline | PostgreSQL CPU ms/req | server CPU ms/req |"
    );
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    for (system, connections, load, cpu) in &rows {
        let base = rows
            .iter()
            .find(|(s, c, _, _)| s == "axum-insert-baseline" && c == connections)
            .map(|(_, _, l, _)| l.requests_per_s)
            .unwrap_or(f64::NAN);
        println!(
            "| {system} | {connections} | {:.0} | {:.1} | {:.1} | {} | {:.2} | {:.3} | {:.3} |",
            load.requests_per_s,
            load.p50_ms,
            load.p99_ms,
            load.errors,
            load.requests_per_s / base,
            cpu.postgres_ms,
            cpu.server_ms,
        );
    }
    println!();
    println!(
        "POST /projects to active, {} projects one after another (local Git): p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        args.e2e_projects, e2e[0], e2e[1], e2e[2]
    );
    println!("daemon RSS: {idle_rss:.1} MB idle, {load_rss:.1} MB at most under the load");
    println!(
        "jobs left unfinished right after the load: {backlog}; superseded by newer ones: {superseded}"
    );
    println!(
        "delivery of that backlog, no load: {:.0} projects/s made active, {:.1} projects a commit",
        delivery.per_s, delivery.per_commit
    );
    println!();
    for (endpoint, connections, load, cpu) in &rows {
        println!("{}", result_line(endpoint, *connections, load, cpu));
    }
    println!(
        "RESULT system=infrahub test=e2e projects={} p50_ms={:.1} p99_ms={:.1} max_ms={:.1}",
        args.e2e_projects, e2e[0], e2e[1], e2e[2]
    );
    println!(
        "RESULT system=infrahub test=memory idle_rss_mb={idle_rss:.1} load_rss_mb={load_rss:.1}"
    );
    println!(
        "RESULT system=infrahub test=intake backlog_jobs={backlog} superseded_jobs={superseded}"
    );
    println!(
        "RESULT system=infrahub test=delivery projects_per_s={:.1} projects_per_commit={:.2}",
        delivery.per_s, delivery.per_commit
    );
    drop(daemon);

    let argocd = end_to_end_with_argocd(&url, &http, args.e2e_projects).await?;
    println!();
    println!(
        "POST /projects to active through the Argo CD double, {} projects: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        args.e2e_projects, argocd[0], argocd[1], argocd[2]
    );
    println!(
        "RESULT system=infrahub test=e2e argocd=double projects={} p50_ms={:.1} p99_ms={:.1} max_ms={:.1}",
        args.e2e_projects, argocd[0], argocd[1], argocd[2]
    );
    Ok(())
}

/// How fast the workers deliver, the load over: projects made active in `window` while the
/// provisioning backlog the load left is worked off, and commits made meanwhile.
struct DeliveryRate {
    per_s: f64,
    per_commit: f64,
}

async fn delivery_rate(daemon: &Daemon, window: Duration) -> anyhow::Result<DeliveryRate> {
    let active = || async {
        let count: i64 =
            sqlx::query_scalar("SELECT count(*) FROM projects WHERE status = 'active'")
                .fetch_one(&daemon.pool)
                .await?;
        anyhow::Ok(count)
    };
    let commits = || -> anyhow::Result<i64> {
        let out = Command::new("git")
            .arg("-C")
            .arg(&daemon.repo)
            .args(["rev-list", "--count", "HEAD"])
            .output()?;
        Ok(String::from_utf8_lossy(&out.stdout).trim().parse()?)
    };
    let (before, commits_before, started) =
        (active().await?, commits()?, std::time::Instant::now());
    // A measurement window, not a wait for a condition: the rate is what it measures.
    tokio::time::sleep(window).await;
    let (after, commits_after) = (active().await?, commits()?);
    let delivered = (after - before) as f64;
    Ok(DeliveryRate {
        per_s: delivered / started.elapsed().as_secs_f64(),
        per_commit: delivered / (commits_after - commits_before).max(1) as f64,
    })
}

/// The end-to-end run against a daemon that waits for Argo CD: the double knows every
/// namespace of the run as synced and healthy, at whatever commit the daemon's repository
/// holds (as an Application tracking the branch, just refreshed).
async fn end_to_end_with_argocd(
    url: &str,
    http: &reqwest::Client,
    count: usize,
) -> anyhow::Result<[f64; 3]> {
    const TOKEN: &str = "bench-argocd-token-0123456789";
    const APP: &str = "gitops-berlin";
    let resources = (0..count)
        .flat_map(|n| {
            let name = format!("platform-e2e-{n}");
            [
                argocd_fake::resource("Namespace", &name, "", "Synced", Some("Healthy")),
                argocd_fake::resource("ResourceQuota", "infrahub-quota", &name, "Synced", None),
            ]
        })
        .collect();
    let app = argocd_fake::application(APP, "Synced", "Healthy", None, resources);
    let fake = argocd_fake::FakeArgocd::start(APP, TOKEN, vec![app]).await;
    let env = [
        ("INFRAHUB_ARGOCD__URL", fake.base.clone()),
        ("INFRAHUB_ARGOCD__TOKEN", TOKEN.to_owned()),
        ("INFRAHUB_ARGOCD__APPS__BERLIN", APP.to_owned()),
    ];
    let daemon = Daemon::start(url, "intake-argocd", &env).await?;
    fake.set(|script| script.tracks = Some(daemon.repo.clone()));
    daemon.seed_capacity().await?;
    let base = format!("http://{}/api/v1", daemon.addr);
    let lead = login(http, &base, "team-platform", "password").await?;
    let took = end_to_end(http, &base, &lead, count).await?;
    // Each project went active on what the double said, not without asking it.
    let reads = fake.reads().len();
    anyhow::ensure!(
        reads >= count,
        "the Argo CD double was read {reads} times for {count} projects"
    );
    Ok(took)
}

/// `system=infrahub` with the endpoint in the keys (`quota_c16_req_per_s`), or the baseline.
fn result_line(endpoint: &str, connections: u32, load: &Load, cpu: &CpuPerRequest) -> String {
    let (system, prefix) = match endpoint {
        "axum-insert-baseline" => (endpoint, String::new()),
        "department-quota" => ("infrahub", "quota_".to_owned()),
        other => ("infrahub", format!("{other}_")),
    };
    let key = format!("{prefix}c{connections}");
    format!(
        "RESULT system={system} test=intake {key}_req_per_s={:.1} {key}_p50_ms={:.2} {key}_p99_ms={:.2} {key}_errors={} {key}_pg_cpu_ms_per_req={:.3} {key}_server_cpu_ms_per_req={:.3}",
        load.requests_per_s, load.p50_ms, load.p99_ms, load.errors, cpu.postgres_ms, cpu.server_ms
    )
}

/// CPU time (user and system, in clock ticks of 1/100 s, as Linux's /proc gives them) spent
/// so far by every PostgreSQL process of the machine (all backends: the daemon's workers' too,
/// and the server's own helpers; a backend that ended counts in its parent's time of waited-for
/// children) and by one server process (its own time: not its children's, such as git's).
struct CpuTicks {
    postgres: u64,
    server: u64,
}

/// [`CpuTicks`] spent over a load, per request answered.
#[derive(Debug, Clone, Copy)]
struct CpuPerRequest {
    postgres_ms: f64,
    server_ms: f64,
}

impl CpuTicks {
    fn now(server: u32) -> anyhow::Result<Self> {
        let mut postgres = 0;
        for entry in std::fs::read_dir("/proc")? {
            let Ok(pid) = entry?.file_name().to_string_lossy().parse::<u32>() else { continue };
            // A process that ended meanwhile is skipped.
            if let Ok((name, own, children)) = process_ticks(pid)
                && name == "postgres"
            {
                postgres += own + children;
            }
        }
        // Its own time only: the bench's process, which serves the baseline, also runs wrk.
        let server = process_ticks(server)?.1;
        Ok(CpuTicks { postgres, server })
    }

    fn per_request_since(&self, before: &CpuTicks, load: &Load, seconds: u64) -> CpuPerRequest {
        let requests = (load.requests_per_s * seconds as f64).max(1.0);
        let ms = |now: u64, then: u64| now.saturating_sub(then) as f64 * 10.0 / requests;
        CpuPerRequest {
            postgres_ms: ms(self.postgres, before.postgres),
            server_ms: ms(self.server, before.server),
        }
    }
}

/// A process's command name and its user plus system time in clock ticks: its own, and its
/// waited-for children's (`/proc/PID/stat`).
fn process_ticks(pid: u32) -> anyhow::Result<(String, u64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The name is in parentheses and may hold spaces; the fields after it are plain.
    let open = stat.find('(').context("no command name")?;
    let close = stat.rfind(')').context("no command name")?;
    let name = stat[open + 1..close].to_owned();
    let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
    // Fields 14 to 17 of the line (utime, stime, cutime, cstime); the first after the name is
    // field 3.
    let mut ticks = [0; 4];
    for (index, field) in ["utime", "stime", "cutime", "cstime"].iter().enumerate() {
        ticks[index] = fields.get(11 + index).with_context(|| format!("no {field}"))?.parse()?;
    }
    Ok((name, ticks[0] + ticks[1], ticks[2] + ticks[3]))
}

/// The daemon under test: `infrahub demo` on a scratch database, in its own process.
struct Daemon {
    /// Stopped when dropped, also when the benchmark fails half-way.
    child: Reaped,
    addr: SocketAddr,
    pool: PgPool,
    /// The local Git repository it delivers to.
    repo: std::path::PathBuf,
}

impl Daemon {
    /// `env`: further configuration, as `INFRAHUB_*` variables; its log goes to
    /// `$TMPDIR/infrahub-bench-<name>.log`.
    async fn start(url: &str, name: &str, env: &[(&str, String)]) -> anyhow::Result<Self> {
        let log_path = std::env::temp_dir().join(format!("infrahub-bench-{name}.log"));
        let pool = support::scratch_database(url, "infrahub_bench_intake").await?;
        let addr = free_addr()?;
        let mut db_url: url::Url = url.parse()?;
        db_url.set_path("/infrahub_bench_intake");
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let gitops = tempfile::tempdir()?.keep();
        let log = std::fs::File::create(&log_path)?;
        let child = Command::new(env!("CARGO_BIN_EXE_infrahub"))
            .args(["demo", "--listen", &addr.to_string()])
            .current_dir(root)
            .env("INFRAHUB_DATABASE__URL", db_url.as_str())
            .env("INFRAHUB_DELIVERY__GIT__PATH", gitops.join("repo"))
            .envs(env.iter().map(|(key, value)| (key, value)))
            .env("INFRAHUB_LOGGING__LEVEL", "warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("starting the release build of infrahub")?;
        let daemon = Self { child: Reaped(child), addr, pool, repo: gitops.join("repo") };
        let ready = format!("http://{addr}/readyz");
        for _ in 0..600 {
            if let Ok(answer) = reqwest::get(&ready).await
                && answer.status().is_success()
            {
                return Ok(daemon);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        bail!("the daemon did not become ready; see {}", log_path.display())
    }

    fn pid(&self) -> u32 {
        self.child.0.id()
    }

    /// Room for every request of the run: 100 large servers of field `berlin` at `berlin`.
    async fn seed_capacity(&self) -> anyhow::Result<(uuid::Uuid, uuid::Uuid)> {
        let (field_id, site_id): (uuid::Uuid, uuid::Uuid) = sqlx::query_as(
            "SELECT f.id, s.id FROM fields f, sites s WHERE f.name = 'berlin' AND s.name = 'berlin'",
        )
        .fetch_one(&self.pool)
        .await?;
        let dept_id: uuid::Uuid =
            sqlx::query_scalar("SELECT id FROM departments WHERE name = 'platform'")
                .fetch_one(&self.pool)
                .await?;
        sqlx::query(
            "UPDATE department_quotas SET cpu_limit = 900000, ram_gb_limit = 3600000
              WHERE department_id = $1",
        )
        .bind(dept_id)
        .execute(&self.pool)
        .await?;
        sqlx::query(
            "INSERT INTO servers (id, inventory_id, name, site_id, cpu_cores, ram_gb, field_id)
             SELECT gen_random_uuid(), 'bench-' || n, 'bench-' || n, $1, 10000, 40000, $2
               FROM generate_series(1, 100) AS n",
        )
        .bind(site_id)
        .bind(field_id)
        .execute(&self.pool)
        .await?;
        Ok((field_id, dept_id))
    }
}

/// Creates `count` projects one after another, each watched (every 2 ms) from the moment
/// its POST is sent until it reads `active`; p50, p99 and max in milliseconds.
async fn end_to_end(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    count: usize,
) -> anyhow::Result<[f64; 3]> {
    let mut took = Vec::with_capacity(count);
    for n in 0..count {
        let started = std::time::Instant::now();
        let created: Value = http
            .post(format!("{base}/projects"))
            .bearer_auth(token)
            .json(&json!({
                "name": format!("e2e-{n}"), "site": "berlin",
                "sla_type": "silver", "performance_tier": "regular",
            }))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let id = created["id"].as_str().context("no project id")?.to_owned();
        loop {
            let project: Value = http
                .get(format!("{base}/projects/{id}"))
                .bearer_auth(token)
                .send()
                .await?
                .json()
                .await?;
            match project["status"].as_str() {
                Some("active") => break,
                Some("provisioning") if started.elapsed() > Duration::from_secs(60) => {
                    bail!("project {id} still provisioning after 60 s: {project}")
                }
                Some("provisioning") => tokio::time::sleep(Duration::from_millis(2)).await,
                other => bail!("project {id} went {other:?}: {project}"),
            }
        }
        took.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    Ok(stats::p50_p99_max(took))
}

/// VmRSS of `pid`, in MB.
fn rss_mb(pid: u32) -> anyhow::Result<f64> {
    Ok(rss_kb(pid)? as f64 / 1024.0)
}

fn rss_kb(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).context("no VmRSS")?;
    Ok(line.split_whitespace().nth(1).context("VmRSS value")?.parse()?)
}

/// Keeps the largest VmRSS seen (every 100 ms) in `peak`, in kB.
fn sample_rss(pid: u32, peak: Arc<AtomicU64>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while let Ok(kb) = rss_kb(pid) {
            peak.fetch_max(kb, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
}

/// The baseline: one axum route, one INSERT per request, a pool as large as the daemon's.
struct Baseline {
    addr: SocketAddr,
}

impl Baseline {
    async fn start(url: &str) -> anyhow::Result<Self> {
        let pool = support::scratch_database(url, "infrahub_bench_baseline").await?;
        sqlx::query(
            "CREATE TABLE rows (id bigserial PRIMARY KEY, body jsonb NOT NULL,
                                created_at timestamptz NOT NULL DEFAULT now())",
        )
        .execute(&pool)
        .await?;
        let pool = PgPoolOptions::new()
            .max_connections(infrahub::config::Config::default().database.max_connections)
            .connect_with(pool.connect_options().as_ref().clone())
            .await?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let app = axum::Router::new().route("/rows", post(insert_row)).with_state(pool);
        tokio::spawn(async move { axum::serve(listener, app).await });
        Ok(Self { addr })
    }
}

async fn insert_row(
    State(pool): State<PgPool>,
    Json(body): Json<Value>,
) -> Result<(axum::http::StatusCode, Json<Value>), axum::http::StatusCode> {
    let id: i64 = sqlx::query_scalar("INSERT INTO rows (body) VALUES ($1) RETURNING id")
        .bind(body)
        .fetch_one(&pool)
        .await
        .map_err(|_| axum::http::StatusCode::SERVICE_UNAVAILABLE)?;
    Ok((axum::http::StatusCode::ACCEPTED, Json(json!({ "id": id }))))
}

/// A wrk script posting the same JSON body every time.
fn fixed_body(body: &Value) -> String {
    format!(
        "wrk.method = \"POST\"\nwrk.headers[\"Content-Type\"] = \"application/json\"\nwrk.body = [[{body}]]\n"
    )
}

/// A wrk script posting projects with names unique across threads and runs.
fn unique_projects(connections: u32) -> String {
    format!(
        r#"wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("tid", threads)
end
local n = 0
function request()
  n = n + 1
  local body = string.format('{{"name":"b{connections}-%d-%d","site":"berlin","sla_type":"silver","performance_tier":"regular"}}', tid, n)
  return wrk.format(nil, nil, nil, body)
end
"#
    )
}
