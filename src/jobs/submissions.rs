//! Writing the jobs of concurrent submissions together.
//!
//! A person's submission costs a statement and a commit: its job, the supersession of the
//! queued jobs it makes pointless and its `job.create` audit event. Under load those
//! statements were most of what PostgreSQL did for a quota change. [`Submissions`] gathers the
//! submissions that arrive while its previous statement is on its way and writes them in one
//! ([`jobs::enqueue_recorded_many`]). Nothing changes for the request: it is answered once the
//! statement holding its job has committed (nothing accepted is lost), and a lone request
//! waits for nothing but its own statement (there is no timer). Changes of one thing (one
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

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use sqlx::PgPool;
use tokio::sync::oneshot;
use tracing::Instrument;

use crate::domain::job::JobStatus;
use crate::jobs::wake::WakeUps;
use crate::store::StoreError;
use crate::store::audit::Actor;
use crate::store::jobs::{self, Enqueued, NewJob};

/// The most submissions one statement writes.
const BATCH: usize = 64;

/// How many statements may be on their way at once: while one commits, the next gathers.
const WRITERS: usize = 2;

/// Writes submissions' jobs, several to a statement under load. The writers are tasks started
/// by submissions, on their runtime, when fewer than [`WRITERS`] are at work; each writes what
/// is waiting, statement after statement, and ends when nothing is left.
pub struct Submissions {
    pool: PgPool,
    wake_ups: Arc<WakeUps>,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    waiting: VecDeque<Pending>,
    writers: usize,
}

/// A submission waiting for its statement.
struct Pending {
    new: NewJob<'static>,
    actor: Actor,
    answer: oneshot::Sender<Result<Enqueued, StoreError>>,
}

impl Submissions {
    pub fn new(pool: PgPool, wake_ups: Arc<WakeUps>) -> Self {
        Self { pool, wake_ups, state: Mutex::new(State::default()) }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Inserts `new` with its `job.create` audit event by `actor` ([`jobs::enqueue_recorded`],
    /// with others' submissions in the same statement): committed once this returns, and its
    /// wake-up sent.
    pub async fn enqueue(
        self: &Arc<Self>,
        new: NewJob<'static>,
        actor: Actor,
    ) -> Result<Enqueued, StoreError> {
        if new.dedupe_key.is_some() {
            return self.write_alone(&new, &actor).await;
        }
        let (answer, answered) = oneshot::channel();
        let writer = {
            let mut state = self.state();
            state.waiting.push_back(Pending { new, actor, answer });
            (state.writers < WRITERS).then(|| {
                state.writers += 1;
                Writer { submissions: Arc::clone(self), ended: false }
            })
        };
        if let Some(writer) = writer {
            tokio::spawn(writer.write_all());
        }
        // Dropped unanswered only when the writers' runtime shut down.
        answered.await.unwrap_or(Err(StoreError::Database(sqlx::Error::WorkerCrashed)))
    }
}

/// A writer at work, counted in [`State::writers`] from before its task starts until it ends,
/// however it ends.
struct Writer {
    submissions: Arc<Submissions>,
    ended: bool,
}

impl Writer {
    /// Writes what is waiting (up to [`BATCH`], oldest first) in one statement, answers, and
    /// again until nothing waits.
    async fn write_all(mut self) {
        while let Some(batch) = self.next_batch() {
            // Named by the requests whose jobs it writes: what it logs tells whose they were.
            let requests: Vec<&str> =
                batch.iter().filter_map(|pending| pending.actor.request_id.as_deref()).collect();
            let span = tracing::info_span!(
                "job_statement",
                submissions = batch.len(),
                requests = requests.join(" ")
            );
            self.submissions.write(batch).instrument(span).await;
        }
    }

    /// The next statement's submissions; none when nothing waits: the writer then ends,
    /// counted off under the same lock, so that a submission arriving now starts another.
    fn next_batch(&mut self) -> Option<Vec<Pending>> {
        let mut state = self.submissions.state();
        if state.waiting.is_empty() {
            state.writers -= 1;
            self.ended = true;
            return None;
        }
        let take = state.waiting.len().min(BATCH);
        Some(state.waiting.drain(..take).collect())
    }
}

impl Drop for Writer {
    /// A writer stopped before its work was done (its runtime shut down): the last one answers
    /// what still waits, rather than leave it waiting for a submission to start another.
    fn drop(&mut self) {
        if self.ended {
            return;
        }
        let mut state = self.submissions.state();
        state.writers -= 1;
        if state.writers == 0 {
            for pending in state.waiting.drain(..) {
                let _ = pending.answer.send(Err(StoreError::Database(sqlx::Error::WorkerCrashed)));
            }
        }
    }
}

impl Submissions {
    /// Writes `batch` in one statement, answers each submission and sends the wake-ups of the
    /// jobs left to run. When PostgreSQL refuses the statement for what a submission holds,
    /// writes each alone; any other failure is every submission's answer.
    async fn write(&self, batch: Vec<Pending>) {
        let written = async {
            let mut conn = self.pool.acquire().await?;
            let submissions: Vec<(&NewJob<'_>, &Actor)> =
                batch.iter().map(|pending| (&pending.new, &pending.actor)).collect();
            jobs::enqueue_recorded_many(&mut conn, &submissions).await
        }
        .await;
        match written {
            Ok(jobs) => {
                let to_run = jobs.iter().filter(|(job, _)| job.status == JobStatus::Queued);
                self.wake_ups.send(to_run.map(|(_, wake_up)| wake_up.clone()));
                for (pending, (job, wake_up)) in batch.into_iter().zip(jobs) {
                    let _ = pending.answer.send(Ok(Enqueued::Created(job, wake_up)));
                }
            }
            Err(err) if batch.len() == 1 => {
                if let Some(pending) = batch.into_iter().next() {
                    let _ = pending.answer.send(Err(err));
                }
            }
            Err(StoreError::Database(err)) if !refused_for_a_value(&err) => {
                let err = Arc::new(err);
                for pending in batch {
                    let _ = pending.answer.send(Err(StoreError::Shared(Arc::clone(&err))));
                }
            }
            Err(err) => {
                tracing::warn!(error = %err, count = batch.len(), "PostgreSQL refused a shared job statement; writing its submissions one by one");
                for pending in batch {
                    let alone = self.write_alone(&pending.new, &pending.actor).await;
                    let _ = pending.answer.send(alone);
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
