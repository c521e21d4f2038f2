//! Secrets the repository provides without committing them as plain Secrets: an
//! ExternalSecret or a SealedSecret becomes a Secret in the cluster, and `--assume-secret`
//! names one made outside Git (a bootstrap secret such as `flux-system/sops-age`).
//!
//! Only the Secret's namespace, name, type and key names are read. Values (encrypted or not)
//! are never looked at, stored or printed.

use crate::cluster::{ClusterView, SecretInfo};
use serde_json::{Map, Value};
use std::collections::BTreeSet;
use std::sync::Arc;

/// A Secret that will exist once what provides it is applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProvidedSecret {
    pub namespace: String,
    pub name: String,
    pub info: SecretInfo,
    /// What provides it: `ExternalSecret`, `SealedSecret` or `--assume-secret`.
    pub source: &'static str,
}

/// The Secret an ExternalSecret or a SealedSecret manifest makes, or None for any other
/// manifest (plain Secrets included: `ClusterView::add_manifest` reads those) and for one
/// without a name.
pub fn provided_secret(obj: &Value) -> Option<ProvidedSecret> {
    let api_version = obj.get("apiVersion").and_then(Value::as_str)?;
    let group = api_version.rsplit_once('/').map_or("", |(g, _)| g);
    match (group, obj.get("kind").and_then(Value::as_str)?) {
        ("external-secrets.io", "ExternalSecret") => external_secret(obj),
        ("bitnami.com", "SealedSecret") => sealed_secret(obj),
        _ => None,
    }
}

/// A non-empty string at a JSON pointer.
fn str_at<'a>(v: &'a Value, pointer: &str) -> Option<&'a str> {
    crate::json::str_at(v, pointer).filter(|s| !s.is_empty())
}

fn object_at<'a>(v: &'a Value, pointer: &str) -> Option<&'a Map<String, Value>> {
    crate::json::at(v, pointer).and_then(Value::as_object)
}

fn array_at<'a>(v: &'a Value, pointer: &str) -> &'a [Value] {
    crate::json::at(v, pointer)
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

/// The keys of the mapping at a JSON pointer (never its values).
fn keys_at<'a>(v: &'a Value, pointer: &str) -> impl Iterator<Item = String> + 'a {
    object_at(v, pointer)
        .into_iter()
        .flat_map(|m| m.keys().cloned())
}

/// An ExternalSecret: the Secret is `spec.target.name` (else the ExternalSecret's own name)
/// in the ExternalSecret's namespace. Its keys are each `spec.data[].secretKey` and each key of
/// `spec.target.template.data`. With `spec.dataFrom` the external store decides the key names,
/// and a `spec.target.template.templateFrom` item that renders data may add any key: then the
/// keys are open.
fn external_secret(obj: &Value) -> Option<ProvidedSecret> {
    let name = str_at(obj, "/spec/target/name").or_else(|| str_at(obj, "/metadata/name"))?;
    let namespace = str_at(obj, "/metadata/namespace").unwrap_or("default");
    let type_ = str_at(obj, "/spec/target/template/type").unwrap_or("Opaque");
    let mut keys: BTreeSet<String> = array_at(obj, "/spec/data")
        .iter()
        .filter_map(|d| d.get("secretKey")?.as_str())
        .filter(|k| !k.is_empty())
        .map(str::to_owned)
        .collect();
    keys.extend(keys_at(obj, "/spec/target/template/data"));
    let data_from = !array_at(obj, "/spec/dataFrom").is_empty();
    // A templateFrom item aimed at the Secret's labels or annotations adds no key.
    let template_from = array_at(obj, "/spec/target/template/templateFrom")
        .iter()
        .any(|t| {
            t.get("target")
                .and_then(Value::as_str)
                .is_none_or(|target| target.eq_ignore_ascii_case("data"))
        });
    Some(ProvidedSecret {
        namespace: namespace.to_owned(),
        name: name.to_owned(),
        info: SecretInfo {
            type_: type_.to_owned(),
            keys,
            open_keys: data_from || template_from,
        },
        source: "ExternalSecret",
    })
}

