//! The command-line client (`infrahub login`, `projects`, `jobs`, ...): the real binary
//! against a real daemon over TCP, with its session in a private config directory.

use std::process::{Output, Stdio};
use std::sync::{Arc, Mutex};

use axum::http::{HeaderMap, StatusCode as AxumStatus};
use infrahub::config::Mode;
use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::PgPool;
use tokio::io::AsyncWriteExt;

use crate::helpers::{PASSWORD, TestApp};

/// A user's shell: its own config directory (where the session lives) and the daemon's URL.
struct Shell {
    home: tempfile::TempDir,
    base: String,
}

struct Ran {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Ran {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("{e}: {}", self.stdout))
    }

    fn ok(self) -> Self {
        assert_eq!(self.code, 0, "stdout: {}\nstderr: {}", self.stdout, self.stderr);
        self
    }
}

impl Shell {
    fn new(base: &str) -> Self {
        Self { home: tempfile::tempdir().unwrap(), base: base.to_owned() }
    }

    async fn run(&self, args: &[&str], stdin: Option<&str>) -> Ran {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_infrahub"));
        command
            .args(args)
            .current_dir(self.home.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (key, _) in std::env::vars().filter(|(k, _)| k.starts_with("INFRAHUB_")) {
            command.env_remove(key);
        }
        command.env("XDG_CONFIG_HOME", self.home.path()).env("HOME", self.home.path());
        let mut child = command.spawn().expect("infrahub starts");
        let mut input = child.stdin.take().unwrap();
        if let Some(text) = stdin {
            input.write_all(text.as_bytes()).await.unwrap();
        }
        drop(input);
        let Output { status, stdout, stderr } = child.wait_with_output().await.unwrap();
        Ran {
            code: status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&stdout).into_owned(),
            stderr: String::from_utf8_lossy(&stderr).into_owned(),
        }
    }

    async fn login(&self, username: &str) {
        let args = ["login", "--url", &self.base, "-u", username, "--password-stdin"];
        let ran = self.run(&args, Some(&format!("{PASSWORD}\n"))).await.ok();
        assert!(ran.stderr.contains(&format!("as {username}")), "{}", ran.stderr);
    }
}

