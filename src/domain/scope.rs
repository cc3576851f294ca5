//! Who may do what, in one place: which role may use which kind of action ([`Action`]), and
//! which resources an account's [`Scope`] reaches. Every use case asks these rules; the store's
//! list queries filter by the scope's [`reaches_everything`](Scope::reaches_everything),
//! [`field_id`](Scope::field_id) and [`department_id`](Scope::department_id).
//!
//! The answers follow DESIGN.md: a role that may not use an endpoint at all is refused (403);
//! a resource by id outside the caller's scope is not found (404, so its existence is not
//! revealed); a write that names another field's or department's id is refused (403).

use serde::Serialize;
use uuid::Uuid;

use super::ValidationError;
use super::role::Role;

/// What an account is bound to: a field admin to one field, a team lead to one department.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Center,
    Field(Uuid),
    Department(Uuid),
}

/// Where a resource belongs in the organisation: a field and, below it, a department.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Owner {
    pub field_id: Option<Uuid>,
    pub department_id: Option<Uuid>,
}

impl Owner {
    /// Something of a field as a whole (its servers, its capacity, its quotas).
    pub fn field(field_id: Uuid) -> Self {
        Self { field_id: Some(field_id), department_id: None }
    }

    /// Something of a department (its quota, its projects), which belongs to `field_id`.
    pub fn department(field_id: Uuid, department_id: Uuid) -> Self {
        Self { field_id: Some(field_id), department_id: Some(department_id) }
    }
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

    /// The scope of an account row: its department if it has one, else its field, else all.
    pub fn of(field_id: Option<Uuid>, department_id: Option<Uuid>) -> Self {
        match (field_id, department_id) {
            (_, Some(dept)) => Scope::Department(dept),
            (Some(field), None) => Scope::Field(field),
            (None, None) => Scope::Center,
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

    /// Whether the account may see `owner`'s resource: center admins everything, a field admin
    /// its field and everything in it, a team lead its department's.
    pub fn may_read(self, owner: Owner) -> bool {
        match self {
            Scope::Center => true,
            Scope::Field(own) => owner.field_id == Some(own),
            Scope::Department(own) => owner.department_id == Some(own),
        }
    }

    /// Whether the account may change `owner`'s resource, or name it in a change: the same
    /// reach as reading (which actions a role may take at all is [`Role::may`]'s business).
    pub fn may_write(self, owner: Owner) -> bool {
        self.may_read(owner)
    }

    /// Whether the scope reaches everything (a center admin's): list queries then filter
    /// nothing; otherwise they keep the rows of [`field_id`](Self::field_id) or
    /// [`department_id`](Self::department_id).
    pub fn reaches_everything(self) -> bool {
        self == Scope::Center
    }

    /// The field a list of one field's things (servers) is about: a center admin's choice, or a
    /// field admin's own field. A field admin naming another field, or asking for what belongs
    /// to no field, is refused.
    pub fn narrow_to_field(
        self,
        requested: Option<Uuid>,
        unassigned: bool,
    ) -> Result<Option<Uuid>, Denied> {
        match self {
            Scope::Center => Ok(requested),
            Scope::Field(own) if requested.is_some_and(|f| f != own) => {
                Err(Denied("field admins see their own field's servers only".to_owned()))
            }
            Scope::Field(_) if unassigned => {
                Err(Denied("unassigned servers belong to no field; ask a center admin".to_owned()))
            }
            Scope::Field(own) => Ok(Some(own)),
            Scope::Department(_) => Err(Denied("team leads see no servers".to_owned())),
        }
    }
}

/// A refusal, with the reason shown to the caller (403).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Denied(pub String);

/// The kinds of things people do, as the roles table of DESIGN.md lists them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Sites, fields, departments and accounts.
    ManageOrganisation,
    /// Start a server sync.
    SyncInventory,
    /// List servers (a field admin: its own field's).
    ReadServers,
    /// Assign servers to fields, move or unassign them.
    AllocateServers,
    /// Read a field's capacity.
    ReadCapacity,
    /// Create or change a department's quota at a site; decide quota requests.
    SetQuota,
    /// Ask for more quota for one's own department (team leads).
    RequestQuota,
    /// Create a project (team leads, in their own department).
    CreateProject,
    /// Resize, delete or retry a project.
    ChangeProject,
    /// End or restart a project's stuck change by force.
    ForceProject,
    /// Approve or reject a project request that waits for approval (a field admin: in its
    /// own field).
    DecideProject,
    /// Start maintenance and diagnostic jobs by hand.
    RunMaintenance,
    /// Read the audit trail (a field admin: its own field's).
    ReadAudit,
}

impl Role {
    /// Whether this role may take `action` at all (scope decides on which resources).
    pub fn may(self, action: Action) -> bool {
        use Action::*;
        match self {
            Role::CenterAdmin => !matches!(action, CreateProject | RequestQuota),
            Role::FieldAdmin => {
                matches!(action, ReadServers | ReadCapacity | SetQuota | ReadAudit | DecideProject)
            }
            Role::TeamLead => matches!(action, CreateProject | ChangeProject | RequestQuota),
        }
    }

