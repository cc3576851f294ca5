//! The binary's command line: exit codes, one-line errors, migrations and accounts.

use std::path::Path;
use std::process::{Output, Stdio};

use infrahub::config::Mode;
use infrahub::domain::password;
use sqlx::PgPool;
use tokio::io::AsyncWriteExt;

use crate::helpers::{TEST_SECRET, context_with, database_url};

/// Runs `infrahub` in an empty directory with only the given `INFRAHUB_*` variables.
pub async fn infrahub(args: &[&str], env: &[(&str, &str)], stdin: Option<&str>) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_infrahub"));
    command
        .args(args)
        .current_dir(dir.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (key, _) in std::env::vars().filter(|(k, _)| k.starts_with("INFRAHUB_") || k == "RUST_LOG")
    {
        command.env_remove(key);
    }
    command.envs(env.iter().copied());
    let mut child = command.spawn().expect("infrahub starts");
    let mut input = child.stdin.take().unwrap();
    if let Some(text) = stdin {
        // A command that refuses its arguments may exit before it reads its input.
        match input.write_all(text.as_bytes()).await {
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
            written => written.unwrap(),
        }
    }
    drop(input);
    child.wait_with_output().await.unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Asserts the exit code and that stderr's last line starts with `infrahub:` and holds `needle`.
fn assert_fails(output: &Output, code: i32, needle: &str) {
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(code), "stderr: {stderr}");
    let last = stderr.lines().last().unwrap_or_default();
    assert!(last.starts_with("infrahub: ") && last.contains(needle), "stderr: {stderr}");
}

#[tokio::test]
async fn help_explains_every_command_and_bad_usage_exits_2() {
    let output = infrahub(&["--help"], &[], None).await;
    assert_eq!(output.status.code(), Some(0));
    let help = text(&output.stdout);
    for command in ["serve", "demo", "migrate", "user", "config"] {
        assert!(help.contains(command), "{help}");
    }
    for args in [
        &["serve", "--help"][..],
        &["demo", "--help"],
        &["migrate", "down", "--help"],
        &["user", "add", "--help"],
        &["config", "check", "--help"],
    ] {
        let output = infrahub(args, &[], None).await;
        assert_eq!(output.status.code(), Some(0), "{args:?}");
        assert!(!output.stdout.is_empty(), "{args:?}");
    }
    for args in [
        &["frobnicate"][..],
        &["migrate", "down", "--steps", "x"],
        &["user", "add", "x", "--role", "king"],
    ] {
        assert_eq!(infrahub(args, &[], None).await.status.code(), Some(2), "{args:?}");
    }
}

#[tokio::test]
async fn configuration_errors_exit_2_naming_the_key() {
    let output =
        infrahub(&["config", "check"], &[("INFRAHUB_HTTP__LISTEN", "nowhere")], None).await;
    assert_fails(&output, 2, "http.listen");
    let output = infrahub(&["config", "check"], &[("INFRAHUB_HTTP__LISTN", "1")], None).await;
    assert_fails(&output, 2, "listn");
    let output = infrahub(&["serve"], &[], None).await;
    assert_fails(&output, 2, "auth.jwt_secret");
    let demo_secret =
        ("INFRAHUB_AUTH__JWT_SECRET", "infrahub-demo-jwt-secret-do-not-use-in-production");
    assert_fails(&infrahub(&["serve"], &[demo_secret], None).await, 2, "publicly known");
    assert_fails(
        &infrahub(&["serve"], &[("INFRAHUB_AUTH__JWT_SECRET", "short")], None).await,
        2,
        "too short",
    );
    let output =
        infrahub(&["--config", "/nonexistent/infrahub.toml", "config", "check"], &[], None).await;
    assert_fails(&output, 2, "/nonexistent/infrahub.toml");
    let output =
        infrahub(&["config", "check"], &[("INFRAHUB_CONFIG", "/nonexistent/x.toml")], None).await;
    assert_fails(&output, 2, "/nonexistent/x.toml");
}

#[tokio::test]
async fn config_check_prints_the_configuration_without_secrets() {
    let env = [
        ("INFRAHUB_AUTH__JWT_SECRET", TEST_SECRET),
        ("INFRAHUB_DATABASE__URL", "postgres://app:pa55word-xyz@db.example:5432/hub"),
        ("INFRAHUB_HTTP__LISTEN", "0.0.0.0:9999"),
    ];
    let output = infrahub(&["config", "check"], &env, None).await;
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    let printed = text(&output.stdout);
    assert!(printed.contains("listen = \"0.0.0.0:9999\""), "{printed}");
    assert!(printed.contains("db.example"), "{printed}");
    assert!(!printed.contains(TEST_SECRET) && !printed.contains("pa55word-xyz"), "{printed}");
    assert!(printed.contains("[redacted]"), "{printed}");

    let output = infrahub(&["config", "check", "--demo"], &[], None).await;
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    assert!(text(&output.stdout).contains("infrahub_demo"));
}

