//! The engine: `evaluate(mode, request, policies, view)`. Pure: no I/O, no clock, no
//! randomness, so the same input gives the same bytes out on every replica and on dry runs.

use crate::admission::{Request, Verdict};
use crate::cluster::{ClusterView, FluxKind, labels_of};
use crate::mutate::journal::{Journal, Seg};
use crate::policy::PolicySet;
use crate::policy::matching::MatchInput;
use crate::policy::model::{Action, OperationName};
use crate::rules::{Basis, CompiledRule, Ctx, Finding, Level};
use serde_json::Value;
use std::fmt::Write as _;

mod managed;

/// Which webhook is answering.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Validate,
    Mutate,
}

/// A finding with the policy and rule that produced it, after the policy's action applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reported {
    /// The policy's and the rule's names, shared with the compiled policy (no copy per finding).
    pub policy: std::sync::Arc<str>,
    pub rule: std::sync::Arc<str>,
    pub finding: Finding,
}

impl Reported {
    /// Writes `policy/rule: path: message` (the path part only when there is one): the form
    /// of a warning, and of each part of a denial message.
    fn write_to(&self, out: &mut impl std::fmt::Write) -> std::fmt::Result {
        let f = &self.finding;
        out.write_str(&self.policy)?;
        out.write_char('/')?;
        out.write_str(&self.rule)?;
        out.write_str(": ")?;
        if !f.path.is_empty() {
            out.write_str(&f.path)?;
            out.write_str(": ")?;
        }
        out.write_str(&f.message)
    }

    /// The length of what [`Reported::write_to`] writes, at most.
    fn text_len(&self) -> usize {
        self.policy.len()
            + self.rule.len()
            + self.finding.path.len()
            + self.finding.message.len()
            + 5
    }
}

impl std::fmt::Display for Reported {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.write_to(f)
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

/// The longest message one finding keeps, in bytes; longer ones are cut with a marker
/// ([`crate::admission::truncate_text`]). A finding is logged and may be listed in the answer.
pub const MAX_FINDING_MESSAGE_BYTES: usize = 8 * 1024;

/// The most findings one rule reports for one request; the rest are counted in one last
/// finding of that rule (an error if any of them is).
pub const MAX_FINDINGS_PER_RULE: usize = 50;

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

/// What the view stands for, which decides how a finding about another object is judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum World {
    /// Admission in a live cluster: Flux dry-runs a whole apply before writing any of it,
    /// applies sets in a fixed order, and its controllers create objects later. A finding
    /// about another object's state never denies a dry run nor a write Flux makes.
    #[default]
    Live,
    /// Offline (`fluxadmit check`): the repository and the state are everything there is, so
    /// what is absent stays absent.
    Whole,
}

/// Labels Flux's controllers put on every object they apply.
const FLUX_OWNER_LABELS: [&str; 2] = [
    "kustomize.toolkit.fluxcd.io/name",
    "helm.toolkit.fluxcd.io/name",
];

/// Service accounts of the Flux controllers that write objects.
const FLUX_CONTROLLERS: [&str; 2] = ["kustomize-controller", "helm-controller"];

/// Evaluates one request against the policy set and the cluster view. A mutation writes into
/// the request's object and takes its writes back before returning: the request comes back
/// as it went in.
pub fn evaluate(
    mode: Mode,
    req: &mut Request,
    policies: &PolicySet,
    view: &ClusterView,
) -> Outcome {
    evaluate_in(mode, req, policies, view, None, World::Live)
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
    evaluate_in(mode, req, policies, view, extra, World::Live)
}

/// What matching needs beyond the request: the namespace's labels (a Namespace's own) and a
/// HelmRelease's chart.
fn match_context<'a>(
    req: &Request,
    object: &'a Value,
    view: &'a ClusterView,
    flux_kind: Option<FluxKind>,
) -> (
    Option<std::borrow::Cow<'a, crate::policy::model::Labels>>,
    Option<&'a str>,
) {
    let namespace_labels = if req.group.is_empty() && req.kind == "Namespace" {
        Some(std::borrow::Cow::Owned(labels_of(object)))
    } else {
        view.namespace_labels(&req.namespace)
            .map(std::borrow::Cow::Borrowed)
    };
    let chart = match flux_kind {
        Some(FluxKind::HelmRelease) => view.release_chart(&req.namespace, object),
        _ => None,
    };
    (namespace_labels, chart)
}

