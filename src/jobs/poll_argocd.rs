//! `poll_argocd`: after delivery, reads the site's Argo CD Application until the project's
//! Namespace and ResourceQuota are Synced and Healthy (or, after a deletion, gone), then
//! settles the project. While Argo CD is still on its way the job re-schedules itself without
//! spending attempts; past `argocd.deadline_secs` the project fails with Argo CD's message.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use uuid::Uuid;

use super::{Job, JobError, KindSettings, Outcome, Run};
use crate::app;
use crate::clients::argocd::{Application, Resource};
use crate::context::Context;
use crate::domain::lifecycle::Event;
use crate::store::projects::Project;
use sqlx::PgConnection;

/// What the poll waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Expect {
    /// Namespace and quota Synced and Healthy: the project becomes active.
    Present,
    /// Namespace and quota pruned: the project is deleted.
    Absent,
}

impl Expect {
    /// The event the poll settles the project with once Argo CD got there.
    fn done(self) -> Event {
        match self {
            Expect::Present => Event::Delivered,
            Expect::Absent => Event::Removed,
        }
    }

    /// The status the project reaches then.
    fn status(self) -> &'static str {
        match self {
            Expect::Present => "active",
            Expect::Absent => "deleted",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PollPayload {
    pub project_id: Uuid,
    pub expect: Expect,
    /// When delivery finished: the deadline counts from here.
    pub since: DateTime<Utc>,
    /// The commit that delivery made, which Argo CD must have synced; `None` when delivery
    /// changed nothing.
    #[serde(default)]
    pub revision: Option<String>,
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
        "revision": status.sync.as_ref().and_then(|s| s.revision.clone()),
        "namespace": namespace.and_then(|r| r.status.clone()),
    })
}

pub struct PollArgocd;

impl Job for PollArgocd {
    const KIND: &'static str = "poll_argocd";
    type Payload = PollPayload;

    /// An Argo CD that does not answer is retried (every minute at most) for 30 minutes after
    /// delivery, like the delivery itself.
    fn settings(&self) -> KindSettings {
        KindSettings {
            concurrency: 8,
            timeout: Duration::from_secs(60),
            ..super::provision_namespace::DELIVERY_SETTINGS
        }
    }

    async fn run(&self, ctx: &Context, job: &Run<PollPayload>) -> Result<Outcome, JobError> {
        let payload = &job.payload;
        let done = payload.expect.done();
        let project =
            match app::projects::current_for_job(ctx, job.id, payload.project_id, done).await? {
                Ok(project) => project,
                Err(skipped) => return Ok(Outcome::Done(json!({ "skipped": skipped }))),
            };
        let config = &ctx.config.argocd;
        let Some(app) = config.app_for(&project.site) else {
            app::projects::settle(ctx, job.id, project.id, done, None).await?;
            return Ok(Outcome::Done(json!({ "status": payload.expect.status(), "argocd": null })));
        };
        let argocd = ctx.clients.argocd.as_ref().ok_or_else(|| {
            JobError::permanent(format!(
                "Argo CD application {app} is configured, but no Argo CD client"
            ))
        })?;
        // Right after the commit, Argo CD is told to read Git now rather than at its next poll.
        let hard_refresh = config.hard_refresh || job.claim == 1;
        let application = argocd.application(app, hard_refresh).await?;
        let synced_ours = match (payload.revision.as_deref(), application.revision()) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some(ours), Some(synced)) => ctx.clients.gitops.includes(ours, synced).await?,
        };
        let namespace = application.resource("Namespace", &project.namespace, None);
        let quota =
            application.resource("ResourceQuota", "infrahub-quota", Some(&project.namespace));
        let there = synced_ours
            && match payload.expect {
                Expect::Present => ready(namespace) && ready(quota),
                Expect::Absent => namespace.is_none() && quota.is_none(),
            };
        if there {
            app::projects::settle(ctx, job.id, project.id, done, None).await?;
            let argocd = progress(app, &application, &project);
            return Ok(Outcome::Done(
                json!({ "status": payload.expect.status(), "argocd": argocd }),
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
        let mut progress = progress(app, &application, &project);
        progress["waiting_for_revision"] =
            json!(payload.revision.as_ref().filter(|_| !synced_ours));
        Ok(Outcome::Reschedule { after: Duration::from_millis(config.poll_interval_ms), progress })
    }

    async fn on_failure(
        &self,
        ctx: &Context,
        conn: &mut PgConnection,
        job: &Run<PollPayload>,
        reason: &str,
    ) -> Result<(), JobError> {
        app::projects::settle_failed(conn, ctx, job.id, job.payload.project_id, reason).await?;
        Ok(())
    }
}
