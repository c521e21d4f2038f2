//! The policy model: `DeploymentPolicy` (`fluxadmit.io/v1alpha1`), as typed serde structs.
//! The same types derive the CRD, so a policy file and a custom resource read the same.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub use crate::pss::Level as PodSecurityLevel;

pub const API_VERSION: &str = "fluxadmit.io/v1alpha1";
pub const KIND: &str = "DeploymentPolicy";

/// A set of rules applied to the objects the policy matches.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, JsonSchema, PartialEq)]
#[kube(
    group = "fluxadmit.io",
    version = "v1alpha1",
    kind = "DeploymentPolicy",
    shortname = "dpol",
    doc = "Deployment policy enforced by the fluxadmit admission webhook"
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DeploymentPolicySpec {
    /// `Enforce` denies on a violation; `Audit` admits with a warning.
    #[serde(default)]
    pub action: Action,
    /// Which admission requests the policy applies to.
    #[serde(rename = "match")]
    pub matches: Match,
    /// Requests that the policy skips even when `match` selects them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exclude: Option<Match>,
    /// On UPDATE, a violation the object already had before the update is admitted with a
    /// warning (default true), as Kyverno's `allowExistingViolations` and Pod Security
    /// Admission's unchanged-pod exemption do. `false` denies it on every update.
    #[serde(default = "default_true")]
    pub allow_existing_violations: bool,
    /// The rules, evaluated in order.
    pub rules: Vec<RuleSpec>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, JsonSchema, PartialEq, Eq)]
pub enum Action {
    #[default]
    Enforce,
    Audit,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, JsonSchema, PartialEq, Eq, Hash)]
#[serde(rename_all = "UPPERCASE")]
pub enum OperationName {
    Create,
    Update,
    Delete,
    Connect,
}

/// A request filter. Every field that is set must match (AND); within a list, any entry (OR).
#[derive(Serialize, Deserialize, Clone, Debug, Default, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Match {
    /// API group and kind filters; empty matches every resource.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resources: Vec<ResourceFilter>,
    /// Namespace names (globs: `*`, `?`); empty matches every namespace.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<String>,
    /// Labels of the object's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<LabelSelector>,
    /// Labels of the object itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object_selector: Option<LabelSelector>,
    /// Object names (globs).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub names: Vec<String>,
    /// Admission operations; empty means CREATE and UPDATE.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub operations: Vec<OperationName>,
    /// HelmRelease chart names (`spec.chart.spec.chart`, globs); set, it matches only HelmReleases.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub charts: Vec<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ResourceFilter {
    /// API groups (`""` is the core group, `*` any); empty means any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub api_groups: Vec<String>,
    /// Kinds (`*` any); empty means any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kinds: Vec<String>,
}

/// One rule: a name and exactly one rule kind.
#[derive(Serialize, Deserialize, Clone, Debug, Default, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RuleSpec {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub required_labels: Option<RequiredLabelsSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub depends_on: Option<DependsOnSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub referenced_secrets: Option<ReferencedSecretsSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub required_secrets: Option<RequiredSecretsSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expression: Option<ExpressionSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_security: Option<PodSecuritySpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mutate: Option<MutateSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_secrets: Option<ImagePullSecretsSpec>,
}

/// Labels and annotations the object must carry.
#[derive(Serialize, Deserialize, Clone, Debug, Default, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RequiredLabelsSpec {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub labels: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub annotations: Vec<String>,
}

/// What to do about a finding that is not always an error.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, JsonSchema, PartialEq, Eq)]
pub enum Severity {
    /// Admit, with a warning.
    #[default]
    Warn,
    /// Deny (under `Enforce`).
    Deny,
    /// Say nothing.
    Ignore,
}

/// Flux `dependsOn` correctness for HelmReleases and Kustomizations.
#[derive(Serialize, Deserialize, Clone, Debug, Default, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DependsOnSpec {
    /// A dependency that is not in the cluster: `Warn` (default; it may arrive in the same apply) or `Deny`.
    #[serde(default)]
    pub missing: Severity,
    /// Allow `dependsOn` entries in another namespace (default true).
    #[serde(default = "default_true")]
    pub allow_cross_namespace: bool,
    /// Label holding the object's tier (an integer); an object may depend only on lower tiers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tier_label: Option<String>,
    /// With `tierLabel`: every object and every dependency must carry the tier label.
    #[serde(default)]
    pub require_tiers: bool,
    /// Longest allowed dependency chain (in edges) from this object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_depth: Option<u32>,
}

fn default_true() -> bool {
    true
}

/// Every Secret (and ConfigMap) that Flux reads for the object must exist with the key Flux reads.
#[derive(Serialize, Deserialize, Clone, Debug, Default, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReferencedSecretsSpec {
    /// Also check ConfigMap references when the cluster view holds ConfigMaps (default true).
    #[serde(default = "default_true")]
    pub config_maps: bool,
}

/// Secrets a matching release needs before it can install.
#[derive(Serialize, Deserialize, Clone, Debug, Default, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RequiredSecretsSpec {
    pub secrets: Vec<RequiredSecret>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RequiredSecret {
    pub name: String,
    /// Default: the release's `spec.targetNamespace`, else its namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub type_: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keys: Vec<String>,
}

/// A CEL expression over `object`, `oldObject` and `request` that must be true.
#[derive(Serialize, Deserialize, Clone, Debug, Default, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExpressionSpec {
    pub expression: String,
    pub message: String,
    /// A CEL expression giving the message (a string); falls back to `message`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_expression: Option<String>,
}

/// Pod Security Standards for Pods and every pod template.
#[derive(Serialize, Deserialize, Clone, Debug, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PodSecuritySpec {
    /// `baseline` or `restricted` (`privileged` checks nothing).
    pub level: PodSecurityLevel,
    /// `latest` (default) or a Kubernetes minor version such as `v1.29`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exemptions: Option<PodSecurityExemptions>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PodSecurityExemptions {
    /// Namespaces (globs) exempt from this rule.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<String>,
    /// Object names (globs) exempt from this rule.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub names: Vec<String>,
    /// Container images (globs) exempt from container checks.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub images: Vec<String>,
}

/// A Kyverno-style overlay (`patchStrategicMerge` anchors).
#[derive(Serialize, Deserialize, Clone, Debug, Default, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MutateSpec {
    /// Where the overlay is rooted: the whole object, or every pod template (for a Pod, the Pod).
    #[serde(default)]
    pub target: OverlayTarget,
    #[schemars(schema_with = "any_object")]
    pub overlay: serde_json::Value,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, JsonSchema, PartialEq, Eq)]
pub enum OverlayTarget {
    #[default]
    Object,
    PodTemplate,
}

/// Image pull secrets for private registries.
#[derive(Serialize, Deserialize, Clone, Debug, Default, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ImagePullSecretsSpec {
    /// Registry patterns and the pull secret their images need.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub registries: Vec<RegistrySecret>,
    /// Check that every pull secret a pod references exists with a docker config type (default true).
    #[serde(default = "default_true")]
    pub validate: bool,
    /// HelmRelease values paths (dotted, e.g. `global.imagePullSecrets`) naming pull secrets.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values_paths: Vec<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RegistrySecret {
    /// Image glob, e.g. `*.azurecr.io/*` or `ghcr.io/acme/*`; a bare host glob matches every image on it.
    pub pattern: String,
    pub secret: String,
}

fn any_object(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true
    })
}

/// Labels as a sorted map.
pub type Labels = BTreeMap<String, String>;
