//! Loading `DeploymentPolicy` documents from files, strictly: an unknown field, a bad value or a
//! duplicate name refuses the whole set, naming the file, the field and the reason.

use super::model::{API_VERSION, DeploymentPolicySpec, KIND};
use super::{CompiledPolicy, PolicyError, PolicySet};
use crate::cluster::load::{LoadError, manifest_files, parse_manifests};
use crate::policy::FieldError;
use crate::rules::CompiledRule;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Loads and compiles every policy under the given files or directories; the path `builtin`
/// stands for the built-in set (see [`super::builtin`]).
pub fn load_paths(paths: &[PathBuf]) -> Result<PolicySet, PolicyError> {
    compile_documents(read_documents(paths)?)
}

/// Reads every policy document under the paths, as (source, document): a file's path, or
/// `builtin:<file>` for the built-in set, which the path `builtin` names (once, however often
/// it is given).
pub fn read_documents(paths: &[PathBuf]) -> Result<Vec<(String, Value)>, PolicyError> {
    let mut files = Vec::new();
    for p in paths {
        if super::builtin::is_keyword(p) {
            continue;
        }
        if p.is_dir() {
            // `examples/` holds opt-in policies: load them by naming the directory.
            let found = manifest_files(p)?;
            files.extend(found.into_iter().filter(|f| !is_under_examples(p, f)));
        } else if p.exists() {
            files.push(p.clone());
        } else {
            return Err(missing(p));
        }
    }
    let mut docs = Vec::new();
    if paths.iter().any(|p| super::builtin::is_keyword(p)) {
        docs = super::builtin::documents()?;
    }
    for f in &files {
        // A file over the size limit is refused before it is read.
        if let Ok(meta) = std::fs::metadata(f) {
            let len = usize::try_from(meta.len()).unwrap_or(usize::MAX);
            super::limits::check_size(len).map_err(|reason| io_err(f, reason))?;
        }
        let text = std::fs::read_to_string(f).map_err(|e| io_err(f, e.to_string()))?;
        docs.extend(parse_documents(&f.display().to_string(), &text)?);
    }
    Ok(docs)
}

/// The documents of one policy text, as (source, document); a text that does not parse is an
/// error naming `source` once. A text over the size or nesting limits of
/// [`super::limits`] is refused before it is parsed.
pub fn parse_documents(source: &str, text: &str) -> Result<Vec<(String, Value)>, PolicyError> {
    super::limits::check_policy_text(text).map_err(|reason| PolicyError {
        file: source.to_owned(),
        policy: None,
        field: String::new(),
        reason,
    })?;
    let parsed = parse_manifests(Path::new(source), text)?;
    Ok(parsed.into_iter().map(|d| (source.to_owned(), d)).collect())
}

impl From<LoadError> for PolicyError {
    fn from(e: LoadError) -> PolicyError {
        let (path, reason) = match e {
            LoadError::Io { path, error } => (path, format!("cannot read: {error}")),
            LoadError::Parse { path, doc, message } => (
                path,
                format!("document {doc}: not valid YAML/JSON: {message}"),
            ),
        };
        PolicyError {
            file: path.display().to_string(),
            policy: None,
            field: String::new(),
            reason,
        }
    }
}

/// A policy set being built, by name: the one place a duplicate name is found.
#[derive(Default)]
struct Builder {
    by_name: BTreeMap<String, CompiledPolicy>,
}

impl Builder {
    /// Adds a policy; a name already taken is an error naming both sources.
    fn add(&mut self, source: &str, policy: CompiledPolicy) -> Result<(), PolicyError> {
        if let Some(prev) = self.by_name.get(&*policy.name) {
            return Err(PolicyError {
                file: source.to_owned(),
                policy: Some(policy.name.to_string()),
                field: "metadata.name".into(),
                reason: format!("duplicate policy name (also defined in {})", prev.source),
            });
        }
        self.by_name.insert(policy.name.to_string(), policy);
        Ok(())
    }

    fn finish(self) -> PolicySet {
        PolicySet {
            policies: std::sync::Arc::new(self.by_name.into_values().collect()),
        }
    }
}

/// Compiles file policies (strict: any error fails) together with policies from
/// `DeploymentPolicy` resources, which are compiled one by one: a resource that does not
/// compile, or reuses a name, is left out and reported, and the rest still apply.
pub fn compile_with_resources(
    files: &[(String, Value)],
    resources: &[(String, Value)],
) -> Result<(PolicySet, Vec<PolicyError>), PolicyError> {
    let mut set = Builder::default();
    for (file, doc) in files {
        set.add(file, compile_document(file, doc.clone())?)?;
    }
    let mut rejected = Vec::new();
    for (source, doc) in resources {
        let added = compile_document(source, doc.clone()).and_then(|p| set.add(source, p));
        if let Err(e) = added {
            rejected.push(e);
        }
    }
    Ok((set.finish(), rejected))
}

fn is_under_examples(root: &Path, file: &Path) -> bool {
    file.strip_prefix(root)
        .map(|rel| rel.components().any(|c| c.as_os_str() == "examples"))
        .unwrap_or(false)
}

/// The first of the paths that does not exist (the `builtin` keyword always does), as the
/// error [`read_documents`] gives for it.
pub fn first_missing(paths: &[PathBuf]) -> Option<PolicyError> {
    paths
        .iter()
        .find(|p| !super::builtin::is_keyword(p) && !p.exists())
        .map(|p| missing(p))
}

