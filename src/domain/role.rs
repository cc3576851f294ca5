//! Roles and the scope each one is bound to.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::ValidationError;

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

/// What an account is bound to: a field admin to one field, a team lead to one department.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Center,
    Field(Uuid),
    Department(Uuid),
}

impl Scope {
    /// Builds the scope of `role` from the ids a request names, refusing ids that do not fit it.
    pub fn for_role(
        role: Role,
        field_id: Option<Uuid>,
        department_id: Option<Uuid>,
    ) -> Result<Self, ValidationError> {
        match (role, field_id, department_id) {
            (Role::CenterAdmin, None, None) => Ok(Scope::Center),
            (Role::CenterAdmin, _, _) => Err(ValidationError::new(
                "role",
                "a center_admin is bound to no field_id or department_id",
            )),
            (Role::FieldAdmin, Some(field), None) => Ok(Scope::Field(field)),
            (Role::FieldAdmin, None, _) => {
                Err(ValidationError::new("field_id", "a field_admin needs a field_id"))
            }
            (Role::FieldAdmin, Some(_), Some(_)) => Err(ValidationError::new(
                "department_id",
                "a field_admin is bound to a field, not a department",
            )),
            (Role::TeamLead, None, Some(dept)) => Ok(Scope::Department(dept)),
            (Role::TeamLead, _, None) => {
                Err(ValidationError::new("department_id", "a team_lead needs a department_id"))
            }
            (Role::TeamLead, Some(_), Some(_)) => Err(ValidationError::new(
                "field_id",
                "a team_lead is bound to a department (its field follows from it)",
            )),
        }
    }

    pub fn field_id(self) -> Option<Uuid> {
        match self {
            Scope::Field(id) => Some(id),
            _ => None,
        }
    }

    pub fn department_id(self) -> Option<Uuid> {
        match self {
            Scope::Department(id) => Some(id),
            _ => None,
        }
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

    #[test]
    fn scope_follows_role() {
        let id = Uuid::now_v7();
        assert_eq!(Scope::for_role(Role::CenterAdmin, None, None), Ok(Scope::Center));
        assert_eq!(Scope::for_role(Role::FieldAdmin, Some(id), None), Ok(Scope::Field(id)));
        assert_eq!(Scope::for_role(Role::TeamLead, None, Some(id)), Ok(Scope::Department(id)));
        let refused = [
            (Role::CenterAdmin, Some(id), None, "role"),
            (Role::CenterAdmin, None, Some(id), "role"),
            (Role::FieldAdmin, None, None, "field_id"),
            (Role::FieldAdmin, Some(id), Some(id), "department_id"),
            (Role::TeamLead, None, None, "department_id"),
            (Role::TeamLead, Some(id), None, "department_id"),
            (Role::TeamLead, Some(id), Some(id), "field_id"),
        ];
        for (role, field, dept, at) in refused {
            assert_eq!(Scope::for_role(role, field, dept).unwrap_err().field, at, "{role}");
        }
    }
}
