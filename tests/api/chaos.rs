//! The fault suite's kill test: the real daemon, SIGKILLed at random moments while team leads
//! create, resize and delete projects (delivered into a real local Git repository with a
//! remote) and a field admin changes quotas. Every request is sent until it gets an answer,
//! with its `Idempotency-Key`, as a careful client would. Afterwards every accepted request
//! has exactly one outcome, no project is left in a transient status, Git holds one manifest
//! per live project (of its latest generation), and every quota adds up.
//!
//! CI runs a short round; `scripts/fault-suite` runs the long one (20 kills, 2,000 jobs) with
//! `--ignored`. Both print a `RESULT` line with their figures (docs/RELIABILITY.md).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use infrahub::domain::role::Role;
use infrahub::domain::scope::Scope;
use infrahub::store::org::{self, DepartmentValues, UnitKind};
use rand::Rng;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sqlx::PgPool;
use tokio::sync::Mutex;
use uuid::Uuid;

use crate::e2e::{Daemon, spawn};
use crate::helpers::{PASSWORD, TEST_SECRET, create_user, database_url, wait_until};

/// One round: how many times the daemon dies, and how many changes are accepted meanwhile.
struct Round {
    kills: usize,
    accepted: usize,
    team_leads: usize,
}

#[sqlx::test]
async fn sigkill_during_mixed_work_loses_nothing(pool: PgPool) {
    run(pool, Round { kills: 3, accepted: 240, team_leads: 4 }).await;
}

#[sqlx::test]
#[ignore = "long (several minutes): run by scripts/fault-suite"]
async fn sigkill_twenty_times_during_two_thousand_jobs(pool: PgPool) {
    run(pool, Round { kills: 20, accepted: 2000, team_leads: 8 }).await;
}

/// The daemon under test: restarted on the same port after every kill.
pub struct Host {
    pub env: Vec<(String, String)>,
    pub listen: String,
    pub daemon: Mutex<Option<Daemon>>,
}

impl Host {
    pub async fn start(&self) {
        let env: Vec<(&str, &str)> =
            self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let daemon = spawn(&["serve", "--listen", &self.listen], &env).await;
        *self.daemon.lock().await = Some(daemon);
    }

    pub async fn kill_and_restart(&self) {
        let daemon = self.daemon.lock().await.take().expect("the daemon runs");
        assert!(!daemon.kill().await.success(), "SIGKILL ends the daemon abruptly");
        self.start().await;
    }

    pub async fn terminate(&self) {
        let daemon = self.daemon.lock().await.take().expect("the daemon runs");
        assert!(daemon.terminate().await.success());
    }
}

/// What a request finally got, after as many tries as it took.
pub struct Reply {
    status: StatusCode,
    body: Value,
    replayed: bool,
    tries: usize,
}

/// A client that sends each change until it gets an answer that is not a failure of the
/// server's (connection refused or cut, 5xx), always with the same `Idempotency-Key`.
#[derive(Clone)]
pub struct Client {
    pub http: reqwest::Client,
    pub base: String,
    pub stats: Arc<Stats>,
}

#[derive(Default)]
pub struct Stats {
    pub accepted: AtomicUsize,
    pub refused: AtomicUsize,
    pub retried: AtomicUsize,
    pub replayed: AtomicUsize,
    /// 503 answers in the error envelope (the database was away).
    pub unavailable: AtomicUsize,
}

impl Client {
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> Reply {
        let key = Uuid::now_v7().to_string();
        let started = Instant::now();
        let mut tries = 0;
        loop {
            tries += 1;
            let mut request = self
                .http
                .request(method.clone(), format!("{}{path}", self.base))
                .bearer_auth(token)
                .header("Idempotency-Key", &key);
            if let Some(body) = &body {
                request = request.json(body);
            }
            let failure = match request.send().await {
                Ok(response) if !response.status().is_server_error() => {
                    let replayed = response.headers().contains_key("idempotency-replayed");
                    let status = response.status();
                    let body = response.json().await.unwrap_or(Value::Null);
                    if tries > 1 {
                        self.stats.retried.fetch_add(1, Ordering::Relaxed);
                    }
                    if replayed {
                        self.stats.replayed.fetch_add(1, Ordering::Relaxed);
                    }
                    return Reply { status, body, replayed, tries };
                }
                Ok(response) => {
                    let status = response.status();
                    let body: Value = response.json().await.unwrap_or(Value::Null);
                    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "never a 500: {body}");
                    assert_eq!(body["error"]["code"], "unavailable", "{body}");
                    assert!(
                        body["error"]["message"].is_string()
                            && body["error"]["details"].is_object()
                    );
                    self.stats.unavailable.fetch_add(1, Ordering::Relaxed);
                    format!("{status} {body}")
                }
                Err(err) => err.to_string(),
            };
            assert!(
                started.elapsed() < Duration::from_secs(180),
                "{method} {path} got no answer for 3 minutes; last: {failure}"
            );
            // The daemon is down or restarting: try again shortly, as a client would.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn get(&self, path: &str, token: &str) -> Value {
        self.send(Method::GET, path, token, None).await.body
    }
}

