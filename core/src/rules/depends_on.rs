//! `dependsOn`: Flux dependency correctness for HelmReleases and Kustomizations.
//!
//! Flux itself validates none of this: a cycle or a wrong name leaves objects waiting for
//! "dependency not ready" forever, retried every 30 s.

use super::Rule;
use super::{Ctx, Finding};
use crate::cluster::{FluxKind, FluxObject};
use crate::graph::{self, ObjKey};
use crate::policy::FieldError;
use crate::policy::model::{DependsOnSpec, Severity};
use crate::policy::reach::{HELM_RELEASE, KUSTOMIZATION};
use serde_json::Value;

#[derive(Debug)]
pub struct DependsOn {
    missing: Severity,
    allow_cross_namespace: bool,
    tier_label: Option<String>,
    require_tiers: bool,
    max_depth: Option<u32>,
}

impl DependsOn {
    pub fn compile(spec: &DependsOnSpec, _field: &str) -> Result<DependsOn, FieldError> {
        Ok(DependsOn {
            missing: spec.missing,
            allow_cross_namespace: spec.allow_cross_namespace,
            tier_label: spec.tier_label.clone(),
            require_tiers: spec.require_tiers,
            max_depth: spec.max_depth,
        })
    }

    fn report_missing(
        &self,
        kind: FluxKind,
        me: &ObjKey,
        key: &ObjKey,
        exists_as_other: bool,
        path: &str,
        out: &mut Vec<Finding>,
    ) {
        let message = if exists_as_other {
            format!(
                "{key} exists only as a {}; a {} can depend only on {}s, so {me} would wait for it forever",
                kind.other().name(),
                kind.name(),
                kind.name()
            )
        } else {
            [
                kind.name(),
                " ",
                &key.namespace,
                "/",
                &key.name,
                " not found; ",
                &me.namespace,
                "/",
                &me.name,
                " will not reconcile until it exists and is ready",
            ]
            .concat()
        };
        match self.missing {
            Severity::Deny => out.push(Finding::error(path, message).on_other()),
            Severity::Warn => out.push(Finding::warning(path, message).on_other()),
            Severity::Ignore => {}
        }
    }

    /// The tier of an object from its labels: Ok(None) when tiers are not configured.
    fn tier_of(&self, labels: Option<&Value>) -> Result<Option<i64>, String> {
        let Some(label) = &self.tier_label else {
            return Ok(None);
        };
        match labels.and_then(|l| l.get(label)).and_then(Value::as_str) {
            None => Err(format!("has no {label:?} label")),
            Some(v) => v
                .trim()
                .parse::<i64>()
                .map(Some)
                .map_err(|_| format!("has {label:?} label {v:?}, which is not an integer")),
        }
    }

    fn check_tier(
        &self,
        me: &ObjKey,
        my_tier: &Result<Option<i64>, String>,
        key: &ObjKey,
        dep: &FluxObject,
        path: &str,
        out: &mut Vec<Finding>,
    ) {
        let Some(label) = &self.tier_label else {
            return;
        };
        let Ok(Some(mine)) = my_tier else { return };
        match dep.labels.get(label).map(|v| v.trim().parse::<i64>()) {
            Some(Ok(theirs)) if theirs >= *mine => out.push(Finding::error(
                path,
                format!("{me} (tier {mine}) depends on {key} (tier {theirs}); an object may depend only on lower tiers"),
            ).on_other()),
            Some(Ok(_)) => {}
            Some(Err(_)) | None if self.require_tiers => out.push(Finding::error(
                path,
                format!("{me} (tier {mine}) depends on {key}, which has no valid {label:?} tier label"),
            ).on_other()),
            _ => {}
        }
    }

    fn check_ready_expr(&self, expr: &Value, path: &str, out: &mut Vec<Finding>) {
        let Some(src) = expr.as_str() else {
            out.push(Finding::error(
                format!("{path}.readyExpr"),
                "must be a string",
            ));
            return;
        };
        if let Err(e) = crate::cel::check_ready_expr(src) {
            out.push(Finding::error(
                format!("{path}.readyExpr"),
                format!(
                    "invalid CEL expression {src:?} at {}:{}: {}; Flux would stall the object (InvalidCELExpression)",
                    e.line, e.column, e.message
                ),
            ));
        }
    }
}

impl Rule for DependsOn {
    fn acts_on(&self) -> Option<Vec<(&'static str, &'static str)>> {
        Some(vec![HELM_RELEASE, KUSTOMIZATION])
    }

