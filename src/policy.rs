//! Policies: the model, loading from files, and the compiled set the engine runs.

pub mod load;
pub mod matching;
pub mod model;

use crate::rules::CompiledRule;
use matching::Matcher;
use model::Action;

/// A policy compiled at load: matchers built, rules compiled. Immutable afterwards.
#[derive(Debug)]
pub struct CompiledPolicy {
    pub name: String,
    /// Where it came from (file path, or `DeploymentPolicy/<name>` in a cluster).
    pub source: String,
    pub action: Action,
    /// See `DeploymentPolicySpec::allow_existing_violations`.
    pub allow_existing_violations: bool,
    pub matcher: Matcher,
    pub exclude: Option<Matcher>,
    pub rules: Vec<CompiledRule>,
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

    pub fn rule_count(&self) -> usize {
        self.policies.iter().map(|p| p.rules.len()).sum()
    }
}

/// A policy that cannot be loaded: names the file, the policy, the field and the reason.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("{file}: {}{field}: {reason}", policy.as_ref().map(|p| format!("policy {p:?}: ")).unwrap_or_default())]
pub struct PolicyError {
    pub file: String,
    pub policy: Option<String>,
    pub field: String,
    pub reason: String,
}