#[tokio::test]
async fn an_unreachable_database_exits_1_naming_the_url() {
    let env = [
        ("INFRAHUB_DATABASE__URL", "postgres://postgres:hidden-pw@127.0.0.1:1/nowhere"),
        ("INFRAHUB_DATABASE__ACQUIRE_TIMEOUT_SECS", "2"),
    ];
    let output = infrahub(&["migrate", "status"], &env, None).await;
    assert_fails(
        &output,
        1,
        "cannot connect to PostgreSQL at postgres://postgres:[redacted]@127.0.0.1:1/nowhere",
    );
    assert!(!text(&output.stderr).contains("hidden-pw"));
}

#[sqlx::test(migrations = false)]
async fn migrate_up_down_and_status(pool: PgPool) {
    let url = database_url(&pool);
    let env = [("INFRAHUB_DATABASE__URL", url.as_str())];
    let status = text(&infrahub(&["migrate", "status"], &env, None).await.stdout);
    let migrations =
        infrahub::store::MIGRATOR.iter().filter(|m| m.migration_type.is_up_migration()).count();
    assert_eq!(status.lines().filter(|l| l.ends_with("pending")).count(), migrations, "{status}");
    assert_eq!(infrahub(&["migrate", "up"], &env, None).await.status.code(), Some(0));
    let status = text(&infrahub(&["migrate", "status"], &env, None).await.stdout);
    assert_eq!(status.lines().filter(|l| l.ends_with("applied")).count(), migrations, "{status}");
    let down = infrahub(&["migrate", "down", "--steps", "2"], &env, None).await;
    assert_eq!(down.status.code(), Some(0));
    assert_eq!(text(&down.stdout).lines().filter(|l| l.starts_with("reverted")).count(), 2);
    let status = text(&infrahub(&["migrate", "status"], &env, None).await.stdout);
    assert_eq!(status.lines().filter(|l| l.ends_with("pending")).count(), 2, "{status}");
    assert_eq!(infrahub(&["migrate", "up"], &env, None).await.status.code(), Some(0));
    assert!(infrahub::store::schema_is_current(&pool).await.unwrap());
}

async fn password_of(pool: &PgPool, username: &str) -> String {
    sqlx::query_scalar("SELECT password_hash FROM users WHERE username = $1")
        .bind(username)
        .fetch_one(pool)
        .await
        .unwrap()
}

#[sqlx::test]
async fn user_add_list_and_passwd(pool: PgPool) {
    infrahub::app::demo::bootstrap(&context_with(pool.clone(), Mode::Demo, |_| {})).await.unwrap();
    let url = database_url(&pool);
    let env = [("INFRAHUB_DATABASE__URL", url.as_str())];
    let add = [
        "user",
        "add",
        "alice",
        "--role",
        "team_lead",
        "--department",
        "platform",
        "--password-stdin",
    ];
    let output = infrahub(&add, &env, Some("first-password\n")).await;
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    assert!(password::verify("first-password", &password_of(&pool, "alice").await));
    assert_fails(&infrahub(&add, &env, Some("first-password\n")).await, 2, "already exists");

    let no_field = ["user", "add", "bob", "--role", "field_admin", "--password-stdin"];
    assert_fails(&infrahub(&no_field, &env, Some("bob-password\n")).await, 2, "--field");
    let bad_field =
        ["user", "add", "bob", "--role", "field_admin", "--field", "nope", "--password-stdin"];
    assert_fails(&infrahub(&bad_field, &env, Some("bob-password\n")).await, 2, "no field named");
    let short = ["user", "add", "bob", "--role", "center_admin", "--password-stdin"];
    assert_fails(&infrahub(&short, &env, Some("short\n")).await, 2, "password");
    let no_tty = ["user", "add", "bob", "--role", "center_admin"];
    assert_fails(&infrahub(&no_tty, &env, None).await, 2, "--password-stdin");

    let list = text(&infrahub(&["user", "list"], &env, None).await.stdout);
    let alice = list.lines().find(|l| l.starts_with("alice")).expect("alice listed");
    assert!(alice.contains("team_lead") && alice.contains("department platform"), "{list}");
    let admin = list.lines().find(|l| l.starts_with("admin")).expect("admin listed");
    assert!(admin.contains("demo"), "{list}");

    let passwd = ["user", "passwd", "alice", "--password-stdin"];
    let output = infrahub(&passwd, &env, Some("second-password\n")).await;
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    let hash = password_of(&pool, "alice").await;
    assert!(
        password::verify("second-password", &hash) && !password::verify("first-password", &hash)
    );
    let unknown = ["user", "passwd", "nobody", "--password-stdin"];
    assert_fails(&infrahub(&unknown, &env, Some("second-password\n")).await, 2, "no user named");
}

/// The binary's directory must not matter: the demo config is embedded.
#[test]
fn the_binary_exists() {
    assert!(Path::new(env!("CARGO_BIN_EXE_infrahub")).is_file());
}
