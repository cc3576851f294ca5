//! `infrahub demo`: the embedded default installation. Creates the database if missing and,
//! idempotently, the demo organisation and accounts.

use serde::Serialize;
use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, PgConnection, PgPool};

use crate::clients::inventory::FileInventory;
use crate::config::{Config, redact_url};
use crate::domain::capacity::Resources;
use crate::domain::password;
use crate::domain::role::{Role, Scope};
use crate::jobs::sync_servers;
use crate::store::StoreError;
use crate::store::audit::{self, Actor, Change};
use crate::store::org::{self, DepartmentValues, UnitKind};
use crate::store::users::{self, NewUser};
use crate::store::{capacity, servers};

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

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("cannot create database {database} at {url}: {cause}")]
    CreateDatabase { database: String, url: String, cause: String },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Hash(#[from] password::HashError),
    #[error("demo inventory: {0}")]
    Inventory(crate::jobs::JobError),
}

impl From<sqlx::Error> for DemoError {
    fn from(err: sqlx::Error) -> Self {
        Self::Store(err.into())
    }
}

/// Creates the database named in `url` when it does not exist, connecting to the server's
/// `postgres` database to do so. Returns whether it was created.
pub async fn ensure_database(url: &str) -> Result<bool, DemoError> {
    let failed = |database: &str, cause: String| DemoError::CreateDatabase {
        database: database.to_owned(),
        url: redact_url(url),
        cause,
    };
    let options: PgConnectOptions =
        url.parse().map_err(|e: sqlx::Error| failed("?", e.to_string()))?;
    let database = options.get_database().unwrap_or("postgres").to_owned();
    let mut conn = PgConnection::connect_with(&options.clone().database("postgres"))
        .await
        .map_err(|e| failed(&database, e.to_string()))?;
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(&database)
            .fetch_one(&mut conn)
            .await
            .map_err(|e| failed(&database, e.to_string()))?;
    if exists {
        return Ok(false);
    }
    let quoted = format!("\"{}\"", database.replace('"', "\"\""));
    let created = sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {quoted}")))
        .execute(&mut conn)
        .await;
    match created {
        Ok(_) => Ok(true),
        // Another demo created it between our check and our CREATE.
        Err(e) if e.as_database_error().and_then(|d| d.code()).as_deref() == Some("42P04") => {
            Ok(false)
        }
        Err(e) => Err(failed(&database, e.to_string())),
    }
}

/// Creates sites `berlin` and `munich`, field `berlin`, department `platform` and the demo
/// accounts, each only if missing, in one transaction with audit events.
pub async fn bootstrap(pool: &PgPool) -> Result<Bootstrap, DemoError> {
    let actor = Actor::system("demo");
    let mut report = Bootstrap::default();
    let mut tx = pool.begin().await?;
    for (name, title) in [("berlin", "Berlin"), ("munich", "Munich")] {
        let (site, created) = org::ensure_unit(&mut tx, UnitKind::Site, name, title).await?;
        if created {
            record(&mut tx, &actor, "site", site.id, &site, &mut report).await?;
        }
    }
    let (field, created) = org::ensure_unit(&mut tx, UnitKind::Field, "berlin", "Berlin").await?;
    if created {
        record(&mut tx, &actor, "field", field.id, &field, &mut report).await?;
    }
    let values = DepartmentValues {
        field_id: field.id,
        name: "platform",
        display_name: "Platform",
        k8s_group: Some("platform-team"),
    };
    let (dept, created) = org::ensure_department(&mut tx, &values).await?;
    if created {
        record(&mut tx, &actor, "department", dept.id, &dept, &mut report).await?;
    }
    for (username, secret, role) in DEMO_ACCOUNTS {
        if users::find_credentials(&mut tx, username).await?.is_some() {
            continue;
        }
        let scope = match role {
            Role::CenterAdmin => Scope::Center,
            Role::FieldAdmin => Scope::Field(field.id),
            Role::TeamLead => Scope::Department(dept.id),
        };
        let hash = password::hash_blocking(secret.to_owned()).await?;
        let new = NewUser { username, password_hash: &hash, role, scope, is_demo: true };
        let user = users::insert(&mut tx, &new).await?;
        record(&mut tx, &actor, "user", user.id, &user, &mut report).await?;
    }
    tx.commit().await?;
    Ok(report)
}

/// What [`seed_capacity`] did.
#[derive(Debug, Default, Serialize, PartialEq, Eq)]
pub struct CapacitySeed {
    pub servers_synced: u64,
    pub servers_assigned: u64,
    pub quota_set: bool,
}

/// Makes the demo ready for the allocation and project flows: syncs the file inventory, gives
/// field `berlin` the first half of berlin's servers (only while it has none), and gives
/// department `platform` half of that capacity as its quota at berlin (only if it has none).
pub async fn seed_capacity(pool: &PgPool, config: &Config) -> Result<CapacitySeed, DemoError> {
    let mut seed = CapacitySeed::default();
    let source = FileInventory { path: config.inventory.file.path.clone() };
    let actor = Actor::system("demo");
    let report = sync_servers::sync(pool, &source, &actor).await.map_err(DemoError::Inventory)?;
    seed.servers_synced = report.added + report.updated + report.unchanged;
    let mut tx = pool.begin().await?;
    let (Some(field), Some(site), Some(dept)) = (
        org::find_unit_by_name(&mut tx, UnitKind::Field, "berlin").await?,
        org::find_unit_by_name(&mut tx, UnitKind::Site, "berlin").await?,
        org::find_department_by_name(&mut tx, "platform").await?,
    ) else {
        return Ok(seed);
    };
    // Server rows first, then the (field, site) lock: the order allocate_servers takes them in.
    servers::lock_site(&mut tx, site.id).await?;
    capacity::lock_field_site(&mut tx, field.id, site.id).await?;
    if servers::count_owned(&mut tx, field.id, site.id).await? == 0 {
        seed.servers_assigned = servers::assign_first_half(&mut tx, field.id, site.id).await?;
        let change =
            Change::new("field", "demo_assign_servers", field.id).after(&seed.servers_assigned);
        audit::record(&mut tx, &actor, change).await?;
    }
    let has_quota = capacity::quotas_at(&mut tx, field.id, site.id)
        .await?
        .iter()
        .any(|q| q.department_id == dept.id);
    if !has_quota {
        let hardware = capacity::field_servers(&mut tx, field.id, site.id).await?;
        let half = crate::domain::capacity::capacity(hardware, config.overcommit());
        let quota = Resources::new(half.cpu / 2, half.ram_gb / 2);
        capacity::set_quota(&mut tx, dept.id, site.id, quota).await?;
        let change = Change::new("department_quota", "set", format!("{}:{}", dept.id, site.id))
            .after(&quota);
        audit::record(&mut tx, &actor, change).await?;
        seed.quota_set = true;
    }
    tx.commit().await?;
    Ok(seed)
}

async fn record<T: Serialize>(
    conn: &mut PgConnection,
    actor: &Actor,
    subject_type: &'static str,
    id: uuid::Uuid,
    value: &T,
    report: &mut Bootstrap,
) -> Result<(), DemoError> {
    audit::record(conn, actor, Change::create(subject_type, id, value)).await?;
    report.created.push(format!("{subject_type} {id}"));
    Ok(())
}