#[sqlx::test]
async fn a_team_lead_creates_a_project_and_waits_for_it(pool: PgPool) {
    let app = TestApp::spawn_daemon(pool, Mode::Serve, |_| {}).await;
    app.give_quota(16, 64).await;
    let shell = Shell::new(&app.base);

    let refused = shell.run(&["projects", "list"], None).await;
    assert_eq!(refused.code, 2);
    assert!(refused.stderr.contains("not logged in"), "{}", refused.stderr);

    shell.login("shop-lead").await;
    let session = shell.home.path().join("infrahub/session.json");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&session).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "the token is readable by its owner only");
    }
    let saved: Value = serde_json::from_str(&std::fs::read_to_string(&session).unwrap()).unwrap();
    assert_eq!(saved["url"], app.base);

    let created = shell
        .run(
            &[
                "projects", "create", "web", "--site", "fra", "--sla", "bronze", "--tier",
                "regular", "--wait",
            ],
            None,
        )
        .await
        .ok();
    assert!(created.stdout.contains("project web"), "{}", created.stdout);
    assert!(
        created.stderr.contains("succeeded"),
        "the progress line ends succeeded: {}",
        created.stderr
    );

    let listed = shell.run(&["projects", "list", "-o", "json"], None).await.ok().json();
    assert_eq!(listed.as_array().unwrap().len(), 1);
    assert_eq!(listed[0]["name"], "web");
    assert_eq!(listed[0]["status"], "active");
    let table = shell.run(&["projects", "list"], None).await.ok().stdout;
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].starts_with("NAME") && lines[1].starts_with("web"), "{table}");
    assert!(lines[1].contains("active"), "{table}");

    let shown = shell.run(&["projects", "show", "web"], None).await.ok().stdout;
    assert!(shown.lines().any(|l| l.starts_with("status") && l.ends_with("active")), "{shown}");
    let id = listed[0]["id"].as_str().unwrap();
    let by_id = shell.run(&["projects", "show", id, "--output", "json"], None).await.ok().json();
    assert_eq!(by_id["namespace"], listed[0]["namespace"]);

    let jobs = shell.run(&["jobs", "list", "-o", "json"], None).await.ok().json();
    let job = jobs["items"][0]["id"].as_str().unwrap().to_owned();
    let shown = shell.run(&["jobs", "show", &job], None).await.ok().stdout;
    assert!(shown.contains("provision_namespace") && shown.contains("succeeded"), "{shown}");
    shell.run(&["jobs", "wait", &job], None).await.ok();

    // Refusals print the API's message, code and details, and exit 2.
    let bad = shell
        .run(
            &[
                "projects", "create", "api", "--site", "fra", "--sla", "platinum", "--tier",
                "regular",
            ],
            None,
        )
        .await;
    assert_eq!(bad.code, 2, "{}", bad.stderr);
    assert!(bad.stderr.contains("sla_type: must be one of"), "{}", bad.stderr);
    assert!(bad.stderr.contains("(invalid_value, HTTP 422)"), "{}", bad.stderr);
    assert!(bad.stderr.contains("field: sla_type"), "{}", bad.stderr);

    // Deleting asks for confirmation; with --yes it goes, and waits for the namespace to go.
    let unconfirmed = shell.run(&["projects", "delete", "web"], None).await;
    assert_eq!(unconfirmed.code, 2);
    assert!(unconfirmed.stderr.contains("--yes"), "{}", unconfirmed.stderr);
    shell.run(&["projects", "delete", "web", "--yes", "--wait"], None).await.ok();
    let project = app.get(&format!("/api/v1/projects/{id}"), &app.team_lead_token().await).await;
    assert_eq!(project.body["status"], "deleted");

    let gone = shell.run(&["projects", "show", "web"], None).await;
    assert_eq!(gone.code, 2);
    assert!(gone.stderr.contains("no project named \"web\""), "{}", gone.stderr);
    shell.run(&["logout"], None).await.ok();
    assert!(!session.exists());
}

#[sqlx::test]
async fn a_repeated_command_with_its_key_acts_once(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    app.give_quota(16, 64).await;
    let shell = Shell::new(&app.base);
    shell.login("shop-lead").await;
    let args = [
        "projects",
        "create",
        "web",
        "--site",
        "fra",
        "--sla",
        "bronze",
        "--tier",
        "regular",
        "--idempotency-key",
        "deploy-42",
        "-o",
        "json",
    ];
    let first = shell.run(&args, None).await.ok().json();
    let second = shell.run(&args, None).await.ok().json();
    assert_eq!(first["id"], second["id"]);
    assert_eq!(first["job_id"], second["job_id"]);
    let count: i64 =
        sqlx::query_scalar("SELECT count(*) FROM projects").fetch_one(&app.pool).await.unwrap();
    assert_eq!(count, 1);

    // The job never runs here (jobs run only when the test says): waiting times out with 3.
    let job = first["job_id"].as_str().unwrap();
    let waited = shell.run(&["jobs", "wait", job, "--timeout", "0"], None).await;
    assert_eq!(waited.code, 3, "{}", waited.stderr);
    assert!(waited.stderr.contains("still queued"), "{}", waited.stderr);

    // A cancelled job: waiting ends with 1 and says why.
    let admin = app.admin_token().await;
    app.post(&format!("/api/v1/jobs/{job}/cancel"), &admin, json!({}))
        .await
        .expect(StatusCode::OK, None);
    let waited = shell.run(&["jobs", "wait", job], None).await;
    assert_eq!(waited.code, 1, "{}", waited.stderr);
    assert!(waited.stderr.contains("cancelled"), "{}", waited.stderr);

    // The saved token goes only to the daemon that issued it.
    let elsewhere = shell.run(&["projects", "list", "--url", "http://127.0.0.1:9"], None).await;
    assert_eq!(elsewhere.code, 2, "{}", elsewhere.stderr);
    assert!(elsewhere.stderr.contains("the saved session is for"), "{}", elsewhere.stderr);
    let same = format!("{}/", app.base);
    shell.run(&["projects", "list", "--url", &same], None).await.ok();
}

