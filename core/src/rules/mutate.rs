//! `mutate`: a Kyverno-style overlay, compiled once at load, applied to the object or to every
//! pod template. Explicit values in Git are never overwritten by `+()` anchors.

use super::Ctx;
use super::Rule;
use crate::mutate::journal::Journal;
use crate::mutate::overlay::Overlay;
use crate::policy::FieldError;
use crate::policy::model::{MutateSpec, OverlayTarget};
use crate::policy::reach::POD_KINDS;
use crate::workload::pod_template;
use serde_json::Value;

#[derive(Debug)]
pub struct MutateRule {
    target: OverlayTarget,
    overlay: Overlay,
}

impl MutateRule {
    pub fn compile(spec: &MutateSpec, field: &str) -> Result<MutateRule, FieldError> {
        if !spec.overlay.is_object() {
            return Err(FieldError::new(format!("{field}.overlay"), "must be a map"));
        }
        let overlay = Overlay::compile(&spec.overlay).map_err(|e| {
            let at = if e.path.is_empty() {
                format!("{field}.overlay")
            } else {
                format!("{field}.overlay.{}", e.path)
            };
            FieldError::new(at, e.message)
        })?;
        Ok(MutateRule {
            target: spec.target,
            overlay,
        })
    }
}

impl Rule for MutateRule {
    fn acts_on(&self) -> Option<Vec<(&'static str, &'static str)>> {
        (self.target == OverlayTarget::PodTemplate).then(|| POD_KINDS.to_vec())
    }

    /// Where the overlay is rooted for this request (a JSON pointer), if anywhere.
    fn mutation_root(&self, ctx: &Ctx<'_>) -> Option<&'static str> {
        match self.target {
            OverlayTarget::Object => Some(""),
            OverlayTarget::PodTemplate => {
                pod_template(&ctx.req.group, &ctx.req.kind).map(|(p, _)| p)
            }
        }
    }

    /// Applies the overlay to the value at its root, logging the writes.
    fn mutate<'a>(&'a self, target: &mut Value, journal: &mut Journal<'a>) {
        if target.is_object() {
            self.overlay.apply_logged(target, journal);
        }
    }
}
