//! Whether this daemon can do its work: what `/readyz` reports.

use sqlx::PgPool;

use crate::context::Context;
use crate::store;

/// Ready when the database answers on each of the three pools requests use (the main one,
/// the gathers' [`Context::gathers_pool`], and [`Context::locks`], which requests with an
/// Idempotency-Key and deliveries hold locks on) and every migration of this binary is
/// applied; otherwise the reason. The three are asked at once.
pub async fn readiness(ctx: &Context) -> Result<(), String> {
    let named = |pool: &'static str| move |err: sqlx::Error| (pool, err);
    let checked = tokio::try_join!(
        async { store::schema_is_current(&ctx.pool).await.map_err(named("main")) },
        async { answers(&ctx.gathers_pool).await.map_err(named("gathers")) },
        async { answers(&ctx.locks).await.map_err(named("locks")) },
    );
    match checked {
        Ok((true, ..)) => Ok(()),
        Ok((false, ..)) => Err("database migrations are pending".to_owned()),
        Err((pool, err)) => {
            tracing::warn!(pool, error = %err, "readiness check failed");
            Err("database unreachable".to_owned())
        }
    }
}

async fn answers(pool: &PgPool) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT 1").execute(pool).await.map(drop)
}

/// A Prometheus gauge family in text format, written by hand: these are read from the
/// database at each scrape, so a label set that no longer exists simply disappears.
struct Family {
    name: &'static str,
    help: &'static str,
    samples: String,
}

impl Family {
    fn new(name: &'static str, help: &'static str) -> Self {
        Self { name, help, samples: String::new() }
    }

    fn sample(&mut self, labels: &[(&str, &str)], value: f64) {
        let labels: Vec<String> = labels
            .iter()
            .map(|(key, value)| {
                let escaped = value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n");
                format!("{key}=\"{escaped}\"")
            })
            .collect();
        match labels.is_empty() {
            true => self.samples.push_str(&format!("{} {value}\n", self.name)),
            false => {
                self.samples.push_str(&format!("{}{{{}}} {value}\n", self.name, labels.join(",")))
            }
        }
    }

    fn write(self, out: &mut String) {
        out.push_str(&format!("# HELP {0} {1}\n# TYPE {0} gauge\n", self.name, self.help));
        out.push_str(&self.samples);
    }
}

/// The gauges read from the database at scrape time: the job backlog (ready, scheduled,
/// running, age of the oldest ready job), projects per status (and the age of the oldest),
/// servers per site and status, each field's capacity, allocation and deficit per site, and
/// each department's quota and use per site. `infrahub_database_up` says whether they could be
/// read.
pub async fn gauges(ctx: &Context) -> String {
    let read = tokio::time::timeout(std::time::Duration::from_secs(5), read_gauges(ctx));
    let (mut out, up) = match read.await {
        Ok(Ok(out)) => (out, 1.0),
        Ok(Err(err)) => {
            tracing::warn!(error = %err, "metrics: database gauges not read");
            (String::new(), 0.0)
        }
        Err(_) => {
            tracing::warn!("metrics: database gauges timed out");
            (String::new(), 0.0)
        }
    };
    let mut family = Family::new(
        "infrahub_database_up",
        "whether the database answered this scrape (1) or not (0)",
    );
    family.sample(&[], up);
    family.write(&mut out);
    out
}

async fn read_gauges(ctx: &Context) -> Result<String, store::StoreError> {
    use crate::domain::capacity::{Resources, capacity};
    use store::stats;

    let mut conn = ctx.pool.acquire().await?;
    let backlog = stats::job_backlog(&mut conn).await?;
    let projects = stats::projects_by_status(&mut conn).await?;
    let servers = stats::servers_by_status(&mut conn).await?;
    let fields = stats::field_sites(&mut conn).await?;
    let departments = stats::department_sites(&mut conn).await?;
    drop(conn);

    let mut jobs = Family::new("infrahub_jobs", "jobs waiting or running, by kind and state");
    let mut age = Family::new(
        "infrahub_jobs_oldest_ready_age_seconds",
        "how long the oldest job that is due has waited for a worker",
    );
    for row in &backlog {
        for (state, value) in
            [("ready", row.ready), ("scheduled", row.scheduled), ("running", row.running)]
        {
            jobs.sample(&[("kind", &row.kind), ("state", state)], value as f64);
        }
        age.sample(&[("kind", &row.kind)], row.oldest_ready_secs);
    }
    let mut count =
        Family::new("infrahub_projects", "projects by status (deleted and rejected ones left out)");
    let mut oldest = Family::new(
        "infrahub_projects_oldest_in_status_seconds",
        "how long the project longest in a status has been in it",
    );
    for row in &projects {
        count.sample(&[("status", &row.status)], row.count as f64);
        oldest.sample(&[("status", &row.status)], row.oldest_secs);
    }
    let mut inventory = Family::new("infrahub_servers", "servers by site, status and assignment");
    for row in &servers {
        let assigned = if row.assigned { "true" } else { "false" };
        let labels = [("site", row.site.as_str()), ("status", &row.status), ("assigned", assigned)];
        inventory.sample(&labels, row.count as f64);
    }
    let overcommit = ctx.config.capacity.overcommit();
    let mut cap = Family::new(
        "infrahub_field_capacity",
        "what a field can promise at a site (its active servers times the overcommit)",
    );
    let mut alloc =
        Family::new("infrahub_field_allocated", "the sum of a field's department quotas at a site");
    let mut deficit = Family::new(
        "infrahub_field_deficit",
        "quotas above capacity (0 while the invariant holds)",
    );
    for row in &fields {
        let promised = capacity(Resources::new(row.active_cpu, row.active_ram_gb), overcommit);
        let given = Resources::new(row.allocated_cpu, row.allocated_ram_gb);
        let short = (given - promised).positive_part();
        for (resource, can, has, missing) in [
            ("cpu", promised.cpu, given.cpu, short.cpu),
            ("ram_gb", promised.ram_gb, given.ram_gb, short.ram_gb),
        ] {
            let labels =
                [("field", row.field.as_str()), ("site", &row.site), ("resource", resource)];
            cap.sample(&labels, can as f64);
            alloc.sample(&labels, has as f64);
            deficit.sample(&labels, missing as f64);
        }
    }
    let mut quota = Family::new("infrahub_department_quota", "a department's quota at a site");
    let mut used =
        Family::new("infrahub_department_used", "what a department's projects reserve at a site");
    for row in &departments {
        for (resource, q, u) in
            [("cpu", row.quota_cpu, row.used_cpu), ("ram_gb", row.quota_ram_gb, row.used_ram_gb)]
        {
            let labels = [
                ("field", row.field.as_str()),
                ("department", &row.department),
                ("site", &row.site),
                ("resource", resource),
            ];
            quota.sample(&labels, q as f64);
            used.sample(&labels, u as f64);
        }
    }
    let mut out = String::new();
    for family in [jobs, age, count, oldest, inventory, cap, alloc, deficit, quota, used] {
        family.write(&mut out);
    }
    Ok(out)
}
