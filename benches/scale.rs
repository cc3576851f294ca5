//! The scale benchmark: an organisation of 50,000 servers, 20,000 projects and 200 departments
//! (seeded straight into a scratch database), served by the real daemon (`infrahub serve
//! --role api`, release build, its own process), and every list and view read under wrk with
//! 16 connections, one page (`limit=100`) at a time. Then the resync job checks every
//! project against a local Git repository holding their manifests, a hundredth of them changed
//! behind InfraHub's back (run in this process by the job engine's `run_due`, as one attempt).
//!
//! `cargo bench --bench scale -- [--servers 50000] [--projects 20000] [--departments 200]
//! [--seconds 5] [--connections 16]` (wrk from Debian's package `wrk`; the PostgreSQL server
//! of DATABASE_URL; scratch database `infrahub_bench_scale`). Prints a Markdown table and one
//! `RESULT system=infrahub test=list <view>_p99_ms=... <view>_req_per_s=...` line per view, and
//! `RESULT system=infrahub test=resync projects=... drifted=... seconds=...`.

#[path = "support/load.rs"]
mod load;
#[path = "support/mod.rs"]
mod support;

use std::io::Write as _;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::Parser;
use sqlx::PgPool;
use uuid::Uuid;

use load::{Reaped, free_addr, login, which_wrk, wrk};

#[derive(Debug, Parser)]
struct Args {
    #[arg(long, default_value_t = 50_000)]
    servers: u32,
    #[arg(long, default_value_t = 20_000)]
    projects: u32,
    /// Spread over 10 fields
    #[arg(long, default_value_t = 200)]
    departments: u32,
    /// Seconds of load per view
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    #[arg(long, default_value_t = 16)]
    connections: u32,
    /// Skip the resync phase
    #[arg(long)]
    no_resync: bool,
    /// Passed by `cargo bench`; ignored
    #[arg(long, hide = true)]
    bench: bool,
}

