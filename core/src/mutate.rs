//! Mutation support: Kyverno-style overlays.

pub mod journal;
pub mod overlay;
pub mod patch;
