//! The job table: enqueue (with dedupe keys), claim under a lease, fenced
//! completion, durable retries, cancellation, the lease reaper, listing and pruning.

use std::borrow::Cow;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sqlx::PgConnection;
use uuid::Uuid;

use super::audit::Actor;
use super::{Page, PageRequest, StoreError};
use crate::domain::job::JobStatus;
use crate::domain::scope::{Owner, Scope};

/// PostgreSQL channel that wakes idle dispatchers. The payload is a [`WakeUp`].
pub const NOTIFY_CHANNEL: &str = "infrahub_jobs";

/// What wakes the dispatchers of a job's kind: the kind alone when the job is due now, the kind,
/// `' '` and the milliseconds left when it is due later (`"allocate_quota 100"`), so idle
/// dispatchers wake when it falls due rather than at their next poll. The statements that make
/// a job due return it; it is sent ([`wake`]) once their transaction has committed, never
/// inside it: a transaction that notifies holds PostgreSQL's database-wide notification lock
/// from its commit until its WAL is flushed, so every one of them would commit alone.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, sqlx::Type)]
#[sqlx(transparent)]
pub struct WakeUp(String);

impl WakeUp {
    /// The wake-up of a job of `kind` due now.
    pub fn now(kind: &str) -> Self {
        Self(kind.to_owned())
    }

    pub fn payload(&self) -> &str {
        &self.0
    }
}

/// The [`WakeUp`] of a job of kind `$kind` due at `$run_at` (SQL expressions). The milliseconds
/// are counted from the statement's clock; the alarm is set when the notification arrives,
/// after the commit: it may ring late by that, never before the job is due.
macro_rules! wake_up {
    ($kind:literal, $run_at:literal) => {
        concat!(
            "(",
            $kind,
            " || CASE WHEN ",
            $run_at,
            " > clock_timestamp() THEN ' ' || ceil(extract(epoch FROM ",
            $run_at,
            " - clock_timestamp()) * 1000)::int8 ELSE '' END)"
        )
    };
}

/// Sends `wake_ups` to the dispatchers of every daemon, in a statement of its own (outside any
/// transaction: it changes no table, so its commit does not wait for a WAL flush).
pub async fn wake(conn: &mut PgConnection, wake_ups: &[WakeUp]) -> Result<(), StoreError> {
    if wake_ups.is_empty() {
        return Ok(());
    }
    sqlx::query("SELECT pg_notify($2, payload) FROM unnest($1::text[]) AS payload")
        .bind(wake_ups)
        .bind(NOTIFY_CHANNEL)
        .execute(conn)
        .await?;
    Ok(())
}

/// A job as the API reports it (read back from JSON where a statement returns it beside
/// another row: [`super::projects::create_many`]).
#[derive(Debug, Clone, Serialize, Deserialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Job {
    pub id: Uuid,
    pub kind: String,
    #[sqlx(try_from = "String")]
    pub status: JobStatus,
    #[schema(value_type = Object)]
    pub payload: Value,
    pub subject_type: Option<String>,
    pub subject_id: Option<String>,
    pub attempts: i32,
    pub max_attempts: i32,
    /// When the next attempt may start (queued and retrying jobs).
    pub next_run_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    /// Every failed attempt: `{attempt, at, error, permanent}`.
    #[schema(value_type = Vec<Object>)]
    pub errors: Value,
    #[schema(value_type = Option<Object>)]
    pub result: Option<Value>,
    pub submitted_by: Option<Uuid>,
    pub submitted_by_name: String,
}

pub struct NewJob<'a> {
    pub kind: &'a str,
    pub payload: Value,
    pub subject: Option<(&'a str, String)>,
    /// Whose thing the job is about: its field's and department's people may see it.
    pub scope: Owner,
    pub submitted_by: Option<Uuid>,
    pub submitted_by_name: Cow<'a, str>,
    pub max_attempts: i32,
    /// Not before this instant (cron catch-up, delayed work); now when absent.
    pub run_at: Option<DateTime<Utc>>,
    /// While a job of this kind with this key is active, submissions return it instead.
    pub dedupe_key: Option<String>,
    /// Queued jobs of this kind with this key are superseded by this one.
    pub coalesce_key: Option<String>,
    /// Without `run_at`: due this long after now (or, with a coalesce key, when the oldest
    /// job it supersedes was due, if that is sooner).
    pub delay: std::time::Duration,
}

impl<'a> NewJob<'a> {
    /// A job with no subject, scope, submitter account, delay or keys: set those as needed.
    pub fn new(
        kind: &'a str,
        payload: Value,
        submitted_by_name: impl Into<Cow<'a, str>>,
        max_attempts: i32,
    ) -> Self {
        Self {
            kind,
            payload,
            subject: None,
            scope: Owner::default(),
            submitted_by: None,
            submitted_by_name: submitted_by_name.into(),
            max_attempts,
            run_at: None,
            dedupe_key: None,
            coalesce_key: None,
            delay: std::time::Duration::ZERO,
        }
    }
}

/// The job a submission resulted in.
#[derive(Debug, Clone)]
pub enum Enqueued {
    /// A new job, with the wake-up to send once the transaction has committed.
    Created(Job, WakeUp),
    /// The active job with the same dedupe key.
    Existing(Job),
}

impl Enqueued {
    pub fn job(&self) -> &Job {
        match self {
            Enqueued::Created(job, _) | Enqueued::Existing(job) => job,
        }
    }

    pub fn into_job(self) -> Job {
        match self {
            Enqueued::Created(job, _) | Enqueued::Existing(job) => job,
        }
    }

    /// What to send once the transaction has committed: nothing for an existing job.
    pub fn wake_up(&self) -> Option<&WakeUp> {
        match self {
            Enqueued::Created(_, wake_up) => Some(wake_up),
            Enqueued::Existing(_) => None,
        }
    }
}

