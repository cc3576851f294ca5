//! The organisation API for center admins: sites, fields, departments, users, webhooks.

mod departments;
mod units;
mod users;
mod webhooks;

use utoipa_axum::router::OpenApiRouter;

use crate::context::Context;

pub fn router() -> OpenApiRouter<Context> {
    OpenApiRouter::new()
        .merge(units::router())
        .merge(departments::router())
        .merge(users::router())
        .merge(webhooks::router())
}
