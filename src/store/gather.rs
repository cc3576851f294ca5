//! One statement for what many callers ask at once.
//!
//! Under load, PostgreSQL spends much of its time on the cost every statement has whatever it
//! does: the round trip, the parse, the plan, the commit. A [`Gather`] collects what callers
//! ask while its previous statement is on its way and hands it to its [`Statement`] as one
//! batch. A caller is answered once the statement holding its ask is done; a lone caller waits
//! for nothing but its own statement (there is no timer), and a statement always starts after
//! every ask it holds was made, so a read sees at least what was committed when it was asked.
//!
//! The statements run on tasks started by callers, on their runtime, when fewer than
//! [`Statement::RUNNERS`] are at work; each runs what is waiting, statement after statement,
//! and ends when nothing is left. They take their connections from a pool of their own
//! ([`pool`]), where statements with array parameters are planned once. An ask whose caller
//! has gone before its statement started is dropped; when a statement finds the database
//! unreachable, what waits is answered so at once rather than wait for a connection in turn.
//!
//! The daemon's gathers: the jobs people submit (`jobs::submissions`), the accounts behind
//! tokens (`users::AccountReads`), what quota changes are checked against
//! (`capacity::QuotaChangeReads`) and new projects (`app::project_writes`).

use std::collections::VecDeque;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};

use sqlx::PgPool;
use tokio::sync::oneshot;

use super::StoreError;
use crate::config::DatabaseConfig;

/// A pool like `pool` (same server and database) for the statements of gathers, connecting
/// when first used. Their parameters are arrays, for which PostgreSQL would make a custom
/// plan at every execution, costing more than running them (`pg_stat_statements`,
/// 2026-12-07: 0.59 ms planning against 0.15 ms running for the quota change read, 0.23–0.46
/// ms against 0.75 ms for the job statement); here every statement is planned once per
/// connection (`plan_cache_mode = force_generic_plan`), so a statement run here must not
/// need its parameters' values to be planned well (`$1 IS NULL OR ...`, say). `connections`:
/// the sum of its gathers' [`Statement::RUNNERS`] (see [`runners`]).
pub fn pool(pool: &PgPool, config: &DatabaseConfig, connections: u32) -> PgPool {
    super::pool_like(pool, config, connections, |settings| {
        // A statement once connected rather than a startup parameter, which poolers such as
        // PgBouncer refuse (a pooler in transaction mode would carry it to other clients'
        // sessions: it needs session pooling).
        settings.after_connect(|conn, _| {
            Box::pin(async move {
                sqlx::query("SET plan_cache_mode = force_generic_plan").execute(conn).await?;
                Ok(())
            })
        })
    })
}

/// The connections `S`'s statements may hold at once: its [`Statement::RUNNERS`].
pub const fn runners<S: Statement>() -> u32 {
    S::RUNNERS as u32
}

/// A statement that answers many callers' asks at once.
pub trait Statement: Send + Sync + 'static {
    /// What a caller asks.
    type Ask: Send + 'static;
    /// What a caller gets back.
    type Answer: Send + 'static;
    /// The most asks one statement takes.
    const BATCH: usize;
    /// How many statements may be on their way at once: while one runs, the next gathers.
    const RUNNERS: usize;
    /// Runs one statement for `batch` (oldest ask first) and answers each ask. An ask dropped
    /// unanswered is answered with an error. Returns what [`fail_all`] returned when it failed
    /// the batch: the database could not be reached, which answers what waits too.
    fn run(&self, batch: Vec<Asked<Self>>) -> impl Future<Output = Option<Unreachable>> + Send;
}

/// The database could not be reached (no connection to be had, or it was lost): every ask
/// waiting is answered with this failure rather than wait for a connection in turn, a batch
/// after another.
pub struct Unreachable(Arc<sqlx::Error>);

/// An ask waiting for its statement's answer.
pub struct Asked<S: Statement + ?Sized> {
    pub ask: S::Ask,
    answer: oneshot::Sender<Result<S::Answer, StoreError>>,
}

impl<S: Statement + ?Sized> Asked<S> {
    /// Whether the caller has gone (its request dropped): its ask is not worth a statement.
    pub fn gone(&self) -> bool {
        self.answer.is_closed()
    }

    /// Answers the caller (who may have gone meanwhile).
    pub fn answer(self, result: Result<S::Answer, StoreError>) {
        let _ = self.answer.send(result);
    }
}