    fn validate(&self, ctx: &Ctx<'_>, out: &mut Vec<Finding>) {
        let Some(kind) = ctx.flux_kind else { return };
        let ns = ctx.namespace();
        let me = ObjKey {
            namespace: ns.to_owned(),
            name: ctx.name().to_owned(),
        };

        let items = match crate::json::at(ctx.object, "/spec/dependsOn") {
            None | Some(Value::Null) => &[][..],
            Some(Value::Array(a)) => a.as_slice(),
            Some(_) => {
                out.push(Finding::error(
                    "spec.dependsOn",
                    "must be a list of {name, namespace} entries",
                ));
                return;
            }
        };
        let my_tier = self.tier_of(crate::json::at(ctx.object, "/metadata/labels"));
        if let (Some(label), true, Err(reason)) = (&self.tier_label, self.require_tiers, &my_tier) {
            out.push(Finding::error(
                format!("metadata.labels[{label}]"),
                format!("{} {me} {reason}; every object needs a tier so the install order is guaranteed", kind.name()),
            ));
        }

        let mut deps: Vec<ObjKey> = Vec::with_capacity(items.len());
        // Whether any dependency resolves: a cycle through this object needs one that does.
        let mut any_present = false;
        for (i, item) in items.iter().enumerate() {
            let path = super::indexed("spec.dependsOn", i);
            let Some(name) = item
                .get("name")
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
            else {
                out.push(Finding::error(format!("{path}.name"), "required"));
                continue;
            };
            let dep_ns = item
                .get("namespace")
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .unwrap_or(ns);
            let key = ObjKey {
                namespace: dep_ns.to_owned(),
                name: name.to_owned(),
            };
            if key == me {
                out.push(Finding::error(
                    path,
                    format!(
                        "{} {me} depends on itself: it would never become ready",
                        kind.name()
                    ),
                ));
                continue;
            }
            if deps.contains(&key) {
                let first = original_index(items, ns, &key);
                out.push(Finding::error(
                    path,
                    format!("duplicate dependency {key} (also spec.dependsOn[{first}])"),
                ));
                continue;
            }
            if dep_ns != ns && !self.allow_cross_namespace {
                out.push(Finding::error(
                    format!("{path}.namespace"),
                    format!(
                        "cross-namespace dependency on {key} is not allowed in namespace {ns:?}"
                    ),
                ));
            }
            if let Some(expr) = item.get("readyExpr") {
                self.check_ready_expr(expr, &path, out);
            }
            match ctx.flux_object(kind, dep_ns, name) {
                Some(dep) => {
                    any_present = true;
                    self.check_tier(&me, &my_tier, &key, dep, &path, out);
                }
                None => {
                    let as_other = ctx.flux_object(kind.other(), dep_ns, name).is_some();
                    self.report_missing(kind, &me, &key, as_other, &path, out);
                }
            }
            deps.push(key);
        }

        let edges = |k: &ObjKey| {
            ctx.flux_object(kind, &k.namespace, &k.name)
                .map(|o| o.depends_on.as_slice())
        };
        // Searching from both ends needs the reverse edges, which the view keeps; objects from a
        // live read (rare) have none, so then the search goes forward only.
        let cycle = match ctx.extra {
            _ if !any_present => None,
            None => {
                graph::find_cycle_bidirectional(&me, &deps, edges, |k| ctx.view.dependents(kind, k))
            }
            Some(_) => graph::find_cycle_through(&me, &deps, edges),
        };
        if let Some(cycle) = cycle {
            let path = match cycle.get(1) {
                Some(k) => format!("spec.dependsOn[{}]", original_index(items, ns, k)),
                None => "spec.dependsOn".to_owned(),
            };
            let text: Vec<String> = cycle.iter().map(ToString::to_string).collect();
            out.push(
                Finding::error(
                    path,
                    format!(
                        "dependency cycle: {}; Flux would wait on it forever",
                        text.join(" → ")
                    ),
                )
                .on_other(),
            );
            return;
        }
        if let Some(max) = self.max_depth {
            let depth = graph::longest_chain(&me, &deps, edges);
            if depth > max as usize {
                out.push(Finding::error(
                    "spec.dependsOn",
                    format!("dependency chain from {me} is {depth} deep; the policy allows at most {max}"),
                ).on_other());
            }
        }
    }
}

/// The index in `spec.dependsOn` of the first entry that resolves to `key`.
fn original_index(items: &[Value], ns: &str, key: &ObjKey) -> usize {
    items
        .iter()
        .enumerate()
        .filter(|(_, it)| {
            it.get("name").and_then(Value::as_str) == Some(key.name.as_str())
                && it
                    .get("namespace")
                    .and_then(Value::as_str)
                    .filter(|s| !s.is_empty())
                    .unwrap_or(ns)
                    == key.namespace
        })
        .map(|(i, _)| i)
        .next()
        .unwrap_or(0)
}
