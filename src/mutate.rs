//! Mutation support: Kyverno-style overlays.

pub mod overlay;
