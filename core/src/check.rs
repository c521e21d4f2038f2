//! `fluxadmit check`: the admission engine run offline over a GitOps repository, so a broken
//! dependency graph or a missing Secret is caught in CI before it reaches the cluster.
//! Each object is reviewed as a CREATE against a view made of the state directories plus
//! every object in the repository (Flux applies them together): mutated first, as the
//! mutating webhook would, then validated as mutated.

use crate::cluster::load::{LoadError, manifest_files, parse_manifests_with_lines};
use crate::cluster::{ClusterView, FluxKind, depends_on_of};
use crate::engine::{Mode, Reported};
use crate::graph::{Graph, ObjKey};
use crate::policy::PolicySet;
use crate::rules::{Finding, Level};
use crate::state::Snapshot;
use serde_json::{Value, json};
use std::collections::HashSet;
use std::path::PathBuf;

pub mod provided;

/// One manifest, the file it came from and what applies it.
#[derive(Debug, Clone)]
pub struct Document {
    pub file: PathBuf,
    /// The line its document starts on, when it was read from that file as written (not when
    /// a kustomize build or a chart made it).
    pub line: Option<usize>,
    /// What applies it in the cluster, e.g. `Kustomization flux-system/apps`; None for an
    /// object read from the paths given.
    pub applied_by: Option<String>,
    pub object: Value,
}

/// Every manifest under the paths (files or directories), in path order.
pub fn read_documents(paths: &[PathBuf]) -> Result<Vec<Document>, LoadError> {
    let mut docs = Vec::new();
    for p in paths {
        let files = if p.is_dir() {
            manifest_files(p)?
        } else {
            vec![p.clone()]
        };
        for f in files {
            let text = std::fs::read_to_string(&f).map_err(|source| LoadError::Io {
                path: f.clone(),
                error: source,
            })?;
            for (line, object) in parse_manifests_with_lines(&f, &text)? {
                docs.push(Document {
                    file: f.clone(),
                    line,
                    applied_by: None,
                    object,
                });
            }
        }
    }
    Ok(docs)
}

/// A finding on one object of the repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckFinding {
    pub file: String,
    /// The line the object's document starts on in `file`, when known.
    pub line: Option<usize>,
    /// `Kind namespace/name`.
    pub object: String,
    /// What applies the object (`Kustomization flux-system/apps`), when known.
    pub applied_by: Option<String>,
    /// The cluster (world) the object belongs to, when the repository holds several.
    pub world: Option<String>,
    pub policy: String,
    pub rule: String,
    pub level: Level,
    /// `policy/rule: path: message`, as the webhook writes it.
    pub text: String,
}

impl std::fmt::Display for CheckFinding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let level = match self.level {
            Level::Error => "error",
            Level::Warning => "warning",
        };
        write!(f, "{}: {} {level}: {}", self.file, self.object, self.text)
    }
}

#[derive(Debug, Default)]
pub struct Report {
    pub objects: usize,
    pub findings: Vec<CheckFinding>,
    /// What could not be read or built, said once each (a missing kustomize, a chart that is
    /// not available offline, a source that is not this repository).
    pub notes: Vec<String>,
}

impl Report {
    pub fn errors(&self) -> usize {
        self.findings
            .iter()
            .filter(|f| f.level == Level::Error)
            .count()
    }

    pub fn warnings(&self) -> usize {
        self.findings.len() - self.errors()
    }
}

fn namespace_of(obj: &Value) -> &str {
    crate::json::at(obj, "/metadata/namespace")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .unwrap_or("default")
}

/// The AdmissionReview for one document as a CREATE, or None when it lacks apiVersion, kind
/// or name.
fn review_body(i: usize, obj: &Value) -> Option<(String, Vec<u8>)> {
    let kind = obj.get("kind").and_then(Value::as_str)?;
    let name = crate::json::at(obj, "/metadata/name").and_then(Value::as_str)?;
    let ns = namespace_of(obj);
    // A real write, not a dry run; the answers are asked for offline (`review_offline`): the
    // repository plus --state is the whole world, so what is missing there is missing for good.
    let bytes = admission_review(
        &format!("check-{i}"),
        "CREATE",
        Some(obj),
        None,
        false,
        "fluxadmit-check",
    )?;
    Some((format!("{kind} {ns}/{name}"), bytes))
}

/// An AdmissionReview v1 for a manifest, as the API server would send it: `object` (None on
/// DELETE) and `old` (UPDATE, DELETE). None when the manifest lacks apiVersion, kind or name.
pub fn admission_review(
    uid: &str,
    operation: &str,
    object: Option<&Value>,
    old: Option<&Value>,
    dry_run: bool,
    user: &str,
) -> Option<Vec<u8>> {
    let any = object.or(old)?;
    let api_version = any.get("apiVersion").and_then(Value::as_str)?;
    let kind = any.get("kind").and_then(Value::as_str)?;
    let name = crate::json::at(any, "/metadata/name").and_then(Value::as_str)?;
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    let body = json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": {"group": group, "version": version, "kind": kind},
            "resource": {"group": group, "version": version, "resource": ""},
            "name": name, "namespace": namespace_of(any), "operation": operation,
            "userInfo": {"username": user}, "object": object, "oldObject": old, "dryRun": dry_run
        }
    });
    serde_json::to_vec(&body).ok()
}

