//! `mutate`: a Kyverno-style overlay, compiled once at load, applied to the object or to every
//! pod template. Explicit values in Git are never overwritten by `+()` anchors.

use super::Ctx;
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

    pub fn mutate(&self, ctx: &Ctx<'_>, obj: &mut Value) {
        match self.target {
            OverlayTarget::Object => {
                self.overlay.apply(obj);
            }
            OverlayTarget::PodTemplate => {
                let Some((pointer, _)) = pod_template(&ctx.req.group, &ctx.req.kind) else {
                    return;
                };
                if let Some(t) = obj.pointer_mut(pointer).filter(|t| t.is_object()) {
                    self.overlay.apply(t);
                }
            }
        }
    }
}
