//! Webhooks (center admins): the list, a form to add one (its secret shown once), and per
//! webhook: on/off, a test ping, removal. The same use cases as `/api/v1/admin/webhooks`.

use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use maud::html;

use super::layout::{self, badge};
use super::{OrPage, PageResult, PathId, Viewer, form_fields, status_of};
use crate::app::webhooks::{CreateWebhook, UpdateWebhook};
use crate::app::{self, AppError, PageParams};
use crate::context::Context;
use crate::domain::notification::{EventKind, Format};

pub fn routes() -> Router<Context> {
    Router::new()
        .route("/webhooks", get(list).post(add))
        .route("/webhooks/{id}/toggle", post(toggle))
        .route("/webhooks/{id}/ping", post(ping))
        .route("/webhooks/{id}/delete", post(remove))
}

async fn list(State(ctx): State<Context>, viewer: Viewer) -> PageResult {
    render(&ctx, &viewer, None, None).await
}

/// The page; `created` carries a new webhook's name and secret, shown this once.
async fn render(
    ctx: &Context,
    viewer: &Viewer,
    error: Option<&AppError>,
    created: Option<(String, String)>,
) -> PageResult {
    let page = PageParams { limit: Some(100), cursor: None };
    let hooks = app::webhooks::list(ctx, viewer.caller(), page).await.or_page(viewer)?;
    let body = html! {
        h1 { "Webhooks" }
        @if let Some(err) = error { (layout::error_box(err)) }
        @if let Some((name, secret)) = &created {
            div.card.notice role="status" {
                p { "Webhook " strong { (name) } " added. Its signing secret, shown this once: " code { (secret) } }
            }
        }
        p.muted {
            "Each event a webhook wants is POSTed to it as a durable job (retried on 5xx), signed: "
            code { "X-InfraHub-Signature: sha256=HMAC-SHA256(secret, timestamp + \".\" + body)" } "."
        }
        @if hooks.items.is_empty() { p.empty { "No webhooks yet." } }
        @for hook in &hooks.items {
            section.card id={ "webhook-" (hook.name) } {
                h2 { (hook.name) " " (badge(if hook.enabled { "on" } else { "off" })) }
                p { code { (hook.url) } " · " (hook.format) " · "
                    @if hook.events.is_empty() { "all events" } @else { (hook.events.join(", ")) } }
                div.row {
                    form method="post" action={ "/webhooks/" (hook.id) "/toggle" } {
                        (form_fields(viewer))
                        button type="submit" { @if hook.enabled { "Turn off" } @else { "Turn on" } }
                    }
                    form method="post" action={ "/webhooks/" (hook.id) "/ping" } {
                        (form_fields(viewer))
                        button type="submit" { "Send a test" }
                    }
                    form method="post" action={ "/webhooks/" (hook.id) "/delete" } {
                        (form_fields(viewer))
                        button.danger type="submit" { "Remove" }
                    }
                }
            }
        }
        section.card aria-labelledby="add-webhook" {
            h2 #add-webhook { "Add a webhook" }
            form method="post" action="/webhooks" {
                (form_fields(viewer))
                div.row {
                    div { label for="hook-name" { "Name" } input #hook-name name="name" required; }
                    div { label for="hook-url" { "URL" } input #hook-url name="url" type="url" required; }
                    div { label for="hook-format" { "Format" }
                        select #hook-format name="format" {
                            option value="json" { "JSON" }
                            option value="slack" { "Slack" }
                        } }
                }
                fieldset {
                    legend { "Events (none ticked: all)" }
                    @for event in EventKind::ALL {
                        label { input type="checkbox" name="events" value=(event.as_str()); " " (event.as_str()) }
                    }
                }
                p { button type="submit" { "Add" } }
            }
        }
    };
    Ok(layout::page("Webhooks", Some(viewer), "/webhooks", body))
}

async fn answer(ctx: &Context, viewer: &Viewer, done: Result<(), AppError>) -> Response {
    match done {
        Ok(()) => Redirect::to("/webhooks").into_response(),
        Err(err) => match render(ctx, viewer, Some(&err), None).await {
            Ok(page) => (status_of(&err), page).into_response(),
            Err(response) => response,
        },
    }
}

async fn add(State(ctx): State<Context>, viewer: Viewer, form: axum::body::Bytes) -> Response {
    // `events` repeats, which a plain struct cannot hold.
    let mut input = CreateWebhook {
        name: String::new(),
        url: String::new(),
        format: Format::Json,
        events: Vec::new(),
        secret: None,
        enabled: true,
    };
    for (key, value) in url::form_urlencoded::parse(&form) {
        match key.as_ref() {
            "name" => input.name = value.trim().to_owned(),
            "url" => input.url = value.trim().to_owned(),
            "format" if value == "slack" => input.format = Format::Slack,
            "events" => input.events.push(value.into_owned()),
            _ => {}
        }
    }
    match app::webhooks::create(&ctx, viewer.caller(), input).await {
        Ok(created) => {
            let shown = Some((created.webhook.name.clone(), created.secret.clone()));
            match render(&ctx, &viewer, None, shown).await {
                Ok(page) => page.into_response(),
                Err(response) => response,
            }
        }
        Err(err) => answer(&ctx, &viewer, Err(err)).await,
    }
}

async fn toggle(State(ctx): State<Context>, viewer: Viewer, PathId(id): PathId) -> Response {
    let done = async {
        let hook = app::webhooks::get(&ctx, viewer.caller(), id).await?;
        let change = UpdateWebhook { enabled: Some(!hook.enabled), ..UpdateWebhook::default() };
        app::webhooks::update(&ctx, viewer.caller(), id, change).await.map(|_| ())
    }
    .await;
    answer(&ctx, &viewer, done).await
}

async fn ping(State(ctx): State<Context>, viewer: Viewer, PathId(id): PathId) -> Response {
    let done = app::webhooks::ping(&ctx, viewer.caller(), id).await.map(|_| ());
    answer(&ctx, &viewer, done).await
}

async fn remove(State(ctx): State<Context>, viewer: Viewer, PathId(id): PathId) -> Response {
    let done = app::webhooks::delete(&ctx, viewer.caller(), id).await;
    answer(&ctx, &viewer, done).await
}
