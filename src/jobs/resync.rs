//! `resync`: compares every active project with what was delivered (the manifests in Git
//! and, where Argo CD watches the site, the namespace's state there; or the objects in the
//! site's cluster). Drift marks the project `degraded` and provisions it again, which brings it
//! back to `active`.

use std::collections::HashMap;

use serde::Serialize;

use super::{Job, JobError, KindSettings, Outcome, Run, Trigger};
use crate::app;
use crate::clients::argocd::Application;
use crate::clients::kube::contains;
use crate::config::DeliveryKind;
use crate::context::Context;
use crate::domain::manifests::{objects, render};
use crate::store::PageRequest;
use crate::store::projects::Project;

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

impl Job for Resync {
    const KIND: &'static str = "resync";
    const DEDUPE: bool = true;
    type Payload = Trigger;

    fn settings(&self) -> KindSettings {
        KindSettings {
            concurrency: 1,
            timeout: std::time::Duration::from_secs(900),
            ..KindSettings::default()
        }
    }

    async fn run(&self, ctx: &Context, job: &Run<Trigger>) -> Result<Outcome, JobError> {
        let mut apps: HashMap<String, Application> = HashMap::new();
        let mut report = ResyncReport::default();
        let mut page = PageRequest { after: None, limit: 200 };
        loop {
            let batch = app::projects::list_active(ctx, page).await?;
            // The page's manifests as committed, read together (GitOps delivery only).
            let committed = if ctx.config.delivery.kind == DeliveryKind::Kubernetes {
                vec![None; batch.items.len()]
            } else {
                let files: Vec<String> =
                    batch.items.iter().map(app::projects::manifest_path).collect();
                ctx.clients.gitops.read_many(&files).await?
            };
            if committed.len() != batch.items.len() {
                return Err(JobError::permanent(format!(
                    "the repository answered {} files for {} projects (a bug)",
                    committed.len(),
                    batch.items.len()
                )));
            }
            for (project, committed) in batch.items.iter().zip(committed) {
                report.checked += 1;
                match drift_of(ctx, &mut apps, project, committed).await? {
                    None => report.in_sync += 1,
                    Some(why) => {
                        if app::projects::mark_drifted(ctx, job.id, project, &why).await? {
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
        Ok(Outcome::done(report))
    }
}

/// Why the delivered state differs from the desired one, if it does.
async fn drift_of(
    ctx: &Context,
    apps: &mut HashMap<String, Application>,
    project: &Project,
    committed: Option<String>,
) -> Result<Option<String>, JobError> {
    let spec = app::projects::spec(ctx, project).await?;
    if ctx.config.delivery.kind == DeliveryKind::Kubernetes {
        let cluster = ctx.clients.clusters.cluster(&project.site).await?;
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
    match committed {
        None => return Ok(Some("the manifests are missing from Git".to_owned())),
        Some(actual) if actual != desired => {
            return Ok(Some("the manifests in Git differ from the desired ones".to_owned()));
        }
        Some(_) => {}
    }
    let (Some(app), Some(argocd)) = (ctx.config.argocd.app_for(&project.site), &ctx.clients.argocd)
    else {
        return Ok(None);
    };
    if !apps.contains_key(app) {
        let read = argocd.application(app, ctx.config.argocd.hard_refresh).await?;
        apps.insert(app.to_owned(), read);
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
