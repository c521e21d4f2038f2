//! `podSecurity`: the Pod Security Standards for Pods and every pod template, with
//! per-policy exemptions by namespace, object name and container image.

use super::Rule;
use super::{Ctx, Finding};
use crate::policy::FieldError;
use crate::policy::matching::globs;
use crate::policy::model::PodSecuritySpec;
use crate::policy::reach::POD_KINDS;
use crate::pss::{self, Level, Version};
use crate::workload::pod_template;
use globset::GlobSet;
use serde_json::Value;

#[derive(Debug)]
pub struct PodSecurityRule {
    level: Level,
    version: Version,
    checks: pss::Checks,
    namespaces: Option<GlobSet>,
    names: Option<GlobSet>,
    images: Option<GlobSet>,
}

impl PodSecurityRule {
    pub fn compile(spec: &PodSecuritySpec, field: &str) -> Result<PodSecurityRule, FieldError> {
        let level = spec.level;
        let version = match &spec.version {
            None => Version::Latest,
            Some(v) => v
                .parse::<Version>()
                .map_err(|e| FieldError::new(format!("{field}.version"), e.to_string()))?,
        };
        let ex = spec.exemptions.clone().unwrap_or_default();
        Ok(PodSecurityRule {
            level,
            version,
            checks: pss::Checks::new(level, version),
            namespaces: globs(&ex.namespaces, &format!("{field}.exemptions.namespaces"))?,
            names: globs(&ex.names, &format!("{field}.exemptions.names"))?,
            images: globs(&ex.images, &format!("{field}.exemptions.images"))?,
        })
    }
}

impl Rule for PodSecurityRule {
    fn acts_on(&self) -> Option<Vec<(&'static str, &'static str)>> {
        Some(POD_KINDS.to_vec())
    }

    fn validate(&self, ctx: &Ctx<'_>, out: &mut Vec<Finding>) {
        let Some((pointer, path)) = pod_template(&ctx.req.group, &ctx.req.kind) else {
            return;
        };
        if self
            .namespaces
            .as_ref()
            .is_some_and(|g| g.is_match(ctx.namespace()))
            || self.names.as_ref().is_some_and(|g| g.is_match(ctx.name()))
        {
            return;
        }
        let Some(template) = crate::json::at(ctx.object, pointer) else {
            return;
        };
        let Some(spec) = template.get("spec").filter(|s| s.is_object()) else {
            return;
        };
        let exempt = |image: &str| self.images.as_ref().is_some_and(|g| g.is_match(image));
        let violations = self
            .checks
            .check_pod(template.get("metadata"), spec, path, &exempt);
        if !violations.is_empty() {
            let at = if path.is_empty() {
                "spec".to_owned()
            } else {
                format!("{path}.spec")
            };
            out.push(Finding::error(
                at,
                pss::summarize(self.level, self.version, &violations),
            ));
        }
    }
}

/// The pod spec of a workload, if the kind has one.
pub fn pod_spec<'a>(group: &str, kind: &str, obj: &'a Value) -> Option<&'a Value> {
    let (pointer, _) = pod_template(group, kind)?;
    crate::json::at(obj, pointer)?.get("spec")
}
