//! Capacity and quotas: per site a stacked bar of the field's capacity (used by projects,
//! allocated to departments, free, deficit in red) and the department quota editor, checked
//! against free capacity by the same use case as the API. Field admins see their field;
//! center admins choose one.

use axum::Router;
use axum::extract::{RawQuery, State};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use maud::html;
use serde::Deserialize;
use uuid::Uuid;

use super::layout::{self, CapacityLine, capacity_bar};
use super::{
    Form, OrPage, PageResult, Query, Viewer, field_choices, form_fields, job_notice, parsed,
    status_of,
};
use crate::app::allocation::SetQuota;
use crate::app::inventory::ServerQuery;
use crate::app::{self, AppError, MAX_LIMIT, PageParams};
use crate::context::Context;
use crate::domain::scope::Scope;

pub fn routes() -> Router<Context> {
    Router::new().route("/capacity", get(capacity)).route("/quotas", post(set_quota))
}

#[derive(Debug, Default, Deserialize)]
struct CapacityQuery {
    field: Option<String>,
    job: Option<String>,
    /// Servers whose loss the page shows the impact of (parsed from the raw query).
    #[serde(skip)]
    without: Vec<Uuid>,
}

/// The field on show: a field admin's own; for a center admin the one asked for, else the
/// first field there is.
async fn chosen_field(
    ctx: &Context,
    viewer: &Viewer,
    asked: Option<Uuid>,
) -> Result<(Option<Uuid>, Vec<(Uuid, String)>), Response> {
    match viewer.caller().scope {
        Scope::Field(own) => Ok((Some(own), Vec::new())),
        _ => {
            let choices = field_choices(ctx, viewer).await?;
            let field = asked.or_else(|| choices.first().map(|(id, _)| *id));
            Ok((field, choices))
        }
    }
}

async fn capacity(
    State(ctx): State<Context>,
    viewer: Viewer,
    Query(query): Query<CapacityQuery>,
    RawQuery(raw): RawQuery,
) -> PageResult {
    // `without` repeats (one per server picked), which the struct above cannot hold.
    let mut without = Vec::new();
    for (key, value) in url::form_urlencoded::parse(raw.unwrap_or_default().as_bytes()) {
        if key != "without" {
            continue;
        }
        match value.parse::<Uuid>() {
            Ok(id) => without.push(id),
            Err(_) => {
                let err =
                    AppError::invalid("invalid_value", format!("{value:?} is not a server id"));
                return render(&ctx, &viewer, query, Some(&err)).await;
            }
        }
    }
    render(&ctx, &viewer, CapacityQuery { without, ..query }, None).await
}