/// Inserts the job, or returns the active job that its dedupe key points at. Safe under
/// concurrent submissions. Send its wake-up ([`Enqueued::wake_up`]) after the commit.
#[tracing::instrument(skip_all, fields(kind = new.kind))]
pub async fn enqueue(conn: &mut PgConnection, new: &NewJob<'_>) -> Result<Enqueued, StoreError> {
    insert(conn, new, None).await
}

/// [`enqueue`], and when a new job is made, its `job.create` audit event by `actor` in the
/// same statement: what a person's submission costs is one round trip, and the job and its
/// event commit together (on a connection outside a transaction, at once). The event is
/// filed under the job's field (its scope's field, or its department's).
#[tracing::instrument(skip_all, fields(kind = new.kind))]
pub async fn enqueue_recorded(
    conn: &mut PgConnection,
    new: &NewJob<'_>,
    actor: &Actor,
) -> Result<Enqueued, StoreError> {
    insert(conn, new, Some(actor)).await
}

// The statements of `insert`: one round trip each, with only the parts a job needs, so a plain
// job pays for no supersession and no audit event. Parameters: $1–$13 the row, $14 the delay
// in seconds (when `$11`, the run time, is absent), $15–$17 the actor (id, name, request id).
macro_rules! enqueue_insert {
    ($due:expr) => {
        concat!(
            "ins AS (
             INSERT INTO jobs (id, kind, payload, subject_type, subject_id, scope_field_id,
                               scope_department_id, submitted_by, submitted_by_name,
                               max_attempts, run_at, dedupe_key, coalesce_key)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, coalesce($11, ",
            $due,
            "), $12, $13)
             ON CONFLICT DO NOTHING
             RETURNING *)"
        )
    };
}

/// Due after the delay.
macro_rules! enqueue_plain {
    () => {
        concat!("WITH ", enqueue_insert!("now() + make_interval(secs => $14::float8)"))
    };
}

/// When a job that supersedes queued ones of its key is due: after its delay (`$delay`, in
/// seconds) or when the earliest of them was (`$earliest`), whichever comes first.
macro_rules! due_superseding {
    ($delay:literal, $earliest:literal) => {
        concat!("least(now() + make_interval(secs => ", $delay, "), ", $earliest, ")")
    };
}

/// The columns of a job superseded by `$by`: over, naming the job that took its place.
macro_rules! superseded_by {
    ($by:literal) => {
        concat!(
            "status = 'superseded', finished_at = now(), updated_at = now(),
             result = jsonb_build_object('superseded_by', ",
            $by,
            ")"
        )
    };
}

/// The queued older jobs of the key are locked first: the new job is due after the delay or
/// when the oldest of them was, whichever comes first (so a key changed again and again within
/// the delay is still applied once per delay, never put off for good), and they end
/// `superseded`. (They are locked even if the insert conflicted, until the caller's
/// transaction ends: only a dedupe key could make it conflict, and kinds that coalesce have
/// none.)
macro_rules! enqueue_superseding {
    () => {
        concat!(
            "WITH older AS (
                 SELECT id, run_at FROM jobs
                  WHERE kind = $2 AND coalesce_key = $13 AND status IN ('queued', 'retrying')
                    AND id < $1
                    FOR UPDATE SKIP LOCKED), ",
            enqueue_insert!(due_superseding!("$14::float8", "(SELECT min(run_at) FROM older)")),
            ", sup AS (
                 UPDATE jobs SET ",
            superseded_by!("$1::uuid"),
            "
                  WHERE id IN (SELECT id FROM older) AND status IN ('queued', 'retrying')
                    AND EXISTS (SELECT 1 FROM ins)
                 RETURNING 1)"
        )
    };
}

/// The `job.create` audit event of each new job (`ins`), by the actor whose id, name and
/// request id are `$actor_id`, `$actor` and `$request_id` (SQL expressions over `$from`).
macro_rules! enqueue_record {
    ($actor_id:literal, $actor:literal, $request_id:literal, $from:literal) => {
        concat!(
            ", recorded AS (
                 INSERT INTO audit_events (actor_id, actor, action, subject_type, subject_id,
                                           after, request_id, field_ids)
                 SELECT ",
            $actor_id,
            ", ",
            $actor,
            ", 'job.create', 'job', ins.id::text,
                        jsonb_build_object(
                            'id', ins.id, 'kind', ins.kind, 'status', ins.status,
                            'payload', ins.payload, 'subject_type', ins.subject_type,
                            'subject_id', ins.subject_id, 'attempts', ins.attempts,
                            'max_attempts', ins.max_attempts,
                            'next_run_at', ",
            utc_text!("CASE WHEN ins.status IN ('queued', 'retrying') THEN ins.run_at END"),
            ",
                            'created_at', ",
            utc_text!("ins.created_at"),
            ",
                            'started_at', ",
            utc_text!("ins.started_at"),
            ",
                            'finished_at', ",
            utc_text!("ins.finished_at"),
            ",
                            'last_error', ins.last_error, 'errors', ins.errors,
                            'result', ins.result, 'submitted_by', ins.submitted_by,
                            'submitted_by_name', ins.submitted_by_name),
                        ",
            $request_id,
            ",
                        array_remove(ARRAY[coalesce(ins.scope_field_id,
                            (SELECT d.field_id FROM departments d
                              WHERE d.id = ins.scope_department_id))], NULL)
                   FROM ",
            $from,
            ")"
        )
    };
}

macro_rules! enqueue_answer {
    ($superseded:literal) => {
        concat!(
            " SELECT ",
            job_columns!(),
            ", ",
            $superseded,
            " AS superseded, ",
            wake_up!("ins.kind", "ins.run_at"),
            " AS wake_up FROM ins"
        )
    };
}

