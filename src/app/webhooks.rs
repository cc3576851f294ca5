//! Webhooks (center admins) and notifications: [`emit`] enqueues one `deliver_webhook` job per
//! enabled webhook that wants the event, in the caller's transaction, so a change and the
//! news of it commit together or not at all.

use rand::Rng;
use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::PgConnection;
use uuid::Uuid;

use super::jobs::{JobMeta, enqueue};
use super::{AppError, AppResult, Caller, PageParams, Submitted};
use crate::context::Context;
use crate::domain::ValidationError;
use crate::domain::name::Label;
use crate::domain::notification::{EventKind, Format, Notification};
use crate::domain::scope::{Action, Owner};
use crate::jobs::deliver_webhook::{DeliverWebhook, Delivery};
use crate::store::audit::{self, Change};
use crate::store::webhooks::{self as store, Webhook, WebhookValues};
use crate::store::{Page, StoreError};

/// A new webhook.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateWebhook {
    /// A DNS-1123 label.
    pub name: String,
    /// `http://` or `https://`.
    pub url: String,
    /// `json` (default) or `slack`.
    #[serde(default = "json_format")]
    pub format: Format,
    /// The events it is sent (see `EventKind`); absent or empty: all.
    #[serde(default)]
    pub events: Vec<String>,
    /// The HMAC-SHA256 key (16 to 200 characters); absent: one is generated and shown once.
    pub secret: Option<String>,
    #[serde(default = "yes")]
    pub enabled: bool,
}

fn json_format() -> Format {
    Format::Json
}

fn yes() -> bool {
    true
}

/// A change of a webhook; absent keys keep their value.
#[derive(Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateWebhook {
    pub url: Option<String>,
    pub format: Option<Format>,
    pub events: Option<Vec<String>>,
    pub secret: Option<String>,
    pub enabled: Option<bool>,
}

/// A webhook just created: with its secret, shown this once.
#[derive(Serialize, utoipa::ToSchema)]
pub struct CreatedWebhook {
    #[serde(flatten)]
    pub webhook: Webhook,
    pub secret: String,
}

// The secrets never print.
impl std::fmt::Debug for CreateWebhook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreateWebhook")
            .field("name", &self.name)
            .field("url", &self.url)
            .field("format", &self.format)
            .field("events", &self.events)
            .field("secret", &self.secret.as_ref().map(|_| "[redacted]"))
            .finish()
    }
}

impl std::fmt::Debug for UpdateWebhook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpdateWebhook")
            .field("url", &self.url)
            .field("events", &self.events)
            .field("enabled", &self.enabled)
            .field("secret", &self.secret.as_ref().map(|_| "[redacted]"))
            .finish()
    }
}

impl std::fmt::Debug for CreatedWebhook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreatedWebhook").field("webhook", &self.webhook).finish_non_exhaustive()
    }
}

/// An `http://` or `https://` URL as written (lower-case scheme, no spaces), with a host and
/// no user name or password in it (those would be shown in lists and audited).
fn check_url(url: &str) -> AppResult<()> {
    let refused = |why: &str| -> AppError { ValidationError::new("url", why.to_owned()).into() };
    if !(url.starts_with("http://") || url.starts_with("https://")) || url.len() > 2000 {
        return Err(refused("must be an http:// or https:// URL of at most 2000 characters"));
    }
    let parsed = url::Url::parse(url).map_err(|e| refused(&format!("not a URL: {e}")))?;
    if parsed.host().is_none() || url.chars().any(char::is_whitespace) {
        return Err(refused("must be an http:// or https:// URL with a host"));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(refused("must not carry a user name or password; use the signing secret"));
    }
    Ok(())
}

fn check_events(events: &[String]) -> AppResult<Vec<String>> {
    let mut names = Vec::new();
    for name in events {
        let event = EventKind::parse(name.trim())?;
        if !names.iter().any(|n| n == event.as_str()) {
            names.push(event.as_str().to_owned());
        }
    }
    Ok(names)
}

fn check_secret(secret: &str) -> AppResult<()> {
    if !(16..=200).contains(&secret.chars().count()) {
        return Err(ValidationError::new("secret", "must be 16 to 200 characters long").into());
    }
    Ok(())
}

fn generated_secret() -> String {
    let bytes: [u8; 24] = rand::rng().random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn duplicate(name: &str) -> impl Fn(StoreError) -> AppError + '_ {
    move |e| match e {
        StoreError::Duplicate { .. } => {
            AppError::conflict("already_exists", format!("a webhook named {name} exists"))
        }
        other => other.into(),
    }
}

