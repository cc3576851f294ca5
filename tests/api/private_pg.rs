//! A PostgreSQL server of the test's own (initdb and pg_ctl in a temporary directory), for
//! tests that stop and start the database under a running daemon. The shared server the
//! other tests use must never go away.

use std::path::{Path, PathBuf};
use std::process::Command;

use sqlx::postgres::PgPoolOptions;
use sqlx::{Executor, PgPool};

pub struct PrivatePostgres {
    bin: PathBuf,
    data: PathBuf,
    log: PathBuf,
    port: u16,
    /// Holds the data directory; removed when the server is dropped (after it is stopped).
    _dir: tempfile::TempDir,
}

/// The newest installed PostgreSQL's programs (Debian keeps them out of `PATH`), or
/// `INFRAHUB_TEST_PG_BIN`.
fn bin_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("INFRAHUB_TEST_PG_BIN") {
        return PathBuf::from(dir);
    }
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output()
        && out.status.success()
    {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if dir.join("initdb").exists() {
            return dir;
        }
    }
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL's programs in /usr/lib/postgresql (or set INFRAHUB_TEST_PG_BIN)")
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|bin| bin.join("initdb").exists())
        .collect();
    versions.sort_by_key(|p| {
        p.parent().and_then(|v| v.file_name()?.to_str()?.parse::<u32>().ok()).unwrap_or(0)
    });
    versions.pop().expect("an installed PostgreSQL with initdb")
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.trim_ascii() == b"0")
}

/// Runs a PostgreSQL program, as user `postgres` when we are root (the server refuses root).
fn run(program: &Path, args: &[&str]) {
    let mut command = if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    };
    let out = command.args(args).output().expect("PostgreSQL's programs run");
    assert!(
        out.status.success(),
        "{} {args:?}: {}{}",
        program.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl PrivatePostgres {
    /// A new cluster on a free port, started, with database `infrahub`.
    pub async fn start() -> Self {
        // As root, somewhere user postgres can reach whatever TMPDIR says.
        let dir = if is_root() {
            tempfile::Builder::new().prefix("infrahub-pg").tempdir_in("/tmp").unwrap()
        } else {
            tempfile::tempdir().unwrap()
        };
        if is_root() {
            let owned = Command::new("chown").arg("postgres:").arg(dir.path()).status().unwrap();
            assert!(owned.success(), "the directory is handed to user postgres");
        }
        let port = crate::chaos::free_port();
        let server = Self {
            bin: bin_dir(),
            data: dir.path().join("data"),
            log: dir.path().join("server.log"),
            port,
            _dir: dir,
        };
        let data = server.data.to_str().unwrap();
        run(
            &server.bin.join("initdb"),
            &["-D", data, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync", "-N"],
        );
        server.up();
        let admin = PgPoolOptions::new()
            .max_connections(1)
            .connect(&server.url("postgres"))
            .await
            .expect("the private server answers");
        admin.execute("CREATE DATABASE infrahub").await.unwrap();
        admin.close().await;
        server
    }

    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// A pool on database `infrahub` that reconnects on its own after a restart.
    pub async fn pool(&self) -> PgPool {
        PgPoolOptions::new().max_connections(4).connect(&self.url("infrahub")).await.unwrap()
    }

    /// Starts the server and waits until it accepts connections.
    pub fn up(&self) {
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -c unix_socket_directories='' -c fsync=off",
            self.port
        );
        run(
            &self.bin.join("pg_ctl"),
            &[
                "-D",
                self.data.to_str().unwrap(),
                "-l",
                self.log.to_str().unwrap(),
                "-o",
                &options,
                "-w",
                "start",
            ],
        );
    }

    /// Stops the server: `fast` (sessions are ended, as on a planned restart) or `immediate`
    /// (as if it crashed; it recovers from its WAL when started again).
    pub fn down(&self, mode: &str) {
        run(
            &self.bin.join("pg_ctl"),
            &["-D", self.data.to_str().unwrap(), "-m", mode, "-w", "stop"],
        );
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let mut command = if is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(self.bin.join("pg_ctl"));
            c
        } else {
            Command::new(self.bin.join("pg_ctl"))
        };
        let _ =
            command.args(["-D", self.data.to_str().unwrap(), "-m", "immediate", "stop"]).output();
    }
}
