//! systemd's notification protocol (`Type=notify`): READY=1 once the daemon serves, STATUS=
//! lines on the way, STOPPING=1 on shutdown, and WATCHDOG=1 from a task that also checks the
//! database. Outside systemd (no `NOTIFY_SOCKET`) every call does nothing.

use sd_notify::NotifyState;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::app;
use crate::context::Context;

fn send(states: &[NotifyState]) {
    if let Err(err) = sd_notify::notify(states) {
        tracing::debug!(error = %err, "systemd notification not sent");
    }
}

/// A STATUS= line (`systemctl status` shows the newest).
pub fn status(message: &str) {
    send(&[NotifyState::Status(message)]);
}

/// READY=1 with a status line: migrations are current, the listener is bound, workers run.
pub fn ready(message: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(message)]);
}

/// STOPPING=1: the daemon drains and exits.
pub fn stopping() {
    send(&[NotifyState::Stopping, NotifyState::Status("stopping: finishing running work")]);
}

/// When systemd asked for a watchdog (`WatchdogSec=`), a task that pings it every half
/// interval and then checks the database (readiness: reachable, migrations current), bounded
/// to a quarter of the interval systemd watches, saying the answer in STATUS=. A ping
/// therefore comes at least every 0.75 x `WatchdogSec`. It keeps pinging while PostgreSQL is away: an outage is not cured
/// by restarting every daemon at once (requests get 503, jobs wait); the watchdog is for a
/// wedged process, whose runtime no longer runs this task.
pub fn spawn_watchdog(ctx: Context, mut stopping: watch::Receiver<bool>) -> Option<JoinHandle<()>> {
    let interval = sd_notify::watchdog_enabled()? / 2;
    Some(tokio::spawn(async move {
        let mut healthy = true;
        loop {
            send(&[NotifyState::Watchdog]);
            let check = tokio::time::timeout(interval / 2, app::ops::readiness(&ctx)).await;
            let verdict = match check {
                Ok(Ok(())) => Ok(()),
                Ok(Err(reason)) => Err(reason),
                Err(_) => Err("database check timed out".to_owned()),
            };
            match (&verdict, healthy) {
                (Ok(()), false) => status("ready: database reachable again"),
                (Err(reason), _) => status(&format!("degraded: {reason}")),
                _ => {}
            }
            healthy = verdict.is_ok();
            tokio::select! {
                () = tokio::time::sleep(interval) => {}
                _ = stopping.wait_for(|stop| *stop) => return,
            }
        }
    }))
}
