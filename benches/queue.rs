//! The job queue benchmark: measures InfraHub's job engine on the local PostgreSQL against a
//! minimal hand-written `FOR UPDATE SKIP LOCKED` queue doing the same work, as the machine's
//! baseline, in a scratch database (dropped and created afresh), never in InfraHub's own.
//!
//! `cargo bench --bench queue -- [--drain-jobs N] [--concurrency 1,4,16] [--latency-jobs N]
//! [--latency-gap-ms N] [--single-enqueues N] [--database NAME]` (the server of DATABASE_URL).
//! Prints a Markdown table and one `RESULT system=... test=...` line per measurement.

#[path = "support/mod.rs"]
mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use infrahub::config::{Config, KindConfig, Mode, Secret, WorkersConfig};
use infrahub::context::Context;
use infrahub::jobs::diagnostic::Noop;
use infrahub::jobs::wake::WakeUps;
use infrahub::jobs::{Job, Registry, engine};
use infrahub::store;
use serde::Serialize;
use serde_json::json;
use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio::sync::Notify;

/// What to measure.
#[derive(Debug, Parser)]
struct Args {
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
    /// Passed by `cargo bench`; ignored
    #[arg(long, hide = true)]
    bench: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    infrahub::install_crypto_provider();
    let args = Args::parse();
    let mut config = Config::default();
    config.database.url = support::database_url();
    let plan = QueueBench {
        drain_jobs: args.drain_jobs,
        concurrency: args.concurrency,
        latency_jobs: args.latency_jobs,
        latency_gap: Duration::from_millis(args.latency_gap_ms),
        single_enqueues: args.single_enqueues,
        database: args.database,
    };
    let report = run_queue(&config, &plan).await?;
    println!("{}", report.to_markdown());
    for row in &report.rows {
        println!("RESULT system=infrahub test={} {}={:.3}", row.test, row.key, row.engine);
        if let Some(baseline) = row.baseline {
            println!(
                "RESULT system=skip-locked-baseline test={} {}={:.3}",
                row.test, row.key, baseline
            );
        }
    }
    Ok(())
}

/// What to measure.
#[derive(Debug, Clone)]
struct QueueBench {
    /// Jobs drained per concurrency level.
    pub drain_jobs: usize,
    pub concurrency: Vec<u32>,
    /// Jobs submitted one by one for the pickup latency.
    pub latency_jobs: usize,
    /// Pause between two of those submissions.
    pub latency_gap: Duration,
    /// Jobs enqueued one transaction each, for the single enqueue rate.
    pub single_enqueues: usize,
    /// Scratch database (dropped and re-created).
    pub database: String,
}

#[derive(Debug, Serialize)]
struct Report {
    pub rows: Vec<Row>,
}

/// One measurement of both queues.
#[derive(Debug, Serialize)]
struct Row {
    what: String,
    unit: &'static str,
    /// The `test=` of its RESULT lines, and the key of its value.
    test: &'static str,
    key: String,
    engine: f64,
    /// None when the baseline has nothing to compare (it cannot hold a job back).
    baseline: Option<f64>,
}

impl Report {
    /// A Markdown table: what, engine, baseline, ratio.
    fn to_markdown(&self) -> String {
        let mut out = String::from(
            "| measurement | InfraHub engine | SKIP LOCKED baseline | engine / baseline |\n",
        );
        out.push_str("| --- | ---: | ---: | ---: |\n");
        for row in &self.rows {
            let (baseline, ratio) = match row.baseline {
                Some(b) if b > 0.0 => {
                    (format!("{b:.1} {}", row.unit), format!("{:.2}", row.engine / b))
                }
                Some(b) => (format!("{b:.1} {}", row.unit), "-".to_owned()),
                None => ("-".to_owned(), "-".to_owned()),
            };
            out.push_str(&format!(
                "| {} | {:.1} {} | {baseline} | {ratio} |\n",
                row.what, row.engine, row.unit
            ));
        }
        out
    }
}

