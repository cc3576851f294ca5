//! Cron schedules. Every daemon runs the scheduler; a tick fires only where inserting its
//! `cron_ticks` row succeeds, so N daemons produce one job per tick. On start, a schedule that
//! missed ticks while every daemon was down fires once for the latest of them.

use std::str::FromStr;

use chrono::{DateTime, Utc};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use uuid::Uuid;

use super::Job;
use super::prune::PruneJobs;
use super::read_usage::ReadUsage;
use super::reconcile::Reconcile;
use super::resync::Resync;
use super::sync_servers::SyncServers;
use crate::app::{self, AppError};
use crate::config::ScheduleConfig;
use crate::context::Context;

/// One schedule: its name (the `schedule.<name>` key), the kind it enqueues, when.
#[derive(Debug, Clone)]
pub struct Entry {
    pub name: String,
    pub kind: &'static str,
    pub schedule: cron::Schedule,
}

impl Entry {
    pub fn new(
        name: &str,
        kind: &'static str,
        expression: &str,
    ) -> Result<Self, cron::error::Error> {
        Ok(Self { name: name.to_owned(), kind, schedule: cron::Schedule::from_str(expression)? })
    }
}

/// The job kind each `schedule.<name>` starts.
fn kind_of(schedule: &str) -> Option<&'static str> {
    match schedule {
        "server_sync" => Some(SyncServers::KIND),
        "resync" => Some(Resync::KIND),
        "prune_jobs" => Some(PruneJobs::KIND),
        "reconcile" => Some(Reconcile::KIND),
        "usage" => Some(ReadUsage::KIND),
        _ => None,
    }
}

/// The schedules of the configuration (validated when it was loaded).
pub fn configured(schedule: &ScheduleConfig) -> Vec<Entry> {
    schedule
        .entries()
        .into_iter()
        .filter_map(|(name, expr)| Entry::new(name, kind_of(name)?, expr).ok())
        .collect()
}

/// Runs every entry until `stop` turns true.
pub fn spawn(
    ctx: Context,
    entries: Vec<Entry>,
    stop: watch::Receiver<bool>,
) -> Vec<JoinHandle<()>> {
    entries
        .into_iter()
        .map(|entry| tokio::spawn(run_entry(ctx.clone(), entry, stop.clone())))
        .collect()
}

async fn run_entry(ctx: Context, entry: Entry, mut stop: watch::Receiver<bool>) {
    if let Err(err) = catch_up(&ctx, &entry, Utc::now()).await {
        tracing::warn!(schedule = %entry.name, error = %err, "cron catch-up failed");
    }
    loop {
        let Some(next) = entry.schedule.after(&Utc::now()).next() else { return };
        let wait = (next - Utc::now()).to_std().unwrap_or_default();
        tokio::select! {
            _ = stop.wait_for(|stop| *stop) => return,
            () = tokio::time::sleep(wait) => {}
        }
        if let Err(err) = fire(&ctx, &entry, next).await {
            tracing::warn!(schedule = %entry.name, %next, error = %err, "cron tick failed");
        }
    }
}

/// The latest tick after `last` that is due by `now`, if any.
pub fn latest_due(
    schedule: &cron::Schedule,
    last: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    schedule.after(&last).take_while(|tick| *tick <= now).take(1_000_000).last()
}

/// Fires the latest missed tick once, when the schedule has fired before and missed some.
pub async fn catch_up(
    ctx: &Context,
    entry: &Entry,
    now: DateTime<Utc>,
) -> Result<Option<Uuid>, AppError> {
    let Some(last) = app::jobs::last_tick(ctx, &entry.name).await? else {
        // Never fired: there is nothing to catch up, only to start recording from now.
        return Ok(None);
    };
    match latest_due(&entry.schedule, last, now) {
        Some(tick) => {
            tracing::info!(schedule = %entry.name, %tick, "catching up a missed cron tick");
            fire(ctx, entry, tick).await
        }
        None => Ok(None),
    }
}

/// Enqueues the job of `tick` unless another daemon already fired it; returns the job.
pub async fn fire(
    ctx: &Context,
    entry: &Entry,
    tick: DateTime<Utc>,
) -> Result<Option<Uuid>, AppError> {
    let fired = app::jobs::fire_tick(ctx, &entry.name, entry.kind, tick).await?;
    if let Some(job_id) = fired {
        tracing::info!(schedule = %entry.name, %tick, %job_id, "cron tick fired");
    }
    Ok(fired)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn every_schedule_of_the_configuration_starts_a_kind() {
        let entries = configured(&ScheduleConfig::default());
        let kinds: Vec<(&str, &str)> = entries.iter().map(|e| (e.name.as_str(), e.kind)).collect();
        assert_eq!(
            kinds,
            [
                ("server_sync", "sync_servers"),
                ("resync", "resync"),
                ("prune_jobs", "prune_jobs"),
                ("reconcile", "reconcile"),
                ("usage", "read_usage")
            ]
        );
    }

    #[test]
    fn latest_due_picks_only_the_newest_missed_tick() {
        let hourly = cron::Schedule::from_str("0 0 * * * *").unwrap();
        let last = at("2026-01-01T10:00:00Z");
        assert_eq!(latest_due(&hourly, last, at("2026-01-01T10:59:59Z")), None);
        assert_eq!(
            latest_due(&hourly, last, at("2026-01-01T11:00:00Z")),
            Some(at("2026-01-01T11:00:00Z"))
        );
        assert_eq!(
            latest_due(&hourly, last, at("2026-01-01T15:30:00Z")),
            Some(at("2026-01-01T15:00:00Z"))
        );
    }
}
