//! `TestApp`: the real daemon on a free port against the test's own database, with a way to
//! run every due job now, so that tests wait on conditions, never on clocks.

use std::sync::{Arc, Mutex};

use infrahub::clients::Clients;
use infrahub::config::{Config, Mode, ScheduleConfig, Secret};
use infrahub::context::Context;
use infrahub::daemon::{Daemon, DaemonRole};
use infrahub::domain::password;
use infrahub::domain::role::Role;
use infrahub::domain::scope::Scope;
use infrahub::jobs::engine;
use infrahub::store::org::{self, DepartmentValues, UnitKind};
use infrahub::store::users::{self, NewUser, User};
use reqwest::{Method, StatusCode};
use serde_json::Value;
use sqlx::PgPool;
use tokio::net::TcpListener;
use uuid::Uuid;

pub const TEST_SECRET: &str = "test-secret-0123456789-abcdefghijklmnop";
pub const PASSWORD: &str = "correct-horse-battery";

pub struct TestApp {
    pub base: String,
    pub pool: PgPool,
    pub ctx: Context,
    pub client: reqwest::Client,
    pub org: Org,
    /// The running daemon; it stops with the test's runtime, or with [`stop`](Self::stop).
    daemon: Daemon,
}

/// The organisation every test starts with: one site, one field with one department, a
/// second field with its own department, and one account per role.
pub struct Org {
    pub site: Uuid,
    pub field: Uuid,
    pub dept: Uuid,
    pub other_field: Uuid,
    pub other_dept: Uuid,
    pub admin: User,
    pub field_admin: User,
    pub team_lead: User,
}

/// A JSON answer: status, body and headers.
pub struct Answer {
    pub status: StatusCode,
    pub body: Value,
    pub headers: reqwest::header::HeaderMap,
}

impl Answer {
    /// Asserts the status and, for errors, our envelope with `code`.
    pub fn expect(self, status: StatusCode, code: Option<&str>) -> Value {
        assert_eq!(self.status, status, "body: {}", self.body);
        if let Some(code) = code {
            assert_eq!(self.body["error"]["code"], code, "body: {}", self.body);
            assert!(self.body["error"]["message"].is_string(), "body: {}", self.body);
            assert!(self.body["error"]["details"].is_object(), "body: {}", self.body);
        }
        self.body
    }
}

impl TestApp {
    pub async fn spawn(pool: PgPool) -> Self {
        Self::spawn_with(pool, Mode::Serve, |_| {}).await
    }

    /// The daemon's HTTP intake on a free port, without background workers: jobs run when the
    /// test says so ([`run_due_jobs`](Self::run_due_jobs), [`run_jobs`](Self::run_jobs)).
    pub async fn spawn_with(pool: PgPool, mode: Mode, tweak: impl FnOnce(&mut Config)) -> Self {
        Self::start(pool, mode, DaemonRole::Api, tweak).await
    }

    /// The whole daemon (HTTP intake, job workers, cron), as `infrahub serve` runs it.
    pub async fn spawn_daemon(pool: PgPool, mode: Mode, tweak: impl FnOnce(&mut Config)) -> Self {
        Self::start(pool, mode, DaemonRole::All, tweak).await
    }

    /// [`spawn_with`](Self::spawn_with), with doubles of external systems put into the
    /// context's clients by `clients`.
    pub async fn spawn_with_clients(
        pool: PgPool,
        mode: Mode,
        tweak: impl FnOnce(&mut Config),
        clients: impl FnOnce(&mut Clients),
    ) -> Self {
        let mut ctx = context_with(pool.clone(), mode, tweak);
        clients(&mut ctx.clients);
        Self::start_with(pool, ctx, DaemonRole::Api).await
    }

    async fn start(
        pool: PgPool,
        mode: Mode,
        role: DaemonRole,
        tweak: impl FnOnce(&mut Config),
    ) -> Self {
        let ctx = context_with(pool.clone(), mode, tweak);
        Self::start_with(pool, ctx, role).await
    }

    async fn start_with(pool: PgPool, ctx: Context, role: DaemonRole) -> Self {
        let org = seed(&pool).await;
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let daemon = Daemon::start(ctx.clone(), Some(listener), role);
        let base = format!("http://{}", daemon.local_addr().expect("the daemon serves HTTP"));
        let client = reqwest::Client::builder().build().unwrap();
        TestApp { base, pool, ctx, client, org, daemon }
    }

    /// Stops the daemon as SIGTERM would: no new requests or jobs, running ones get their
    /// grace period.
    pub async fn stop(self) {
        self.daemon.stop().await.expect("the daemon stops cleanly");
    }

    /// Runs every job that is due now, and what those enqueue, until nothing is due.
    pub async fn run_due_jobs(&self) -> engine::Drained {
        engine::run_due(&self.ctx, false, 200).await.expect("jobs ran")
    }