fn match_input<'a>(
    req: &'a Request,
    object: &'a Value,
    namespace_labels: Option<&'a crate::policy::model::Labels>,
    chart: Option<&'a str>,
) -> MatchInput<'a> {
    MatchInput {
        group: &req.group,
        kind: &req.kind,
        namespace: &req.namespace,
        name: &req.name,
        operation: req.operation,
        labels: crate::json::at(object, "/metadata/labels").and_then(Value::as_object),
        namespace_labels,
        chart,
    }
}

/// Whether a policy with a rule estimated above `threshold` (`cel::cost`) matches this request:
/// the server evaluates only those reviews off its async workers, with a deadline. A DELETE
/// (its old object not read yet) counts as matching when any such policy is loaded.
pub fn costly_match(
    req: &Request,
    policies: &PolicySet,
    view: &ClusterView,
    threshold: f64,
) -> bool {
    let mut costly = policies
        .policies
        .iter()
        .filter(|p| p.estimated_cost > threshold)
        .peekable();
    if costly.peek().is_none() {
        return false;
    }
    if req.object.is_null() {
        return true;
    }
    let object = &req.object;
    let flux_kind = FluxKind::from_group_kind(&req.group, &req.kind);
    let (namespace_labels, chart) = match_context(req, object, view, flux_kind);
    let input = match_input(req, object, namespace_labels.as_deref(), chart);
    costly.any(|p| {
        p.matcher.matches(&input, &DEFAULT_OPS)
            && !p.exclude.as_ref().is_some_and(|e| e.matches(&input, &[]))
    })
}

