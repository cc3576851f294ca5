//! The real binary on a free port, walked through the README's curl flow over TCP.

use std::process::Stdio;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::PgPool;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::helpers::{TEST_SECRET, database_url};

pub struct Daemon {
    pub child: Child,
    pub base: String,
}

/// Starts `infrahub <command> --listen 127.0.0.1:0` and waits for its "listening on" line.
async fn start(command: &str, env: &[(&str, &str)]) -> Daemon {
    spawn(&[command, "--listen", "127.0.0.1:0"], env).await
}

/// Starts `infrahub <args>` and waits until it says it is listening (or, without HTTP,
/// running); `base` is its URL, or empty for a worker-only daemon.
pub async fn spawn(args: &[&str], env: &[(&str, &str)]) -> Daemon {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_infrahub"));
    cmd.args(args)
        .current_dir(dir.path())
        .envs(env.iter().copied())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true);
    let mut child = cmd.spawn().expect("infrahub starts");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let base = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(rest) = line.split("listening on ").nth(1) {
                return rest.split_whitespace().next().unwrap().to_owned();
            }
            if line.contains("InfraHub worker running") {
                return String::new();
            }
        }
        panic!("infrahub exited before listening");
    })
    .await
    .expect("infrahub listens within a minute");
    Daemon { child, base }
}

impl Daemon {
    /// SIGTERM, then the exit status.
    pub async fn terminate(self) -> std::process::ExitStatus {
        self.signal("-TERM").await
    }

    /// SIGKILL: no chance to clean up.
    pub async fn kill(self) -> std::process::ExitStatus {
        self.signal("-KILL").await
    }

    async fn signal(mut self, signal: &str) -> std::process::ExitStatus {
        let pid = self.child.id().unwrap().to_string();
        let killed = Command::new("kill").args([signal, &pid]).status().await.unwrap();
        assert!(killed.success());
        tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .expect("infrahub exits within 30 s of the signal")
            .unwrap()
    }
}

async fn login(
    client: &reqwest::Client,
    base: &str,
    user: &str,
    password: &str,
    content_type: bool,
) -> reqwest::Response {
    let mut request = client
        .post(format!("{base}/api/v1/auth/login"))
        .body(json!({ "username": user, "password": password }).to_string());
    if content_type {
        request = request.header("Content-Type", "application/json");
    }
    request.send().await.unwrap()
}

async fn me(client: &reqwest::Client, base: &str, token: &str) -> Value {
    let response = client.get(format!("{base}/api/v1/me")).bearer_auth(token).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    response.json().await.unwrap()
}

#[sqlx::test(migrations = false)]
async fn demo_serves_the_documented_flow_and_stops_on_sigterm(pool: PgPool) {
    let url = database_url(&pool);
    let daemon = start("demo", &[("INFRAHUB_DATABASE__URL", &url)]).await;
    let client = reqwest::Client::new();
    let base = daemon.base.clone();

    let ready = client.get(format!("{base}/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), StatusCode::OK);

    for (user, password, role, with_content_type) in [
        ("team-platform", "password", "team_lead", true),
        ("field-berlin", "password", "field_admin", false),
        ("admin", "admin", "center_admin", false),
    ] {
        let response = login(&client, &base, user, password, with_content_type).await;
        assert_eq!(response.status(), StatusCode::OK, "{user}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["token_type"], "bearer");
        let token = body["access_token"].as_str().unwrap();
        let me = me(&client, &base, token).await;
        assert_eq!((me["username"].as_str(), me["role"].as_str()), (Some(user), Some(role)));
        if role != "center_admin" {
            assert_eq!(me["field"]["name"], "berlin");
        }
        if role == "team_lead" {
            assert_eq!(me["department"]["name"], "platform");
        }
    }
    let wrong = login(&client, &base, "admin", "wrong", true).await;
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);

    let status = daemon.terminate().await;
    assert!(status.success(), "graceful exit, got {status:?}");

    // A second demo on the same database is fine.
    let again = start("demo", &[("INFRAHUB_DATABASE__URL", &url)]).await;
    let response = login(&client, &again.base, "admin", "admin", false).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(again.terminate().await.success());
    let admins: i64 = sqlx::query_scalar("SELECT count(*) FROM users WHERE username = 'admin'")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(admins, 1);
}

#[sqlx::test(migrations = false)]
async fn serve_migrates_refuses_demo_accounts_and_drains_on_sigterm(pool: PgPool) {
    let url = database_url(&pool);
    let env =
        [("INFRAHUB_DATABASE__URL", url.as_str()), ("INFRAHUB_AUTH__JWT_SECRET", TEST_SECRET)];
    let daemon = start("serve", &env).await;
    assert!(
        infrahub::store::schema_is_current(&pool).await.unwrap(),
        "serve applied the migrations"
    );
    let ctx = crate::helpers::context_with(pool.clone(), infrahub::config::Mode::Demo, |_| {});
    infrahub::app::demo::bootstrap(&ctx).await.unwrap();
    let client = reqwest::Client::new();
    let response = login(&client, &daemon.base, "admin", "admin", true).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "demo accounts only work in the demo");
    assert!(daemon.terminate().await.success());
}
