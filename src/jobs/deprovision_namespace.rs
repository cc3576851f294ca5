//! `deprovision_namespace`: removes a project's manifests from the GitOps repository (or its
//! namespace from the site's cluster); once they are gone the project is `deleted` and its
//! quota is free again.

use serde_json::json;

use super::poll_argocd::Expect;
use super::provision_namespace::{DELIVERY_SETTINGS, ProjectJob, commit_and_settle, project_for};
use super::{Job, JobError, KindSettings, Outcome, Run};
use crate::app;
use crate::config::DeliveryKind;
use crate::context::Context;
use crate::domain::lifecycle::Event;

pub struct DeprovisionNamespace;

impl Job for DeprovisionNamespace {
    const KIND: &'static str = "deprovision_namespace";
    type Payload = ProjectJob;

    fn settings(&self) -> KindSettings {
        DELIVERY_SETTINGS
    }

    async fn run(&self, ctx: &Context, job: &Run<ProjectJob>) -> Result<Outcome, JobError> {
        let project = match project_for(ctx, job, Event::Removed).await? {
            Ok(project) => project,
            Err(skipped) => return Ok(skipped),
        };
        if ctx.config.delivery.kind == DeliveryKind::Kubernetes {
            let cluster = ctx.clients.clusters.cluster(&project.site).await?;
            if cluster.delete_namespace(&project.namespace).await? {
                let after =
                    std::time::Duration::from_millis(ctx.config.kubernetes.poll_interval_ms);
                let progress = json!({ "namespace": "terminating" });
                return Ok(Outcome::Reschedule { after, progress });
            }
            app::projects::settle(ctx, job.id, project.id, Event::Removed, None).await?;
            return Ok(Outcome::Done(json!({ "namespace": "gone", "status": "deleted" })));
        }
        let message = format!(
            "deprovision {} at {}: project {} of {}, requested by {}",
            project.namespace,
            project.site,
            project.name,
            project.department,
            job.payload.requested_by
        );
        // With Argo CD watching the site, the quota is freed once it pruned the namespace.
        commit_and_settle(ctx, job, &project, None, &message, Expect::Absent).await
    }

    /// The project stays `deleting` with the reason; deleting it again retries.
    async fn on_failure(
        &self,
        ctx: &Context,
        job: &Run<ProjectJob>,
        reason: &str,
    ) -> Result<(), JobError> {
        let project = job.payload.project_id;
        app::projects::settle(ctx, job.id, project, Event::DeprovisioningFailed, Some(reason))
            .await?;
        Ok(())
    }
}
