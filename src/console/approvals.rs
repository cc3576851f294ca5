//! Approvals: what waits for a field admin's decision (a center admin's: all of it): project
//! requests, each with why it needs approval and when it expires, and quota requests, each
//! with the quota now and after and what the field has free; approve / reject-with-reason
//! forms. The same use cases as `POST /projects/{id}/approve`, `/reject` and
//! `POST /quota-requests/{id}/approve`, `/reject`.

use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use maud::{Markup, html};
use serde::Deserialize;

use super::layout;
use super::{Form, OrPage, PageResult, PathId, Query, Viewer, form_fields, parsed, status_of};
use crate::app::projects::{ProjectQuery, RejectProject};
use crate::app::quota_requests::{QuotaRequestQuery, QuotaRequestView, RejectQuotaRequest};
use crate::app::{self, AppError, PageParams};
use crate::context::Context;
use crate::domain::capacity::Resources;
use crate::domain::project::ProjectStatus;
use crate::domain::scope::Action;
use crate::store::projects::Project;

pub fn routes() -> Router<Context> {
    Router::new()
        .route("/approvals", get(list))
        .route("/approvals/{id}/approve", post(approve))
        .route("/approvals/{id}/reject", post(reject))
        .route("/quota-requests/{id}/approve", post(approve_quota))
        .route("/quota-requests/{id}/reject", post(reject_quota))
}

#[derive(Debug, Default, Deserialize)]
struct ListQuery {
    /// The next page of the projects waiting.
    cursor: Option<String>,
    /// The next page of the quota requests waiting.
    requests_cursor: Option<String>,
}

/// Items of each list per page.
const PAGE: u32 = 50;

/// The approve and reject forms of a request waiting for approval, when the viewer may
/// decide it (also shown on the project's page).
/// `back`: the query of the approvals page the forms are on (its lists' pages), which the
/// decision returns to; empty elsewhere.
pub fn decision_forms(viewer: &Viewer, project: &Project, back: &str) -> Markup {
    let id = project.id;
    let may = viewer.caller().role.may(Action::DecideProject);
    html! {
        @if may && project.status == ProjectStatus::PendingApproval {
            div.row.decision {
                form method="post" action={ "/approvals/" (id) "/approve" (back) } {
                    (form_fields(viewer))
                    button type="submit" { "Approve " (project.name) }
                }
                form.row method="post" action={ "/approvals/" (id) "/reject" (back) } {
                    (form_fields(viewer))
                    label for={ "reason-" (id) } { "Reason" }
                    input id={ "reason-" (id) } name="reason" required maxlength="500"
                        placeholder="shown to the team lead";
                    button.danger type="submit" { "Reject" }
                }
            }
        }
    }
}

async fn list(
    State(ctx): State<Context>,
    viewer: Viewer,
    Query(query): Query<ListQuery>,
) -> PageResult {
    render(&ctx, &viewer, query, None).await
}

async fn render(
    ctx: &Context,
    viewer: &Viewer,
    query: ListQuery,
    error: Option<&AppError>,
) -> PageResult {
    let caller = viewer.caller();
    let filter = ProjectQuery { site: None, status: Some(ProjectStatus::PendingApproval) };
    let page = PageParams { limit: Some(PAGE), cursor: parsed(&query.cursor) };
    let waiting = app::projects::list(ctx, caller, filter, page).await.or_page(viewer)?;
    let pending = QuotaRequestQuery { status: Some("pending".to_owned()), newest_first: None };
    let page = PageParams { limit: Some(PAGE), cursor: parsed(&query.requests_cursor) };
    let quota_requests =
        app::quota_requests::list(ctx, caller, pending, page).await.or_page(viewer)?;
    // Each list's "more" link keeps the page the other list is on; a decision comes back
    // to both pages.
    let back = back_to(&query);
    let kept = [
        ("cursor", query.cursor.clone().unwrap_or_default()),
        ("requests_cursor", query.requests_cursor.clone().unwrap_or_default()),
    ];
    let body = html! {
        h1 { "Approvals" }
        @if let Some(err) = error { (layout::error_box(err)) }
        p.muted {
            "Requests whose catalog entry or size needs approval. Their quota is already \
             reserved, so approving one never overcommits its department; rejecting one frees it."
        }
        @if waiting.items.is_empty() { p.empty { "Nothing waits for a decision." } }
        @for project in &waiting.items {
            section.card.approval id={ "approval-" (project.id) } {
                h2 { a href={ "/projects/" (project.id) } { (project.name) } " " (layout::badge(project.status.as_str())) }
                p.muted {
                    "namespace " code { (project.namespace) } " at " (project.site)
                    " · department " (project.department) " (field " (project.field) ")"
                }
                p { (project.sla_type) " / " (project.performance_tier) ": "
                    (project.cpu) " CPU, " (project.ram_gb) " GB RAM" }
                @if let Some(why) = &project.approval_reason { p { "Needs approval: " (why) } }
                p.muted {
                    "Asked " (layout::when(&project.created_at))
                    @if let Some(at) = &project.approval_expires_at { "; expires " (layout::when(at)) }
                }
                (decision_forms(viewer, project, &back))
            }
        }
        @if let Some(cursor) = &waiting.next_cursor {
            p { a href=(layout::next_page("/approvals", &kept, "cursor", &cursor.to_string())) { "More" } }
        }
        h2 { "Quota requests" }
        @if quota_requests.items.is_empty() { p.empty { "No team lead asks for more quota." } }
        @for view in &quota_requests.items { (quota_request(viewer, view, &back)) }
        @if let Some(cursor) = &quota_requests.next_cursor {
            p { a href=(layout::next_page("/approvals", &kept, "requests_cursor", &cursor.to_string())) { "More quota requests" } }
        }
    };
    Ok(layout::page("Approvals", Some(viewer), "/approvals", body))
}

