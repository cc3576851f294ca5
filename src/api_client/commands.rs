//! The client's subcommands: their arguments and what each one asks of the API.

use std::io::{BufRead, IsTerminal, Write};
use std::time::{Duration, Instant};

use clap::{Args, Subcommand, ValueEnum};
use reqwest::Method;
use serde_json::{Value, json};
use uuid::Uuid;

use super::render::{cell, record, table};
use super::{Client, ClientError, Session};

/// How results are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Aligned columns for people.
    Table,
    /// The API's JSON, for scripts (`jq`).
    Json,
}

/// Options every client command takes.
#[derive(Debug, Clone, Args)]
pub struct Common {
    /// InfraHub's base URL [default: the one `infrahub login` saved]
    #[arg(long, global = true, env = "INFRAHUB_URL", value_name = "URL")]
    pub url: Option<String>,
    /// Output format
    #[arg(long, short = 'o', global = true, value_enum, default_value_t = Output::Table,
          env = "INFRAHUB_OUTPUT")]
    pub output: Output,
    /// Idempotency-Key of this command's change [default: a fresh random key]. Running the
    /// command again with the same key within 24 hours gets the first answer and changes
    /// nothing twice.
    #[arg(long, global = true, value_name = "KEY")]
    pub idempotency_key: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum ProjectsAction {
    /// List the projects you may see (a team lead: its department's).
    List {
        /// Only projects at this site
        #[arg(long)]
        site: Option<String>,
        /// Only projects in this status (pending_approval, provisioning, active, degraded, failed,
        /// deletion_scheduled, deleting, deleted, rejected)
        #[arg(long)]
        status: Option<String>,
    },
    /// Show one project, by id or name.
    Show { project: String },
    /// Ask for a project: a namespace with quota at a site (team leads).
    Create {
        name: String,
        /// Site name
        #[arg(long)]
        site: String,
        /// SLA type from the catalog (e.g. bronze, silver, gold)
        #[arg(long = "sla")]
        sla_type: String,
        /// Performance tier from the catalog (e.g. regular, high)
        #[arg(long = "tier")]
        performance_tier: String,
        /// Time to live (RFC 3339, e.g. 2027-01-31T18:00:00Z): then it is deleted as by
        /// `projects delete`
        #[arg(long, value_name = "TIME")]
        expires_at: Option<String>,
        /// Wait until the provisioning job ends
        #[arg(long)]
        wait: bool,
    },
    /// Change a project's SLA type or tier (and so its quota).
    Resize {
        project: String,
        #[arg(long = "sla")]
        sla_type: Option<String>,
        #[arg(long = "tier")]
        performance_tier: Option<String>,
        #[arg(long)]
        wait: bool,
    },
    /// Delete a project: after the grace period (when the daemon has one; `projects restore`
    /// cancels it meanwhile) its namespace goes and its quota is freed.
    Delete {
        project: String,
        /// Do not ask to type the project's name
        #[arg(long, short = 'y')]
        yes: bool,
        #[arg(long)]
        wait: bool,
    },
    /// Retry a failed project (provisioning again, or deleting again).
    Retry {
        project: String,
        #[arg(long)]
        wait: bool,
    },
    /// Cancel a scheduled deletion during its grace period: the project is provisioned again.
    Restore {
        project: String,
        /// Wait until the provisioning job ends
        #[arg(long)]
        wait: bool,
    },
    /// Approve a request waiting for approval (field admins, center admins): it is provisioned.
    Approve {
        project: String,
        /// Wait until the provisioning job ends
        #[arg(long)]
        wait: bool,
    },
    /// Reject a request waiting for approval, with a reason (field admins, center admins): its
    /// quota is freed.
    Reject {
        project: String,
        /// Why, shown to the team lead
        #[arg(long)]
        reason: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum JobsAction {
    /// List the jobs you may see, newest first.
    List {
        #[arg(long)]
        kind: Option<String>,
        /// queued, running, retrying, succeeded, failed or cancelled
        #[arg(long)]
        status: Option<String>,
        /// `type:id`, e.g. project:0192…
        #[arg(long)]
        subject: Option<String>,
    },
    /// Show a job with every attempt's error.
    Show { id: Uuid },
    /// Follow a job until it ends: exit 0 when it succeeded, 1 when it failed or was
    /// cancelled, 3 when --timeout ran out first.
    Wait {
        id: Uuid,
        /// Give up after this many seconds
        #[arg(long, default_value_t = 600)]
        timeout: u64,
    },
}

#[derive(Debug, Subcommand)]
pub enum ServersAction {
    /// List servers (a field admin: its field's).
    List {
        #[arg(long)]
        site: Option<String>,
        /// Field id
        #[arg(long)]
        field: Option<Uuid>,
        /// active, missing or retired
        #[arg(long)]
        status: Option<String>,
        /// Only servers assigned to no field
        #[arg(long)]
        unassigned: bool,
    },
    /// Pull the inventory now (center admins).
    Sync {
        /// Mark servers missing even above `inventory.missing_guard`
        #[arg(long)]
        force: bool,
        #[arg(long)]
        wait: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum QuotaAction {
    /// Set a department's quota at a site (center admins, or the field's admin).
    Set {
        /// Department id, or name (names need a center admin's view of departments)
        #[arg(long)]
        department: String,
        /// Site name
        #[arg(long)]
        site: String,
        #[arg(long)]
        cpu: u32,
        #[arg(long)]
        ram_gb: u32,
        #[arg(long)]
        wait: bool,
    },
    /// Show a department's quotas and use per site.
    Show {
        #[arg(long)]
        department: String,
    },
    /// Ask for more quota for your department at a site, with a reason (team leads).
    Request {
        /// Site name
        #[arg(long)]
        site: String,
        /// How much more CPU
        #[arg(long, default_value_t = 0)]
        cpu: u32,
        /// How much more RAM, in GB
        #[arg(long, default_value_t = 0)]
        ram_gb: u32,
        /// Why, shown to the field admin
        #[arg(long)]
        reason: String,
    },
    /// List quota requests (pending ones with the quota after and what the field has free).
    Requests {
        /// pending, approved, applied, failed or rejected
        #[arg(long)]
        status: Option<String>,
    },
    /// Approve a quota request: an allocate_quota job raises the quota (field and center admins).
    Approve {
        id: Uuid,
        #[arg(long)]
        wait: bool,
    },
    /// Reject a quota request with a reason (field and center admins).
    Reject {
        id: Uuid,
        #[arg(long)]
        reason: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum WebhooksAction {
    /// List webhooks.
    List,
    /// Add a webhook; prints its secret (generated unless given), shown this once.
    Add {
        /// A name (DNS-1123 label)
        name: String,
        /// Where to POST (http:// or https://)
        #[arg(value_name = "URL")]
        endpoint: String,
        /// json or slack
        #[arg(long, default_value = "json")]
        format: String,
        /// An event it wants (repeat); none: all. See `GET /api/v1/openapi.json`, EventKind.
        #[arg(long = "event", value_name = "EVENT")]
        events: Vec<String>,
        /// The HMAC-SHA256 key (16 to 200 characters)
        #[arg(long)]
        secret: Option<String>,
    },
    /// Turn a webhook on or off.
    Enable {
        webhook: String,
        /// Turn it off instead
        #[arg(long)]
        off: bool,
    },
    /// Send a webhook a test notification.
    Ping {
        webhook: String,
        #[arg(long)]
        wait: bool,
    },
    /// Remove a webhook.
    Remove { webhook: String },
}

/// A client command, parsed.
#[derive(Debug)]
pub enum Request {
    Login { username: Option<String>, password_stdin: bool },
    Logout,
    Projects(ProjectsAction),
    Jobs(JobsAction),
    Servers(ServersAction),
    Capacity { field: String, without: Vec<String> },
    Quota(QuotaAction),
    Webhooks(WebhooksAction),
}

/// Runs one client command and prints its result to stdout (progress goes to stderr).
pub async fn run(common: Common, request: Request) -> Result<(), ClientError> {
    if let Request::Login { username, password_stdin } = request {
        return login(&common, username, password_stdin).await;
    }
    if let Request::Logout = request {
        let removed = Session::remove()?;
        println!("{}", if removed { "logged out" } else { "not logged in" });
        return Ok(());
    }
    let mut client = connect(&common)?;
    let out = common.output;
    match request {
        Request::Login { .. } | Request::Logout => Ok(()),
        Request::Projects(action) => projects(&mut client, out, action).await,
        Request::Jobs(action) => jobs(&client, out, action).await,
        Request::Servers(action) => servers(&mut client, out, action).await,
        Request::Capacity { field, without } if without.is_empty() => {
            capacity(&client, out, &field).await
        }
        Request::Capacity { field, without } => impact(&client, out, &field, &without).await,
        Request::Quota(action) => quota(&mut client, out, action).await,
        Request::Webhooks(action) => webhooks(&mut client, out, action).await,
    }
}

/// The client for the saved session. `--url` (or `INFRAHUB_URL`) may name another daemon, but
/// the saved token goes only to the URL it was issued by; elsewhere `INFRAHUB_TOKEN` (or a new
/// `infrahub login --url`) is needed.
fn connect(common: &Common) -> Result<Client, ClientError> {
    let session = Session::load()?;
    let env_token = std::env::var("INFRAHUB_TOKEN").ok().filter(|t| !t.is_empty());
    let url = common.url.clone().or_else(|| session.as_ref().map(|s| s.url.clone()));
    let Some(url) = url else {
        return Err(ClientError::Refused(
            "not logged in: run `infrahub login --url http://HOST:8000` first".to_owned(),
        ));
    };
    let token = match (env_token, &session) {
        (Some(token), _) => token,
        (None, Some(session)) if same_daemon(&session.url, &url) => {
            if session.expires_at.is_some_and(|expires| expires <= chrono::Utc::now()) {
                return Err(ClientError::Refused(
                    "the saved token has expired: run `infrahub login` again".to_owned(),
                ));
            }
            session.token.clone()
        }
        (None, Some(session)) => {
            return Err(ClientError::Refused(format!(
                "the saved session is for {}, not {url}: run `infrahub login --url {url}` or set \
                 INFRAHUB_TOKEN",
                session.url
            )));
        }
        (None, None) => {
            return Err(ClientError::Refused(
                "not logged in: run `infrahub login` first".to_owned(),
            ));
        }
    };
    Client::new(&url, Some(token), common.idempotency_key.clone())
}

/// Whether two base URLs name the same daemon (scheme, host, port and path, trailing slash
/// aside).
fn same_daemon(a: &str, b: &str) -> bool {
    let normal =
        |raw: &str| url::Url::parse(raw).ok().map(|u| u.as_str().trim_end_matches('/').to_owned());
    normal(a).is_some() && normal(a) == normal(b)
}

async fn login(
    common: &Common,
    username: Option<String>,
    password_stdin: bool,
) -> Result<(), ClientError> {
    let saved = Session::load().ok().flatten();
    let url = common
        .url
        .clone()
        .or_else(|| saved.as_ref().map(|s| s.url.clone()))
        .unwrap_or_else(|| "http://127.0.0.1:8000".to_owned());
    let username = match username.or_else(|| saved.as_ref().map(|s| s.username.clone())) {
        Some(name) => name,
        None => prompt("Username: ")?,
    };
    let password = if password_stdin {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .map_err(|e| ClientError::Failed(format!("cannot read stdin: {e}")))?;
        line.trim_end_matches(['\r', '\n']).to_owned()
    } else if std::io::stdin().is_terminal() {
        rpassword::prompt_password("Password: ")
            .map_err(|e| ClientError::Failed(format!("cannot read the password: {e}")))?
    } else {
        return Err(ClientError::Refused(
            "no terminal to prompt for the password: pipe it in with --password-stdin".to_owned(),
        ));
    };
    let client = Client::new(&url, None, None)?;
    let answer = client.login(&username, &password).await?;
    let token = answer["access_token"]
        .as_str()
        .ok_or_else(|| ClientError::Failed("the login answer holds no token".to_owned()))?;
    let expires_at = answer["expires_in"]
        .as_i64()
        .map(|secs| chrono::Utc::now() + chrono::Duration::seconds(secs));
    let session = Session {
        url: client.base().as_str().trim_end_matches('/').to_owned(),
        username: username.clone(),
        token: token.to_owned(),
        expires_at,
    };
    let path = session.save()?;
    eprintln!("logged in to {} as {username} (token saved in {})", session.url, path.display());
    Ok(())
}

fn prompt(label: &str) -> Result<String, ClientError> {
    if !std::io::stdin().is_terminal() {
        return Err(ClientError::Refused("no terminal to ask on: pass --username".to_owned()));
    }
    eprint!("{label}");
    let _ = std::io::stderr().flush();
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(|e| ClientError::Failed(format!("cannot read stdin: {e}")))?;
    Ok(line.trim().to_owned())
}

fn print_json(value: &Value) {
    println!("{}", serde_json::to_string_pretty(value).unwrap_or_default());
}

/// Builds `path?k=v&...` from the set values.
fn with_query(path: &str, params: &[(&str, Option<String>)]) -> String {
    let mut query = url::form_urlencoded::Serializer::new(String::new());
    for (key, value) in params {
        if let Some(value) = value {
            query.append_pair(key, value);
        }
    }
    let query = query.finish();
    if query.is_empty() { path.to_owned() } else { format!("{path}?{query}") }
}

/// Every item of a paginated list, following `next_cursor`.
async fn all_pages(client: &Client, path: &str) -> Result<Vec<Value>, ClientError> {
    let mut items = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let separator = if path.contains('?') { '&' } else { '?' };
        let page_path = match &cursor {
            Some(cursor) => format!("{path}{separator}limit=500&cursor={cursor}"),
            None => format!("{path}{separator}limit=500"),
        };
        let page = client.get(&page_path).await?;
        if let Some(batch) = page["items"].as_array() {
            items.extend(batch.iter().cloned());
        }
        match page["next_cursor"].as_str() {
            Some(next) if Some(next) != cursor.as_deref() => cursor = Some(next.to_owned()),
            _ => return Ok(items),
        }
    }
}

/// A project's id from an id or a name (names are looked up among live projects).
async fn project_id(client: &Client, project: &str) -> Result<Uuid, ClientError> {
    if let Ok(id) = project.parse::<Uuid>() {
        return Ok(id);
    }
    let named: Vec<Value> =
        all_pages(client, "projects").await?.into_iter().filter(|p| p["name"] == project).collect();
    let live: Vec<Value> = named
        .iter()
        .filter(|p| p["status"] != "deleted" && p["status"] != "rejected")
        .cloned()
        .collect();
    // None live: the newest rejected request of that name (its team lead reads why); ids
    // are UUIDv7, ordered by time.
    let found = match live.is_empty() {
        true => named.into_iter().max_by_key(|p| cell(&p["id"])).into_iter().collect(),
        false => live,
    };
    match found.as_slice() {
        [one] => one["id"]
            .as_str()
            .and_then(|id| id.parse().ok())
            .ok_or_else(|| ClientError::Failed("a project without an id".to_owned())),
        [] => Err(ClientError::Refused(format!("no project named {project:?} that you may see"))),
        many => {
            let ids: Vec<String> = many
                .iter()
                .map(|p| {
                    format!(
                        "{} ({} at {})",
                        cell(&p["id"]),
                        cell(&p["department"]),
                        cell(&p["site"])
                    )
                })
                .collect();
            Err(ClientError::Refused(format!(
                "{} projects are named {project:?}: pass an id: {}",
                many.len(),
                ids.join(", ")
            )))
        }
    }
}

const PROJECT_COLUMNS: [&str; 7] =
    ["name", "status", "site", "department", "sla", "tier", "cpu/ram"];

fn project_row(p: &Value) -> Vec<String> {
    vec![
        cell(&p["name"]),
        cell(&p["status"]),
        cell(&p["site"]),
        cell(&p["department"]),
        cell(&p["sla_type"]),
        cell(&p["performance_tier"]),
        format!("{}/{} GB", cell(&p["cpu"]), cell(&p["ram_gb"])),
    ]
}

fn show_project(p: &Value) -> String {
    record(
        p,
        &[
            ("id", "/id"),
            ("name", "/name"),
            ("namespace", "/namespace"),
            ("status", "/status"),
            ("failure", "/failure_reason"),
            ("approval", "/approval_reason"),
            ("approval expires", "/approval_expires_at"),
            ("deletion at", "/delete_at"),
            ("expires", "/expires_at"),
            ("in use cpu", "/used_cpu"),
            ("in use ram (GB)", "/used_ram_gb"),
            ("oversized", "/oversized"),
            ("site", "/site"),
            ("field", "/field"),
            ("department", "/department"),
            ("sla type", "/sla_type"),
            ("tier", "/performance_tier"),
            ("cpu", "/cpu"),
            ("ram (GB)", "/ram_gb"),
            ("generation", "/generation"),
            ("last job", "/last_job_id"),
            ("updated", "/updated_at"),
        ],
    )
}

/// Prints an accepted change (a 202) and, with `wait`, follows its job.
async fn accepted(
    client: &Client,
    out: Output,
    answer: Value,
    what: &str,
    wait: bool,
) -> Result<(), ClientError> {
    let job = answer["job_id"].as_str().and_then(|id| id.parse::<Uuid>().ok());
    match out {
        // With --wait, the job's end is printed instead; without a job, the answer is all.
        Output::Json if !wait || job.is_none() => print_json(&answer),
        Output::Json => {}
        Output::Table => match job {
            Some(job) => {
                let existing = if answer["existing"] == true { " (already under way)" } else { "" };
                println!("{what}: job {job}{existing}");
            }
            // No job: the project waits for a person, or has ended.
            None => match answer["project"]["approval_reason"].as_str() {
                Some(why) if answer["status"] == "pending_approval" => println!(
                    "{what}: waiting for a field admin's approval ({why}) until {}",
                    cell(&answer["project"]["approval_expires_at"])
                ),
                _ if answer["status"] == "deletion_scheduled" => println!(
                    "{what}: scheduled for deletion at {}; `infrahub projects restore` cancels it until then",
                    cell(&answer["project"]["delete_at"])
                ),
                _ => println!("{what}: {}", cell(&answer["status"])),
            },
        },
    }
    match (wait, job) {
        (true, Some(job)) => wait_for(client, out, job, Duration::from_secs(600)).await,
        _ => Ok(()),
    }
}

async fn projects(
    client: &mut Client,
    out: Output,
    action: ProjectsAction,
) -> Result<(), ClientError> {
    match action {
        ProjectsAction::List { site, status } => {
            let path = with_query("projects", &[("site", site), ("status", status)]);
            let items = all_pages(client, &path).await?;
            match out {
                Output::Json => print_json(&Value::Array(items)),
                Output::Table if items.is_empty() => println!("no projects"),
                Output::Table => {
                    let rows: Vec<Vec<String>> = items.iter().map(project_row).collect();
                    print!("{}", table(&PROJECT_COLUMNS, &rows));
                }
            }
        }
        ProjectsAction::Show { project } => {
            let id = project_id(client, &project).await?;
            let project = client.get(&format!("projects/{id}")).await?;
            match out {
                Output::Json => print_json(&project),
                Output::Table => print!("{}", show_project(&project)),
            }
        }
        ProjectsAction::Create { name, site, sla_type, performance_tier, expires_at, wait } => {
            let body = json!({ "name": name, "site": site, "sla_type": sla_type,
                               "performance_tier": performance_tier, "expires_at": expires_at });
            let answer = client.write(Method::POST, "projects", Some(body)).await?;
            let what = format!("project {name} ({}) requested", cell(&answer["id"]));
            accepted(client, out, answer, &what, wait).await?;
        }
        ProjectsAction::Resize { project, sla_type, performance_tier, wait } => {
            if sla_type.is_none() && performance_tier.is_none() {
                return Err(ClientError::Refused(
                    "say what changes: --sla and/or --tier".to_owned(),
                ));
            }
            let id = project_id(client, &project).await?;
            let body = json!({ "sla_type": sla_type, "performance_tier": performance_tier });
            let answer = client.write(Method::PATCH, &format!("projects/{id}"), Some(body)).await?;
            accepted(client, out, answer, &format!("project {project} resizing"), wait).await?;
        }
        ProjectsAction::Delete { project, yes, wait } => {
            let id = project_id(client, &project).await?;
            if !yes {
                let current = client.get(&format!("projects/{id}")).await?;
                let name = cell(&current["name"]);
                confirm_by_typing(&name)?;
            }
            let answer = client.write(Method::DELETE, &format!("projects/{id}"), None).await?;
            accepted(client, out, answer, &format!("project {project} deleted"), wait).await?;
        }
        ProjectsAction::Retry { project, wait } => {
            let id = project_id(client, &project).await?;
            let path = format!("projects/{id}/retry");
            let answer = client.write(Method::POST, &path, None).await?;
            accepted(client, out, answer, &format!("project {project} retrying"), wait).await?;
        }
        ProjectsAction::Restore { project, wait } => {
            let id = project_id(client, &project).await?;
            let path = format!("projects/{id}/restore");
            let answer = client.write(Method::POST, &path, None).await?;
            accepted(client, out, answer, &format!("project {project} restored"), wait).await?;
        }
        ProjectsAction::Approve { project, wait } => {
            let id = project_id(client, &project).await?;
            let path = format!("projects/{id}/approve");
            let answer = client.write(Method::POST, &path, None).await?;
            accepted(client, out, answer, &format!("project {project} approved"), wait).await?;
        }
        ProjectsAction::Reject { project, reason } => {
            let id = project_id(client, &project).await?;
            let path = format!("projects/{id}/reject");
            let body = json!({ "reason": reason });
            let answer = client.write(Method::POST, &path, Some(body)).await?;
            accepted(client, out, answer, &format!("project {project}"), false).await?;
        }
    }
    Ok(())
}

/// Asks for the project's name before a deletion; without a terminal, `--yes` is needed.
fn confirm_by_typing(name: &str) -> Result<(), ClientError> {
    if !std::io::stdin().is_terminal() {
        return Err(ClientError::Refused(format!(
            "deleting {name} removes its namespace: confirm with --yes"
        )));
    }
    let typed = prompt(&format!(
        "Deleting removes the namespace. Type the project's name ({name}) to go on: "
    ))?;
    if typed != name {
        return Err(ClientError::Refused("the names differ; nothing deleted".to_owned()));
    }
    Ok(())
}

/// `attempts/max`; kinds that retry until a deadline rather than a count (deliveries: a
/// thousand attempts) show the attempt alone.
fn attempts(job: &Value) -> String {
    match job["max_attempts"].as_i64() {
        Some(max) if max <= 100 => format!("{}/{max}", cell(&job["attempts"])),
        _ => cell(&job["attempts"]),
    }
}

const JOB_COLUMNS: [&str; 6] = ["id", "kind", "status", "attempts", "subject", "created"];

fn job_row(job: &Value) -> Vec<String> {
    vec![
        cell(&job["id"]),
        cell(&job["kind"]),
        cell(&job["status"]),
        attempts(job),
        match (job["subject_type"].as_str(), job["subject_id"].as_str()) {
            (Some(t), Some(id)) => format!("{t}:{id}"),
            _ => "-".to_owned(),
        },
        cell(&job["created_at"]),
    ]
}

async fn jobs(client: &Client, out: Output, action: JobsAction) -> Result<(), ClientError> {
    match action {
        JobsAction::List { kind, status, subject } => {
            let path =
                with_query("jobs", &[("kind", kind), ("status", status), ("subject", subject)]);
            // The newest page: the job history is long, and the newest is what one looks for.
            let page = client.get(&path).await?;
            let items = page["items"].as_array().cloned().unwrap_or_default();
            match out {
                Output::Json => print_json(&page),
                Output::Table if items.is_empty() => println!("no jobs"),
                Output::Table => {
                    let rows: Vec<Vec<String>> = items.iter().map(job_row).collect();
                    print!("{}", table(&JOB_COLUMNS, &rows));
                }
            }
        }
        JobsAction::Show { id } => {
            let job = client.get(&format!("jobs/{id}")).await?;
            match out {
                Output::Json => print_json(&job),
                Output::Table => print!("{}", show_job(&job)),
            }
        }
        JobsAction::Wait { id, timeout } => {
            wait_for(client, out, id, Duration::from_secs(timeout)).await?;
        }
    }
    Ok(())
}

fn show_job(job: &Value) -> String {
    let mut text = record(
        job,
        &[
            ("id", "/id"),
            ("kind", "/kind"),
            ("status", "/status"),
            ("attempts", "/attempts"),
            ("max attempts", "/max_attempts"),
            ("subject type", "/subject_type"),
            ("subject", "/subject_id"),
            ("submitted by", "/submitted_by_name"),
            ("created", "/created_at"),
            ("started", "/started_at"),
            ("finished", "/finished_at"),
            ("next run", "/next_run_at"),
            ("last error", "/last_error"),
        ],
    );
    if let Some(errors) = job["errors"].as_array().filter(|e| !e.is_empty()) {
        text.push_str("errors:\n");
        for error in errors {
            let permanent = if error["permanent"] == true { " (permanent)" } else { "" };
            text.push_str(&format!(
                "  attempt {} at {}: {}{permanent}\n",
                cell(&error["attempt"]),
                cell(&error["at"]),
                cell(&error["error"])
            ));
        }
    }
    text
}

/// Follows a job to its end with a progress line on stderr (rewritten in place on a terminal,
/// one line per change otherwise). Succeeded: Ok; failed or cancelled: Failed; too slow:
/// TimedOut.
async fn wait_for(
    client: &Client,
    out: Output,
    mut id: Uuid,
    timeout: Duration,
) -> Result<(), ClientError> {
    let started = Instant::now();
    let mut progress = Progress::new();
    let mut delay = Duration::from_millis(100);
    loop {
        let job = match client.get(&format!("jobs/{id}")).await {
            Ok(job) => job,
            // The daemon is away for a while (restart, database outage): keep following the job
            // until the timeout; a refusal (4xx) ends the wait at once.
            Err(ClientError::Failed(why)) if started.elapsed() < timeout => {
                progress.show(format!("job {id}: waiting for InfraHub ({why})"));
                tokio::time::sleep(Duration::from_secs(2)).await;
                continue;
            }
            Err(ClientError::Failed(why)) => {
                progress.finish();
                return Err(ClientError::TimedOut(format!(
                    "job {id}: InfraHub did not answer before the timeout ({why})"
                )));
            }
            Err(err) => return Err(err),
        };
        let status = job["status"].as_str().unwrap_or("unknown").to_owned();
        let mut line =
            format!("job {id} {}: {status} (attempt {})", cell(&job["kind"]), attempts(&job));
        if status == "retrying"
            && let Some(error) = job["last_error"].as_str()
        {
            line.push_str(&format!(", last error: {error}"));
        }
        progress.show(line);
        // A newer change of the same thing took this one's place: follow that job.
        if status == "superseded"
            && let Some(newer) =
                job["result"]["superseded_by"].as_str().and_then(|n| n.parse().ok())
        {
            progress.show(format!("job {id} superseded by job {newer}; following it"));
            id = newer;
            continue;
        }
        if matches!(status.as_str(), "succeeded" | "failed" | "cancelled" | "superseded") {
            progress.finish();
            if out == Output::Json {
                print_json(&job);
            }
            return match status.as_str() {
                "succeeded" => Ok(()),
                _ => Err(ClientError::Failed(format!(
                    "job {id} {status}: {}",
                    job["last_error"].as_str().unwrap_or("no error recorded")
                ))),
            };
        }
        if started.elapsed() >= timeout {
            progress.finish();
            return Err(ClientError::TimedOut(format!(
                "job {id} is still {status} after {} s; follow it with `infrahub jobs wait {id}`",
                timeout.as_secs()
            )));
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(2));
    }
}

/// The progress line of a job being followed: a live spinner line on a terminal (indicatif),
/// one line per change on stderr otherwise (logs, scripts, tests).
struct Progress {
    bar: Option<indicatif::ProgressBar>,
    shown: String,
}

impl Progress {
    fn new() -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = indicatif::ProgressBar::new_spinner();
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        });
        Self { bar, shown: String::new() }
    }

    fn show(&mut self, line: String) {
        if self.shown == line {
            return;
        }
        match &self.bar {
            Some(bar) => bar.set_message(line.clone()),
            None => eprintln!("{line}"),
        }
        self.shown = line;
    }

    /// Leaves the last line on screen.
    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish();
        }
    }
}

