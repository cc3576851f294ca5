//! Waking the dispatchers of every daemon once a job's transaction has committed.
//!
//! A statement that makes a job due returns its [`WakeUp`] instead of notifying inside the
//! transaction: PostgreSQL serializes the commits of transactions that notify (each holds the
//! database-wide notification lock until its WAL is flushed), so an intake that notified in
//! its own transactions would commit one request at a time. The wake-ups go to [`WakeUps`],
//! whose sender sends them in statements of their own, gathering what arrives while one is on
//! its way. A daemon killed between a commit and its wake-up leaves the job to the other
//! daemons' next poll (`workers.poll_interval_ms`).
//!
//! Code that enqueues into a transaction it does not commit itself hands the wake-up to
//! [`on_commit`]: inside a [`unit`] of work (a request, a job's attempt) it waits for the
//! unit's next commit ([`committed`]) or its end; outside one it is sent at once.

use std::cell::RefCell;
use std::future::Future;
use std::sync::{Arc, OnceLock};

use sqlx::PgPool;
use tokio::sync::mpsc;

use crate::store::jobs::{self, WakeUp};

/// The most wake-ups one statement sends.
const BATCH: usize = 1024;

/// Sends wake-ups through PostgreSQL from a task of its own, started by the first one.
pub struct WakeUps {
    pool: PgPool,
    sender: OnceLock<mpsc::UnboundedSender<WakeUp>>,
}

impl WakeUps {
    pub fn new(pool: PgPool) -> Self {
        Self { pool, sender: OnceLock::new() }
    }

    /// Sends `wake_ups`, of transactions that have committed, to every daemon, soon; without a
    /// runtime to send them from (never in the daemon), they are dropped.
    pub fn send(&self, wake_ups: impl IntoIterator<Item = WakeUp>) {
        let mut wake_ups = wake_ups.into_iter().peekable();
        if wake_ups.peek().is_none() {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        let sender = self.sender.get_or_init(|| {
            let (sender, received) = mpsc::unbounded_channel();
            runtime.spawn(send_all(self.pool.clone(), received));
            sender
        });
        for wake_up in wake_ups {
            // Fails only once the sending task is gone with its runtime.
            let _ = sender.send(wake_up);
        }
    }
}

/// Sends what arrives, each batch in one statement: while one is on its way the next gathers,
/// so under load many commits share a statement. A batch that cannot be sent is dropped (the
/// poll finds its jobs).
async fn send_all(pool: PgPool, mut received: mpsc::UnboundedReceiver<WakeUp>) {
    let mut batch = Vec::with_capacity(BATCH);
    while received.recv_many(&mut batch, BATCH).await > 0 {
        batch.sort_unstable();
        batch.dedup();
        let sent = async { jobs::wake(&mut *pool.acquire().await?, &batch).await }.await;
        if let Err(err) = sent {
            tracing::warn!(error = %err, count = batch.len(), "cannot wake the job dispatchers; their poll will find the jobs");
        }
        batch.clear();
    }
}

/// What a unit of work has yet to send, and where.
struct Pending {
    wake_ups: Arc<WakeUps>,
    deferred: Vec<WakeUp>,
}

tokio::task_local! {
    static UNIT: RefCell<Pending>;
}

/// Runs `work` as a unit: wake-ups handed to [`on_commit`] meanwhile go out at its next
/// [`committed`], and what is left when it ends (a commit made elsewhere, a rolled-back
/// transaction's, which wakes dispatchers for nothing) then.
pub async fn unit<F: Future>(wake_ups: &Arc<WakeUps>, work: F) -> F::Output {
    let pending = Pending { wake_ups: Arc::clone(wake_ups), deferred: Vec::new() };
    UNIT.scope(RefCell::new(pending), async {
        let output = work.await;
        committed();
        output
    })
    .await
}

/// Sends `wake_up` once the transaction that made it has committed: in a [`unit`], at its
/// next [`committed`] or its end; outside one, now (call it after your own commit then).
pub fn on_commit(wake_ups: &WakeUps, wake_up: Option<&WakeUp>) {
    let Some(wake_up) = wake_up else { return };
    let deferred = UNIT.try_with(|pending| pending.borrow_mut().deferred.push(wake_up.clone()));
    if deferred.is_err() {
        wake_ups.send([wake_up.clone()]);
    }
}

/// A transaction of the running unit committed: sends what the unit deferred.
pub fn committed() {
    let _ = UNIT.try_with(|pending| {
        let mut pending = pending.borrow_mut();
        let deferred = std::mem::take(&mut pending.deferred);
        pending.wake_ups.send(deferred);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lazy_pool() -> PgPool {
        PgPool::connect_lazy("postgres://nobody@localhost/nothing").expect("a lazy pool")
    }

    fn deferred() -> Vec<WakeUp> {
        UNIT.with(|pending| pending.borrow().deferred.clone())
    }

    #[tokio::test]
    async fn a_unit_keeps_wake_ups_until_its_commit() {
        let wake_ups = Arc::new(WakeUps::new(lazy_pool()));
        unit(&wake_ups, async {
            on_commit(&wake_ups, Some(&WakeUp::now("noop")));
            on_commit(&wake_ups, None);
            assert_eq!(deferred(), vec![WakeUp::now("noop")]);
            assert!(wake_ups.sender.get().is_none(), "nothing sent before the commit");
            committed();
            assert!(deferred().is_empty());
            assert!(wake_ups.sender.get().is_some(), "sent once committed");
        })
        .await;
    }

    #[tokio::test]
    async fn outside_a_unit_a_wake_up_goes_at_once() {
        let wake_ups = WakeUps::new(lazy_pool());
        on_commit(&wake_ups, None);
        assert!(wake_ups.sender.get().is_none(), "nothing to send");
        on_commit(&wake_ups, Some(&WakeUp::now("noop")));
        assert!(wake_ups.sender.get().is_some());
    }
}
