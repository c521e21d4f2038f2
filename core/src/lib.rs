//! fluxadmit's engine, with no I/O runtime and no API client: the policy model and its
//! compilation, the rules, the evaluation of a review against a cluster view, and the offline
//! check of a repository. The `fluxadmit` crate serves it (TLS, HTTP, the watch, the CLI).
//!
//! The data flow is the module layout: `admission` (review in/out) → `engine` (pure
//! evaluation of `policy` rules against the `cluster` view and the `graph`) → `state`
//! (a policy set and a view, answering reviews).

pub mod admission;
mod cel;
pub mod check;
pub mod cluster;
pub mod engine;
pub mod graph;
mod json;
pub mod mutate;
pub mod policy;
mod pss;
pub mod rules;
pub mod state;
mod workload;
