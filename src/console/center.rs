//! The inventory (servers by site, field and status; sync with the last sync's counts;
//! assigning and unassigning several servers at once), the organisation, the jobs (failed and
//! retrying first) and the audit log. Field admins see their own field's servers; the rest is
//! for center admins (the use cases refuse anyone else).

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use maud::{Markup, html};
use serde::Deserialize;
use serde_json::json;
use uuid::Uuid;

use super::layout::{self, badge};
use super::{
    OrPage, PageResult, PathId, Query, Viewer, error_page, field_choices, form_fields, job_notice,
    kind_of, parsed, status_of,
};
use crate::app::allocation::AssignServer;
use crate::app::audit::AuditQuery;
use crate::app::inventory::ServerQuery;
use crate::app::jobs::JobQuery;
use crate::app::organisation::{CreateDepartment, CreateUnit};
use crate::app::users::{CreateUser, UserQuery};
use crate::app::{self, AppError, PageParams};
use crate::context::Context;
use crate::domain::job::JobStatus;
use crate::domain::role::Role;
use crate::store::org::UnitKind;

pub fn routes() -> Router<Context> {
    Router::new()
        .route("/servers", get(servers))
        .route("/servers/assign", post(assign))
        .route("/sync", post(sync))
        .route("/organisation", get(organisation))
        .route("/organisation/{kind}", post(create_in_organisation))
        .route("/jobs", get(jobs))
        .route("/jobs/{id}/cancel", post(cancel_job))
        .route("/jobs/{id}/retry", post(retry_job))
        .route("/audit", get(audit))
}

#[derive(Debug, Default, Deserialize)]
struct ServersQuery {
    site: Option<String>,
    field: Option<String>,
    status: Option<String>,
    unassigned: Option<String>,
    cursor: Option<String>,
    job: Option<String>,
}

/// The last server sync: when and what it found, from its job's result.
async fn last_sync(ctx: &Context, viewer: &Viewer) -> Markup {
    let query = JobQuery { kind: Some("sync_servers".to_owned()), status: None, subject: None };
    let page = PageParams { limit: Some(1), cursor: None };
    let Ok(page) = app::jobs::list(ctx, viewer.caller(), query, page).await else {
        return html! {};
    };
    let Some(job) = page.items.first() else {
        return html! { p.muted { "No sync yet." } };
    };
    let result = job.result.clone().unwrap_or_default();
    let count = |key: &str| result.get(key).and_then(|v| v.as_u64()).unwrap_or(0);
    html! {
        p.muted {
            "Last sync " (badge(job.status.as_str())) " " (layout::when(&job.created_at))
            @if job.status == JobStatus::Succeeded {
                ": " (count("added")) " added, " (count("updated")) " updated, "
                (count("missing")) " marked missing, " (count("skipped")) " skipped"
            }
            @if let Some(error) = &job.last_error { ": " (error) }
        }
    }
}

async fn servers(
    State(ctx): State<Context>,
    viewer: Viewer,
    Query(query): Query<ServersQuery>,
) -> PageResult {
    render_servers(&ctx, &viewer, query, None).await
}

