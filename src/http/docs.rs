//! The OpenAPI document and a self-contained page that browses it (no external assets).

use axum::Router;
use axum::response::Html;
use axum::routing::get;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::context::Context;

#[derive(OpenApi)]
#[openapi(
    info(title = "InfraHub", description = "Capacity and namespace broker for on-prem Kubernetes."),
    modifiers(&BearerAuth),
    tags(
        (name = "auth", description = "Login and the caller"),
        (name = "admin", description = "Organisation management (center admins)"),
        (name = "jobs", description = "Durable jobs: status, listing, cancellation"),
        (name = "inventory", description = "Servers, allocation to fields, department quotas, capacity"),
        (name = "projects", description = "Projects: namespaces with quota, delivered by GitOps"),
        (name = "ops", description = "Health, readiness, metrics"),
    )
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new().scheme(HttpAuthScheme::Bearer).bearer_format("JWT").build(),
            ),
        );
    }
}

const DOCS_PAGE: &str = include_str!("docs.html");

pub fn router(openapi: utoipa::openapi::OpenApi) -> Router<Context> {
    let json = openapi.to_pretty_json().unwrap_or_else(|_| "{}".to_owned());
    Router::new()
        .route(
            "/api/v1/openapi.json",
            get(move || {
                let json = json.clone();
                async move { ([(axum::http::header::CONTENT_TYPE, "application/json")], json) }
            }),
        )
        .route("/api/v1/docs", get(|| async { Html(DOCS_PAGE) }))
}