    /// [`may`](Self::may), as a refusal that names the role.
    pub fn authorize(self, action: Action) -> Result<(), Denied> {
        if self.may(action) {
            return Ok(());
        }
        Err(Denied(match action {
            Action::CreateProject => {
                "projects are created by team leads, in their own department".to_owned()
            }
            _ => format!("the {self} role may not use this endpoint"),
        }))
    }
}

/// Whether a change of an account from (`role`, `disabled`) to (`new_role`, `new_disabled`),
/// or its deletion (`None`), takes away an enabled center admin: then it must not be the
/// last one, or nobody could manage InfraHub any more.
pub fn removes_an_admin(role: Role, disabled: bool, after: Option<(Role, bool)>) -> bool {
    let enabled_admin = |role: Role, disabled: bool| role == Role::CenterAdmin && !disabled;
    enabled_admin(role, disabled) && !after.is_some_and(|(r, d)| enabled_admin(r, d))
}

/// What a role's accounts are bound to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Binding {
    Nothing,
    Field,
    Department,
}

impl Role {
    pub fn binding(self) -> Binding {
        match self {
            Role::CenterAdmin => Binding::Nothing,
            Role::FieldAdmin => Binding::Field,
            Role::TeamLead => Binding::Department,
        }
    }
}

/// Whether an account may cancel a job: center admins any job they can see, others their own
/// submissions.
pub fn may_cancel_job(role: Role, caller: Uuid, submitted_by: Option<Uuid>) -> bool {
    role == Role::CenterAdmin || submitted_by == Some(caller)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROLES: [Role; 3] = [Role::CenterAdmin, Role::FieldAdmin, Role::TeamLead];

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

    #[test]
    fn the_roles_table_of_the_design() {
        use Action::*;
        let table = [
            (ManageOrganisation, [true, false, false]),
            (SyncInventory, [true, false, false]),
            (ReadServers, [true, true, false]),
            (AllocateServers, [true, false, false]),
            (ReadCapacity, [true, true, false]),
            (SetQuota, [true, true, false]),
            (CreateProject, [false, false, true]),
            (ChangeProject, [true, false, true]),
            (ForceProject, [true, false, false]),
            (DecideProject, [true, true, false]),
            (RequestQuota, [false, false, true]),
            (RunMaintenance, [true, false, false]),
            (ReadAudit, [true, true, false]),
        ];
        for (action, allowed) in table {
            for (role, expected) in ROLES.into_iter().zip(allowed) {
                assert_eq!(role.may(action), expected, "{role} {action:?}");
                assert_eq!(role.authorize(action).is_ok(), expected, "{role} {action:?}");
            }
        }
        let refusal = Role::TeamLead.authorize(ManageOrganisation).unwrap_err();
        assert_eq!(refusal.0, "the team_lead role may not use this endpoint");
    }

    #[test]
    fn scopes_reach_their_own_things_only() {
        let (field, other_field) = (Uuid::now_v7(), Uuid::now_v7());
        let (dept, other_dept) = (Uuid::now_v7(), Uuid::now_v7());
        let things = [
            Owner::field(field),
            Owner::department(field, dept),
            Owner::department(field, other_dept),
            Owner::field(other_field),
            Owner::department(other_field, Uuid::now_v7()),
            Owner::default(),
        ];
        let reach = |scope: Scope| things.map(|owner| scope.may_read(owner));
        assert_eq!(reach(Scope::Center), [true; 6]);
        assert_eq!(reach(Scope::Field(field)), [true, true, true, false, false, false]);
        assert_eq!(reach(Scope::Department(dept)), [false, true, false, false, false, false]);
        for scope in [Scope::Center, Scope::Field(field), Scope::Department(dept)] {
            assert_eq!(things.map(|o| scope.may_write(o)), reach(scope), "{scope:?}");
        }
    }

    #[test]
    fn list_filters_follow_the_scope() {
        let id = Uuid::now_v7();
        assert!(Scope::Center.reaches_everything());
        assert!(!Scope::Field(id).reaches_everything());
        assert_eq!(
            (Scope::Field(id).field_id(), Scope::Field(id).department_id()),
            (Some(id), None)
        );
        assert_eq!(
            (Scope::Department(id).field_id(), Scope::Department(id).department_id()),
            (None, Some(id))
        );
    }

    #[test]
    fn server_lists_narrow_to_the_field() {
        let (own, other) = (Uuid::now_v7(), Uuid::now_v7());
        assert_eq!(Scope::Center.narrow_to_field(Some(other), true), Ok(Some(other)));
        assert_eq!(Scope::Center.narrow_to_field(None, false), Ok(None));
        assert_eq!(Scope::Field(own).narrow_to_field(None, false), Ok(Some(own)));
        assert_eq!(Scope::Field(own).narrow_to_field(Some(own), false), Ok(Some(own)));
        assert!(Scope::Field(own).narrow_to_field(Some(other), false).is_err());
        assert!(Scope::Field(own).narrow_to_field(None, true).is_err());
        assert!(Scope::Department(own).narrow_to_field(None, false).is_err());
    }

    #[test]
    fn the_last_enabled_admin_is_the_one_removal_that_matters() {
        use Role::*;
        assert!(removes_an_admin(CenterAdmin, false, None));
        assert!(removes_an_admin(CenterAdmin, false, Some((TeamLead, false))));
        assert!(removes_an_admin(CenterAdmin, false, Some((CenterAdmin, true))));
        assert!(!removes_an_admin(CenterAdmin, false, Some((CenterAdmin, false))));
        assert!(!removes_an_admin(CenterAdmin, true, None), "a disabled admin counts for nothing");
        assert!(!removes_an_admin(FieldAdmin, false, None));
    }

    #[test]
    fn account_rows_map_to_scopes() {
        let (field, dept) = (Uuid::now_v7(), Uuid::now_v7());
        assert_eq!(Scope::of(None, None), Scope::Center);
        assert_eq!(Scope::of(Some(field), None), Scope::Field(field));
        assert_eq!(Scope::of(None, Some(dept)), Scope::Department(dept));
        assert_eq!(Role::TeamLead.binding(), Binding::Department);
    }

    #[test]
    fn jobs_are_cancelled_by_center_admins_and_their_submitters() {
        let (me, someone) = (Uuid::now_v7(), Uuid::now_v7());
        assert!(may_cancel_job(Role::CenterAdmin, me, Some(someone)));
        assert!(may_cancel_job(Role::CenterAdmin, me, None));
        assert!(may_cancel_job(Role::TeamLead, me, Some(me)));
        assert!(!may_cancel_job(Role::TeamLead, me, Some(someone)));
        assert!(!may_cancel_job(Role::FieldAdmin, me, None));
    }
}
