//! The job engine of one daemon.
//!
//! Per job kind, a dispatcher claims due jobs from PostgreSQL (`FOR UPDATE SKIP LOCKED`, a
//! batch as large as the kind's free slots) under a lease, and hands each claimed attempt to an
//! apalis worker, which runs it with the kind's concurrency. The wake-ups of this daemon's jobs
//! (handed over directly) and a `LISTEN` connection (every daemon's) wake idle dispatchers the
//! moment a job is enqueued, and when a job due later (a retry, a re-scheduled poll, a
//! coalescing delay) falls due; polling every `workers.poll_interval_ms` catches what
//! a lost notification would miss. A keeper renews the leases of running jobs
//! and hands back those of daemons that died. Every outcome is written with a fence on the
//! claim, so a stale worker can never complete a job twice.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use apalis::prelude::*;
use backon::{ExponentialBuilder, Retryable};
use chrono::Utc;
use futures::StreamExt;
use futures::stream::BoxStream;
use sqlx::postgres::PgListener;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tokio::task::JoinHandle;
use tracing::Instrument;
use uuid::Uuid;

use super::{JobError, Outcome, Registered, Registry, wake};
use crate::app::{self, AppError};
use crate::config::redact_credentials;
use crate::context::Context;
use crate::domain::job::backoff;
use crate::store::StoreError;
use crate::store::jobs::{self, Claimed, NOTIFY_CHANNEL, Success};

/// One claimed attempt on its way to an apalis worker. Its `slot` stays taken until the
/// attempt's outcome is recorded, which for a success may be after the worker moved on.
struct Attempt {
    job: Claimed,
    runner: Arc<Runner>,
    slot: OwnedSemaphorePermit,
}

/// Claimed attempts not yet recorded (running, waiting in the local queue, or succeeded and
/// waiting for the completion writer): their leases are renewed, and a shutdown that runs out
/// of grace hands them back.
#[derive(Default)]
struct InFlight(Mutex<HashMap<Uuid, Claimed>>);

impl InFlight {
    fn track(&self, job: &Claimed) {
        if let Ok(mut map) = self.0.lock() {
            map.insert(job.id, job.clone());
        }
    }

    fn untrack(&self, id: Uuid) {
        if let Ok(mut map) = self.0.lock() {
            map.remove(&id);
        }
    }

    fn ids(&self) -> Vec<Uuid> {
        self.0.lock().map(|map| map.keys().copied().collect()).unwrap_or_default()
    }

    fn jobs(&self) -> Vec<Claimed> {
        self.0.lock().map(|map| map.values().cloned().collect()).unwrap_or_default()
    }
}

/// Runs attempts and records their outcomes.
struct Runner {
    ctx: Context,
    registry: Registry,
    owner: Arc<str>,
    /// Successes go to the completion writer, which records whatever has piled up in one
    /// statement (ack batching without added delay) while the worker goes on to its next
    /// attempt; without one they are written directly.
    completions: Option<mpsc::UnboundedSender<Completion>>,
    in_flight: Arc<InFlight>,
}

/// A running engine; [`EngineHandle::shutdown`] drains it.
pub struct EngineHandle {
    owner: Arc<str>,
    stop_claiming: watch::Sender<bool>,
    stop_all: watch::Sender<bool>,
    runner: Arc<Runner>,
    slots: Vec<(Arc<Semaphore>, u32)>,
    tasks: Vec<JoinHandle<()>>,
}

