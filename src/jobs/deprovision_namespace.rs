//! `deprovision_namespace`: removes a project's manifests from the GitOps repository; once
//! they are gone the project is `deleted` and its quota is free again.

use serde_json::json;

use super::poll_argocd::{Expect, hand_over};
use super::provision_namespace::{current_project, manifest_path, payload, settle};
use super::{HookFuture, JobFuture, JobHandler, KindSettings, Outcome};
use crate::clients::gitops::{self, Delivered};
use crate::clients::kube::Cluster;
use crate::config::DeliveryKind;
use crate::context::Context;
use crate::domain::project::ProjectStatus;
use crate::store::jobs::Claimed;

pub const DEPROVISION_NAMESPACE: &str = "deprovision_namespace";

pub struct DeprovisionNamespace;

impl JobHandler for DeprovisionNamespace {
    fn kind(&self) -> &'static str {
        DEPROVISION_NAMESPACE
    }

    fn defaults(&self) -> KindSettings {
        KindSettings {
            concurrency: 4,
            timeout: std::time::Duration::from_secs(120),
            ..KindSettings::default()
        }
    }

    fn run<'a>(&'a self, ctx: &'a Context, job: &'a Claimed) -> JobFuture<'a> {
        Box::pin(async move {
            let payload = payload(job)?;
            let deleting = [ProjectStatus::Deleting];
            let project = match current_project(ctx, job, payload.project_id, &deleting).await? {
                Ok(found) => found,
                Err(skipped) => return Ok(Outcome::Done(json!({ "skipped": skipped }))),
            };
            if ctx.config.delivery.kind == DeliveryKind::Kubernetes {
                let cluster = Cluster::for_site(&ctx.config.kubernetes, &project.site).await?;
                if cluster.delete_namespace(&project.namespace).await? {
                    let after =
                        std::time::Duration::from_millis(ctx.config.kubernetes.poll_interval_ms);
                    return Ok(Outcome::Reschedule {
                        after,
                        progress: json!({ "namespace": "terminating" }),
                    });
                }
                settle(ctx, job, project.id, &deleting, ProjectStatus::Deleted, None).await?;
                return Ok(Outcome::Done(json!({ "namespace": "gone", "status": "deleted" })));
            }
            let file = manifest_path(&project);
            let message = format!(
                "deprovision {} at {}: project {} of {}, requested by {}",
                project.namespace,
                project.site,
                project.name,
                project.department,
                payload.requested_by
            );
            let delivered = gitops::from_config(&ctx.config)?.write(&file, None, &message).await?;
            let commit = match delivered {
                Delivered::Committed { commit } => Some(commit),
                Delivered::Unchanged => None,
            };
            // With Argo CD watching the site, the quota is freed once it pruned the namespace.
            if ctx.config.argocd.app_for(&project.site).is_some() {
                let poll = hand_over(ctx, job, &project, Expect::Absent).await?;
                return Ok(Outcome::Done(
                    json!({ "file": file, "commit": commit, "poll_job": poll }),
                ));
            }
            settle(ctx, job, project.id, &deleting, ProjectStatus::Deleted, None).await?;
            Ok(Outcome::Done(json!({ "file": file, "commit": commit, "status": "deleted" })))
        })
    }

    /// The project stays `deleting` with the reason; deleting it again retries.
    fn on_failure<'a>(
        &'a self,
        ctx: &'a Context,
        job: &'a Claimed,
        reason: &'a str,
    ) -> HookFuture<'a> {
        Box::pin(async move {
            let Ok(payload) = serde_json::from_value::<super::provision_namespace::ProjectJob>(
                job.payload.clone(),
            ) else {
                return Ok(());
            };
            let deleting = [ProjectStatus::Deleting];
            settle(ctx, job, payload.project_id, &deleting, ProjectStatus::Deleting, Some(reason))
                .await?;
            Ok(())
        })
    }
}
