//! Whether this daemon can do its work: what `/readyz` reports.

use crate::context::Context;
use crate::store;

/// Ready when the database answers and every migration of this binary is applied; otherwise
/// the reason.
pub async fn readiness(ctx: &Context) -> Result<(), String> {
    match store::schema_is_current(&ctx.pool).await {
        Ok(true) => Ok(()),
        Ok(false) => Err("database migrations are pending".to_owned()),
        Err(err) => {
            tracing::warn!(error = %err, "readiness check failed");
            Err("database unreachable".to_owned())
        }
    }
}