/// Gathers asks for `S`'s statements. Cheap to clone: clones share the statements.
pub struct Gather<S: Statement> {
    inner: Arc<Inner<S>>,
}

impl<S: Statement> Clone for Gather<S> {
    fn clone(&self) -> Self {
        Self { inner: Arc::clone(&self.inner) }
    }
}

struct Inner<S: Statement> {
    statement: S,
    state: Mutex<State<S>>,
}

struct State<S: Statement> {
    waiting: VecDeque<Asked<S>>,
    runners: usize,
}

impl<S: Statement> Gather<S> {
    pub fn new(statement: S) -> Self {
        let state = State { waiting: VecDeque::new(), runners: 0 };
        Self { inner: Arc::new(Inner { statement, state: Mutex::new(state) }) }
    }

    pub fn statement(&self) -> &S {
        &self.inner.statement
    }

    /// Asks `ask` in the next statement that starts, and waits for its answer.
    pub async fn ask(&self, ask: S::Ask) -> Result<S::Answer, StoreError> {
        let (answer, answered) = oneshot::channel();
        let runner = {
            let mut state = self.inner.state();
            state.waiting.push_back(Asked { ask, answer });
            (state.runners < S::RUNNERS).then(|| {
                state.runners += 1;
                Runner { inner: Arc::clone(&self.inner), ended: false }
            })
        };
        if let Some(runner) = runner {
            tokio::spawn(runner.run_all());
        }
        // Dropped unanswered only when a statement dropped it or the runners' runtime shut
        // down.
        answered.await.unwrap_or(Err(StoreError::Database(sqlx::Error::WorkerCrashed)))
    }
}

impl<S: Statement> Inner<S> {
    fn state(&self) -> MutexGuard<'_, State<S>> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// A runner at work, counted in [`State::runners`] from before its task starts until it ends,
/// however it ends.
struct Runner<S: Statement> {
    inner: Arc<Inner<S>>,
    ended: bool,
}

impl<S: Statement> Runner<S> {
    /// Runs what is waiting (up to [`Statement::BATCH`], oldest first) in one statement, and
    /// again until nothing waits.
    async fn run_all(mut self) {
        while let Some(batch) = self.next_batch() {
            if let Some(Unreachable(err)) = self.inner.statement.run(batch).await {
                let waiting: Vec<Asked<S>> = self.inner.state().waiting.drain(..).collect();
                for asked in waiting {
                    asked.answer(Err(StoreError::Shared(Arc::clone(&err))));
                }
            }
        }
    }