async fn servers(
    client: &mut Client,
    out: Output,
    action: ServersAction,
) -> Result<(), ClientError> {
    match action {
        ServersAction::List { site, field, status, unassigned } => {
            let params = [
                ("site", site),
                ("field_id", field.map(|f| f.to_string())),
                ("status", status),
                ("unassigned", unassigned.then(|| "true".to_owned())),
            ];
            let items = all_pages(client, &with_query("servers", &params)).await?;
            match out {
                Output::Json => print_json(&Value::Array(items)),
                Output::Table if items.is_empty() => println!("no servers"),
                Output::Table => {
                    let rows: Vec<Vec<String>> = items
                        .iter()
                        .map(|s| {
                            vec![
                                cell(&s["name"]),
                                cell(&s["site"]),
                                cell(&s["field"]),
                                cell(&s["status"]),
                                cell(&s["cpu_cores"]),
                                cell(&s["ram_gb"]),
                            ]
                        })
                        .collect();
                    print!(
                        "{}",
                        table(&["name", "site", "field", "status", "cpu", "ram_gb"], &rows)
                    );
                }
            }
        }
        ServersAction::Sync { force, wait } => {
            let path = if force { "admin/sync/servers?force=true" } else { "admin/sync/servers" };
            let answer = client.write(Method::POST, path, None).await?;
            accepted(client, out, answer, "server sync", wait).await?;
        }
    }
    Ok(())
}

