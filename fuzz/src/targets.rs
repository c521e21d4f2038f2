//! The fuzz targets: each takes raw bytes, runs one parser of outside input (and what consumes
//! its output), and returns a short *signature* of what happened (which error, which rules
//! fired) that the driver uses as feedback. `Err` is an invariant violation (a finding just like
//! a panic); a parse error of the input is an `Ok` signature, not a finding.

use fluxadmit_core::admission::{self, ReviewError};
use fluxadmit_core::check::{self, Document};
use fluxadmit_core::cluster::load::{parse_manifests, parse_manifests_with_lines};
use fluxadmit_core::cluster::{ClusterView, FluxKind};
use fluxadmit_core::engine::Mode;
use fluxadmit_core::mutate::journal::Journal;
use fluxadmit_core::mutate::overlay::Overlay;
use fluxadmit_core::policy::load::{compile_document, compile_documents, compile_yaml};
use fluxadmit_core::policy::{PolicyError, PolicySet, builtin};
use fluxadmit_core::state::Snapshot;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// Every target, in the order `all` runs them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Target {
    /// AdmissionReview bodies: `admission::parse_review`, then `Snapshot::review` (the server's
    /// and `fluxadmit review`'s path) in both modes with the built-in and example policies.
    Review,
    /// DeploymentPolicy YAML: `policy::load::compile_yaml`, then the compiled set answering
    /// the example reviews.
    Policy,
    /// State manifests: `cluster::load::parse_manifests` and `parse_manifests_with_lines`, then
    /// the cluster view and the dependsOn graphs built from them.
    State,
    /// Kyverno-style overlays: a YAML stream whose first document is the overlay and second
    /// the target object; `Overlay::compile`, `apply`, `json_patch`, journal undo.
    Overlay,
    /// CEL: the input is one expression, compiled as a policy `expression`, as a
    /// `messageExpression` and as a Kustomization `dependsOn[].readyExpr`, and evaluated on
    /// small objects.
    Cel,
    /// `fluxadmit check`'s reader and engine: `parse_manifests_with_lines`, then
    /// `check::check` (mutate, then validate every document) and the install waves.
    Check,
}

pub const ALL: [Target; 6] = [
    Target::Review,
    Target::Policy,
    Target::State,
    Target::Overlay,
    Target::Cel,
    Target::Check,
];

impl Target {
    pub fn name(self) -> &'static str {
        match self {
            Target::Review => "review",
            Target::Policy => "policy",
            Target::State => "state",
            Target::Overlay => "overlay",
            Target::Cel => "cel",
            Target::Check => "check",
        }
    }

    pub fn from_name(name: &str) -> Option<Target> {
        ALL.into_iter().find(|t| t.name() == name)
    }

    /// Runs the target on one input.
    pub fn run(self, data: &[u8]) -> Result<String, String> {
        match self {
            Target::Review => review(data),
            Target::Policy => policy(data),
            Target::State => state(data),
            Target::Overlay => overlay(data),
            Target::Cel => cel(data),
            Target::Check => check_target(data),
        }
    }
}

/// The fuzz crate's directory (corpus, regressions, crashes live under it).
pub fn fuzz_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

// ---------------------------------------------------------------------------------------------
// Fixtures shared by the targets, built once.

const STATE_FILES: &[&str] = &[
    include_str!("../../examples/state/kustomizations.yaml"),
    include_str!("../../examples/state/namespaces.yaml"),
    include_str!("../../examples/state/secrets.yaml"),
    include_str!("../../examples/state/releases.yaml"),
];

const EXAMPLE_POLICIES: &[(&str, &str)] = &[
    (
        "pod-security-baseline.yaml",
        include_str!("../../policies/examples/pod-security-baseline.yaml"),
    ),
    (
        "pod-security-restricted.yaml",
        include_str!("../../policies/examples/pod-security-restricted.yaml"),
    ),
    (
        "image-pull-secrets.yaml",
        include_str!("../../policies/examples/image-pull-secrets.yaml"),
    ),
    (
        "tiered-deployment.yaml",
        include_str!("../../policies/examples/tiered-deployment.yaml"),
    ),
    (
        "wiz-kubernetes-integration.yaml",
        include_str!("../../policies/examples/wiz-kubernetes-integration.yaml"),
    ),
    (
        "required-labels.yaml",
        include_str!("../../policies/examples/required-labels.yaml"),
    ),
];

const EXAMPLE_REVIEWS: &[&str] = &[
    include_str!("../../examples/reviews/deployment.json"),
    include_str!("../../examples/reviews/helmrelease-cycle.json"),
];