/// Reviews every document as the cluster would on CREATE: the mutating webhook first, then
/// the validating webhook on the object as mutated. Objects are stored mutated, so the view
/// the validation sees is made of the mutated documents too.
pub fn check(policies: PolicySet, state: ClusterView, docs: &[Document]) -> Report {
    let mut view = state;
    add_documents(&mut view, docs.iter().map(|d| &d.object));
    let mut snap = Snapshot { policies, view };
    let mut report = Report::default();

    // Mutation, against the view of the documents as written.
    let mut staged: Vec<(usize, String, Value, Vec<Reported>)> = Vec::new();
    for (i, d) in docs.iter().enumerate() {
        let Some((label, bytes)) = review_body(i, &d.object) else {
            continue;
        };
        report.objects += 1;
        let mut object = d.object.clone();
        let mut findings = Vec::new();
        if let Ok(answer) = snap.review_offline(Mode::Mutate, &bytes) {
            findings = answer.outcome.findings;
            if let Some(patch) = answer.outcome.verdict.patch.filter(|p| !p.0.is_empty()) {
                let mut mutated = object.clone();
                match json_patch::patch(&mut mutated, &patch) {
                    Ok(()) => object = mutated,
                    Err(e) => findings.push(Reported {
                        policy: "fluxadmit".into(),
                        rule: "mutate".into(),
                        finding: Finding::warning(
                            "",
                            format!(
                                "the mutation patch does not apply ({e}); validated as written"
                            ),
                        ),
                    }),
                }
            }
        }
        staged.push((i, label, object, findings));
    }

    // Validation of the mutated objects, against the view of the mutated documents (each
    // replaces itself; all of them, in order, so a later document still wins).
    if staged
        .iter()
        .any(|(i, _, object, _)| *object != docs[*i].object)
    {
        add_documents(
            &mut snap.view,
            staged.iter().map(|(_, _, object, _)| object),
        );
    }
    for (i, label, object, mut findings) in staged {
        if let Some((_, bytes)) = review_body(i, &object)
            && let Ok(answer) = snap.review_offline(Mode::Validate, &bytes)
        {
            for r in answer.outcome.findings {
                if !findings.contains(&r) {
                    findings.push(r);
                }
            }
        }
        let d = &docs[i];
        let file = d.file.display().to_string();
        for r in findings {
            report.findings.push(CheckFinding {
                file: file.clone(),
                line: d.line,
                object: label.clone(),
                applied_by: d.applied_by.clone(),
                world: None,
                policy: r.policy.to_string(),
                rule: r.rule.to_string(),
                level: r.finding.level,
                text: r.to_string(),
            });
        }
    }
    report
}

/// Adds the repository's objects to the view, in order (a later one replaces an earlier one of
/// the same kind and name), then the Secrets they provide (ExternalSecrets, SealedSecrets; see
/// [`provided`]). A plain Secret in the repository wins over a provided one of the same name;
/// a provided Secret adds its key names to what the view already holds under that name (from
/// the state, `--assume-secret` or another provider).
pub fn add_documents<'a>(view: &mut ClusterView, objects: impl IntoIterator<Item = &'a Value>) {
    let mut plain: HashSet<(&str, &str)> = HashSet::new();
    let mut provided = Vec::new();
    for obj in objects {
        if let Some(p) = provided::provided_secret(obj) {
            provided.push(p);
        } else if view.add_manifest(obj) && is_plain_secret(obj) {
            let name = crate::json::str_at(obj, "/metadata/name").unwrap_or("");
            plain.insert((namespace_of(obj), name));
        }
    }
    for p in &provided {
        if !plain.contains(&(p.namespace.as_str(), p.name.as_str())) {
            provided::insert(view, p);
        }
    }
}

fn is_plain_secret(obj: &Value) -> bool {
    obj.get("apiVersion").and_then(Value::as_str) == Some("v1")
        && obj.get("kind").and_then(Value::as_str) == Some("Secret")
}

/// Adds Secrets made outside Git (`--assume-secret`) to the view, as if the cluster held them:
/// each adds its key names to a Secret the view already holds under that name. Call it on the
/// state before [`check`], so a plain Secret in the repository still wins.
pub fn assume_secrets(view: &mut ClusterView, secrets: &[provided::ProvidedSecret]) {
    for s in secrets {
        provided::insert(view, s);
    }
}

/// The dependsOn graph of one Flux kind over the documents.
pub fn graph(docs: &[Document], kind: FluxKind) -> Graph {
    let nodes = docs.iter().filter_map(|d| {
        let obj = &d.object;
        let api_version = obj.get("apiVersion").and_then(Value::as_str)?;
        let group = api_version.rsplit_once('/').map(|(g, _)| g).unwrap_or("");
        let k = obj.get("kind").and_then(Value::as_str)?;
        if FluxKind::from_group_kind(group, k) != Some(kind) {
            return None;
        }
        let name = crate::json::at(obj, "/metadata/name").and_then(Value::as_str)?;
        let ns = namespace_of(obj);
        Some((ObjKey::new(ns, name), depends_on_of(ns, obj)))
    });
    Graph::new(nodes)
}

/// Renders the install order as waves: objects in one wave can install in parallel.
pub fn waves_text(g: &Graph) -> String {
    match g.waves() {
        Ok(waves) => waves
            .iter()
            .enumerate()
            .map(|(i, w)| {
                let names: Vec<String> = w.iter().map(ToString::to_string).collect();
                format!("wave {}: {}\n", i + 1, names.join(", "))
            })
            .collect(),
        Err(cycles) => cycles
            .iter()
            .map(|c| {
                let names: Vec<String> = c.iter().map(ToString::to_string).collect();
                format!("cycle: {}\n", names.join(" → "))
            })
            .collect(),
    }
}