/// Starts dispatchers and apalis workers for every kind with a concurrency above zero.
pub fn start(ctx: Context) -> EngineHandle {
    let registry = (*ctx.registry).clone();
    let owner: Arc<str> = worker_identity().into();
    let settings = ctx.config.workers.clone();
    let lease_secs = settings.lease_secs as f64;
    let poll = Duration::from_millis(settings.poll_interval_ms);
    let (stop_claiming, claiming) = watch::channel(false);
    let (stop_all, all) = watch::channel(false);
    let (completions, completed) = mpsc::unbounded_channel();
    let in_flight = Arc::new(InFlight::default());
    let runner = Arc::new(Runner {
        ctx: ctx.clone(),
        registry: registry.clone(),
        owner: owner.clone(),
        completions: Some(completions),
        in_flight: in_flight.clone(),
    });
    let writer = write_completions(ctx.clone(), owner.clone(), in_flight, completed);
    let mut tasks = vec![tokio::spawn(writer)];
    let mut wakers = HashMap::new();
    let mut slots = Vec::new();
    for (kind, registered) in registry.iter() {
        let concurrency = registered.settings.concurrency;
        if concurrency == 0 {
            continue;
        }
        let wake = Arc::new(Notify::new());
        let (later, alarms) = mpsc::unbounded_channel();
        tasks.push(tokio::spawn(ring_alarms(wake.clone(), alarms)));
        wakers.insert(kind.to_owned(), Waker { now: wake.clone(), later });
        // A slot is held from the claim until the outcome is recorded: `concurrency` of them
        // run in the apalis worker, up to `prefetch` more wait in its queue.
        let held = concurrency.saturating_add(registered.settings.prefetch);
        let semaphore = Arc::new(Semaphore::new(held as usize));
        slots.push((semaphore.clone(), held));
        let (tx, rx) = mpsc::unbounded_channel();
        tasks.push(spawn_worker(&owner, kind, concurrency, rx));
        let dispatcher = Dispatcher {
            kind,
            ctx: ctx.clone(),
            owner: owner.clone(),
            // With a local queue, claim once half of it is free: batches stay large and the
            // other half keeps the workers busy meanwhile. Without one, claim per free slot.
            batch: if held > concurrency { (held / 2).max(1) } else { 1 },
            slots: semaphore,
            wake,
            tx,
            runner: runner.clone(),
            poll,
            lease_secs,
        };
        tasks.push(tokio::spawn(dispatcher.run(claiming.clone())));
    }
    let wakers = Arc::new(wakers);
    let local = ctx.wake_ups.subscribe();
    tasks.push(tokio::spawn(wake_locally(local, wakers.clone(), all.clone())));
    tasks.push(tokio::spawn(listen(ctx.clone(), wakers.clone(), all.clone())));
    tasks.push(tokio::spawn(keep_leases(ctx, runner.clone(), wakers, all)));
    tracing::info!(worker = %owner, "job engine started");
    EngineHandle { owner, stop_claiming, stop_all, runner, slots, tasks }
}

impl EngineHandle {
    /// The identity this daemon claims jobs under.
    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// Stops claiming, lets running attempts finish within `grace`, hands back the ones that
    /// did not (they retry elsewhere at once), then stops the engine's tasks.
    pub async fn shutdown(self, grace: Duration) {
        let _ = self.stop_claiming.send(true);
        let drained = tokio::time::timeout(grace, async {
            for (semaphore, concurrency) in &self.slots {
                let _ = semaphore.acquire_many(*concurrency).await;
            }
        })
        .await;
        if drained.is_err() {
            self.runner.hand_back_in_flight().await;
        }
        let _ = self.stop_all.send(true);
        for task in &self.tasks {
            task.abort();
        }
        // Wait for them to be gone, so nothing of the engine outlives this call.
        for task in self.tasks {
            let _ = task.await;
        }
        tracing::info!(worker = %self.owner, "job engine stopped");
    }
}

/// `host:pid:random`: unique per process, readable in `lease_owner`.
fn worker_identity() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "host".to_owned());
    let random = Uuid::new_v4().simple().to_string();
    format!("{host}:{}:{}", std::process::id(), &random[..8])
}

/// An apalis worker draining one kind's channel with the kind's concurrency.
fn spawn_worker(
    owner: &str,
    kind: &str,
    concurrency: u32,
    rx: mpsc::UnboundedReceiver<Attempt>,
) -> JoinHandle<()> {
    let stream: BoxStream<'static, Result<Attempt, std::io::Error>> =
        futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|a| (Ok(a), rx)) })
            .boxed();
    // Unique per process: apalis accepts duplicate worker names silently.
    let worker = WorkerBuilder::new(format!("{owner}/{kind}"))
        .backend(stream)
        .concurrency(concurrency as usize)
        .build(run_attempt);
    let kind = kind.to_owned();
    tokio::spawn(async move {
        if let Err(err) = worker.run().await {
            tracing::error!(%kind, error = %err, "apalis worker stopped");
        }
    })
}

