//! Policies: the model, loading from files, and the compiled set the engine runs.

pub mod builtin;
pub mod limits;
pub mod load;
pub mod matching;
pub mod model;
pub mod reach;

use crate::rules::CompiledRule;
use matching::Matcher;
use model::Action;

pub use crate::cel::{
    MAX_ESTIMATED_COST as MAX_EXPRESSION_COST, MAX_RUNTIME_COST as MAX_EXPRESSION_RUNTIME_COST,
    runtime_cost_trips as expression_runtime_cost_trips,
    set_cost_limit as set_expression_cost_limit,
    set_runtime_cost_limit as set_expression_runtime_cost_limit,
};

/// A policy compiled at load: matchers built, rules compiled. Immutable afterwards.
#[derive(Debug)]
pub struct CompiledPolicy {
    pub name: std::sync::Arc<str>,
    /// Where it came from: a file path, `builtin:<file>` for the built-in set, or
    /// `DeploymentPolicy/<name>` in a cluster.
    pub source: String,
    pub action: Action,
    /// See `DeploymentPolicySpec::allow_existing_violations`.
    pub allow_existing_violations: bool,
    pub matcher: Matcher,
    pub exclude: Option<Matcher>,
    pub rules: Vec<CompiledRule>,
    /// The highest estimated cost of its rules' expressions (`cel::cost`), computed at load:
    /// what decides, per review, whether it is evaluated off the async workers.
    pub estimated_cost: f64,
    /// (field, text): what loads but looks wrong, e.g. a kind no known API group serves.
    pub warnings: Vec<(String, String)>,
}

/// Every loaded policy, sorted by name: the order mutations compose in. Cheap to clone: the
/// compiled policies are shared, so a new snapshot (a changed cluster view) reuses them.
#[derive(Debug, Default, Clone)]
pub struct PolicySet {
    pub policies: std::sync::Arc<Vec<CompiledPolicy>>,
}

impl PolicySet {
    pub fn len(&self) -> usize {
        self.policies.len()
    }

    pub fn is_empty(&self) -> bool {
        self.policies.is_empty()
    }

    /// The highest estimated cost of any rule's expressions (`cel::cost`): 0 when only
    /// built-in rules are loaded.
    pub fn max_estimated_cost(&self) -> f64 {
        self.policies
            .iter()
            .map(|p| p.estimated_cost)
            .fold(0.0, f64::max)
    }

    pub fn rule_count(&self) -> usize {
        self.policies.iter().map(|p| p.rules.len()).sum()
    }
}

/// A policy that cannot be loaded: names the file, the policy, the field and the reason.
/// What is wrong with one field of a policy, found while compiling it: the field's path in
/// the policy (`spec.rules[2].podSecurity.level`) and the reason. The loader adds the file and
/// the policy's name ([`PolicyError`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct FieldError {
    pub field: String,
    pub reason: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> FieldError {
        FieldError {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

/// Shown as `file: policy "name": field: reason`, leaving out the parts that are not known
/// (a missing file has neither policy nor field).
#[derive(Debug, PartialEq)]
pub struct PolicyError {
    pub file: String,
    pub policy: Option<String>,
    pub field: String,
    pub reason: String,
}

impl std::fmt::Display for PolicyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: ", self.file)?;
        if let Some(p) = &self.policy {
            write!(f, "policy {p:?}: ")?;
        }
        if !self.field.is_empty() {
            write!(f, "{}: ", self.field)?;
        }
        f.write_str(&self.reason)
    }
}

impl std::error::Error for PolicyError {}

/// The effective policy set with the documents it was compiled from, as `fluxadmit policies`
/// shows it.
#[derive(Debug)]
pub struct Effective {
    pub set: PolicySet,
    /// (source, document) of each policy, in the set's order (by name).
    pub documents: Vec<(String, serde_json::Value)>,
}

impl Effective {
    /// Reads and compiles the policies `--policies` names (`builtin` for the built-in set).
    pub fn load(paths: &[std::path::PathBuf]) -> Result<Effective, PolicyError> {
        let docs = load::read_documents(paths)?;
        let set = load::compile_documents(docs.clone())?;
        let mut by_name: std::collections::HashMap<String, (String, serde_json::Value)> = docs
            .into_iter()
            .filter_map(|(src, d)| {
                let name = crate::json::at(&d, "/metadata/name")?.as_str()?.to_owned();
                Some((name, (src, d)))
            })
            .collect();
        let documents = set
            .policies
            .iter()
            .filter_map(|p| by_name.remove(&*p.name))
            .collect();
        Ok(Effective { set, documents })
    }