const ENQUEUE: &str = concat!(enqueue_plain!(), enqueue_answer!("0::int8"));
const ENQUEUE_COALESCING: &str =
    concat!(enqueue_superseding!(), enqueue_answer!("(SELECT count(*) FROM sup)"));
const ENQUEUE_RECORDED: &str = concat!(
    enqueue_plain!(),
    enqueue_record!("$15", "$16", "$17", "ins"),
    enqueue_answer!("0::int8")
);
const ENQUEUE_COALESCING_RECORDED: &str = concat!(
    enqueue_superseding!(),
    enqueue_record!("$15", "$16", "$17", "ins"),
    enqueue_answer!("(SELECT count(*) FROM sup)")
);

async fn insert(
    conn: &mut PgConnection,
    new: &NewJob<'_>,
    actor: Option<&Actor>,
) -> Result<Enqueued, StoreError> {
    // A conflict means another submission holds the key; re-read it (it may have just finished,
    // freeing the dedupe key, hence the second round).
    for _ in 0..3 {
        // One round trip: the row, the supersession of the queued jobs it makes pointless
        // (only when it carries a coalesce key), the audit event (only with an actor), and the
        // wake-up to send after the commit. Nothing of that happens when a dedupe key
        // conflicts.
        let sql = match (new.coalesce_key.is_some(), actor.is_some()) {
            (false, false) => ENQUEUE,
            (true, false) => ENQUEUE_COALESCING,
            (false, true) => ENQUEUE_RECORDED,
            (true, true) => ENQUEUE_COALESCING_RECORDED,
        };
        let query = sqlx::query_as(sql)
            .bind(Uuid::now_v7())
            .bind(new.kind)
            .bind(&new.payload)
            .bind(new.subject.as_ref().map(|s| s.0))
            .bind(new.subject.as_ref().map(|s| s.1.as_str()))
            .bind(new.scope.field_id)
            .bind(new.scope.department_id)
            .bind(new.submitted_by)
            .bind(new.submitted_by_name.as_ref())
            .bind(new.max_attempts)
            .bind(new.run_at)
            .bind(new.dedupe_key.as_deref())
            .bind(new.coalesce_key.as_deref())
            .bind(new.delay.as_secs_f64());
        let query = match actor {
            Some(actor) => query
                .bind(actor.user_id)
                .bind(actor.name.as_str())
                .bind(actor.request_id.as_deref()),
            None => query,
        };
        let inserted: Option<Inserted> = query.fetch_optional(&mut *conn).await?;
        if let Some(Inserted { job, superseded, wake_up }) = inserted {
            if superseded > 0 {
                metrics::counter!("infrahub_jobs_superseded_total", "kind" => new.kind.to_owned())
                    .increment(superseded as u64);
            }
            return Ok(Enqueued::Created(job, wake_up));
        }
        if let Some(key) = &new.dedupe_key {
            let active: Option<Job> = sqlx::query_as(concat!(
                "SELECT ",
                job_columns!(),
                " FROM jobs WHERE kind = $1 AND dedupe_key = $2
                   AND status IN ('queued', 'running', 'retrying')"
            ))
            .bind(new.kind)
            .bind(key)
            .fetch_optional(&mut *conn)
            .await?;
            if let Some(job) = active {
                return Ok(Enqueued::Existing(job));
            }
        }
    }
    Err(StoreError::Duplicate { constraint: "jobs_active_dedupe_key".to_owned() })
}

/// A row [`enqueue`] inserted, and how many queued jobs it superseded: the older (by id,
/// which orders jobs by creation) queued or retrying (not running) jobs of its kind and
/// coalesce key end `superseded`, with
/// `{"superseded_by": <it>}` as their result. A job a worker has already claimed is running
/// and left alone (the claim skips rows locked here, and this skips rows the claim moved on).
/// Rows another transaction holds locked (a concurrent submission superseding them, a claim)
/// are skipped rather than waited for: submissions of one key never queue behind each other's
/// commits. Two that race may both stay queued (neither sees the other's uncommitted row);
/// the next submission supersedes both, and the applying jobs order themselves by
/// `claim_change`, so the newest value wins either way. Only older ids are superseded: a
/// submission whose statement commits after a newer one's must not retire the newer one.
#[derive(sqlx::FromRow)]
struct Inserted {
    #[sqlx(flatten)]
    job: Job,
    superseded: i64,
    wake_up: WakeUp,
}

