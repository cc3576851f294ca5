//! Usage against quota: what each project's namespace actually uses, read from the
//! Prometheus of its site (kube-state-metrics' `kube_resourcequota`, `type="used"`), beside
//! what it reserved. A project whose use stays under half of its quota for 30 days is flagged
//! `oversized`.

use std::collections::BTreeMap;

use serde::Serialize;

use super::AppResult;
use crate::clients::ClientError;
use crate::clients::prometheus::Sample;
use crate::context::Context;
use crate::store::org::{self, UnitKind};
use crate::store::projects::{self, Usage};

/// What the namespaces' quotas have in use, per namespace and resource.
/// `max`, not `sum`: several kube-state-metrics replicas, or several quotas in a namespace,
/// each report the namespace's whole use.
pub const QUERY: &str = r#"max by (namespace, resource) (kube_resourcequota{type="used", resource=~"requests.cpu|requests.memory"})"#;

const GIB: f64 = 1024.0 * 1024.0 * 1024.0;

/// What one read found at one site.
#[derive(Debug, Default, Clone, Serialize)]
pub struct SiteUsage {
    pub site: String,
    /// Namespaces Prometheus reported.
    pub namespaces: usize,
    /// Projects whose use was recorded.
    pub projects: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The use per namespace in `samples`: (CPU cores, RAM in GB).
pub fn per_namespace(samples: &[Sample]) -> BTreeMap<String, (f64, f64)> {
    let mut found: BTreeMap<String, (f64, f64)> = BTreeMap::new();
    for sample in samples {
        let Some(namespace) = sample.labels.get("namespace") else { continue };
        let entry = found.entry(namespace.clone()).or_default();
        match sample.labels.get("resource").map(String::as_str) {
            Some("requests.cpu") => entry.0 = entry.0.max(sample.value),
            Some("requests.memory") => entry.1 = entry.1.max(sample.value / GIB),
            _ => {}
        }
    }
    found
}

/// Reads every site's Prometheus and records what its projects use. A site that fails is
/// reported and the others still recorded; the job then fails with the first failure (a
/// transient one retries), and running it again is harmless.
pub async fn read(ctx: &Context) -> AppResult<Result<Vec<SiteUsage>, ClientError>> {
    let Some(prometheus) = ctx.clients.prometheus.clone() else { return Ok(Ok(Vec::new())) };
    let mut report = Vec::new();
    let mut failure = None;
    for site in prometheus.sites() {
        let mut line = SiteUsage { site: site.clone(), ..SiteUsage::default() };
        let mut conn = ctx.pool.acquire().await?;
        let Some(unit) = org::find_unit_by_name(&mut conn, UnitKind::Site, &site).await? else {
            line.error = Some(format!("no site named {site}"));
            report.push(line);
            continue;
        };
        drop(conn);
        match prometheus.query(&site, QUERY).await {
            Ok(samples) => {
                let found = per_namespace(&samples);
                let usage: Vec<Usage> = found
                    .iter()
                    .map(|(namespace, (cpu, ram_gb))| Usage {
                        namespace,
                        cpu: *cpu,
                        ram_gb: *ram_gb,
                    })
                    .collect();
                line.namespaces = usage.len();
                let mut conn = ctx.pool.acquire().await?;
                line.projects = projects::record_usage(&mut conn, unit.id, &usage).await?;
            }
            Err(err) => {
                line.error = Some(err.to_string());
                failure.get_or_insert(err);
            }
        }
        report.push(line);
    }
    tracing::info!(sites = report.len(), "project usage read from Prometheus");
    Ok(match failure {
        Some(err) => Err(err),
        None => Ok(report),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(namespace: &str, resource: &str, value: f64) -> Sample {
        let labels = [("namespace", namespace), ("resource", resource)]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        Sample { labels, value }
    }

    #[test]
    fn cpu_in_cores_and_memory_in_gigabytes_per_namespace() {
        let found = per_namespace(&[
            sample("shop-web", "requests.cpu", 1.5),
            sample("shop-web", "requests.memory", 4.0 * GIB),
            sample("shop-db", "requests.memory", 0.5 * GIB),
            sample("shop-db", "pods", 7.0),
        ]);
        assert_eq!(found["shop-web"], (1.5, 4.0));
        assert_eq!(found["shop-db"], (0.0, 0.5));
    }
}
