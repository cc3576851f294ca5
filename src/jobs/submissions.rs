//! Writing the jobs of concurrent submissions together.
//!
//! A person's submission costs a statement and a commit: its job, the supersession of the
//! queued jobs it makes pointless and its `job.create` audit event. Under load those
//! statements were most of what PostgreSQL did for a quota change. [`Submissions`] gathers the
//! submissions that arrive while its previous statement is on its way and writes them in one
//! ([`jobs::enqueue_recorded_many`], through a [`Gather`]). Nothing changes for the request:
//! it is answered once the statement holding its job has committed (nothing accepted is lost),
//! and a lone request waits for nothing but its own statement (there is no timer). Changes of one thing (one
//! kind and coalesce key) in one statement end as if submitted one after the other: all but
//! the newest are answered `superseded`, naming the next. The wake-ups of a statement's jobs
//! go out once it has committed, whether or not their requests are still waiting.
//!
//! A statement PostgreSQL refuses for what a submission holds (a data or constraint error)
//! writes none of its jobs; each of its submissions is then written alone, so a bad one fails
//! only itself. Any other failure (no connection, the database away, a statement cancelled)
//! is every submission's answer at once.
//!
//! Only submissions outside a transaction come here (those under an `Idempotency-Key` commit
//! with the request's answer); one with a dedupe key is written alone (a conflict is answered
//! with the active job, one at a time).

use std::sync::Arc;

use sqlx::PgPool;
use tracing::Instrument;

use crate::domain::job::JobStatus;
use crate::jobs::wake::WakeUps;
use crate::store::StoreError;
use crate::store::audit::Actor;
use crate::store::gather::{Asked, Gather, Statement, fail_all};
use crate::store::jobs::{self, Enqueued, NewJob};

/// Writes submissions' jobs, several to a statement under load.
pub struct Submissions {
    gather: Gather<JobStatement>,
}

impl Submissions {
    pub fn new(pool: PgPool, wake_ups: Arc<WakeUps>) -> Self {
        Self { gather: Gather::new(JobStatement { pool, wake_ups }) }
    }

    /// Inserts `new` with its `job.create` audit event by `actor` ([`jobs::enqueue_recorded`],
    /// with others' submissions in the same statement): committed once this returns, and its
    /// wake-up sent.
    pub async fn enqueue(
        &self,
        new: NewJob<'static>,
        actor: Actor,
    ) -> Result<Enqueued, StoreError> {
        if new.dedupe_key.is_some() {
            return self.gather.statement().write_alone(&new, &actor).await;
        }
        self.gather.ask((new, actor)).await
    }
}

/// The statement writing submissions' jobs.
struct JobStatement {
    pool: PgPool,
    wake_ups: Arc<WakeUps>,
}

impl Statement for JobStatement {
    type Ask = (NewJob<'static>, Actor);
    type Answer = Enqueued;
    const BATCH: usize = 64;
    /// Two: while one commits, the next gathers; a slow statement does not hold every
    /// submission, and more cores can commit two at once.
    const RUNNERS: usize = 2;

    async fn run(&self, batch: Vec<Asked<Self>>) {
        // Named by the requests whose jobs it writes: what it logs tells whose they were.
        let requests: Vec<&str> =
            batch.iter().filter_map(|asked| asked.ask.1.request_id.as_deref()).collect();
        let span = tracing::info_span!(
            "job_statement",
            submissions = batch.len(),
            requests = requests.join(" ")
        );
        self.write(batch).instrument(span).await;
    }
}

impl JobStatement {
    /// Writes `batch` in one statement, answers each submission and sends the wake-ups of the
    /// jobs left to run. When PostgreSQL refuses the statement for what a submission holds,
    /// writes each alone; any other failure is every submission's answer.
    async fn write(&self, batch: Vec<Asked<Self>>) {
        let written = async {
            let mut conn = self.pool.acquire().await?;
            let submissions: Vec<(&NewJob<'_>, &Actor)> =
                batch.iter().map(|asked| (&asked.ask.0, &asked.ask.1)).collect();
            jobs::enqueue_recorded_many(&mut conn, &submissions).await
        }
        .await;
        match written {
            Ok(jobs) => {
                let to_run = jobs.iter().filter(|(job, _)| job.status == JobStatus::Queued);
                self.wake_ups.send(to_run.map(|(_, wake_up)| wake_up.clone()));
                for (asked, (job, wake_up)) in batch.into_iter().zip(jobs) {
                    asked.answer(Ok(Enqueued::Created(job, wake_up)));
                }
            }
            Err(err) if batch.len() == 1 => {
                if let Some(asked) = batch.into_iter().next() {
                    asked.answer(Err(err));
                }
            }
            Err(StoreError::Database(err)) if !refused_for_a_value(&err) => fail_all(batch, err),
            Err(err) => {
                tracing::warn!(error = %err, count = batch.len(), "PostgreSQL refused a shared job statement; writing its submissions one by one");
                for asked in batch {
                    let (new, actor) = &asked.ask;
                    let alone = self.write_alone(new, actor).await;
                    asked.answer(alone);
                }
            }
        }
    }

    /// Writes one submission in a statement of its own, and sends its wake-up.
    async fn write_alone(&self, new: &NewJob<'_>, actor: &Actor) -> Result<Enqueued, StoreError> {
        let enqueued = jobs::enqueue_recorded(&mut *self.pool.acquire().await?, new, actor).await?;
        self.wake_ups.send(enqueued.wake_up().cloned());
        Ok(enqueued)
    }
}

/// Whether PostgreSQL refused a statement for a value it was given, which one submission may
/// cause alone: a data exception (SQLSTATE class 22) or a broken constraint (class 23). Not a
/// connection that could not be had or was lost, nor a statement cancelled or rolled back.
fn refused_for_a_value(err: &sqlx::Error) -> bool {
    let code = err.as_database_error().and_then(|db| db.code());
    code.is_some_and(|code| code.starts_with("22") || code.starts_with("23"))
}
