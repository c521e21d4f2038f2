//! `referencedSecrets`: every Secret (and ConfigMap) Flux reads for a HelmRelease or
//! Kustomization must exist in the namespace Flux reads it from, with the key Flux reads.
//! Flux reads these references in the object's own namespace; there is no namespace field.

use super::Rule;
use super::{Ctx, Finding};
use crate::cluster::{ClusterView, FluxKind};
use crate::policy::FieldError;
use crate::policy::model::ReferencedSecretsSpec;
use crate::policy::reach::{HELM_RELEASE, KUSTOMIZATION};
use serde_json::Value;
use std::collections::BTreeSet;

#[derive(Debug)]
pub struct ReferencedSecrets {
    config_maps: bool,
}

/// A reference Flux resolves: which kind, where in the object, which keys it needs.
struct Reference<'a> {
    kind: &'a str,
    name: &'a str,
    namespace: &'a str,
    path: String,
    need: Need<'a>,
    optional: bool,
}

enum Need<'a> {
    /// Any keys (only existence matters).
    Exists,
    /// This exact key.
    Key(&'a str),
    /// The first of these keys that exists (Flux's kubeConfig fallback).
    AnyOf(&'static [&'static str]),
    /// SOPS decryption keys: at least one key Flux's decryptor uses.
    Decryption,
    /// postBuild substitution: every key must be a valid variable name.
    VariableNames,
}

impl ReferencedSecrets {
    pub fn compile(
        spec: &ReferencedSecretsSpec,
        _field: &str,
    ) -> Result<ReferencedSecrets, FieldError> {
        Ok(ReferencedSecrets {
            config_maps: spec.config_maps,
        })
    }

    fn check(&self, view: &ClusterView, r: &Reference<'_>, out: &mut Vec<Finding>) {
        // The key names and whether they are open (not known offline: every key counts as
        // present, only the names that are known can be judged).
        let found: Option<(&BTreeSet<String>, bool)> = match r.kind {
            "Secret" => view
                .secrets
                .get(r.namespace, r.name)
                .map(|s| (&s.keys, s.open_keys)),
            "ConfigMap" => {
                if !self.config_maps || !view.tracks_config_maps {
                    return;
                }
                view.config_maps
                    .get(r.namespace, r.name)
                    .map(|c| (&c.keys, false))
            }
            other => {
                out.push(Finding::error(
                    format!("{}.kind", r.path),
                    format!("unsupported kind {other:?}; use Secret or ConfigMap"),
                ));
                return;
            }
        };
        let Some((keys, open_keys)) = found else {
            if !r.optional {
                out.push(
                    Finding::error(
                        &r.path,
                        [
                            r.kind,
                            " ",
                            r.namespace,
                            "/",
                            r.name,
                            " not found; Flux reads it from namespace ",
                            r.namespace,
                        ]
                        .concat(),
                    )
                    .on_other(),
                );
            }
            return;
        };
        let what = format!("{} {}/{}", r.kind, r.namespace, r.name);
        match &r.need {
            Need::Exists => {}
            // Open keys hold whatever key is asked for.
            Need::Key(_) | Need::AnyOf(_) | Need::Decryption if open_keys => {}
            Need::Key(k) => {
                if !keys.contains(*k) && !r.optional {
                    out.push(
                        Finding::error(
                            &r.path,
                            format!("{what} has no key {k:?} (keys: {})", list(keys)),
                        )
                        .on_other(),
                    );
                }
            }
            Need::AnyOf(options) => {
                if !options.iter().any(|k| keys.contains(*k)) {
                    out.push(Finding::error(
                        &r.path,
                        format!("{what} has none of the keys {} that Flux reads a kubeconfig from (keys: {})", options.join(", "), list(keys)),
                    ).on_other());
                }
            }
            Need::Decryption => {
                if !keys.iter().any(|k| is_decryption_key(k)) {
                    out.push(Finding::warning(
                        &r.path,
                        format!(
                            "{what} has no key Flux uses for SOPS decryption (*.asc, *.agekey, sops.vault-token, sops.aws-kms, sops.azure-kv, sops.gcp-kms); keys: {}",
                            list(keys)
                        ),
                    ).on_other());
                }
            }
            // With open keys the names that are known are still judged: they are keys the
            // Secret will hold.
            Need::VariableNames => {
                let bad: Vec<&str> = keys
                    .iter()
                    .map(String::as_str)
                    .filter(|k| !is_variable_name(k))
                    .collect();
                if !bad.is_empty() {
                    out.push(Finding::error(
                        &r.path,
                        format!(
                            "{what} has keys that are not valid substitution variable names ({}); every key becomes a variable, so the build fails",
                            bad.join(", ")
                        ),
                    ).on_other());
                }
            }
        }
    }
}

impl Rule for ReferencedSecrets {
    fn acts_on(&self) -> Option<Vec<(&'static str, &'static str)>> {
        Some(vec![HELM_RELEASE, KUSTOMIZATION])
    }

