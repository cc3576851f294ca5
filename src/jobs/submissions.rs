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
//! the newest are answered `superseded`, naming the next. A statement that fails writes none
//! of its jobs; each of its submissions is then written alone, so one bad submission fails
//! only itself.
//!
//! Only submissions outside a transaction come here (those under an `Idempotency-Key` commit
//! with the request's answer), and none with a dedupe key (whose conflict is answered with the
//! active job, one at a time).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use sqlx::PgPool;
use tokio::sync::oneshot;

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
    pub fn new(pool: PgPool) -> Self {
        Self { pool, state: Mutex::new(State::default()) }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Inserts `new` with its `job.create` audit event by `actor`, committed once this returns
    /// ([`jobs::enqueue_recorded`], with others' submissions in the same statement).
    pub async fn enqueue(
        self: &Arc<Self>,
        new: NewJob<'static>,
        actor: Actor,
    ) -> Result<Enqueued, StoreError> {
        if new.dedupe_key.is_some() {
            return jobs::enqueue_recorded(&mut *self.pool.acquire().await?, &new, &actor).await;
        }
        let (answer, answered) = oneshot::channel();
        let start_writer = {
            let mut state = self.state();
            state.waiting.push_back(Pending { new, actor, answer });
            let start = state.writers < WRITERS;
            state.writers += usize::from(start);
            start
        };
        if start_writer {
            tokio::spawn(Arc::clone(self).write_all());
        }
        // Dropped unanswered only when the writer's runtime is shutting down.
        answered.await.unwrap_or(Err(StoreError::Database(sqlx::Error::WorkerCrashed)))
    }

    /// One writer: writes what is waiting (up to [`BATCH`], oldest first) in one statement,
    /// answers, and again until nothing waits.
    async fn write_all(self: Arc<Self>) {
        let mut writer = Writer { submissions: &self, ended: false };
        while let Some(batch) = writer.next_batch() {
            write(&self.pool, batch).await;
        }
    }
}

/// A writer at work: counted off when it ends, however it ends.
struct Writer<'a> {
    submissions: &'a Submissions,
    ended: bool,
}

impl Writer<'_> {
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

impl Drop for Writer<'_> {
    fn drop(&mut self) {
        if !self.ended {
            self.submissions.state().writers -= 1;
        }
    }
}

/// Writes `batch` in one statement and answers each submission. When PostgreSQL refuses the
/// statement, each submission is written alone (so only a bad one fails); when it could not
/// be reached, each gets that answer at once, not after a wait of its own for a connection.
async fn write(pool: &PgPool, batch: Vec<Pending>) {
    let submissions: Vec<(&NewJob<'_>, &Actor)> =
        batch.iter().map(|pending| (&pending.new, &pending.actor)).collect();
    let written =
        async { jobs::enqueue_recorded_many(&mut *pool.acquire().await?, &submissions).await }
            .await;
    drop(submissions);
    let err = match written {
        Ok(jobs) => {
            for (pending, (job, wake_up)) in batch.into_iter().zip(jobs) {
                let _ = pending.answer.send(Ok(Enqueued::Created(job, wake_up)));
            }
            return;
        }
        Err(err) => err,
    };
    if batch.len() > 1 && refused(&err) {
        tracing::warn!(error = %err, count = batch.len(), "PostgreSQL refused a shared job statement; writing its submissions one by one");
        for pending in batch {
            let alone = async {
                jobs::enqueue_recorded(&mut *pool.acquire().await?, &pending.new, &pending.actor)
                    .await
            }
            .await;
            let _ = pending.answer.send(alone);
        }
        return;
    }
    let others: Vec<StoreError> = batch.iter().skip(1).map(|_| unreached(&err)).collect();
    for (pending, err) in batch.into_iter().zip(std::iter::once(err).chain(others)) {
        let _ = pending.answer.send(Err(err));
    }
}

/// Whether PostgreSQL ran the statement and refused it, rather than being out of reach (no
/// connection, a connection lost, a server shutting down: SQLSTATE classes 08 and 57P).
fn refused(err: &StoreError) -> bool {
    match err {
        StoreError::Database(err) => err
            .as_database_error()
            .and_then(|db| db.code())
            .is_some_and(|code| !code.starts_with("08") && !code.starts_with("57P")),
        _ => true,
    }
}

/// The failure of a statement that did not reach PostgreSQL (or was not refused by it), for
/// another submission of it: the same kind of error (a database out of reach answers 503).
fn unreached(err: &StoreError) -> StoreError {
    StoreError::Database(match err {
        StoreError::Database(sqlx::Error::PoolTimedOut) => sqlx::Error::PoolTimedOut,
        StoreError::Database(sqlx::Error::PoolClosed) => sqlx::Error::PoolClosed,
        StoreError::Database(sqlx::Error::Io(io)) => {
            sqlx::Error::Io(std::io::Error::new(io.kind(), io.to_string()))
        }
        other => sqlx::Error::Protocol(other.to_string()),
    })
}