async fn render_servers(
    ctx: &Context,
    viewer: &Viewer,
    query: ServersQuery,
    outcome: Option<Markup>,
) -> PageResult {
    let admin = viewer.caller().role == Role::CenterAdmin;
    // The job first: once it is seen done, what is read next includes its change.
    let notice = match parsed(&query.job) {
        Some(job) => Some(job_notice(ctx, viewer, job).await),
        None => None,
    };
    let fields = match admin {
        true => field_choices(ctx, viewer).await?,
        false => Vec::new(),
    };
    let filter = ServerQuery {
        site: parsed(&query.site),
        field_id: parsed(&query.field),
        status: parsed(&query.status),
        unassigned: query.unassigned.as_deref() == Some("true"),
    };
    let page = PageParams { limit: Some(100), cursor: parsed(&query.cursor) };
    let servers =
        app::inventory::list_servers(ctx, viewer.caller(), filter, page).await.or_page(viewer)?;
    let title = if admin { "Inventory" } else { "Servers of your field" };
    let body = html! {
        h1 { (title) }
        @if let Some(notice) = notice { (notice) }
        @if let Some(outcome) = outcome { (outcome) }
        @if admin {
            section.card {
                (last_sync(ctx, viewer).await)
                form method="post" action="/sync" {
                    (form_fields(viewer))
                    button type="submit" { "Sync servers now" }
                }
            }
        }
        form.card.row method="get" action="/servers" {
            div { label for="f-site" { "Site" } input #f-site name="site" value=(query.site.clone().unwrap_or_default()); }
            @if admin {
                div { label for="f-field" { "Field" }
                    select #f-field name="field" {
                        option value="" { "any" }
                        @for (id, name) in &fields { option value=(id) selected[query.field.as_deref() == Some(&id.to_string())] { (name) } }
                    } }
            }
            div { label for="f-status" { "Status" }
                select #f-status name="status" {
                    @for status in ["", "active", "missing", "retired"] {
                        option value=(status) selected[query.status.as_deref().unwrap_or("") == status] {
                            @if status.is_empty() { "any" } @else { (status) } }
                    }
                } }
            @if admin {
                div { label { input type="checkbox" name="unassigned" value="true" checked[query.unassigned.as_deref() == Some("true")]; " unassigned only" } }
            }
            div { button.secondary type="submit" { "Filter" } }
        }
        @if servers.items.is_empty() {
            div.card.empty { "No servers match." }
        } @else {
            form method="post" action="/servers/assign" {
                (form_fields(viewer))
                div.scroll { table {
                    thead { tr {
                        @if admin { th { span.muted { "pick" } } }
                        th { "Name" } th { "Site" } th { "Field" } th { "Status" } th { "CPU" } th { "RAM" }
                    } }
                    tbody {
                        @for server in &servers.items {
                            tr {
                                @if admin { td { input type="checkbox" name="server" value=(server.id) aria-label={ "pick " (server.name) }; } }
                                td { (server.name) } td { (server.site) }
                                td { (server.field.clone().unwrap_or_else(|| "-".to_owned())) }
                                td { (badge(&server.status)) }
                                td { (server.cpu_cores) } td { (server.ram_gb) " GB" }
                            }
                        }
                    }
                } }
                @if admin {
                    div.card.row {
                        div { label for="to-field" { "Field" }
                            select #to-field name="field_id" {
                                @for (id, name) in &fields { option value=(id) { (name) } }
                            } }
                        div { button type="submit" name="action" value="assign" { "Assign picked servers" } }
                        div { button.secondary type="submit" name="action" value="unassign" { "Unassign picked servers" } }
                    }
                }
            }
        }
        (layout::pager("/servers", &[
            ("site", query.site.clone().unwrap_or_default()),
            ("field", query.field.clone().unwrap_or_default()),
            ("status", query.status.clone().unwrap_or_default()),
            ("unassigned", query.unassigned.clone().unwrap_or_default()),
        ], servers.next_cursor.map(|c| c.to_string())))
    };
    Ok(layout::page(title, Some(viewer), "/servers", body))
}

async fn sync(State(ctx): State<Context>, viewer: Viewer) -> Response {
    match app::inventory::request_sync(&ctx, viewer.caller(), false).await {
        Ok(submitted) => {
            Redirect::to(&format!("/servers?job={}", submitted.job.id)).into_response()
        }
        Err(err) => error_page(Some(&viewer), &err),
    }
}