async fn run_attempt(attempt: Attempt) -> Result<(), std::io::Error> {
    let Attempt { job, runner, slot } = attempt;
    runner.run(job, Some(slot)).await;
    Ok(())
}

struct Dispatcher {
    kind: &'static str,
    ctx: Context,
    owner: Arc<str>,
    /// Free slots wanted before a claim (as long as the queue had work last time).
    batch: u32,
    slots: Arc<Semaphore>,
    wake: Arc<Notify>,
    tx: mpsc::UnboundedSender<Attempt>,
    runner: Arc<Runner>,
    poll: Duration,
    lease_secs: f64,
}

impl Dispatcher {
    /// Claims as many due jobs as there are free slots (once `batch` of them are free), hands
    /// them over, and sleeps until a notification or the poll interval when the queue had
    /// fewer. After a short claim the next one waits for a single free slot, so a lone job
    /// that arrives into an idle queue is claimed at once.
    async fn run(self, mut stop: watch::Receiver<bool>) {
        let mut busy = false;
        loop {
            let wanted = if busy { self.batch } else { 1 };
            let first = tokio::select! {
                biased;
                _ = stop.wait_for(|stop| *stop) => return,
                permit = self.slots.clone().acquire_many_owned(wanted) => match permit {
                    Ok(permit) => permit,
                    Err(_) => return,
                },
            };
            let mut permits = split_permits(first);
            while let Ok(permit) = self.slots.clone().try_acquire_owned() {
                permits.push(permit);
            }
            let wanted = permits.len();
            // Registered before the claim, so a job enqueued during it still wakes us.
            let notified = self.wake.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let claimed = match self.claim(wanted).await {
                Ok(claimed) => claimed,
                Err(err) => {
                    tracing::warn!(kind = self.kind, error = %err, "claiming jobs failed");
                    Vec::new()
                }
            };
            let got = claimed.len();
            busy = got == wanted;
            for job in claimed {
                let Some(slot) = permits.pop() else { break };
                self.runner.in_flight.track(&job);
                let attempt = Attempt { job, runner: self.runner.clone(), slot };
                if self.tx.send(attempt).is_err() {
                    return;
                }
            }
            drop(permits);
            if got < wanted {
                tokio::select! {
                    _ = stop.wait_for(|stop| *stop) => return,
                    () = &mut notified => {}
                    () = tokio::time::sleep(self.poll) => {}
                }
            }
        }
    }

    async fn claim(&self, limit: usize) -> Result<Vec<Claimed>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let mut conn = self.ctx.pool.acquire().await?;
        let limit = i64::try_from(limit).unwrap_or(1);
        jobs::claim(&mut conn, self.kind, &self.owner, self.lease_secs, limit).await
    }
}

/// One permit per slot, so each attempt frees its own.
fn split_permits(mut permit: OwnedSemaphorePermit) -> Vec<OwnedSemaphorePermit> {
    let mut permits = Vec::with_capacity(permit.num_permits());
    while permit.num_permits() > 1 {
        if let Some(one) = permit.split(1) {
            permits.push(one);
        }
    }
    permits.push(permit);
    permits
}