    /// Runs every pending job as if its time had come (retries and re-scheduled polls too),
    /// until none is left; fails the test if work keeps coming.
    pub async fn run_jobs(&self) -> engine::Drained {
        let drained = self.run_job_rounds(200).await;
        assert!(drained.idle, "jobs are still pending after {} attempts", drained.attempts);
        drained
    }

    /// `rounds` rounds of [`run_jobs`](Self::run_jobs): for work that polls until something
    /// outside changes.
    pub async fn run_job_rounds(&self, rounds: usize) -> engine::Drained {
        engine::run_due(&self.ctx, true, rounds).await.expect("jobs ran")
    }

    /// Sends `body` (JSON, with a JSON content type) and returns the answer.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Answer {
        let mut request = self.client.request(method, format!("{}{path}", self.base));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        into_answer(request.send().await.expect("request sent")).await
    }

    /// Sends raw bytes with an optional content type.
    pub async fn call_raw(
        &self,
        method: Method,
        path: &str,
        token: &str,
        content_type: Option<&str>,
        body: &'static [u8],
    ) -> Answer {
        let mut request = self
            .client
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(token)
            .body(body);
        if let Some(ct) = content_type {
            request = request.header("content-type", ct);
        }
        into_answer(request.send().await.expect("request sent")).await
    }

    pub async fn get(&self, path: &str, token: &str) -> Answer {
        self.call(Method::GET, path, Some(token), None).await
    }

    pub async fn post(&self, path: &str, token: &str, body: Value) -> Answer {
        self.call(Method::POST, path, Some(token), Some(body)).await
    }

    pub async fn login_answer(&self, username: &str, password: &str) -> Answer {
        let body = serde_json::json!({ "username": username, "password": password });
        self.call(Method::POST, "/api/v1/auth/login", None, Some(body)).await
    }

    pub async fn login(&self, username: &str, password: &str) -> String {
        let body = self.login_answer(username, password).await.expect(StatusCode::OK, None);
        body["access_token"].as_str().expect("access_token").to_owned()
    }

    /// Gives department `shop` a quota at site `fra`.
    pub async fn give_quota(&self, cpu: i32, ram_gb: i32) {
        sqlx::query(
            "INSERT INTO department_quotas (department_id, site_id, cpu_limit, ram_gb_limit) VALUES ($1, $2, $3, $4)",
        )
        .bind(self.org.dept)
        .bind(self.org.site)
        .bind(cpu)
        .bind(ram_gb)
        .execute(&self.pool)
        .await
        .expect("quota inserted");
    }

    /// A second site, `name` (its display name capitalised); its id.
    pub async fn add_site(&self, name: &str) -> Uuid {
        let display = name[..1].to_uppercase() + &name[1..];
        sqlx::query_scalar(
            "INSERT INTO sites (id, name, display_name) VALUES (gen_random_uuid(), $1, $2)
             RETURNING id",
        )
        .bind(name)
        .bind(display)
        .fetch_one(&self.pool)
        .await
        .expect("site inserted")
    }

    /// An active server with `cpu` cores (and 4 GB RAM per core) at site `fra`, in `field` or
    /// none; its id.
    pub async fn add_server(&self, name: &str, cpu: i32, field: Option<Uuid>) -> Uuid {
        sqlx::query_scalar(
            "INSERT INTO servers (id, inventory_id, name, site_id, cpu_cores, ram_gb, status, field_id)
             VALUES (gen_random_uuid(), $1, $1, $2, $3, $3 * 4, 'active', $4) RETURNING id",
        )
        .bind(name)
        .bind(self.org.site)
        .bind(cpu)
        .bind(field)
        .fetch_one(&self.pool)
        .await
        .expect("server inserted")
    }

    /// Creates project `name` at site `fra` as `token`'s team lead; returns its id.
    pub async fn create_project(&self, token: &str, name: &str, sla: &str, tier: &str) -> String {
        let body = serde_json::json!({ "name": name, "site": "fra", "sla_type": sla, "performance_tier": tier });
        let created = self.post("/api/v1/projects", token, body).await;
        created.expect(StatusCode::ACCEPTED, None)["id"].as_str().expect("an id").to_owned()
    }

    /// Runs every pending job, then reads project `id` over HTTP and asserts it is `wanted`.
    pub async fn project_becomes(&self, token: &str, id: &str, wanted: &str) -> Value {
        self.run_jobs().await;
        let project = self.get(&format!("/api/v1/projects/{id}"), token).await.body;
        assert_eq!(project["status"], wanted, "{project}");
        project
    }

    /// CPU the projects of department `shop` hold at site `fra`, as its quota view says.
    pub async fn used_cpu(&self, token: &str) -> i64 {
        let path = format!("/api/v1/departments/{}/quota", self.org.dept);
        let view = self.get(&path, token).await.expect(StatusCode::OK, None);
        view["sites"][0]["used"]["cpu"].as_i64().expect("used cpu")
    }

    pub async fn admin_token(&self) -> String {
        self.login(&self.org.admin.username, PASSWORD).await
    }

    pub async fn field_admin_token(&self) -> String {
        self.login(&self.org.field_admin.username, PASSWORD).await
    }

    pub async fn team_lead_token(&self) -> String {
        self.login(&self.org.team_lead.username, PASSWORD).await
    }
}

