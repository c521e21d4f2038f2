//! fluxadmit: an admission webhook that enforces deployment policy on Flux CD clusters.
//!
//! The data flow is the module layout: `server` (TLS, HTTP) → `admission` (review in/out) →
//! `engine` (pure evaluation of `policy` rules against the `cluster` view and the `graph`).

pub mod admission;
pub mod bench;
pub mod cel;
pub mod certs;
pub mod check;
pub mod cli;
pub mod cluster;
pub mod engine;
pub mod graph;
pub mod json;
pub mod metrics;
pub mod mutate;
pub mod policy;
pub mod pss;
pub mod rules;
pub mod server;
pub mod state;
pub mod workload;