impl Runner {
    /// Runs one attempt and records it; `slot` is freed once it is recorded.
    async fn run(&self, job: Claimed, slot: Option<OwnedSemaphorePermit>) {
        let span =
            tracing::info_span!("job", job_id = %job.id, kind = %job.kind, attempt = job.attempt);
        async {
            let pickup = (Utc::now() - job.due_at).to_std().unwrap_or_default();
            let kind = job.kind.clone();
            metrics::histogram!("infrahub_job_pickup_latency_seconds", "kind" => kind.clone())
                .record(pickup.as_secs_f64());
            let started = Instant::now();
            let registered = self.registry.get(&job.kind).cloned();
            let outcome = match &registered {
                Some(registered) => self.execute(registered, &job).await,
                None => Err(JobError::permanent(format!("unknown job kind `{}`", job.kind))),
            };
            metrics::histogram!("infrahub_job_duration_seconds", "kind" => kind.clone())
                .record(started.elapsed().as_secs_f64());
            let (outcome, kind, slot) = match (outcome, &self.completions) {
                (Ok(Outcome::Done(result)), Some(completions)) => {
                    tracing::debug!(outcome = "succeeded", "attempt finished");
                    let success = Success { id: job.id, claim: job.claim, result };
                    let completion = Completion { success, kind, slot };
                    match completions.send(completion) {
                        Ok(()) => return,
                        // The writer is gone (shutting down): record it here.
                        Err(mpsc::error::SendError(c)) => {
                            (Ok(Outcome::Done(c.success.result)), c.kind, c.slot)
                        }
                    }
                }
                (outcome, _) => (outcome, kind, slot),
            };
            let label = self.record(registered.as_ref(), &job, outcome).await;
            metrics::counter!("infrahub_jobs_total", "kind" => kind, "outcome" => label)
                .increment(1);
            self.in_flight.untrack(job.id);
            drop(slot);
        }
        .instrument(span)
        .await;
    }

    /// Runs the handler in its own task, so a panic or a timeout ends the attempt, not the
    /// worker; the timeout lives here because apalis' own leaves a timed-out job running.
    async fn execute(&self, registered: &Registered, job: &Claimed) -> Result<Outcome, JobError> {
        let handler = registered.handler.clone();
        let ctx = self.ctx.clone();
        let owned = job.clone();
        let mut task = tokio::spawn(
            async move { wake::unit(&ctx.wake_ups, handler.run(&ctx, &owned)).await }
                .instrument(tracing::Span::current()),
        );
        // If this attempt is dropped (the worker stops after the grace period), so is the handler.
        let _abort = AbortOnDrop(task.abort_handle());
        let timeout = registered.settings.timeout;
        match tokio::time::timeout(timeout, &mut task).await {
            Ok(Ok(result)) => result,
            Ok(Err(join)) if join.is_panic() => {
                Err(JobError::permanent("the job handler panicked (a bug; see the logs)"))
            }
            Ok(Err(_)) => Err(JobError::transient("the attempt was cancelled")),
            Err(_) => {
                task.abort();
                Err(JobError::transient(format!(
                    "the attempt timed out after {}s",
                    timeout.as_secs()
                )))
            }
        }
    }