/// The cluster view of `examples/state`.
pub fn state_view() -> &'static ClusterView {
    static VIEW: OnceLock<ClusterView> = OnceLock::new();
    VIEW.get_or_init(|| {
        let mut view = ClusterView::default();
        for text in STATE_FILES {
            if let Ok(objs) = parse_manifests(Path::new("state.yaml"), text) {
                check::add_documents(&mut view, objs.iter());
            }
        }
        view
    })
}

/// The built-in policies plus every example policy (the built-in set alone when they do not
/// compile together).
pub fn all_policies() -> &'static PolicySet {
    static SET: OnceLock<PolicySet> = OnceLock::new();
    SET.get_or_init(|| {
        let mut docs = builtin::documents().unwrap_or_default();
        for (file, text) in EXAMPLE_POLICIES {
            if let Ok(d) = fluxadmit_core::policy::load::parse_documents(file, text) {
                docs.extend(d);
            }
        }
        compile_documents(docs)
            .or_else(|_| builtin::load())
            .unwrap_or_default()
    })
}

fn builtin_snapshot() -> &'static Snapshot {
    static SNAP: OnceLock<Snapshot> = OnceLock::new();
    SNAP.get_or_init(|| Snapshot {
        policies: builtin::load().unwrap_or_default(),
        view: state_view().clone(),
    })
}

fn full_snapshot() -> &'static Snapshot {
    static SNAP: OnceLock<Snapshot> = OnceLock::new();
    SNAP.get_or_init(|| Snapshot {
        policies: all_policies().clone(),
        view: state_view().clone(),
    })
}

/// A pod-bearing object the overlay target applies to when the input has no target document.
fn default_target() -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "apps", "labels": {"app": "web"}},
        "spec": {"replicas": 2, "template": {"metadata": {"labels": {"app": "web"}}, "spec": {
            "initContainers": [{"name": "init", "image": "busybox:1.36"}],
            "containers": [
                {"name": "web", "image": "nginx:1.27", "ports": [{"containerPort": 80}],
                 "resources": {"limits": {"cpu": "500m", "memory": "128Mi"}},
                 "securityContext": {"runAsNonRoot": false}},
                {"name": "sidecar", "image": "envoy:v1", "env": [{"name": "A", "value": "1"}]}
            ]}}}
    })
}

// ---------------------------------------------------------------------------------------------
// Signatures.

/// Shortens an error text to its shape: digits and quoted parts (`"…"`, `` `…` ``) vary with
/// the input and would make every input look new.
fn shape(text: &str) -> String {
    let mut out = String::new();
    let mut quoted: Option<char> = None;
    for c in text.chars() {
        match quoted {
            None if matches!(c, '"' | '`') => {
                quoted = Some(c);
                continue;
            }
            Some(q) if c == q => {
                quoted = None;
                continue;
            }
            _ => {}
        }
        if quoted.is_some() {
            continue;
        }
        out.push(if c.is_ascii_digit() { '0' } else { c });
        if out.len() >= 48 {
            break;
        }
    }
    out
}

fn review_error_sig(e: &ReviewError) -> String {
    match e {
        ReviewError::NotJson(m) => format!("notjson:{}", shape(m)),
        ReviewError::NotReview(m) => format!("notreview:{}", shape(m)),
        ReviewError::WrongVersion(_) => "wrongversion".into(),
        ReviewError::NoRequest => "norequest".into(),
        ReviewError::NoUid => "nouid".into(),
    }
}

fn policy_error_sig(e: &PolicyError) -> String {
    format!("{}|{}", shape(&e.field), shape(&e.reason))
}

