//! Mutation support: Kyverno-style overlays.

pub mod overlay;
pub mod patch;