/// A field's id from an id or a name: a field admin's own field by name, else the center
/// admin's list of fields.
async fn field_id(client: &Client, field: &str) -> Result<Uuid, ClientError> {
    if let Ok(id) = field.parse::<Uuid>() {
        return Ok(id);
    }
    let me = client.get("me").await?;
    if me["field"]["name"] == field
        && let Some(id) = me["field"]["id"].as_str().and_then(|id| id.parse().ok())
    {
        return Ok(id);
    }
    if me["role"] != "center_admin" {
        return Err(ClientError::Refused(format!("no field named {field:?} that you may see")));
    }
    let fields = all_pages(client, "admin/fields").await?;
    fields
        .iter()
        .find(|f| f["name"] == field)
        .and_then(|f| f["id"].as_str())
        .and_then(|id| id.parse().ok())
        .ok_or_else(|| ClientError::Refused(format!("no field named {field:?}")))
}

fn resources(value: &Value) -> String {
    format!("{}/{}", cell(&value["cpu"]), cell(&value["ram_gb"]))
}

async fn capacity(client: &Client, out: Output, field: &str) -> Result<(), ClientError> {
    let id = field_id(client, field).await?;
    let report = client.get(&format!("fields/{id}/capacity")).await?;
    match out {
        Output::Json => print_json(&report),
        Output::Table => {
            let sites = report["sites"].as_array().cloned().unwrap_or_default();
            println!("field {} (cpu/ram GB)", cell(&report["field"]));
            if sites.is_empty() {
                println!("no servers assigned");
                return Ok(());
            }
            let rows: Vec<Vec<String>> = sites
                .iter()
                .map(|s| {
                    vec![
                        cell(&s["site"]),
                        cell(&s["servers"]),
                        resources(&s["capacity"]),
                        resources(&s["allocated"]),
                        resources(&s["free"]),
                        resources(&s["deficit"]),
                        cell(&s["missing_servers"]),
                    ]
                })
                .collect();
            let headers =
                ["site", "servers", "capacity", "allocated", "free", "deficit", "missing"];
            print!("{}", table(&headers, &rows));
        }
    }
    Ok(())
}