/// Reviews a body with a snapshot in one mode; checks the answer is JSON echoing the uid and
/// that a patch applies to the object it was computed for. Returns the rules that fired.
fn answer(snap: &Snapshot, mode: Mode, body: &[u8], offline: bool) -> Result<String, String> {
    let answered = if offline {
        snap.review_offline(mode, body)
    } else {
        snap.review(mode, body)
    };
    let a = match answered {
        Ok(a) => a,
        Err(e) => return Ok(review_error_sig(&e)),
    };
    let parsed: Value = serde_json::from_slice(&a.body)
        .map_err(|e| format!("{mode:?}: the response body is not JSON: {e}"))?;
    let uid = parsed.pointer("/response/uid").and_then(Value::as_str);
    if uid != Some(a.request.uid.as_str()) {
        return Err(format!(
            "{mode:?}: the response uid {uid:?} is not the request's {:?}",
            a.request.uid
        ));
    }
    if let Some(patch) = &a.outcome.verdict.patch {
        if mode == Mode::Validate {
            return Err("the validating answer carries a patch".into());
        }
        // The object as sent: the engine may have worked on the request's copy.
        let mut patched = admission::parse_review(body)
            .map(|r| r.object)
            .unwrap_or(Value::Null);
        json_patch::patch(&mut patched, patch).map_err(|e| {
            format!(
                "the mutation patch does not apply to the object: {e}; patch {}",
                serde_json::to_string(patch).unwrap_or_default()
            )
        })?;
    }
    let mut rules: Vec<String> = a
        .outcome
        .findings
        .iter()
        .map(|r| format!("{}/{}:{:?}", r.policy, r.rule, r.finding.level))
        .collect();
    rules.sort();
    rules.dedup();
    Ok(format!(
        "{mode:?}:{}:{}:{}",
        a.outcome.verdict.allowed,
        a.outcome.verdict.patch.is_some(),
        rules.join(",")
    ))
}

// ---------------------------------------------------------------------------------------------
// 1. AdmissionReview.

fn review(data: &[u8]) -> Result<String, String> {
    let req = match admission::parse_review(data) {
        Ok(req) => req,
        Err(e) => return Ok(review_error_sig(&e)),
    };
    if req.uid.is_empty() {
        return Err("parse_review accepted an empty uid".into());
    }
    let snap = full_snapshot();
    let v = answer(snap, Mode::Validate, data, false)?;
    let m = answer(snap, Mode::Mutate, data, false)?;
    let o = answer(snap, Mode::Validate, data, true)?;
    Ok(format!("{:?}|{v}|{m}|{o}", req.operation))
}

// ---------------------------------------------------------------------------------------------
// 2. DeploymentPolicy YAML.

fn policy(data: &[u8]) -> Result<String, String> {
    let text = String::from_utf8_lossy(data);
    let set = match compile_yaml("fuzz.yaml", &text) {
        Ok(set) => set,
        Err(e) => return Ok(format!("err:{}", policy_error_sig(&e))),
    };
    let mut sig = format!("ok:{}:{}", set.len(), set.rule_count());
    if set.is_empty() {
        return Ok(sig);
    }
    let snap = Snapshot {
        policies: set,
        view: state_view().clone(),
    };
    for body in EXAMPLE_REVIEWS {
        for mode in [Mode::Validate, Mode::Mutate] {
            sig.push('|');
            sig.push_str(&answer(&snap, mode, body.as_bytes(), false)?);
        }
    }
    Ok(sig)
}

// ---------------------------------------------------------------------------------------------
// 3. State manifests.

fn state(data: &[u8]) -> Result<String, String> {
    let text = String::from_utf8_lossy(data);
    let path = Path::new("state.yaml");
    let plain = parse_manifests(path, &text);
    let lined = parse_manifests_with_lines(path, &text);
    let objs = match (plain, lined) {
        (Ok(plain), Ok(lined)) => {
            let lined: Vec<Value> = lined.into_iter().map(|(_, v)| v).collect();
            if plain != lined {
                return Err(
                    "parse_manifests and parse_manifests_with_lines disagree on the objects".into(),
                );
            }
            plain
        }
        (Err(a), Err(b)) => {
            let (a, b) = (a.to_string(), b.to_string());
            if a != b {
                return Err(format!("the two readers fail differently: {a} / {b}"));
            }
            return Ok(format!("err:{}", shape(&a)));
        }
        (Ok(_), Err(e)) | (Err(e), Ok(_)) => {
            return Err(format!("only one of the two readers fails: {e}"));
        }
    };
    let mut view = ClusterView::default();
    let added = objs.iter().filter(|o| view.add_manifest(o)).count();
    check::add_documents(&mut view, objs.iter());
    let docs = documents(objs.into_iter().map(|o| (None, o)).collect());
    let mut sig = format!("ok:{}:{added}:{}", docs.len(), view.len());
    for kind in [FluxKind::HelmRelease, FluxKind::Kustomization] {
        let g = check::graph(&docs, kind);
        let waves = check::waves_text(&g);
        sig.push_str(if waves.starts_with("wave") {
            ":w"
        } else {
            ":c"
        });
    }
    Ok(sig)
}

