//! Delivery straight to Kubernetes: server-side apply (field manager `infrahub` by default) of
//! a project's objects to its site's cluster, reading them back, and deleting the namespace.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::core::{ApiResource, GroupVersionKind};
use serde_json::Value;

use tokio::sync::Mutex;

use super::{ClientError, ClientFuture, ClientResult};
use crate::config::KubernetesConfig;

/// The clusters of the sites, by site name.
pub trait Clusters: Send + Sync {
    /// The cluster of `site`; a site without a configured cluster is a permanent error.
    fn cluster<'a>(&'a self, site: &'a str) -> ClientFuture<'a, Arc<dyn Cluster>>;
}

/// One cluster, as delivery uses it.
pub trait Cluster: Send + Sync {
    /// Server-side applies each object, in order (the namespace first), taking ownership of
    /// the fields InfraHub manages.
    fn apply<'a>(&'a self, objects: &'a [Value]) -> ClientFuture<'a, ()>;

    /// The object as the cluster has it, if it exists.
    fn read<'a>(&'a self, object: &'a Value) -> ClientFuture<'a, Option<Value>>;

    /// Deletes the namespace (its objects go with it); true while it still exists
    /// (terminating).
    fn delete_namespace<'a>(&'a self, namespace: &'a str) -> ClientFuture<'a, bool>;
}

/// The real clusters, from kubeconfig contexts; each site's client is built on first use and
/// kept.
pub struct KubeClusters {
    config: KubernetesConfig,
    built: Mutex<HashMap<String, Arc<KubeCluster>>>,
}

impl KubeClusters {
    pub fn new(config: &KubernetesConfig) -> Self {
        Self { config: config.clone(), built: Mutex::new(HashMap::new()) }
    }
}

impl Clusters for KubeClusters {
    fn cluster<'a>(&'a self, site: &'a str) -> ClientFuture<'a, Arc<dyn Cluster>> {
        Box::pin(async move {
            if let Some(cluster) = self.built.lock().await.get(site) {
                return Ok(cluster.clone() as Arc<dyn Cluster>);
            }
            // Built outside the lock, so one slow kubeconfig does not hold up other sites; two
            // first uses at once build it twice, and the first stays.
            let cluster = Arc::new(KubeCluster::for_site(&self.config, site).await?);
            let mut built = self.built.lock().await;
            let kept = built.entry(site.to_owned()).or_insert(cluster);
            Ok(kept.clone() as Arc<dyn Cluster>)
        })
    }
}

fn classify(err: kube::Error, what: &str) -> ClientError {
    match err {
        kube::Error::Api(status) => {
            let message = format!(
                "the Kubernetes API answered {} to {what}: {}",
                status.code, status.message
            );
            match status.code {
                401 | 403 | 400 | 422 => ClientError::Permanent(message),
                _ => ClientError::Transient(message),
            }
        }
        other => ClientError::Transient(format!("the Kubernetes API ({what}): {other}")),
    }
}

/// The cluster of one site, through kube's client.
pub struct KubeCluster {
    client: kube::Client,
    field_manager: String,
}

/// Group, version and kind of a manifest object, and whether it lives in a namespace.
fn resource_of(object: &Value) -> ClientResult<(ApiResource, Option<String>, String)> {
    let api_version = object["apiVersion"].as_str().unwrap_or_default();
    let kind = object["kind"].as_str().unwrap_or_default();
    let name = object["metadata"]["name"].as_str().unwrap_or_default().to_owned();
    if kind.is_empty() || name.is_empty() {
        return Err(ClientError::Permanent(format!("an object without kind or name: {object}")));
    }
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    let resource = ApiResource::from_gvk(&GroupVersionKind::gvk(group, version, kind));
    let namespace = object["metadata"]["namespace"].as_str().map(str::to_owned);
    Ok((resource, namespace, name))
}

impl KubeCluster {
    /// The cluster of `site`, from its kubeconfig context.
    async fn for_site(config: &KubernetesConfig, site: &str) -> ClientResult<Self> {
        let context = config.contexts.get(site).ok_or_else(|| {
            ClientError::Permanent(format!(
                "no kubeconfig context for site {site} in kubernetes.contexts"
            ))
        })?;
        let kubeconfig = match &config.kubeconfig {
            Some(path) => Kubeconfig::read_from(path),
            None => Kubeconfig::read(),
        }
        .map_err(|e| ClientError::Permanent(format!("cannot read the kubeconfig: {e}")))?;
        let options =
            KubeConfigOptions { context: Some(context.clone()), ..KubeConfigOptions::default() };
        let mut client_config = kube::Config::from_custom_kubeconfig(kubeconfig, &options)
            .await
            .map_err(|e| ClientError::Permanent(format!("kubeconfig context {context}: {e}")))?;
        client_config.read_timeout = Some(Duration::from_secs(30));
        let client = kube::Client::try_from(client_config).map_err(|e| {
            ClientError::Permanent(format!("cannot build a client for context {context}: {e}"))
        })?;
        Ok(Self { client, field_manager: config.field_manager.clone() })
    }

