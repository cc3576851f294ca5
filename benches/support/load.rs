//! What the HTTP benchmarks share: wrk, its report, logins, a free port, a process's memory.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;

use anyhow::{Context as _, bail};
use serde_json::{Value, json};

/// What wrk reported for one run.
#[derive(Debug, Clone, Copy, Default)]
pub struct Load {
    pub requests_per_s: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// Non-2xx answers plus socket errors.
    pub errors: u64,
}

pub fn which_wrk() -> anyhow::Result<()> {
    match Command::new("wrk").arg("--version").output() {
        Ok(_) => Ok(()),
        Err(_) => bail!("this benchmark needs wrk: apt-get install wrk"),
    }
}

/// A process that is sent SIGTERM when dropped, and SIGKILL if it has not exited 30 s later:
/// a benchmark that fails half-way leaves no daemon behind, and a daemon that hangs in its
/// shutdown does not hang the benchmark.
pub struct Reaped(pub std::process::Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg(self.0.id().to_string()).status();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while std::time::Instant::now() < deadline {
            if !matches!(self.0.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn free_addr() -> anyhow::Result<SocketAddr> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?)
}

pub async fn login(
    http: &reqwest::Client,
    base: &str,
    user: &str,
    password: &str,
) -> anyhow::Result<String> {
    let answer: Value = http
        .post(format!("{base}/auth/login"))
        .json(&json!({ "username": user, "password": password }))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    answer["access_token"].as_str().map(str::to_owned).context("no access_token")
}

/// Runs wrk (2 threads, `connections` connections) and reads its report.
pub fn wrk(
    url: &str,
    token: Option<&str>,
    script: &Path,
    connections: u32,
    seconds: u64,
) -> anyhow::Result<Load> {
    let mut command = Command::new("wrk");
    command
        .args(["--latency", "-t", "2", "-c", &connections.to_string()])
        .args(["-d", &format!("{seconds}s"), "-s"])
        .arg(script);
    if let Some(token) = token {
        command.args(["-H", &format!("Authorization: Bearer {token}")]);
    }
    let output = command.arg(url).output().context("running wrk")?;
    let report = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        bail!("wrk failed: {report}{}", String::from_utf8_lossy(&output.stderr));
    }
    parse_wrk(&report).with_context(|| format!("cannot read wrk's report:\n{report}"))
}

fn parse_wrk(report: &str) -> Option<Load> {
    let mut load = Load::default();
    for line in report.lines().map(str::trim) {
        let mut words = line.split_whitespace();
        match (words.next(), words.next()) {
            (Some("Requests/sec:"), Some(rate)) => load.requests_per_s = rate.parse().ok()?,
            (Some("50%"), Some(at)) => load.p50_ms = millis(at)?,
            (Some("99%"), Some(at)) => load.p99_ms = millis(at)?,
            (Some("Non-2xx"), _) => load.errors += line.rsplit(' ').next()?.parse::<u64>().ok()?,
            (Some("Socket"), Some("errors:")) => {
                load.errors += line
                    .split(',')
                    .filter_map(|part| part.split_whitespace().last()?.parse::<u64>().ok())
                    .sum::<u64>();
            }
            _ => {}
        }
    }
    (load.requests_per_s > 0.0).then_some(load)
}

/// `812.00us`, `12.34ms`, `1.20s` in milliseconds.
fn millis(at: &str) -> Option<f64> {
    let (number, factor) = if let Some(n) = at.strip_suffix("us") {
        (n, 0.001)
    } else if let Some(n) = at.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = at.strip_suffix('s') {
        (n, 1000.0)
    } else {
        return None;
    };
    Some(number.parse::<f64>().ok()? * factor)
}