/// A path that does not exist: named as given, with the working directory a relative path is
/// read from.
fn missing(p: &Path) -> PolicyError {
    let cwd = match std::env::current_dir() {
        Ok(d) => d.display().to_string(),
        Err(e) => format!("unknown: {e}"),
    };
    let shown = if p.as_os_str().is_empty() {
        "\"\" (an empty path)".to_owned()
    } else {
        p.display().to_string()
    };
    PolicyError {
        file: shown,
        policy: None,
        field: String::new(),
        reason: format!("no such file or directory (working directory {cwd})"),
    }
}

fn io_err(p: &Path, reason: String) -> PolicyError {
    PolicyError {
        file: p.display().to_string(),
        policy: None,
        field: String::new(),
        reason,
    }
}

/// Compiles (source, document) pairs into a set. Used for files and for YAML given in tests.
pub fn compile_documents(docs: Vec<(String, Value)>) -> Result<PolicySet, PolicyError> {
    let mut set = Builder::default();
    for (file, doc) in docs {
        set.add(&file, compile_document(&file, doc)?)?;
    }
    Ok(set.finish())
}

/// Parses one YAML text holding policies (for tests and `review` with inline policies).
pub fn compile_yaml(source: &str, text: &str) -> Result<PolicySet, PolicyError> {
    compile_documents(parse_documents(source, text)?)
}

/// Compiles one `DeploymentPolicy` document; `file` names its source in errors.
pub fn compile_document(file: &str, doc: Value) -> Result<CompiledPolicy, PolicyError> {
    let err = |policy: Option<&str>, field: &str, reason: String| PolicyError {
        file: file.to_owned(),
        policy: policy.map(str::to_owned),
        field: field.to_owned(),
        reason,
    };
    let Value::Object(mut top) = doc else {
        return Err(err(None, "", "expected a DeploymentPolicy object".into()));
    };
    let name = top
        .get("metadata")
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str)
        .map(str::to_owned);
    let pname = name.as_deref();
    for key in top.keys() {
        if !matches!(
            key.as_str(),
            "apiVersion" | "kind" | "metadata" | "spec" | "status"
        ) {
            return Err(err(
                pname,
                key,
                "unknown field; expected apiVersion, kind, metadata, spec".into(),
            ));
        }
    }
    match top.get("apiVersion") {
        Some(Value::String(v)) if v == API_VERSION => {}
        other => {
            return Err(err(
                pname,
                "apiVersion",
                format!("expected {API_VERSION:?}, got {}", shown(other)),
            ));
        }
    }
    match top.get("kind") {
        Some(Value::String(v)) if v == KIND => {}
        other => {
            return Err(err(
                pname,
                "kind",
                format!("expected {KIND:?}, got {}", shown(other)),
            ));
        }
    }
    let Some(name) = name else {
        return Err(err(None, "metadata.name", "required".into()));
    };
    if name.is_empty() {
        return Err(err(None, "metadata.name", "must not be empty".into()));
    }
    let spec = top
        .remove("spec")
        .ok_or_else(|| err(Some(&name), "spec", "required".into()))?;
    let spec: DeploymentPolicySpec = serde_path_to_error::deserialize(spec).map_err(|e| {
        let path = e.path().to_string();
        let field = if path == "." {
            "spec".to_owned()
        } else {
            format!("spec.{path}")
        };
        err(Some(&name), &field, e.into_inner().to_string())
    })?;
    compile_spec(file, &name, &spec).map_err(|e| err(Some(&name), &e.field, e.reason))
}

/// A value as a user wrote it, for an error message: `"fluxadmit.io/v1"`, `3`, or `nothing`.
fn shown(v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => "nothing".into(),
        Some(v) => v.to_string(),
    }
}

/// Compiles a parsed spec. Errors are (field path, reason).
pub fn compile_spec(
    source: &str,
    name: &str,
    spec: &DeploymentPolicySpec,
) -> Result<CompiledPolicy, FieldError> {
    let matcher = super::matching::Matcher::compile(&spec.matches, "spec.match")?;
    let exclude = spec
        .exclude
        .as_ref()
        .map(|m| super::matching::Matcher::compile(m, "spec.exclude"))
        .transpose()?;
    if spec.rules.is_empty() {
        return Err(FieldError::new(
            "spec.rules",
            "a policy needs at least one rule",
        ));
    }
    let mut rules = Vec::with_capacity(spec.rules.len());
    let mut seen = std::collections::HashSet::new();
    for (i, r) in spec.rules.iter().enumerate() {
        let field = format!("spec.rules[{i}]");
        if r.name.is_empty() {
            return Err(FieldError::new(format!("{field}.name"), "required"));
        }
        if !seen.insert(r.name.as_str()) {
            return Err(FieldError::new(
                format!("{field}.name"),
                format!("duplicate rule name {:?}", r.name),
            ));
        }
        rules.push(CompiledRule::compile(r, &field)?);
    }
    super::reach::check_rules(spec, &rules)?;
    let estimated_cost = rules.iter().map(|r| r.estimated_cost()).fold(0.0, f64::max);
    Ok(CompiledPolicy {
        estimated_cost,
        warnings: super::reach::unknown_resources(spec),
        name: name.into(),
        source: source.to_owned(),
        action: spec.action,
        allow_existing_violations: spec.allow_existing_violations,
        matcher,
        exclude,
        rules,
    })
}