    /// Writes the outcome (retrying the write itself on database errors); returns the metric
    /// label of what happened.
    async fn record(
        &self,
        registered: Option<&Registered>,
        job: &Claimed,
        outcome: Result<Outcome, JobError>,
    ) -> &'static str {
        let (label, write) = match &outcome {
            Ok(Outcome::Done(_)) => ("succeeded", Write::Succeed),
            Ok(Outcome::Reschedule { after, .. }) => {
                ("rescheduled", Write::Reschedule(after_now(*after)))
            }
            Err(JobError::Permanent(_)) => ("failed", Write::Fail(None)),
            Err(JobError::Transient(_)) => match registered {
                Some(r) if r.settings.retries(job.attempt, job.max_attempts, job.created_at) => {
                    let s = r.settings;
                    let wait =
                        backoff(job.attempt as u32, s.backoff_base, s.backoff_max, rand::random());
                    ("retrying", Write::Fail(Some(after_now(wait))))
                }
                _ => ("failed", Write::Fail(None)),
            },
        };
        let outcome = match (outcome, registered.and_then(|r| r.settings.deadline)) {
            (Err(JobError::Transient(why)), Some(deadline)) if label == "failed" => {
                Err(JobError::Transient(format!(
                    "gave up after {} attempts over up to {}s: {why}",
                    job.attempt,
                    deadline.as_secs()
                )))
            }
            (outcome, _) => outcome,
        };
        // Whatever an error quotes (a remote's URL, say), its credentials go no further.
        let outcome = outcome.map_err(|err| match err {
            JobError::Permanent(why) => JobError::Permanent(redact_credentials(&why)),
            JobError::Transient(why) => JobError::Transient(redact_credentials(&why)),
        });
        match &outcome {
            Ok(_) => tracing::debug!(outcome = label, "attempt finished"),
            Err(err) => tracing::warn!(outcome = label, error = %err, "attempt failed"),
        }
        let written = (|| async { self.write(job, &outcome, &write).await })
            .retry(ExponentialBuilder::default().with_jitter().with_max_times(5))
            .when(|e| e.is_transient())
            .await;
        match written {
            Ok(true) => label,
            Ok(false) => {
                tracing::warn!(
                    "the claim was lost (lease expired, cancelled or re-run); result discarded"
                );
                "lost"
            }
            Err(err) => {
                tracing::error!(error = %err, "cannot record the outcome; the lease will expire and the job retry");
                "unrecorded"
            }
        }
    }

    /// Records the outcome, fenced by the claim; a final failure settles the job's subject in
    /// the same transaction.
    async fn write(
        &self,
        job: &Claimed,
        outcome: &Result<Outcome, JobError>,
        write: &Write,
    ) -> Result<bool, AppError> {
        match (outcome, write) {
            (Ok(Outcome::Done(result)), _) => Ok(self.write_success(job, result).await?),
            (Ok(Outcome::Reschedule { progress, .. }), Write::Reschedule(at)) => {
                let mut conn = self.ctx.pool.acquire().await?;
                let written = jobs::reschedule(&mut conn, job, &self.owner, *at, progress).await?;
                drop(conn);
                Ok(self.woke(written))
            }
            (Err(err), Write::Fail(retry_at)) => {
                let error = err.to_string();
                app::jobs::fail_attempt(&self.ctx, job, &self.owner, &error, *retry_at).await
            }
            _ => Ok(false),
        }
    }

    /// Sends the wake-up of a fenced write that went through; whether it did.
    fn woke(&self, written: Option<jobs::Written>) -> bool {
        match written {
            Some(written) => {
                self.ctx.wake_ups.send(written.wake_up);
                true
            }
            None => false,
        }
    }

    /// Records a success directly (without the completion writer).
    async fn write_success(
        &self,
        job: &Claimed,
        result: &serde_json::Value,
    ) -> Result<bool, StoreError> {
        let mut conn = self.ctx.pool.acquire().await?;
        jobs::succeed(&mut conn, job, &self.owner, result).await
    }

    /// After the grace period: every attempt still running is handed back, due at once and
    /// without spending the attempt, for another worker; its handler is aborted when the
    /// worker stops, and a late result would be refused by the fence anyway.
    async fn hand_back_in_flight(&self) {
        for job in self.in_flight.jobs() {
            let message = "interrupted: the daemon shut down before the attempt finished";
            let result = async {
                let mut conn = self.ctx.pool.acquire().await?;
                let written = jobs::release(&mut conn, &job, &self.owner, message).await?;
                Ok::<_, StoreError>(self.woke(written))
            }
            .await;
            if let Err(err) = result {
                tracing::warn!(job_id = %job.id, error = %err, "cannot hand the job back; its lease will expire");
            }
        }
    }
}

/// Aborts a spawned task when dropped.
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// `now + wait`, with absurd waits (a payload's or a misconfiguration's) capped at a year
/// instead of overflowing.
fn after_now(wait: Duration) -> chrono::DateTime<Utc> {
    let year = chrono::TimeDelta::days(365);
    let wait = chrono::TimeDelta::from_std(wait).unwrap_or(year).min(year);
    Utc::now() + wait
}

enum Write {
    Succeed,
    Reschedule(chrono::DateTime<Utc>),
    Fail(Option<chrono::DateTime<Utc>>),
}

/// A successful attempt on its way to the completion writer, with the slot it holds.
struct Completion {
    success: Success,
    kind: String,
    slot: Option<OwnedSemaphorePermit>,
}