/// Assigns (or unassigns) every picked server: one job each; what was refused is listed.
async fn assign(State(ctx): State<Context>, viewer: Viewer, body: Bytes) -> Response {
    let pairs: Vec<(String, String)> = url::form_urlencoded::parse(&body).into_owned().collect();
    let value = |name: &str| pairs.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    let mut picked: Vec<Uuid> =
        pairs.iter().filter(|(k, _)| k == "server").filter_map(|(_, v)| v.parse().ok()).collect();
    picked.sort();
    picked.dedup();
    let unassign = value("action").as_deref() == Some("unassign");
    let field = value("field_id").and_then(|f| f.parse::<Uuid>().ok());
    let key = value("_key").unwrap_or_default();
    let mut done = Vec::new();
    let mut refused: Vec<(Uuid, AppError)> = Vec::new();
    if picked.is_empty() {
        refused.push((Uuid::nil(), AppError::invalid("invalid_value", "pick at least one server")));
    }
    for server in &picked {
        match allocate_once(&ctx, &viewer, &key, *server, unassign, field).await {
            Ok(job) => done.push(job),
            Err(err) => refused.push((*server, err)),
        }
    }
    let verb = if unassign { "unassign" } else { "assign" };
    let outcome = html! {
        @if !done.is_empty() {
            div.notice role="status" { (done.len()) " server(s) to " (verb) ": jobs queued. "
                a href="/servers" { "Reload" } " to see them move." }
        }
        @for (server, err) in &refused {
            @if !server.is_nil() { p.muted { "Server " (server) ":" } }
            (layout::error_box(err))
        }
    };
    let status = refused.first().map_or(axum::http::StatusCode::OK, |(_, e)| status_of(e));
    match render_servers(&ctx, &viewer, ServersQuery::default(), Some(outcome)).await {
        Ok(page) => (status, page).into_response(),
        Err(response) => response,
    }
}

/// Assigns or unassigns one server of a multi-server form, at most once per form submission
/// (the form's `_key` and the server's id make this change's Idempotency-Key): a double click
/// queues no second job. The job's id, or the refusal.
async fn allocate_once(
    ctx: &Context,
    viewer: &Viewer,
    form_key: &str,
    server: Uuid,
    unassign: bool,
    field: Option<Uuid>,
) -> Result<Uuid, AppError> {
    let run = || async move {
        let result = match (unassign, field) {
            (true, _) => app::allocation::unassign_server(ctx, viewer.caller(), server).await,
            (false, Some(field_id)) => {
                let input = AssignServer { server_id: server, field_id };
                app::allocation::assign_server(ctx, viewer.caller(), input).await
            }
            (false, None) => Err(AppError::invalid("invalid_value", "choose a field")),
        };
        let (status, body) = match result {
            Ok(submitted) => (202, json!({ "job_id": submitted.job.id })),
            Err(err) => (
                status_of(&err).as_u16(),
                json!({ "code": err.code, "message": err.message, "details": err.details }),
            ),
        };
        app::idempotency::Answer {
            status,
            headers: Default::default(),
            body: body.to_string(),
            replayed: false,
        }
    };
    let answer = if form_key.is_empty() {
        run().await
    } else {
        let key = format!("console:{form_key}:{server}");
        // The change itself, not the whole form: a form sent again with another selection
        // still acts once for each server it had already sent.
        let change = json!({ "server": server, "unassign": unassign, "field": field }).to_string();
        let request = app::idempotency::Request::new(
            viewer.caller().id,
            &key,
            "POST",
            "/servers/assign",
            change.as_bytes(),
            &ctx.fingerprint_key,
        )?;
        app::idempotency::once(ctx, &request, run).await?
    };
    let parsed: serde_json::Value = serde_json::from_str(&answer.body).unwrap_or_default();
    match parsed["job_id"].as_str().and_then(|id| id.parse().ok()) {
        Some(job) if answer.status == 202 => Ok(job),
        _ => Err(AppError::new(
            kind_of(answer.status),
            "refused",
            parsed["message"].as_str().unwrap_or("refused").to_owned(),
        )
        .with_details(parsed["details"].clone())),
    }
}

async fn organisation(State(ctx): State<Context>, viewer: Viewer) -> PageResult {
    render_organisation(&ctx, &viewer, None).await
}

