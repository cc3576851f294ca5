//! Delivery into a large local Git repository: a repository holding `--files` manifests (20,000
//! by default, the projects of the scale target) in one site's directory, then `--writes`
//! changed manifests written through InfraHub's `LocalGit` one after another (each its own
//! commit, as a lone delivery is), the same number by `--concurrency` writers at once (as the
//! `provision_namespace` workers deliver; waiting writes share a commit), and, as the peer in
//! the same run, one after another by `git add` and `git commit` (what a script would do).
//! Each of the `--rounds` rounds runs all three in turn on the same repository.
//!
//! `cargo bench --bench gitops -- [--files 20000] [--writes 100] [--concurrency 8] [--rounds 3]`
//! (needs only git). Prints a Markdown table and `RESULT system=<infrahub|git-add-commit>
//! test=commit ...` lines with the medians over the rounds.

#[path = "support/stats.rs"]
mod stats;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context as _, bail};
use clap::Parser;
use futures::StreamExt as _;
use infrahub::clients::gitops::{Delivered, LocalGit};
use infrahub::config::GitConfig;

#[derive(Debug, Parser)]
struct Args {
    /// Manifests in the repository before the writes
    #[arg(long, default_value_t = 20_000)]
    files: usize,
    /// Writes per measurement
    #[arg(long, default_value_t = 100)]
    writes: usize,
    /// Writers at once in the concurrent measurement
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Passed by `cargo bench`; ignored
    #[arg(long, hide = true)]
    bench: bool,
}

/// A manifest about the size of a rendered project's (four documents).
fn manifest(n: usize, version: usize) -> String {
    let mut text = String::with_capacity(1600);
    for kind in ["Namespace", "ResourceQuota", "LimitRange", "RoleBinding"] {
        text.push_str(&format!(
            "---\napiVersion: v1\nkind: {kind}\nmetadata:\n  name: project-{n}\n  labels:\n    \
             app.kubernetes.io/managed-by: infrahub\n    infrahub.io/generation: \"{version}\"\n\
             spec:\n  hard:\n    requests.cpu: \"{}\"\n    requests.memory: {}Gi\n",
            4 + n % 8,
            16 + n % 32
        ));
    }
    text
}

fn file(n: usize) -> String {
    format!("ber/project-{n}.yaml")
}