/// A SealedSecret: the Secret takes the SealedSecret's name and namespace unless
/// `spec.template.metadata` sets them; its keys are those of `spec.encryptedData` and of
/// `spec.template.data`.
fn sealed_secret(obj: &Value) -> Option<ProvidedSecret> {
    let name =
        str_at(obj, "/spec/template/metadata/name").or_else(|| str_at(obj, "/metadata/name"))?;
    let namespace = str_at(obj, "/spec/template/metadata/namespace")
        .or_else(|| str_at(obj, "/metadata/namespace"))
        .unwrap_or("default");
    let type_ = str_at(obj, "/spec/template/type").unwrap_or("Opaque");
    let keys = keys_at(obj, "/spec/encryptedData")
        .chain(keys_at(obj, "/spec/template/data"))
        .collect();
    Some(ProvidedSecret {
        namespace: namespace.to_owned(),
        name: name.to_owned(),
        info: SecretInfo {
            type_: type_.to_owned(),
            keys,
            open_keys: false,
        },
        source: "SealedSecret",
    })
}

/// The form `--assume-secret` takes, for error messages.
const ASSUME_FORM: &str = "expected NAMESPACE/NAME or NAMESPACE/NAME:KEY,KEY (e.g. flux-system/sops-age or flux-system/cluster-secrets:DOMAIN,EMAIL)";

/// Parses `--assume-secret NAMESPACE/NAME[:KEY,KEY...]`: a Secret made outside Git. Without
/// keys its key names are open (any key counts as present). Its type is not known (empty).
pub fn parse_assume_secret(s: &str) -> Result<ProvidedSecret, String> {
    let fail = |what: String| Err(format!("{what}; {ASSUME_FORM}"));
    if s.chars().any(char::is_whitespace) {
        return fail(format!("{s:?} contains whitespace"));
    }
    let (secret, keys) = match s.split_once(':') {
        Some((secret, keys)) => (secret, Some(keys)),
        None => (s, None),
    };
    let Some((namespace, name)) = secret.split_once('/') else {
        return fail(format!("{secret:?} has no '/' between namespace and name"));
    };
    if namespace.is_empty() {
        return fail("the namespace is empty".into());
    }
    if name.is_empty() {
        return fail("the name is empty".into());
    }
    if name.contains('/') {
        return fail(format!("{secret:?} has more than one '/'"));
    }
    let mut info = SecretInfo {
        type_: String::new(),
        keys: BTreeSet::new(),
        open_keys: keys.is_none(),
    };
    if let Some(keys) = keys {
        for (i, k) in keys.split(',').enumerate() {
            if k.is_empty() {
                return fail(format!("key {} after ':' is empty", i + 1));
            }
            info.keys.insert(k.to_owned());
        }
    }
    Ok(ProvidedSecret {
        namespace: namespace.to_owned(),
        name: name.to_owned(),
        info,
        source: "--assume-secret",
    })
}

/// Adds what `add` knows to `into`: the key names of both, open if either is, and the type
/// of `into` unless it is not known.
pub fn merge_info(into: &mut SecretInfo, add: &SecretInfo) {
    into.keys.extend(add.keys.iter().cloned());
    into.open_keys |= add.open_keys;
    if into.type_.is_empty() {
        into.type_.clone_from(&add.type_);
    }
}