async fn render_organisation(
    ctx: &Context,
    viewer: &Viewer,
    error: Option<&AppError>,
) -> PageResult {
    let caller = viewer.caller();
    let all = || PageParams { limit: Some(500), cursor: None };
    let sites =
        app::organisation::list_units(ctx, caller, UnitKind::Site, all()).await.or_page(viewer)?;
    let fields =
        app::organisation::list_units(ctx, caller, UnitKind::Field, all()).await.or_page(viewer)?;
    let departments =
        app::organisation::list_departments(ctx, caller, None, all()).await.or_page(viewer)?;
    let query = UserQuery { role: None, field_id: None, department_id: None };
    let users = app::users::list(ctx, caller, query, all()).await.or_page(viewer)?;
    let field_name = |id: Uuid| {
        fields.items.iter().find(|f| f.id == id).map(|f| f.name.clone()).unwrap_or_default()
    };
    let dept_name = |id: Uuid| {
        departments.items.iter().find(|d| d.id == id).map(|d| d.name.clone()).unwrap_or_default()
    };
    let body = html! {
        h1 { "Organisation" }
        @if let Some(err) = error { (layout::error_box(err)) }
        @for (kind, label, units) in [("sites", "Sites", &sites.items), ("fields", "Fields", &fields.items)] {
            section.card {
                h2 { (label) }
                @if units.is_empty() { p.empty { "None yet." } }
                ul { @for unit in units { li { strong { (unit.name) } " " span.muted { (unit.display_name) } } } }
                form.row method="post" action={ "/organisation/" (kind) } {
                    (form_fields(viewer))
                    div { label for={ (kind) "-name" } { "Name" } input id={ (kind) "-name" } name="name" required; }
                    div { label for={ (kind) "-display" } { "Display name" } input id={ (kind) "-display" } name="display_name"; }
                    div { button type="submit" { "Add" } }
                }
            }
        }
        section.card {
            h2 { "Departments" }
            @if departments.items.is_empty() { p.empty { "None yet." } }
            ul { @for dept in &departments.items { li { strong { (dept.name) } " in field " (field_name(dept.field_id)) } } }
            form.row method="post" action="/organisation/departments" {
                (form_fields(viewer))
                div { label for="d-name" { "Name" } input #d-name name="name" required; }
                div { label for="d-field" { "Field" } select #d-field name="field_id" {
                    @for field in &fields.items { option value=(field.id) { (field.name) } } } }
                div { button type="submit" { "Add" } }
            }
        }
        section.card {
            h2 { "Accounts" }
            div.scroll { table {
                thead { tr { th { "Username" } th { "Role" } th { "Scope" } th { "State" } } }
                tbody { @for user in &users.items { tr {
                    td { (user.username) } td { (user.role) }
                    td { @if let Some(f) = user.field_id { "field " (field_name(f)) }
                         @if let Some(d) = user.department_id { "department " (dept_name(d)) } }
                    td { @if user.disabled { "disabled" } @else { "enabled" } }
                } } }
            } }
            form method="post" action="/organisation/users" {
                (form_fields(viewer))
                div.row {
                    div { label for="u-name" { "Username" } input #u-name name="username" required autocomplete="off"; }
                    div { label for="u-password" { "Password" } input #u-password name="password" type="password" required minlength="8" autocomplete="new-password"; }
                    div { label for="u-role" { "Role" } select #u-role name="role" {
                        option value="team_lead" { "team lead" } option value="field_admin" { "field admin" } option value="center_admin" { "center admin" } } }
                    div { label for="u-field" { "Field (field admins)" } select #u-field name="field_id" { option value="" { "-" }
                        @for field in &fields.items { option value=(field.id) { (field.name) } } } }
                    div { label for="u-dept" { "Department (team leads)" } select #u-dept name="department_id" { option value="" { "-" }
                        @for dept in &departments.items { option value=(dept.id) { (dept.name) } } } }
                    div { button type="submit" { "Add account" } }
                }
            }
        }
    };
    Ok(layout::page("Organisation", Some(viewer), "/organisation", body))
}