/// Records successes: takes everything that is waiting and writes it in one fenced statement
/// (retrying the write on database errors), then frees the attempts' slots. While one write
/// runs the next batch gathers, so the batch grows with the load and a lone job waits for
/// nothing. A success that cannot be recorded keeps its lease until it expires: the job then
/// runs again (handlers are idempotent).
async fn write_completions(
    ctx: Context,
    owner: Arc<str>,
    in_flight: Arc<InFlight>,
    mut completed: mpsc::UnboundedReceiver<Completion>,
) {
    const MAX_BATCH: usize = 256;
    let mut batch: Vec<Completion> = Vec::with_capacity(MAX_BATCH);
    while completed.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let successes: Vec<Success> = batch.iter().map(|c| c.success.clone()).collect();
        let write = || async {
            let mut conn = ctx.pool.acquire().await?;
            Ok::<_, AppError>(jobs::succeed_many(&mut conn, &owner, &successes).await?)
        };
        let written = write
            .retry(ExponentialBuilder::default().with_jitter().with_max_times(5))
            .when(|e| e.is_transient())
            .await
            .map(|ids| ids.into_iter().collect::<std::collections::HashSet<Uuid>>());
        if let Err(err) = &written {
            tracing::error!(count = batch.len(), error = %err, "cannot record successes; their leases will expire and the jobs run again");
        }
        for completion in batch.drain(..) {
            let id = completion.success.id;
            let label = match &written {
                Ok(ids) if ids.contains(&id) => "succeeded",
                Ok(_) => {
                    tracing::warn!(job_id = %id, "the claim was lost (lease expired, cancelled or re-run); result discarded");
                    "lost"
                }
                Err(_) => "unrecorded",
            };
            metrics::counter!("infrahub_jobs_total", "kind" => completion.kind, "outcome" => label)
                .increment(1);
            in_flight.untrack(id);
            drop(completion.slot);
        }
    }
}

/// What wakes one kind's dispatcher: `now`, or an alarm set through `later`.
struct Waker {
    now: Arc<Notify>,
    later: mpsc::UnboundedSender<tokio::time::Instant>,
}

impl Waker {
    fn notify_waiters(&self) {
        self.now.notify_waiters();
    }

    /// Sets an alarm `after` from now: counted from when we learnt of the job (a
    /// notification's arrival, a lookup's answer), it may ring late by that, never early (an
    /// early one would find nothing due, and the job would wait for the poll).
    fn notify_after(&self, after: Duration) {
        if let Some(at) = tokio::time::Instant::now().checked_add(after) {
            let _ = self.later.send(at);
        }
    }
}

/// A notification's payload: the kind, and how long until its job is due when that is later
/// than now (`"allocate_quota 100"`).
fn parse_wake_up(payload: &str) -> (&str, Option<Duration>) {
    match payload.split_once(' ') {
        Some((kind, ms)) => (kind, ms.parse().ok().map(Duration::from_millis)),
        None => (payload, None),
    }
}

/// The most alarms one kind keeps; past that the latest are dropped (the poll finds their
/// jobs, a little late).
const MAX_ALARMS: usize = 4096;

/// Wakes `wake`'s dispatcher at each instant received, earliest first.
async fn ring_alarms(
    wake: Arc<Notify>,
    mut received: mpsc::UnboundedReceiver<tokio::time::Instant>,
) {
    let mut alarms = std::collections::BTreeSet::new();
    loop {
        let next = alarms.first().copied();
        tokio::select! {
            at = received.recv() => match at {
                Some(at) => {
                    alarms.insert(at);
                    if alarms.len() > MAX_ALARMS {
                        alarms.pop_last();
                    }
                }
                None => return,
            },
            () = sleep_until(next) => {
                let now = tokio::time::Instant::now();
                while alarms.first().is_some_and(|at| *at <= now) {
                    alarms.pop_first();
                }
                wake.notify_waiters();
            }
        }
    }
}

/// Sleeps until `at`, or for ever without one.
async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Sets an alarm for each job due later, as if its notification had just arrived.
async fn set_missed_alarms(
    ctx: &Context,
    wakers: &HashMap<String, Waker>,
) -> Result<(), StoreError> {
    let kinds: Vec<&str> = wakers.keys().map(String::as_str).collect();
    let mut conn = ctx.pool.acquire().await?;
    let limit = i64::try_from(MAX_ALARMS).unwrap_or(i64::MAX);
    for (kind, ms) in jobs::due_later(&mut conn, &kinds, limit).await? {
        if let Some(waker) = wakers.get(&kind) {
            waker.notify_after(Duration::from_millis(u64::try_from(ms).unwrap_or(0)));
        }
    }
    Ok(())
}