async fn render(
    ctx: &Context,
    viewer: &Viewer,
    query: CapacityQuery,
    error: Option<&AppError>,
) -> PageResult {
    let (field, choices) = chosen_field(ctx, viewer, parsed(&query.field)).await?;
    let Some(field) = field else {
        let body = html! { h1 { "Capacity" } div.card.empty { "No fields yet: create one under Organisation." } };
        return Ok(layout::page("Capacity", Some(viewer), "/capacity", body));
    };
    let caller = viewer.caller();
    // The job first: once it is seen done, what is read next includes its change.
    let notice = match parsed(&query.job) {
        Some(job) => Some(job_notice(ctx, viewer, job).await),
        None => None,
    };
    let report = app::allocation::field_capacity(ctx, caller, field).await.or_page(viewer)?;
    let boards = app::allocation::field_quotas(ctx, caller, field).await.or_page(viewer)?;
    let used_at = |site: &str| {
        boards
            .iter()
            .flat_map(|b| b.sites.iter())
            .filter(|s| s.site == site)
            .fold((0, 0), |acc, s| (acc.0 + s.used.cpu, acc.1 + s.used.ram_gb))
    };
    let sites: Vec<String> = report.sites.iter().map(|s| s.site.clone()).collect();
    // The field's active servers, to pick some and see what losing them would do.
    let active = ServerQuery {
        field_id: Some(field),
        status: Some("active".to_owned()),
        ..ServerQuery::default()
    };
    let page = PageParams { limit: Some(MAX_LIMIT), cursor: None };
    let servers = app::inventory::list_servers(ctx, caller, active, page).await.or_page(viewer)?;
    let impact = if query.without.is_empty() {
        None
    } else {
        let lost = query.without.clone();
        Some(app::allocation::capacity_impact(ctx, caller, field, lost).await.or_page(viewer)?)
    };
    let title = format!("Capacity of field {}", report.field);
    let body = html! {
        h1 { (title) }
        @if !choices.is_empty() {
            form.row method="get" action="/capacity" {
                div {
                    label for="field" { "Field" }
                    select #field name="field" {
                        @for (id, name) in &choices { option value=(id) selected[*id == field] { (name) } }
                    }
                }
                div { button.secondary type="submit" { "Show" } }
            }
        }
        @if let Some(notice) = notice { (notice) }
        @if let Some(err) = error { (layout::error_box(err)) }
        (layout::legend())
        @if report.sites.is_empty() {
            div.card.empty { "This field has no servers yet." }
        }
        @for site in &report.sites {
            @let (used_cpu, used_ram) = used_at(&site.site);
            section.card {
                h2 { (site.site) " " span.muted { (site.servers) " active servers" } }
                (capacity_bar(CapacityLine { name: "CPU", unit: "", capacity: site.capacity.cpu,
                    allocated: site.allocated.cpu, used: used_cpu, free: site.free.cpu, deficit: site.deficit.cpu }))
                (capacity_bar(CapacityLine { name: "RAM", unit: " GB", capacity: site.capacity.ram_gb,
                    allocated: site.allocated.ram_gb, used: used_ram, free: site.free.ram_gb, deficit: site.deficit.ram_gb }))
                @if site.missing_servers > 0 {
                    p.fits.no { (site.missing_servers) " servers missing from the inventory ("
                        (site.missing.cpu) " CPU, " (site.missing.ram_gb) " GB RAM)" }
                }
                @if let Some(in_use) = &site.in_use {
                    p.muted { "Projects reserve " (site.reserved.cpu) " CPU, " (site.reserved.ram_gb)
                        " GB RAM and actually use " (layout::amount(in_use.cpu)) " CPU, "
                        (layout::amount(in_use.ram_gb)) " GB RAM" }
                }
            }
        }
        h2 { "Department quotas" }
        @if boards.is_empty() {
            div.card.empty { "No departments in this field yet." }
        } @else {
            div.scroll { table {
                thead { tr { th { "Department" } th { "Site" } th { "Quota" } th { "Used by projects" } th { "Free" } } }
                tbody {
                    @for board in &boards {
                        @if board.sites.is_empty() {
                            tr { td { (board.department) } td colspan="4" { span.muted { "no quota yet" } } }
                        }
                        @for site in &board.sites {
                            tr {
                                td { (board.department) } td { (site.site) }
                                td { (site.quota.cpu) " CPU, " (site.quota.ram_gb) " GB" }
                                td { (site.used.cpu) " CPU, " (site.used.ram_gb) " GB" }
                                td { (site.free.cpu) " CPU, " (site.free.ram_gb) " GB" }
                            }
                        }
                    }
                }
            } }
            @if !sites.is_empty() {
                form.card method="post" action="/quotas" {
                    h3 { "Set a quota" }
                    (form_fields(viewer))
                    input type="hidden" name="field_id" value=(field);
                    div.row {
                        div {
                            label for="dept_id" { "Department" }
                            select #dept_id name="dept_id" required {
                                @for board in &boards { option value=(board.department_id) { (board.department) } }
                            }
                        }
                        div {
                            label for="site" { "Site" }
                            select #site name="site" required { @for site in &sites { option value=(site) { (site) } } }
                        }
                        div { label for="cpu_limit" { "CPU" } input #cpu_limit name="cpu_limit" type="number" min="0" required; }
                        div { label for="ram_gb_limit" { "RAM (GB)" } input #ram_gb_limit name="ram_gb_limit" type="number" min="0" required; }
                        div { button type="submit" { "Set quota" } }
                    }
                    p.muted { "Refused when the field's free capacity at the site is too small, or below what the department's projects use." }
                }
            }
        }
        @if !servers.items.is_empty() {
            form.card #impact method="get" action="/capacity#impact-result" {
                h3 { "What if servers were lost?" }
                input type="hidden" name="field" value=(field);
                div.row {
                    div {
                        label for="without" { "Servers (pick one or more)" }
                        select #without name="without" multiple size="4" required {
                            @for server in &servers.items {
                                option value=(server.id) selected[query.without.contains(&server.id)] {
                                    (server.name) " (" (server.site) ", " (server.cpu_cores) " CPU, " (server.ram_gb) " GB)"
                                }
                            }
                        }
                    }
                    div { button.secondary type="submit" { "Show the impact" } }
                }
                p.muted { "Changes nothing: shows the capacity left and which departments' quotas it would no longer back, each quota backed in proportion to what is left." }
            }
        }
        @if let Some(impact) = &impact {
            section.card #impact-result {
                h2 { "Without " (impact.servers.len()) @if impact.servers.len() == 1 { " server" } @else { " servers" } }
                @for site in &impact.sites {
                    p { strong { (site.site) } ": " (site.servers_lost) " active servers lost; capacity "
                        (site.capacity_now.cpu) " → " (site.capacity_after.cpu) " CPU, "
                        (site.capacity_now.ram_gb) " → " (site.capacity_after.ram_gb) " GB RAM for quotas of "
                        (site.allocated.cpu) " CPU, " (site.allocated.ram_gb) " GB" }
                    @if site.departments.is_empty() {
                        p.fits { "Every department's quota stays backed." }
                    } @else {
                        div.scroll { table {
                            thead { tr { th { "Department" } th { "Quota" } th { "Backed" } th { "Short" } th { "Projects unbacked" } } }
                            tbody {
                                @for d in &site.departments {
                                    tr {
                                        td { (d.department) }
                                        td { (d.quota.cpu) " CPU, " (d.quota.ram_gb) " GB" }
                                        td { (d.backed.cpu) " CPU, " (d.backed.ram_gb) " GB" }
                                        td.short { (d.short.cpu) " CPU, " (d.short.ram_gb) " GB" }
                                        td { (d.projects_unbacked.cpu) " CPU, " (d.projects_unbacked.ram_gb) " GB" }
                                    }
                                }
                            }
                        } }
                    }
                }
            }
        }
    };
    Ok(layout::page(&title, Some(viewer), "/capacity", body))
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct QuotaForm {
    field_id: String,
    dept_id: String,
    site: String,
    cpu_limit: String,
    ram_gb_limit: String,
}