/// A project as its team lead believes it is, from the answers it got.
#[derive(Debug, Clone)]
struct Believed {
    id: Uuid,
    namespace: String,
    sla: &'static str,
    tier: &'static str,
    deleted: bool,
}

/// What the workload saw: accepted changes by job id, refusals by code.
#[derive(Default)]
pub struct Ledger {
    jobs: BTreeMap<Uuid, &'static str>,
    refusals: BTreeMap<String, usize>,
    projects: Vec<Believed>,
    /// Department -> the quota (CPU, RAM) of its last change whose job succeeded.
    quotas: BTreeMap<Uuid, (i64, i64)>,
}

const SLAS: [&str; 2] = ["bronze", "silver"];
const TIERS: [&str; 2] = ["regular", "high"];

pub async fn seed(pool: &PgPool, team_leads: usize) -> (Uuid, Uuid, Vec<(Uuid, String)>) {
    let mut conn = pool.acquire().await.unwrap();
    let site = org::insert_unit(&mut conn, UnitKind::Site, "fra", "Frankfurt").await.unwrap();
    let field = org::insert_unit(&mut conn, UnitKind::Field, "retail", "Retail").await.unwrap();
    let mut depts = Vec::new();
    for i in 0..team_leads {
        let name = format!("team{i}");
        let values = DepartmentValues {
            field_id: field.id,
            name: &name,
            display_name: &name,
            k8s_group: None,
        };
        let dept = org::insert_department(&mut conn, &values).await.unwrap();
        depts.push((dept.id, name));
    }
    // 40 servers of 64 cores and 1 TB: room for every quota below.
    sqlx::query(
        "INSERT INTO servers (id, inventory_id, name, site_id, cpu_cores, ram_gb, field_id)
         SELECT id, id::text, 'srv-' || id::text, $1, 64, 1024, $2
           FROM (SELECT gen_random_uuid() AS id FROM generate_series(1, 40)) s",
    )
    .bind(site.id)
    .bind(field.id)
    .execute(&mut *conn)
    .await
    .unwrap();
    for (dept, _) in &depts {
        sqlx::query(
            "INSERT INTO department_quotas (department_id, site_id, cpu_limit, ram_gb_limit)
             VALUES ($1, $2, 200, 800)",
        )
        .bind(dept)
        .bind(site.id)
        .execute(&mut *conn)
        .await
        .unwrap();
    }
    (site.id, field.id, depts)
}

pub async fn login(client: &Client, username: &str) -> String {
    let body = json!({ "username": username, "password": PASSWORD });
    let reply = client
        .http
        .post(format!("{}/api/v1/auth/login", client.base))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), StatusCode::OK);
    let body: Value = reply.json().await.unwrap();
    body["access_token"].as_str().unwrap().to_owned()
}

