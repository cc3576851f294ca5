//! Rules with no I/O: who may do what ([`scope`]), the project lifecycle ([`lifecycle`]),
//! quota arithmetic ([`capacity`]), the [`catalog`], names, manifests, passwords, job retry
//! arithmetic. Nothing here imports axum, sqlx or reqwest, so every rule is unit-tested
//! beside its definition.

pub mod capacity;
pub mod catalog;
pub mod job;
pub mod lifecycle;
pub mod manifests;
pub mod name;
pub mod notification;
pub mod password;
pub mod project;
pub mod role;
pub mod scope;

/// A value a client sent that breaks a rule; the HTTP layer answers it with 422.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ValidationError {
    /// The request field at fault, as the client spelled it.
    pub field: String,
    pub message: String,
}

impl ValidationError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self { field: field.into(), message: message.into() }
    }
}