#[sqlx::test]
async fn admins_read_capacity_set_quotas_and_sync(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    app.add_server("s-1", 32, Some(app.org.field)).await;
    let field_admin = Shell::new(&app.base);
    field_admin.login("retail-admin").await;
    let capacity = field_admin.run(&["capacity", "retail"], None).await.ok().stdout;
    assert!(
        capacity.contains("SITE") && capacity.lines().any(|l| l.starts_with("fra")),
        "{capacity}"
    );
    let report = field_admin.run(&["capacity", "retail", "-o", "json"], None).await.ok().json();
    assert_eq!(report["sites"][0]["servers"], 1);

    let dept = app.org.dept.to_string();
    let set =
        ["quota", "set", "--department", &dept, "--site", "fra", "--cpu", "8", "--ram-gb", "32"];
    let answer = field_admin.run(&set, None).await.ok().stdout;
    assert!(answer.contains("quota of"), "{answer}");
    app.run_jobs().await;
    let quota = field_admin
        .run(&["quota", "show", "--department", &dept, "-o", "json"], None)
        .await
        .ok()
        .json();
    assert_eq!(quota["sites"][0]["quota"], json!({ "cpu": 8, "ram_gb": 32 }));
    // Losing s-1, by name, would leave the whole 8 CPU quota of shop unbacked.
    let impact = field_admin.run(&["capacity", "retail", "--without", "s-1"], None).await.ok();
    assert!(
        impact.stdout.lines().any(|l| l.starts_with("shop") && l.contains("8/32")),
        "{}",
        impact.stdout
    );
    let impact = field_admin
        .run(&["capacity", "retail", "--without", "s-1", "-o", "json"], None)
        .await
        .ok()
        .json();
    assert_eq!(impact["sites"][0]["deficit_after"], json!({ "cpu": 8, "ram_gb": 32 }));
    let unknown = field_admin.run(&["capacity", "retail", "--without", "s-9"], None).await;
    assert_eq!(unknown.code, 2, "{}", unknown.stderr);
    let too_much =
        ["quota", "set", "--department", &dept, "--site", "fra", "--cpu", "9000", "--ram-gb", "32"];
    let refused = field_admin.run(&too_much, None).await;
    assert_eq!(refused.code, 2, "{}", refused.stderr);
    assert!(refused.stderr.contains("HTTP 409"), "{}", refused.stderr);
    let other = field_admin.run(&["capacity", "finance"], None).await;
    assert_eq!(other.code, 2);

    let admin = Shell::new(&app.base);
    admin.login("root").await;
    let servers = admin.run(&["servers", "list", "-o", "json"], None).await.ok().json();
    assert_eq!(servers[0]["name"], "s-1");
    let by_name = admin.run(&["quota", "show", "--department", "shop"], None).await.ok().stdout;
    assert!(by_name.lines().any(|l| l.starts_with("fra")), "{by_name}");
    let synced = admin.run(&["servers", "sync"], None).await.ok().stdout;
    assert!(synced.starts_with("server sync: job "), "{synced}");
    let lead = Shell::new(&app.base);
    lead.login("shop-lead").await;
    let refused = lead.run(&["servers", "sync"], None).await;
    assert_eq!(refused.code, 2);
    assert!(refused.stderr.contains("HTTP 403"), "{}", refused.stderr);
}

