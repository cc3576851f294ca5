//! The organisation API for center admins: sites, fields, departments, users.

mod departments;
mod units;
mod users;

use utoipa_axum::router::OpenApiRouter;

use crate::context::Context;

pub fn router() -> OpenApiRouter<Context> {
    OpenApiRouter::new().merge(units::router()).merge(departments::router()).merge(users::router())
}