fn documents(parsed: Vec<(Option<usize>, Value)>) -> Vec<Document> {
    parsed
        .into_iter()
        .map(|(line, object)| Document {
            file: PathBuf::from("fuzz.yaml"),
            line,
            applied_by: None,
            object,
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// 4. Overlays.

/// A second application of an overlay changes the object again (found in session 8: a later
/// list element appended an element that an earlier conditional element matched next time;
/// fixed, FUZZING.md).
pub const NOT_IDEMPOTENT: &str = "overlay: applying is not idempotent";
/// `apply` returns true when its writes cancel out (found in session 8: two overlay list
/// elements for the same name setting a field to different values; fixed, FUZZING.md).
pub const NOOP_TRUE: &str = "overlay: apply returns true for no net change";
/// Invariant violations that are known and open: reported, but not counted as findings
/// unless `--strict`; the replay test accepts them.
/// None is open now; an entry is a message prefix such as [`NOT_IDEMPOTENT`].
pub const KNOWN_OPEN: &[&str] = &[];

fn overlay(data: &[u8]) -> Result<String, String> {
    let text = String::from_utf8_lossy(data);
    let docs = match parse_manifests(Path::new("overlay.yaml"), &text) {
        Ok(d) => d,
        Err(e) => return Ok(format!("yaml:{}", shape(&e.to_string()))),
    };
    let mut docs = docs.into_iter();
    let Some(spec) = docs.next() else {
        return Ok("empty".into());
    };
    let target = docs.next().unwrap_or_else(default_target);
    let ov = match Overlay::compile(&spec) {
        Ok(o) => o,
        Err(e) => return Ok(format!("err:{}", shape(&e.message))),
    };

    let mut once = target.clone();
    let changed = ov.apply(&mut once);
    if !changed && once != target {
        return Err("apply returned false but changed the target".into());
    }
    let again = {
        let mut t = target.clone();
        ov.apply(&mut t);
        t
    };
    if again != once {
        return Err("applying is not deterministic".into());
    }
    match ov.json_patch(&target) {
        Some(patch) => {
            let mut patched = target.clone();
            json_patch::patch(&mut patched, &patch).map_err(|e| {
                format!(
                    "json_patch does not apply: {e}; patch {}",
                    serde_json::to_string(&patch).unwrap_or_default()
                )
            })?;
            if patched != once {
                return Err(format!(
                    "json_patch gives another object than apply: {} vs {}",
                    serde_json::to_string(&patched).unwrap_or_default(),
                    serde_json::to_string(&once).unwrap_or_default()
                ));
            }
        }
        None if changed => return Err("apply changed the target but json_patch is None".into()),
        None => {}
    }
    let mut logged = target.clone();
    let mut journal = Journal::new();
    ov.apply_logged(&mut logged, &mut journal);
    if logged != once {
        return Err("apply_logged gives another object than apply".into());
    }
    journal.undo(&mut logged);
    if logged != target {
        return Err("undoing the journal does not restore the target".into());
    }
    // The two findings of session 8 (FUZZING.md, fixed), checked last: an input that hits
    // them has passed the checks above.
    if changed && once == target {
        return Err(format!(
            "{NOOP_TRUE}: apply returned true but the target is unchanged"
        ));
    }
    let mut twice = once.clone();
    let changed_again = ov.apply(&mut twice);
    if twice != once {
        return Err(format!(
            "{NOT_IDEMPOTENT}: once {} twice {}",
            serde_json::to_string(&once).unwrap_or_default(),
            serde_json::to_string(&twice).unwrap_or_default()
        ));
    }
    if changed_again {
        return Err(format!(
            "{NOOP_TRUE}: a second application returned true but changed nothing"
        ));
    }
    Ok(format!("ok:{changed}"))
}

// ---------------------------------------------------------------------------------------------
// 5. CEL.

/// The longest expression tried: the compiler refuses longer ones (16 KiB) anyway.
const MAX_CEL: usize = 20 * 1024;

fn cel(data: &[u8]) -> Result<String, String> {
    let src = String::from_utf8_lossy(&data[..data.len().min(MAX_CEL)]).into_owned();
    let doc = json!({
        "apiVersion": "fluxadmit.io/v1alpha1", "kind": "DeploymentPolicy",
        "metadata": {"name": "fuzz"},
        "spec": {"action": "Enforce", "match": {}, "rules": [
            {"name": "expr", "expression": {"expression": src, "message": "expr"}},
        ]}
    });
    let msg = json!({
        "apiVersion": "fluxadmit.io/v1alpha1", "kind": "DeploymentPolicy",
        "metadata": {"name": "fuzz-message"},
        "spec": {"action": "Enforce", "match": {}, "rules": [
            {"name": "msg", "expression": {"expression": "false", "message": "m",
                                            "messageExpression": src}},
        ]}
    });
    let mut sig = String::new();
    for (name, doc) in [("expr", doc), ("msg", msg)] {
        match compile_document("fuzz.yaml", doc) {
            Err(e) => {
                sig.push_str(&format!("{name}:err:{}|", shape(&e.reason)));
            }
            Ok(policy) => {
                let snap = Snapshot {
                    policies: PolicySet {
                        policies: std::sync::Arc::new(vec![policy]),
                    },
                    view: ClusterView::default(),
                };
                for body in cel_reviews() {
                    sig.push_str(&answer(&snap, Mode::Validate, body, false)?);
                    sig.push('|');
                }
            }
        }
    }
    // As a readyExpr, which the built-in flux-dependencies policy compiles.
    let ks = json!({
        "apiVersion": "kustomize.toolkit.fluxcd.io/v1", "kind": "Kustomization",
        "metadata": {"name": "apps", "namespace": "flux-system"},
        "spec": {"interval": "10m", "path": "./apps", "prune": true,
                 "sourceRef": {"kind": "GitRepository", "name": "flux-system"},
                 "dependsOn": [{"name": "infra", "readyExpr": src}]}
    });
    if let Some(body) = check::admission_review("fuzz-ks", "CREATE", Some(&ks), None, false, "u") {
        sig.push_str(&answer(builtin_snapshot(), Mode::Validate, &body, false)?);
    }
    Ok(sig)
}

/// Small reviews the CEL target evaluates on: CREATE of a Deployment, UPDATE of a
/// HelmRelease with values, DELETE of a ConfigMap.
fn cel_reviews() -> &'static [Vec<u8>] {
    static BODIES: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    BODIES.get_or_init(|| {
        let hr = json!({
            "apiVersion": "helm.toolkit.fluxcd.io/v2", "kind": "HelmRelease",
            "metadata": {"name": "web", "namespace": "apps", "labels": {"tier": "1"},
                         "annotations": {"a": "b"}},
            "spec": {"interval": "5m", "chart": {"spec": {"chart": "web", "version": "1.2.3"}},
                     "values": {"replicas": 3, "image": {"tag": "v1"}, "list": [1, 2.5, "x"],
                                "on": true, "nil": null}}
        });
        let mut old_hr = hr.clone();
        if let Some(v) = old_hr.pointer_mut("/spec/values/replicas") {
            *v = json!(1);
        }
        let cm = json!({"apiVersion": "v1", "kind": "ConfigMap",
                        "metadata": {"name": "c", "namespace": "apps"}, "data": {"k": "v"}});
        let target = default_target();
        [
            check::admission_review("fuzz-1", "CREATE", Some(&target), None, false, "u"),
            check::admission_review("fuzz-2", "UPDATE", Some(&hr), Some(&old_hr), true, "u"),
            check::admission_review("fuzz-3", "DELETE", None, Some(&cm), false, "u"),
        ]
        .into_iter()
        .flatten()
        .collect()
    })
}

// ---------------------------------------------------------------------------------------------
// 6. `fluxadmit check`.

/// The most documents one input is checked with (each is reviewed twice).
const MAX_CHECK_DOCS: usize = 64;

fn check_target(data: &[u8]) -> Result<String, String> {
    let text = String::from_utf8_lossy(data);
    let parsed = match parse_manifests_with_lines(Path::new("repo.yaml"), &text) {
        Ok(p) => p,
        Err(e) => return Ok(format!("err:{}", shape(&e.to_string()))),
    };
    let mut docs = documents(parsed);
    docs.truncate(MAX_CHECK_DOCS);
    let report = check::check(all_policies().clone(), state_view().clone(), &docs);
    if report.objects > docs.len() {
        return Err(format!(
            "check reviewed {} objects out of {} documents",
            report.objects,
            docs.len()
        ));
    }
    let mut rules: Vec<String> = report
        .findings
        .iter()
        .map(|f| format!("{}/{}:{:?}", f.policy, f.rule, f.level))
        .collect();
    rules.sort();
    rules.dedup();
    let mut sig = format!("ok:{}:{}", report.objects, rules.join(","));
    for kind in [FluxKind::HelmRelease, FluxKind::Kustomization] {
        let waves = check::waves_text(&check::graph(&docs, kind));
        sig.push_str(if waves.starts_with("wave") {
            ":w"
        } else {
            ":c"
        });
    }
    Ok(sig)
}