/// Wakes the dispatcher of a wake-up's kind, or sets its alarm when the job is due later.
fn wake(wakers: &HashMap<String, Waker>, payload: &str) {
    let (kind, after) = parse_wake_up(payload);
    match (wakers.get(kind), after) {
        (Some(waker), Some(after)) => waker.notify_after(after),
        (Some(waker), None) => waker.notify_waiters(),
        (None, _) => {}
    }
}

/// Wakes the dispatchers for the jobs this process made due, without waiting for their
/// notification to come back from PostgreSQL.
async fn wake_locally(
    mut received: mpsc::UnboundedReceiver<jobs::WakeUp>,
    wakers: Arc<HashMap<String, Waker>>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = stop.wait_for(|stop| *stop) => return,
            wake_up = received.recv() => match wake_up {
                Some(wake_up) => wake(&wakers, wake_up.payload()),
                None => return,
            },
        }
    }
}

/// Wakes the dispatcher of a kind when a job of that kind is enqueued anywhere, or sets its
/// alarm when the job is due later.
async fn listen(
    ctx: Context,
    wakers: Arc<HashMap<String, Waker>>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let connected = PgListener::connect_with(&ctx.pool).await.map(|mut listener| {
            // We reconnect ourselves (below), so that we catch up after it.
            listener.eager_reconnect(false);
            listener
        });
        match connected {
            Ok(mut listener) => match listener.listen(NOTIFY_CHANNEL).await {
                Ok(()) => {
                    // What was enqueued while we were not listening: alarms for the jobs due
                    // later (looked up now that nothing more can be missed), and a claim for
                    // those due now.
                    if let Err(err) = set_missed_alarms(&ctx, &wakers).await {
                        tracing::warn!(error = %err, "cannot look up the jobs due later; the poll will find them");
                    }
                    wakers.values().for_each(|w| w.notify_waiters());
                    loop {
                        tokio::select! {
                            _ = stop.wait_for(|stop| *stop) => return,
                            // `try_recv`, not `recv`: a lost connection comes back as
                            // `None` instead of being re-established behind our back, so
                            // what was sent meanwhile is looked up when we listen again.
                            received = listener.try_recv() => match received {
                                Ok(None) => {
                                    tracing::warn!("job notifications interrupted: the connection was lost");
                                    break;
                                }
                                Ok(Some(note)) => wake(&wakers, note.payload()),
                                Err(err) => {
                                    tracing::warn!(error = %err, "job notifications interrupted");
                                    break;
                                }
                            },
                        }
                    }
                }
                Err(err) => tracing::warn!(error = %err, "cannot LISTEN for jobs"),
            },
            Err(err) => tracing::warn!(error = %err, "cannot connect the job listener"),
        }
        tokio::select! {
            _ = stop.wait_for(|stop| *stop) => return,
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

/// Renews the leases of the attempts in flight every third of the lease, hands back jobs of
/// vanished workers, and publishes the queue depth.
async fn keep_leases(
    ctx: Context,
    runner: Arc<Runner>,
    wakers: Arc<HashMap<String, Waker>>,
    mut stop: watch::Receiver<bool>,
) {
    let lease_secs = ctx.config.workers.lease_secs as f64;
    let every = Duration::from_secs_f64((lease_secs / 3.0).max(1.0));
    loop {
        if let Err(err) = keep_once(&ctx, &runner, lease_secs, &wakers).await {
            tracing::warn!(error = %err, "lease upkeep failed");
        }
        tokio::select! {
            _ = stop.wait_for(|stop| *stop) => return,
            () = tokio::time::sleep(every) => {}
        }
    }
}

async fn keep_once(
    ctx: &Context,
    runner: &Runner,
    lease_secs: f64,
    wakers: &HashMap<String, Waker>,
) -> Result<(), AppError> {
    let mut conn = ctx.pool.acquire().await?;
    let in_flight = runner.in_flight.ids();
    if !in_flight.is_empty() {
        jobs::renew_leases(&mut conn, &runner.owner, &in_flight, lease_secs).await?;
    }
    let reaped = app::jobs::reap_expired_leases(ctx).await?;
    if !reaped.is_empty() {
        tracing::warn!(count = reaped.len(), "handed back jobs of workers that stopped answering");
        // The reaper's notification wakes every daemon; this one need not wait for it.
        wakers.values().for_each(|w| w.notify_waiters());
    }
    let depths: HashMap<String, i64> = jobs::queue_depth(&mut conn).await?.into_iter().collect();
    for kind in wakers.keys() {
        let depth = depths.get(kind).copied().unwrap_or(0);
        metrics::gauge!("infrahub_jobs_queue_depth", "kind" => kind.clone()).set(depth as f64);
    }
    Ok(())
}

/// What [`run_due`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Drained {
    /// Attempts run.
    pub attempts: usize,
    /// Whether it stopped because nothing was due any more (rather than after its rounds).
    pub idle: bool,
}

/// Runs every due job of every kind now, in this task, round after round until nothing is
/// due or `rounds` rounds ran: the way tests (and one-off tools) move work on without waiting
/// for the clock. With `advance`, jobs waiting for a retry or a re-scheduled poll are made due
/// at the start of each round, as if their time had come. Attempts are recorded exactly as
/// the engine records them.
pub async fn run_due(ctx: &Context, advance: bool, rounds: usize) -> Result<Drained, StoreError> {
    let owner: Arc<str> = format!("{}/run-due", worker_identity()).into();
    let runner = Runner {
        ctx: ctx.clone(),
        registry: (*ctx.registry).clone(),
        owner: owner.clone(),
        completions: None,
        in_flight: Arc::new(InFlight::default()),
    };
    let lease_secs = ctx.config.workers.lease_secs as f64;
    let mut attempts = 0;
    for _ in 0..rounds {
        let mut claimed = Vec::new();
        {
            let mut conn = ctx.pool.acquire().await?;
            if advance {
                jobs::make_waiting_due(&mut conn).await?;
            }
            for (kind, _) in runner.registry.iter() {
                claimed.extend(jobs::claim(&mut conn, kind, &owner, lease_secs, 1000).await?);
            }
        }
        if claimed.is_empty() {
            return Ok(Drained { attempts, idle: true });
        }
        attempts += claimed.len();
        futures::future::join_all(claimed.into_iter().map(|job| {
            runner.in_flight.track(&job);
            runner.run(job, None)
        }))
        .await;
    }
    Ok(Drained { attempts, idle: false })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wake_up_names_its_kind_and_how_long_until_its_job_is_due() {
        assert_eq!(parse_wake_up("allocate_quota"), ("allocate_quota", None));
        let later = parse_wake_up("allocate_quota 100");
        assert_eq!(later, ("allocate_quota", Some(Duration::from_millis(100))));
        // Something else on the channel is a plain wake-up, never a panic.
        assert_eq!(parse_wake_up("noop soon"), ("noop", None));
    }

    #[tokio::test(start_paused = true)]
    async fn alarms_ring_in_order_of_time_whatever_the_order_they_were_set_in() {
        let wake = Arc::new(Notify::new());
        let (later, alarms) = mpsc::unbounded_channel();
        let ringer = tokio::spawn(ring_alarms(wake.clone(), alarms));
        let start = tokio::time::Instant::now();
        for ms in [300, 100, 200] {
            later.send(start + Duration::from_millis(ms)).unwrap();
        }
        for ms in [100, 200, 300] {
            wake.notified().await;
            let elapsed = start.elapsed();
            assert!(elapsed >= Duration::from_millis(ms), "rang at {elapsed:?}, set for {ms} ms");
            assert!(
                elapsed < Duration::from_millis(ms + 50),
                "rang at {elapsed:?}, set for {ms} ms"
            );
        }
        drop(later);
        ringer.await.unwrap();
    }
}