/// Runs every measurement and returns the table.
async fn run_queue(config: &Config, bench: &QueueBench) -> anyhow::Result<Report> {
    let pool = support::scratch_database(&config.database.url, &bench.database).await?;
    store::migrate_up(&pool).await?;
    create_baseline(&pool).await?;
    let mut rows = Vec::new();

    let n = bench.single_enqueues;
    let engine_single = timed(n, || enqueue_engine_single(&pool, n)).await?;
    let base_single = timed(n, || enqueue_baseline_single(&pool, n)).await?;
    rows.push(Row {
        what: format!("enqueue, one transaction per job ({n} jobs)"),
        unit: "jobs/s",
        test: "enqueue",
        key: "single_jobs_per_s".to_owned(),
        engine: engine_single,
        baseline: Some(base_single),
    });
    reset(&pool).await?;

    let n = bench.drain_jobs;
    let engine_batched = timed(n, || enqueue_engine_batched(&pool, n)).await?;
    let base_batched = timed(n, || enqueue_baseline_batched(&pool, n)).await?;
    rows.push(Row {
        what: format!("enqueue, batches of 1000 ({n} jobs)"),
        unit: "jobs/s",
        test: "enqueue",
        key: "batched_jobs_per_s".to_owned(),
        engine: engine_batched,
        baseline: Some(base_batched),
    });

    for &concurrency in &bench.concurrency {
        reset(&pool).await?;
        enqueue_engine_batched(&pool, n).await?;
        enqueue_baseline_batched(&pool, n).await?;
        let engine_rate = drain_engine(config, &pool, concurrency, n).await?;
        let base_rate = drain_baseline(&pool, concurrency, n).await?;
        rows.push(Row {
            what: format!("drain {n} no-op jobs, concurrency {concurrency}"),
            unit: "jobs/s",
            test: "drain",
            key: format!("c{concurrency}_jobs_per_s"),
            engine: engine_rate,
            baseline: Some(base_rate),
        });
    }

    reset(&pool).await?;
    let engine_latency = latency_engine(config, &pool, bench, Duration::ZERO, false).await?;
    let base_latency = latency_baseline(&pool, bench).await?;
    let n = bench.latency_jobs;
    let idle = format!(", {n} jobs one by one into an idle queue");
    rows.extend(pickup_rows(&idle, "", engine_latency, Some(base_latency)));
    reset(&pool).await?;
    let remote = latency_engine(config, &pool, bench, Duration::ZERO, true).await?;
    let another = format!(", {n} jobs one by one, submitted by another daemon");
    rows.extend(pickup_rows(&another, "remote_", remote, Some(base_latency)));
    reset(&pool).await?;
    let later = latency_engine(config, &pool, bench, LATER, false).await?;
    let when = format!(" from when due, {n} jobs due {} ms after submission", LATER.as_millis());
    rows.extend(pickup_rows(&when, "later_", later, None));
    pool.close().await;
    Ok(Report { rows })
}

/// The p50, p99 and max rows of one pickup measurement: `pickup latency <p><what>`, keys
/// `<prefix><p>_ms`.
fn pickup_rows(
    what: &str,
    prefix: &str,
    engine: [f64; 3],
    baseline: Option<[f64; 3]>,
) -> impl Iterator<Item = Row> {
    ["p50", "p99", "max"].into_iter().enumerate().map(move |(i, label)| Row {
        what: format!("pickup latency {label}{what}"),
        unit: "ms",
        test: "pickup",
        key: format!("{prefix}{label}_ms"),
        engine: engine[i],
        baseline: baseline.map(|b| b[i]),
    })
}

/// How long after submission the jobs of the "due later" pickup measurement are due.
const LATER: Duration = Duration::from_millis(50);

async fn timed<F, Fut>(count: usize, work: F) -> anyhow::Result<f64>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let started = Instant::now();
    work().await?;
    Ok(count as f64 / started.elapsed().as_secs_f64())
}

async fn create_baseline(pool: &PgPool) -> anyhow::Result<()> {
    sqlx::query(
        "CREATE TABLE bench_queue (
             id         bigserial PRIMARY KEY,
             payload    jsonb NOT NULL,
             status     text NOT NULL DEFAULT 'queued',
             created_at timestamptz NOT NULL DEFAULT clock_timestamp(),
             started_at timestamptz
         )",
    )
    .execute(pool)
    .await?;
    sqlx::query("CREATE INDEX bench_queue_ready ON bench_queue (id) WHERE status = 'queued'")
        .execute(pool)
        .await?;
    sqlx::query("CREATE INDEX bench_queue_running ON bench_queue (id) WHERE status = 'running'")
        .execute(pool)
        .await?;
    Ok(())
}

