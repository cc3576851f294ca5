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

/// One event of the trail, as it is read back.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct AuditEvent {
    /// Increasing with time; pass the last one seen as `cursor` to read older events.
    pub id: i64,
    pub occurred_at: chrono::DateTime<chrono::Utc>,
    /// The account that acted, absent for the system (jobs, CLI, demo, failed logins).
    pub actor_id: Option<Uuid>,
    /// A username, `system:<name>` or `job:<id>`.
    pub actor: String,
    /// `<subject_type>.<verb>`, e.g. `project.create` or `login.failed`.
    pub action: String,
    pub subject_type: String,
    pub subject_id: String,
    /// The fields the subject belonged to when the event was written: before and after a
    /// change that crosses fields, both.
    pub field_ids: Vec<Uuid>,
    pub before: Option<Value>,
    pub after: Option<Value>,
    pub request_id: Option<String>,
}

/// Which events a query returns; every filter is optional.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    /// Only events of this field (a field admin's reading).
    pub field_id: Option<Uuid>,
    pub actor: Option<String>,
    pub subject_type: Option<String>,
    pub subject_id: Option<String>,
    /// An exact action (`project.create`) or a prefix ending in `.` (`project.`).
    pub action: Option<String>,
    pub since: Option<chrono::DateTime<chrono::Utc>>,
    pub until: Option<chrono::DateTime<chrono::Utc>>,
    /// Events older than this id (the previous page's `next_cursor`).
    pub before_id: Option<i64>,
}

/// Newest first, `limit` of them plus one to tell whether another page follows.
#[tracing::instrument(skip_all)]
pub async fn list(
    conn: &mut PgConnection,
    filter: &AuditFilter,
    limit: u32,
) -> Result<Vec<AuditEvent>, sqlx::Error> {
    let action_prefix = filter.action.as_deref().filter(|a| a.ends_with('.'));
    let action_exact = filter.action.as_deref().filter(|a| !a.ends_with('.'));
    sqlx::query_as(
        "SELECT id, occurred_at, actor_id, actor, action, subject_type, subject_id, field_ids,
                before, after, request_id
           FROM audit_events
          WHERE ($1::uuid IS NULL OR field_ids @> ARRAY[$1::uuid])
            AND ($2::text IS NULL OR actor = $2)
            AND ($3::text IS NULL OR subject_type = $3)
            AND ($4::text IS NULL OR subject_id = $4)
            AND ($5::text IS NULL OR action = $5)
            AND ($6::text IS NULL OR starts_with(action, $6))
            AND ($7::timestamptz IS NULL OR occurred_at >= $7)
            AND ($8::timestamptz IS NULL OR occurred_at < $8)
            AND ($9::bigint IS NULL OR id < $9)
          ORDER BY id DESC
          LIMIT $10",
    )
    .bind(filter.field_id)
    .bind(&filter.actor)
    .bind(&filter.subject_type)
    .bind(&filter.subject_id)
    .bind(action_exact)
    .bind(action_prefix)
    .bind(filter.since)
    .bind(filter.until)
    .bind(filter.before_id)
    .bind(i64::from(limit) + 1)
    .fetch_all(conn)
    .await
}