/// [`enqueue_recorded`] for several submissions in one statement, each by its own actor: their
/// jobs, the supersessions and the audit events commit together (on a connection outside a
/// transaction, at once), at the cost of one round trip and one commit for all of them. None
/// may carry a dedupe key. Submissions of one kind and coalesce key end as if made one after
/// the other in `batch`'s order: the first supersedes the queued jobs of its key, each of the
/// others the one before it (made `superseded` as it is inserted, its audit event saying so),
/// and the last stays queued, due when the earliest job it took the place of was, or after
/// its delay. Returns each submission's job and wake-up, in order; when the statement fails,
/// none was made.
#[tracing::instrument(skip_all, fields(count = batch.len()))]
pub async fn enqueue_recorded_many(
    conn: &mut PgConnection,
    batch: &[(&NewJob<'_>, &Actor)],
) -> Result<Vec<(Job, WakeUp)>, StoreError> {
    if batch.iter().any(|(new, _)| new.dedupe_key.is_some()) {
        let why = "a job with a dedupe key is enqueued alone (`enqueue_recorded`)";
        return Err(StoreError::Database(sqlx::Error::InvalidArgument(why.to_owned())));
    }
    // UUIDv7s made in one process are ordered by their making: the batch's order.
    let ids: Vec<Uuid> = batch.iter().map(|_| Uuid::now_v7()).collect();
    let rows: Vec<Inserted> = sqlx::query_as(concat!(
        "WITH given AS (
             SELECT * FROM unnest($1::uuid[], $2::text[], $3::jsonb[], $4::text[], $5::text[],
                                  $6::uuid[], $7::uuid[], $8::uuid[], $9::text[], $10::int4[],
                                  $11::timestamptz[], $12::text[], $13::float8[], $14::uuid[],
                                  $15::text[], $16::text[])
                 AS n(id, kind, payload, subject_type, subject_id, scope_field_id,
                      scope_department_id, submitted_by, submitted_by_name, max_attempts,
                      run_at, coalesce_key, delay, actor_id, actor, request_id)),
         new AS (
             SELECT n.*,
                    CASE WHEN n.coalesce_key IS NOT NULL THEN lag(n.id) OVER key END AS prior_id,
                    CASE WHEN n.coalesce_key IS NOT NULL THEN lead(n.id) OVER key END AS next_id
               FROM given n
             WINDOW key AS (PARTITION BY n.kind, n.coalesce_key ORDER BY n.id)),
         older AS (
             SELECT j.id, j.run_at, n.kind, n.coalesce_key, n.id AS by
               FROM new n JOIN jobs j ON j.kind = n.kind AND j.coalesce_key = n.coalesce_key
              WHERE n.prior_id IS NULL AND j.status IN ('queued', 'retrying') AND j.id < n.id
                FOR UPDATE OF j SKIP LOCKED),
         ins AS (
             INSERT INTO jobs (id, kind, payload, subject_type, subject_id, scope_field_id,
                               scope_department_id, submitted_by, submitted_by_name,
                               max_attempts, run_at, coalesce_key, status, finished_at, result)
             SELECT n.id, n.kind, n.payload, n.subject_type, n.subject_id, n.scope_field_id,
                    n.scope_department_id, n.submitted_by, n.submitted_by_name, n.max_attempts,
                    coalesce(n.run_at, ",
        due_superseding!(
            "n.delay",
            "(SELECT min(o.run_at) FROM older o
               WHERE o.kind = n.kind AND o.coalesce_key = n.coalesce_key)"
        ),
        "),
                    n.coalesce_key,
                    CASE WHEN n.next_id IS NULL THEN 'queued' ELSE 'superseded' END,
                    CASE WHEN n.next_id IS NOT NULL THEN now() END,
                    CASE WHEN n.next_id IS NOT NULL
                         THEN jsonb_build_object('superseded_by', n.next_id) END
               FROM new n
             RETURNING *),
         sup AS (
             UPDATE jobs SET ",
        superseded_by!("older.by"),
        "
               FROM older
              WHERE jobs.id = older.id AND jobs.status IN ('queued', 'retrying')
             RETURNING older.by)",
        enqueue_record!("n.actor_id", "n.actor", "n.request_id", "ins JOIN new n ON n.id = ins.id"),
        enqueue_answer!(
            "(SELECT count(*) FROM sup WHERE sup.by = ins.id) + (ins.status = 'superseded')::int4"
        )
    ))
    .bind(&ids)
    .bind(batch.iter().map(|(new, _)| new.kind).collect::<Vec<_>>())
    .bind(batch.iter().map(|(new, _)| &new.payload).collect::<Vec<_>>())
    .bind(batch.iter().map(|(new, _)| new.subject.as_ref().map(|s| s.0)).collect::<Vec<_>>())
    .bind(
        batch.iter().map(|(new, _)| new.subject.as_ref().map(|s| s.1.as_str())).collect::<Vec<_>>(),
    )
    .bind(batch.iter().map(|(new, _)| new.scope.field_id).collect::<Vec<_>>())
    .bind(batch.iter().map(|(new, _)| new.scope.department_id).collect::<Vec<_>>())
    .bind(batch.iter().map(|(new, _)| new.submitted_by).collect::<Vec<_>>())
    .bind(batch.iter().map(|(new, _)| new.submitted_by_name.as_ref()).collect::<Vec<_>>())
    .bind(batch.iter().map(|(new, _)| new.max_attempts).collect::<Vec<_>>())
    .bind(batch.iter().map(|(new, _)| new.run_at).collect::<Vec<_>>())
    .bind(batch.iter().map(|(new, _)| new.coalesce_key.as_deref()).collect::<Vec<_>>())
    .bind(batch.iter().map(|(new, _)| new.delay.as_secs_f64()).collect::<Vec<_>>())
    .bind(batch.iter().map(|(_, actor)| actor.user_id).collect::<Vec<_>>())
    .bind(batch.iter().map(|(_, actor)| actor.name.as_str()).collect::<Vec<_>>())
    .bind(batch.iter().map(|(_, actor)| actor.request_id.as_deref()).collect::<Vec<_>>())
    .fetch_all(conn)
    .await?;
    let mut by_id: std::collections::HashMap<Uuid, Inserted> =
        rows.into_iter().map(|row| (row.job.id, row)).collect();
    ids.iter()
        .zip(batch)
        .map(|(id, (new, _))| {
            let Inserted { job, superseded, wake_up } = by_id.remove(id).ok_or_else(|| {
                StoreError::Database(sqlx::Error::Decode(
                    format!("job {id} was not returned").into(),
                ))
            })?;
            if superseded > 0 {
                metrics::counter!("infrahub_jobs_superseded_total", "kind" => new.kind.to_owned())
                    .increment(superseded as u64);
            }
            Ok((job, wake_up))
        })
        .collect()
}

/// A claimed attempt: what a worker needs to run it and to report back (fenced by `claim`).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Claimed {
    pub id: Uuid,
    pub kind: String,
    pub payload: Value,
    pub subject_type: Option<String>,
    pub subject_id: Option<String>,
    pub attempt: i32,
    pub max_attempts: i32,
    pub claim: i32,
    /// When the job was due: pickup latency is measured from here.
    pub due_at: DateTime<Utc>,
    /// When the job was submitted.
    pub created_at: DateTime<Utc>,
}