/// A pending quota request: who asks for how much more and why, the quota now and after, what
/// the field has free for the department there, and the decision forms.
fn quota_request(viewer: &Viewer, view: &QuotaRequestView, back: &str) -> Markup {
    let r = &view.request;
    let show = |x: &Resources| format!("{} CPU, {} GB", x.cpu, x.ram_gb);
    html! {
        section.card.approval id={ "quota-request-" (r.id) } {
            h3 { (r.department) " at " (r.site) ": +" (r.cpu) " CPU, +" (r.ram_gb) " GB RAM" }
            p { "“" (r.reason) "” (" (r.requested_by_name) ", " (layout::when(&r.created_at)) ")" }
            @if let Some(fit) = &view.fit {
                p {
                    "Quota " (show(&fit.quota_now)) " → " strong { (show(&fit.quota_after)) }
                    "; the field has " (show(&fit.field_free)) " for it at " (r.site) ". "
                    @if fit.fits { span.fits { "It fits." } } @else { span.fits.no { "It does not fit." } }
                }
            }
            div.row.decision {
                form method="post" action={ "/quota-requests/" (r.id) "/approve" (back) } {
                    (form_fields(viewer))
                    button type="submit" { "Approve" }
                }
                form.row method="post" action={ "/quota-requests/" (r.id) "/reject" (back) } {
                    (form_fields(viewer))
                    label for={ "qr-reason-" (r.id) } { "Reason" }
                    input id={ "qr-reason-" (r.id) } name="reason" required maxlength="500"
                        placeholder="shown to the team lead";
                    button.danger type="submit" { "Reject" }
                }
            }
        }
    }
}

async fn approve_quota(
    State(ctx): State<Context>,
    viewer: Viewer,
    PathId(id): PathId,
    Query(query): Query<ListQuery>,
) -> Response {
    let done = app::quota_requests::approve(&ctx, viewer.caller(), id).await;
    decided(&ctx, &viewer, query, done.map(|_| ())).await
}

async fn reject_quota(
    State(ctx): State<Context>,
    viewer: Viewer,
    PathId(id): PathId,
    Query(query): Query<ListQuery>,
    Form(form): Form<RejectForm>,
) -> Response {
    let input = RejectQuotaRequest { reason: form.reason };
    let done = app::quota_requests::reject(&ctx, viewer.caller(), id, input).await;
    decided(&ctx, &viewer, query, done.map(|_| ())).await
}

async fn approve(
    State(ctx): State<Context>,
    viewer: Viewer,
    PathId(id): PathId,
    Query(query): Query<ListQuery>,
) -> Response {
    let done = app::projects::approve(&ctx, viewer.caller(), id).await;
    decided(&ctx, &viewer, query, done.map(|_| ())).await
}

#[derive(Debug, Default, Deserialize)]
struct RejectForm {
    #[serde(default)]
    reason: String,
}

async fn reject(
    State(ctx): State<Context>,
    viewer: Viewer,
    PathId(id): PathId,
    Query(query): Query<ListQuery>,
    Form(form): Form<RejectForm>,
) -> Response {
    let input = RejectProject { reason: form.reason };
    let done = app::projects::reject(&ctx, viewer.caller(), id, input).await;
    decided(&ctx, &viewer, query, done.map(|_| ())).await
}

/// Back to the list, on the pages it was on, after a decision; the list with the refusal
/// when there was one.
async fn decided(
    ctx: &Context,
    viewer: &Viewer,
    query: ListQuery,
    done: Result<(), AppError>,
) -> Response {
    match done {
        Ok(()) => Redirect::to(&format!("/approvals{}", back_to(&query))).into_response(),
        Err(err) => match render(ctx, viewer, query, Some(&err)).await {
            Ok(page) => (status_of(&err), page).into_response(),
            Err(response) => response,
        },
    }
}

/// The query (with its `?`) of the approvals page on the pages of `query`; empty on the
/// first pages.
fn back_to(query: &ListQuery) -> String {
    let mut serializer = url::form_urlencoded::Serializer::new(String::new());
    let pages = [("cursor", &query.cursor), ("requests_cursor", &query.requests_cursor)];
    for (key, value) in pages {
        if let Some(value) = value.as_deref().filter(|v| !v.is_empty()) {
            serializer.append_pair(key, value);
        }
    }
    let query = serializer.finish();
    if query.is_empty() { query } else { format!("?{query}") }
}
