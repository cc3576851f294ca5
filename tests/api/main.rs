//! Integration tests: the real router over TCP against a fresh PostgreSQL database per test
//! (`#[sqlx::test]`), and the real binary where a process matters.

mod admin;
mod allocation;
mod argocd;
mod argocd_fake;
mod audit;
mod auth;
mod bodies;
mod chaos;
mod cli;
mod client;
mod console;
mod daemon;
mod db_restart;
mod demo;
mod e2e;
mod faults;
mod gitlab;
mod gitlab_fake;
mod gitops_double;
mod helpers;
mod idempotency;
mod inventory;
mod jobs;
mod jobs_api;
mod kube;
mod kube_fake;
mod lifecycle;
mod localgit;
mod migrations;
mod netbox_fake;
mod ops;
mod outages;
mod private_pg;
mod projects;
mod systemd;
