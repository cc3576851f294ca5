//! `deprovision_namespace`: removes a project's manifests from the GitOps repository (or its
//! namespace from the site's cluster); once they are gone the project is `deleted` and its
//! quota is free again.

use serde_json::json;

use super::poll_argocd::Expect;
use super::provision_namespace::{
    DELIVERY_SETTINGS, ProjectJob, commit_and_settle, generation_note, project_for,
};
use super::{Job, JobError, KindSettings, Outcome, Run};
use crate::app;
use crate::config::DeliveryKind;
use crate::context::Context;
use crate::domain::lifecycle::Event;
use sqlx::PgConnection;

/// A namespace still terminating: look again after `kubernetes.poll_interval_ms`, until
/// `kubernetes.delete_deadline_secs` after the deletion was asked for.
fn still_terminating(
    ctx: &Context,
    job: &Run<ProjectJob>,
    namespace: &str,
) -> Result<Outcome, JobError> {
    let config = &ctx.config.kubernetes;
    let waited = (chrono::Utc::now() - job.created_at).to_std().unwrap_or_default();
    if waited > std::time::Duration::from_secs(config.delete_deadline_secs) {
        return Err(JobError::Permanent(format!(
            "namespace {namespace} is still terminating {}s after its deletion; look for finalizers that block it",
            config.delete_deadline_secs
        )));
    }
    let after = std::time::Duration::from_millis(config.poll_interval_ms);
    Ok(Outcome::Reschedule { after, progress: json!({ "namespace": "terminating" }) })
}

pub struct DeprovisionNamespace;

impl Job for DeprovisionNamespace {
    const KIND: &'static str = "deprovision_namespace";
    type Payload = ProjectJob;

    fn settings(&self) -> KindSettings {
        DELIVERY_SETTINGS
    }

    async fn run(&self, ctx: &Context, job: &Run<ProjectJob>) -> Result<Outcome, JobError> {
        let (project, lock) = match project_for(ctx, job, Event::Removed).await? {
            Ok(found) => found,
            Err(skipped) => return Ok(skipped),
        };
        if ctx.config.delivery.kind == DeliveryKind::Kubernetes {
            let cluster = ctx.clients.clusters.cluster(&project.site).await?;
            let terminating = cluster.delete_namespace(&project.namespace).await?;
            lock.release().await?;
            if terminating {
                return still_terminating(ctx, job, &project.namespace);
            }
            app::projects::settle(ctx, job.id, project.id, Event::Removed, None).await?;
            return Ok(Outcome::Done(json!({ "namespace": "gone", "status": "deleted" })));
        }
        let message = format!(
            "deprovision {} at {}: project {} of {}, requested by {}{}",
            project.namespace,
            project.site,
            project.name,
            project.department,
            job.payload.requested_by,
            generation_note(job),
        );
        // With Argo CD watching the site, the quota is freed once it pruned the namespace.
        commit_and_settle(ctx, job, (project, lock), None, &message, Expect::Absent).await
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
