//! `poll_argocd`: after delivery, reads the site's Argo CD Application until the project's
//! Namespace and ResourceQuota are Synced and Healthy (or, after a deletion, gone), then
//! settles the project. While Argo CD is still on its way the job re-schedules itself without
//! spending attempts; past `argocd.deadline_secs` the project fails with Argo CD's message.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use uuid::Uuid;

use super::provision_namespace::{current_project, settle};
use super::{HookFuture, JobError, JobFuture, JobHandler, KindSettings, Outcome};
use crate::clients::argocd::{Application, ArgoError, Argocd, Resource};
use crate::context::Context;
use crate::domain::project::ProjectStatus;
use crate::store::jobs::{self, Claimed, JobScope, NewJob};
use crate::store::projects::{self, Project};

pub const POLL_ARGOCD: &str = "poll_argocd";

/// What the poll waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Expect {
    /// Namespace and quota Synced and Healthy: the project becomes active.
    Present,
    /// Namespace and quota pruned: the project is deleted.
    Absent,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PollPayload {
    pub project_id: Uuid,
    pub expect: Expect,
    /// When delivery finished: the deadline counts from here.
    pub since: DateTime<Utc>,
}

impl From<ArgoError> for JobError {
    fn from(err: ArgoError) -> Self {
        match err {
            ArgoError::Permanent(m) => JobError::Permanent(m),
            ArgoError::Transient(m) => JobError::Transient(m),
        }
    }
}

fn live_states(expect: Expect) -> &'static [ProjectStatus] {
    match expect {
        Expect::Present => &[ProjectStatus::Provisioning, ProjectStatus::Degraded],
        Expect::Absent => &[ProjectStatus::Deleting],
    }
}

/// Makes a `poll_argocd` job the project's latest job, in one transaction; called by the job
/// that delivered the manifests, while it is still the project's latest.
pub async fn hand_over(
    ctx: &Context,
    job: &Claimed,
    project: &Project,
    expect: Expect,
) -> Result<Option<Uuid>, JobError> {
    let mut tx = ctx.pool.begin().await?;
    let current = projects::lock(&mut tx, project.id).await?;
    if current.last_job_id != Some(job.id) {
        return Ok(None);
    }
    let max_attempts = ctx.registry.get(POLL_ARGOCD).map_or(5, |r| r.settings.max_attempts as i32);
    let payload = json!(PollPayload { project_id: project.id, expect, since: Utc::now() });
    let new = NewJob {
        subject: Some(("project", project.id.to_string())),
        scope: JobScope {
            field_id: Some(project.field_id),
            department_id: Some(project.department_id),
        },
        ..NewJob::new(POLL_ARGOCD, payload, "system:delivery", max_attempts)
    };
    let poll = jobs::enqueue(&mut tx, &new).await?.into_job();
    projects::set_job(&mut tx, project.id, poll.id).await?;
    tx.commit().await?;
    Ok(Some(poll.id))
}

/// Synced, and Healthy where Argo CD assesses health (it does not for every kind).
fn ready(resource: Option<&Resource>) -> bool {
    resource.is_some_and(|r| {
        r.status.as_deref() == Some("Synced")
            && r.health.as_ref().and_then(|h| h.status.as_deref()).is_none_or(|h| h == "Healthy")
    })
}

fn progress(app: &str, application: &Application, project: &Project) -> serde_json::Value {
    let status = &application.status;
    let namespace = application.resource("Namespace", &project.namespace, None);
    json!({
        "application": app,
        "sync": status.sync.as_ref().and_then(|s| s.status.clone()),
        "health": status.health.as_ref().and_then(|h| h.status.clone()),
        "operation": status.operation_state.as_ref().and_then(|o| o.phase.clone()),
        "namespace": namespace.and_then(|r| r.status.clone()),
    })
}

pub struct PollArgocd;

impl JobHandler for PollArgocd {
    fn kind(&self) -> &'static str {
        POLL_ARGOCD
    }

    fn defaults(&self) -> KindSettings {
        KindSettings { concurrency: 8, timeout: Duration::from_secs(60), ..KindSettings::default() }
    }

    fn run<'a>(&'a self, ctx: &'a Context, job: &'a Claimed) -> JobFuture<'a> {
        Box::pin(async move {
            let payload: PollPayload = serde_json::from_value(job.payload.clone())
                .map_err(|e| JobError::permanent(format!("bad payload: {e}")))?;
            let project =
                match current_project(ctx, job, payload.project_id, live_states(payload.expect))
                    .await?
                {
                    Ok(project) => project,
                    Err(skipped) => return Ok(Outcome::Done(json!({ "skipped": skipped }))),
                };
            let (settled_as, live) = match payload.expect {
                Expect::Present => (ProjectStatus::Active, live_states(Expect::Present)),
                Expect::Absent => (ProjectStatus::Deleted, live_states(Expect::Absent)),
            };
            let config = &ctx.config.argocd;
            let Some(app) = config.app_for(&project.site) else {
                settle(ctx, job, project.id, live, settled_as, None).await?;
                return Ok(Outcome::Done(json!({ "status": settled_as, "argocd": null })));
            };
            let token =
                ctx.config.argocd_token().map_err(|e| JobError::permanent(e.to_string()))?;
            let argocd = Argocd::new(config, token)?;
            let application = argocd.application(app, config.hard_refresh).await?;
            let namespace = application.resource("Namespace", &project.namespace, None);
            let quota =
                application.resource("ResourceQuota", "infrahub-quota", Some(&project.namespace));
            let done = match payload.expect {
                Expect::Present => ready(namespace) && ready(quota),
                Expect::Absent => namespace.is_none() && quota.is_none(),
            };
            if done {
                settle(ctx, job, project.id, live, settled_as, None).await?;
                return Ok(Outcome::Done(
                    json!({ "status": settled_as, "argocd": progress(app, &application, &project) }),
                ));
            }
            let waited = (Utc::now() - payload.since).to_std().unwrap_or_default();
            if waited > Duration::from_secs(config.deadline_secs) {
                let what = match payload.expect {
                    Expect::Present => "synced and healthy",
                    Expect::Absent => "pruned",
                };
                return Err(JobError::Permanent(format!(
                    "Argo CD application {app} did not get namespace {} {what} within {}s: {}",
                    project.namespace,
                    config.deadline_secs,
                    application.message()
                )));
            }
            if config.sync && !application.auto_sync() && !application.operation_running() {
                argocd.sync(app).await?;
            }
            Ok(Outcome::Reschedule {
                after: Duration::from_millis(config.poll_interval_ms),
                progress: progress(app, &application, &project),
            })
        })
    }

    fn on_failure<'a>(
        &'a self,
        ctx: &'a Context,
        job: &'a Claimed,
        reason: &'a str,
    ) -> HookFuture<'a> {
        Box::pin(async move {
            let Ok(payload) = serde_json::from_value::<PollPayload>(job.payload.clone()) else {
                return Ok(());
            };
            let live = live_states(payload.expect);
            let to = match payload.expect {
                Expect::Present => ProjectStatus::Failed,
                // A deletion that did not finish stays `deleting` with the reason; deleting
                // again retries.
                Expect::Absent => ProjectStatus::Deleting,
            };
            settle(ctx, job, payload.project_id, live, to, Some(reason)).await?;
            Ok(())
        })
    }
}
