//! InfraHub: a capacity and namespace broker for on-prem Kubernetes platforms.
//!
//! # A tour
//! One binary, `infrahub` ([`cli`]), with a thin `main.rs`. Data flows one way:
//! `http -> domain -> store`.
//!
//! - [`config`]: figment layering (defaults < TOML file < `INFRAHUB_*` env), validation,
//!   redaction of secrets.
//! - [`domain`]: rules with no I/O (names, roles and scopes, password policy and hashing),
//!   unit-tested beside their definitions.
//! - [`store`]: every SQL statement, as functions over `&mut PgConnection` so one transaction
//!   can span a change and its audit event; migrations (`migrations/`, reversible).
//! - [`http`]: the axum intake under `/api/v1`: extractors that answer in our error envelope,
//!   the authenticated [`http::auth::Caller`], routes described for OpenAPI as they are written.
//! - [`jobs`]: durable jobs: one file per kind, the [`jobs::engine`] that claims and runs
//!   them on apalis workers, the cron [`jobs::scheduler`]. `docs/JOBS.md` explains the design.
//! - [`context`]: what handlers share (pool, config, token keys, metrics), built once.
//! - [`demo`]: the embedded default installation behind `infrahub demo`.
//! - [`telemetry`]: logging and the Prometheus recorder.

pub mod bench;
pub mod cli;
pub mod clients;
pub mod config;
pub mod context;
pub mod demo;
pub mod domain;
pub mod http;
pub mod jobs;
pub mod store;
pub mod telemetry;

/// Selects rustls' `ring` provider for the whole process. Several dependencies enable
/// different providers, and rustls refuses to pick one itself: the first TLS client would
/// panic. Safe to call more than once.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
