//! InfraHub: a capacity and namespace broker for on-prem Kubernetes platforms.
//!
//! # A tour
//! One binary, `infrahub`, with a thin `main.rs`. Data flows one way:
//! adapters ([`http`], [`jobs`], [`cli`]) -> [`app`] -> [`domain`], [`store`], [`clients`].
//!
//! - [`app`]: the use cases, one module per capability (projects, allocation, inventory,
//!   organisation, users, jobs, auth). Each takes the caller (or a system actor), owns its
//!   transaction, checks role and scope through [`domain::scope`], validates, reserves quota,
//!   writes through [`store`], enqueues its job and audits, and answers with an
//!   [`app::AppError`] that each adapter maps. Every adapter calls these; none repeats them.
//! - [`domain`]: rules with no I/O, unit-tested beside their definitions: who may do what
//!   ([`domain::scope`]), the project state machine ([`domain::lifecycle`]), quota arithmetic,
//!   the catalog, names, manifests, passwords, retry arithmetic.
//! - [`store`]: every SQL statement, as functions over `&mut PgConnection` so one transaction
//!   can span a change, its job and its audit event; migrations (`migrations/`, reversible).
//! - [`clients`]: one trait per external system (inventory, GitOps, Argo CD, Kubernetes), the
//!   real implementation beside it, built once into [`clients::Clients`].
//! - [`http`]: the JSON API under `/api/v1`: extractors that answer in our error envelope,
//!   routes described for OpenAPI as they are written; each handler calls one use case.
//! - [`jobs`]: durable jobs, one file per kind with a typed payload, registered in one list;
//!   the [`jobs::engine`] that claims and runs them on apalis workers (and, for tests, runs
//!   every due job in place: [`jobs::engine::run_due`]), the cron [`jobs::scheduler`].
//!   `docs/JOBS.md` explains the design.
//! - [`config`]: figment layering (defaults < TOML file < `INFRAHUB_*` env), one file per
//!   section with its own validation; secrets never print.
//! - [`context`]: what everything shares (pool, config, token keys, job registry, clients),
//!   built once.
//! - [`daemon`]: the daemon assembled in one place: prepare from configuration, start a role
//!   (HTTP, workers, cron) on a listener, stop with grace. The CLI and the test harness both
//!   use it.
//! - [`cli`]: argument parsing and exit codes; [`telemetry`]: logging and the Prometheus
//!   recorder; [`notify`]: systemd's notification protocol (READY, STATUS, STOPPING, the
//!   watchdog).
//! - [`api_client`]: the command-line client (`infrahub login`, `projects`, `jobs`, ...), an
//!   adapter of the HTTP API rather than of [`app`]: it runs on people's machines and never
//!   touches the database.

pub mod api_client;
pub mod app;
pub mod cli;
pub mod clients;
pub mod config;
pub mod console;
pub mod context;
pub mod daemon;
pub mod domain;
pub mod http;
pub mod jobs;
pub mod notify;
pub mod store;
pub mod telemetry;

/// Selects rustls' `ring` provider for the whole process. Several dependencies enable
/// different providers, and rustls refuses to pick one itself: the first TLS client would
/// panic. Safe to call more than once.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
