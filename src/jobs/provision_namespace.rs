//! `provision_namespace`: renders a project's manifests and delivers them, by GitOps or
//! straight to the site's cluster; with no Argo CD to wait for, delivery makes the project
//! active. Re-running it re-renders the same bytes and commits nothing.

use serde::{Deserialize, Serialize};
use serde_json::json;
use uuid::Uuid;

use super::poll_argocd::Expect;
use super::{Job, JobError, KindSettings, Outcome, Run};
use crate::app;
use crate::app::projects::DeliveryLock;
use crate::clients::gitops::Delivered;
use crate::clients::kube::contains;
use crate::config::DeliveryKind;
use crate::context::Context;
use crate::domain::lifecycle::Event;
use crate::domain::manifests::{ProjectSpec, objects, render};
use crate::store::projects::Project;
use sqlx::PgConnection;

/// Payload of the provisioning and deprovisioning jobs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProjectJob {
    pub project_id: Uuid,
    /// Who asked, for the commit message.
    pub requested_by: String,
    /// The project's generation this job delivers; it writes nothing once a newer one exists.
    #[serde(default)]
    pub generation: Option<i64>,
}

/// The project a provisioning or deprovisioning job acts on, with its delivery lock held so
/// that no other delivery of it writes meanwhile; or the result of a job that has nothing to do
/// (a newer generation superseded it, or the project is no longer where `event` applies).
pub(super) async fn project_for(
    ctx: &Context,
    job: &Run<ProjectJob>,
    event: Event,
) -> Result<Result<(Project, DeliveryLock), Outcome>, JobError> {
    let skipped = |why: String| Ok(Err(Outcome::Done(json!({ "skipped": why }))));
    let project_id = job.payload.project_id;
    let lock = match app::projects::lock_delivery(ctx, project_id, job.payload.generation).await? {
        Ok(lock) => lock,
        Err(why) => return skipped(why),
    };
    match app::projects::current_for_job(ctx, job.id, project_id, event).await? {
        Ok(project) => Ok(Ok((project, lock))),
        Err(why) => skipped(why),
    }
}

/// `(generation N)` for commit messages, when the job knows its generation.
pub(super) fn generation_note(job: &Run<ProjectJob>) -> String {
    job.payload.generation.map(|g| format!(" (generation {g})")).unwrap_or_default()
}

/// Server-side applies the project's objects to its site's cluster and reads each one back;
/// returns how many were applied.
async fn apply_and_confirm(
    ctx: &Context,
    project: &Project,
    spec: &ProjectSpec,
) -> Result<usize, JobError> {
    let cluster = ctx.clients.clusters.cluster(&project.site).await?;
    let desired = objects(spec);
    cluster.apply(&desired).await?;
    for object in &desired {
        match cluster.read(object).await? {
            Some(actual) if contains(&actual, object) => {}
            _ => {
                return Err(JobError::transient(format!(
                    "the cluster does not show {} {} as applied yet",
                    object["kind"], object["metadata"]["name"]
                )));
            }
        }
    }
    Ok(desired.len())
}

/// Provisioning and deprovisioning: a few at a time, each bounded by delivery's own timeouts;
/// an outage of Git, GitLab or a cluster is retried (every minute at most) for 30 minutes
/// after the change, then the project fails with the last reason. Eight at a time: local Git
/// commits the deliveries waiting together in one commit, so more of them at once deliver
/// faster (docs/BENCHMARKS.md), each holding a connection of the lock pool meanwhile.
pub(super) const DELIVERY_SETTINGS: KindSettings = KindSettings {
    concurrency: 8,
    prefetch: 0,
    max_attempts: 1_000,
    timeout: std::time::Duration::from_secs(120),
    backoff_base: std::time::Duration::from_secs(2),
    backoff_max: std::time::Duration::from_secs(60),
    deadline: Some(std::time::Duration::from_secs(1_800)),
    coalesce_delay: std::time::Duration::ZERO,
};

/// Whether Argo CD, rather than delivery itself, decides when the project at `site` is there.
pub(super) fn argocd_watches(ctx: &Context, site: &str) -> bool {
    ctx.config.argocd.app_for(site).is_some()
}

/// Writes the project's file (or removes it, without `content`) in the GitOps repository
/// under the delivery lock; then hands over to `poll_argocd`, waiting for that commit, where
/// Argo CD watches the site, or settles the project at once.
pub(super) async fn commit_and_settle(
    ctx: &Context,
    job: &Run<ProjectJob>,
    (project, lock): (Project, DeliveryLock),
    content: Option<&str>,
    message: &str,
    expect: Expect,
) -> Result<Outcome, JobError> {
    let file = app::projects::manifest_path(&project);
    // Unchanged after a retry whose first attempt committed: wait for that commit all the same.
    let commit = match ctx.clients.gitops.write(&file, content, message).await? {
        Delivered::Committed { commit } => Some(commit),
        Delivered::Unchanged { commit } => commit,
    };
    lock.release().await?;
    if argocd_watches(ctx, &project.site) {
        let poll =
            app::projects::hand_over_to_poll(ctx, job.id, &project, expect, commit.clone()).await?;
        return Ok(Outcome::Done(json!({ "file": file, "commit": commit, "poll_job": poll })));
    }
    let (event, status) = match expect {
        Expect::Present => (Event::Delivered, "active"),
        Expect::Absent => (Event::Removed, "deleted"),
    };
    app::projects::settle(ctx, job.id, project.id, event, None).await?;
    Ok(Outcome::Done(json!({ "file": file, "commit": commit, "status": status })))
}

pub struct ProvisionNamespace;

impl Job for ProvisionNamespace {
    const KIND: &'static str = "provision_namespace";
    type Payload = ProjectJob;

    fn settings(&self) -> KindSettings {
        DELIVERY_SETTINGS
    }

    async fn run(&self, ctx: &Context, job: &Run<ProjectJob>) -> Result<Outcome, JobError> {
        let (project, lock) = match project_for(ctx, job, Event::Delivered).await? {
            Ok(found) => found,
            Err(skipped) => return Ok(skipped),
        };
        let spec = app::projects::spec(ctx, &project).await?;
        if ctx.config.delivery.kind == DeliveryKind::Kubernetes {
            let applied = apply_and_confirm(ctx, &project, &spec).await?;
            lock.release().await?;
            app::projects::settle(ctx, job.id, project.id, Event::Delivered, None).await?;
            return Ok(Outcome::Done(json!({ "applied": applied, "status": "active" })));
        }
        let manifests = render(&spec);
        let message = format!(
            "provision {} at {}: project {} ({}/{}) of {}, requested by {}{}",
            project.namespace,
            project.site,
            project.name,
            project.sla_type,
            project.performance_tier,
            project.department,
            job.payload.requested_by,
            generation_note(job),
        );
        let found = (project, lock);
        commit_and_settle(ctx, job, found, Some(&manifests), &message, Expect::Present).await
    }

    async fn on_failure(
        &self,
        ctx: &Context,
        conn: &mut PgConnection,
        job: &Run<ProjectJob>,
        reason: &str,
    ) -> Result<(), JobError> {
        app::projects::settle_failed(conn, ctx, job.id, job.payload.project_id, reason).await?;
        Ok(())
    }
}