async fn reset(pool: &PgPool) -> anyhow::Result<()> {
    sqlx::query("TRUNCATE jobs, bench_queue").execute(pool).await?;
    Ok(())
}

fn noop_job() -> store::jobs::NewJob<'static> {
    store::jobs::NewJob::new(Noop::KIND, json!({}), "bench", 5)
}

/// As the daemon does: the job in the caller's transaction, its wake-up sent after the commit
/// by the process's sender.
async fn enqueue_engine_single(pool: &PgPool, n: usize) -> anyhow::Result<()> {
    let job = noop_job();
    let wake_ups = WakeUps::new(pool.clone());
    for _ in 0..n {
        let mut tx = pool.begin().await?;
        let enqueued = store::jobs::enqueue(&mut tx, &job).await?;
        tx.commit().await?;
        wake_ups.send(enqueued.wake_up().cloned());
    }
    Ok(())
}

async fn enqueue_baseline_single(pool: &PgPool, n: usize) -> anyhow::Result<()> {
    for _ in 0..n {
        let mut tx = pool.begin().await?;
        sqlx::query("INSERT INTO bench_queue (payload) VALUES ('{}')").execute(&mut *tx).await?;
        sqlx::query("SELECT pg_notify('bench_queue', '')").execute(&mut *tx).await?;
        tx.commit().await?;
    }
    Ok(())
}

async fn enqueue_engine_batched(pool: &PgPool, n: usize) -> anyhow::Result<()> {
    let job = noop_job();
    let wake_ups = WakeUps::new(pool.clone());
    for chunk in chunks(n, 1000) {
        let mut tx = pool.begin().await?;
        let (_, wake_up) = store::jobs::enqueue_batch(&mut tx, &job, chunk).await?;
        tx.commit().await?;
        wake_ups.send([wake_up]);
    }
    Ok(())
}

async fn enqueue_baseline_batched(pool: &PgPool, n: usize) -> anyhow::Result<()> {
    for chunk in chunks(n, 1000) {
        sqlx::query("INSERT INTO bench_queue (payload) SELECT '{}' FROM generate_series(1, $1)")
            .bind(chunk as i32)
            .execute(pool)
            .await?;
    }
    Ok(())
}

fn chunks(total: usize, size: usize) -> impl Iterator<Item = usize> {
    (0..total.div_ceil(size)).map(move |i| size.min(total - i * size))
}

/// A context whose only active kind is `noop`, at `concurrency`.
fn engine_context(config: &Config, pool: &PgPool, concurrency: u32) -> anyhow::Result<Context> {
    let mut config = config.clone();
    config.workers.poll_interval_ms = 1000;
    let registry = Registry::new(&WorkersConfig::default())?;
    for (kind, _) in registry.iter() {
        let settings = KindConfig { concurrency: Some(0), ..KindConfig::default() };
        config.workers.kinds.insert(kind.to_owned(), settings);
    }
    config.workers.kinds.insert(
        Noop::KIND.to_owned(),
        KindConfig { concurrency: Some(concurrency), ..KindConfig::default() },
    );
    let secret = uuid::Uuid::new_v4().to_string() + &uuid::Uuid::new_v4().to_string();
    config.auth.jwt_secret = Some(Secret::new(secret));
    Ok(Context::new(pool.clone(), config, Mode::Serve)?)
}

async fn drain_engine(
    config: &Config,
    pool: &PgPool,
    concurrency: u32,
    n: usize,
) -> anyhow::Result<f64> {
    let ctx = engine_context(config, pool, concurrency)?;
    let started = Instant::now();
    let handle = engine::start(ctx);
    // Both unfinished states are in partial indexes: this check is two index probes, where
    // counting finished rows would scan the table 100 times a second under the measurement.
    wait_until_none(
        pool,
        "SELECT EXISTS (SELECT 1 FROM jobs WHERE status IN ('queued', 'retrying'))
             OR EXISTS (SELECT 1 FROM jobs WHERE status = 'running')",
    )
    .await?;
    let rate = n as f64 / started.elapsed().as_secs_f64();
    handle.shutdown(Duration::from_secs(10)).await;
    let done: i64 = sqlx::query_scalar("SELECT count(*) FROM jobs WHERE status = 'succeeded'")
        .fetch_one(pool)
        .await?;
    anyhow::ensure!(done as usize == n, "{done} of {n} jobs succeeded");
    Ok(rate)
}