/// What losing `servers` (names or ids of the field's servers) would do to the field.
async fn impact(
    client: &Client,
    out: Output,
    field: &str,
    servers: &[String],
) -> Result<(), ClientError> {
    let id = field_id(client, field).await?;
    let mut ids = Vec::with_capacity(servers.len());
    let mut listed: Option<Vec<Value>> = None;
    for server in servers {
        if let Ok(server_id) = server.parse::<Uuid>() {
            ids.push(server_id.to_string());
            continue;
        }
        if listed.is_none() {
            listed = Some(all_pages(client, &format!("servers?field_id={id}")).await?);
        }
        let named: Vec<&str> = listed
            .iter()
            .flatten()
            .filter(|s| s["name"] == server.as_str())
            .filter_map(|s| s["id"].as_str())
            .collect();
        match named[..] {
            [one] => ids.push(one.to_owned()),
            [] => {
                return Err(ClientError::Refused(format!(
                    "no server named {server:?} in field {field}"
                )));
            }
            _ => {
                return Err(ClientError::Refused(format!(
                    "{} servers are named {server:?} in field {field}; name one by id: {}",
                    named.len(),
                    named.join(", ")
                )));
            }
        }
    }
    let query: Vec<String> = ids.iter().map(|id| format!("server={id}")).collect();
    let report = client.get(&format!("fields/{id}/capacity/impact?{}", query.join("&"))).await?;
    match out {
        Output::Json => print_json(&report),
        Output::Table => {
            println!(
                "field {} without {} (cpu/ram GB)",
                cell(&report["field"]),
                servers.join(", ")
            );
            for site in report["sites"].as_array().into_iter().flatten() {
                let rows = vec![vec![
                    cell(&site["site"]),
                    cell(&site["servers_lost"]),
                    resources(&site["capacity_now"]),
                    resources(&site["capacity_after"]),
                    resources(&site["allocated"]),
                    resources(&site["deficit_after"]),
                ]];
                let headers =
                    ["site", "servers lost", "capacity now", "after", "allocated", "deficit after"];
                print!("{}", table(&headers, &rows));
                let short: Vec<Vec<String>> = site["departments"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|d| {
                        vec![
                            cell(&d["department"]),
                            resources(&d["quota"]),
                            resources(&d["backed"]),
                            resources(&d["short"]),
                            resources(&d["projects_unbacked"]),
                        ]
                    })
                    .collect();
                if short.is_empty() {
                    println!("no department would be short at {}", cell(&site["site"]));
                } else {
                    let headers = ["department", "quota", "backed", "short", "projects unbacked"];
                    print!("{}", table(&headers, &short));
                }
            }
        }
    }
    Ok(())
}

