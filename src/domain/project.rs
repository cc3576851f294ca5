//! Projects: names, namespaces and their life cycle.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::ValidationError;
use super::name::Label;

/// Where a project is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ProjectStatus {
    /// Quota reserved; waiting for a field admin to approve or reject the request (or for it
    /// to expire at `approval_expires_at`).
    PendingApproval,
    /// Quota reserved; manifests on their way.
    Provisioning,
    /// Delivered (and, where ArgoCD is configured, synced and healthy).
    Active,
    /// Drift found; being repaired.
    Degraded,
    /// Provisioning failed; `failure_reason` says why. Can be retried.
    Failed,
    /// Deletion asked for: the namespace stays, with its quota, until `delete_at` (the grace
    /// period), and `restore` cancels it.
    DeletionScheduled,
    /// Manifests being removed; the quota is freed once the namespace is gone.
    Deleting,
    Deleted,
    /// The request was rejected (or expired) before anything was delivered; `failure_reason`
    /// says why. Final: it holds no quota, and its name may be asked for again.
    Rejected,
}

impl ProjectStatus {
    /// Every status.
    pub const ALL: [ProjectStatus; 9] = [
        ProjectStatus::PendingApproval,
        ProjectStatus::Provisioning,
        ProjectStatus::Active,
        ProjectStatus::Degraded,
        ProjectStatus::Failed,
        ProjectStatus::DeletionScheduled,
        ProjectStatus::Deleting,
        ProjectStatus::Deleted,
        ProjectStatus::Rejected,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ProjectStatus::PendingApproval => "pending_approval",
            ProjectStatus::Provisioning => "provisioning",
            ProjectStatus::Active => "active",
            ProjectStatus::Degraded => "degraded",
            ProjectStatus::Failed => "failed",
            ProjectStatus::DeletionScheduled => "deletion_scheduled",
            ProjectStatus::Deleting => "deleting",
            ProjectStatus::Deleted => "deleted",
            ProjectStatus::Rejected => "rejected",
        }
    }
}

impl fmt::Display for ProjectStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ProjectStatus {
    type Err = ValidationError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ProjectStatus::ALL
            .into_iter()
            .find(|status| status.as_str() == s)
            .ok_or_else(|| ValidationError::new("status", "not a project status"))
    }
}

impl TryFrom<String> for ProjectStatus {
    type Error = ValidationError;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        value.parse()
    }
}

/// The namespace of project `name` of `department`, from the configured template.
pub fn namespace_for(
    template: &str,
    department: &str,
    name: &str,
) -> Result<Label, ValidationError> {
    let namespace = template.replace("{department}", department).replace("{name}", name);
    Label::parse("name", &namespace).map_err(|e| {
        ValidationError::new(
            "name",
            format!("the namespace {namespace:?} would be invalid: {}", e.message),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaces_follow_the_template() {
        assert_eq!(
            namespace_for("{department}-{name}", "platform", "payments").unwrap().as_str(),
            "platform-payments"
        );
        assert_eq!(
            namespace_for("p-{name}", "platform", "payments").unwrap().as_str(),
            "p-payments"
        );
        let long = "x".repeat(60);
        let err = namespace_for("{department}-{name}", "platform", &long).unwrap_err();
        assert_eq!(err.field, "name");
        assert!(err.message.contains("63"), "{err}");
    }

    #[test]
    fn statuses_round_trip() {
        for s in [
            "pending_approval",
            "provisioning",
            "active",
            "degraded",
            "failed",
            "deletion_scheduled",
            "deleting",
            "deleted",
            "rejected",
        ] {
            assert_eq!(s.parse::<ProjectStatus>().unwrap().as_str(), s);
        }
    }
}
