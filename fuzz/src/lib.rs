//! Fuzzing of fluxadmit's parsers of outside input: see FUZZING.md at the repository root.
//!
//! [`targets`] holds the targets (shared by the in-process driver, the AFL++ harness and the
//! replay test), [`mutator`] the input makers, [`driver`] the in-process loop.

pub mod driver;
pub mod mutator;
pub mod rng;
pub mod seed;
pub mod targets;

pub use targets::{ALL, Target};
