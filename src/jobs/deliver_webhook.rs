//! `deliver_webhook`: POSTs one notification to one webhook, signed (see
//! [`crate::domain::notification::signature`]). 2xx delivers; a timeout, a refused
//! connection, 408, 429 or 5xx retries with backoff; any other answer fails for good. A
//! webhook deleted or disabled meanwhile is skipped. Receivers get the job id as
//! `X-InfraHub-Delivery`: a retry of a delivery they did take carries the same one.

use std::sync::OnceLock;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::json;
use uuid::Uuid;

use super::{Job, JobError, KindSettings, Outcome, Run};
use crate::context::Context;
use crate::domain::notification::{self, Format, Notification};
use crate::store::webhooks;

/// The job's payload: what to tell which webhook.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Delivery {
    pub webhook_id: Uuid,
    pub notification: Notification,
    /// When it happened (RFC 3339).
    pub occurred_at: String,
}

pub struct DeliverWebhook;

/// The one HTTP client of deliveries: short timeouts, no redirects.
fn client() -> Result<&'static reqwest::Client, JobError> {
    static CLIENT: OnceLock<Result<reqwest::Client, String>> = OnceLock::new();
    CLIENT
        .get_or_init(|| {
            reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .connect_timeout(Duration::from_secs(5))
                .user_agent(concat!("infrahub/", env!("CARGO_PKG_VERSION")))
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(|e| JobError::permanent(format!("no HTTP client for webhooks: {e}")))
}

impl Job for DeliverWebhook {
    const KIND: &'static str = "deliver_webhook";
    type Payload = Delivery;

    fn settings(&self) -> KindSettings {
        KindSettings {
            concurrency: 4,
            max_attempts: 8,
            timeout: Duration::from_secs(30),
            backoff_base: Duration::from_secs(5),
            backoff_max: Duration::from_secs(900),
            ..KindSettings::default()
        }
    }

    async fn run(&self, ctx: &Context, job: &Run<Delivery>) -> Result<Outcome, JobError> {
        let found = {
            let mut conn =
                ctx.pool.acquire().await.map_err(|e| JobError::transient(e.to_string()))?;
            webhooks::secret_of(&mut conn, job.payload.webhook_id).await?
        };
        let Some((hook, secret)) = found else {
            return Ok(Outcome::done(json!({ "skipped": "the webhook was deleted" })));
        };
        if !hook.enabled {
            return Ok(Outcome::done(json!({ "skipped": "the webhook is disabled" })));
        }
        let format = if hook.format == "slack" { Format::Slack } else { Format::Json };
        let delivery = job.id.to_string();
        let note = &job.payload.notification;
        let body = notification::body(format, note, &delivery, &job.payload.occurred_at);
        let body = serde_json::to_vec(&body).map_err(|e| JobError::permanent(e.to_string()))?;
        let timestamp = chrono::Utc::now().timestamp();
        let answer = client()?
            .post(&hook.url)
            .header("content-type", "application/json")
            .header("x-infrahub-event", note.event.as_str())
            .header("x-infrahub-delivery", &delivery)
            .header("x-infrahub-timestamp", timestamp.to_string())
            .header("x-infrahub-signature", notification::signature(&secret, timestamp, &body))
            .body(body)
            .send()
            .await
            // Without the URL: a Slack-style one carries its token in the path.
            .map_err(|e| {
                JobError::transient(format!("webhook {}: {}", hook.name, e.without_url()))
            })?;
        let status = answer.status();
        if status.is_success() {
            return Ok(Outcome::done(json!({ "webhook": hook.name, "status": status.as_u16() })));
        }
        let why = format!("webhook {} answered HTTP {}", hook.name, status.as_u16());
        match status.as_u16() {
            408 | 429 | 500..=599 => Err(JobError::transient(why)),
            _ => Err(JobError::permanent(why)),
        }
    }
}