/// Polls an `EXISTS` query until it says no; the bench's timing granularity is 10 ms.
/// Each `EXISTS` must name the predicate of one partial index: the planner is told to stay
/// off sequential scans, which would read every finished row. Where it cannot help it (one
/// `IN` over two partial indexes), the scan's penalty cost used to cross `jit_above_cost`,
/// and PostgreSQL JIT-compiled the poll 100 times a second: a quarter of its CPU during the
/// drain went to LLVM. So this connection also runs without JIT.
async fn wait_until_none(pool: &PgPool, sql: &'static str) -> anyhow::Result<()> {
    let mut conn = pool.acquire().await?;
    sqlx::query("SET enable_seqscan = off").execute(&mut *conn).await?;
    sqlx::query("SET jit = off").execute(&mut *conn).await?;
    while sqlx::query_scalar::<_, bool>(sql).fetch_one(&mut *conn).await? {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    sqlx::query("RESET enable_seqscan").execute(&mut *conn).await?;
    sqlx::query("RESET jit").execute(&mut *conn).await?;
    Ok(())
}

/// Polls a count query until it reaches `n`; the bench's timing granularity is 10 ms.
async fn wait_for_count(pool: &PgPool, sql: &'static str, n: usize) -> anyhow::Result<()> {
    loop {
        let done: i64 = sqlx::query_scalar(sql).fetch_one(pool).await?;
        if done as usize >= n {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The baseline: `concurrency` loops, each claiming one job with SKIP LOCKED, then finishing
/// it, and waiting for a notification (or 1 s) when the queue is empty.
struct Baseline {
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl Baseline {
    async fn start(pool: &PgPool, concurrency: u32) -> anyhow::Result<Self> {
        let wake = Arc::new(Notify::new());
        let stop = Arc::new(AtomicBool::new(false));
        let mut listener = PgListener::connect_with(pool).await?;
        listener.listen("bench_queue").await?;
        let mut tasks = Vec::new();
        let waker = wake.clone();
        let stopping = stop.clone();
        tasks.push(tokio::spawn(async move {
            while !stopping.load(Ordering::Relaxed) {
                if let Ok(Ok(_)) =
                    tokio::time::timeout(Duration::from_millis(200), listener.recv()).await
                {
                    waker.notify_waiters();
                }
            }
            Ok(())
        }));
        for _ in 0..concurrency {
            let pool = pool.clone();
            let wake = wake.clone();
            let stop = stop.clone();
            tasks.push(tokio::spawn(async move {
                let mut conn = pool.acquire().await?;
                while !stop.load(Ordering::Relaxed) {
                    let notified = wake.notified();
                    tokio::pin!(notified);
                    notified.as_mut().enable();
                    let claimed: Option<i64> = sqlx::query_scalar(
                        "UPDATE bench_queue SET status = 'running', started_at = clock_timestamp()
                          WHERE id = (SELECT id FROM bench_queue WHERE status = 'queued'
                                       ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED)
                      RETURNING id",
                    )
                    .fetch_optional(&mut *conn)
                    .await?;
                    match claimed {
                        Some(id) => {
                            sqlx::query("UPDATE bench_queue SET status = 'done' WHERE id = $1")
                                .bind(id)
                                .execute(&mut *conn)
                                .await?;
                        }
                        None => {
                            let _ = tokio::time::timeout(Duration::from_secs(1), notified).await;
                        }
                    }
                }
                Ok(())
            }));
        }
        Ok(Self { stop, tasks })
    }

    async fn stop(self) -> anyhow::Result<()> {
        self.stop.store(true, Ordering::Relaxed);
        for task in self.tasks {
            task.await??;
        }
        Ok(())
    }
}

async fn drain_baseline(pool: &PgPool, concurrency: u32, n: usize) -> anyhow::Result<f64> {
    let started = Instant::now();
    let baseline = Baseline::start(pool, concurrency).await?;
    wait_until_none(
        pool,
        "SELECT EXISTS (SELECT 1 FROM bench_queue WHERE status = 'queued')
             OR EXISTS (SELECT 1 FROM bench_queue WHERE status = 'running')",
    )
    .await?;
    let rate = n as f64 / started.elapsed().as_secs_f64();
    baseline.stop().await?;
    let done: i64 = sqlx::query_scalar("SELECT count(*) FROM bench_queue WHERE status = 'done'")
        .fetch_one(pool)
        .await?;
    anyhow::ensure!(done as usize == n, "{done} of {n} baseline jobs done");
    Ok(rate)
}

/// p50, p99 and max of `started_at - created_at`, in milliseconds.
async fn percentiles(pool: &PgPool, table: &'static str) -> anyhow::Result<[f64; 3]> {
    percentiles_from(pool, table, "created_at").await
}

/// p50, p99 and max of `started_at - <from>`, in milliseconds.
async fn percentiles_from(
    pool: &PgPool,
    table: &'static str,
    from: &'static str,
) -> anyhow::Result<[f64; 3]> {
    let sql = format!(
        "SELECT percentile_cont(ARRAY[0.5, 0.99]) WITHIN GROUP (ORDER BY ms), max(ms)::float8
           FROM (SELECT (extract(epoch FROM started_at - {from}) * 1000)::float8 AS ms FROM {table}) t"
    );
    let (p, max): (Vec<f64>, f64) =
        sqlx::query_as(sqlx::AssertSqlSafe(sql)).fetch_one(pool).await?;
    Ok([p[0], p[1], max])
}

/// The pickup of jobs submitted one by one into an idle queue, each due `delay` after its
/// submission, measured from when it is due (`run_at`: for a job due at once, its transaction's
/// start, the moment of submission). For jobs due later it is the engine's alarm, not its
/// poll (`workers.poll_interval_ms`, 1 s here), that should pick them up. The submitter is
/// the engine's own process (whose wake-ups reach its engine directly), or with
/// `another_daemon`, stands for another daemon: its wake-ups reach the engine only through
/// PostgreSQL.
async fn latency_engine(
    config: &Config,
    pool: &PgPool,
    bench: &QueueBench,
    delay: Duration,
    another_daemon: bool,
) -> anyhow::Result<[f64; 3]> {
    let ctx = engine_context(config, pool, 16)?;
    let wake_ups = match another_daemon {
        true => Arc::new(WakeUps::new(pool.clone())),
        false => Arc::clone(&ctx.wake_ups),
    };
    let handle = engine::start(ctx);
    // Let the engine connect its listener and reach its idle wait.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let job = store::jobs::NewJob { delay, ..noop_job() };
    for _ in 0..bench.latency_jobs {
        let mut conn = pool.acquire().await?;
        let enqueued = store::jobs::enqueue(&mut conn, &job).await?;
        drop(conn);
        wake_ups.send(enqueued.wake_up().cloned());
        tokio::time::sleep(bench.latency_gap).await;
    }
    wait_for_count(
        pool,
        "SELECT count(*) FROM jobs WHERE status = 'succeeded'",
        bench.latency_jobs,
    )
    .await?;
    handle.shutdown(Duration::from_secs(10)).await;
    percentiles_from(pool, "jobs", "run_at").await
}

async fn latency_baseline(pool: &PgPool, bench: &QueueBench) -> anyhow::Result<[f64; 3]> {
    let baseline = Baseline::start(pool, 16).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    for _ in 0..bench.latency_jobs {
        sqlx::query("WITH i AS (INSERT INTO bench_queue (payload) VALUES ('{}')) SELECT pg_notify('bench_queue', '')")
            .execute(pool)
            .await?;
        tokio::time::sleep(bench.latency_gap).await;
    }
    wait_for_count(
        pool,
        "SELECT count(*) FROM bench_queue WHERE status = 'done'",
        bench.latency_jobs,
    )
    .await?;
    baseline.stop().await?;
    percentiles(pool, "bench_queue").await
}
