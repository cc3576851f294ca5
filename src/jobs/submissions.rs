//! Writing the jobs of concurrent submissions together.
//!
//! A person's submission costs a statement and a commit: its job, the supersession of the
//! queued jobs it makes pointless and its `job.create` audit event. Under load those
//! statements were most of what PostgreSQL did for a quota change. [`Submissions`] gathers the
//! submissions that arrive while its previous statement is on its way and writes them in one
//! ([`jobs::enqueue_recorded_many`], through a [`Gather`]). Nothing changes for the request:
//! it is answered once the statement holding its job has committed (nothing accepted is lost),
//! and a lone request waits for nothing but its own statement (there is no timer); one the
//! daemon dropped (its client gone) before its statement started is not written (nothing was
//! answered).
//! Changes of one thing (one kind and coalesce key) in one statement end as if submitted one
//! after the other: all but the newest are answered `superseded`, naming the next. The
//! wake-ups of a statement's jobs go out once it has committed, whether or not their requests
//! are still waiting.
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
use crate::store::gather::{
    self, Alone, Asked, Gather, Statement, Unreachable, fail_all, one_by_one, refused_for_a_value,
};
use crate::store::jobs::{self, Enqueued, NewJob};

/// Writes submissions' jobs, several to a statement under load. Cheap to clone: clones share
/// the statements.
#[derive(Clone)]
pub struct Submissions {
    gather: Gather<JobStatement>,
    /// Where a submission with a dedupe key is written, alone: its insert may wait for a
    /// concurrent transaction holding the same key, which must not hold the gathers' few
    /// connections.
    pool: PgPool,
}

impl Submissions {
    /// The connections of [`gather::pool`] its statements may hold at once.
    pub const CONNECTIONS: u32 = gather::runners::<JobStatement>();

    /// Shared statements run on `shared` (the gathers' pool, [`crate::store::gather::pool`]),
    /// submissions with a dedupe key on `pool`.
    pub fn new(pool: PgPool, shared: PgPool, wake_ups: Arc<WakeUps>) -> Self {
        Self { gather: Gather::new(JobStatement { pool: shared, wake_ups }), pool }
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
            return self.gather.statement().write_alone(&self.pool, &new, &actor).await;
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

    async fn run(&self, batch: Vec<Asked<Self>>) -> Option<Unreachable> {
        // Named by the requests whose jobs it writes: what it logs tells whose they were.
        let requests: Vec<&str> =
            batch.iter().filter_map(|asked| asked.ask.1.request_id.as_deref()).collect();
        let span = tracing::info_span!(
            "job_statement",
            submissions = batch.len(),
            requests = requests.join(" ")
        );
        self.write(batch).instrument(span).await
    }
}

impl Alone for JobStatement {
    /// Writes one submission in a statement of its own, and sends its wake-up.
    async fn alone(&self, (new, actor): &Self::Ask) -> Result<Enqueued, StoreError> {
        self.write_alone(&self.pool, new, actor).await
    }
}

impl JobStatement {
    /// Writes `batch` in one statement, answers each submission and sends the wake-ups of the
    /// jobs left to run. When PostgreSQL refuses the statement for what a submission holds,
    /// writes each alone; any other failure is every submission's answer.
    async fn write(&self, batch: Vec<Asked<Self>>) -> Option<Unreachable> {
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
                None
            }
            Err(StoreError::Database(err)) if batch.len() == 1 || !refused_for_a_value(&err) => {
                fail_all(batch, err)
            }
            Err(err) if batch.len() == 1 => {
                if let Some(asked) = batch.into_iter().next() {
                    asked.answer(Err(err));
                }
                None
            }
            Err(err) => {
                tracing::warn!(error = %err, count = batch.len(), "PostgreSQL refused a shared job statement; writing its submissions one by one");
                one_by_one(self, batch).await
            }
        }
    }

    /// Writes one submission in a statement of its own, and sends its wake-up.
    async fn write_alone(
        &self,
        pool: &PgPool,
        new: &NewJob<'_>,
        actor: &Actor,
    ) -> Result<Enqueued, StoreError> {
        let enqueued = jobs::enqueue_recorded(&mut *pool.acquire().await?, new, actor).await?;
        self.wake_ups.send(enqueued.wake_up().cloned());
        Ok(enqueued)
    }
}
