//! The OpenAPI document and a self-contained page that browses it (no external assets).

use axum::Router;
use axum::response::Html;
use axum::routing::get;
use utoipa::openapi::path::{ParameterBuilder, ParameterIn};
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{RefOr, Required};
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
        (name = "audit", description = "Who changed what, and refused logins"),
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

/// Documents the `Idempotency-Key` header on every operation that changes something (the API
/// honours it on all of them; see `http::idempotency`).
pub struct IdempotencyHeader;

impl Modify for IdempotencyHeader {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let header = ParameterBuilder::new()
            .name("Idempotency-Key")
            .parameter_in(ParameterIn::Header)
            .required(Required::False)
            .description(Some(
                "Repeat-safe request key (1 to 255 characters): the same request with the same \
                 key within 24 hours gets the first answer again and runs once; the same key \
                 with another request is refused with 422 idempotency_key_reused.",
            ))
            .schema(Some(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .min_length(Some(1))
                    .max_length(Some(255)),
            ))
            .build();
        for item in openapi.paths.paths.values_mut() {
            let operations = [&mut item.post, &mut item.put, &mut item.patch, &mut item.delete];
            for operation in operations.into_iter().flatten() {
                operation.parameters.get_or_insert_with(Vec::new).push(RefOr::T(header.clone()));
            }
        }
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
