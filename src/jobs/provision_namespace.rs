//! `provision_namespace`: renders a project's manifests and delivers them by GitOps; with no
//! ArgoCD to wait for, delivery makes the project active. Re-running it re-renders the same
//! bytes and commits nothing.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::json;
use uuid::Uuid;

use super::poll_argocd::{Expect, hand_over};
use super::{HookFuture, JobError, JobFuture, JobHandler, KindSettings, Outcome};
use crate::clients::gitops::{self, Delivered, GitError};
use crate::clients::kube::{Cluster, KubeError, contains};
use crate::config::DeliveryKind;
use crate::context::Context;
use crate::domain::manifests::{ProjectSpec, objects, render};
use crate::domain::project::ProjectStatus;
use crate::store::StoreError;
use crate::store::audit::{self, Actor, Change};
use crate::store::jobs::Claimed;
use crate::store::org;
use crate::store::projects::{self, Project};

pub const PROVISION_NAMESPACE: &str = "provision_namespace";

/// Payload of the provisioning and deprovisioning jobs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProjectJob {
    pub project_id: Uuid,
    /// Who asked, for the commit message.
    pub requested_by: String,
}

impl From<GitError> for JobError {
    fn from(err: GitError) -> Self {
        match err {
            GitError::Permanent(m) => JobError::Permanent(m),
            GitError::Transient(m) => JobError::Transient(m),
        }
    }
}

/// The repository file of a project: `<site>/<namespace>.yaml`.
pub fn manifest_path(project: &Project) -> String {
    format!("{}/{}.yaml", project.site, project.namespace)
}

/// The project as the manifests need it.
pub async fn spec(ctx: &Context, project: &Project) -> Result<ProjectSpec, JobError> {
    let dept = org::get_department(&mut *ctx.pool.acquire().await?, project.department_id).await?;
    let labels = ctx
        .config
        .catalog
        .get(&project.sla_type)
        .and_then(|tiers| tiers.get(&project.performance_tier))
        .map(|entry| entry.labels.clone())
        .unwrap_or_default();
    let extra_quota: BTreeMap<String, String> =
        serde_json::from_value(project.extra_quota.clone()).unwrap_or_default();
    Ok(ProjectSpec {
        project_id: project.id.to_string(),
        namespace: project.namespace.clone(),
        department: project.department.clone(),
        field: project.field.clone(),
        site: project.site.clone(),
        sla_type: project.sla_type.clone(),
        performance_tier: project.performance_tier.clone(),
        cpu: project.cpu.into(),
        ram_gb: project.ram_gb.into(),
        extra_quota,
        labels,
        group: dept.k8s_group.unwrap_or(dept.name),
    })
}

/// The payload of a provisioning or deprovisioning job.
pub fn payload(job: &Claimed) -> Result<ProjectJob, JobError> {
    serde_json::from_value(job.payload.clone())
        .map_err(|e| JobError::permanent(format!("bad payload: {e}")))
}

/// Loads the project this job is about, or says why the job has nothing to do: the project is
/// gone, a later job superseded this one, or it is not in a state this job acts on.
pub async fn current_project(
    ctx: &Context,
    job: &Claimed,
    project_id: Uuid,
    states: &[ProjectStatus],
) -> Result<Result<Project, String>, JobError> {
    let project = match projects::get(&mut *ctx.pool.acquire().await?, project_id).await {
        Ok(project) => project,
        Err(StoreError::NotFound) => {
            return Err(JobError::permanent("the project no longer exists"));
        }
        Err(other) => return Err(other.into()),
    };
    if project.last_job_id != Some(job.id) {
        return Ok(Err("a later job superseded this one".to_owned()));
    }
    if !states.contains(&project.status) {
        return Ok(Err(format!("the project is {}", project.status)));
    }
    Ok(Ok(project))
}

/// Moves the project and records it, in one transaction, if this job is still its latest.
pub async fn settle(
    ctx: &Context,
    job: &Claimed,
    project: Uuid,
    from: &[ProjectStatus],
    to: ProjectStatus,
    reason: Option<&str>,
) -> Result<bool, JobError> {
    let mut tx = ctx.pool.begin().await?;
    let moved = projects::transition(&mut tx, project, from, to, reason, Some(job.id)).await?;
    if moved {
        let actor = Actor { user_id: None, name: format!("job:{}", job.id), request_id: None };
        let change = Change::new("project", to.as_str(), project)
            .after(&json!({ "status": to, "reason": reason }));
        audit::record(&mut tx, &actor, change).await?;
    }
    tx.commit().await?;
    Ok(moved)
}

impl From<KubeError> for JobError {
    fn from(err: KubeError) -> Self {
        match err {
            KubeError::Permanent(m) => JobError::Permanent(m),
            KubeError::Transient(m) => JobError::Transient(m),
        }
    }
}

/// Server-side applies the project's objects to its site's cluster and reads each one back;
/// returns how many were applied.
async fn apply_and_confirm(
    ctx: &Context,
    project: &Project,
    spec: &ProjectSpec,
) -> Result<usize, JobError> {
    let cluster = Cluster::for_site(&ctx.config.kubernetes, &project.site).await?;
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

pub struct ProvisionNamespace;

impl JobHandler for ProvisionNamespace {
    fn kind(&self) -> &'static str {
        PROVISION_NAMESPACE
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
            let live = [ProjectStatus::Provisioning, ProjectStatus::Degraded];
            let payload = payload(job)?;
            let project = match current_project(ctx, job, payload.project_id, &live).await? {
                Ok(found) => found,
                Err(skipped) => return Ok(Outcome::Done(json!({ "skipped": skipped }))),
            };
            let spec = spec(ctx, &project).await?;
            if ctx.config.delivery.kind == DeliveryKind::Kubernetes {
                let applied = apply_and_confirm(ctx, &project, &spec).await?;
                settle(ctx, job, project.id, &live, ProjectStatus::Active, None).await?;
                return Ok(Outcome::Done(json!({ "applied": applied, "status": "active" })));
            }
            let manifests = render(&spec);
            let file = manifest_path(&project);
            let message = format!(
                "provision {} at {}: project {} ({}/{}) of {}, requested by {}",
                project.namespace,
                project.site,
                project.name,
                project.sla_type,
                project.performance_tier,
                project.department,
                payload.requested_by
            );
            let delivered =
                gitops::from_config(&ctx.config)?.write(&file, Some(&manifests), &message).await?;
            let commit = match delivered {
                Delivered::Committed { commit } => Some(commit),
                Delivered::Unchanged => None,
            };
            // With Argo CD watching the site, it decides when the project is there.
            if ctx.config.argocd.app_for(&project.site).is_some() {
                let poll = hand_over(ctx, job, &project, Expect::Present).await?;
                return Ok(Outcome::Done(
                    json!({ "file": file, "commit": commit, "poll_job": poll }),
                ));
            }
            settle(ctx, job, project.id, &live, ProjectStatus::Active, None).await?;
            Ok(Outcome::Done(json!({ "file": file, "commit": commit, "status": "active" })))
        })
    }

    fn on_failure<'a>(
        &'a self,
        ctx: &'a Context,
        job: &'a Claimed,
        reason: &'a str,
    ) -> HookFuture<'a> {
        Box::pin(async move {
            let Ok(payload) = serde_json::from_value::<ProjectJob>(job.payload.clone()) else {
                return Ok(());
            };
            let live = [ProjectStatus::Provisioning, ProjectStatus::Degraded];
            settle(ctx, job, payload.project_id, &live, ProjectStatus::Failed, Some(reason))
                .await?;
            Ok(())
        })
    }
}
