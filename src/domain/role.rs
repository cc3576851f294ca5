//! Roles. What each may do is [`super::scope`]'s business.

use std::fmt;
use std::str::FromStr;

use super::ValidationError;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Everything: the organisation, users, servers.
    CenterAdmin,
    /// One field: its servers, capacity and department quotas.
    FieldAdmin,
    /// One department: its projects.
    TeamLead,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::CenterAdmin => "center_admin",
            Role::FieldAdmin => "field_admin",
            Role::TeamLead => "team_lead",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = ValidationError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "center_admin" => Ok(Role::CenterAdmin),
            "field_admin" => Ok(Role::FieldAdmin),
            "team_lead" => Ok(Role::TeamLead),
            _ => Err(ValidationError::new(
                "role",
                "must be one of center_admin, field_admin, team_lead",
            )),
        }
    }
}

impl TryFrom<String> for Role {
    type Error = ValidationError;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        value.parse()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_round_trip_through_their_names() {
        for role in [Role::CenterAdmin, Role::FieldAdmin, Role::TeamLead] {
            assert_eq!(role.as_str().parse::<Role>().unwrap(), role);
        }
        assert!("admin".parse::<Role>().is_err());
    }
}
