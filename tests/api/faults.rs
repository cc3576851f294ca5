//! Faults for the doubles of external systems: the next requests answer a 5xx, garbage, hang,
//! or have their connection closed, before the double behaves again.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// What one request meets.
#[derive(Debug, Clone, Copy)]
pub enum Fault {
    /// An error status with a plain-text body, as a proxy in front of the system answers.
    Status(StatusCode),
    /// 200 with a body that is not the JSON asked for.
    Garbage,
    /// No answer for this long (longer than the client's timeout).
    Hang(Duration),
    /// The connection closes without an answer.
    Close,
}

/// The faults the next requests meet, in order; a request finding none is served normally.
#[derive(Clone, Default)]
pub struct Faults(Arc<Mutex<VecDeque<Fault>>>);

impl Faults {
    pub fn push(&self, fault: Fault, times: usize) {
        let mut queue = self.0.lock().unwrap();
        queue.extend(std::iter::repeat_n(fault, times));
    }

    pub fn left(&self) -> usize {
        self.0.lock().unwrap().len()
    }
}

/// Middleware of a double's router: `router.layer(from_fn_with_state(faults, inject))`.
pub async fn inject(State(faults): State<Faults>, request: Request, next: Next) -> Response {
    let fault = faults.0.lock().unwrap().pop_front();
    match fault {
        None => next.run(request).await,
        Some(Fault::Status(status)) => (status, "upstream trouble").into_response(),
        Some(Fault::Garbage) => {
            ([(header::CONTENT_TYPE, "application/json")], "<html>maintenance</html>")
                .into_response()
        }
        Some(Fault::Hang(wait)) => {
            tokio::time::sleep(wait).await;
            next.run(request).await
        }
        // Unwinding the connection's task drops the connection; `resume_unwind` does so
        // without the panic message a real panic would print.
        Some(Fault::Close) => std::panic::resume_unwind(Box::new("closing the connection")),
    }
}
