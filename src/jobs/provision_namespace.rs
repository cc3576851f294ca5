//! `provision_namespace`: renders a project's manifests and delivers them, by GitOps or
//! straight to the site's cluster; with no Argo CD to wait for, delivery makes the project
//! active. Re-running it re-renders the same bytes and commits nothing.

use serde::{Deserialize, Serialize};
use serde_json::json;
use uuid::Uuid;

use super::poll_argocd::Expect;
use super::{Job, JobError, KindSettings, Outcome, Run};
use crate::app;
use crate::clients::gitops::Delivered;
use crate::clients::kube::contains;
use crate::config::DeliveryKind;
use crate::context::Context;
use crate::domain::lifecycle::Event;
use crate::domain::manifests::{ProjectSpec, objects, render};
use crate::store::projects::Project;

/// Payload of the provisioning and deprovisioning jobs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProjectJob {
    pub project_id: Uuid,
    /// Who asked, for the commit message.
    pub requested_by: String,
}

/// The project a provisioning or deprovisioning job acts on, or the result of a job that has
/// nothing to do (a later job superseded it, or the project is no longer where `event` applies).
pub(super) async fn project_for(
    ctx: &Context,
    job: &Run<ProjectJob>,
    event: Event,
) -> Result<Result<Project, Outcome>, JobError> {
    let found = app::projects::current_for_job(ctx, job.id, job.payload.project_id, event).await?;
    Ok(found.map_err(|skipped| Outcome::Done(json!({ "skipped": skipped }))))
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

/// Provisioning and deprovisioning: a few at a time, each bounded by delivery's own timeouts.
pub(super) const DELIVERY_SETTINGS: KindSettings = KindSettings {
    concurrency: 4,
    max_attempts: 5,
    timeout: std::time::Duration::from_secs(120),
    backoff_base: std::time::Duration::from_secs(2),
    backoff_max: std::time::Duration::from_secs(600),
};

/// Whether Argo CD, rather than delivery itself, decides when the project at `site` is there.
pub(super) fn argocd_watches(ctx: &Context, site: &str) -> bool {
    ctx.config.argocd.app_for(site).is_some()
}

/// Writes the project's file (or removes it, without `content`) in the GitOps repository; then
/// hands over to `poll_argocd` where Argo CD watches the site, or settles the project at once.
pub(super) async fn commit_and_settle(
    ctx: &Context,
    job: &Run<ProjectJob>,
    project: &Project,
    content: Option<&str>,
    message: &str,
    expect: Expect,
) -> Result<Outcome, JobError> {
    let file = app::projects::manifest_path(project);
    let commit = match ctx.clients.gitops.write(&file, content, message).await? {
        Delivered::Committed { commit } => Some(commit),
        Delivered::Unchanged => None,
    };
    if argocd_watches(ctx, &project.site) {
        let poll = app::projects::hand_over_to_poll(ctx, job.id, project, expect).await?;
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
        let project = match project_for(ctx, job, Event::Delivered).await? {
            Ok(project) => project,
            Err(skipped) => return Ok(skipped),
        };
        let spec = app::projects::spec(ctx, &project).await?;
        if ctx.config.delivery.kind == DeliveryKind::Kubernetes {
            let applied = apply_and_confirm(ctx, &project, &spec).await?;
            app::projects::settle(ctx, job.id, project.id, Event::Delivered, None).await?;
            return Ok(Outcome::Done(json!({ "applied": applied, "status": "active" })));
        }
        let manifests = render(&spec);
        let message = format!(
            "provision {} at {}: project {} ({}/{}) of {}, requested by {}",
            project.namespace,
            project.site,
            project.name,
            project.sla_type,
            project.performance_tier,
            project.department,
            job.payload.requested_by
        );
        commit_and_settle(ctx, job, &project, Some(&manifests), &message, Expect::Present).await
    }

    async fn on_failure(
        &self,
        ctx: &Context,
        job: &Run<ProjectJob>,
        reason: &str,
    ) -> Result<(), JobError> {
        let project = job.payload.project_id;
        app::projects::settle(ctx, job.id, project, Event::ProvisioningFailed, Some(reason))
            .await?;
        Ok(())
    }
}