const SECRET: &str = "bench-scale-jwt-secret-0123456789abcdef0123456789";
const PASSWORD: &str = "bench-password-1";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    infrahub::install_crypto_provider();
    let args = Args::parse();
    which_wrk()?;
    let url = support::database_url();
    let pool = support::scratch_database(&url, "infrahub_bench_scale").await?;
    infrahub::store::migrate_up(&pool).await?;
    let started = Instant::now();
    let (field, department) = seed(&pool, &args).await?;
    let seeded = started.elapsed().as_secs_f64();
    sqlx::query("ANALYZE").execute(&pool).await?;

    let mut db_url: url::Url = url.parse()?;
    db_url.set_path("/infrahub_bench_scale");
    let addr = free_addr()?;
    let env = [
        ("INFRAHUB_DATABASE__URL", db_url.to_string()),
        ("INFRAHUB_AUTH__JWT_SECRET", SECRET.to_owned()),
        ("INFRAHUB_HTTP__LISTEN", addr.to_string()),
        ("INFRAHUB_LOGGING__LEVEL", "warn".to_owned()),
    ];
    let binary = env!("CARGO_BIN_EXE_infrahub");
    // Run where no config/infrahub.toml is: the environment is the whole configuration.
    let scripts = tempfile::tempdir()?;
    let mut add = Command::new(binary)
        .args(["user", "add", "bench-admin", "--role", "center_admin", "--password-stdin"])
        .current_dir(scripts.path())
        .envs(env.iter().cloned())
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()?;
    add.stdin.take().context("stdin")?.write_all(format!("{PASSWORD}\n").as_bytes())?;
    if !add.wait()?.success() {
        bail!("infrahub user add failed");
    }
    let daemon = Reaped(
        Command::new(binary)
            .args(["serve", "--role", "api"])
            .current_dir(scripts.path())
            .envs(env.iter().cloned())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?,
    );
    let base = format!("http://{addr}/api/v1");
    let ready = format!("http://{addr}/readyz");
    let mut up = false;
    for _ in 0..300 {
        if reqwest::get(&ready).await.is_ok_and(|a| a.status().is_success()) {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if !up {
        bail!("the daemon did not become ready");
    }
    let http = reqwest::Client::new();
    let token = login(&http, &base, "bench-admin", PASSWORD).await?;

    let views = [
        ("servers", "/servers?limit=100".to_owned()),
        ("servers_of_field", format!("/servers?field_id={field}&limit=100")),
        ("projects", "/projects?limit=100".to_owned()),
        ("projects_active", "/projects?status=active&limit=100".to_owned()),
        ("departments", "/admin/departments?limit=100".to_owned()),
        ("jobs", "/jobs?limit=100".to_owned()),
        ("audit", "/audit?limit=100".to_owned()),
        ("field_capacity", format!("/fields/{field}/capacity")),
        ("department_quota", format!("/departments/{department}/quota")),
    ];
    let script = scripts.path().join("get.lua");
    std::fs::write(&script, "wrk.method = \"GET\"\n")?;
    let mut rows = Vec::new();
    for (name, path) in &views {
        // One request first: a view that answers an error is a broken benchmark, not a number.
        let answer = http.get(format!("{base}{path}")).bearer_auth(&token).send().await?;
        if !answer.status().is_success() {
            bail!("{path}: {} {}", answer.status(), answer.text().await.unwrap_or_default());
        }
        let load =
            wrk(&format!("{base}{path}"), Some(&token), &script, args.connections, args.seconds)?;
        rows.push((*name, path.clone(), load));
    }
    drop(daemon);

    let resync = if args.no_resync { None } else { Some(resync(&pool, args.projects).await?) };

    println!(
        "{} servers, {} projects, {} departments in 10 fields and 2 sites (seeded in {seeded:.1} s)",
        args.servers, args.projects, args.departments
    );
    println!();
    println!("| view | request | req/s | p50 ms | p99 ms | errors |");
    println!("| --- | --- | ---: | ---: | ---: | ---: |");
    for (name, path, load) in &rows {
        println!(
            "| {name} | `GET {path}` | {:.0} | {:.1} | {:.1} | {} |",
            load.requests_per_s, load.p50_ms, load.p99_ms, load.errors
        );
    }
    println!();
    for (name, _, load) in &rows {
        println!(
            "RESULT system=infrahub test=list {name}_req_per_s={:.1} {name}_p50_ms={:.2} {name}_p99_ms={:.2} {name}_errors={}",
            load.requests_per_s, load.p50_ms, load.p99_ms, load.errors
        );
    }
    if let Some(r) = resync {
        println!();
        println!(
            "resync of {} projects against local Git ({} manifests committed in {:.1} s): {:.1} s, {} drifted of {} changed",
            r.checked, r.committed, r.commit_seconds, r.seconds, r.drifted, r.changed
        );
        println!(
            "RESULT system=infrahub test=resync projects={} changed={} drifted={} seconds={:.2}",
            r.checked, r.changed, r.drifted, r.seconds
        );
    }
    Ok(())
}

struct Resynced {
    committed: usize,
    commit_seconds: f64,
    changed: usize,
    checked: u64,
    drifted: u64,
    seconds: f64,
}

/// Commits every active project's manifests to a fresh local repository (one commit), changes
/// every hundredth in a second commit, then runs one resync job and times it.
async fn resync(pool: &PgPool, projects: u32) -> anyhow::Result<Resynced> {
    use infrahub::app::projects::{list_active, manifest_path, spec};
    use infrahub::domain::manifests::render;

    let dir = tempfile::tempdir()?;
    let repo = dir.path().join("gitops");
    let mut config = infrahub::config::Config::default();
    config.auth.jwt_secret = Some(infrahub::config::Secret::new(SECRET));
    config.delivery.git.path = repo.clone();
    config.schedule.server_sync = String::new();
    config.schedule.resync = String::new();
    config.schedule.prune_jobs = String::new();
    config.schedule.reconcile = String::new();
    let ctx = infrahub::context::Context::new(pool.clone(), config, infrahub::config::Mode::Serve)?;

    let started = Instant::now();
    let mut page = infrahub::store::PageRequest { after: None, limit: 500 };
    let mut files = Vec::new();
    loop {
        let batch = list_active(&ctx, page).await?;
        for project in &batch.items {
            let path = repo.join(manifest_path(project));
            std::fs::create_dir_all(path.parent().context("manifest directory")?)?;
            std::fs::write(&path, render(&spec(&ctx, project).await?))?;
            files.push(path);
        }
        match batch.next_cursor {
            Some(cursor) => page.after = Some(cursor),
            None => break,
        }
    }
    let git = |args: &[&str]| -> anyhow::Result<()> {
        let status = Command::new("git")
            .arg("-C")
            .arg(&repo)
            .args(["-c", "user.name=bench", "-c", "user.email=bench@localhost"])
            .args(args)
            .stdout(Stdio::null())
            .status()?;
        if !status.success() {
            bail!("git {args:?} failed");
        }
        Ok(())
    };
    git(&["init", "--quiet", "-b", "main"])?;
    git(&["add", "-A"])?;
    git(&["commit", "--quiet", "-m", "every project"])?;
    let commit_seconds = started.elapsed().as_secs_f64();
    let changed: Vec<_> = files.iter().step_by(100).collect();
    for path in &changed {
        std::fs::write(path, "changed: behind InfraHub's back\n")?;
    }
    git(&["commit", "--quiet", "-a", "-m", "drift"])?;
    if files.len() != projects as usize {
        bail!("{} active projects, {projects} seeded", files.len());
    }

    let mut conn = pool.acquire().await?;
    let new = infrahub::store::jobs::NewJob::new("resync", serde_json::json!({}), "bench", 1);
    let id = infrahub::store::jobs::enqueue(&mut conn, &new).await?.job().id;
    drop(conn);
    let started = Instant::now();
    infrahub::jobs::engine::run_due(&ctx, false, 1).await?;
    let seconds = started.elapsed().as_secs_f64();
    let (status, result): (String, Option<serde_json::Value>) =
        sqlx::query_as("SELECT status::text, result FROM jobs WHERE id = $1")
            .bind(id)
            .fetch_one(pool)
            .await?;
    let result = result.unwrap_or_default();
    if status != "succeeded" {
        bail!("the resync job ended {status}: {result}");
    }
    let checked = result["checked"].as_u64().unwrap_or_default();
    let drifted = result["drifted"].as_u64().unwrap_or_default();
    if checked != u64::from(projects) || drifted != changed.len() as u64 {
        bail!("resync checked {checked} and found {drifted} drifted: {result}");
    }
    Ok(Resynced {
        committed: files.len(),
        commit_seconds,
        changed: changed.len(),
        checked,
        drifted,
        seconds,
    })
}

/// The organisation, in a few statements; returns a field and a department of it.
async fn seed(pool: &PgPool, args: &Args) -> anyhow::Result<(Uuid, Uuid)> {
    let mut tx = pool.begin().await?;
    sqlx::query(
        "INSERT INTO sites (id, name, display_name)
         VALUES (gen_random_uuid(), 'ber', 'Berlin'), (gen_random_uuid(), 'muc', 'Munich')",
    )
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO fields (id, name, display_name)
         SELECT gen_random_uuid(), 'field-' || n, 'Field ' || n FROM generate_series(1, 10) n",
    )
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO departments (id, field_id, name, display_name)
         SELECT gen_random_uuid(), f.id, 'dept-' || n, 'Department ' || n
           FROM generate_series(1, $1) n
           JOIN (SELECT id, row_number() OVER (ORDER BY name) - 1 AS i FROM fields) f
             ON f.i = n % 10",
    )
    .bind(args.departments as i32)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO servers (id, inventory_id, name, site_id, cpu_cores, ram_gb, field_id)
         SELECT gen_random_uuid(), 'inv-' || n, 'node-' || n, s.id, 64, 512,
                CASE WHEN n % 5 <> 0 THEN f.id END
           FROM generate_series(1, $1) n
           JOIN (SELECT id, row_number() OVER (ORDER BY name) - 1 AS i FROM sites) s
             ON s.i = n % 2
           JOIN (SELECT id, row_number() OVER (ORDER BY name) - 1 AS i FROM fields) f
             ON f.i = n % 10",
    )
    .bind(args.servers as i32)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO department_quotas (department_id, site_id, cpu_limit, ram_gb_limit)
         SELECT d.id, s.id, 500, 4000 FROM departments d CROSS JOIN sites s",
    )
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO projects (id, name, department_id, site_id, namespace, sla_type,
                               performance_tier, cpu, ram_gb, status)
         SELECT gen_random_uuid(), 'p' || n, d.id, s.id, d.name || '-p' || n, 'silver',
                'regular', 2, 8, 'active'
           FROM generate_series(1, $1) n
           JOIN (SELECT id, name, row_number() OVER (ORDER BY name) - 1 AS i FROM departments) d
             ON d.i = n % $2
           JOIN (SELECT id, row_number() OVER (ORDER BY name) - 1 AS i FROM sites) s
             ON s.i = n % 2",
    )
    .bind(args.projects as i32)
    .bind(args.departments as i64)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    let field: Uuid =
        sqlx::query_scalar("SELECT id FROM fields WHERE name = 'field-1'").fetch_one(pool).await?;
    let department: Uuid =
        sqlx::query_scalar("SELECT id FROM departments WHERE field_id = $1 ORDER BY name LIMIT 1")
            .bind(field)
            .fetch_one(pool)
            .await?;
    Ok((field, department))
}
