//! `allocate_servers`: assigns a server to a field, moves it, or unassigns it, re-checking
//! under the (field, site) lock that the field it leaves still holds its quotas.

use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::PgConnection;
use uuid::Uuid;

use super::{JobError, JobFuture, JobHandler, KindSettings, Outcome};
use crate::config::Config;
use crate::context::Context;
use crate::domain::capacity::{Resources, capacity, check_capacity_drop};
use crate::store::StoreError;
use crate::store::audit::{self, Actor, Change};
use crate::store::capacity as store_capacity;
use crate::store::jobs::Claimed;
use crate::store::org::{self, UnitKind};
use crate::store::servers::{self, Server};

pub const ALLOCATE_SERVERS: &str = "allocate_servers";

/// The job's payload: assign `server_id` to `field_id`, or unassign it when that is null.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Allocation {
    pub server_id: Uuid,
    pub field_id: Option<Uuid>,
}

pub struct AllocateServers;

impl JobHandler for AllocateServers {
    fn kind(&self) -> &'static str {
        ALLOCATE_SERVERS
    }

    fn defaults(&self) -> KindSettings {
        KindSettings { concurrency: 4, ..KindSettings::default() }
    }

    fn run<'a>(&'a self, ctx: &'a Context, job: &'a Claimed) -> JobFuture<'a> {
        Box::pin(async move {
            let allocation: Allocation = serde_json::from_value(job.payload.clone())
                .map_err(|e| JobError::permanent(format!("bad payload: {e}")))?;
            let actor = Actor { user_id: None, name: format!("job:{}", job.id), request_id: None };
            let result = allocate(ctx, &allocation, &actor).await?;
            Ok(Outcome::Done(result))
        })
    }
}

/// Why a server may not leave its field: the quotas left standing, named.
pub async fn check_release(
    conn: &mut PgConnection,
    config: &Config,
    server: &Server,
) -> Result<Result<(), String>, StoreError> {
    let Some(field_id) = server.field_id else { return Ok(Ok(())) };
    let own = if server.status == "active" {
        Resources::new(server.cpu_cores.into(), server.ram_gb.into())
    } else {
        Resources::ZERO
    };
    let remaining = store_capacity::field_servers(conn, field_id, server.site_id).await? - own;
    let quotas = store_capacity::quotas_at(conn, field_id, server.site_id).await?;
    let held: Resources = quotas.iter().map(|q| Resources::new(q.cpu_limit, q.ram_gb_limit)).sum();
    let after = capacity(remaining, config.overcommit());
    Ok(check_capacity_drop(after, held).map_err(|short| {
        let holders: Vec<String> =
            quotas.iter().map(|q| format!("{}: {} CPU / {} GB", q.department, q.cpu_limit, q.ram_gb_limit)).collect();
        format!(
            "taking {} out of field {} would leave {} CPU / {} GB at {} for quotas of {} CPU / {} GB \
             ({}); short by {} CPU / {} GB. Lower those quotas first",
            server.name,
            server.field.as_deref().unwrap_or("?"),
            after.cpu,
            after.ram_gb,
            server.site,
            held.cpu,
            held.ram_gb,
            holders.join(", "),
            short.cpu,
            short.ram_gb
        )
    }))
}

async fn allocate(
    ctx: &Context,
    allocation: &Allocation,
    actor: &Actor,
) -> Result<serde_json::Value, JobError> {
    let mut tx = ctx.pool.begin().await?;
    let before = match servers::lock(&mut tx, allocation.server_id).await {
        Ok(server) => server,
        Err(StoreError::NotFound) => {
            return Err(JobError::permanent("the server no longer exists"));
        }
        Err(other) => return Err(other.into()),
    };
    if before.field_id == allocation.field_id {
        return Ok(
            json!({ "server_id": before.id, "field_id": before.field_id, "unchanged": true }),
        );
    }
    if let Some(field_id) = allocation.field_id {
        if before.status != "active" {
            return Err(JobError::permanent(format!(
                "server {} is {}: only active servers can be assigned",
                before.name, before.status
            )));
        }
        if let Err(StoreError::NotFound) = org::get_unit(&mut tx, UnitKind::Field, field_id).await {
            return Err(JobError::permanent("the field no longer exists"));
        }
    }
    let mut pairs: Vec<Uuid> =
        [before.field_id, allocation.field_id].into_iter().flatten().collect();
    pairs.sort();
    for field_id in pairs {
        store_capacity::lock_field_site(&mut tx, field_id, before.site_id).await?;
    }
    if let Err(reason) = check_release(&mut tx, &ctx.config, &before).await? {
        return Err(JobError::Permanent(reason));
    }
    servers::set_field(&mut tx, before.id, allocation.field_id).await?;
    let after = servers::get(&mut tx, before.id).await?;
    let verb = if allocation.field_id.is_some() { "assign" } else { "unassign" };
    audit::record(
        &mut tx,
        actor,
        Change::new("server", verb, before.id).before(&before).after(&after),
    )
    .await?;
    tx.commit().await?;
    Ok(
        json!({ "server_id": after.id, "field_id": after.field_id, "previous_field_id": before.field_id }),
    )
}