/// Claims up to `limit` due jobs of `kind` for `owner` until `lease_secs` from now. One kind
/// per query (`kind = $1`, not `= ANY`) lets PostgreSQL walk `jobs_ready_idx` in order
/// instead of sorting every ready job.
#[tracing::instrument(skip_all, fields(owner, limit))]
pub async fn claim(
    conn: &mut PgConnection,
    kind: &str,
    owner: &str,
    lease_secs: f64,
    limit: i64,
) -> Result<Vec<Claimed>, StoreError> {
    Ok(sqlx::query_as(
        "WITH next AS (
             SELECT id, run_at FROM jobs
              WHERE kind = $1 AND status IN ('queued', 'retrying') AND run_at <= now()
              ORDER BY run_at, id
              LIMIT $4
              FOR UPDATE SKIP LOCKED)
         UPDATE jobs AS j
            SET status = 'running', attempts = j.attempts + 1, claim_seq = j.claim_seq + 1,
                lease_owner = $2, lease_expires_at = now() + make_interval(secs => $3),
                started_at = coalesce(j.started_at, now()), updated_at = now()
           FROM next
          WHERE j.id = next.id
      RETURNING j.id, j.kind, j.payload, j.subject_type, j.subject_id, j.attempts AS attempt,
                j.max_attempts, j.claim_seq AS claim, next.run_at AS due_at, j.created_at",
    )
    .bind(kind)
    .bind(owner)
    .bind(lease_secs)
    .bind(limit)
    .fetch_all(conn)
    .await?)
}

/// Makes every job that waits for a retry or a re-scheduled poll due now, as if its time had
/// come (for running all pending work at once, e.g. in tests); returns how many.
pub async fn make_waiting_due(conn: &mut PgConnection) -> Result<u64, StoreError> {
    let done = sqlx::query(
        "UPDATE jobs SET run_at = now()
          WHERE status IN ('queued', 'retrying') AND run_at > now()",
    )
    .execute(conn)
    .await?;
    Ok(done.rows_affected())
}

/// Extends the leases of the listed jobs `owner` is still running; returns how many. Only
/// attempts in flight are listed, so a claim whose outcome could not be written expires and
/// the job is handed back.
pub async fn renew_leases(
    conn: &mut PgConnection,
    owner: &str,
    ids: &[Uuid],
    lease_secs: f64,
) -> Result<u64, StoreError> {
    let done = sqlx::query(
        "UPDATE jobs SET lease_expires_at = now() + make_interval(secs => $2)
          WHERE status = 'running' AND lease_owner = $1 AND id = ANY($3)",
    )
    .bind(owner)
    .bind(lease_secs)
    .bind(ids)
    .execute(conn)
    .await?;
    Ok(done.rows_affected())
}

/// A fenced write of an attempt's outcome that went through, and the wake-up to send once it
/// has committed when it made the job due again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    pub wake_up: Option<WakeUp>,
}

/// Hands an interrupted attempt back to the queue, due now, without spending the attempt (the
/// interruption is noted among the errors). None when the claim was already lost.
pub async fn release(
    conn: &mut PgConnection,
    attempt: &Claimed,
    owner: &str,
    why: &str,
) -> Result<Option<Written>, StoreError> {
    let sql = format!(
        concat!(
            "UPDATE jobs SET status = 'queued', attempts = attempts - 1, run_at = now(),
                         errors = errors || jsonb_build_array($4::jsonb),
                         lease_owner = NULL, lease_expires_at = NULL, updated_at = now()
          WHERE {fence}
      RETURNING ",
            wake_up!("kind", "run_at")
        ),
        fence = FENCE
    );
    let entry = json!({ "attempt": attempt.attempt, "at": Utc::now(), "error": why, "permanent": false, "interrupted": true });
    let wake_up: Option<WakeUp> = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
        .bind(attempt.id)
        .bind(attempt.claim)
        .bind(owner)
        .bind(entry)
        .fetch_optional(conn)
        .await?;
    Ok(wake_up.map(|w| Written { wake_up: Some(w) }))
}

/// A job whose worker vanished, as the reaper handed it back.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Reaped {
    #[sqlx(flatten)]
    pub job: Claimed,
    /// It had no attempts left: it failed for good.
    pub failed: bool,
    /// To send after the commit when it retries.
    pub wake_up: Option<WakeUp>,
}

/// Jobs whose worker vanished (lease expired): the lost attempt counts as a failure; the job
/// retries at once (send the wake-ups after the commit), or fails when it has no attempts
/// left.
pub async fn reap_expired_leases(conn: &mut PgConnection) -> Result<Vec<Reaped>, StoreError> {
    Ok(sqlx::query_as(concat!(
        "UPDATE jobs SET
             status = CASE WHEN attempts >= max_attempts THEN 'failed' ELSE 'retrying' END,
             finished_at = CASE WHEN attempts >= max_attempts THEN now() END,
             run_at = now(), lease_owner = NULL, lease_expires_at = NULL, updated_at = now(),
             last_error = 'the worker running attempt ' || attempts || ' stopped answering (lease expired)',
             errors = errors || jsonb_build_array(jsonb_build_object(
                 'attempt', attempts, 'at', now(), 'permanent', false,
                 'error', 'the worker stopped answering (lease expired)'))
          WHERE status = 'running' AND lease_expires_at < now()
      RETURNING id, kind, payload, subject_type, subject_id, attempts AS attempt, max_attempts,
                claim_seq AS claim, run_at AS due_at, created_at, status = 'failed' AS failed,
                CASE WHEN status = 'retrying' THEN ",
        wake_up!("kind", "run_at"),
        " END AS wake_up"
    ),
    )
    .fetch_all(conn)
    .await?)
}