async fn create_in_organisation(
    State(ctx): State<Context>,
    viewer: Viewer,
    kind: Result<Path<String>, axum::extract::rejection::PathRejection>,
    body: Bytes,
) -> Response {
    // A kind that does not even decode (`%FF`) is a kind of nothing: not found, in words.
    let kind = kind.map(|Path(kind)| kind).unwrap_or_default();
    let pairs: Vec<(String, String)> = url::form_urlencoded::parse(&body).into_owned().collect();
    let value = |name: &str| {
        pairs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    };
    let id = |name: &str| value(name).and_then(|v| v.parse::<Uuid>().ok());
    let caller = viewer.caller();
    let result: Result<(), AppError> = match kind.as_str() {
        "sites" | "fields" => {
            let unit = if kind == "sites" { UnitKind::Site } else { UnitKind::Field };
            let input = CreateUnit {
                name: value("name").unwrap_or_default(),
                display_name: value("display_name"),
            };
            app::organisation::create_unit(&ctx, caller, unit, input).await.map(|_| ())
        }
        "departments" => match id("field_id") {
            Some(field_id) => {
                let input = CreateDepartment {
                    field_id,
                    name: value("name").unwrap_or_default(),
                    display_name: None,
                    k8s_group: None,
                };
                app::organisation::create_department(&ctx, caller, input).await.map(|_| ())
            }
            None => Err(AppError::invalid("invalid_value", "choose a field")),
        },
        "users" => match value("role").unwrap_or_default().parse::<Role>() {
            Ok(role) => {
                let input = CreateUser {
                    username: value("username").unwrap_or_default(),
                    password: value("password").unwrap_or_default(),
                    role,
                    field_id: id("field_id").filter(|_| role == Role::FieldAdmin),
                    department_id: id("department_id").filter(|_| role == Role::TeamLead),
                };
                app::users::create(&ctx, caller, input).await.map(|_| ())
            }
            Err(err) => Err(AppError::invalid("invalid_value", err.to_string())),
        },
        _ => Err(AppError::not_found("page")),
    };
    match result {
        Ok(()) => Redirect::to("/organisation").into_response(),
        Err(err) => match render_organisation(&ctx, &viewer, Some(&err)).await {
            Ok(page) => (status_of(&err), page).into_response(),
            Err(response) => response,
        },
    }
}

#[derive(Debug, Default, Deserialize)]
struct JobsQuery {
    cursor: Option<String>,
}

fn job_rows(viewer: &Viewer, jobs: &[crate::store::jobs::Job]) -> Markup {
    html! {
        @for job in jobs {
            tr {
                td { (job.kind) } td { (badge(job.status.as_str())) }
                td { (job.attempts) } td { (layout::when(&job.created_at)) }
                td { @if let (Some(t), Some(id)) = (&job.subject_type, &job.subject_id) {
                        @if t == "project" { a href={ "/projects/" (id) } { "project" } } @else { (t) }
                    } }
                td { (job.last_error.clone().unwrap_or_default()) }
                td {
                    @if matches!(job.status, JobStatus::Queued | JobStatus::Retrying) {
                        form.inline method="post" action={ "/jobs/" (job.id) "/cancel" } {
                            (form_fields(viewer))
                            button.secondary type="submit" aria-label={ "Cancel job " (job.kind) " " (job.id) } { "Cancel" }
                        }
                    }
                    @if job.status == JobStatus::Failed && retriable(job) {
                        form.inline method="post" action={ "/jobs/" (job.id) "/retry" } {
                            (form_fields(viewer))
                            button.secondary type="submit" aria-label={ "Retry job " (job.kind) " " (job.id) } { "Retry" }
                        }
                    }
                }
            }
        }
    }
}

async fn jobs(
    State(ctx): State<Context>,
    viewer: Viewer,
    Query(query): Query<JobsQuery>,
) -> PageResult {
    let caller = viewer.caller();
    let of = |status: JobStatus| JobQuery { kind: None, status: Some(status), subject: None };
    let first = PageParams { limit: Some(50), cursor: None };
    let failed =
        app::jobs::list(&ctx, caller, of(JobStatus::Failed), first).await.or_page(&viewer)?;
    let retrying =
        app::jobs::list(&ctx, caller, of(JobStatus::Retrying), first).await.or_page(&viewer)?;
    let all = JobQuery { kind: None, status: None, subject: None };
    let page = PageParams { limit: Some(50), cursor: parsed(&query.cursor) };
    let recent = app::jobs::list(&ctx, caller, all, page).await.or_page(&viewer)?;
    let head = html! { thead { tr { th { "Kind" } th { "Status" } th { "Attempts" } th { "Created" } th { "Subject" } th { "Last error" } th { "" } } } };
    let body = html! {
        h1 { "Jobs" }
        h2 { "Failed and retrying" }
        @if failed.items.is_empty() && retrying.items.is_empty() {
            p.empty { "Nothing needs attention." }
        } @else {
            div.scroll { table { (head) tbody { (job_rows(&viewer, &failed.items)) (job_rows(&viewer, &retrying.items)) } } }
        }
        h2 { "All jobs, newest first" }
        @if recent.items.is_empty() { p.empty { "No jobs yet." } }
        @else { div.scroll { table { (head) tbody { (job_rows(&viewer, &recent.items)) } } } }
        (layout::pager("/jobs", &[], recent.next_cursor.map(|c| c.to_string())))
    };
    Ok(layout::page("Jobs", Some(&viewer), "/jobs", body))
}

