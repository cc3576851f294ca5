//! Writing new projects of concurrent requests together.
//!
//! A new project written alone costs PostgreSQL a transaction of six round trips: `BEGIN`,
//! its department and site, its job, its row, its audit event and the `COMMIT` that checks its
//! reservation. Under load those were most of what a project's request cost. [`ProjectWrites`]
//! gathers the new projects that arrive while its previous statements are on their way
//! ([`Gather`]) and writes them in two: their departments and sites
//! ([`org::departments_and_sites`]), then their rows, jobs and audit events
//! ([`projects::create_many`]), which commit together, each reservation checked by the
//! database at the commit. A request is answered once the statement holding its project has
//! committed; a lone request waits for nothing but its own statements (there is no timer); one
//! whose client left before its statements started is not written (nothing was answered).
//!
//! Only the common case comes here: a project that needs no approval, asked for outside an
//! `Idempotency-Key`. A project this path does not write is answered `None`, and its request
//! then goes the way a project goes alone ([`super::projects::create`]), which answers it
//! with the reason: a department or site not found, a namespace the template cannot make,
//! and every refusal of the shared statement (a name taken, a quota that does not hold one
//! of them, a use past 90 % to warn of), which writes none of its projects: all of them are
//! then written alone. Any other failure is every request's answer at once: the database away
//! (503), a deadlock with another transaction (503, to be sent again, as for a project
//! written alone), or our own mistake (500).

use std::collections::BTreeSet;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::PgPool;
use tracing::Instrument;
use uuid::Uuid;

use crate::domain::project::namespace_for;
use crate::domain::scope::Owner;
use crate::jobs::wake::WakeUps;
use crate::store::audit::Actor;
use crate::store::gather::{self, Asked, Gather, Statement, Unreachable, fail_all};
use crate::store::jobs::{Job, NewJob, WakeUp};
use crate::store::projects::{self, NewProject, Project, Provisioned};
use crate::store::{StoreError, org};

/// A new project, valid as far as the request alone can tell, that needs no approval.
pub struct NewProvisioned {
    pub id: Uuid,
    pub department_id: Uuid,
    /// The site's name, as asked.
    pub site: String,
    /// A valid DNS-1123 label.
    pub name: String,
    pub sla_type: String,
    pub performance_tier: String,
    pub cpu: i32,
    pub ram_gb: i32,
    pub extra_quota: Value,
    pub expires_at: Option<DateTime<Utc>>,
    pub created_by: Uuid,
    /// Its `provision_namespace` job, due now, with no keys; the department's field is added
    /// to its scope once read.
    pub job: NewJob<'static>,
    pub actor: Actor,
}

/// Writes new projects, several to a statement under load. Cheap to clone: clones share the
/// statements.
#[derive(Clone)]
pub struct ProjectWrites {
    gather: Gather<ProjectStatement>,
}

impl ProjectWrites {
    /// The connections of [`gather::pool`] its statements may hold at once.
    pub const CONNECTIONS: u32 = gather::runners::<ProjectStatement>();

    /// Statements run on `shared` (the gathers' pool); namespaces are made by `template`
    /// (`delivery.namespace_template`).
    pub fn new(shared: PgPool, template: String, wake_ups: Arc<WakeUps>) -> Self {
        Self { gather: Gather::new(ProjectStatement { pool: shared, template, wake_ups }) }
    }

    /// Writes `new` with its job and audit event, committed once this returns, its job's
    /// wake-up sent; `None` when it was not written here (see the module's documentation).
    pub async fn create(&self, new: NewProvisioned) -> Result<Option<(Project, Job)>, StoreError> {
        self.gather.ask(new).await
    }
}

/// The statements writing new projects.
struct ProjectStatement {
    pool: PgPool,
    template: String,
    wake_ups: Arc<WakeUps>,
}

impl Statement for ProjectStatement {
    type Ask = NewProvisioned;
    type Answer = Option<(Project, Job)>;
    const BATCH: usize = 64;
    /// Two: while one commits (waiting for the reservation locks), the next gathers.
    const RUNNERS: usize = 2;

    async fn run(&self, batch: Vec<Asked<Self>>) -> Option<Unreachable> {
        let requests: Vec<&str> =
            batch.iter().filter_map(|asked| asked.ask.actor.request_id.as_deref()).collect();
        let span = tracing::info_span!(
            "project_statement",
            projects = batch.len(),
            requests = requests.join(" ")
        );
        self.write(batch).instrument(span).await
    }
}

/// An ask whose department and site were found: its department's field, its site's id and
/// its namespace.
struct Placed {
    asked: Asked<ProjectStatement>,
    field_id: Uuid,
    site_id: Uuid,
    namespace: String,
}