/// As [`evaluate_with`], in a given [`World`].
pub fn evaluate_in(
    mode: Mode,
    req: &mut Request,
    policies: &PolicySet,
    view: &ClusterView,
    extra: Option<&ClusterView>,
    world: World,
) -> Outcome {
    // An object being deleted only waits for its finalizers to go: nothing about it is judged
    // any more, and nothing is added to it.
    if req.operation == OperationName::Update && is_terminating(&req.object) {
        return Outcome {
            verdict: Verdict {
                allowed: true,
                ..Verdict::default()
            },
            findings: Vec::new(),
            matched: 0,
        };
    }
    let object = if req.object.is_null() {
        req.old_object()
    } else {
        &req.object
    };
    let flux_kind = FluxKind::from_group_kind(&req.group, &req.kind);
    let (namespace_labels, chart) = match_context(req, object, view, flux_kind);
    let input = match_input(req, object, namespace_labels.as_deref(), chart);
    let ctx = Ctx {
        req,
        object,
        view,
        extra,
        flux_kind,
    };

    let mut findings = Vec::new();
    // (policy, rule) of each finding, by position.
    let mut origins: Vec<(usize, usize)> = Vec::new();
    let mut scratch = Vec::new();
    let mut mutations: Vec<(&CompiledRule, &'static str)> = Vec::new();
    let mut audits: Vec<(usize, usize, &'static str)> = Vec::new();
    let mut matched = 0;
    for (p, policy) in policies.policies.iter().enumerate() {
        if !policy.matcher.matches(&input, &DEFAULT_OPS)
            || policy
                .exclude
                .as_ref()
                .is_some_and(|e| e.matches(&input, &[]))
        {
            continue;
        }
        matched += 1;
        for (r, rule) in policy.rules.iter().enumerate() {
            match mode {
                Mode::Validate => rule.validate(&ctx, &mut scratch),
                Mode::Mutate => {
                    if !req.object.is_null()
                        && let Some(root) = rule.mutation_root(&ctx)
                    {
                        match policy.action {
                            Action::Enforce => mutations.push((rule, root)),
                            Action::Audit => audits.push((p, r, root)),
                        }
                    }
                }
            }
            for mut finding in scratch.drain(..) {
                crate::admission::truncate_text(&mut finding.message, MAX_FINDING_MESSAGE_BYTES);
                if policy.action == Action::Audit {
                    finding.level = Level::Warning;
                }
                findings.push(Reported {
                    policy: policy.name.clone(),
                    rule: rule.name.clone(),
                    finding,
                });
                origins.push((p, r));
            }
        }
    }
    judge(&mut findings, req, object, world);
    if req.operation == OperationName::Update && findings.iter().any(is_error) {
        spare_unchanged(&mut findings, &origins, policies, &ctx);
    }
    cap_findings(&mut findings, &origins);

    let patch = mutate(&mut req.object, &mutations);
    // An `Audit` policy never changes the object: it says what it would change.
    for (p, r, root) in audits {
        let policy = &policies.policies[p];
        let rule = &policy.rules[r];
        let Some(would) = mutate(&mut req.object, &[(rule, root)]) else {
            continue;
        };
        if would.0.is_empty() {
            continue;
        }
        findings.push(Reported {
            policy: policy.name.clone(),
            rule: rule.name.clone(),
            finding: Finding::warning(
                "",
                format!(
                    "Audit: not applied; Enforce would patch {}",
                    describe_patch(&would)
                ),
            ),
        });
    }
    if mode == Mode::Validate
        && let Some(finding) = policy_schema(req)
    {
        findings.push(Reported {
            policy: "fluxadmit".into(),
            rule: "policy-schema".into(),
            finding,
        });
    }
    const DENIED: &str = "denied by fluxadmit: ";
    let mut message = String::new();
    let mut warnings = Vec::new();
    // Errors past the message's limit are only counted.
    let mut unlisted = 0usize;
    for r in &findings {
        match r.finding.level {
            Level::Error if message.len() >= crate::admission::MAX_MESSAGE_BYTES => unlisted += 1,
            Level::Error => {
                message.push_str(if message.is_empty() { DENIED } else { "; " });
                message.reserve(r.text_len());
                let _ = r.write_to(&mut message);
            }
            Level::Warning => {
                let mut w = String::with_capacity(r.text_len());
                let _ = r.write_to(&mut w);
                warnings.push(w);
            }
        }
    }
    if unlisted > 0 {
        let note = format!("; and {unlisted} more errors not shown");
        crate::admission::truncate_text(
            &mut message,
            crate::admission::MAX_MESSAGE_BYTES - note.len(),
        );
        message.push_str(&note);
    }
    let allowed = message.is_empty();
    let mut verdict = Verdict {
        allowed,
        message,
        warnings,
        patch,
    };
    verdict.cap();
    Outcome {
        verdict,
        findings,
        matched,
    }
}

/// Keeps at most [`MAX_FINDINGS_PER_RULE`] findings of each rule (`origins` gives each
/// finding's policy and rule by position); the rest become one finding that counts them,
/// in place of the first one left out: an error if any of them is.
fn cap_findings(findings: &mut Vec<Reported>, origins: &[(usize, usize)]) {
    if findings.len() <= MAX_FINDINGS_PER_RULE {
        return;
    }
    // Per rule: how many seen, and where its counting finding is.
    let mut seen: rustc_hash::FxHashMap<(usize, usize), (usize, Option<usize>)> =
        rustc_hash::FxHashMap::default();
    let mut out: Vec<Reported> = Vec::with_capacity(findings.len().min(4 * MAX_FINDINGS_PER_RULE));
    let mut counts: Vec<usize> = Vec::new();
    for (i, r) in std::mem::take(findings).into_iter().enumerate() {
        // Findings after the rules' own (audits, the policy schema) have no origin.
        let Some(&origin) = origins.get(i) else {
            out.push(r);
            continue;
        };
        let entry = seen.entry(origin).or_insert((0, None));
        entry.0 += 1;
        if entry.0 <= MAX_FINDINGS_PER_RULE {
            out.push(r);
            continue;
        }
        match entry.1 {
            Some(at) => {
                counts[at] += 1;
                if is_error(&r) {
                    out[at].finding.level = Level::Error;
                }
            }
            None => {
                entry.1 = Some(out.len());
                let mut summary = Finding::warning("", String::new());
                summary.level = r.finding.level;
                summary.basis = r.finding.basis;
                counts.resize(out.len() + 1, 0);
                counts[out.len()] = 1;
                out.push(Reported {
                    policy: r.policy,
                    rule: r.rule,
                    finding: summary,
                });
            }
        }
    }
    for (at, &n) in counts.iter().enumerate() {
        if n > 0 {
            out[at].finding.message = format!("and {n} more findings of this rule not shown");
        }
    }
    *findings = out;
}

/// fluxadmit's own rule: a `DeploymentPolicy` resource that would not compile is denied at
/// `kubectl apply`, with its field and reason, instead of being skipped by the watch later.
fn policy_schema(req: &Request) -> Option<Finding> {
    use crate::policy::model::{API_VERSION, KIND};
    let group = API_VERSION.split('/').next().unwrap_or_default();
    if req.group != group || req.kind != KIND || req.object.is_null() {
        return None;
    }
    let source = format!("{KIND}/{}", req.name);
    let e = crate::policy::load::compile_document(&source, req.object.clone()).err()?;
    Some(Finding::error(e.field, e.reason))
}

fn is_error(r: &Reported) -> bool {
    r.finding.level == Level::Error
}

/// Turns an error into a warning that says why it was not denied.
fn admit(r: &mut Reported, why: &str) {
    r.finding.level = Level::Warning;
    let _ = write!(r.finding.message, " (admitted: {why})");
}

/// Judges the findings that rest on another object's state. Flux dry-runs every object of an
/// apply before it writes any of them, writes them in its own order, and its controllers
/// create Secrets and objects later (ExternalSecrets, Helm charts, other Kustomizations):
/// denying such a request can block the very apply that would provide what is missing, for
/// ever. So such a finding denies only a real write that Flux does not make (a person's
/// `kubectl apply`, which writes every object whatever happens to the others), and offline,
/// where the repository is everything there is.
fn judge(findings: &mut [Reported], req: &Request, object: &Value, world: World) {
    if world == World::Whole
        || !findings
            .iter()
            .any(|r| is_error(r) && r.finding.basis == Basis::Other)
    {
        return;
    }
    let why = if req.dry_run {
        "a dry run; Flux dry-runs a whole apply before it writes any of it"
    } else if flux_applied(object) || flux_controller(req.username()) {
        "Flux applies this object; what it needs may come in the same or another apply, and Flux retries"
    } else {
        return;
    };
    for r in findings
        .iter_mut()
        .filter(|r| is_error(r) && r.finding.basis == Basis::Other)
    {
        admit(r, why);
    }
}

/// Whether one of Flux's controllers applied the object (it carries their ownership labels).
pub fn flux_applied(object: &Value) -> bool {
    crate::json::at(object, "/metadata/labels")
        .and_then(Value::as_object)
        .is_some_and(|l| FLUX_OWNER_LABELS.iter().any(|k| l.contains_key(*k)))
}

/// Whether the request comes from one of Flux's controllers (their service accounts keep these
/// names in whatever namespace Flux is installed).
fn flux_controller(username: Option<&str>) -> bool {
    username
        .and_then(|u| u.strip_prefix("system:serviceaccount:"))
        .and_then(|u| u.split_once(':'))
        .is_some_and(|(_, sa)| FLUX_CONTROLLERS.contains(&sa))
}

/// Whether the object is being deleted (`metadata.deletionTimestamp` set).
fn is_terminating(object: &Value) -> bool {
    object
        .get("metadata")
        .and_then(|m| m.get("deletionTimestamp"))
        .is_some_and(|v| !v.is_null())
}

/// On UPDATE, errors that are not this update's doing are admitted: all of them when the update
/// changes only metadata that Flux and Kubernetes manage (finalizers, reconcile requests), and
/// each one the old object already had when its policy allows existing violations.
fn spare_unchanged(
    findings: &mut [Reported],
    origins: &[(usize, usize)],
    policies: &PolicySet,
    ctx: &Ctx<'_>,
) {
    let old = ctx.req.old_object();
    if !old.is_object() {
        return;
    }
    if managed::same_but_managed(old, ctx.object) {
        for r in findings.iter_mut().filter(|r| is_error(r)) {
            admit(
                r,
                "this update changes only metadata that Flux and Kubernetes manage",
            );
        }
        return;
    }
    let old_ctx = Ctx {
        req: ctx.req,
        object: old,
        view: ctx.view,
        extra: ctx.extra,
        flux_kind: ctx.flux_kind,
    };
    let mut before: Vec<((usize, usize), Vec<Finding>)> = Vec::new();
    for (r, &(p, rule)) in findings.iter_mut().zip(origins) {
        if !is_error(r) || !policies.policies[p].allow_existing_violations {
            continue;
        }
        let at = match before.iter().position(|(k, _)| *k == (p, rule)) {
            Some(at) => at,
            None => {
                let mut out = Vec::new();
                policies.policies[p].rules[rule].validate(&old_ctx, &mut out);
                before.push(((p, rule), out));
                before.len() - 1
            }
        };
        // The new findings' messages were cut to the limit: compare the old ones cut alike.
        let had = before[at].1.iter().any(|o| {
            o.path == r.finding.path
                && if o.message.len() > MAX_FINDING_MESSAGE_BYTES {
                    let mut cut = o.message.clone();
                    crate::admission::truncate_text(&mut cut, MAX_FINDING_MESSAGE_BYTES);
                    cut == r.finding.message
                } else {
                    o.message == r.finding.message
                }
        });
        if had {
            admit(
                r,
                "the object already had this violation before this update; set allowExistingViolations: false to deny it",
            );
        }
    }
}

/// `add /a/b, replace /c` for a warning; at most six operations, then a count.
fn describe_patch(patch: &json_patch::Patch) -> String {
    use json_patch::PatchOperation as Op;
    let mut out = String::new();
    for (i, op) in patch.0.iter().enumerate() {
        if i == 6 {
            let _ = write!(out, " and {} more", patch.0.len() - 6);
            break;
        }
        if i > 0 {
            out.push_str(", ");
        }
        let (verb, path) = match op {
            Op::Add(o) => ("add", &o.path),
            Op::Remove(o) => ("remove", &o.path),
            Op::Replace(o) => ("replace", &o.path),
            Op::Move(o) => ("move", &o.path),
            Op::Copy(o) => ("copy", &o.path),
            Op::Test(o) => ("test", &o.path),
        };
        let _ = write!(out, "{verb} {path}");
    }
    out
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

#[cfg(test)]
mod caps {
    use super::*;

    fn reported(rule: &str, level: Level, i: usize) -> Reported {
        let mut finding = Finding::warning(format!("spec.items[{i}]"), format!("bad item {i}"));
        finding.level = level;
        Reported {
            policy: "p".into(),
            rule: rule.into(),
            finding,
        }
    }

    #[test]
    fn findings_are_capped_per_rule_and_counted() {
        let mut findings = Vec::new();
        let mut origins = Vec::new();
        for i in 0..1000 {
            // Rule a: warnings, then one error among the ones left out.
            let level = if i == 700 {
                Level::Error
            } else {
                Level::Warning
            };
            findings.push(reported("a", level, i));
            origins.push((0, 0));
        }
        for i in 0..3 {
            findings.push(reported("b", Level::Error, i));
            origins.push((0, 1));
        }
        // A finding with no origin (an audit's) is kept as it is.
        findings.push(reported("audit", Level::Warning, 0));
        cap_findings(&mut findings, &origins);
        assert_eq!(findings.len(), MAX_FINDINGS_PER_RULE + 1 + 3 + 1);
        let count = &findings[MAX_FINDINGS_PER_RULE];
        assert_eq!(&*count.rule, "a");
        assert_eq!(
            count.finding.level,
            Level::Error,
            "one left out is an error"
        );
        assert_eq!(
            count.finding.message,
            format!(
                "and {} more findings of this rule not shown",
                1000 - MAX_FINDINGS_PER_RULE
            )
        );
        assert_eq!(
            findings[MAX_FINDINGS_PER_RULE - 1].finding.message,
            "bad item 49"
        );
        assert_eq!(&*findings[MAX_FINDINGS_PER_RULE + 1].rule, "b");
        assert_eq!(&*findings.last().unwrap().rule, "audit");

        // Few findings: untouched.
        let mut few: Vec<Reported> = (0..5).map(|i| reported("a", Level::Error, i)).collect();
        let before = few.clone();
        cap_findings(&mut few, &[(0, 0); 5]);
        assert_eq!(few, before);
    }
}
