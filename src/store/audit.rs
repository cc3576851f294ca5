//! The audit trail: one row per state change, written in the change's own transaction.

use serde::Serialize;
use serde_json::Value;
use sqlx::PgConnection;
use uuid::Uuid;

/// Who acted, and through which request.
#[derive(Debug, Clone)]
pub struct Actor {
    /// The account, or `None` for the system itself (demo bootstrap, CLI, jobs).
    pub user_id: Option<Uuid>,
    pub name: String,
    pub request_id: Option<String>,
}

impl Actor {
    /// An actor that is not a logged-in user, e.g. `cli` or `demo`.
    pub fn system(name: &str) -> Self {
        Self { user_id: None, name: format!("system:{name}"), request_id: None }
    }

    /// A job acting on its own, e.g. settling its project.
    pub fn job(id: Uuid) -> Self {
        Self { user_id: None, name: format!("job:{id}"), request_id: None }
    }
}

/// One change: `action` is `<subject>.<verb>`, e.g. `site.create`.
pub struct Change {
    pub action: String,
    pub subject_type: &'static str,
    pub subject_id: String,
    pub before: Option<Value>,
    pub after: Option<Value>,
}

impl Change {
    /// `<subject_type>.<verb>` on `id`, with no before/after yet.
    pub fn new(subject_type: &'static str, verb: &str, id: impl ToString) -> Self {
        Self {
            action: format!("{subject_type}.{verb}"),
            subject_type,
            subject_id: id.to_string(),
            before: None,
            after: None,
        }
    }

    pub fn create<T: Serialize>(subject_type: &'static str, id: impl ToString, after: &T) -> Self {
        Self::new(subject_type, "create", id).after(after)
    }

    pub fn update<T: Serialize>(
        subject_type: &'static str,
        id: impl ToString,
        before: &T,
        after: &T,
    ) -> Self {
        Self::new(subject_type, "update", id).before(before).after(after)
    }

    pub fn delete<T: Serialize>(subject_type: &'static str, id: impl ToString, before: &T) -> Self {
        Self::new(subject_type, "delete", id).before(before)
    }

    pub fn before<T: Serialize>(mut self, value: &T) -> Self {
        self.before = serde_json::to_value(value).ok();
        self
    }

    pub fn after<T: Serialize>(mut self, value: &T) -> Self {
        self.after = serde_json::to_value(value).ok();
        self
    }
}

#[tracing::instrument(skip_all, fields(action = %change.action))]
pub async fn record(
    conn: &mut PgConnection,
    actor: &Actor,
    change: Change,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO audit_events
             (actor_id, actor, action, subject_type, subject_id, before, after, request_id)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(actor.user_id)
    .bind(&actor.name)
    .bind(&change.action)
    .bind(change.subject_type)
    .bind(change.subject_id)
    .bind(change.before)
    .bind(change.after)
    .bind(&actor.request_id)
    .execute(conn)
    .await?;
    Ok(())
}
