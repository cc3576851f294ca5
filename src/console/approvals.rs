//! Approvals: the requests waiting for a field admin's decision (a center admin's: all of
//! them), each with why it needs approval, when it expires, and approve / reject-with-reason
//! forms. The same use cases as `POST /projects/{id}/approve` and `/reject`.

use axum::Router;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use maud::{Markup, html};
use serde::Deserialize;

use super::layout;
use super::{OrPage, PageResult, PathId, Viewer, form_fields, parsed, status_of};
use crate::app::projects::{ProjectQuery, RejectProject};
use crate::app::{self, AppError, PageParams};
use crate::context::Context;
use crate::domain::project::ProjectStatus;
use crate::domain::scope::Action;
use crate::store::projects::Project;

pub fn routes() -> Router<Context> {
    Router::new()
        .route("/approvals", get(list))
        .route("/approvals/{id}/approve", post(approve))
        .route("/approvals/{id}/reject", post(reject))
}

#[derive(Debug, Default, Deserialize)]
struct ListQuery {
    cursor: Option<String>,
}

/// The approve and reject forms of a request waiting for approval, when the viewer may
/// decide it (also shown on the project's page).
pub fn decision_forms(viewer: &Viewer, project: &Project) -> Markup {
    let id = project.id;
    let may = viewer.caller().role.may(Action::DecideProject);
    html! {
        @if may && project.status == ProjectStatus::PendingApproval {
            div.row.decision {
                form method="post" action={ "/approvals/" (id) "/approve" } {
                    (form_fields(viewer))
                    button type="submit" { "Approve " (project.name) }
                }
                form.row method="post" action={ "/approvals/" (id) "/reject" } {
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
    let page = PageParams { limit: Some(50), cursor: parsed(&query.cursor) };
    let waiting = app::projects::list(ctx, caller, filter, page).await.or_page(viewer)?;
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
                (decision_forms(viewer, project))
            }
        }
        @if let Some(cursor) = &waiting.next_cursor {
            p { a href={ "/approvals?cursor=" (cursor) } { "More" } }
        }
    };
    Ok(layout::page("Approvals", Some(viewer), "/approvals", body))
}

async fn approve(State(ctx): State<Context>, viewer: Viewer, PathId(id): PathId) -> Response {
    let done = app::projects::approve(&ctx, viewer.caller(), id).await;
    decided(&ctx, &viewer, done.map(|_| ())).await
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
    axum::Form(form): axum::Form<RejectForm>,
) -> Response {
    let input = RejectProject { reason: form.reason };
    let done = app::projects::reject(&ctx, viewer.caller(), id, input).await;
    decided(&ctx, &viewer, done.map(|_| ())).await
}

/// Back to the list after a decision; the list with the refusal when there was one.
async fn decided(ctx: &Context, viewer: &Viewer, done: Result<(), AppError>) -> Response {
    match done {
        Ok(()) => Redirect::to("/approvals").into_response(),
        Err(err) => match render(ctx, viewer, ListQuery::default(), Some(&err)).await {
            Ok(page) => (status_of(&err), page).into_response(),
            Err(response) => response,
        },
    }
}
