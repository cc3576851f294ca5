//! Clients of the systems InfraHub talks to, one trait per system with its real
//! implementation beside it. Test doubles are HTTP servers under `tests/`, never here.

pub mod argocd;
pub mod gitlab;
pub mod gitops;
pub mod inventory;
pub mod kube;
