//! Clients of the systems InfraHub talks to: one trait per system, its real implementation
//! beside it, all built once at start-up into [`Clients`] and shared through the context.
//! Test doubles are HTTP servers under `tests/` (reached through these same clients), or
//! implementations of the traits injected into [`Clients`].

pub mod argocd;
pub mod gitlab;
pub mod gitops;
pub mod inventory;
pub mod kube;
pub mod prometheus;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::config::{Config, ConfigError, GitKind, InventorySource};

/// Why a call to another system failed, and whether trying again can help.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    /// Retrying will not help: a refused credential, an unknown object, a bad answer.
    #[error("{0}")]
    Permanent(String),
    /// Might work later: timeouts, 5xx, connection errors, a busy lock.
    #[error("{0}")]
    Transient(String),
}

impl ClientError {
    pub fn permanent(message: impl Into<String>) -> Self {
        Self::Permanent(message.into())
    }

    pub fn transient(message: impl Into<String>) -> Self {
        Self::Transient(message.into())
    }

    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Transient(_))
    }
}

pub type ClientResult<T> = Result<T, ClientError>;

/// The future of a client call, boxed so the traits can be used as `dyn`.
pub type ClientFuture<'a, T> = Pin<Box<dyn Future<Output = ClientResult<T>> + Send + 'a>>;

/// Every external system, built once from configuration.
#[derive(Clone)]
pub struct Clients {
    /// The server inventory: NetBox or a JSON file.
    pub inventory: Arc<dyn inventory::Inventory>,
    /// The GitOps repository: a local Git repository or a GitLab project.
    pub gitops: Arc<dyn gitops::Gitops>,
    /// Argo CD, when `argocd.url` is set.
    pub argocd: Option<Arc<dyn argocd::ArgoCd>>,
    /// The Kubernetes cluster of each site, for `delivery.kind = "kubernetes"`.
    pub clusters: Arc<dyn kube::Clusters>,
    /// Prometheus of the sites that have one (`usage.prometheus`): what projects really use.
    pub prometheus: Option<Arc<dyn prometheus::Prometheus>>,
}

impl Clients {
    /// The clients the configuration names. Fails (as a configuration error) when a token
    /// file cannot be read or a URL does not parse; no network call is made here.
    pub fn from_config(config: &Config) -> Result<Self, ConfigError> {
        let inventory: Arc<dyn inventory::Inventory> = match config.inventory.source {
            InventorySource::File => {
                Arc::new(inventory::FileInventory::new(config.inventory.file.path.clone()))
            }
            InventorySource::Netbox => {
                let netbox = &config.inventory.netbox;
                Arc::new(inventory::Netbox::new(netbox, netbox.token()?)?)
            }
        };
        let gitops: Arc<dyn gitops::Gitops> = match config.delivery.git.kind {
            GitKind::Local => Arc::new(gitops::LocalGit::new(&config.delivery.git)),
            GitKind::Gitlab => {
                let gitlab = &config.delivery.gitlab;
                Arc::new(gitlab::Gitlab::new(gitlab, &config.delivery.git, gitlab.token()?)?)
            }
        };
        let argocd: Option<Arc<dyn argocd::ArgoCd>> = if config.argocd.enabled() {
            Some(Arc::new(argocd::Argocd::new(&config.argocd, config.argocd.token()?)?))
        } else {
            None
        };
        let clusters = Arc::new(kube::KubeClusters::new(&config.kubernetes));
        let prometheus: Option<Arc<dyn prometheus::Prometheus>> = if config.usage.enabled() {
            let token = config.usage.token()?;
            Some(Arc::new(prometheus::PrometheusHttp::new(&config.usage, token)?))
        } else {
            None
        };
        Ok(Self { inventory, gitops, argocd, clusters, prometheus })
    }

    /// Clients for commands that never reach another system (`infrahub user ...`): every call
    /// fails permanently, and no token is read.
    pub fn offline() -> Self {
        let offline = Arc::new(Offline);
        Self {
            inventory: offline.clone(),
            gitops: offline.clone(),
            argocd: None,
            clusters: offline,
            prometheus: None,
        }
    }
}

/// The stand-in of [`Clients::offline`].
struct Offline;

fn offline<'a, T: Send + 'a>() -> ClientFuture<'a, T> {
    Box::pin(async { Err(ClientError::permanent("this command reaches no other system")) })
}

impl inventory::Inventory for Offline {
    fn page<'a>(&'a self, _: Option<&'a str>) -> ClientFuture<'a, inventory::DevicePage> {
        offline()
    }

    fn sites(&self) -> Option<Vec<String>> {
        None
    }

    fn describe(&self) -> String {
        "offline".to_owned()
    }
}

impl gitops::Gitops for Offline {
    fn write<'a>(
        &'a self,
        _: &'a str,
        _: Option<&'a str>,
        _: &'a str,
    ) -> ClientFuture<'a, gitops::Delivered> {
        offline()
    }

    fn read<'a>(&'a self, _: &'a str) -> ClientFuture<'a, Option<String>> {
        offline()
    }

    fn includes<'a>(&'a self, _: &'a str, _: &'a str) -> ClientFuture<'a, bool> {
        offline()
    }
}

impl kube::Clusters for Offline {
    fn cluster<'a>(&'a self, _: &'a str) -> ClientFuture<'a, Arc<dyn kube::Cluster>> {
        offline()
    }
}
