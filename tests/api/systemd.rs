//! `Type=notify`: the real binary tells a (test) service manager READY=1 once it serves,
//! STATUS= lines on the way, WATCHDOG=1 while it runs and STOPPING=1 on SIGTERM; a worker-only
//! daemon serves its probes and metrics.

use std::time::Duration;

use reqwest::StatusCode;
use sqlx::PgPool;
use tokio::net::UnixDatagram;

use crate::e2e::spawn;
use crate::helpers::{TEST_SECRET, database_url};

/// The next datagram the daemon sent to the notification socket.
async fn next(socket: &UnixDatagram) -> String {
    let mut buffer = vec![0; 4096];
    let read = tokio::time::timeout(Duration::from_secs(30), socket.recv(&mut buffer))
        .await
        .expect("a notification within 30 s")
        .unwrap();
    String::from_utf8_lossy(&buffer[..read]).into_owned()
}

#[sqlx::test]
async fn a_worker_notifies_systemd_and_serves_probes(pool: PgPool) {
    infrahub::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&path).unwrap();
    let url = database_url(&pool);
    let env = [
        ("INFRAHUB_DATABASE__URL", url.as_str()),
        ("INFRAHUB_AUTH__JWT_SECRET", TEST_SECRET),
        ("NOTIFY_SOCKET", path.to_str().unwrap()),
        ("WATCHDOG_USEC", "400000"),
    ];
    let daemon = spawn(&["serve", "--role", "worker", "--listen", "127.0.0.1:0"], &env).await;

    let mut before_ready = Vec::new();
    let ready = loop {
        let message = next(&socket).await;
        if message.contains("READY=1") {
            break message;
        }
        before_ready.push(message.trim_end().to_owned());
    };
    assert!(
        before_ready.contains(&"STATUS=applying database migrations".to_owned()),
        "{before_ready:?}"
    );
    assert!(!before_ready.iter().any(|m| m.contains("WATCHDOG=1")), "no watchdog before READY");
    let status =
        ready.lines().find_map(|l| l.strip_prefix("STATUS=")).expect("a status with READY");
    assert!(status.starts_with("ready: running jobs on 127.0.0.1:"), "{status}");

    // Once ready, the worker's probes answer and migrations are current.
    let client = reqwest::Client::new();
    let address = status.rsplit(' ').next().unwrap();
    assert_eq!(format!("http://{address}"), daemon.base);
    for probe in ["/healthz", "/readyz", "/metrics"] {
        let answer = client.get(format!("{}{probe}", daemon.base)).send().await.unwrap();
        assert_eq!(answer.status(), StatusCode::OK, "{probe}");
    }
    let metrics =
        client.get(format!("{}/metrics", daemon.base)).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("infrahub_http_requests_total"), "{metrics}");
    let api = client.get(format!("{}/api/v1/me", daemon.base)).send().await.unwrap();
    assert_eq!(api.status(), StatusCode::NOT_FOUND, "a worker serves no API");

    // The watchdog pings at half of WATCHDOG_USEC.
    let mut pings = 0;
    while pings < 3 {
        if next(&socket).await.contains("WATCHDOG=1") {
            pings += 1;
        }
    }

    let pid = daemon.child.id().unwrap().to_string();
    let stopped = tokio::spawn(daemon.terminate());
    let stopping = loop {
        let message = next(&socket).await;
        if message.contains("STOPPING=1") {
            break message;
        }
    };
    assert!(stopping.contains("STATUS=stopping"), "{stopping}");
    assert!(stopped.await.unwrap().success(), "pid {pid} exits 0");
}

/// With `database.migrate_on_start = false` a daemon is not "started" (READY=1) before the
/// schema is current: it waits, saying so, and gets going once someone migrated.
#[sqlx::test(migrations = false)]
async fn a_daemon_waits_for_migrations_before_it_is_ready(pool: PgPool) {
    infrahub::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&path).unwrap();
    let url = database_url(&pool);
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_infrahub"))
        .args(["serve", "--role", "worker", "--listen", "127.0.0.1:0"])
        .current_dir(dir.path())
        .env("INFRAHUB_DATABASE__URL", &url)
        .env("INFRAHUB_DATABASE__MIGRATE_ON_START", "false")
        .env("INFRAHUB_AUTH__JWT_SECRET", TEST_SECRET)
        .env("NOTIFY_SOCKET", &path)
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    loop {
        let message = next(&socket).await;
        assert!(!message.contains("READY=1"), "ready before the schema is current: {message}");
        if message.contains("waiting for migrations") {
            break;
        }
    }
    infrahub::store::migrate_up(&pool).await.unwrap();
    loop {
        if next(&socket).await.contains("READY=1") {
            break;
        }
    }
    let pid = child.id().unwrap().to_string();
    tokio::process::Command::new("kill").args(["-TERM", &pid]).status().await.unwrap();
    assert!(child.wait().await.unwrap().success());
}
