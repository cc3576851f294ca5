//! `[delivery]` and `[kubernetes]`: how project manifests reach the clusters, by GitOps (a
//! local Git repository or a GitLab project) or straight to each site's cluster.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::ConfigError;
use super::secret::{Secret, SecretSource};

/// How project manifests reach the clusters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryKind {
    /// Commit them to a Git repository that ArgoCD watches.
    #[default]
    Gitops,
    /// Apply them to the site's cluster with server-side apply.
    Kubernetes,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct DeliveryConfig {
    pub kind: DeliveryKind,
    /// Namespace name; `{department}` and `{name}` are replaced. The result must be a
    /// DNS-1123 label.
    pub namespace_template: String,
    pub git: GitConfig,
    pub gitlab: GitlabConfig,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        Self {
            kind: DeliveryKind::Gitops,
            namespace_template: "{department}-{name}".to_owned(),
            git: GitConfig::default(),
            gitlab: GitlabConfig::default(),
        }
    }
}

/// Where GitOps manifests are committed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum GitKind {
    /// A repository on this host's disk (created if missing), optionally pushed to a remote.
    #[default]
    Local,
    /// A GitLab project, through its commits API (one commit per change).
    Gitlab,
}

#[derive(Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct GitConfig {
    pub kind: GitKind,
    /// The repository's directory; `<site>/<namespace>.yaml` files are written in it.
    pub path: PathBuf,
    pub branch: String,
    /// Pushed to after every commit when set (a remote name or URL; credentials in it are
    /// redacted wherever it is shown).
    #[serde(serialize_with = "super::secret::serialize_redacted_credentials")]
    pub remote: Option<String>,
    pub author_name: String,
    pub author_email: String,
}

impl std::fmt::Debug for GitConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GitConfig")
            .field("kind", &self.kind)
            .field("path", &self.path)
            .field("branch", &self.branch)
            .field("remote", &self.remote.as_deref().map(super::redact_credentials))
            .field("author_name", &self.author_name)
            .field("author_email", &self.author_email)
            .finish()
    }
}

impl Default for GitConfig {
    fn default() -> Self {
        Self {
            kind: GitKind::Local,
            path: PathBuf::from("var/gitops"),
            branch: "main".to_owned(),
            remote: None,
            author_name: "InfraHub".to_owned(),
            author_email: "infrahub@localhost".to_owned(),
        }
    }
}

/// The GitLab project that holds the manifests (`delivery.git.kind = "gitlab"`); branch and
/// author come from `delivery.git`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct GitlabConfig {
    /// e.g. `https://gitlab.example.com`.
    pub url: String,
    /// Project id, or its path such as `platform/gitops`.
    pub project: String,
    pub token: Option<Secret>,
    pub token_file: Option<PathBuf>,
    pub timeout_secs: u64,
}

impl Default for GitlabConfig {
    fn default() -> Self {
        Self {
            url: String::new(),
            project: String::new(),
            token: None,
            token_file: None,
            timeout_secs: 30,
        }
    }
}

impl GitlabConfig {
    fn token_source(&self) -> SecretSource<'_> {
        SecretSource {
            key: "delivery.gitlab.token",
            value: self.token.as_ref(),
            file: self.token_file.as_ref(),
        }
    }

    /// The `PRIVATE-TOKEN`, from `token` or `token_file`.
    pub fn token(&self) -> Result<Secret, ConfigError> {
        self.token_source().require("set token_file or INFRAHUB_DELIVERY__GITLAB__TOKEN")
    }
}

/// The clusters, for `delivery.kind = "kubernetes"`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct KubernetesConfig {
    /// The kubeconfig file; the usual lookup (`KUBECONFIG`, `~/.kube/config`) when unset.
    pub kubeconfig: Option<PathBuf>,
    /// Site name -> kubeconfig context of that site's cluster.
    pub contexts: BTreeMap<String, String>,
    /// Field manager of server-side apply.
    pub field_manager: String,
    /// While a deleted namespace is still terminating, look again this often.
    pub poll_interval_ms: u64,
    /// A namespace still terminating this long after its deletion fails the deletion (with the
    /// reason); deleting the project again tries again.
    pub delete_deadline_secs: u64,
}

impl Default for KubernetesConfig {
    fn default() -> Self {
        Self {
            kubeconfig: None,
            contexts: BTreeMap::new(),
            field_manager: "infrahub".to_owned(),
            poll_interval_ms: 5000,
            delete_deadline_secs: 1800,
        }
    }
}

impl DeliveryConfig {
    pub(super) fn validate(&self, kubernetes: &KubernetesConfig) -> Result<(), ConfigError> {
        let template = &self.namespace_template;
        if !template.contains("{name}") {
            return Err(ConfigError::invalid("delivery.namespace_template", "must contain {name}"));
        }
        crate::domain::project::namespace_for(template, "department", "name")
            .map_err(|e| ConfigError::invalid("delivery.namespace_template", e.message))?;
        if self.kind == DeliveryKind::Kubernetes && kubernetes.contexts.is_empty() {
            return Err(ConfigError::invalid(
                "kubernetes.contexts",
                "needs the kubeconfig context of each site",
            ));
        }
        if kubernetes.field_manager.trim().is_empty()
            || kubernetes.poll_interval_ms == 0
            || kubernetes.delete_deadline_secs == 0
        {
            return Err(ConfigError::invalid(
                "kubernetes",
                "field_manager must be set, poll_interval_ms and delete_deadline_secs at least 1",
            ));
        }
        let gitlab = &self.gitlab;
        if self.git.kind == GitKind::Gitlab {
            gitlab.token_source().check_exclusive()?;
            url::Url::parse(&gitlab.url).map_err(|e| {
                ConfigError::invalid(
                    "delivery.gitlab.url",
                    format!("not a URL ({e}); GitLab delivery is on"),
                )
            })?;
            if gitlab.project.trim().is_empty() {
                return Err(ConfigError::invalid(
                    "delivery.gitlab.project",
                    "missing: a project id or path",
                ));
            }
            if !gitlab.token_source().is_set() {
                return Err(ConfigError::invalid(
                    "delivery.gitlab.token",
                    "missing: set token_file or INFRAHUB_DELIVERY__GITLAB__TOKEN",
                ));
            }
            if gitlab.timeout_secs == 0 {
                return Err(ConfigError::invalid(
                    "delivery.gitlab.timeout_secs",
                    "must be at least 1",
                ));
            }
        }
        if self.git.branch.trim().is_empty() {
            return Err(ConfigError::invalid("delivery.git.branch", "must not be empty"));
        }
        Ok(())
    }
}