/// A daemon that is briefly away (503) gets the same write again with the same key.
#[tokio::test]
async fn writes_are_retried_with_the_same_key() {
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let recorded = seen.clone();
    let handler = move |headers: HeaderMap| {
        let recorded = recorded.clone();
        async move {
            let key = headers
                .get("idempotency-key")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned();
            let mut seen = recorded.lock().unwrap();
            seen.push(key);
            if seen.len() == 1 {
                let body = json!({ "error": { "code": "unavailable", "message": "database away", "details": {} } });
                return (AxumStatus::SERVICE_UNAVAILABLE, axum::Json(body));
            }
            let id = uuid::Uuid::now_v7();
            (
                AxumStatus::ACCEPTED,
                axum::Json(json!({ "job_id": id, "status": "queued", "existing": false })),
            )
        }
    };
    let router =
        axum::Router::new().route("/api/v1/admin/sync/servers", axum::routing::post(handler));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });

    let shell = Shell::new(&base);
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_infrahub"));
    command
        .args(["servers", "sync", "--url", &base])
        .env("XDG_CONFIG_HOME", shell.home.path())
        .env("INFRAHUB_TOKEN", "a-token")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let out = command.output().await.unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let keys = seen.lock().unwrap().clone();
    assert_eq!(keys.len(), 2);
    assert!(!keys[0].is_empty());
    assert_eq!(keys[0], keys[1], "the retry carries the first attempt's key");
}

#[tokio::test]
async fn completions_and_the_manual_page_are_printed() {
    let shell = Shell::new("http://127.0.0.1:1");
    for shell_name in ["bash", "zsh", "fish"] {
        let script = shell.run(&["completions", shell_name], None).await.ok().stdout;
        assert!(script.contains("infrahub") && script.contains("projects"), "{shell_name}");
    }
    let page = shell.run(&["manpage"], None).await.ok().stdout;
    assert!(page.contains(".TH infrahub") && page.contains("login"), "{page}");
    let unreachable = shell
        .run(&["login", "--url", "http://127.0.0.1:1", "-u", "x", "--password-stdin"], Some("pw\n"))
        .await;
    assert_eq!(unreachable.code, 1);
    assert!(
        unreachable.stderr.contains("cannot reach InfraHub at http://127.0.0.1:1/"),
        "{}",
        unreachable.stderr
    );
}

/// `jobs wait` on a change a newer one superseded follows the newer job to its end.
#[sqlx::test]
async fn waiting_on_a_superseded_change_follows_the_newer_one(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    app.add_server("s-1", 32, Some(app.org.field)).await;
    let shell = Shell::new(&app.base);
    shell.login("retail-admin").await;
    let dept = app.org.dept.to_string();
    let set = |cpu: &'static str| {
        [
            "quota",
            "set",
            "--department",
            "",
            "--site",
            "fra",
            "--cpu",
            cpu,
            "--ram-gb",
            "8",
            "-o",
            "json",
        ]
    };
    let mut first = set("4");
    first[3] = &dept;
    let older = shell.run(&first, None).await.ok().json();
    let mut second = set("6");
    second[3] = &dept;
    let newer = shell.run(&second, None).await.ok().json();
    app.run_jobs().await;
    let older_id = older["job_id"].as_str().unwrap();
    let waited = shell.run(&["jobs", "wait", older_id], None).await;
    assert_eq!(waited.code, 0, "{}", waited.stderr);
    let newer_id = newer["job_id"].as_str().unwrap();
    assert!(waited.stderr.contains(&format!("superseded by job {newer_id}")), "{}", waited.stderr);
    assert!(waited.stderr.contains("succeeded"), "{}", waited.stderr);
}