fn git(repo: &Path, args: &[&str]) -> anyhow::Result<String> {
    let output = Command::new("git")
        .arg("-C")
        .arg(repo)
        .args(["-c", "user.name=bench", "-c", "user.email=bench@localhost"])
        .args(args)
        .stderr(Stdio::inherit())
        .output()?;
    if !output.status.success() {
        bail!("git {args:?} failed");
    }
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

fn commits(repo: &Path) -> anyhow::Result<usize> {
    Ok(git(repo, &["rev-list", "--count", "HEAD"])?.parse()?)
}

/// Milliseconds each of `writes` took, one after another, through InfraHub's writer.
async fn infrahub_one_by_one(
    git: &LocalGit,
    writes: &[usize],
    version: usize,
) -> anyhow::Result<Vec<f64>> {
    let mut took = Vec::with_capacity(writes.len());
    for &n in writes {
        let started = Instant::now();
        let delivered = git.write(&file(n), Some(&manifest(n, version)), "bench").await?;
        took.push(started.elapsed().as_secs_f64() * 1000.0);
        if !matches!(delivered, Delivered::Committed { .. }) {
            bail!("write {n} changed nothing: {delivered:?}");
        }
    }
    Ok(took)
}

/// Writes per second and writes per commit with `concurrency` writers at once.
async fn infrahub_together(
    git: &LocalGit,
    repo: &Path,
    writes: &[usize],
    version: usize,
    concurrency: usize,
) -> anyhow::Result<(f64, f64)> {
    let before = commits(repo)?;
    let started = Instant::now();
    let done: Vec<_> =
        futures::stream::iter(writes.iter().map(|&n| async move {
            git.write(&file(n), Some(&manifest(n, version)), "bench").await
        }))
        .buffer_unordered(concurrency)
        .collect()
        .await;
    let seconds = started.elapsed().as_secs_f64();
    for delivered in done {
        if !matches!(delivered?, Delivered::Committed { .. }) {
            bail!("a concurrent write changed nothing");
        }
    }
    let made = commits(repo)? - before;
    Ok((writes.len() as f64 / seconds, writes.len() as f64 / made.max(1) as f64))
}

/// Milliseconds each of `writes` took by `git add` and `git commit`.
fn add_and_commit(repo: &Path, writes: &[usize], version: usize) -> anyhow::Result<Vec<f64>> {
    let mut took = Vec::with_capacity(writes.len());
    for &n in writes {
        let started = Instant::now();
        std::fs::write(repo.join(file(n)), manifest(n, version))?;
        git(repo, &["add", "--", &file(n)])?;
        git(repo, &["commit", "--quiet", "-m", "bench"])?;
        took.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    Ok(took)
}

fn median(values: Vec<f64>) -> f64 {
    stats::p50_p99_max(values)[0]
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(args.writes > 0 && args.rounds > 0 && args.concurrency > 0);
    anyhow::ensure!(args.writes * 3 <= args.files, "--files must be at least 3 x --writes");
    let dir = tempfile::tempdir()?;
    let repo = dir.path().join("gitops");
    std::fs::create_dir_all(repo.join("ber"))?;
    let started = Instant::now();
    for n in 0..args.files {
        std::fs::write(repo.join(file(n)), manifest(n, 1))?;
    }
    git(&repo, &["init", "--quiet", "-b", "main"])?;
    git(&repo, &["add", "-A"])?;
    // Packed, as a repository that has lived a while is: otherwise the first `gc --auto`
    // would pack the 20,000 new objects in the background while the writes are measured.
    git(&repo, &["-c", "maintenance.auto=false", "commit", "--quiet", "-m", "every project"])?;
    git(&repo, &["gc", "--quiet"])?;
    let seeded = started.elapsed().as_secs_f64();
    let config = GitConfig { path: repo.clone(), ..GitConfig::default() };
    let writer = LocalGit::new(&config);
    // The first write of a process looks over the working tree; it is not what is measured.
    let warm = writer.write(&file(0), Some(&manifest(0, 0)), "warm up").await?;
    anyhow::ensure!(matches!(warm, Delivered::Committed { .. }), "warm-up: {warm:?}");

    // Each measurement writes its own files, a different version each round.
    let stride = args.files / (3 * args.writes);
    let files = |part: usize| -> Vec<usize> {
        (0..args.writes).map(|i| (3 * i + part) * stride.max(1) + 1).collect()
    };
    let (mut lone, mut together, mut per_commit, mut peer) = (vec![], vec![], vec![], vec![]);
    let (mut lone_all, mut peer_all) = (vec![], vec![]);
    for round in 0..args.rounds {
        let version = round + 2;
        let took = infrahub_one_by_one(&writer, &files(0), version).await?;
        lone.push(median(took.clone()));
        lone_all.extend(took);
        let (rate, shared) =
            infrahub_together(&writer, &repo, &files(1), version, args.concurrency).await?;
        together.push(rate);
        per_commit.push(shared);
        let took = add_and_commit(&repo, &files(2), version)?;
        peer.push(median(took.clone()));
        peer_all.extend(took);
    }
    let status = git(&repo, &["status", "--porcelain"]).context("status")?;
    anyhow::ensure!(status.is_empty(), "the working tree is not clean: {status}");

    let [lone_p50, lone_p99, lone_max] = stats::p50_p99_max(lone_all);
    let [peer_p50, peer_p99, peer_max] = stats::p50_p99_max(peer_all);
    let rate = median(together);
    let shared = median(per_commit);
    println!(
        "{} manifests in one directory (seeded in {seeded:.1} s), {} writes a measurement, {} rounds",
        args.files, args.writes, args.rounds
    );
    println!();
    println!("| writer | writes | p50 ms | p99 ms | max ms | writes/s |");
    println!("| --- | --- | ---: | ---: | ---: | ---: |");
    println!(
        "| InfraHub `LocalGit` | one after another | {lone_p50:.1} | {lone_p99:.1} | {lone_max:.1} | {:.0} |",
        1000.0 / median(lone)
    );
    println!(
        "| InfraHub `LocalGit` | {} at once ({shared:.1} a commit) | | | | {rate:.0} |",
        args.concurrency
    );
    println!(
        "| `git add` + `git commit` | one after another | {peer_p50:.1} | {peer_p99:.1} | {peer_max:.1} | {:.0} |",
        1000.0 / median(peer)
    );
    println!();
    println!(
        "RESULT system=infrahub test=commit files={} p50_ms={lone_p50:.2} p99_ms={lone_p99:.2} max_ms={lone_max:.2}",
        args.files
    );
    println!(
        "RESULT system=infrahub test=commit files={} concurrency={} writes_per_s={rate:.1} writes_per_commit={shared:.2}",
        args.files, args.concurrency
    );
    println!(
        "RESULT system=git-add-commit test=commit files={} p50_ms={peer_p50:.2} p99_ms={peer_p99:.2} max_ms={peer_max:.2}",
        args.files
    );
    Ok(())
}