/// The fence: the row must still carry this worker's claim.
const FENCE: &str = "id = $1 AND claim_seq = $2 AND lease_owner = $3 AND status = 'running'";

/// Marks the attempt succeeded; false when the claim was lost (the job was reaped, re-run or
/// cancelled meanwhile), in which case nothing changes.
pub async fn succeed(
    conn: &mut PgConnection,
    attempt: &Claimed,
    owner: &str,
    result: &Value,
) -> Result<bool, StoreError> {
    let sql = format!(
        "UPDATE jobs SET status = 'succeeded', result = $4, finished_at = now(), updated_at = now(),
                         lease_owner = NULL, lease_expires_at = NULL
          WHERE {FENCE}"
    );
    let done = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(attempt.id)
        .bind(attempt.claim)
        .bind(owner)
        .bind(result)
        .execute(conn)
        .await?;
    Ok(done.rows_affected() == 1)
}

/// Records a failed attempt. With `retry_at` and attempts left, the job waits in `retrying`
/// until then (its wake-up says when it will be due); otherwise it fails for good. None when
/// the claim was lost.
pub async fn fail(
    conn: &mut PgConnection,
    attempt: &Claimed,
    owner: &str,
    error: &str,
    retry_at: Option<DateTime<Utc>>,
) -> Result<Option<Written>, StoreError> {
    let sql = format!(
        concat!(
            "UPDATE jobs SET
             status = CASE WHEN $5::timestamptz IS NOT NULL AND attempts < max_attempts
                           THEN 'retrying' ELSE 'failed' END,
             run_at = coalesce($5, run_at),
             finished_at = CASE WHEN $5::timestamptz IS NOT NULL AND attempts < max_attempts
                                THEN NULL ELSE now() END,
             last_error = $4,
             errors = errors || jsonb_build_array($6::jsonb),
             lease_owner = NULL, lease_expires_at = NULL, updated_at = now()
          WHERE {fence}
      RETURNING CASE WHEN status = 'retrying' THEN ",
            wake_up!("kind", "run_at"),
            " END"
        ),
        fence = FENCE
    );
    let entry = json!({
        "attempt": attempt.attempt, "at": Utc::now(), "error": error, "permanent": retry_at.is_none(),
    });
    let written: Option<Option<WakeUp>> = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
        .bind(attempt.id)
        .bind(attempt.claim)
        .bind(owner)
        .bind(error)
        .bind(retry_at)
        .bind(entry)
        .fetch_optional(conn)
        .await?;
    Ok(written.map(|wake_up| Written { wake_up }))
}

/// Puts a polling job back in the queue until `run_at` without spending an attempt, keeping
/// what it reported so far as its result (its wake-up says when it will be due). None when the
/// claim was lost.
pub async fn reschedule(
    conn: &mut PgConnection,
    attempt: &Claimed,
    owner: &str,
    run_at: DateTime<Utc>,
    progress: &Value,
) -> Result<Option<Written>, StoreError> {
    let sql = format!(
        concat!(
            "UPDATE jobs SET status = 'queued', attempts = attempts - 1, run_at = $4, result = $5,
                         lease_owner = NULL, lease_expires_at = NULL, updated_at = now()
          WHERE {fence}
      RETURNING ",
            wake_up!("kind", "run_at")
        ),
        fence = FENCE
    );
    let wake_up: Option<WakeUp> = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
        .bind(attempt.id)
        .bind(attempt.claim)
        .bind(owner)
        .bind(run_at)
        .bind(progress)
        .fetch_optional(conn)
        .await?;
    Ok(wake_up.map(|w| Written { wake_up: Some(w) }))
}

impl Job {
    /// The job as its kind's code sees a claimed attempt (for settling it outside an attempt,
    /// e.g. when it is cancelled).
    pub fn as_claimed(&self) -> Claimed {
        Claimed {
            id: self.id,
            kind: self.kind.clone(),
            payload: self.payload.clone(),
            subject_type: self.subject_type.clone(),
            subject_id: self.subject_id.clone(),
            attempt: self.attempts,
            max_attempts: self.max_attempts,
            claim: 0,
            due_at: self.created_at,
            created_at: self.created_at,
        }
    }
}

/// Cancels a queued or retrying job. `None`: no such job; `Err(status)`: not cancellable.
pub async fn cancel(
    conn: &mut PgConnection,
    id: Uuid,
) -> Result<Option<Result<Job, JobStatus>>, StoreError> {
    let cancelled: Option<Job> = sqlx::query_as(concat!(
        "UPDATE jobs SET status = 'cancelled', finished_at = now(), updated_at = now()
          WHERE id = $1 AND status IN ('queued', 'retrying')
      RETURNING ",
        job_columns!()
    ))
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?;
    if let Some(job) = cancelled {
        return Ok(Some(Ok(job)));
    }
    Ok(find(conn, id).await?.map(|job| Err(job.status)))
}

pub async fn find(conn: &mut PgConnection, id: Uuid) -> Result<Option<Job>, StoreError> {
    Ok(sqlx::query_as(concat!("SELECT ", job_columns!(), " FROM jobs WHERE id = $1"))
        .bind(id)
        .fetch_optional(conn)
        .await?)
}

/// Who is asking: the jobs in the scope (everything for center admins), and the user's own
/// submissions.
#[derive(Debug, Clone, Copy)]
pub struct Visibility {
    pub user: Uuid,
    pub scope: Scope,
}