#[sqlx::test]
async fn a_field_admin_approves_and_rejects_requests_from_the_command_line(pool: PgPool) {
    let app = TestApp::spawn_with(pool, Mode::Serve, |c| c.approval.cpu_above = Some(4)).await;
    app.give_quota(32, 128).await;
    let lead = Shell::new(&app.base);
    lead.login("shop-lead").await;
    let ask = |name: &'static str| {
        ["projects", "create", name, "--site", "fra", "--sla", "silver", "--tier", "high"]
    };
    let asked = lead.run(&ask("ledger"), None).await.ok().stdout;
    assert!(asked.contains("waiting for a field admin's approval"), "{asked}");
    assert!(asked.contains("8 CPU is above"), "{asked}");
    lead.run(&ask("vault"), None).await.ok();
    let shown = lead.run(&["projects", "show", "ledger"], None).await.ok().stdout;
    assert!(shown.contains("pending_approval") && shown.contains("approval expires"), "{shown}");
    let refused = lead.run(&["projects", "approve", "ledger"], None).await;
    assert_eq!(refused.code, 2, "{}", refused.stderr);

    let admin = Shell::new(&app.base);
    admin.login("retail-admin").await;
    let waiting = admin.run(&["projects", "list", "--status", "pending_approval"], None).await.ok();
    assert!(waiting.stdout.contains("ledger") && waiting.stdout.contains("vault"));
    let approved = admin.run(&["projects", "approve", "ledger"], None).await.ok();
    assert!(approved.stdout.contains("project ledger approved: job"), "{}", approved.stdout);
    let rejected = admin
        .run(&["projects", "reject", "vault", "--reason", "one is enough", "-o", "json"], None)
        .await
        .ok()
        .json();
    assert_eq!(rejected["status"], "rejected");
    assert!(rejected["project"]["failure_reason"].as_str().unwrap().ends_with("one is enough"));
    let again = admin.run(&["projects", "reject", "ledger", "--reason", "late"], None).await;
    assert_eq!(again.code, 2, "{}", again.stderr);
    assert!(
        again.stderr.contains("not_pending")
            || again.stderr.contains("only a request pending approval"),
        "{}",
        again.stderr
    );
    // The team lead reads why, by name, though the request has ended.
    let vault = lead.run(&["projects", "show", "vault"], None).await.ok().stdout;
    assert!(vault.contains("rejected") && vault.contains("one is enough"), "{vault}");
    app.run_jobs().await;
    let ledger = lead.run(&["projects", "show", "ledger", "-o", "json"], None).await.ok().json();
    assert_eq!(ledger["status"], "active", "approved, then provisioned");
}

#[sqlx::test]
async fn a_team_lead_deletes_and_restores_from_the_command_line(pool: PgPool) {
    let app = TestApp::spawn_with(pool, Mode::Serve, |c| c.deletion.grace_secs = 600).await;
    app.give_quota(8, 32).await;
    let lead = Shell::new(&app.base);
    lead.login("shop-lead").await;
    let later = (chrono::Utc::now() + chrono::Duration::days(1)).to_rfc3339();
    let create =
        ["projects", "create", "web", "--site", "fra", "--sla", "bronze", "--tier", "regular"];
    let mut with_ttl = create.to_vec();
    with_ttl.extend(["--expires-at", &later]);
    lead.run(&with_ttl, None).await.ok();
    app.run_jobs().await;
    let shown = lead.run(&["projects", "show", "web"], None).await.ok().stdout;
    assert!(
        shown.lines().any(|l| l.starts_with("expires ") && l.contains(&later[..10])),
        "{shown}"
    );
    let said = lead.run(&["projects", "delete", "web", "--yes"], None).await.ok().stdout;
    assert!(
        said.contains("scheduled for deletion at") && said.contains("projects restore"),
        "{said}"
    );
    let said = lead.run(&["projects", "restore", "web"], None).await.ok().stdout;
    assert!(said.contains("project web restored: job"), "{said}");
    let again = lead.run(&["projects", "restore", "web"], None).await;
    assert_eq!(again.code, 2, "{}", again.stderr);
    app.run_jobs().await;
    let web = lead.run(&["projects", "show", "web", "-o", "json"], None).await.ok().json();
    assert_eq!(web["status"], "active");
}