impl ProjectStatement {
    async fn write(&self, batch: Vec<Asked<Self>>) -> Option<Unreachable> {
        let mut conn = match self.pool.acquire().await {
            Ok(conn) => conn,
            Err(err) => return failed(batch, err),
        };
        let asked: Vec<(Uuid, &str)> =
            batch.iter().map(|a| (a.ask.department_id, a.ask.site.as_str())).collect();
        let found = match org::departments_and_sites(&mut conn, &asked).await {
            Ok(found) => found,
            Err(err) if refused_for_one(&err) => return alone(batch),
            Err(err) => return failed(batch, into_sqlx(err)),
        };
        let mut placed = Vec::with_capacity(batch.len());
        for (mut asked, (department, site)) in batch.into_iter().zip(found) {
            let namespace = department
                .as_ref()
                .and_then(|d| namespace_for(&self.template, &d.name, &asked.ask.name).ok());
            match (department, site, namespace) {
                (Some(department), Some(site), Some(namespace)) => {
                    asked.ask.job.scope = Owner::department(department.field_id, department.id);
                    let (field_id, site_id) = (department.field_id, site.id);
                    let namespace = namespace.as_str().to_owned();
                    placed.push(Placed { asked, field_id, site_id, namespace });
                }
                // Written alone, to be told what is wrong.
                _ => {
                    count("alone", 1);
                    asked.answer(Ok(None));
                }
            }
        }
        if placed.is_empty() {
            return None;
        }
        let made = {
            let provisioned: Vec<Provisioned<'_>> = placed.iter().map(provisioned).collect();
            projects::create_many(&mut conn, &provisioned).await
        };
        match made {
            Ok(made) => {
                count("shared", made.len());
                let kinds: BTreeSet<&str> = made.iter().map(|(_, job)| job.kind.as_str()).collect();
                self.wake_ups.send(kinds.into_iter().map(WakeUp::now));
                for (placed, made) in placed.into_iter().zip(made) {
                    placed.asked.answer(Ok(Some(made)));
                }
                None
            }
            Err(err) if refused_for_one(&err) => {
                tracing::info!(error = %err, count = placed.len(), "a shared project statement was refused; its projects go alone");
                alone(placed.into_iter().map(|p| p.asked).collect())
            }
            Err(err) => failed(placed.into_iter().map(|p| p.asked).collect(), into_sqlx(err)),
        }
    }
}

/// Counts `projects` new projects `outcome` (`shared`: written by a shared statement; `alone`:
/// sent to be written alone; `failed`: answered with the statement's failure) in
/// `infrahub_project_writes_total`.
fn count(outcome: &'static str, projects: usize) {
    metrics::counter!("infrahub_project_writes_total", "outcome" => outcome)
        .increment(projects as u64);
}

/// Answers each ask of `batch` with `err` ([`fail_all`]).
fn failed(batch: Vec<Asked<ProjectStatement>>, err: sqlx::Error) -> Option<Unreachable> {
    count("failed", batch.len());
    fail_all(batch, err)
}

/// Sends each ask of `batch` to be written alone (answered `None`).
fn alone(batch: Vec<Asked<ProjectStatement>>) -> Option<Unreachable> {
    count("alone", batch.len());
    for asked in batch {
        asked.answer(Ok(None));
    }
    None
}

/// What [`projects::create_many`] is given for `placed`.
fn provisioned(placed: &Placed) -> Provisioned<'_> {
    let ask = &placed.asked.ask;
    Provisioned {
        project: NewProject {
            id: ask.id,
            last_job_id: None,
            name: &ask.name,
            namespace: &placed.namespace,
            department_id: ask.department_id,
            site_id: placed.site_id,
            status: crate::domain::project::ProjectStatus::Provisioning,
            sla_type: &ask.sla_type,
            performance_tier: &ask.performance_tier,
            cpu: ask.cpu,
            ram_gb: ask.ram_gb,
            extra_quota: &ask.extra_quota,
            created_by: ask.created_by,
            approval_expires_after_secs: None,
            approval_reason: None,
            expires_at: ask.expires_at,
            reservation_checked_at_commit: true,
        },
        field_id: placed.field_id,
        job: &ask.job,
        actor: &ask.actor,
    }
}

/// Whether a shared statement was refused for what one of its projects holds: a name taken,
/// a department or site gone since it was read, a value PostgreSQL refuses (SQLSTATE classes
/// 22, 23), a reservation refused at the commit. Each project is then better written alone.
/// Not a transaction that gave way to another (a deadlock): like a project written alone,
/// each request is told so (503, to be sent again), not made to queue behind the other.
fn refused_for_one(err: &StoreError) -> bool {
    match err {
        StoreError::Duplicate { .. }
        | StoreError::MissingReference { .. }
        | StoreError::InUse { .. } => true,
        StoreError::Database(err) => {
            gather::refused_for_a_value(err)
                || crate::store::capacity::reservation_refused_at_commit(err)
        }
        StoreError::NotFound | StoreError::Shared(_) => false,
    }
}

/// The database's failure inside `err`, to share with every caller (one that is not the
/// database's is ours: an internal error, not the database away).
fn into_sqlx(err: StoreError) -> sqlx::Error {
    match err {
        StoreError::Database(err) => err,
        other => sqlx::Error::InvalidArgument(other.to_string()),
    }
}
