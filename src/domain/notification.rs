//! Notifications: the events InfraHub tells webhooks about, how a webhook's body looks in each
//! format (generic JSON, or Slack's `{"text": ...}`), and how a delivery is signed.

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::Sha256;

use super::ValidationError;

/// What happened, by its stable name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub enum EventKind {
    /// A project request waits for a field admin's approval.
    #[serde(rename = "approval.requested")]
    ApprovalRequested,
    /// A project request was approved, rejected or expired.
    #[serde(rename = "approval.decided")]
    ApprovalDecided,
    /// A team lead asked for more quota.
    #[serde(rename = "quota_request.created")]
    QuotaRequestCreated,
    /// A quota request was approved or rejected.
    #[serde(rename = "quota_request.decided")]
    QuotaRequestDecided,
    /// A project failed (provisioning or deleting).
    #[serde(rename = "project.failed")]
    ProjectFailed,
    /// A project's deletion was scheduled (by its owner, or its time to live).
    #[serde(rename = "project.deletion_scheduled")]
    DeletionScheduled,
    /// A project's time to live runs out soon (`deletion.remind_before_secs`).
    #[serde(rename = "project.expiring")]
    Expiring,
    /// A department's projects now hold more than 90 % of its quota at a site.
    #[serde(rename = "quota.above_90")]
    QuotaAbove90,
    /// A field's quotas at a site are above its capacity (servers went missing or shrank).
    #[serde(rename = "capacity.deficit")]
    CapacityDeficit,
    /// A test delivery asked for by a center admin.
    #[serde(rename = "ping")]
    Ping,
}

impl EventKind {
    pub const ALL: [EventKind; 10] = [
        EventKind::ApprovalRequested,
        EventKind::ApprovalDecided,
        EventKind::QuotaRequestCreated,
        EventKind::QuotaRequestDecided,
        EventKind::ProjectFailed,
        EventKind::DeletionScheduled,
        EventKind::Expiring,
        EventKind::QuotaAbove90,
        EventKind::CapacityDeficit,
        EventKind::Ping,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::ApprovalRequested => "approval.requested",
            EventKind::ApprovalDecided => "approval.decided",
            EventKind::QuotaRequestCreated => "quota_request.created",
            EventKind::QuotaRequestDecided => "quota_request.decided",
            EventKind::ProjectFailed => "project.failed",
            EventKind::DeletionScheduled => "project.deletion_scheduled",
            EventKind::Expiring => "project.expiring",
            EventKind::QuotaAbove90 => "quota.above_90",
            EventKind::CapacityDeficit => "capacity.deficit",
            EventKind::Ping => "ping",
        }
    }

    /// The event named `name`, or a refusal listing the names there are.
    pub fn parse(name: &str) -> Result<Self, ValidationError> {
        EventKind::ALL.into_iter().find(|e| e.as_str() == name).ok_or_else(|| {
            let known: Vec<&str> = EventKind::ALL.iter().map(|e| e.as_str()).collect();
            ValidationError::new("events", format!("{name:?} is not one of {known:?}"))
        })
    }
}

/// Something to tell webhooks: its kind, a sentence for people (Slack), and the data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Notification {
    pub event: EventKind,
    pub text: String,
    pub data: Value,
}

impl Notification {
    pub fn new(event: EventKind, text: impl Into<String>, data: Value) -> Self {
        Self { event, text: text.into(), data }
    }
}

/// How a webhook wants its body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    /// `{"event", "delivery", "occurred_at", "text", "data"}`.
    Json,
    /// `{"text"}`: what Slack's (and Mattermost's, Teams' workflow) incoming webhooks take.
    Slack,
}

impl Format {
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Json => "json",
            Format::Slack => "slack",
        }
    }
}

/// The body of delivery `delivery` of `note`, in `format`.
pub fn body(format: Format, note: &Notification, delivery: &str, occurred_at: &str) -> Value {
    match format {
        Format::Json => json!({
            "event": note.event,
            "delivery": delivery,
            "occurred_at": occurred_at,
            "text": note.text,
            "data": note.data,
        }),
        Format::Slack => json!({ "text": format!("InfraHub: {}", note.text) }),
    }
}

/// The signature of a delivery: HMAC-SHA256 with the webhook's secret over
/// `{timestamp}.{body}`, hex, as `sha256=<hex>` (the `X-InfraHub-Signature` header). The
/// timestamp (seconds, the `X-InfraHub-Timestamp` header) lets receivers refuse old replays.
pub fn signature(secret: &str, timestamp: i64, body: &[u8]) -> String {
    // HMAC takes keys of any length.
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256={hex}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_names_round_trip_and_unknown_ones_are_named() {
        for event in EventKind::ALL {
            assert_eq!(EventKind::parse(event.as_str()), Ok(event));
            assert_eq!(json!(event), json!(event.as_str()));
        }
        let err = EventKind::parse("project.exploded").unwrap_err();
        assert!(err.message.contains("approval.requested"), "{err}");
    }

    /// HMAC-SHA256 of `{timestamp}.{body}`, computed independently of the framing.
    #[test]
    fn signatures_are_hmac_sha256_over_timestamp_and_body() {
        let signed = signature("Jefe", 0, b"what do ya want for nothing?");
        assert_eq!(signed.len(), "sha256=".len() + 64);
        // The same key and message framed by hand: "0." + body.
        let mut mac = Hmac::<Sha256>::new_from_slice(b"Jefe").unwrap();
        mac.update(b"0.what do ya want for nothing?");
        let hex: String = mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(signed, format!("sha256={hex}"));
        assert_ne!(signature("Jefe", 1, b"what do ya want for nothing?"), signed, "time counts");
        assert_ne!(signature("Jeff", 0, b"what do ya want for nothing?"), signed, "key counts");
    }

    #[test]
    fn slack_gets_a_sentence_and_json_gets_everything() {
        let note = Notification::new(EventKind::Ping, "hello", json!({ "a": 1 }));
        assert_eq!(body(Format::Slack, &note, "d", "t"), json!({ "text": "InfraHub: hello" }));
        let generic = body(Format::Json, &note, "d-1", "2026-12-05T12:00:00Z");
        assert_eq!(generic["event"], "ping");
        assert_eq!(generic["delivery"], "d-1");
        assert_eq!(generic["data"]["a"], 1);
    }
}
