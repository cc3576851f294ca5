//! `resync`: compares every active project with what was delivered (the manifests in Git and,
//! where Argo CD watches the site, the namespace's state there). Drift marks the project
//! `degraded` and provisions it again, which brings it back to `active`.

use std::collections::HashMap;

use serde::Serialize;
use serde_json::json;

use super::provision_namespace::{PROVISION_NAMESPACE, ProjectJob, manifest_path, spec};
use super::{JobError, JobFuture, JobHandler, KindSettings, Outcome};
use crate::clients::argocd::{Application, Argocd};
use crate::clients::gitops::{self, Gitops};
use crate::clients::kube::{Cluster, contains};
use crate::config::DeliveryKind;
use crate::context::Context;
use crate::domain::manifests::{objects, render};
use crate::domain::project::ProjectStatus;
use crate::store::PageRequest;
use crate::store::audit::{self, Actor, Change};
use crate::store::jobs::{self, Claimed, JobScope, NewJob};
use crate::store::projects::{self, Project, ProjectFilter, ProjectScope};

pub const RESYNC: &str = "resync";

/// What a resync found; the job's result.
#[derive(Debug, Default, Serialize)]
pub struct ResyncReport {
    pub checked: u64,
    pub in_sync: u64,
    pub drifted: u64,
    /// `namespace: why`, for the drifted ones.
    pub drift: Vec<String>,
}

pub struct Resync;

impl JobHandler for Resync {
    fn kind(&self) -> &'static str {
        RESYNC
    }

    fn defaults(&self) -> KindSettings {
        KindSettings {
            concurrency: 1,
            timeout: std::time::Duration::from_secs(900),
            ..KindSettings::default()
        }
    }

    fn dedupe_key(&self) -> Option<&'static str> {
        Some(RESYNC)
    }

    fn run<'a>(&'a self, ctx: &'a Context, job: &'a Claimed) -> JobFuture<'a> {
        Box::pin(async move {
            let git = gitops::from_config(&ctx.config)?;
            let argocd = match ctx.config.argocd.url.is_empty() {
                true => None,
                false => {
                    let token = ctx
                        .config
                        .argocd_token()
                        .map_err(|e| JobError::permanent(e.to_string()))?;
                    Some(Argocd::new(&ctx.config.argocd, token)?)
                }
            };
            let mut apps: HashMap<String, Application> = HashMap::new();
            let mut report = ResyncReport::default();
            let filter =
                ProjectFilter { status: Some(ProjectStatus::Active), ..ProjectFilter::default() };
            let mut page = PageRequest { after: None, limit: 200 };
            loop {
                let batch = projects::list(
                    &mut *ctx.pool.acquire().await?,
                    ProjectScope::default(),
                    &filter,
                    page,
                )
                .await?;
                for project in &batch.items {
                    report.checked += 1;
                    match drift_of(ctx, git.as_ref(), argocd.as_ref(), &mut apps, project).await? {
                        None => report.in_sync += 1,
                        Some(why) => {
                            if repair(ctx, job, project, &why).await? {
                                report.drifted += 1;
                                report.drift.push(format!("{}: {why}", project.namespace));
                            }
                        }
                    }
                }
                match batch.next_cursor {
                    Some(cursor) => page.after = Some(cursor),
                    None => break,
                }
            }
            Ok(Outcome::Done(json!(report)))
        })
    }
}

/// Why the delivered state differs from the desired one, if it does.
async fn drift_of(
    ctx: &Context,
    git: &dyn Gitops,
    argocd: Option<&Argocd>,
    apps: &mut HashMap<String, Application>,
    project: &Project,
) -> Result<Option<String>, JobError> {
    let spec = spec(ctx, project).await?;
    if ctx.config.delivery.kind == DeliveryKind::Kubernetes {
        let cluster = Cluster::for_site(&ctx.config.kubernetes, &project.site).await?;
        for object in objects(&spec) {
            let what = format!(
                "{} {}",
                object["kind"].as_str().unwrap_or("?"),
                object["metadata"]["name"].as_str().unwrap_or("?")
            );
            match cluster.read(&object).await? {
                None => return Ok(Some(format!("the cluster has no {what}"))),
                Some(actual) if !contains(&actual, &object) => {
                    return Ok(Some(format!("the cluster's {what} differs")));
                }
                Some(_) => {}
            }
        }
        return Ok(None);
    }
    let desired = render(&spec);
    match git.read(&manifest_path(project)).await? {
        None => return Ok(Some("the manifests are missing from Git".to_owned())),
        Some(actual) if actual != desired => {
            return Ok(Some("the manifests in Git differ from the desired ones".to_owned()));
        }
        Some(_) => {}
    }
    let (Some(argocd), Some(app)) = (argocd, ctx.config.argocd.app_for(&project.site)) else {
        return Ok(None);
    };
    if !apps.contains_key(app) {
        apps.insert(app.to_owned(), argocd.application(app, ctx.config.argocd.hard_refresh).await?);
    }
    let application = &apps[app];
    let namespace = application.resource("Namespace", &project.namespace, None);
    let synced = namespace.and_then(|r| r.status.as_deref()) == Some("Synced");
    let health = namespace.and_then(|r| r.health.as_ref()).and_then(|h| h.status.as_deref());
    if synced && health.is_none_or(|h| h == "Healthy") {
        Ok(None)
    } else {
        let status =
            namespace.and_then(|r| r.status.clone()).unwrap_or_else(|| "missing".to_owned());
        Ok(Some(format!(
            "Argo CD reports the namespace {status}, health {}",
            health.unwrap_or("unknown")
        )))
    }
}

/// Marks the project degraded and enqueues its re-provisioning, in one transaction; false when
/// it was no longer active.
async fn repair(
    ctx: &Context,
    job: &Claimed,
    project: &Project,
    why: &str,
) -> Result<bool, JobError> {
    let mut tx = ctx.pool.begin().await?;
    let moved = projects::transition(
        &mut tx,
        project.id,
        &[ProjectStatus::Active],
        ProjectStatus::Degraded,
        Some(why),
        None,
    )
    .await?;
    if !moved {
        return Ok(false);
    }
    let max_attempts =
        ctx.registry.get(PROVISION_NAMESPACE).map_or(5, |r| r.settings.max_attempts as i32);
    let payload = json!(ProjectJob { project_id: project.id, requested_by: "resync".to_owned() });
    let new = NewJob {
        subject: Some(("project", project.id.to_string())),
        scope: JobScope {
            field_id: Some(project.field_id),
            department_id: Some(project.department_id),
        },
        ..NewJob::new(PROVISION_NAMESPACE, payload, "system:resync", max_attempts)
    };
    let provision = jobs::enqueue(&mut tx, &new).await?.into_job();
    projects::set_job(&mut tx, project.id, provision.id).await?;
    let actor = Actor { user_id: None, name: format!("job:{}", job.id), request_id: None };
    let change = Change::new("project", "drift", project.id)
        .after(&json!({ "reason": why, "job_id": provision.id }));
    audit::record(&mut tx, &actor, change).await?;
    tx.commit().await?;
    tracing::warn!(namespace = %project.namespace, reason = why, "drift found; re-provisioning");
    Ok(true)
}