/// The job, when it exists and `who` may see it.
pub async fn find_visible(
    conn: &mut PgConnection,
    id: Uuid,
    who: Visibility,
) -> Result<Option<Job>, StoreError> {
    Ok(sqlx::query_as(concat!(
        "SELECT ",
        job_columns!(),
        " FROM jobs WHERE id = $1 AND ($2 OR submitted_by = $3
              OR scope_field_id = $4 OR scope_department_id = $5)"
    ))
    .bind(id)
    .bind(who.scope.reaches_everything())
    .bind(who.user)
    .bind(who.scope.field_id())
    .bind(who.scope.department_id())
    .fetch_optional(conn)
    .await?)
}

#[derive(Debug, Default, Clone)]
pub struct JobFilter {
    pub kind: Option<String>,
    pub status: Option<JobStatus>,
    /// `type:id`, e.g. `project:0192…`, or just an id.
    pub subject: Option<String>,
}

/// Newest first.
pub async fn list_visible(
    conn: &mut PgConnection,
    who: Visibility,
    filter: &JobFilter,
    page: PageRequest,
) -> Result<Page<Job>, StoreError> {
    let (subject_type, subject_id) = match filter.subject.as_deref().map(|s| s.split_once(':')) {
        Some(Some((kind, id))) => (Some(kind.to_owned()), Some(id.to_owned())),
        Some(None) => (None, filter.subject.clone()),
        None => (None, None),
    };
    let rows = sqlx::query_as(concat!(
        "SELECT ",
        job_columns!(),
        " FROM jobs
          WHERE ($1::uuid IS NULL OR id < $1)
            AND ($3 OR submitted_by = $4 OR scope_field_id = $5 OR scope_department_id = $6)
            AND ($7::text IS NULL OR kind = $7)
            AND ($8::text IS NULL OR status = $8)
            AND ($9::text IS NULL OR subject_type = $9)
            AND ($10::text IS NULL OR subject_id = $10)
          ORDER BY id DESC LIMIT $2"
    ))
    .bind(page.after)
    .bind(page.fetch_limit())
    .bind(who.scope.reaches_everything())
    .bind(who.user)
    .bind(who.scope.field_id())
    .bind(who.scope.department_id())
    .bind(filter.kind.as_deref())
    .bind(filter.status.map(JobStatus::as_str))
    .bind(subject_type)
    .bind(subject_id)
    .fetch_all(conn)
    .await?;
    Ok(Page::from_rows(rows, page, |j: &Job| j.id))
}

/// Deletes finished jobs older than `older_than_secs`; returns how many.
pub async fn prune_finished(
    conn: &mut PgConnection,
    older_than_secs: f64,
) -> Result<u64, StoreError> {
    // A job finished before the cutoff was created before it, so its id (UUIDv7, time first)
    // is below the smallest id of the cutoff's millisecond: the primary key finds them.
    let cutoff = Utc::now() - chrono::TimeDelta::milliseconds((older_than_secs * 1000.0) as i64);
    let done = sqlx::query(
        "DELETE FROM jobs WHERE id < $2 AND finished_at < now() - make_interval(secs => $1)",
    )
    .bind(older_than_secs)
    .bind(first_id_at(cutoff))
    .execute(conn)
    .await?;
    Ok(done.rows_affected())
}

/// The smallest UUIDv7 of the millisecond of `at`: every job id made before it is smaller.
fn first_id_at(at: DateTime<Utc>) -> Uuid {
    let ms = u128::from(at.timestamp_millis().max(0) as u64) & ((1 << 48) - 1);
    Uuid::from_u128((ms << 80) | (0x7 << 76) | (0b10 << 62))
}

/// Ready jobs per kind, for the queue-depth gauge.
pub async fn queue_depth(conn: &mut PgConnection) -> Result<Vec<(String, i64)>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT kind, count(*) FROM jobs
          WHERE status IN ('queued', 'retrying') AND run_at <= now() GROUP BY kind",
    )
    .fetch_all(conn)
    .await?)
}

