//! Waking the dispatchers of every daemon once a job's transaction has committed.
//!
//! A statement that makes a job due returns its [`WakeUp`] instead of notifying inside the
//! transaction: PostgreSQL serializes the commits of transactions that notify (each holds the
//! database-wide notification lock until its WAL is flushed), so an intake that notified in
//! its own transactions would commit one request at a time. The wake-ups go to [`WakeUps`],
//! which hands them to this process's engine at once and sends them to every daemon in
//! statements of their own, gathering what arrives while one is on its way. A daemon killed
//! between a commit and its wake-up leaves the job to the other daemons' next poll
//! (`workers.poll_interval_ms`).
//!
//! Code that enqueues into a transaction it does not commit itself hands the wake-up to
//! [`on_commit`]: inside a [`unit`] of work (a request, a job's attempt, the recording of a
//! failure, the demo's seeding) it waits for the unit's next commit ([`committed`]) or its end.
//! Outside one it is sent at once, which may be before the commit (a warning says so: an entry
//! point that is not a unit yet).

use std::cell::RefCell;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};

use sqlx::PgPool;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::store::jobs::{self, WakeUp};

/// The most wake-ups one statement sends.
const BATCH: usize = 1024;

/// Sends wake-ups to this process's engine directly, and to every daemon's (this one's too:
/// a wake-up that finds nothing to claim costs one query) through PostgreSQL, from a task of
/// its own started by the first one, which takes its connection from the pool like any
/// statement.
pub struct WakeUps {
    pool: PgPool,
    sending: Mutex<Option<Sending>>,
    /// The engines of this process, woken without the round trip through PostgreSQL.
    local: Mutex<Vec<mpsc::UnboundedSender<WakeUp>>>,
}

/// The sending task and the way to it.
struct Sending {
    sender: mpsc::UnboundedSender<WakeUp>,
    task: JoinHandle<()>,
}

impl WakeUps {
    pub fn new(pool: PgPool) -> Self {
        Self { pool, sending: Mutex::new(None), local: Mutex::new(Vec::new()) }
    }

    fn sending(&self) -> MutexGuard<'_, Option<Sending>> {
        self.sending.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The wake-ups this process sends from now on, as they are sent: for its engine.
    pub fn subscribe(&self) -> mpsc::UnboundedReceiver<WakeUp> {
        let (sender, received) = mpsc::unbounded_channel();
        self.local.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).push(sender);
        received
    }

    /// Hands `wake_ups`, of transactions that have committed, to this process's engines, and
    /// sends them to every daemon soon (without a runtime to send from, never the case in the
    /// daemon, only the engines of this process get them).
    pub fn send(&self, wake_ups: impl IntoIterator<Item = WakeUp>) {
        let wake_ups: Vec<WakeUp> = wake_ups.into_iter().collect();
        if wake_ups.is_empty() {
            return;
        }
        self.local
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .retain(|engine| wake_ups.iter().all(|wake_up| engine.send(wake_up.clone()).is_ok()));
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        let mut sending = self.sending();
        for wake_up in wake_ups {
            // The task is started by the first wake-up, and again if the runtime it ran on
            // has ended since.
            let wake_up = match sending.as_ref() {
                Some(running) => match running.sender.send(wake_up) {
                    Ok(()) => continue,
                    Err(mpsc::error::SendError(wake_up)) => wake_up,
                },
                None => wake_up,
            };
            let (sender, received) = mpsc::unbounded_channel();
            let _ = sender.send(wake_up);
            let task = runtime.spawn(send_all(self.pool.clone(), received));
            *sending = Some(Sending { sender, task });
        }
    }

    /// Sends what is waiting and stops the sending task (a later wake-up starts it again): at
    /// shutdown, before the pool closes, so that the jobs handed back reach the other daemons.
    pub async fn flush(&self) {
        let sending = self.sending().take();
        if let Some(Sending { sender, task }) = sending {
            drop(sender);
            let _ = task.await;
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
/// next [`committed`] or its end; outside one, now.
pub fn on_commit(wake_ups: &WakeUps, wake_up: Option<&WakeUp>) {
    let Some(wake_up) = wake_up else { return };
    let deferred = UNIT.try_with(|pending| pending.borrow_mut().deferred.push(wake_up.clone()));
    if deferred.is_err() {
        tracing::warn!(
            wake_up = wake_up.payload(),
            "a job was enqueued outside a unit of work: its wake-up may go before its commit"
        );
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

    /// Wake-ups whose pool never connects, and what they hand to this process's engine.
    fn unconnected() -> (Arc<WakeUps>, mpsc::UnboundedReceiver<WakeUp>) {
        let options = sqlx::postgres::PgConnectOptions::new().host("/nonexistent").port(1);
        let pool = sqlx::postgres::PgPoolOptions::new()
            .acquire_timeout(std::time::Duration::from_millis(100))
            .connect_lazy_with(options);
        let wake_ups = Arc::new(WakeUps::new(pool));
        let engine = wake_ups.subscribe();
        (wake_ups, engine)
    }

    fn noop() -> WakeUp {
        WakeUp::now("noop")
    }

    #[tokio::test]
    async fn a_unit_keeps_wake_ups_until_its_commit() {
        let (wake_ups, mut engine) = unconnected();
        unit(&wake_ups, async {
            on_commit(&wake_ups, Some(&noop()));
            on_commit(&wake_ups, None);
            assert!(engine.try_recv().is_err(), "nothing sent before the commit");
            committed();
            assert_eq!(engine.try_recv().ok(), Some(noop()), "sent once committed");
        })
        .await;
        assert!(engine.try_recv().is_err(), "sent once only");
    }

    #[tokio::test]
    async fn what_a_unit_did_not_commit_goes_out_when_it_ends() {
        let (wake_ups, mut engine) = unconnected();
        unit(&wake_ups, async {
            on_commit(&wake_ups, Some(&noop()));
            assert!(engine.try_recv().is_err());
        })
        .await;
        assert_eq!(engine.try_recv().ok(), Some(noop()));
    }

    #[tokio::test]
    async fn outside_a_unit_a_wake_up_goes_at_once() {
        let (wake_ups, mut engine) = unconnected();
        on_commit(&wake_ups, Some(&noop()));
        assert_eq!(engine.try_recv().ok(), Some(noop()));
        assert!(wake_ups.sending().is_some(), "on its way to the other daemons");
        wake_ups.flush().await;
        assert!(wake_ups.sending().is_none(), "flushed and stopped");
    }

    #[tokio::test]
    async fn an_engine_that_stopped_is_forgotten() {
        let (wake_ups, engine) = unconnected();
        drop(engine);
        wake_ups.send([noop()]);
        assert!(wake_ups.local.lock().unwrap().is_empty());
    }
}
