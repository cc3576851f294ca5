//! The organisation API for center admins: sites, fields, departments, users.

mod departments;
mod units;
mod users;

use utoipa_axum::router::OpenApiRouter;

use crate::context::Context;

pub fn router() -> OpenApiRouter<Context> {
    OpenApiRouter::new().merge(units::router()).merge(departments::router()).merge(users::router())
}

/// Reads a JSON field that may be absent (keep), `null` (clear) or a value (set).
fn double_option<'de, T, D>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    T: serde::Deserialize<'de>,
    D: serde::Deserializer<'de>,
{
    serde::Deserialize::deserialize(deserializer).map(Some)
}