/// Records that `schedule` fired for `tick`; false when another daemon already did.
pub async fn record_tick(
    conn: &mut PgConnection,
    schedule: &str,
    tick: DateTime<Utc>,
) -> Result<bool, StoreError> {
    let done = sqlx::query(
        "INSERT INTO cron_ticks (schedule, tick) VALUES ($1, $2) ON CONFLICT DO NOTHING",
    )
    .bind(schedule)
    .bind(tick)
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

pub async fn set_tick_job(
    conn: &mut PgConnection,
    schedule: &str,
    tick: DateTime<Utc>,
    job: Uuid,
) -> Result<(), StoreError> {
    sqlx::query("UPDATE cron_ticks SET job_id = $3 WHERE schedule = $1 AND tick = $2")
        .bind(schedule)
        .bind(tick)
        .bind(job)
        .execute(conn)
        .await?;
    Ok(())
}

/// The latest tick `schedule` fired for, if it ever did.
pub async fn last_tick(
    conn: &mut PgConnection,
    schedule: &str,
) -> Result<Option<DateTime<Utc>>, StoreError> {
    Ok(sqlx::query_scalar("SELECT max(tick) FROM cron_ticks WHERE schedule = $1")
        .bind(schedule)
        .fetch_one(conn)
        .await?)
}

/// Deletes cron ticks older than `older_than_secs`, keeping each schedule's latest.
pub async fn prune_ticks(conn: &mut PgConnection, older_than_secs: f64) -> Result<u64, StoreError> {
    let done = sqlx::query(
        "DELETE FROM cron_ticks t
          WHERE tick < now() - make_interval(secs => $1)
            AND tick < (SELECT max(tick) FROM cron_ticks l WHERE l.schedule = t.schedule)",
    )
    .bind(older_than_secs)
    .execute(conn)
    .await?;
    Ok(done.rows_affected())
}

/// Inserts `count` copies of `new` in one statement (no dedupe key applies); returns how many
/// were inserted and the one wake-up to send for them all after the commit.
pub async fn enqueue_batch(
    conn: &mut PgConnection,
    new: &NewJob<'_>,
    count: usize,
) -> Result<(u64, WakeUp), StoreError> {
    let ids: Vec<Uuid> = (0..count).map(|_| Uuid::now_v7()).collect();
    let (inserted, wake_up): (i64, WakeUp) = sqlx::query_as(concat!(
        "WITH ins AS (
             INSERT INTO jobs (id, kind, payload, subject_type, subject_id, scope_field_id,
                               scope_department_id, submitted_by, submitted_by_name,
                               max_attempts, run_at)
             SELECT id, $2, $3, $4, $5, $6, $7, $8, $9, $10,
                    coalesce($11, now() + make_interval(secs => $12::float8))
               FROM unnest($1::uuid[]) AS id
             RETURNING 1)
         SELECT (SELECT count(*) FROM ins), ",
        wake_up!(
            "$2::text",
            "coalesce($11::timestamptz, now() + make_interval(secs => $12::float8))"
        )
    ))
    .bind(&ids)
    .bind(new.kind)
    .bind(&new.payload)
    .bind(new.subject.as_ref().map(|s| s.0))
    .bind(new.subject.as_ref().map(|s| s.1.as_str()))
    .bind(new.scope.field_id)
    .bind(new.scope.department_id)
    .bind(new.submitted_by)
    .bind(new.submitted_by_name.as_ref())
    .bind(new.max_attempts)
    .bind(new.run_at)
    .bind(new.delay.as_secs_f64())
    .fetch_one(conn)
    .await?;
    Ok((u64::try_from(inserted).unwrap_or(0), wake_up))
}

/// How long until each job of `kinds` that is due later falls due, in milliseconds, the
/// soonest `limit` of each kind: what a listener that just started missed.
pub async fn due_later(
    conn: &mut PgConnection,
    kinds: &[&str],
    limit: i64,
) -> Result<Vec<(String, i64)>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT k.kind, ceil(extract(epoch FROM j.run_at - clock_timestamp()) * 1000)::int8
           FROM unnest($1::text[]) AS k(kind)
          CROSS JOIN LATERAL (
                SELECT run_at FROM jobs
                 WHERE kind = k.kind AND status IN ('queued', 'retrying') AND run_at > now()
                 ORDER BY run_at, id
                 LIMIT $2) AS j",
    )
    .bind(kinds)
    .bind(limit)
    .fetch_all(conn)
    .await?)
}

/// One successful attempt waiting to be recorded.
#[derive(Debug, Clone)]
pub struct Success {
    pub id: Uuid,
    pub claim: i32,
    pub result: Value,
}

/// Records many successes of `owner` in one statement, each fenced by its claim like
/// [`succeed`]; returns the ids that were recorded (the others had lost their claim).
pub async fn succeed_many(
    conn: &mut PgConnection,
    owner: &str,
    batch: &[Success],
) -> Result<Vec<Uuid>, StoreError> {
    let ids: Vec<Uuid> = batch.iter().map(|s| s.id).collect();
    let claims: Vec<i32> = batch.iter().map(|s| s.claim).collect();
    let results: Vec<Value> = batch.iter().map(|s| s.result.clone()).collect();
    Ok(sqlx::query_scalar(
        "UPDATE jobs AS j
            SET status = 'succeeded', result = b.result, finished_at = now(), updated_at = now(),
                lease_owner = NULL, lease_expires_at = NULL
           FROM unnest($1::uuid[], $2::int4[], $3::jsonb[]) AS b(id, claim, result)
          WHERE j.id = b.id AND j.claim_seq = b.claim AND j.lease_owner = $4 AND j.status = 'running'
      RETURNING j.id",
    )
    .bind(&ids)
    .bind(&claims)
    .bind(&results)
    .bind(owner)
    .fetch_all(conn)
    .await?)
}

/// Records that job `job` applies its change to `(kind, key)`, unless a newer job (a later
/// UUIDv7) already did: then false, and the caller leaves the thing as the newer job set it.
/// Run it in the change's transaction, after the lock that serializes changes of that thing.
pub async fn claim_change(
    conn: &mut PgConnection,
    kind: &str,
    key: &str,
    job: Uuid,
) -> Result<bool, StoreError> {
    let recorded: Option<Uuid> = sqlx::query_scalar(
        "INSERT INTO applied_changes (kind, key, job_id) VALUES ($1, $2, $3)
         ON CONFLICT (kind, key) DO UPDATE SET job_id = excluded.job_id, applied_at = now()
            WHERE applied_changes.job_id < excluded.job_id
         RETURNING job_id",
    )
    .bind(kind)
    .bind(key)
    .bind(job)
    .fetch_optional(conn)
    .await?;
    Ok(recorded.is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_id_of_a_millisecond_orders_job_ids_by_creation() {
        let at = Utc::now();
        let first = first_id_at(at);
        assert_eq!(first.get_version_num(), 7);
        let later = Uuid::now_v7();
        assert!(later >= first, "{later} was made after {at}");
        let earlier = first_id_at(at - chrono::TimeDelta::milliseconds(1));
        assert!(earlier < first);
        let ts = first.get_timestamp().expect("a v7 id carries its time").to_unix();
        assert_eq!(ts.0 as i64 * 1000 + i64::from(ts.1 / 1_000_000), at.timestamp_millis());
    }
}