/// Whether a failed job can be tried again from the jobs page: its project's work (the
/// project's retry), or a server sync (a new one).
fn retriable(job: &crate::store::jobs::Job) -> bool {
    job.subject_type.as_deref() == Some("project") || job.kind == "sync_servers"
}

/// Tries a failed job's work again through the use case that owns it: a project's retry
/// (provisioning or deleting again), or a new server sync.
async fn retry_job(State(ctx): State<Context>, viewer: Viewer, PathId(id): PathId) -> Response {
    let caller = viewer.caller();
    let job = match app::jobs::get(&ctx, caller, id).await {
        Ok(job) => job,
        Err(err) => return error_page(Some(&viewer), &err),
    };
    let project =
        job.subject_type.as_deref().filter(|t| *t == "project").and(job.subject_id.as_deref());
    let result = match (project.and_then(|p| p.parse::<Uuid>().ok()), job.kind.as_str()) {
        (Some(project), _) => app::projects::retry(&ctx, caller, project).await.map(|_| ()),
        (None, "sync_servers") => {
            app::inventory::request_sync(&ctx, caller, false).await.map(|_| ())
        }
        (None, kind) => Err(AppError::invalid(
            "not_retriable",
            format!("a failed {kind} job is not started again from here: submit its change again"),
        )),
    };
    match result {
        Ok(()) => Redirect::to("/jobs").into_response(),
        Err(err) => error_page(Some(&viewer), &err),
    }
}

async fn cancel_job(State(ctx): State<Context>, viewer: Viewer, PathId(id): PathId) -> Response {
    match app::jobs::cancel(&ctx, viewer.caller(), id).await {
        Ok(_) => Redirect::to("/jobs").into_response(),
        Err(err) => error_page(Some(&viewer), &err),
    }
}

#[derive(Debug, Default, Deserialize)]
struct AuditForm {
    actor: Option<String>,
    action: Option<String>,
    cursor: Option<String>,
}

async fn audit(
    State(ctx): State<Context>,
    viewer: Viewer,
    Query(form): Query<AuditForm>,
) -> PageResult {
    let query = AuditQuery {
        actor: parsed(&form.actor),
        action: parsed(&form.action),
        cursor: parsed(&form.cursor),
        limit: Some(50),
        ..AuditQuery::default()
    };
    let page = app::audit::list(&ctx, viewer.caller(), query).await.or_page(&viewer)?;
    let body = html! {
        h1 { "Audit log" }
        form.card.row method="get" action="/audit" {
            div { label for="a-actor" { "Actor" } input #a-actor name="actor" value=(form.actor.clone().unwrap_or_default()); }
            div { label for="a-action" { "Action (or a prefix ending in .)" } input #a-action name="action" value=(form.action.clone().unwrap_or_default()); }
            div { button.secondary type="submit" { "Filter" } }
        }
        @if page.items.is_empty() { div.card.empty { "No events match." } }
        @else {
            div.scroll { table {
                thead { tr { th { "When" } th { "Actor" } th { "Action" } th { "Subject" } } }
                tbody { @for event in &page.items { tr {
                    td { (layout::when(&event.occurred_at)) } td { (event.actor) }
                    td { code { (event.action) } } td { (event.subject_type) " " span.muted { (event.subject_id) } }
                } } }
            } }
        }
        (layout::pager("/audit", &[
            ("actor", form.actor.clone().unwrap_or_default()),
            ("action", form.action.clone().unwrap_or_default()),
        ], page.next_cursor.map(|c| c.to_string())))
    };
    Ok(layout::page("Audit log", Some(&viewer), "/audit", body))
}