    fn validate(&self, ctx: &Ctx<'_>, out: &mut Vec<Finding>) {
        let Some(kind) = ctx.flux_kind else { return };
        let refs = references(kind, ctx.object, ctx.namespace());
        for r in refs {
            self.check(ctx.view, &r, out);
        }
    }
}

fn list(keys: &BTreeSet<String>) -> String {
    if keys.is_empty() {
        return "none".into();
    }
    keys.iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Keys kustomize-controller's decryptor uses (matched by extension, as Flux does).
fn is_decryption_key(k: &str) -> bool {
    k.ends_with(".asc")
        || k.ends_with(".agekey")
        || matches!(
            k,
            "sops.vault-token" | "sops.aws-kms" | "sops.azure-kv" | "sops.gcp-kms"
        )
}

/// `^[_[:alpha:]][_[:alpha:][:digit:]]*$`
fn is_variable_name(k: &str) -> bool {
    let mut chars = k.chars();
    chars
        .next()
        .is_some_and(|c| c == '_' || c.is_ascii_alphabetic())
        && chars.all(|c| c == '_' || c.is_ascii_alphanumeric())
}

fn s<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str).filter(|s| !s.is_empty())
}

fn items<'a>(v: &'a Value, pointer: &str) -> &'a [Value] {
    crate::json::at(v, pointer)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

const KUBECONFIG_KEYS: &[&str] = &["value", "value.yaml"];

/// Every Secret/ConfigMap reference Flux resolves for this object.
fn references<'a>(kind: FluxKind, obj: &'a Value, ns: &'a str) -> Vec<Reference<'a>> {
    let mut out = Vec::new();
    if let Some(sr) = crate::json::at(obj, "/spec/kubeConfig/secretRef")
        && let Some(name) = s(sr, "name")
    {
        let need = match s(sr, "key") {
            Some(k) => Need::Key(k),
            None => Need::AnyOf(KUBECONFIG_KEYS),
        };
        out.push(Reference {
            kind: "Secret",
            name,
            namespace: ns,
            path: "spec.kubeConfig.secretRef".into(),
            need,
            optional: false,
        });
    }
    match kind {
        FluxKind::HelmRelease => {
            for (i, v) in items(obj, "/spec/valuesFrom").iter().enumerate() {
                let Some(name) = s(v, "name") else { continue };
                let kind = s(v, "kind").unwrap_or("");
                let optional = v.get("optional").and_then(Value::as_bool).unwrap_or(false);
                let key = s(v, "valuesKey").unwrap_or("values.yaml");
                out.push(Reference {
                    kind,
                    name,
                    namespace: ns,
                    path: super::indexed("spec.valuesFrom", i),
                    need: Need::Key(key),
                    optional,
                });
            }
            if let Some(name) = crate::json::at(obj, "/spec/chart/spec/verify/secretRef/name")
                .and_then(Value::as_str)
            {
                // The verification key lives with the HelmChart, in the source's namespace.
                let chart_ns = crate::json::at(obj, "/spec/chart/spec/sourceRef/namespace")
                    .and_then(Value::as_str)
                    .filter(|s| !s.is_empty())
                    .unwrap_or(ns);
                out.push(Reference {
                    kind: "Secret",
                    name,
                    namespace: chart_ns,
                    path: "spec.chart.spec.verify.secretRef".into(),
                    need: Need::Exists,
                    optional: false,
                });
            }
        }
        FluxKind::Kustomization => {
            if let Some(name) =
                crate::json::at(obj, "/spec/decryption/secretRef/name").and_then(Value::as_str)
            {
                out.push(Reference {
                    kind: "Secret",
                    name,
                    namespace: ns,
                    path: "spec.decryption.secretRef".into(),
                    need: Need::Decryption,
                    optional: false,
                });
            }
            for (i, v) in items(obj, "/spec/postBuild/substituteFrom")
                .iter()
                .enumerate()
            {
                let Some(name) = s(v, "name") else { continue };
                let kind = s(v, "kind").unwrap_or("");
                let optional = v.get("optional").and_then(Value::as_bool).unwrap_or(false);
                out.push(Reference {
                    kind,
                    name,
                    namespace: ns,
                    path: super::indexed("spec.postBuild.substituteFrom", i),
                    need: Need::VariableNames,
                    optional,
                });
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variable_names_follow_flux() {
        assert!(is_variable_name("cluster_name"));
        assert!(is_variable_name("_x1"));
        assert!(!is_variable_name("tls.crt"));
        assert!(!is_variable_name("1abc"));
        assert!(!is_variable_name(""));
    }

    #[test]
    fn decryption_keys_match_by_extension() {
        assert!(is_decryption_key("identity.agekey"));
        assert!(is_decryption_key("sops.gcp-kms"));
        assert!(!is_decryption_key("sops.gcp-kms.json"));
    }
}