    /// One block per policy: name, source, action, what it matches and its rules with their
    /// kinds; then the totals.
    pub fn text(&self) -> String {
        use std::fmt::Write as _;
        let mut out = String::new();
        for (p, (_, doc)) in self.set.policies.iter().zip(&self.documents) {
            if !out.is_empty() {
                out.push('\n');
            }
            let _ = writeln!(out, "{}", p.name);
            let _ = writeln!(out, "  source:   {}", p.source);
            let action = match p.action {
                model::Action::Enforce => "Enforce (errors deny)",
                model::Action::Audit => "Audit (errors are warnings; mutations are not applied)",
            };
            let _ = writeln!(out, "  action:   {action}");
            if !p.allow_existing_violations {
                let _ = writeln!(
                    out,
                    "  allowExistingViolations: false (an UPDATE is denied for an old error too)"
                );
            }
            let spec = doc.get("spec");
            if let Some(m) = spec.and_then(|s| s.get("match")) {
                let _ = writeln!(out, "  match:    {}", describe_match(m));
            }
            if let Some(m) = spec.and_then(|s| s.get("exclude")) {
                let _ = writeln!(out, "  exclude:  {}", describe_match(m));
            }
            let width = p.rules.iter().map(|r| r.name.len()).max().unwrap_or(0);
            for (i, r) in p.rules.iter().enumerate() {
                let label = if i == 0 { "rules:   " } else { "         " };
                let _ = writeln!(out, "  {label} {:width$}  {}", r.name, r.kind_name());
            }
        }
        if !out.is_empty() {
            out.push('\n');
        }
        let _ = writeln!(
            out,
            "{} {}, {} {}",
            self.set.len(),
            if self.set.len() == 1 {
                "policy"
            } else {
                "policies"
            },
            self.set.rule_count(),
            if self.set.rule_count() == 1 {
                "rule"
            } else {
                "rules"
            },
        );
        out
    }

    /// The documents as one YAML stream (`---` between them, each after a `# source:`
    /// comment): what runs, loadable again with `--policies`.
    pub fn yaml(&self) -> Result<String, serde_saphyr::SerializeError> {
        let mut out = String::new();
        for (src, doc) in &self.documents {
            out.push_str("---\n# source: ");
            out.push_str(src);
            out.push('\n');
            out.push_str(&serde_saphyr::to_string(&ReaderOrder(doc))?);
        }
        Ok(out)
    }
}

/// A JSON value serialized with the keys a reader looks for first (`apiVersion`, `kind`,
/// `metadata`, `name`) in front of each map, the rest sorted.
struct ReaderOrder<'a>(&'a serde_json::Value);

impl serde::Serialize for ReaderOrder<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{SerializeMap, SerializeSeq};
        use serde_json::Value as J;
        const FIRST: [&str; 4] = ["apiVersion", "kind", "metadata", "name"];
        match self.0 {
            J::Array(a) => {
                let mut seq = s.serialize_seq(Some(a.len()))?;
                for v in a {
                    seq.serialize_element(&ReaderOrder(v))?;
                }
                seq.end()
            }
            J::Object(m) => {
                let mut keys: Vec<&String> = m.keys().collect();
                keys.sort_by_key(|k| {
                    (FIRST.iter().position(|f| f == k).unwrap_or(FIRST.len()), *k)
                });
                let mut map = s.serialize_map(Some(keys.len()))?;
                for k in keys {
                    map.serialize_entry(k, &ReaderOrder(&m[k.as_str()]))?;
                }
                map.end()
            }
            scalar => scalar.serialize(s),
        }
    }
}

/// A policy's `match` (or `exclude`) in one line: `apps/Deployment, Pod; namespace labels
/// toolkit.fluxcd.io/tenant; on CREATE, UPDATE`.
fn describe_match(v: &serde_json::Value) -> String {
    let Ok(m) = serde_json::from_value::<model::Match>(v.clone()) else {
        return v.to_string();
    };
    let mut parts = Vec::new();
    let mut kinds = Vec::new();
    for r in &m.resources {
        let groups: Vec<&str> = if r.api_groups.is_empty() {
            vec!["*"]
        } else {
            r.api_groups.iter().map(String::as_str).collect()
        };
        let ks: Vec<&str> = if r.kinds.is_empty() {
            vec!["*"]
        } else {
            r.kinds.iter().map(String::as_str).collect()
        };
        for g in &groups {
            for k in &ks {
                kinds.push(if g.is_empty() {
                    (*k).to_owned()
                } else {
                    format!("{g}/{k}")
                });
            }
        }
    }
    parts.push(if kinds.is_empty() {
        "every kind".to_owned()
    } else {
        kinds.join(", ")
    });
    if !m.charts.is_empty() {
        parts.push(format!("charts {}", m.charts.join(", ")));
    }
    if !m.namespaces.is_empty() {
        parts.push(format!("namespaces {}", m.namespaces.join(", ")));
    }
    if let Some(s) = &m.namespace_selector {
        parts.push(format!("namespace labels {}", selector(s)));
    }
    if !m.names.is_empty() {
        parts.push(format!("names {}", m.names.join(", ")));
    }
    if let Some(s) = &m.object_selector {
        parts.push(format!("labels {}", selector(s)));
    }
    if !m.operations.is_empty() {
        let ops: Vec<String> = m
            .operations
            .iter()
            .map(|o| {
                serde_json::to_value(o)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default()
            })
            .collect();
        parts.push(format!("on {}", ops.join(", ")));
    }
    parts.join("; ")
}

/// A label selector in kubectl's syntax: `a=b,c in (d,e),f,!g`.
fn selector(s: &k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector) -> String {
    let mut out: Vec<String> = s
        .match_labels
        .iter()
        .flatten()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    for e in s.match_expressions.iter().flatten() {
        let values = e.values.clone().unwrap_or_default().join(",");
        out.push(match e.operator.as_str() {
            "In" => format!("{} in ({values})", e.key),
            "NotIn" => format!("{} notin ({values})", e.key),
            "Exists" => e.key.clone(),
            "DoesNotExist" => format!("!{}", e.key),
            op => format!("{} {op} ({values})", e.key),
        });
    }
    if out.is_empty() {
        "(any)".to_owned()
    } else {
        out.join(",")
    }
}
