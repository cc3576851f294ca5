//! The page shell and the pieces every page uses: navigation by role, error boxes, status
//! badges, capacity bars, pagination.

use maud::{DOCTYPE, Markup, html};
use serde_json::Value;

use super::Viewer;
use crate::app::AppError;
use crate::app::allocation::SiteQuota;
use crate::domain::role::Role;

/// The navigation of a role: (path, label).
fn nav(role: Role) -> &'static [(&'static str, &'static str)] {
    match role {
        Role::TeamLead => &[("/projects", "Projects"), ("/projects/new", "New project")],
        Role::FieldAdmin => &[
            ("/capacity", "Capacity and quotas"),
            ("/approvals", "Approvals"),
            ("/servers", "Servers"),
        ],
        Role::CenterAdmin => &[
            ("/servers", "Inventory"),
            ("/capacity", "Capacity"),
            ("/approvals", "Approvals"),
            ("/organisation", "Organisation"),
            ("/jobs", "Jobs"),
            ("/audit", "Audit log"),
            ("/webhooks", "Webhooks"),
        ],
    }
}

fn head(title: &str) -> Markup {
    html! {
        head {
            meta charset="utf-8";
            meta name="viewport" content="width=device-width, initial-scale=1";
            title { (title) " · InfraHub" }
            link rel="stylesheet" href={ "/assets/console.css?v=" (env!("CARGO_PKG_VERSION")) };
            script src={ "/assets/htmx.min.js?v=" (env!("CARGO_PKG_VERSION")) } defer {}
        }
    }
}

/// A whole page: header with the role's navigation (`active` marks the current entry) and
/// logout, then `body`.
pub fn page(title: &str, viewer: Option<&Viewer>, active: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(title))
            body {
                header.top {
                    a href="/" { strong { "InfraHub" } }
                    @if let Some(viewer) = viewer {
                        nav aria-label="Main" {
                            @for (path, label) in nav(viewer.caller().role) {
                                @if *path == active {
                                    a href=(path) aria-current="page" { (label) }
                                } @else {
                                    a href=(path) { (label) }
                                }
                            }
                        }
                        span.who { (viewer.caller().username) " · " (viewer.caller().role) }
                        form method="post" action="/logout" {
                            input type="hidden" name="_csrf" value=(viewer.csrf());
                            button.secondary type="submit" { "Log out" }
                        }
                    }
                }
                main { (body) }
            }
        }
    }
}

/// A page with no session around it (refusals before one is known).
pub fn bare(title: &str, body: Markup) -> Markup {
    page(title, None, "", html! { h1 { (title) } (body) })
}

pub fn login(error: Option<&AppError>, username: &str, next: &str) -> Markup {
    let body = html! {
        div.card.login {
            h1 { "Log in to InfraHub" }
            @if let Some(err) = error { (error_box(err)) }
            form method="post" action="/login" {
                input type="hidden" name="next" value=(next);
                label for="username" { "Username" }
                input #username name="username" autocomplete="username" required value=(username);
                label for="password" { "Password" }
                input #password name="password" type="password" autocomplete="current-password" required;
                p { button type="submit" { "Log in" } }
            }
        }
    };
    page("Log in", None, "", body)
}

pub fn error_text(message: &str) -> Markup {
    html! { div.error role="alert" { (message) } }
}

/// A use case's refusal in words: its message, and its details as a list.
pub fn error_box(err: &AppError) -> Markup {
    let details: Vec<(String, String)> = match &err.details {
        Value::Object(map) => map.iter().map(|(k, v)| (k.replace('_', " "), describe(v))).collect(),
        _ => Vec::new(),
    };
    html! {
        div.error role="alert" {
            strong { (err.message) }
            @if !details.is_empty() {
                ul { @for (key, value) in &details { li { (key) ": " (value) } } }
            }
        }
    }
}

/// A JSON detail for people: resources as "4 CPU, 16 GB RAM", lists joined, text bare.
fn describe(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Object(map) if map.contains_key("cpu") => {
            format!("{} CPU, {} GB RAM", map["cpu"], map.get("ram_gb").unwrap_or(&Value::Null))
        }
        Value::Array(items) => items.iter().map(describe).collect::<Vec<_>>().join(", "),
        other => other.to_string(),
    }
}