/// A port free now, below Linux's ephemeral range (32768 and up), so that no test's outgoing
/// connection takes it while a daemon that listens on it restarts.
pub fn free_port() -> u16 {
    loop {
        let port = rand::rng().random_range(20_000..32_000);
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

pub fn git(repo: &Path, args: &[&str]) -> String {
    let output = std::process::Command::new("git").arg("-C").arg(repo).args(args).output().unwrap();
    assert!(output.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// A team lead's work: create projects (at most five live at once), resize and delete them.
pub async fn team_lead(
    client: Client,
    token: String,
    index: usize,
    target: usize,
    ledger: Arc<Mutex<Ledger>>,
) {
    let mut mine: Vec<Believed> = Vec::new();
    let mut made = 0;
    while client.stats.accepted.load(Ordering::Relaxed) < target {
        let live: Vec<usize> = (0..mine.len()).filter(|&i| !mine[i].deleted).collect();
        let choice: f64 = rand::rng().random();
        if live.len() < 2 || (live.len() < 5 && choice < 0.35) {
            let name = format!("p{index}x{made}");
            made += 1;
            let (sla, tier) = (SLAS[made % 2], TIERS[(made / 2) % 2]);
            let body =
                json!({ "name": name, "site": "fra", "sla_type": sla, "performance_tier": tier });
            let reply = client.send(Method::POST, "/api/v1/projects", &token, Some(body)).await;
            if record(&client, &ledger, &reply, "provision_namespace").await {
                let id = reply.body["id"].as_str().unwrap().parse().unwrap();
                let namespace = reply.body["namespace"].as_str().unwrap().to_owned();
                mine.push(Believed { id, namespace, sla, tier, deleted: false });
            }
            continue;
        }
        let pick = live[rand::rng().random_range(0..live.len())];
        let project = mine[pick].clone();
        let path = format!("/api/v1/projects/{}", project.id);
        let now = client.get(&path, &token).await;
        if now["status"] != "active" {
            // Its change is still under way: another project's turn, after a moment (a
            // client's pace, not a wait for a condition).
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        }
        if choice < 0.8 {
            let (sla, tier) = if choice < 0.6 {
                (project.sla, if project.tier == TIERS[0] { TIERS[1] } else { TIERS[0] })
            } else {
                (if project.sla == SLAS[0] { SLAS[1] } else { SLAS[0] }, project.tier)
            };
            let body = json!({ "sla_type": sla, "performance_tier": tier });
            let reply = client.send(Method::PATCH, &path, &token, Some(body)).await;
            if record(&client, &ledger, &reply, "provision_namespace").await {
                mine[pick].sla = sla;
                mine[pick].tier = tier;
            }
        } else {
            let reply = client.send(Method::DELETE, &path, &token, None).await;
            if record(&client, &ledger, &reply, "deprovision_namespace").await {
                mine[pick].deleted = true;
            }
        }
    }
    ledger.lock().await.projects.extend(mine);
}

/// The field admin's work: one department's quota after another, between two sizes, each
/// change waited for before the next, so that the last accepted one is the one that holds.
pub async fn field_admin(
    client: Client,
    token: String,
    pool: PgPool,
    field: Uuid,
    depts: Vec<Uuid>,
    target: usize,
    ledger: Arc<Mutex<Ledger>>,
) {
    let mut turn = 0;
    while client.stats.accepted.load(Ordering::Relaxed) < target {
        let dept = depts[turn % depts.len()];
        let (cpu, ram) =
            if (turn / depts.len()).is_multiple_of(2) { (240, 960) } else { (200, 800) };
        turn += 1;
        let body = json!({ "field_id": field, "dept_id": dept, "site": "fra", "cpu_limit": cpu, "ram_gb_limit": ram });
        let reply = client
            .send(Method::POST, "/api/v1/allocations/department-quota", &token, Some(body))
            .await;
        if !record(&client, &ledger, &reply, "allocate_quota").await {
            continue;
        }
        let job: Uuid = reply.body["job_id"].as_str().unwrap().parse().unwrap();
        // The database may be away for a moment (the restart test): then not yet.
        let finished = || async {
            let status: Option<String> =
                sqlx::query_scalar("SELECT status FROM jobs WHERE id = $1")
                    .bind(job)
                    .fetch_one(&pool)
                    .await
                    .ok();
            matches!(status.as_deref(), Some("succeeded" | "failed" | "cancelled"))
        };
        wait_until("the quota change", Duration::from_secs(180), finished).await;
        // Whether it succeeded is checked with every other job at the end.
        ledger.lock().await.quotas.insert(dept, (cpu, ram));
    }
}

/// Files an answer: an accepted change under its job, a refusal under its code. True when
/// accepted.
async fn record(
    client: &Client,
    ledger: &Mutex<Ledger>,
    reply: &Reply,
    kind: &'static str,
) -> bool {
    let mut ledger = ledger.lock().await;
    if reply.status == StatusCode::ACCEPTED {
        let job: Uuid = reply.body["job_id"].as_str().expect("a job id").parse().unwrap();
        assert!(
            ledger.jobs.insert(job, kind).is_none(),
            "two accepted requests share job {job} (replayed: {}, tries: {})",
            reply.replayed,
            reply.tries
        );
        client.stats.accepted.fetch_add(1, Ordering::Relaxed);
        true
    } else {
        let code = reply.body["error"]["code"].as_str().unwrap_or("?").to_owned();
        *ledger.refusals.entry(format!("{} {code}", reply.status.as_u16())).or_default() += 1;
        client.stats.refused.fetch_add(1, Ordering::Relaxed);
        false
    }
}

async fn scalar(pool: &PgPool, sql: &'static str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pool).await.unwrap()
}

/// A daemon with its organisation, repository and a client: what both the kill test and the
/// database restart test drive.
pub struct Rig {
    pub pool: PgPool,
    pub host: Arc<Host>,
    pub client: Client,
    pub ledger: Arc<Mutex<Ledger>>,
    pub site: Uuid,
    pub field: Uuid,
    pub depts: Vec<(Uuid, String)>,
    pub repo: PathBuf,
    pub remote: PathBuf,
    _dir: tempfile::TempDir,
}

impl Rig {
    /// Seeds `pool` (migrated) with `team_leads` departments and starts the daemon on
    /// `database_url`, delivering into a local repository with a remote; `env` adds settings.
    pub async fn start(pool: PgPool, url: String, team_leads: usize, env: &[(&str, &str)]) -> Rig {
        infrahub::install_crypto_provider();
        let (site, field, depts) = seed(&pool, team_leads).await;
        for (dept, name) in &depts {
            let username = format!("lead-{name}");
            create_user(&pool, &username, Role::TeamLead, Scope::Department(*dept), false).await;
        }
        create_user(&pool, "retail-admin", Role::FieldAdmin, Scope::Field(field), false).await;

        let dir = tempfile::tempdir().unwrap();
        let (repo, remote) = (dir.path().join("gitops"), dir.path().join("remote.git"));
        git(dir.path(), &["init", "--quiet", "--bare", "-b", "main", remote.to_str().unwrap()]);
        let port = free_port();
        let mut settings = vec![
            ("INFRAHUB_DATABASE__URL".to_owned(), url),
            ("INFRAHUB_AUTH__JWT_SECRET".to_owned(), TEST_SECRET.to_owned()),
            ("INFRAHUB_WORKERS__LEASE_SECS".to_owned(), "3".to_owned()),
            ("INFRAHUB_WORKERS__POLL_INTERVAL_MS".to_owned(), "100".to_owned()),
            ("INFRAHUB_SCHEDULE__SERVER_SYNC".to_owned(), String::new()),
            ("INFRAHUB_SCHEDULE__RESYNC".to_owned(), String::new()),
            ("INFRAHUB_SCHEDULE__PRUNE_JOBS".to_owned(), String::new()),
            // Every 10 minutes by default: a run spanning one would find a job nobody asked for.
            ("INFRAHUB_SCHEDULE__USAGE".to_owned(), String::new()),
            // The reconciler looks often: it must never find a project to restart.
            ("INFRAHUB_SCHEDULE__RECONCILE".to_owned(), "*/2 * * * * *".to_owned()),
            ("INFRAHUB_DELIVERY__GIT__PATH".to_owned(), repo.display().to_string()),
            ("INFRAHUB_DELIVERY__GIT__REMOTE".to_owned(), remote.display().to_string()),
            // Deletions start their job at once: the ledger follows every accepted change's job.
            ("INFRAHUB_DELETION__GRACE_SECS".to_owned(), "0".to_owned()),
        ];
        settings.extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let host = Arc::new(Host {
            env: settings,
            listen: format!("127.0.0.1:{port}"),
            daemon: Mutex::new(None),
        });
        host.start().await;
        let client = Client {
            http: reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap(),
            base: format!("http://127.0.0.1:{port}"),
            stats: Arc::new(Stats::default()),
        };
        let ledger = Arc::new(Mutex::new(Ledger::default()));
        Rig { pool, host, client, ledger, site, field, depts, repo, remote, _dir: dir }
    }

    /// Starts the team leads and the field admin, who work until `target` changes are
    /// accepted in all.
    pub async fn workload(&self, target: usize) -> Vec<tokio::task::JoinHandle<()>> {
        let mut work = Vec::new();
        for (i, (_, name)) in self.depts.iter().enumerate() {
            let token = login(&self.client, &format!("lead-{name}")).await;
            let lead = team_lead(self.client.clone(), token, i, target, self.ledger.clone());
            work.push(tokio::spawn(lead));
        }
        let token = login(&self.client, "retail-admin").await;
        let depts = self.depts.iter().map(|(id, _)| *id).collect();
        let admin = field_admin(
            self.client.clone(),
            token,
            self.pool.clone(),
            self.field,
            depts,
            target,
            self.ledger.clone(),
        );
        work.push(tokio::spawn(admin));
        work
    }

    /// Waits until `accepted` changes are in.
    pub async fn accepted(&self, accepted: usize) {
        let stats = &self.client.stats;
        let enough = || async { stats.accepted.load(Ordering::Relaxed) >= accepted };
        wait_until("the workload's progress", Duration::from_secs(600), enough).await;
    }

    /// Waits for the workload and every job it made, stops the daemon, and checks that
    /// nothing was lost, doubled or stranded. Returns the figures.
    pub async fn finish(self, work: Vec<tokio::task::JoinHandle<()>>) -> Figures {
        for task in work {
            task.await.expect("the workload ran");
        }
        let pool = &self.pool;
        let settled = || async {
            scalar(
                pool,
                "SELECT count(*) FROM jobs WHERE kind <> 'reconcile' AND status NOT IN ('succeeded', 'failed', 'cancelled')",
            )
            .await
                == 0
        };
        wait_until("every job to finish", Duration::from_secs(600), settled).await;
        self.host.terminate().await;
        verify(&self).await
    }
}

/// What a round did.
pub struct Figures {
    pub accepted: usize,
    pub jobs: usize,
    pub refused: usize,
    pub retried_requests: usize,
    pub replayed: usize,
    pub unavailable: usize,
    pub retried_jobs: usize,
    pub projects: usize,
    pub live: usize,
}

async fn verify(rig: &Rig) -> Figures {
    let pool = &rig.pool;
    let ledger = rig.ledger.lock().await;

    // Every accepted request has exactly one outcome: its job, which succeeded, and no
    // other job of its kind was made.
    let outcomes: Vec<(Uuid, String, String, i32)> =
        sqlx::query_as("SELECT id, kind, status, attempts FROM jobs WHERE kind <> 'reconcile'")
            .fetch_all(pool)
            .await
            .unwrap();
    assert_eq!(outcomes.len(), ledger.jobs.len(), "one job per accepted request, no more");
    let mut retried_jobs = 0;
    for (id, kind, status, attempts) in &outcomes {
        assert_eq!(ledger.jobs.get(id).copied(), Some(kind.as_str()), "job {id} was accepted");
        assert_eq!(status, "succeeded", "job {id} ({kind})");
        retried_jobs += usize::from(*attempts > 1);
    }
    let unexpected: Vec<&String> =
        ledger.refusals.keys().filter(|code| code.as_str() != "409 project_busy").collect();
    assert!(unexpected.is_empty(), "refusals other than a busy project: {:?}", ledger.refusals);
    let restarted = scalar(
        pool,
        "SELECT count(*) FROM audit_events WHERE subject_type = 'project' AND action = 'restart'",
    )
    .await;
    assert_eq!(restarted, 0, "the reconciler never found a stranded project");

    // No project in a transient status; each as its team lead was told.
    let rows: Vec<(Uuid, String, String, String, i64, i32)> = sqlx::query_as(
        "SELECT id, status, sla_type, performance_tier, generation, cpu FROM projects",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    assert_eq!(rows.len(), ledger.projects.len(), "one project per accepted creation");
    let believed: BTreeMap<Uuid, &Believed> = ledger.projects.iter().map(|p| (p.id, p)).collect();
    let mut manifests = BTreeMap::new();
    for (id, status, sla, tier, generation, cpu) in &rows {
        let project = believed[id];
        let wanted = if project.deleted { "deleted" } else { "active" };
        assert_eq!(status, wanted, "{}", project.namespace);
        if !project.deleted {
            assert_eq!((sla.as_str(), tier.as_str()), (project.sla, project.tier));
            let file = format!("fra/{}.yaml", project.namespace);
            manifests.insert(file, (*generation, *cpu, project.tier));
        }
    }

    // Git: one manifest per live project, of its latest generation, pushed, nothing left over.
    let files = git(&rig.repo, &["ls-tree", "-r", "--name-only", "HEAD"]);
    let files: Vec<&str> = files.lines().collect();
    assert_eq!(files, manifests.keys().map(String::as_str).collect::<Vec<_>>());
    for (file, (generation, cpu, tier)) in &manifests {
        let text = git(&rig.repo, &["show", &format!("HEAD:{file}")]);
        let label = format!("infrahub.io/generation: \"{generation}\"");
        assert_eq!(text.matches(&label).count(), 4, "{file} is of generation {generation}");
        assert!(text.contains(&format!("requests.cpu: \"{cpu}\"")), "{file}");
        assert!(text.contains(&format!("infrahub.io/tier: \"{tier}\"")), "{file}");
    }
    assert_eq!(git(&rig.repo, &["status", "--porcelain"]), "", "no leftovers");
    let pushed = git(&rig.remote, &["rev-parse", "main"]);
    assert_eq!(git(&rig.repo, &["rev-parse", "HEAD"]), pushed, "everything was pushed");

    // Quotas add up: each as its last change left it, above what its projects hold, and all
    // of them within the field's capacity at the site.
    let quotas: Vec<(Uuid, i64, i64, i64, i64)> = sqlx::query_as(
        "SELECT q.department_id, q.cpu_limit::int8, q.ram_gb_limit::int8,
                coalesce(sum(p.cpu) FILTER (WHERE p.status <> 'deleted'), 0)::int8,
                coalesce(sum(p.ram_gb) FILTER (WHERE p.status <> 'deleted'), 0)::int8
           FROM department_quotas q
           LEFT JOIN projects p ON p.department_id = q.department_id AND p.site_id = q.site_id
          WHERE q.site_id = $1
          GROUP BY q.department_id, q.cpu_limit, q.ram_gb_limit",
    )
    .bind(rig.site)
    .fetch_all(pool)
    .await
    .unwrap();
    assert_eq!(quotas.len(), rig.depts.len());
    for (dept, cpu, ram, used_cpu, used_ram) in &quotas {
        let wanted = ledger.quotas.get(dept).copied().unwrap_or((200, 800));
        assert_eq!((*cpu, *ram), wanted, "department {dept}");
        assert!(used_cpu <= cpu && used_ram <= ram, "department {dept} holds more than its quota");
    }
    let total: i64 = quotas.iter().map(|q| q.1).sum();
    assert!(total <= 40 * 64, "quotas within the field's capacity");
    // The reservations the checks read, kept at each commit, still match the projects.
    let drifted: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM project_reservations r
           FULL JOIN (SELECT department_id, site_id, sum(cpu)::int8 AS cpu, sum(ram_gb)::int8 AS ram
                        FROM projects WHERE status NOT IN ('deleted', 'rejected')
                       GROUP BY department_id, site_id) p USING (department_id, site_id)
          WHERE (coalesce(r.cpu, 0), coalesce(r.ram_gb, 0)) <> (coalesce(p.cpu, 0), coalesce(p.ram, 0))",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(drifted, 0, "reservations kept in step with the projects");

    let stats = &rig.client.stats;
    Figures {
        accepted: stats.accepted.load(Ordering::Relaxed),
        jobs: outcomes.len(),
        refused: stats.refused.load(Ordering::Relaxed),
        retried_requests: stats.retried.load(Ordering::Relaxed),
        replayed: stats.replayed.load(Ordering::Relaxed),
        unavailable: stats.unavailable.load(Ordering::Relaxed),
        retried_jobs,
        projects: rows.len(),
        live: manifests.len(),
    }
}

impl std::fmt::Display for Figures {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "accepted={} jobs={} refused={} retried_requests={} replayed={} unavailable={} retried_jobs={} projects={} live={} lost=0 duplicated=0 stranded=0",
            self.accepted,
            self.jobs,
            self.refused,
            self.retried_requests,
            self.replayed,
            self.unavailable,
            self.retried_jobs,
            self.projects,
            self.live
        )
    }
}

async fn run(pool: PgPool, round: Round) {
    let started = Instant::now();
    let url = database_url(&pool);
    let rig = Rig::start(pool, url, round.team_leads, &[]).await;
    let work = rig.workload(round.accepted).await;
    // Kills spread over the run: the k-th when about k/(kills+1) of the changes are in, at a
    // random moment of that stretch.
    for k in 1..=round.kills {
        rig.accepted(round.accepted * k / (round.kills + 1)).await;
        let jitter = rand::rng().random_range(0..400);
        tokio::time::sleep(Duration::from_millis(jitter)).await;
        rig.host.kill_and_restart().await;
    }
    let figures = rig.finish(work).await;
    assert_eq!(figures.unavailable, 0, "the database never went away");
    println!(
        "RESULT system=infrahub test=sigkill kills={} {figures} seconds={:.0}",
        round.kills,
        started.elapsed().as_secs_f64()
    );
}