pub async fn into_answer(response: reqwest::Response) -> Answer {
    let status = response.status();
    let headers = response.headers().clone();
    let text = response.text().await.expect("body read");
    let body = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    };
    Answer { status, body, headers }
}

/// A context on the test's database, as the daemon builds it (the test JWT secret, `tweak`ed).
pub fn context_with(pool: PgPool, mode: Mode, tweak: impl FnOnce(&mut Config)) -> Context {
    infrahub::install_crypto_provider();
    let mut config = Config::default();
    config.auth.jwt_secret = Some(Secret::new(TEST_SECRET));
    // Deletions at once unless a test asks for a grace period (tests/api/deletion.rs does):
    // most tests follow a project to its end.
    config.deletion.grace_secs = 0;
    // A repository of the test's own, under cargo's scratch directory for tests: the default
    // (`var/gitops`) is the source tree's, which every test delivering a project would share.
    let repo = format!("gitops-{}", uuid::Uuid::now_v7());
    config.delivery.git.path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(repo);
    // No cron unless a test asks: a tick falling inside a test would add jobs it did not make.
    config.schedule = ScheduleConfig {
        server_sync: String::new(),
        resync: String::new(),
        prune_jobs: String::new(),
        reconcile: String::new(),
        usage: String::new(),
    };
    tweak(&mut config);
    Context::new(pool, config, mode).expect("context")
}

/// Creates an account directly in the database.
pub async fn create_user(
    pool: &PgPool,
    username: &str,
    role: Role,
    scope: Scope,
    is_demo: bool,
) -> User {
    let hash = password::hash(PASSWORD).unwrap();
    let mut conn = pool.acquire().await.unwrap();
    let new = NewUser { username, password_hash: &hash, role, scope, is_demo };
    users::insert(&mut conn, &new).await.expect("user inserted")
}

async fn seed(pool: &PgPool) -> Org {
    let mut conn = pool.acquire().await.unwrap();
    let site = org::insert_unit(&mut conn, UnitKind::Site, "fra", "Frankfurt").await.unwrap();
    let field = org::insert_unit(&mut conn, UnitKind::Field, "retail", "Retail").await.unwrap();
    let other_field =
        org::insert_unit(&mut conn, UnitKind::Field, "finance", "Finance").await.unwrap();
    let dept_values = DepartmentValues {
        field_id: field.id,
        name: "shop",
        display_name: "Shop",
        k8s_group: None,
    };
    let dept = org::insert_department(&mut conn, &dept_values).await.unwrap();
    let other_values = DepartmentValues {
        field_id: other_field.id,
        name: "ledger",
        display_name: "Ledger",
        k8s_group: None,
    };
    let other_dept = org::insert_department(&mut conn, &other_values).await.unwrap();
    drop(conn);
    Org {
        site: site.id,
        field: field.id,
        dept: dept.id,
        other_field: other_field.id,
        other_dept: other_dept.id,
        admin: create_user(pool, "root", Role::CenterAdmin, Scope::Center, false).await,
        field_admin: create_user(
            pool,
            "retail-admin",
            Role::FieldAdmin,
            Scope::Field(field.id),
            false,
        )
        .await,
        team_lead: create_user(
            pool,
            "shop-lead",
            Role::TeamLead,
            Scope::Department(dept.id),
            false,
        )
        .await,
    }
}

/// The URL of the test's own database, for processes started by the test.
pub fn database_url(pool: &PgPool) -> String {
    let base = std::env::var("DATABASE_URL").expect("DATABASE_URL is set (see .cargo/config.toml)");
    let mut url = url::Url::parse(&base).expect("DATABASE_URL is a URL");
    let name = pool.connect_options().get_database().expect("test database name").to_owned();
    url.set_path(&name);
    url.to_string()
}

/// Polls `check` until it holds, failing the test after `timeout`: for conditions that another
/// process or task brings about.
pub async fn wait_until<F, Fut>(what: &str, timeout: std::time::Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = std::time::Instant::now() + timeout;
    while !check().await {
        assert!(std::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// What was logged, as text.
#[derive(Clone, Default)]
pub struct Logged(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Logged {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Logged {
    pub fn subscriber(&self) -> impl tracing::Subscriber + Send + Sync + 'static {
        let into = self.clone();
        tracing_subscriber::fmt().with_ansi(false).with_writer(move || into.clone()).finish()
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}