/// Puts a provided Secret in the view, merging it with what the view already holds under
/// that name (from the state, `--assume-secret` or another provider).
pub fn insert(view: &mut ClusterView, p: &ProvidedSecret) {
    let info = match view.secrets.get(&p.namespace, &p.name) {
        Some(old) => {
            let mut merged = old.clone();
            merge_info(&mut merged, &p.info);
            if merged == *old {
                return; // nothing new: leave a shared index shared
            }
            merged
        }
        None => p.info.clone(),
    };
    Arc::make_mut(&mut view.secrets).insert(&p.namespace, &p.name, info);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::{Document, check};
    use serde_json::json;

    fn keys(p: &ProvidedSecret) -> Vec<&str> {
        p.info.keys.iter().map(String::as_str).collect()
    }

    #[test]
    fn external_secret_keys_come_from_data_and_the_template() {
        let es = json!({
            "apiVersion": "external-secrets.io/v1", "kind": "ExternalSecret",
            "metadata": {"name": "grafana-es", "namespace": "monitoring"},
            "spec": {
                "secretStoreRef": {"kind": "ClusterSecretStore", "name": "vault"},
                "target": {"name": "grafana-admin", "template": {
                    "type": "kubernetes.io/basic-auth",
                    "data": {"config.ini": "password = {{ .password }}"},
                    "templateFrom": [{"target": "Annotations", "literal": "a: b"}]
                }},
                "data": [
                    {"secretKey": "username", "remoteRef": {"key": "/grafana/user"}},
                    {"secretKey": "password", "remoteRef": {"key": "/grafana/password"}}
                ]
            }
        });
        let p = provided_secret(&es).expect("an ExternalSecret provides a Secret");
        assert_eq!(
            (p.namespace.as_str(), p.name.as_str(), p.source),
            ("monitoring", "grafana-admin", "ExternalSecret")
        );
        assert_eq!(p.info.type_, "kubernetes.io/basic-auth");
        assert_eq!(keys(&p), ["config.ini", "password", "username"]);
        assert!(!p.info.open_keys, "an annotations template adds no key");

        // Older API versions, no target name, no namespace, no template: the defaults.
        let es = json!({
            "apiVersion": "external-secrets.io/v1beta1", "kind": "ExternalSecret",
            "metadata": {"name": "db"},
            "spec": {"data": [{"secretKey": "url", "remoteRef": {"key": "db"}}]}
        });
        let p = provided_secret(&es).expect("v1beta1 is read too");
        assert_eq!((p.namespace.as_str(), p.name.as_str()), ("default", "db"));
        assert_eq!(p.info.type_, "Opaque");
        assert_eq!(keys(&p), ["url"]);
        assert!(!p.info.open_keys);

        // Another group or kind provides nothing.
        let other = json!({"apiVersion": "example.com/v1", "kind": "ExternalSecret",
                           "metadata": {"name": "x"}});
        assert_eq!(provided_secret(&other), None);
        let store = json!({"apiVersion": "external-secrets.io/v1", "kind": "SecretStore",
                           "metadata": {"name": "x"}});
        assert_eq!(provided_secret(&store), None);
    }

    #[test]
    fn external_secret_with_data_from_or_a_data_template_has_open_keys() {
        let es = json!({
            "apiVersion": "external-secrets.io/v1alpha1", "kind": "ExternalSecret",
            "metadata": {"name": "app", "namespace": "apps"},
            "spec": {
                "data": [{"secretKey": "extra", "remoteRef": {"key": "x"}}],
                "dataFrom": [{"extract": {"key": "apps/app"}}]
            }
        });
        let p = provided_secret(&es).expect("provided");
        assert!(p.info.open_keys);
        assert_eq!(keys(&p), ["extra"], "the known names are kept");

        let es = json!({
            "apiVersion": "external-secrets.io/v1", "kind": "ExternalSecret",
            "metadata": {"name": "app", "namespace": "apps"},
            "spec": {"target": {"template": {"templateFrom": [
                {"configMap": {"name": "tpl", "items": [{"key": "config.yaml"}]}}
            ]}}}
        });
        let p = provided_secret(&es).expect("provided");
        assert!(
            p.info.open_keys,
            "templateFrom without a target renders data"
        );
    }

    #[test]
    fn sealed_secret_keys_and_no_values() {
        let canary = "canary-value-123";
        let ss = json!({
            "apiVersion": "bitnami.com/v1alpha1", "kind": "SealedSecret",
            "metadata": {"name": "sealed", "namespace": "apps"},
            "spec": {
                "encryptedData": {"token": canary, "password": "AgBy3i4OJSWK+PiTySYZZA=="},
                "template": {
                    "metadata": {"name": "app-token"},
                    "type": "kubernetes.io/dockerconfigjson",
                    "data": {"static": canary}
                }
            }
        });
        let p = provided_secret(&ss).expect("a SealedSecret provides a Secret");
        assert_eq!(
            (p.namespace.as_str(), p.name.as_str(), p.source),
            ("apps", "app-token", "SealedSecret")
        );
        assert_eq!(p.info.type_, "kubernetes.io/dockerconfigjson");
        assert_eq!(keys(&p), ["password", "static", "token"]);
        assert!(!p.info.open_keys);

        let mut view = ClusterView::default();
        let docs = [doc(ss)];
        add_provided(&mut view, &docs);
        assert!(view.secrets.get("apps", "app-token").is_some());
        let shown = format!("{:?}", view.secrets);
        assert!(!shown.contains(canary), "{shown}");
        assert!(!shown.contains("AgBy3i4OJSWK"), "{shown}");
    }

    #[test]
    fn sops_secret_keeps_key_names_not_values() {
        let canary = "ENC[AES256_GCM,data:canary-value-123,iv:aXY=,tag:dGFn,type:str]";
        let mut view = ClusterView::default();
        assert!(view.add_manifest(&json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "cluster-secrets", "namespace": "flux-system"},
            "data": {"DOMAIN": canary},
            "stringData": {"EMAIL": "ENC[AES256_GCM,data:bWU=,iv:aXY=,tag:dGFn,type:str]"},
            "sops": {
                "age": [{"recipient": "age1xyz", "enc": "-----BEGIN AGE ENCRYPTED FILE-----"}],
                "lastmodified": "2024-01-01T00:00:00Z",
                "mac": "ENC[AES256_GCM,data:bWFj,type:str]",
                "version": "3.8.1"
            }
        })));
        let info = view
            .secrets
            .get("flux-system", "cluster-secrets")
            .expect("indexed");
        assert_eq!(
            info.keys.iter().map(String::as_str).collect::<Vec<_>>(),
            ["DOMAIN", "EMAIL"]
        );
        assert!(!info.open_keys);
        let shown = format!("{:?}", view.secrets);
        for leak in ["canary-value-123", "ENC[", "age1xyz", "sops"] {
            assert!(!shown.contains(leak), "{leak} in {shown}");
        }
    }

    #[test]
    fn assume_secret_forms() {
        let p = parse_assume_secret("flux-system/sops-age").expect("valid");
        assert_eq!(
            (p.namespace.as_str(), p.name.as_str(), p.source),
            ("flux-system", "sops-age", "--assume-secret")
        );
        assert!(p.info.open_keys, "no keys given: any key");
        assert!(p.info.keys.is_empty());
        assert_eq!(p.info.type_, "", "type not known");

        let p = parse_assume_secret("flux-system/cluster-secrets:DOMAIN,EMAIL").expect("valid");
        assert_eq!(p.name, "cluster-secrets");
        assert_eq!(keys(&p), ["DOMAIN", "EMAIL"]);
        assert!(!p.info.open_keys);

        for (bad, says) in [
            ("sops-age", "no '/'"),
            ("/sops-age", "namespace is empty"),
            ("flux-system/", "name is empty"),
            ("flux-system/:a", "name is empty"),
            ("flux-system/a/b", "more than one '/'"),
            ("flux-system/a:", "key 1 after ':' is empty"),
            ("flux-system/a:x,,y", "key 2 after ':' is empty"),
            ("flux-system/a:x,", "key 2 after ':' is empty"),
            ("flux-system/a b", "whitespace"),
            ("flux-system/a:x, y", "whitespace"),
            ("", "no '/'"),
        ] {
            let e = parse_assume_secret(bad).expect_err(bad);
            assert!(e.contains(says), "{bad:?}: {e}");
            assert!(e.contains("NAMESPACE/NAME:KEY,KEY"), "{bad:?}: {e}");
        }
    }

    fn doc(object: Value) -> Document {
        Document {
            file: "apps/app.yaml".into(),
            line: None,
            applied_by: None,
            object,
        }
    }

    /// Adds the docs' provided Secrets as `check` does.
    fn add_provided(view: &mut ClusterView, docs: &[Document]) {
        crate::check::add_documents(view, docs.iter().map(|d| &d.object));
    }

    fn release() -> Value {
        json!({
            "apiVersion": "helm.toolkit.fluxcd.io/v2", "kind": "HelmRelease",
            "metadata": {"name": "app", "namespace": "apps"},
            "spec": {
                "interval": "1h",
                "chart": {"spec": {"chart": "app", "sourceRef": {"kind": "HelmRepository", "name": "charts"}}},
                "valuesFrom": [{"kind": "Secret", "name": "app-values", "valuesKey": "token"}]
            }
        })
    }

    fn external(key: &str) -> Value {
        json!({
            "apiVersion": "external-secrets.io/v1", "kind": "ExternalSecret",
            "metadata": {"name": "app-values-es", "namespace": "apps"},
            "spec": {
                "secretStoreRef": {"kind": "ClusterSecretStore", "name": "vault"},
                "target": {"name": "app-values"},
                "data": [{"secretKey": key, "remoteRef": {"key": "apps/app"}}]
            }
        })
    }

    /// The texts of the referenced-secrets findings `check` reports with the built-in policies.
    fn secret_findings(docs: &[Document], state: ClusterView) -> Vec<String> {
        let policies = crate::policy::builtin::load().expect("built-in policies compile");
        check(policies, state, docs)
            .findings
            .into_iter()
            .filter(|f| f.rule == "referenced-secrets")
            .map(|f| f.text)
            .collect()
    }

    #[test]
    fn check_counts_provided_secrets_as_existing() {
        // No Secret at all: the release's values Secret is reported missing.
        let found = secret_findings(&[doc(release())], ClusterView::default());
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(
            found[0].contains("spec.valuesFrom[0]")
                && found[0].contains("Secret apps/app-values not found"),
            "{found:?}"
        );

        // An ExternalSecret provides it with the key: nothing to report.
        let found = secret_findings(
            &[doc(release()), doc(external("token"))],
            ClusterView::default(),
        );
        assert!(found.is_empty(), "{found:?}");

        // An ExternalSecret provides it with another key: the key is reported missing.
        let found = secret_findings(
            &[doc(external("password")), doc(release())],
            ClusterView::default(),
        );
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(
            found[0].contains("Secret apps/app-values has no key \"token\"")
                && found[0].contains("keys: password"),
            "{found:?}"
        );

        // Open keys (dataFrom): any key counts as present.
        let mut open = external("password");
        open["spec"]["dataFrom"] = json!([{"extract": {"key": "apps/app"}}]);
        let found = secret_findings(&[doc(release()), doc(open)], ClusterView::default());
        assert!(found.is_empty(), "{found:?}");
    }

    #[test]
    fn a_plain_secret_wins_and_providers_merge() {
        let plain = json!({"apiVersion": "v1", "kind": "Secret",
                           "metadata": {"name": "app-values", "namespace": "apps"},
                           "stringData": {"other": "x"}});
        // The plain Secret wins over the ExternalSecret, whichever comes first.
        for docs in [
            [doc(plain.clone()), doc(external("token")), doc(release())],
            [doc(external("token")), doc(plain.clone()), doc(release())],
        ] {
            let found = secret_findings(&docs, ClusterView::default());
            assert_eq!(found.len(), 1, "{found:?}");
            assert!(found[0].contains("keys: other"), "{found:?}");
        }

        // Two providers of one Secret: their keys add up.
        let mut second = external("token");
        second["metadata"]["name"] = json!("second-es");
        let docs = [doc(external("password")), doc(second)];
        let mut view = ClusterView::default();
        add_provided(&mut view, &docs);
        let info = view.secrets.get("apps", "app-values").expect("provided");
        assert_eq!(
            info.keys.iter().map(String::as_str).collect::<Vec<_>>(),
            ["password", "token"]
        );
    }

    /// The texts of the findings a `requiredSecrets` policy reports for a release of chart
    /// `app` in namespace `apps`.
    fn required_findings(docs: Vec<Document>, state: ClusterView) -> Vec<String> {
        let policy = json!({
            "apiVersion": "fluxadmit.io/v1alpha1", "kind": "DeploymentPolicy",
            "metadata": {"name": "app-secrets"},
            "spec": {
                "action": "Enforce",
                "match": {"resources": [{"apiGroups": ["helm.toolkit.fluxcd.io"], "kinds": ["HelmRelease"]}],
                          "charts": ["app"]},
                "rules": [{"name": "secrets", "requiredSecrets": {"secrets": [
                    {"name": "api-token", "keys": ["clientId", "clientToken"]},
                    {"name": "pull", "type": "kubernetes.io/dockerconfigjson"}
                ]}}]
            }
        });
        let policies = crate::policy::load::compile_documents(vec![("test".into(), policy)])
            .expect("policy compiles");
        let mut docs = docs;
        docs.push(doc(release()));
        check(policies, state, &docs)
            .findings
            .into_iter()
            .filter(|f| f.policy == "app-secrets")
            .map(|f| f.text)
            .collect()
    }

    fn assumed(flags: &[&str]) -> ClusterView {
        let secrets: Vec<ProvidedSecret> = flags
            .iter()
            .map(|f| parse_assume_secret(f).expect("valid"))
            .collect();
        let mut view = ClusterView::default();
        crate::check::assume_secrets(&mut view, &secrets);
        view
    }

    #[test]
    fn required_secrets_take_open_keys_as_every_key() {
        // Nothing provides them: both reported missing.
        let found = required_findings(vec![], ClusterView::default());
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(found[0].contains("Secret apps/api-token required by chart \"app\" not found"));

        // Assumed without keys and without a type: nothing to report.
        let found = required_findings(vec![], assumed(&["apps/api-token", "apps/pull"]));
        assert!(found.is_empty(), "{found:?}");

        // Assumed with some keys: the others are missing.
        let found = required_findings(vec![], assumed(&["apps/api-token:clientId", "apps/pull"]));
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(
            found[0].contains("is missing key \"clientToken\""),
            "{found:?}"
        );

        // An ExternalSecret whose keys come from the store, a SealedSecret of the wrong type.
        let es = json!({
            "apiVersion": "external-secrets.io/v1", "kind": "ExternalSecret",
            "metadata": {"name": "api-token", "namespace": "apps"},
            "spec": {"dataFrom": [{"extract": {"key": "wiz"}}]}
        });
        let ss = json!({
            "apiVersion": "bitnami.com/v1alpha1", "kind": "SealedSecret",
            "metadata": {"name": "pull", "namespace": "apps"},
            "spec": {"encryptedData": {".dockerconfigjson": "AgA="}}
        });
        let found = required_findings(vec![doc(es), doc(ss)], ClusterView::default());
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(
            found[0].contains("Secret apps/pull required by chart \"app\" has type \"Opaque\""),
            "{found:?}"
        );
    }

    #[test]
    fn assumed_secrets_count_as_existing() {
        let mut state = ClusterView::default();
        crate::check::assume_secrets(
            &mut state,
            &[parse_assume_secret("apps/app-values:token").expect("valid")],
        );
        let found = secret_findings(&[doc(release())], state);
        assert!(found.is_empty(), "{found:?}");

        // Assumed with other keys: the key is still missing.
        let mut state = ClusterView::default();
        crate::check::assume_secrets(
            &mut state,
            &[parse_assume_secret("apps/app-values:password").expect("valid")],
        );
        let found = secret_findings(&[doc(release())], state);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].contains("has no key \"token\""), "{found:?}");

        // Assumed without keys: any key.
        let mut state = ClusterView::default();
        crate::check::assume_secrets(
            &mut state,
            &[parse_assume_secret("apps/app-values").expect("valid")],
        );
        assert!(secret_findings(&[doc(release())], state).is_empty());
    }
}