/// A department's id and field from an id or a name.
async fn department(
    client: &Client,
    department: &str,
) -> Result<(Uuid, Option<Uuid>), ClientError> {
    if let Ok(id) = department.parse::<Uuid>() {
        return Ok((id, None));
    }
    let me = client.get("me").await?;
    if me["department"]["name"] == department
        && let Some(id) = me["department"]["id"].as_str().and_then(|id| id.parse().ok())
    {
        let field = me["field"]["id"].as_str().and_then(|f| f.parse().ok());
        return Ok((id, field));
    }
    if me["role"] != "center_admin" {
        return Err(ClientError::Refused(format!(
            "only center admins look departments up by name: pass the id of {department:?}"
        )));
    }
    let all = all_pages(client, "admin/departments").await?;
    let found = all
        .iter()
        .find(|d| d["name"] == department)
        .ok_or_else(|| ClientError::Refused(format!("no department named {department:?}")))?;
    let id = found["id"].as_str().and_then(|id| id.parse().ok());
    let field = found["field_id"].as_str().and_then(|f| f.parse().ok());
    id.map(|id| (id, field))
        .ok_or_else(|| ClientError::Failed("a department without an id".to_owned()))
}

async fn quota(client: &mut Client, out: Output, action: QuotaAction) -> Result<(), ClientError> {
    match action {
        QuotaAction::Set { department: name, site, cpu, ram_gb, wait } => {
            let (dept, field) = department(client, &name).await?;
            let field = match field {
                Some(field) => field,
                None => {
                    let quota = client.get(&format!("departments/{dept}/quota")).await?;
                    quota["field_id"].as_str().and_then(|f| f.parse().ok()).ok_or_else(|| {
                        ClientError::Failed("the department's quota view names no field".to_owned())
                    })?
                }
            };
            let body = json!({ "field_id": field, "dept_id": dept, "site": site,
                               "cpu_limit": cpu, "ram_gb_limit": ram_gb });
            let answer =
                client.write(Method::POST, "allocations/department-quota", Some(body)).await?;
            let what = format!("quota of {name} at {site} to {cpu} CPU / {ram_gb} GB");
            accepted(client, out, answer, &what, wait).await?;
        }
        QuotaAction::Show { department: name } => {
            let (dept, _) = department(client, &name).await?;
            let quota = client.get(&format!("departments/{dept}/quota")).await?;
            match out {
                Output::Json => print_json(&quota),
                Output::Table => {
                    let sites = quota["sites"].as_array().cloned().unwrap_or_default();
                    let rows: Vec<Vec<String>> = sites
                        .iter()
                        .map(|s| {
                            vec![
                                cell(&s["site"]),
                                resources(&s["quota"]),
                                resources(&s["used"]),
                                resources(&s["free"]),
                                match s["in_use"].is_null() {
                                    true => "-".to_owned(),
                                    false => format!(
                                        "{:.1}/{:.1}",
                                        s["in_use"]["cpu"].as_f64().unwrap_or_default(),
                                        s["in_use"]["ram_gb"].as_f64().unwrap_or_default()
                                    ),
                                },
                            ]
                        })
                        .collect();
                    println!("department {} (cpu/ram GB)", cell(&quota["department"]));
                    print!("{}", table(&["site", "quota", "reserved", "free", "in use"], &rows));
                }
            }
        }
        QuotaAction::Request { site, cpu, ram_gb, reason } => {
            let body = json!({ "site": site, "cpu": cpu, "ram_gb": ram_gb, "reason": reason });
            let answer = client.write(Method::POST, "quota-requests", Some(body)).await?;
            match out {
                Output::Json => print_json(&answer),
                Output::Table => println!(
                    "quota request {} at {site} (+{cpu} CPU, +{ram_gb} GB): pending",
                    cell(&answer["id"]),
                ),
            }
        }
        QuotaAction::Requests { status } => {
            let items =
                all_pages(client, &with_query("quota-requests", &[("status", status)])).await?;
            match out {
                Output::Json => print_json(&Value::Array(items)),
                Output::Table if items.is_empty() => println!("no quota requests"),
                Output::Table => {
                    let rows: Vec<Vec<String>> = items
                        .iter()
                        .map(|r| {
                            vec![
                                cell(&r["id"]),
                                cell(&r["department"]),
                                cell(&r["site"]),
                                format!("+{}/+{}", cell(&r["cpu"]), cell(&r["ram_gb"])),
                                cell(&r["status"]),
                                match r["status"].as_str() {
                                    Some("pending") => fit_words(&r["fit"]),
                                    Some("applied") => format!(
                                        "quota now {}/{}",
                                        cell(&r["approved_cpu"]),
                                        cell(&r["approved_ram_gb"])
                                    ),
                                    _ => cell(&r["decision_reason"]),
                                },
                                cell(&r["reason"]),
                            ]
                        })
                        .collect();
                    let columns = ["id", "department", "site", "more", "status", "fit", "reason"];
                    print!("{}", table(&columns, &rows));
                }
            }
        }
        QuotaAction::Approve { id, wait } => {
            let path = format!("quota-requests/{id}/approve");
            let answer = client.write(Method::POST, &path, None).await?;
            let what = format!(
                "quota request {id} approved: +{} CPU / +{} GB",
                cell(&answer["request"]["cpu"]),
                cell(&answer["request"]["ram_gb"])
            );
            accepted(client, out, answer, &what, wait).await?;
        }
        QuotaAction::Reject { id, reason } => {
            let path = format!("quota-requests/{id}/reject");
            let answer =
                client.write(Method::POST, &path, Some(json!({ "reason": reason }))).await?;
            match out {
                Output::Json => print_json(&answer),
                Output::Table => println!("quota request {id}: {}", cell(&answer["status"])),
            }
        }
    }
    Ok(())
}

