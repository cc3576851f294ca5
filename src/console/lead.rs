//! Projects: the team lead's screens (also open to the admins who may read a project).
//! The dashboard (cards whose status badges follow a running job, quota bars per site), the
//! new-project form with its cost and fit shown before submitting, and the project page
//! (namespace, quota, manifests, job timeline, resize, retry, delete confirmed by name).

use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use maud::{Markup, html};
use serde::Deserialize;
use uuid::Uuid;

use super::layout::{self, badge, quota_bar};
use super::{
    Form, OrPage, PageResult, PathId, Query, Viewer, error_page, form_fields, parsed, status_of,
    stop_polling,
};
use crate::app::jobs::JobQuery;
use crate::app::projects::{CreateProject, ProjectQuery, ResizeProject};
use crate::app::quota_requests::{AskQuota, QuotaRequestQuery};
use crate::app::{self, AppError, PageParams};
use crate::context::Context;
use crate::domain::catalog::Catalog;
use crate::domain::project::ProjectStatus;
use crate::domain::scope::Action;
use crate::store::Page;
use crate::store::projects::Project;

pub fn routes() -> Router<Context> {
    Router::new()
        .route("/projects", get(dashboard).post(create))
        .route("/quota-requests", post(ask_quota))
        .route("/projects/new", get(new_form))
        .route("/projects/new/preview", get(preview))
        .route("/projects/{id}", get(project_page))
        .route("/projects/{id}/card", get(card_fragment))
        .route("/projects/{id}/status", get(status_fragment))
        .route("/projects/{id}/resize", post(resize))
        .route("/projects/{id}/retry", post(retry))
        .route("/projects/{id}/delete", post(delete))
        .route("/projects/{id}/restore", post(restore))
}

fn transient(status: ProjectStatus) -> bool {
    matches!(
        status,
        ProjectStatus::Provisioning | ProjectStatus::Degraded | ProjectStatus::Deleting
    )
}

/// A project's card; while a job moves it on, it reloads itself every two seconds.
fn card(project: &Project) -> Markup {
    let id = project.id;
    html! {
        @if transient(project.status) {
            article.card id={ "project-" (id) } hx-get={ "/projects/" (id) "/card" }
                hx-trigger="every 2s" hx-swap="outerHTML" {
                (card_body(project))
            }
        } @else {
            article.card id={ "project-" (id) } { (card_body(project)) }
        }
    }
}

fn card_body(project: &Project) -> Markup {
    html! {
        h2 { a href={ "/projects/" (project.id) } { (project.name) } " " (badge(project.status.as_str())) }
        p.muted { "namespace " code { (project.namespace) } " at " (project.site) }
        p { (project.sla_type) " / " (project.performance_tier) ": " (project.cpu) " CPU, " (project.ram_gb) " GB RAM" }
        @if let Some(reason) = &project.failure_reason { p.fits.no { (reason) } }
        @if let Some(at) = &project.delete_at { p.fits.no { "Deleted at " (layout::when(at)) " unless restored" } }
    }
}

#[derive(Debug, Default, Deserialize)]
struct ListQuery {
    cursor: Option<String>,
    status: Option<String>,
    /// The next page of the department's quota requests (newest first).
    requests_cursor: Option<String>,
}

/// The department's quota requests shown per page, newest first.
const REQUESTS_PAGE: u32 = 10;

async fn dashboard(
    State(ctx): State<Context>,
    viewer: Viewer,
    Query(query): Query<ListQuery>,
) -> PageResult {
    render_dashboard(&ctx, &viewer, query, None).await
}

