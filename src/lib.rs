//! fluxadmit: an admission webhook that enforces deployment policy on Flux CD clusters.
//!
//! This crate is the server around `fluxadmit-core`: TLS and HTTP (`server`), the watch that
//! keeps the cluster view current (`watch`) and the live read that confirms a miss (`live`),
//! certificates, metrics, logging and the command line. Its modules are private; what other
//! crates (the benchmarks) may use is re-exported below.

mod certs;
mod cli;
mod live;
mod metrics;
mod render;
mod report;
mod server;
mod watch;

// The engine's modules, under the names this crate's code uses for them.
use fluxadmit_core::{admission, check, cluster, engine, graph, policy, rules, state};

pub use cli::main;

// Running the server in-process, as the benchmarks and the integration tests do.
pub use certs::{Bundle, CertOptions, generate as generate_certs, write as write_certs};
pub use cli::{LogFormat, init_logging, log_dispatch, parse_duration};
pub use metrics::{Metrics, log_lines_dropped};
pub use server::http::{AppState, MAX_BODY};
pub use server::tls::CertFiles;
pub use server::{
    H2_PREFACE_TIMEOUT, METRICS_HEADER_TIMEOUT, METRICS_MAX_CONNECTIONS, Options as ServerOptions,
    Running, start as start_server,
};