pub async fn create(
    ctx: &Context,
    caller: &Caller,
    input: CreateWebhook,
) -> AppResult<CreatedWebhook> {
    caller.authorize(Action::ManageOrganisation)?;
    let name = Label::parse("name", &input.name)?;
    check_url(&input.url)?;
    let events = check_events(&input.events)?;
    let secret = input.secret.unwrap_or_else(generated_secret);
    check_secret(&secret)?;
    let values = WebhookValues {
        name: name.as_str(),
        url: &input.url,
        format: input.format.as_str(),
        secret: &secret,
        events: &events,
        enabled: input.enabled,
    };
    let mut tx = ctx.pool.begin().await?;
    let id = store::insert(&mut tx, &values).await.map_err(duplicate(name.as_str()))?;
    let webhook = store::get(&mut tx, id).await?;
    // The secret is never audited: the row shown has none.
    audit::record(&mut tx, &caller.actor(), Change::create("webhook", id, &webhook)).await?;
    super::commit(tx).await?;
    Ok(CreatedWebhook { webhook, secret })
}

pub async fn list(ctx: &Context, caller: &Caller, page: PageParams) -> AppResult<Page<Webhook>> {
    caller.authorize(Action::ManageOrganisation)?;
    let page = page.request()?;
    Ok(store::list(&mut *ctx.pool.acquire().await?, page).await?)
}

pub async fn get(ctx: &Context, caller: &Caller, id: Uuid) -> AppResult<Webhook> {
    caller.authorize(Action::ManageOrganisation)?;
    let mut conn = ctx.pool.acquire().await?;
    store::get(&mut conn, id).await.map_err(|e| AppError::from_store("webhook", e))
}

pub async fn update(
    ctx: &Context,
    caller: &Caller,
    id: Uuid,
    input: UpdateWebhook,
) -> AppResult<Webhook> {
    caller.authorize(Action::ManageOrganisation)?;
    if let Some(url) = &input.url {
        check_url(url)?;
    }
    if let Some(secret) = &input.secret {
        check_secret(secret)?;
    }
    let events = input.events.as_deref().map(check_events).transpose()?;
    let mut tx = ctx.pool.begin().await?;
    let (before, secret) =
        store::secret_of(&mut tx, id).await?.ok_or_else(|| AppError::not_found("webhook"))?;
    let format = input.format.map(Format::as_str).unwrap_or(before.format.as_str()).to_owned();
    let values = WebhookValues {
        name: &before.name,
        url: input.url.as_deref().unwrap_or(&before.url),
        format: &format,
        secret: input.secret.as_deref().unwrap_or(&secret),
        events: events.as_deref().unwrap_or(&before.events),
        enabled: input.enabled.unwrap_or(before.enabled),
    };
    store::update(&mut tx, id, &values).await?;
    let after = store::get(&mut tx, id).await?;
    let change = Change::new("webhook", "update", id)
        .before(&before)
        .after(&json!({ "webhook": after, "secret_changed": input.secret.is_some() }));
    audit::record(&mut tx, &caller.actor(), change).await?;
    super::commit(tx).await?;
    Ok(after)
}

pub async fn delete(ctx: &Context, caller: &Caller, id: Uuid) -> AppResult<()> {
    caller.authorize(Action::ManageOrganisation)?;
    let mut tx = ctx.pool.begin().await?;
    let before = store::get(&mut tx, id).await.map_err(|e| AppError::from_store("webhook", e))?;
    store::delete(&mut tx, id).await?;
    audit::record(&mut tx, &caller.actor(), Change::new("webhook", "delete", id).before(&before))
        .await?;
    super::commit(tx).await
}

/// Sends the webhook a `ping` now (whatever events it wants): 202 with the delivery job.
pub async fn ping(ctx: &Context, caller: &Caller, id: Uuid) -> AppResult<Submitted> {
    caller.authorize(Action::ManageOrganisation)?;
    let mut tx = ctx.pool.begin().await?;
    let hook = store::get(&mut tx, id).await.map_err(|e| AppError::from_store("webhook", e))?;
    let note = Notification::new(
        EventKind::Ping,
        format!("a test of webhook {} by {}", hook.name, caller.username),
        json!({ "webhook": hook.name, "by": caller.username }),
    );
    let enqueued = deliver(&mut tx, ctx, id, &note, JobMeta::by(caller)).await?;
    let change = Change::new("webhook", "ping", id).after(&json!({ "job_id": enqueued.job.id }));
    audit::record(&mut tx, &caller.actor(), change).await?;
    super::commit(tx).await?;
    Ok(enqueued)
}

async fn deliver(
    conn: &mut PgConnection,
    ctx: &Context,
    webhook_id: Uuid,
    note: &Notification,
    meta: JobMeta,
) -> AppResult<Submitted> {
    let payload = Delivery {
        webhook_id,
        notification: note.clone(),
        occurred_at: chrono::Utc::now().to_rfc3339(),
    };
    let meta = meta.about("webhook", webhook_id, Owner::default());
    Ok(enqueue::<DeliverWebhook>(conn, ctx, &payload, meta).await?.into())
}

/// Tells every enabled webhook that wants `note`'s event, in the caller's transaction: one
/// delivery job each.
pub async fn emit(conn: &mut PgConnection, ctx: &Context, note: Notification) -> AppResult<()> {
    let hooks = store::subscribed(conn, note.event.as_str()).await?;
    for id in hooks {
        deliver(conn, ctx, id, &note, JobMeta::system("notify")).await?;
    }
    Ok(())
}