async fn render_dashboard(
    ctx: &Context,
    viewer: &Viewer,
    query: ListQuery,
    error: Option<&AppError>,
) -> PageResult {
    let caller = viewer.caller();
    let status: Option<ProjectStatus> = parsed(&query.status);
    let filter = ProjectQuery { site: None, status };
    let page = PageParams { limit: Some(24), cursor: parsed(&query.cursor) };
    let projects = app::projects::list(ctx, caller, filter, page).await.or_page(viewer)?;
    let quota = match caller.scope.department_id() {
        Some(dept) => {
            Some(app::allocation::department_quota(ctx, caller, dept).await.or_page(viewer)?)
        }
        None => None,
    };
    let title = match &quota {
        Some(quota) => format!("Projects of {}", quota.department),
        None => "Projects".to_owned(),
    };
    let requests = match quota {
        Some(_) => {
            let cursor = parsed(&query.requests_cursor);
            let page = PageParams { limit: Some(REQUESTS_PAGE), cursor };
            let newest = QuotaRequestQuery { status: None, newest_first: Some(true) };
            app::quota_requests::list(ctx, caller, newest, page).await.or_page(viewer)?
        }
        None => Page { items: Vec::new(), next_cursor: None },
    };
    // Each list's "more" link keeps the filter and the page the other list is on.
    let kept = [
        ("status", status.map(|s| s.to_string()).unwrap_or_default()),
        ("cursor", query.cursor.clone().unwrap_or_default()),
        ("requests_cursor", query.requests_cursor.clone().unwrap_or_default()),
    ];
    let body = html! {
        h1 { (title) }
        @if let Some(err) = error { (layout::error_box(err)) }
        @if let Some(quota) = &quota {
            section.card aria-labelledby="quota-title" {
                h2 #quota-title { "Quota per site" }
                @if quota.sites.is_empty() {
                    p.empty { "Your department has no quota yet: ask your field admin for one." }
                }
                @for site in &quota.sites {
                    h3 { (site.site) }
                    (quota_bar(site))
                }
            }
            p { a.button href="/projects/new" { "New project" } }
            section.card aria-labelledby="more-quota" {
                h2 #more-quota { "Ask for more quota" }
                @if !requests.items.is_empty() {
                    div.scroll { table {
                        thead { tr { th { "Site" } th { "More" } th { "Why" } th { "Status" } th { "Decision" } } }
                        tbody { @for r in &requests.items {
                            tr {
                                td { (r.request.site) }
                                td { "+" (r.request.cpu) " CPU, +" (r.request.ram_gb) " GB" }
                                td { (r.request.reason) }
                                td { (badge(&r.request.status)) }
                                td { @if let Some(by) = &r.request.decided_by_name {
                                    (by) @if let Some(why) = &r.request.decision_reason { ": " (why) }
                                } }
                            }
                        } }
                    } }
                    @if let Some(cursor) = &requests.next_cursor {
                        p { a href={ (layout::next_page("/projects", &kept, "requests_cursor", &cursor.to_string())) "#more-quota" } { "Older requests" } }
                    }
                }
                form method="post" action="/quota-requests" {
                    (form_fields(viewer))
                    div.row {
                        div { label for="ask-site" { "Site" }
                            input #ask-site name="site" required list="quota-sites";
                            datalist #quota-sites { @for site in &quota.sites { option value=(site.site) {} } } }
                        div { label for="ask-cpu" { "More CPU" } input #ask-cpu name="cpu" type="number" min="0" value="0"; }
                        div { label for="ask-ram" { "More RAM (GB)" } input #ask-ram name="ram_gb" type="number" min="0" value="0"; }
                    }
                    label for="ask-reason" { "Why" }
                    input #ask-reason name="reason" required maxlength="500";
                    p { button type="submit" { "Ask the field admin" } }
                }
            }
        }
        @if projects.items.is_empty() {
            div.card.empty {
                p { "No projects yet." }
                @if quota.is_some() { p { a href="/projects/new" { "Create your first project" } } }
            }
        } @else {
            div.cards { @for project in &projects.items { (card(project)) } }
        }
        (layout::pager("/projects", &kept, projects.next_cursor.map(|c| c.to_string())))
    };
    Ok(layout::page(&title, Some(viewer), "/projects", body))
}

#[derive(Debug, Default, Deserialize)]
struct AskForm {
    #[serde(default)]
    site: String,
    #[serde(default)]
    cpu: String,
    #[serde(default)]
    ram_gb: String,
    #[serde(default)]
    reason: String,
}

async fn ask_quota(
    State(ctx): State<Context>,
    viewer: Viewer,
    Form(form): Form<AskForm>,
) -> Response {
    let number = |field: &str, value: &str| {
        value.trim().parse::<u32>().map_err(|_| {
            AppError::invalid("invalid_value", format!("{field}: a whole number of 0 or more"))
        })
    };
    let input = number("CPU", &form.cpu).and_then(|cpu| {
        number("RAM", &form.ram_gb).map(|ram_gb| AskQuota {
            site: form.site.trim().to_owned(),
            cpu,
            ram_gb,
            reason: form.reason.clone(),
        })
    });
    let done = match input {
        Ok(input) => app::quota_requests::ask(&ctx, viewer.caller(), input).await.map(|_| ()),
        Err(err) => Err(err),
    };
    match done {
        Ok(()) => Redirect::to("/projects").into_response(),
        Err(err) => match render_dashboard(&ctx, &viewer, ListQuery::default(), Some(&err)).await {
            Ok(page) => (status_of(&err), page).into_response(),
            Err(response) => response,
        },
    }
}

async fn card_fragment(State(ctx): State<Context>, viewer: Viewer, PathId(id): PathId) -> Response {
    match app::projects::get(&ctx, viewer.caller(), id).await {
        Ok(project) => card(&project).into_response(),
        Err(err) => (stop_polling(), layout::error_box(&err)).into_response(),
    }
}

/// While a job works on the project: a line saying so; once it is done, `HX-Refresh` so the
/// page shows the outcome.
async fn status_fragment(
    State(ctx): State<Context>,
    viewer: Viewer,
    PathId(id): PathId,
) -> Response {
    match app::projects::get(&ctx, viewer.caller(), id).await {
        Ok(project) if transient(project.status) => html! {
            "A job is working on this project (" (project.status.as_str()) "); this page reloads when it is done."
        }
        .into_response(),
        Ok(_) => ([("hx-refresh", "true")], "").into_response(),
        Err(err) => (stop_polling(), layout::error_box(&err)).into_response(),
    }
}

/// What the form posts; missing fields are reported by the use case's validation.
#[derive(Debug, Default, Deserialize)]
struct NewProject {
    #[serde(default)]
    name: String,
    #[serde(default)]
    site: String,
    #[serde(default)]
    sla_type: String,
    #[serde(default)]
    performance_tier: String,
    /// Optional time to live, in days.
    #[serde(default)]
    lifetime_days: String,
}

fn select(name: &str, label: &str, options: &[String], chosen: &str) -> Markup {
    html! {
        div {
            label for=(name) { (label) }
            select id=(name) name=(name) required {
                @for option in options {
                    option value=(option) selected[option == chosen] { (option) }
                }
            }
        }
    }
}

fn sla_types(catalog: &Catalog) -> Vec<String> {
    catalog.0.keys().cloned().collect()
}

fn tiers(catalog: &Catalog) -> Vec<String> {
    let mut tiers: Vec<String> = catalog.0.values().flat_map(|t| t.keys().cloned()).collect();
    tiers.sort();
    tiers.dedup();
    tiers
}

async fn new_form(State(ctx): State<Context>, viewer: Viewer) -> PageResult {
    new_page(&ctx, &viewer, &NewProject::default(), None).await.map(|(_, page)| page)
}

async fn new_page(
    ctx: &Context,
    viewer: &Viewer,
    input: &NewProject,
    error: Option<&AppError>,
) -> Result<(u16, Markup), Response> {
    let caller = viewer.caller();
    let Some(dept) = caller.scope.department_id() else {
        let err =
            AppError::forbidden("projects are created by team leads, in their own department");
        return Err(error_page(Some(viewer), &err));
    };
    let quota = app::allocation::department_quota(ctx, caller, dept).await.or_page(viewer)?;
    let sites: Vec<String> = quota.sites.iter().map(|s| s.site.clone()).collect();
    let catalog = app::projects::catalog(ctx, caller);
    let preview = fit(ctx, viewer, input).await;
    let body = html! {
        h1 { "New project" }
        @if let Some(err) = error { (layout::error_box(err)) }
        @if sites.is_empty() {
            div.card.empty { "Your department has no quota at any site yet: ask your field admin for one." }
        } @else {
            form.card method="post" action="/projects" hx-boost="false" {
                (form_fields(viewer))
                label for="name" { "Name" }
                input #name name="name" required pattern="[a-z0-9]([-a-z0-9]*[a-z0-9])?" maxlength="63"
                    value=(input.name) aria-describedby="name-help";
                p.muted #name-help { "Lower-case letters, digits and dashes; the namespace is "
                    code { (quota.department) "-<name>" } "." }
                div.row hx-get="/projects/new/preview" hx-trigger="change" hx-target="#preview"
                    hx-include="#site,#sla_type,#performance_tier" {
                    (select("site", "Site", &sites, &input.site))
                    (select("sla_type", "SLA type", &sla_types(catalog), &input.sla_type))
                    (select("performance_tier", "Performance tier", &tiers(catalog), &input.performance_tier))
                }
                div #preview aria-live="polite" { (preview) }
                label for="lifetime_days" { "Delete it automatically after (days, optional)" }
                input #lifetime_days name="lifetime_days" type="number" min="1" max="3650"
                    value=(input.lifetime_days) aria-describedby="lifetime-help";
                p.muted #lifetime-help { "For short-lived work: once the time is up its deletion is scheduled, and it can still be restored during the grace period." }
                p { button type="submit" { "Create project" } }
            }
            h2 { "Catalog" }
            div.scroll { table {
                thead { tr { th { "SLA type" } th { "Tier" } th { "CPU" } th { "RAM" } } }
                tbody {
                    @for (sla, tiers) in &catalog.0 { @for (tier, entry) in tiers {
                        tr { td { (sla) } td { (tier) } td { (entry.cpu) } td { (entry.ram_gb) " GB" } }
                    } }
                }
            } }
        }
    };
    let status = error.map_or(200, |e| status_of(e).as_u16());
    Ok((status, layout::page("New project", Some(viewer), "/projects/new", body)))
}

/// What the chosen sizing costs and whether it fits the department's free quota at the site.
async fn fit(ctx: &Context, viewer: &Viewer, input: &NewProject) -> Markup {
    let catalog = app::projects::catalog(ctx, viewer.caller());
    let sla = if input.sla_type.is_empty() {
        sla_types(catalog).into_iter().next()
    } else {
        Some(input.sla_type.clone())
    };
    let tier = if input.performance_tier.is_empty() {
        tiers(catalog).into_iter().next()
    } else {
        Some(input.performance_tier.clone())
    };
    let (Some(sla), Some(tier)) = (sla, tier) else { return html! {} };
    let entry = match catalog.entry(&sla, &tier) {
        Ok(entry) => entry.clone(),
        Err(err) => return layout::error_text(&err.to_string()),
    };
    let Some(dept) = viewer.caller().scope.department_id() else { return html! {} };
    let free = match app::allocation::department_quota(ctx, viewer.caller(), dept).await {
        Ok(quota) => {
            let site = if input.site.is_empty() {
                quota.sites.first()
            } else {
                quota.sites.iter().find(|s| s.site == input.site)
            };
            site.map(|s| (s.site.clone(), s.free))
        }
        Err(err) => return layout::error_box(&err),
    };
    let wanted = entry.resources();
    let approval = app::projects::approval_needed(ctx, &sla, &tier);
    html! {
        @if let Some(why) = approval {
            p.notice { "Needs a field admin's approval: " (why) ". Its quota is reserved meanwhile." }
        }
        p {
            "Costs " strong { (wanted.cpu) " CPU, " (wanted.ram_gb) " GB RAM" } " of your quota"
            @if let Some((site, free)) = free {
                " at " (site) " (free: " (free.cpu) " CPU, " (free.ram_gb) " GB). "
                @if wanted.fits_in(free) {
                    span.fits { "It fits." }
                } @else {
                    span.fits.no { "It does not fit." }
                }
            }
        }
    }
}

async fn preview(
    State(ctx): State<Context>,
    viewer: Viewer,
    Query(input): Query<NewProject>,
) -> Markup {
    fit(&ctx, &viewer, &input).await
}

async fn create(
    State(ctx): State<Context>,
    viewer: Viewer,
    Form(input): Form<NewProject>,
) -> Response {
    let lifetime = match input.lifetime_days.trim() {
        "" => Ok(None),
        days => match days.parse::<i64>() {
            Ok(days @ 1..=3650) => Ok(Some(chrono::Utc::now() + chrono::Duration::days(days))),
            _ => Err(AppError::invalid(
                "invalid_value",
                "lifetime: a whole number of days from 1 to 3650, or nothing",
            )),
        },
    };
    let done = match lifetime {
        Ok(expires_at) => {
            let request = CreateProject {
                name: input.name.clone(),
                site: input.site.clone(),
                sla_type: input.sla_type.clone(),
                performance_tier: input.performance_tier.clone(),
                expires_at,
            };
            app::projects::create(&ctx, viewer.caller(), request).await
        }
        Err(err) => Err(err),
    };
    match done {
        Ok(done) => Redirect::to(&format!("/projects/{}", done.project.id)).into_response(),
        Err(err) => match new_page(&ctx, &viewer, &input, Some(&err)).await {
            Ok((status, page)) => (
                axum::http::StatusCode::from_u16(status)
                    .unwrap_or(axum::http::StatusCode::UNPROCESSABLE_ENTITY),
                page,
            )
                .into_response(),
            Err(response) => response,
        },
    }
}

async fn project_page(
    State(ctx): State<Context>,
    viewer: Viewer,
    PathId(id): PathId,
) -> PageResult {
    render_project(&ctx, &viewer, id, None).await
}

async fn render_project(
    ctx: &Context,
    viewer: &Viewer,
    id: Uuid,
    error: Option<&AppError>,
) -> PageResult {
    let caller = viewer.caller();
    let project = app::projects::get(ctx, caller, id).await.or_page(viewer)?;
    let spec = app::projects::spec(ctx, &project).await.or_page(viewer)?;
    let manifests = crate::domain::manifests::render(&spec);
    let query = JobQuery { kind: None, status: None, subject: Some(format!("project:{id}")) };
    let jobs = app::jobs::list(ctx, caller, query, PageParams { limit: Some(20), cursor: None })
        .await
        .or_page(viewer)?;
    let catalog = app::projects::catalog(ctx, caller);
    let live = !project.status.is_final();
    let grace = app::projects::deletion_grace(ctx);
    let body = html! {
        h1 { (project.name) " " (badge(project.status.as_str())) }
        @if let Some(err) = error { (layout::error_box(err)) }
        @if transient(project.status) {
            p.muted hx-get={ "/projects/" (id) "/status" } hx-trigger="every 2s" {
                "A job is working on this project; this page reloads when it is done."
            }
        }
        @if let Some(reason) = &project.failure_reason { (layout::error_text(reason)) }
        @if let (ProjectStatus::DeletionScheduled, Some(at)) = (project.status, &project.delete_at) {
            section.card.notice aria-labelledby="scheduled" {
                h2 #scheduled { "Scheduled for deletion" }
                p { "Its namespace goes at " strong { (layout::when(at)) } "; until then it keeps its namespace and quota, and restoring it cancels the deletion." }
                @if caller.role.may(Action::ChangeProject) {
                    form method="post" action={ "/projects/" (id) "/restore" } {
                        (form_fields(viewer))
                        p { button type="submit" { "Restore " (project.name) } }
                    }
                }
            }
        }
        @if project.status == ProjectStatus::PendingApproval {
            section.card.notice aria-labelledby="approval" {
                h2 #approval { "Waiting for approval" }
                p {
                    (project.approval_reason.as_deref().unwrap_or("it needs approval"))
                    ". Its quota is reserved; a field admin approves or rejects it"
                    @if let Some(at) = &project.approval_expires_at { " before " (layout::when(at)) }
                    "."
                }
                (super::approvals::decision_forms(viewer, &project, ""))
            }
        }
        section.card {
            div.scroll { table {
                tbody {
                    tr { th { "Namespace" } td { code { (project.namespace) } } }
                    tr { th { "Site" } td { (project.site) } }
                    tr { th { "Department" } td { (project.department) " (field " (project.field) ")" } }
                    tr { th { "SLA type / tier" } td { (project.sla_type) " / " (project.performance_tier) } }
                    tr { th { "Quota" } td { (project.cpu) " CPU, " (project.ram_gb) " GB RAM"
                        @if let Some(extra) = project.extra_quota.as_object() {
                            @for (key, value) in extra { ", " (key) " " (value.as_str().unwrap_or_default()) }
                        } } }
                    @if let Some(at) = &project.expires_at {
                        tr { th { "Time to live" } td { "until " (layout::when(at)) } }
                    }
                    @if let (Some(cpu), Some(ram), Some(at)) = (project.used_cpu, project.used_ram_gb, &project.usage_at) {
                        tr { th { "Actually in use" } td { (layout::amount(cpu)) " CPU, " (layout::amount(ram)) " GB RAM "
                            span.muted { "(read " (layout::when(at)) ")" }
                            @if project.oversized { p.notice { "Under half of its quota for 30 days: a smaller tier would do." } } } }
                    }
                    tr { th { "Created" } td { (layout::when(&project.created_at)) } }
                    tr { th { "Updated" } td { (layout::when(&project.updated_at)) } }
                }
            } }
        }
        @if project.status == ProjectStatus::PendingApproval && caller.role.may(Action::ChangeProject) {
            section.card aria-labelledby="actions" {
                h2 #actions { "Withdraw it" }
                form method="post" action={ "/projects/" (id) "/delete" } {
                    (form_fields(viewer))
                    input type="hidden" name="confirm" value=(project.name);
                    p { button.danger type="submit" { "Withdraw the request" } }
                }
            }
        } @else if live && project.status != ProjectStatus::DeletionScheduled && caller.role.may(Action::ChangeProject) {
            section.card aria-labelledby="actions" {
                h2 #actions { "Change it" }
                form method="post" action={ "/projects/" (id) "/resize" } {
                    (form_fields(viewer))
                    div.row {
                        (select("sla_type", "SLA type", &sla_types(catalog), &project.sla_type))
                        (select("performance_tier", "Performance tier", &tiers(catalog), &project.performance_tier))
                        div { button type="submit" { "Resize" } }
                    }
                }
                @if project.status == ProjectStatus::Failed {
                    form method="post" action={ "/projects/" (id) "/retry" } {
                        (form_fields(viewer))
                        p { button type="submit" { "Retry" } }
                    }
                }
                form method="post" action={ "/projects/" (id) "/delete" } {
                    (form_fields(viewer))
                    label for="confirm" { "Type the project's name (" (project.name) ") to delete it and its namespace"
                        @if let Some(grace) = grace { " (after " (grace) "; it can be restored until then)" } }
                    div.row {
                        input #confirm name="confirm" autocomplete="off" required;
                        div { button.danger type="submit" { "Delete" } }
                    }
                }
            }
        }
        h2 { "Jobs" }
        @if jobs.items.is_empty() { p.empty { "No jobs yet." } }
        ol.timeline {
            @for job in &jobs.items {
                li {
                    strong { (job.kind) } " " (badge(job.status.as_str())) " "
                    span.muted { "attempt " (job.attempts) " · " (layout::when(&job.created_at)) }
                    @if let Some(errors) = job.errors.as_array() {
                        @if !errors.is_empty() { ul {
                            @for error in errors {
                                li.muted { "attempt " (error["attempt"]) ": " (error["error"].as_str().unwrap_or_default()) }
                            }
                        } }
                    }
                }
            }
        }
        h2 { "Manifests" }
        pre { code { (manifests) } }
    };
    Ok(layout::page(&project.name, Some(viewer), "/projects", body))
}

#[derive(Debug, Default, Deserialize)]
struct ResizeForm {
    sla_type: Option<String>,
    performance_tier: Option<String>,
}

async fn after_change(
    ctx: &Context,
    viewer: &Viewer,
    id: Uuid,
    done: Result<app::projects::ProjectSubmitted, AppError>,
) -> Response {
    match done {
        Ok(_) => Redirect::to(&format!("/projects/{id}")).into_response(),
        Err(err) => {
            let status = status_of(&err);
            match render_project(ctx, viewer, id, Some(&err)).await {
                Ok(page) => (status, page).into_response(),
                Err(response) => response,
            }
        }
    }
}

async fn resize(
    State(ctx): State<Context>,
    viewer: Viewer,
    PathId(id): PathId,
    Form(form): Form<ResizeForm>,
) -> Response {
    let input = ResizeProject { sla_type: form.sla_type, performance_tier: form.performance_tier };
    let done = app::projects::resize(&ctx, viewer.caller(), id, input).await;
    after_change(&ctx, &viewer, id, done).await
}

async fn restore(State(ctx): State<Context>, viewer: Viewer, PathId(id): PathId) -> Response {
    let done = app::projects::restore(&ctx, viewer.caller(), id).await;
    after_change(&ctx, &viewer, id, done).await
}

async fn retry(State(ctx): State<Context>, viewer: Viewer, PathId(id): PathId) -> Response {
    let done = app::projects::retry(&ctx, viewer.caller(), id).await;
    after_change(&ctx, &viewer, id, done).await
}

#[derive(Debug, Default, Deserialize)]
struct DeleteForm {
    #[serde(default)]
    confirm: String,
}

async fn delete(
    State(ctx): State<Context>,
    viewer: Viewer,
    PathId(id): PathId,
    Form(form): Form<DeleteForm>,
) -> Response {
    let project = match app::projects::get(&ctx, viewer.caller(), id).await {
        Ok(project) => project,
        Err(err) => return error_page(Some(&viewer), &err),
    };
    if form.confirm.trim() != project.name {
        let err = AppError::invalid(
            "confirmation_mismatch",
            format!("type the project's name ({}) to delete it; nothing was deleted", project.name),
        );
        return after_change(&ctx, &viewer, id, Err(err)).await;
    }
    let done = app::projects::delete(&ctx, viewer.caller(), id).await;
    after_change(&ctx, &viewer, id, done).await
}