    fn api(&self, resource: &ApiResource, namespace: Option<&str>) -> Api<DynamicObject> {
        match namespace {
            Some(ns) => Api::namespaced_with(self.client.clone(), ns, resource),
            None => Api::all_with(self.client.clone(), resource),
        }
    }

    async fn apply_all(&self, objects: &[Value]) -> ClientResult<()> {
        let params = PatchParams::apply(&self.field_manager).force();
        for object in objects {
            let (resource, namespace, name) = resource_of(object)?;
            self.api(&resource, namespace.as_deref())
                .patch(&name, &params, &Patch::Apply(object))
                .await
                .map_err(|e| classify(e, &format!("apply {} {name}", resource.kind)))?;
        }
        Ok(())
    }

    async fn read_object(&self, object: &Value) -> ClientResult<Option<Value>> {
        let (resource, namespace, name) = resource_of(object)?;
        let found = self
            .api(&resource, namespace.as_deref())
            .get_opt(&name)
            .await
            .map_err(|e| classify(e, &format!("read {} {name}", resource.kind)))?;
        Ok(found.map(|o| serde_json::to_value(o).unwrap_or(Value::Null)))
    }

    async fn remove_namespace(&self, namespace: &str) -> ClientResult<bool> {
        let resource = ApiResource::from_gvk(&GroupVersionKind::gvk("", "v1", "Namespace"));
        let api = self.api(&resource, None);
        match api.delete(namespace, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 404 => return Ok(false),
            Err(e) => return Err(classify(e, &format!("delete namespace {namespace}"))),
        }
        let still = api
            .get_opt(namespace)
            .await
            .map_err(|e| classify(e, &format!("read namespace {namespace}")))?;
        Ok(still.is_some())
    }
}

impl Cluster for KubeCluster {
    fn apply<'a>(&'a self, objects: &'a [Value]) -> ClientFuture<'a, ()> {
        Box::pin(self.apply_all(objects))
    }

    fn read<'a>(&'a self, object: &'a Value) -> ClientFuture<'a, Option<Value>> {
        Box::pin(self.read_object(object))
    }

    fn delete_namespace<'a>(&'a self, namespace: &'a str) -> ClientFuture<'a, bool> {
        Box::pin(self.remove_namespace(namespace))
    }
}

/// Whether every managed field of `desired` has the same value in `actual` (the cluster adds
/// fields of its own, which do not count).
pub fn contains(actual: &Value, desired: &Value) -> bool {
    match (actual, desired) {
        (Value::Object(a), Value::Object(d)) => {
            d.iter().all(|(k, v)| a.get(k).is_some_and(|av| contains(av, v)))
        }
        (Value::Array(a), Value::Array(d)) => {
            a.len() == d.len() && a.iter().zip(d).all(|(av, dv)| contains(av, dv))
        }
        (a, d) => a == d,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn desired_fields_must_all_be_there() {
        let actual = json!({ "metadata": { "name": "a", "uid": "x", "labels": { "k": "v", "extra": "1" } }, "spec": { "hard": { "pods": "10" } } });
        assert!(contains(&actual, &json!({ "metadata": { "name": "a", "labels": { "k": "v" } } })));
        assert!(!contains(&actual, &json!({ "spec": { "hard": { "pods": "20" } } })));
        assert!(!contains(&actual, &json!({ "spec": { "limits": [] } })));
    }

    #[test]
    fn resources_follow_api_version_and_kind() {
        let (resource, namespace, name) =
            resource_of(&json!({ "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": { "name": "rb", "namespace": "ns" } })).unwrap();
        assert_eq!(
            (resource.group.as_str(), resource.plural.as_str()),
            ("rbac.authorization.k8s.io", "rolebindings")
        );
        assert_eq!((namespace.as_deref(), name.as_str()), (Some("ns"), "rb"));
        let (resource, namespace, _) = resource_of(
            &json!({ "apiVersion": "v1", "kind": "Namespace", "metadata": { "name": "n" } }),
        )
        .unwrap();
        assert_eq!((resource.plural.as_str(), namespace), ("namespaces", None));
    }
}