/// What approving a pending quota request would do, in words.
fn fit_words(fit: &Value) -> String {
    if fit.is_null() {
        return "-".to_owned();
    }
    let verdict = if fit["fits"] == true { "fits" } else { "does not fit" };
    format!(
        "quota {} -> {}, field free {}: {verdict}",
        resources(&fit["quota_now"]),
        resources(&fit["quota_after"]),
        resources(&fit["field_free"])
    )
}

/// A webhook's id from an id or a name.
async fn webhook_id(client: &Client, webhook: &str) -> Result<Uuid, ClientError> {
    if let Ok(id) = webhook.parse::<Uuid>() {
        return Ok(id);
    }
    all_pages(client, "admin/webhooks")
        .await?
        .into_iter()
        .find(|w| w["name"] == webhook)
        .and_then(|w| w["id"].as_str().and_then(|id| id.parse().ok()))
        .ok_or_else(|| ClientError::Refused(format!("no webhook named {webhook:?}")))
}

async fn webhooks(
    client: &mut Client,
    out: Output,
    action: WebhooksAction,
) -> Result<(), ClientError> {
    match action {
        WebhooksAction::List => {
            let items = all_pages(client, "admin/webhooks").await?;
            match out {
                Output::Json => print_json(&Value::Array(items)),
                Output::Table if items.is_empty() => println!("no webhooks"),
                Output::Table => {
                    let rows: Vec<Vec<String>> = items
                        .iter()
                        .map(|w| {
                            let events: Vec<String> = w["events"]
                                .as_array()
                                .map(|e| e.iter().map(cell).collect())
                                .unwrap_or_default();
                            let events =
                                if events.is_empty() { "all".to_owned() } else { events.join(",") };
                            let on = if w["enabled"] == true { "on" } else { "off" };
                            vec![
                                cell(&w["name"]),
                                cell(&w["format"]),
                                on.to_owned(),
                                events,
                                cell(&w["url"]),
                            ]
                        })
                        .collect();
                    print!("{}", table(&["name", "format", "enabled", "events", "url"], &rows));
                }
            }
        }
        WebhooksAction::Add { name, endpoint, format, events, secret } => {
            let body = json!({ "name": name, "url": endpoint, "format": format, "events": events,
                               "secret": secret });
            let answer = client.write(Method::POST, "admin/webhooks", Some(body)).await?;
            match out {
                Output::Json => print_json(&answer),
                Output::Table => {
                    println!("webhook {name} added ({})", cell(&answer["id"]));
                    println!("secret (shown this once): {}", cell(&answer["secret"]));
                }
            }
        }
        WebhooksAction::Enable { webhook, off } => {
            let id = webhook_id(client, &webhook).await?;
            let body = json!({ "enabled": !off });
            let answer =
                client.write(Method::PATCH, &format!("admin/webhooks/{id}"), Some(body)).await?;
            match out {
                Output::Json => print_json(&answer),
                Output::Table => {
                    println!("webhook {webhook} {}", if off { "off" } else { "on" })
                }
            }
        }
        WebhooksAction::Ping { webhook, wait } => {
            let id = webhook_id(client, &webhook).await?;
            let answer =
                client.write(Method::POST, &format!("admin/webhooks/{id}/ping"), None).await?;
            accepted(client, out, answer, &format!("ping to {webhook}"), wait).await?;
        }
        WebhooksAction::Remove { webhook } => {
            let id = webhook_id(client, &webhook).await?;
            client.write(Method::DELETE, &format!("admin/webhooks/{id}"), None).await?;
            if out == Output::Table {
                println!("webhook {webhook} removed");
            }
        }
    }
    Ok(())
}