#[sqlx::test]
async fn quota_requests_from_the_command_line(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    app.add_server("s-1", 32, Some(app.org.field)).await;
    app.give_quota(8, 32).await;
    let lead = Shell::new(&app.base);
    lead.login("shop-lead").await;
    let ask =
        ["quota", "request", "--site", "fra", "--cpu", "8", "--ram-gb", "32", "--reason", "sale"];
    let asked = lead.run(&ask, None).await.ok().stdout;
    assert!(asked.contains("(+8 CPU, +32 GB): pending"), "{asked}");
    let field_admin = Shell::new(&app.base);
    field_admin.login("retail-admin").await;
    let listed = field_admin
        .run(&["quota", "requests", "--status", "pending", "-o", "json"], None)
        .await
        .ok()
        .json();
    let id = listed[0]["id"].as_str().unwrap().to_owned();
    let table = field_admin.run(&["quota", "requests"], None).await.ok().stdout;
    assert!(
        table.contains("shop") && table.contains("+8/+32") && table.contains("sale"),
        "{table}"
    );
    let approved = field_admin.run(&["quota", "approve", &id], None).await.ok().stdout;
    assert!(approved.contains("approved: +8 CPU / +32 GB"), "{approved}");
    app.run_jobs().await;
    let quota = lead
        .run(&["quota", "show", "--department", &app.org.dept.to_string(), "-o", "json"], None)
        .await
        .ok()
        .json();
    assert_eq!(quota["sites"][0]["quota"], json!({ "cpu": 16, "ram_gb": 64 }));
    let again = field_admin.run(&["quota", "reject", &id, "--reason", "late"], None).await;
    assert_eq!(again.code, 2, "{}", again.stderr);
    lead.run(&ask, None).await.ok();
    let listed = field_admin
        .run(&["quota", "requests", "--status", "pending", "-o", "json"], None)
        .await
        .ok()
        .json();
    let second = listed[0]["id"].as_str().unwrap().to_owned();
    let rejected = field_admin
        .run(&["quota", "reject", &second, "--reason", "enough"], None)
        .await
        .ok()
        .stdout;
    assert!(rejected.contains("rejected"), "{rejected}");
}

#[sqlx::test]
async fn webhooks_from_the_command_line(pool: PgPool) {
    let app = TestApp::spawn(pool.clone()).await;
    let admin = Shell::new(&app.base);
    admin.login("root").await;
    let add = [
        "webhooks",
        "add",
        "chat",
        "https://chat.example/hook",
        "--format",
        "slack",
        "--event",
        "approval.requested",
        "--event",
        "capacity.deficit",
    ];
    let added = admin.run(&add, None).await.ok().stdout;
    assert!(
        added.contains("webhook chat added") && added.contains("secret (shown this once): "),
        "{added}"
    );
    let listed = admin.run(&["webhooks", "list"], None).await.ok().stdout;
    assert!(
        listed.contains("approval.requested,capacity.deficit") && listed.contains("slack"),
        "{listed}"
    );
    admin.run(&["webhooks", "enable", "chat", "--off"], None).await.ok();
    let off = admin.run(&["webhooks", "list", "-o", "json"], None).await.ok().json();
    assert_eq!(off[0]["enabled"], false);
    let pinged = admin.run(&["webhooks", "ping", "chat"], None).await.ok().stdout;
    assert!(pinged.contains("ping to chat: job"), "{pinged}");
    let bad =
        admin.run(&["webhooks", "add", "x", "https://e.example", "--event", "nope"], None).await;
    assert_eq!(bad.code, 2, "{}", bad.stderr);
    admin.run(&["webhooks", "remove", "chat"], None).await.ok();
    let none = admin.run(&["webhooks", "list"], None).await.ok().stdout;
    assert!(none.contains("no webhooks"), "{none}");
    let gone = admin.run(&["webhooks", "remove", "chat"], None).await;
    assert_eq!(gone.code, 2, "{}", gone.stderr);
}
