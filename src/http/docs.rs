//! The OpenAPI document, and Swagger UI to read and try it (no external assets).

use axum::Router;
use axum::response::Redirect;
use axum::routing::get;
use utoipa::openapi::path::{ParameterBuilder, ParameterIn};
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{RefOr, Required};
use utoipa::{Modify, OpenApi};
use utoipa_swagger_ui::{Config, SwaggerUi};

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
        components.add_security_scheme(
            "metrics_bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("http.metrics_token, when it is set"))
                    .build(),
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

/// Gives every response without a description its status's reason phrase: OpenAPI requires
/// one, and most of ours say all there is in their schema.
pub struct ResponseDescriptions;

impl Modify for ResponseDescriptions {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for item in openapi.paths.paths.values_mut() {
            let operations =
                [&mut item.get, &mut item.post, &mut item.put, &mut item.patch, &mut item.delete];
            for operation in operations.into_iter().flatten() {
                for (status, response) in operation.responses.responses.iter_mut() {
                    if let RefOr::T(response) = response
                        && response.description.is_empty()
                    {
                        let reason = status
                            .parse::<u16>()
                            .ok()
                            .and_then(|code| axum::http::StatusCode::from_u16(code).ok())
                            .and_then(|code| code.canonical_reason())
                            .unwrap_or("Response");
                        response.description = reason.to_owned();
                    }
                }
            }
        }
    }
}

/// `/docs`: Swagger UI (its assets are vendored into the binary by utoipa-swagger-ui, nothing is
/// fetched) on the OpenAPI document at `/api/v1/openapi.json`. "Authorize" takes a token from
/// `POST /api/v1/auth/login` (kept in the page only: not persisted in the browser's storage,
/// so it goes with the tab); "Try it out" sends real requests. `/api/v1/docs` redirects here.
pub fn router(openapi: utoipa::openapi::OpenApi) -> Router<Context> {
    let config = Config::new(["/api/v1/openapi.json"])
        .try_it_out_enabled(true)
        .display_request_duration(true)
        .filter(true)
        // Swagger UI would otherwise send the document to validator.swagger.io.
        .validator_url("none");
    let swagger = SwaggerUi::new("/docs").url("/api/v1/openapi.json", openapi).config(config);
    Router::from(swagger).route("/api/v1/docs", get(|| async { Redirect::permanent("/docs/") }))
}
