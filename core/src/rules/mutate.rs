//! `mutate`: a Kyverno-style overlay, compiled once at load, applied to the object or to every
//! pod template. Explicit values in Git are never overwritten by `+()` anchors.

use super::Ctx;
use crate::mutate::journal::Journal;
use crate::mutate::overlay::Overlay;
use crate::policy::model::{MutateSpec, OverlayTarget};
use crate::workload::pod_template;
use serde_json::Value;

#[derive(Debug)]
pub struct MutateRule {
    target: OverlayTarget,
    overlay: Overlay,
}

impl MutateRule {
    pub fn compile(spec: &MutateSpec, field: &str) -> Result<MutateRule, (String, String)> {
        if !spec.overlay.is_object() {
            return Err((format!("{field}.overlay"), "must be a map".into()));
        }
        let overlay = Overlay::compile(&spec.overlay).map_err(|e| {
            let at = if e.path.is_empty() {
                format!("{field}.overlay")
            } else {
                format!("{field}.overlay.{}", e.path)
            };
            (at, e.message)
        })?;
        Ok(MutateRule {
            target: spec.target,
            overlay,
        })
    }

    /// Where the overlay is rooted for this request (a JSON pointer), if anywhere.
    pub fn root(&self, ctx: &Ctx<'_>) -> Option<&'static str> {
        match self.target {
            OverlayTarget::Object => Some(""),
            OverlayTarget::PodTemplate => {
                pod_template(&ctx.req.group, &ctx.req.kind).map(|(p, _)| p)
            }
        }
    }

    /// Applies the overlay to the value at its root, logging the writes.
    pub fn mutate<'a>(&'a self, target: &mut Value, journal: &mut Journal<'a>) {
        if target.is_object() {
            self.overlay.apply_logged(target, journal);
        }
    }
}
