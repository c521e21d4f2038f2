//! The engine: `evaluate(mode, request, policies, view)`. Pure: no I/O, no clock, no
//! randomness, so the same input gives the same bytes out on every replica and on dry runs.

use crate::admission::{Request, Verdict};
use crate::cluster::{ClusterView, FluxKind, labels_of};
use crate::mutate::journal::{Journal, Seg};
use crate::policy::PolicySet;
use crate::policy::matching::MatchInput;
use crate::policy::model::{Action, OperationName};
use crate::rules::{CompiledRule, Ctx, Finding, Level, str_at};
use serde_json::Value;
use std::fmt::Write as _;

/// Which webhook is answering.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Validate,
    Mutate,
}

/// A finding with the policy and rule that produced it, after the policy's action applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reported {
    pub policy: String,
    pub rule: String,
    pub finding: Finding,
}

impl std::fmt::Display for Reported {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}: ", self.policy, self.rule)?;
        if !self.finding.path.is_empty() {
            write!(f, "{}: ", self.finding.path)?;
        }
        f.write_str(&self.finding.message)
    }
}

/// Everything the engine decided for one request.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub verdict: Verdict,
    pub findings: Vec<Reported>,
    /// How many policies matched the request.
    pub matched: usize,
}

const DEFAULT_OPS: [OperationName; 2] = [OperationName::Create, OperationName::Update];

/// Metadata the webhook never changes, so a patch cannot depend on who asks or when.
const PROTECTED_METADATA: [&str; 7] = [
    "managedFields",
    "creationTimestamp",
    "generateName",
    "resourceVersion",
    "uid",
    "generation",
    "deletionTimestamp",
];

/// Evaluates one request against the policy set and the cluster view. A mutation writes into
/// the request's object and takes its writes back before returning: the request comes back
/// as it went in.
pub fn evaluate(
    mode: Mode,
    req: &mut Request,
    policies: &PolicySet,
    view: &ClusterView,
) -> Outcome {
    evaluate_with(mode, req, policies, view, None)
}

/// As [`evaluate`], with `extra`: objects confirmed by a live read that the view has not seen
/// yet (a cache miss), consulted after the view.
pub fn evaluate_with(
    mode: Mode,
    req: &mut Request,
    policies: &PolicySet,
    view: &ClusterView,
    extra: Option<&ClusterView>,
) -> Outcome {
    let object = if req.object.is_null() {
        req.old_object()
    } else {
        &req.object
    };
    let flux_kind = FluxKind::from_group_kind(&req.group, &req.kind);
    let own_ns_labels;
    let namespace_labels = if req.group.is_empty() && req.kind == "Namespace" {
        own_ns_labels = labels_of(object);
        Some(&own_ns_labels)
    } else {
        view.namespace_labels(&req.namespace)
    };
    let chart = match flux_kind {
        Some(FluxKind::HelmRelease) => str_at(object, "/spec/chart/spec/chart"),
        _ => None,
    };
    let input = MatchInput {
        group: &req.group,
        kind: &req.kind,
        namespace: &req.namespace,
        name: &req.name,
        operation: req.operation,
        labels: object
            .pointer("/metadata/labels")
            .and_then(Value::as_object),
        namespace_labels,
        chart,
    };
    let ctx = Ctx {
        req,
        object,
        view,
        extra,
        flux_kind,
    };

    let mut findings = Vec::new();
    let mut scratch = Vec::new();
    let mut mutations: Vec<(&CompiledRule, &'static str)> = Vec::new();
    let mut matched = 0;
    for policy in policies.policies.iter() {
        if !policy.matcher.matches(&input, &DEFAULT_OPS)
            || policy
                .exclude
                .as_ref()
                .is_some_and(|e| e.matches(&input, &[]))
        {
            continue;
        }
        matched += 1;
        for rule in &policy.rules {
            match mode {
                Mode::Validate => rule.validate(&ctx, &mut scratch),
                Mode::Mutate => {
                    if !req.object.is_null()
                        && let Some(root) = rule.mutation_root(&ctx)
                    {
                        mutations.push((rule, root));
                    }
                }
            }
            for mut finding in scratch.drain(..) {
                if policy.action == Action::Audit {
                    finding.level = Level::Warning;
                }
                findings.push(Reported {
                    policy: policy.name.clone(),
                    rule: rule.name.clone(),
                    finding,
                });
            }
        }
    }

    let patch = mutate(&mut req.object, &mutations);
    let mut message = String::new();
    let mut warnings = Vec::new();
    for r in &findings {
        match r.finding.level {
            Level::Error => {
                if !message.is_empty() {
                    message.push_str("; ");
                }
                let _ = write!(message, "{r}");
            }
            Level::Warning => warnings.push(r.to_string()),
        }
    }
    let allowed = message.is_empty();
    if !allowed {
        message = format!("denied by fluxadmit: {message}");
    }
    Outcome {
        verdict: Verdict {
            allowed,
            message,
            warnings,
            patch,
        },
        findings,
        matched,
    }
}

/// Runs the mutations in order, in place, and builds the patch from the writes they logged;
/// then undoes them, so `object` is given back as it came.
fn mutate(
    object: &mut Value,
    mutations: &[(&CompiledRule, &'static str)],
) -> Option<json_patch::Patch> {
    if mutations.is_empty() {
        return None;
    }
    let mut journal = Journal::new();
    for (rule, root) in mutations {
        if let Some(at) = object.pointer_mut(root) {
            journal.enter(root);
            rule.mutate(at, &mut journal);
        }
    }
    let protected = journal.any_write(|path| match path {
        [] | [Seg::Key("metadata")] => true,
        [Seg::Key("metadata"), Seg::Key(k), ..] => PROTECTED_METADATA.contains(k),
        _ => false,
    });
    if protected {
        // Rare: an object-rooted overlay wrote to metadata the webhook must not change. Redo it
        // on a copy, put those fields back and compare.
        journal.undo(object);
        let mut work = object.clone();
        for (rule, root) in mutations {
            if let Some(at) = work.pointer_mut(root) {
                rule.mutate(at, &mut Journal::new());
            }
        }
        restore_protected(object, &mut work);
        return Some(crate::mutate::patch::diff(object, &work));
    }
    let patch = journal.patch(object);
    journal.undo(object);
    Some(json_patch::Patch(patch))
}

/// Puts back metadata fields a mutation may have touched but the webhook must never change.
fn restore_protected(original: &Value, mutated: &mut Value) {
    let orig = original.get("metadata").and_then(Value::as_object);
    let Some(obj) = mutated.as_object_mut() else {
        return;
    };
    // An overlay may have removed or replaced `metadata` whole: start from an empty map then.
    let meta = obj
        .entry("metadata")
        .or_insert_with(|| Value::Object(Default::default()));
    if !meta.is_object() {
        *meta = Value::Object(Default::default());
    }
    let Some(meta) = meta.as_object_mut() else {
        return;
    };
    for key in PROTECTED_METADATA {
        match orig.and_then(|o| o.get(key)) {
            Some(v) => {
                meta.insert(key.to_owned(), v.clone());
            }
            None => {
                meta.remove(key);
            }
        }
    }
    if meta.is_empty() && orig.is_none() {
        obj.remove("metadata");
    }
}