    /// The next statement's asks; none when nothing waits: the runner then ends, counted off
    /// under the same lock, so that an ask arriving now starts another.
    fn next_batch(&mut self) -> Option<Vec<Asked<S>>> {
        let mut state = self.inner.state();
        // An ask whose caller has gone (its request dropped) is not worth a statement.
        state.waiting.retain(|asked| !asked.gone());
        if state.waiting.is_empty() {
            state.runners -= 1;
            self.ended = true;
            return None;
        }
        let take = state.waiting.len().min(S::BATCH);
        Some(state.waiting.drain(..take).collect())
    }
}

impl<S: Statement> Drop for Runner<S> {
    /// A runner stopped before its work was done (its runtime shut down): the last one answers
    /// what still waits (by dropping it), rather than leave it waiting for an ask to start
    /// another.
    fn drop(&mut self) {
        if self.ended {
            return;
        }
        let mut state = self.inner.state();
        state.runners -= 1;
        if state.runners == 0 {
            state.waiting.clear();
        }
    }
}

/// Answers every ask of `batch` with `err`, the failure of the statement they shared; returns
/// it as [`Unreachable`] when it says the database could not be reached.
pub fn fail_all<S: Statement>(batch: Vec<Asked<S>>, err: sqlx::Error) -> Option<Unreachable> {
    let err = Arc::new(err);
    for asked in batch {
        asked.answer(Err(StoreError::Shared(Arc::clone(&err))));
    }
    unreachable(&err).then_some(Unreachable(err))
}

/// Whether `err` says the database cannot be reached for now: no connection to be had
/// (SQLSTATE class 08, a pool that timed out or closed) or a server shutting down or
/// starting up (57P). Not one lost connection: the next statement takes another.
fn unreachable(err: &sqlx::Error) -> bool {
    let code = err.as_database_error().and_then(|db| db.code());
    code.is_some_and(|code| code.starts_with("08") || code.starts_with("57P"))
        || matches!(err, sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed)
}

/// A statement that can also answer one ask on its own: what a batch refused for one of its
/// values falls back to ([`one_by_one`]).
pub trait Alone: Statement {
    /// The answer to `ask` from a statement of its own.
    fn alone(
        &self,
        ask: &Self::Ask,
    ) -> impl Future<Output = Result<Self::Answer, StoreError>> + Send;
}

/// Answers each ask of `batch` from a statement of its own, one after the other (after a
/// statement refused for one of their values): asks whose callers have gone are skipped, and a
/// database found unreachable answers the rest at once ([`fail_all`]).
pub async fn one_by_one<S: Alone>(statement: &S, batch: Vec<Asked<S>>) -> Option<Unreachable> {
    let mut asks = batch.into_iter();
    while let Some(asked) = asks.next() {
        if asked.gone() {
            continue;
        }
        match statement.alone(&asked.ask).await {
            Err(StoreError::Database(err)) if unreachable(&err) => {
                return fail_all(std::iter::once(asked).chain(asks).collect(), err);
            }
            answer => asked.answer(answer),
        }
    }
    None
}

/// Whether PostgreSQL refused a statement for a value it was given, which one ask may cause
/// alone: a data exception (SQLSTATE class 22, a NUL in a text, say) or a broken constraint
/// (class 23). Not a connection that could not be had or was lost, nor a statement cancelled
/// or rolled back. A statement refused so is best run again ask by ask.
pub fn refused_for_a_value(err: &sqlx::Error) -> bool {
    let code = err.as_database_error().and_then(|db| db.code());
    code.is_some_and(|code| code.starts_with("22") || code.starts_with("23"))
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex as StdMutex;

    use tokio::sync::Semaphore;

    use super::*;

    /// Doubles what it is asked, one statement at a time, each held until the test lets it
    /// finish; remembers the batches.
    struct Doubler {
        batches: StdMutex<Vec<Vec<u32>>>,
        finish: Semaphore,
    }

    impl Statement for Doubler {
        type Ask = u32;
        type Answer = u32;
        const BATCH: usize = 3;
        const RUNNERS: usize = 1;

        async fn run(&self, batch: Vec<Asked<Self>>) -> Option<Unreachable> {
            self.batches.lock().unwrap().push(batch.iter().map(|asked| asked.ask).collect());
            self.finish.acquire().await.unwrap().forget();
            for asked in batch {
                let doubled = asked.ask * 2;
                asked.answer(Ok(doubled));
            }
            None
        }
    }

    fn doubler() -> Gather<Doubler> {
        Gather::new(Doubler { batches: StdMutex::default(), finish: Semaphore::new(0) })
    }

    impl<S: Statement> Gather<S> {
        fn waiting(&self) -> usize {
            self.inner.state().waiting.len()
        }
    }

    /// `gather.ask(ask)` on a task of its own.
    fn spawn_ask<S: Statement>(
        gather: &Gather<S>,
        ask: S::Ask,
    ) -> tokio::task::JoinHandle<Result<S::Answer, StoreError>> {
        let gather = gather.clone();
        tokio::spawn(async move { gather.ask(ask).await })
    }

    async fn until(condition: impl Fn() -> bool) {
        while !condition() {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn asks_made_while_a_statement_runs_share_the_next_one() {
        let gather = doubler();
        let statement = || gather.statement();
        let first = spawn_ask(&gather, 1);
        until(|| statement().batches.lock().unwrap().len() == 1).await;
        let later: Vec<_> = (2..=5).map(|n| spawn_ask(&gather, n)).collect();
        until(|| gather.waiting() == 4).await;
        statement().finish.add_permits(3);
        assert_eq!(first.await.unwrap().unwrap(), 2);
        let mut answers = Vec::new();
        for ask in later {
            answers.push(ask.await.unwrap().unwrap());
        }
        assert_eq!(answers, [4, 6, 8, 10]);
        // The lone first ask ran alone; the four that waited took two statements of at most
        // three, oldest first.
        assert_eq!(*statement().batches.lock().unwrap(), [vec![1], vec![2, 3, 4], vec![5]]);
        // Nothing waits and no runner is left: the next ask starts one.
        until(|| gather.inner.state().runners == 0).await;
        statement().finish.add_permits(1);
        assert_eq!(gather.ask(7).await.unwrap(), 14);
    }

    #[tokio::test]
    async fn an_ask_its_statement_drops_is_answered_with_an_error() {
        struct Dropper;
        impl Statement for Dropper {
            type Ask = ();
            type Answer = ();
            const BATCH: usize = 1;
            const RUNNERS: usize = 1;
            async fn run(&self, _batch: Vec<Asked<Self>>) -> Option<Unreachable> {
                None
            }
        }
        let answer = Gather::new(Dropper).ask(()).await;
        assert!(matches!(answer, Err(StoreError::Database(sqlx::Error::WorkerCrashed))));
    }

    #[test]
    fn asks_left_waiting_when_the_runners_runtime_stops_are_answered() {
        let gather = doubler();
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        // The first ask, held in its statement; its task stops with the runtime.
        runtime.block_on(async {
            spawn_ask(&gather, 1);
            until(|| gather.statement().batches.lock().unwrap().len() == 1).await;
        });
        // Asked from elsewhere while the only runner is held in its statement: it waits.
        let waiting = std::thread::spawn({
            let gather = gather.clone();
            move || {
                let elsewhere = tokio::runtime::Builder::new_current_thread().build().unwrap();
                elsewhere.block_on(gather.ask(2))
            }
        });
        while gather.waiting() == 0 {
            std::thread::yield_now();
        }
        // The runner stops with its runtime, and answers what waits.
        drop(runtime);
        let answer = waiting.join().unwrap();
        assert!(matches!(answer, Err(StoreError::Database(sqlx::Error::WorkerCrashed))));
        assert_eq!(gather.inner.state().runners, 0);
    }

    #[tokio::test]
    async fn an_ask_whose_caller_has_gone_is_not_run() {
        let gather = doubler();
        let statement = || gather.statement();
        let first = spawn_ask(&gather, 1);
        until(|| statement().batches.lock().unwrap().len() == 1).await;
        let gone = spawn_ask(&gather, 2);
        until(|| gather.waiting() == 1).await;
        gone.abort();
        assert!(gone.await.unwrap_err().is_cancelled());
        let third = spawn_ask(&gather, 3);
        until(|| gather.waiting() == 2).await;
        statement().finish.add_permits(2);
        assert_eq!(first.await.unwrap().unwrap(), 2);
        assert_eq!(third.await.unwrap().unwrap(), 6);
        assert_eq!(*statement().batches.lock().unwrap(), [vec![1], vec![3]]);
    }

    /// Fails its first statement as if no connection could be had.
    struct Unreached {
        started: Semaphore,
        finish: Semaphore,
        statements: StdMutex<usize>,
    }

    impl Statement for Unreached {
        type Ask = u32;
        type Answer = u32;
        const BATCH: usize = 1;
        const RUNNERS: usize = 1;

        async fn run(&self, batch: Vec<Asked<Self>>) -> Option<Unreachable> {
            *self.statements.lock().unwrap() += 1;
            self.started.add_permits(1);
            self.finish.acquire().await.unwrap().forget();
            fail_all(batch, sqlx::Error::PoolTimedOut)
        }
    }

    #[tokio::test]
    async fn an_unreachable_database_answers_what_waits_at_once() {
        let unreached = Unreached {
            started: Semaphore::new(0),
            finish: Semaphore::new(0),
            statements: 0.into(),
        };
        let gather = Gather::new(unreached);
        let asks: Vec<_> = (1..=3).map(|n| spawn_ask(&gather, n)).collect();
        gather.statement().started.acquire().await.unwrap().forget();
        until(|| gather.waiting() == 2).await;
        gather.statement().finish.add_permits(1);
        for ask in asks {
            // Bounded: without the answer to what waits, they would wait for ever.
            let answer = tokio::time::timeout(std::time::Duration::from_secs(5), ask)
                .await
                .unwrap()
                .unwrap();
            let timed_out = matches!(&answer, Err(StoreError::Shared(err)) if matches!(**err, sqlx::Error::PoolTimedOut));
            assert!(timed_out, "{:?}", answer.map_err(|e| e.to_string()));
        }
        assert_eq!(*gather.statement().statements.lock().unwrap(), 1, "one wait, not three");
    }
}