async fn set_quota(
    State(ctx): State<Context>,
    viewer: Viewer,
    Form(form): Form<QuotaForm>,
) -> Response {
    let query = || CapacityQuery { field: Some(form.field_id.clone()), ..CapacityQuery::default() };
    let ids = form.field_id.parse::<Uuid>().ok().zip(form.dept_id.parse::<Uuid>().ok());
    let number = |field: &str, value: &str| {
        value.trim().parse::<u32>().map_err(|_| {
            AppError::invalid("invalid_value", format!("{field}: a whole number of 0 or more"))
        })
    };
    let numbers = number("CPU", &form.cpu_limit)
        .and_then(|cpu| number("RAM", &form.ram_gb_limit).map(|ram| (cpu, ram)));
    let result = match (numbers, ids) {
        (_, None) => Err(AppError::invalid("invalid_value", "choose a department")),
        (Ok((cpu_limit, ram_gb_limit)), Some((field_id, dept_id))) => {
            let input =
                SetQuota { field_id, dept_id, site: form.site.clone(), cpu_limit, ram_gb_limit };
            app::allocation::set_quota(&ctx, viewer.caller(), input).await
        }
        (Err(err), _) => Err(err),
    };
    match result {
        Ok(submitted) => {
            let field = match viewer.caller().scope {
                Scope::Field(_) => String::new(),
                _ => format!("field={}&", form.field_id),
            };
            Redirect::to(&format!("/capacity?{field}job={}", submitted.job.id)).into_response()
        }
        Err(err) => match render(&ctx, &viewer, query(), Some(&err)).await {
            Ok(page) => (status_of(&err), page).into_response(),
            Err(response) => response,
        },
    }
}
