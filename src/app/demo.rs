//! The demo's organisation, accounts and capacity, made ready for every documented flow.
//! Each step creates only what is missing, so running the demo again changes nothing.

use serde::Serialize;

use super::inventory::{SyncError, sync};
use super::organisation::ensure;
use super::users::{NewAccount, UnitRef, add, exists};
use super::{Actor, AppResult};
use crate::context::Context;
use crate::domain::capacity::{Resources, capacity};
use crate::domain::role::Role;
use crate::domain::scope::Binding;
use crate::store::audit::{self, Change};
use crate::store::org::{self, DepartmentValues, UnitKind};
use crate::store::{capacity as store_capacity, servers};

/// The demo's accounts: username, password, role. Scopes: field `berlin`, department `platform`.
pub const DEMO_ACCOUNTS: [(&str, &str, Role); 3] = [
    ("admin", "admin", Role::CenterAdmin),
    ("field-berlin", "password", Role::FieldAdmin),
    ("team-platform", "password", Role::TeamLead),
];

/// What a bootstrap run created (nothing on a second run).
#[derive(Debug, Default, Serialize, PartialEq, Eq)]
pub struct Bootstrap {
    pub created: Vec<String>,
}

/// Creates sites `berlin` and `munich`, field `berlin`, department `platform` and the demo
/// accounts, each only if missing, with audit events.
pub async fn bootstrap(ctx: &Context) -> AppResult<Bootstrap> {
    let actor = Actor::system("demo");
    let department = DepartmentValues {
        field_id: uuid::Uuid::nil(),
        name: "platform",
        display_name: "Platform",
        k8s_group: Some("platform-team"),
    };
    let org = ensure(
        ctx,
        &actor,
        &[("berlin", "Berlin"), ("munich", "Munich")],
        ("berlin", "Berlin"),
        department,
    )
    .await?;
    let mut report = Bootstrap { created: org.created };
    for (username, password, role) in DEMO_ACCOUNTS {
        if exists(ctx, username).await? {
            continue;
        }
        let account = NewAccount {
            username: username.to_owned(),
            password: password.to_owned(),
            role,
            field: (role.binding() == Binding::Field).then_some(UnitRef::Id(org.field.id)),
            department: (role.binding() == Binding::Department)
                .then_some(UnitRef::Id(org.department.id)),
            demo: true,
        };
        let user = add(ctx, &actor, account).await?;
        report.created.push(format!("user {}", user.id));
    }
    Ok(report)
}

/// What [`seed_capacity`] did.
#[derive(Debug, Default, Serialize, PartialEq, Eq)]
pub struct CapacitySeed {
    pub servers_synced: u64,
    pub servers_assigned: u64,
    pub quota_set: bool,
}

/// Makes the demo ready for the allocation and project flows: syncs the inventory, gives
/// field `berlin` the first half of berlin's servers (only while it has none), and gives
/// department `platform` half of that capacity as its quota at berlin (only if it has none).
pub async fn seed_capacity(ctx: &Context) -> Result<CapacitySeed, SyncError> {
    let mut seed = CapacitySeed::default();
    let actor = Actor::system("demo");
    let report = sync(ctx, ctx.clients.inventory.as_ref(), &actor, false).await?;
    seed.servers_synced = report.added + report.updated + report.unchanged;
    let mut tx = ctx.pool.begin().await?;
    let (Some(field), Some(site), Some(dept)) = (
        org::find_unit_by_name(&mut tx, UnitKind::Field, "berlin").await?,
        org::find_unit_by_name(&mut tx, UnitKind::Site, "berlin").await?,
        org::find_department_by_name(&mut tx, "platform").await?,
    ) else {
        return Ok(seed);
    };
    // Server rows first, then the (field, site) lock: the order allocation takes them in.
    servers::lock_site(&mut tx, site.id).await?;
    store_capacity::lock_field_site(&mut tx, field.id, site.id).await?;
    if servers::count_owned(&mut tx, field.id, site.id).await? == 0 {
        seed.servers_assigned = servers::assign_first_half(&mut tx, field.id, site.id).await?;
        let change =
            Change::new("field", "demo_assign_servers", field.id).after(&seed.servers_assigned);
        audit::record(&mut tx, &actor, change).await?;
    }
    let has_quota = store_capacity::quotas_at(&mut tx, field.id, site.id)
        .await?
        .iter()
        .any(|q| q.department_id == dept.id);
    if !has_quota {
        let hardware = store_capacity::field_servers(&mut tx, field.id, site.id).await?;
        let half = capacity(hardware, ctx.config.capacity.overcommit());
        let quota = Resources::new(half.cpu / 2, half.ram_gb / 2);
        store_capacity::set_quota(&mut tx, dept.id, site.id, quota).await?;
        let change = Change::new("department_quota", "set", format!("{}:{}", dept.id, site.id))
            .after(&quota);
        audit::record(&mut tx, &actor, change).await?;
        seed.quota_set = true;
    }
    super::commit(tx).await?;
    Ok(seed)
}