pub fn badge(status: &str) -> Markup {
    html! { span class={ "badge " (status) } { (status) } }
}

fn percent(part: i64, whole: i64) -> f64 {
    if whole <= 0 { 0.0 } else { (part as f64 * 100.0 / whole as f64).clamp(0.0, 100.0) }
}

/// A department's quota at a site (as the use case reports it): used by projects, free.
/// A measured amount, to one decimal.
pub fn amount(value: f64) -> String {
    format!("{value:.1}")
}

pub fn quota_bar(site: &SiteQuota) -> Markup {
    let (quota, used, free) = (site.quota, site.used, site.free);
    html! {
        @if let Some(in_use) = &site.in_use {
            p.muted.in-use { "Actually in use: " (amount(in_use.cpu)) " CPU, " (amount(in_use.ram_gb)) " GB RAM" }
        }
        @for (name, q, u, f, unit) in [("CPU", quota.cpu, used.cpu, free.cpu, ""), ("RAM", quota.ram_gb, used.ram_gb, free.ram_gb, " GB")] {
            div {
                span.muted { (name) ": " (u) (unit) " used of " (q) (unit) ", " (f) (unit) " free" }
                div.bar role="img" aria-label={ (name) " " (u) " of " (q) " used" } {
                    span.used style={ "width:" (percent(u, q)) "%" } {}
                }
            }
        }
    }
}

/// One resource of a field's capacity at a site, as the use case reports it: used by
/// projects, allocated to departments beyond that, free; a deficit (quotas above capacity) in
/// red. Only the widths are worked out here.
pub struct CapacityLine<'a> {
    pub name: &'a str,
    pub unit: &'a str,
    pub capacity: i64,
    pub allocated: i64,
    pub used: i64,
    pub free: i64,
    pub deficit: i64,
}

pub fn capacity_bar(line: CapacityLine<'_>) -> Markup {
    let CapacityLine { name, unit, capacity, allocated, used, free, deficit } = line;
    let whole = capacity.max(allocated);
    let used = used.min(allocated);
    html! {
        div {
            span.muted {
                (name) ": capacity " (capacity) (unit) ", allocated " (allocated) (unit)
                ", used by projects " (used) (unit) ", free " (free) (unit)
                @if deficit > 0 { strong.fits.no { " · deficit " (deficit) (unit) } }
            }
            div.bar role="img" aria-label={ (name) " allocated " (allocated) " of " (capacity) } {
                span.used style={ "width:" (percent(used, whole)) "%" } {}
                span.alloc style={ "width:" (percent(allocated - used - deficit, whole)) "%" } {}
                span.deficit style={ "width:" (percent(deficit, whole)) "%" } {}
            }
        }
    }
}

pub fn legend() -> Markup {
    html! {
        div.legend {
            span { i style="background:var(--used)" {} "used by projects" }
            span { i style="background:var(--alloc)" {} "allocated to departments" }
            span { i style="background:var(--free)" {} "free" }
            span { i style="background:var(--deficit)" {} "deficit" }
        }
    }
}

/// "More" link to the next page of a list, keeping the other query parameters.
pub fn pager(path: &str, query: &[(&str, String)], next: Option<String>) -> Markup {
    let Some(next) = next else { return html! {} };
    html! { p.pager { a href=(next_page(path, query, "cursor", &next)) { "Next page →" } } }
}

/// The address of the next page of one list of a page: `param` set to `next`, the other
/// query parameters (the filters, the pages of the other lists) kept; empty ones left out.
pub fn next_page(path: &str, query: &[(&str, String)], param: &str, next: &str) -> String {
    let mut serializer = url::form_urlencoded::Serializer::new(String::new());
    for (key, value) in query.iter().filter(|(k, v)| !v.is_empty() && *k != param) {
        serializer.append_pair(key, value);
    }
    serializer.append_pair(param, next);
    format!("{path}?{}", serializer.finish())
}

/// A timestamp, to the second.
pub fn when(at: &chrono::DateTime<chrono::Utc>) -> String {
    at.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}
