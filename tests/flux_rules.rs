//! Table-driven tests of the Flux rules (dependsOn, referenced and required secrets, CEL
//! expressions) against a state directory, through the same code path `serve` and `review` use.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use fluxadmit_core::cluster::load_dir;
use fluxadmit_core::engine::Mode;
use fluxadmit_core::policy::load::load_paths;
use fluxadmit_core::state::Snapshot;
use serde_json::{Value, json};
use std::path::PathBuf;
use std::sync::OnceLock;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Default policies plus the tiered and wiz examples, over the fixture state.
fn snapshot() -> &'static Snapshot {
    static SNAP: OnceLock<Snapshot> = OnceLock::new();
    SNAP.get_or_init(|| {
        let policies = load_paths(&[
            root().join("policies"),
            root().join("policies/examples/tiered-deployment.yaml"),
            root().join("policies/examples/wiz-kubernetes-integration.yaml"),
        ])
        .unwrap();
        let view = load_dir(&[root().join("tests/fixtures/flux-state")]).unwrap();
        Snapshot { policies, view }
    })
}

/// A review of a person's `kubectl apply` (not Flux's), so every error the rules find denies a
/// real write; how Flux's requests are judged is tests/judgement.rs's and tests/flux_apply.rs's.
fn review(op: &str, obj: &Value, old: Option<&Value>, dry_run: bool) -> Vec<u8> {
    let (group, version) = obj["apiVersion"]
        .as_str()
        .unwrap()
        .rsplit_once('/')
        .unwrap();
    let kind = obj["kind"].as_str().unwrap();
    serde_json::to_vec(&json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": "0d9e2a6c-test",
            "kind": {"group": group, "version": version, "kind": kind},
            "resource": {"group": group, "version": version, "resource": format!("{}s", kind.to_lowercase())},
            "name": obj["metadata"]["name"], "namespace": obj["metadata"]["namespace"],
            "operation": op, "userInfo": {"username": "alice@example.com"},
            "object": obj, "oldObject": old, "dryRun": dry_run
        }
    }))
    .unwrap()
}

struct Answer {
    allowed: bool,
    message: String,
    warnings: Vec<String>,
    raw: Vec<u8>,
}

/// The object before an UPDATE: the same release without dependencies and values sources, so
/// what the update brings in is the update's doing (an unchanged violation would only warn).
fn before(obj: &Value) -> Value {
    let mut old = obj.clone();
    if let Some(spec) = old["spec"].as_object_mut() {
        spec.remove("dependsOn");
        spec.remove("valuesFrom");
    }
    old
}

fn validate_with(snap: &Snapshot, op: &str, obj: &Value, dry_run: bool) -> Answer {
    let old = before(obj);
    let a = snap
        .review(
            Mode::Validate,
            &review(op, obj, Some(&old).filter(|_| op == "UPDATE"), dry_run),
        )
        .unwrap();
    let v: Value = serde_json::from_slice(&a.body).unwrap();
    let r = &v["response"];
    assert_eq!(r["uid"], "0d9e2a6c-test");
    assert!(r.get("patch").is_none(), "validate never patches");
    Answer {
        allowed: r["allowed"].as_bool().unwrap(),
        message: r["status"]["message"].as_str().unwrap_or("").to_owned(),
        warnings: r["warnings"]
            .as_array()
            .map(|w| w.iter().map(|s| s.as_str().unwrap().to_owned()).collect())
            .unwrap_or_default(),
        raw: a.body,
    }
}

fn validate(op: &str, obj: &Value) -> Answer {
    validate_with(snapshot(), op, obj, false)
}

fn hr(ns: &str, name: &str, tier: Option<&str>, spec: Value) -> Value {
    let mut labels = serde_json::Map::new();
    if let Some(t) = tier {
        labels.insert("fluxadmit.io/tier".into(), json!(t));
    }
    let mut s = json!({"interval": "10m", "chart": {"spec": {"chart": "app", "sourceRef": {"kind": "HelmRepository", "name": "charts", "namespace": "flux-system"}}}});
    s.as_object_mut()
        .unwrap()
        .extend(spec.as_object().unwrap().clone());
    json!({"apiVersion": "helm.toolkit.fluxcd.io/v2", "kind": "HelmRelease",
           "metadata": {"name": name, "namespace": ns, "labels": labels}, "spec": s})
}

fn ks(ns: &str, name: &str, spec: Value) -> Value {
    let mut s = json!({"interval": "10m", "path": "./", "prune": true, "sourceRef": {"kind": "GitRepository", "name": "flux-system"}});
    s.as_object_mut()
        .unwrap()
        .extend(spec.as_object().unwrap().clone());
    json!({"apiVersion": "kustomize.toolkit.fluxcd.io/v1", "kind": "Kustomization",
           "metadata": {"name": name, "namespace": ns}, "spec": s})
}

enum Want {
    Allowed,
    AllowedWarning(&'static [&'static str]),
    Denied(&'static [&'static str]),
}

fn check(case: &str, op: &str, obj: Value, want: Want) {
    let a = validate(op, &obj);
    match want {
        Want::Allowed => {
            assert!(a.allowed, "{case}: expected allowed, got {}", a.message);
            assert!(
                a.warnings.is_empty(),
                "{case}: unexpected warnings {:?}",
                a.warnings
            );
        }
        Want::AllowedWarning(parts) => {
            assert!(a.allowed, "{case}: expected allowed, got {}", a.message);
            let w = a.warnings.join("\n");
            for p in parts {
                assert!(w.contains(p), "{case}: warning lacks {p:?}: {w}");
            }
        }
        Want::Denied(parts) => {
            assert!(
                !a.allowed,
                "{case}: expected denied; warnings {:?}",
                a.warnings
            );
            for p in parts {
                assert!(
                    a.message.contains(p),
                    "{case}: message lacks {p:?}: {}",
                    a.message
                );
            }
        }
    }
}

#[test]
fn depends_on_table() {
    let cases: Vec<(&str, &str, Value, Want)> = vec![
        (
            "existing lower tier",
            "CREATE",
            hr(
                "apps",
                "worker",
                Some("4"),
                json!({"dependsOn": [{"name": "api"}]}),
            ),
            Want::Allowed,
        ),
        (
            "self reference",
            "CREATE",
            hr(
                "monitoring",
                "grafana",
                None,
                json!({"dependsOn": [{"name": "grafana"}]}),
            ),
            Want::Denied(&["spec.dependsOn[0]", "monitoring/grafana depends on itself"]),
        ),
        (
            "duplicate entries",
            "CREATE",
            hr(
                "monitoring",
                "grafana",
                None,
                json!({"dependsOn": [{"name": "kube-prometheus-stack"}, {"name": "kube-prometheus-stack", "namespace": "monitoring"}]}),
            ),
            Want::Denied(&[
                "spec.dependsOn[1]",
                "duplicate dependency monitoring/kube-prometheus-stack (also spec.dependsOn[0])",
            ]),
        ),
        (
            "missing target warns",
            "CREATE",
            hr(
                "monitoring",
                "grafana",
                None,
                json!({"dependsOn": [{"name": "loki"}]}),
            ),
            Want::AllowedWarning(&["spec.dependsOn[0]", "HelmRelease monitoring/loki not found"]),
        ),
        (
            "exists only as the other kind",
            "CREATE",
            hr(
                "monitoring",
                "grafana",
                None,
                json!({"dependsOn": [{"name": "infra-controllers", "namespace": "flux-system"}]}),
            ),
            Want::AllowedWarning(&[
                "flux-system/infra-controllers exists only as a Kustomization",
                "a HelmRelease can depend only on HelmReleases",
            ]),
        ),
        (
            "kustomization on a helmrelease name",
            "CREATE",
            ks(
                "flux-system",
                "monitoring-config",
                json!({"dependsOn": [{"name": "kyverno"}]}),
            ),
            Want::AllowedWarning(&[
                "flux-system/kyverno exists only as a HelmRelease",
                "a Kustomization can depend only on Kustomizations",
            ]),
        ),
        (
            "3-object cycle closed by an UPDATE",
            "UPDATE",
            hr(
                "apps",
                "database",
                Some("1"),
                json!({"dependsOn": [{"name": "frontend"}], "valuesFrom": [{"kind": "Secret", "name": "database-values"}]}),
            ),
            Want::Denied(&[
                "dependency cycle: apps/database → apps/frontend → apps/api → apps/database",
            ]),
        ),
        (
            "2-cycle of kustomizations",
            "UPDATE",
            ks(
                "flux-system",
                "infra-controllers",
                json!({"dependsOn": [{"name": "apps"}]}),
            ),
            Want::Denied(&[
                "dependency cycle: flux-system/infra-controllers → flux-system/apps → flux-system/infra-controllers",
            ]),
        ),
        (
            "same tier",
            "CREATE",
            hr(
                "apps",
                "search",
                Some("3"),
                json!({"dependsOn": [{"name": "api"}]}),
            ),
            Want::Denied(&[
                "apps/search (tier 3) depends on apps/api (tier 3)",
                "only on lower tiers",
            ]),
        ),
        (
            "higher tier",
            "CREATE",
            hr(
                "apps",
                "migrations",
                Some("1"),
                json!({"dependsOn": [{"name": "frontend"}]}),
            ),
            Want::Denied(&["(tier 1) depends on apps/frontend (tier 4)"]),
        ),
        (
            "tiered object depending on an untiered one",
            "CREATE",
            hr(
                "apps",
                "dashboards",
                Some("4"),
                json!({"dependsOn": [{"name": "kube-prometheus-stack", "namespace": "monitoring"}]}),
            ),
            Want::Denied(&[
                "apps/dashboards (tier 4) depends on monitoring/kube-prometheus-stack, which has no valid \"fluxadmit.io/tier\" tier label",
            ]),
        ),
        (
            "untiered objects are not concerned",
            "CREATE",
            hr(
                "apps",
                "adhoc",
                None,
                json!({"dependsOn": [{"name": "api"}]}),
            ),
            Want::Allowed,
        ),
        (
            "a tier that is not a number",
            "CREATE",
            hr("apps", "odd", Some("high"), json!({})),
            Want::Denied(&["has \"fluxadmit.io/tier\" label \"high\", which is not an integer"]),
        ),
        (
            "missing is denied under tiers",
            "CREATE",
            hr(
                "apps",
                "search",
                Some("4"),
                json!({"dependsOn": [{"name": "elastic"}]}),
            ),
            Want::Denied(&["HelmRelease apps/elastic not found"]),
        ),
        (
            "readyExpr that is not a bool",
            "CREATE",
            hr(
                "monitoring",
                "grafana",
                None,
                json!({"dependsOn": [{"name": "kube-prometheus-stack", "readyExpr": "dep.status.ready"}]}),
            ),
            Want::Denied(&[
                "spec.dependsOn[0].readyExpr",
                "\"dep.status.ready\"",
                "InvalidCELExpression",
            ]),
        ),
        (
            "readyExpr that compiles",
            "CREATE",
            hr(
                "monitoring",
                "grafana",
                None,
                json!({"dependsOn": [{"name": "kube-prometheus-stack", "readyExpr": "dep.status.observedGeneration == dep.metadata.generation"}]}),
            ),
            Want::Allowed,
        ),
        (
            "readyExpr syntax error",
            "CREATE",
            hr(
                "monitoring",
                "grafana",
                None,
                json!({"dependsOn": [{"name": "kube-prometheus-stack", "readyExpr": "dep.status.ready =="}]}),
            ),
            Want::Denied(&["spec.dependsOn[0].readyExpr", "at 1:"]),
        ),
    ];
    for (case, op, obj, want) in cases {
        check(case, op, obj, want);
    }
}

#[test]
fn referenced_secrets_table() {
    let cases: Vec<(&str, Value, Want)> = vec![
        (
            "valuesFrom present with default key",
            hr(
                "apps",
                "database",
                Some("1"),
                json!({"valuesFrom": [{"kind": "Secret", "name": "database-values"}]}),
            ),
            Want::Allowed,
        ),
        (
            "valuesFrom missing secret",
            hr(
                "monitoring",
                "grafana",
                None,
                json!({"valuesFrom": [{"kind": "Secret", "name": "grafana-admin"}]}),
            ),
            Want::Denied(&[
                "spec.valuesFrom[0]",
                "Secret monitoring/grafana-admin not found",
            ]),
        ),
        (
            "optional valuesFrom missing is allowed",
            hr(
                "monitoring",
                "grafana",
                None,
                json!({"valuesFrom": [{"kind": "Secret", "name": "grafana-admin", "optional": true}]}),
            ),
            Want::Allowed,
        ),
        (
            "missing key in an existing secret",
            hr(
                "apps",
                "worker",
                Some("4"),
                json!({"valuesFrom": [{"kind": "ConfigMap", "name": "ignored-when-untracked"}, {"kind": "Secret", "name": "api-values", "valuesKey": "prod.yaml"}]}),
            ),
            Want::Denied(&[
                "spec.valuesFrom[1]",
                "Secret apps/api-values has no key \"prod.yaml\" (keys: common.yaml)",
            ]),
        ),
        (
            "kubeConfig with value.yaml",
            hr(
                "apps",
                "remote",
                Some("4"),
                json!({"kubeConfig": {"secretRef": {"name": "remote-kubeconfig"}}}),
            ),
            Want::Allowed,
        ),
        (
            "kubeConfig with an absent key",
            hr(
                "apps",
                "remote",
                Some("4"),
                json!({"kubeConfig": {"secretRef": {"name": "remote-kubeconfig", "key": "config"}}}),
            ),
            Want::Denied(&["spec.kubeConfig.secretRef", "has no key \"config\""]),
        ),
        (
            "decryption and substitution present",
            ks(
                "flux-system",
                "apps2",
                json!({"decryption": {"provider": "sops", "secretRef": {"name": "sops-age"}}, "postBuild": {"substituteFrom": [{"kind": "Secret", "name": "cluster-vars"}]}}),
            ),
            Want::Allowed,
        ),
        (
            "decryption secret missing",
            ks(
                "flux-system",
                "apps2",
                json!({"decryption": {"provider": "sops", "secretRef": {"name": "sops-gpg"}}}),
            ),
            Want::Denied(&[
                "spec.decryption.secretRef",
                "Secret flux-system/sops-gpg not found",
            ]),
        ),
        (
            "substitution keys that are not variable names",
            ks(
                "flux-system",
                "apps2",
                json!({"postBuild": {"substituteFrom": [{"kind": "Secret", "name": "tls-vars"}]}}),
            ),
            Want::Denied(&["spec.postBuild.substituteFrom[0]", "tls.crt, tls.key"]),
        ),
        (
            "optional substitution missing",
            ks(
                "flux-system",
                "apps2",
                json!({"postBuild": {"substituteFrom": [{"kind": "Secret", "name": "nope", "optional": true}]}}),
            ),
            Want::Allowed,
        ),
    ];
    for (case, obj, want) in cases {
        check(case, "CREATE", obj, want);
    }
}

fn wiz(values: Value) -> Value {
    json!({"apiVersion": "helm.toolkit.fluxcd.io/v2", "kind": "HelmRelease",
        "metadata": {"name": "wiz-integration", "namespace": "wiz"},
        "spec": {"interval": "1h", "chart": {"spec": {"chart": "wiz-kubernetes-integration",
            "sourceRef": {"kind": "HelmRepository", "name": "wiz-sec", "namespace": "flux-system"}}},
            "values": values}})
}

#[test]
fn wiz_release_needs_its_secrets() {
    // The fixture state has wiz-api-token but not the pull secret aks-gitops-wiz.
    let a = validate(
        "CREATE",
        &wiz(json!({"wiz-kubernetes-connector": {"wiz-broker": {"enabled": true}}})),
    );
    assert!(!a.allowed);
    assert!(
        a.message.contains("wiz-kubernetes-integration/wiz-secrets"),
        "{}",
        a.message
    );
    assert!(
        a.message.contains(
            "Secret wiz/aks-gitops-wiz required by chart \"wiz-kubernetes-integration\" not found"
        ),
        "{}",
        a.message
    );
    assert!(!a.message.contains("wiz-api-token"), "{}", a.message);

    // With the pull secret (right type) it installs.
    let mut view = load_dir(&[root().join("tests/fixtures/flux-state")]).unwrap();
    view.add_manifest(&json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "aks-gitops-wiz", "namespace": "wiz"},
        "type": "kubernetes.io/dockerconfigjson", "data": {".dockerconfigjson": "e30="}}));
    let policies = load_paths(&[
        root().join("policies"),
        root().join("policies/examples/wiz-kubernetes-integration.yaml"),
    ])
    .unwrap();
    let with = Snapshot { policies, view };
    let obj = wiz(json!({"wiz-kubernetes-connector": {"wiz-broker": {"enabled": true}}}));
    let a = validate_with(&with, "CREATE", &obj, false);
    assert!(a.allowed, "{}", a.message);

    // Token without a key, and a pull secret of the wrong type.
    let mut view = load_dir(&[root().join("tests/fixtures/flux-state")]).unwrap();
    view.add_manifest(&json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "wiz-api-token", "namespace": "wiz"},
        "type": "Opaque", "data": {"clientId": "eA=="}}));
    view.add_manifest(&json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "aks-gitops-wiz", "namespace": "wiz"},
        "type": "Opaque", "data": {"x": "eA=="}}));
    let policies =
        load_paths(&[root().join("policies/examples/wiz-kubernetes-integration.yaml")]).unwrap();
    let a = validate_with(&Snapshot { policies, view }, "CREATE", &obj, false);
    assert!(a.message.contains("Secret wiz/wiz-api-token required by chart \"wiz-kubernetes-integration\" is missing key \"clientToken\""), "{}", a.message);
    assert!(
        a.message
            .contains("has type \"Opaque\", expected \"kubernetes.io/dockerconfigjson\""),
        "{}",
        a.message
    );

    // Other charts are not concerned.
    let mut other = wiz(json!({}));
    other["spec"]["chart"]["spec"]["chart"] = json!("falco");
    assert!(validate("CREATE", &other).allowed);
}

#[test]
fn wiz_values_rules() {
    let policies =
        load_paths(&[root().join("policies/examples/wiz-kubernetes-integration.yaml")]).unwrap();
    let mut view = load_dir(&[root().join("tests/fixtures/flux-state")]).unwrap();
    view.add_manifest(&json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "aks-gitops-wiz", "namespace": "wiz"},
        "type": "kubernetes.io/dockerconfigjson", "data": {".dockerconfigjson": "e30="}}));
    let snap = Snapshot { policies, view };

    let typo = wiz(json!({"wiz-kubernetes-connector": {"Wiz-broker": {"enabled": true}}}));
    let a = validate_with(&snap, "CREATE", &typo, false);
    assert!(!a.allowed);
    assert!(
        a.message.contains("wiz-broker-key-spelling"),
        "{}",
        a.message
    );
    assert!(
        a.message.contains("use \"wiz-broker\" (lowercase w)"),
        "{}",
        a.message
    );

    let no_endpoint = wiz(json!({"wiz-kubernetes-connector": {"wiz-broker": {"enabled": false}}}));
    let a = validate_with(&snap, "CREATE", &no_endpoint, false);
    assert!(!a.allowed);
    assert!(
        a.message.contains("autoCreateConnector.apiServerEndpoint"),
        "{}",
        a.message
    );

    let endpoint = wiz(
        json!({"wiz-kubernetes-connector": {"wiz-broker": {"enabled": false},
        "autoCreateConnector": {"apiServerEndpoint": "https://10.0.0.1:443"}}}),
    );
    assert!(validate_with(&snap, "CREATE", &endpoint, false).allowed);
    let broker_on = wiz(json!({"wiz-kubernetes-connector": {"wiz-broker": {"enabled": true}}}));
    assert!(validate_with(&snap, "CREATE", &broker_on, false).allowed);
    assert!(validate_with(&snap, "CREATE", &wiz(json!({})), false).allowed);
}

#[test]
/// Flux dry-runs every object of an apply before it writes any: a dry run is denied only for
/// what the object itself gets wrong; what rests on other objects (a cycle through them, their
/// tiers, a Secret) is a warning there, and denied on the real write of a person's apply.
fn dry_run_denies_only_the_objects_own_faults() {
    let objs = [
        hr(
            "apps",
            "database",
            Some("1"),
            json!({"dependsOn": [{"name": "frontend"}]}),
        ),
        hr(
            "monitoring",
            "grafana",
            None,
            json!({"dependsOn": [{"name": "loki"}], "valuesFrom": [{"kind": "Secret", "name": "x"}]}),
        ),
        hr(
            "apps",
            "search",
            Some("3"),
            json!({"dependsOn": [{"name": "api"}]}),
        ),
    ];
    for obj in objs {
        let wet = validate_with(snapshot(), "UPDATE", &obj, false);
        let dry = validate_with(snapshot(), "UPDATE", &obj, true);
        assert!(dry.allowed, "dry run denied: {}", dry.message);
        assert!(!wet.allowed, "{}", serde_json::to_string(&obj).unwrap());
        // What the write is denied for is what the dry run warns of.
        let spared: Vec<&str> = dry
            .warnings
            .iter()
            .filter_map(|w| w.split_once(" (admitted: a dry run").map(|(head, _)| head))
            .collect();
        assert!(!spared.is_empty(), "{:?}", dry.warnings);
        for head in spared {
            assert!(wet.message.contains(head), "{head} / {}", wet.message);
        }
    }
    // The object's own fault is denied on the dry run too, with the same answer.
    let own = hr(
        "monitoring",
        "grafana",
        None,
        json!({"dependsOn": [{"name": "grafana"}]}),
    );
    let wet = validate_with(snapshot(), "CREATE", &own, false);
    let dry = validate_with(snapshot(), "CREATE", &own, true);
    assert!(!dry.allowed && dry.message.contains("depends on itself"));
    assert_eq!(wet.raw, dry.raw);
}

#[test]
fn v2beta2_payloads_are_checked_too() {
    let mut obj = hr(
        "monitoring",
        "grafana",
        None,
        json!({"dependsOn": [{"name": "grafana"}]}),
    );
    obj["apiVersion"] = json!("helm.toolkit.fluxcd.io/v2beta2");
    let a = validate("CREATE", &obj);
    assert!(
        !a.allowed && a.message.contains("depends on itself"),
        "{}",
        a.message
    );
}

#[test]
fn review_command_prints_the_serve_answer() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_fluxadmit"))
        .args(["review", "--state"])
        .arg(root().join("examples/state"))
        .arg("--policies")
        .arg(root().join("policies"))
        .arg(root().join("examples/reviews/helmrelease-cycle.json"))
        .output()
        .unwrap();
    // A denial exits 1, as `check` does on an error; the answer is on stdout.
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["response"]["uid"], "8f1c6a52-cycle");
    assert_eq!(v["response"]["allowed"], false);
    assert!(
        v["response"]["status"]["message"]
            .as_str()
            .unwrap()
            .contains("apps/database → apps/frontend → apps/api → apps/database")
    );
}

/// An expression over `oldObject` on an UPDATE: the old object is read from the review only
/// when a rule asks for it, and then it is the one the API server sent, in either key order.
#[test]
fn expressions_see_the_old_object_on_update() {
    let policies = fluxadmit_core::policy::load::compile_yaml(
        "chart-pinned.yaml",
        r#"
apiVersion: fluxadmit.io/v1alpha1
kind: DeploymentPolicy
metadata:
  name: chart-pinned
spec:
  match:
    resources:
      - apiGroups: ["helm.toolkit.fluxcd.io"]
        kinds: ["HelmRelease"]
  rules:
    - name: same-chart
      expression:
        expression: "request.operation != 'UPDATE' || object.spec.chart.spec.chart == oldObject.spec.chart.spec.chart"
        message: "the chart of a release may not change"
        messageExpression: "'chart changed from ' + oldObject.spec.chart.spec.chart + ' to ' + object.spec.chart.spec.chart"
"#,
    )
    .unwrap();
    let snap = Snapshot {
        policies,
        view: Default::default(),
    };
    let release = |chart: &str| {
        hr(
            "apps",
            "web",
            None,
            json!({"chart": {"spec": {"chart": chart, "sourceRef": {"kind": "HelmRepository", "name": "charts"}}}}),
        )
    };
    let (new, old) = (release("nginx"), release("podinfo"));
    let sorted = review("UPDATE", &new, Some(&old), false);
    // The same review with oldObject written before object.
    let text = String::from_utf8(sorted.clone()).unwrap();
    let (o, n) = (
        serde_json::to_string(&old).unwrap(),
        serde_json::to_string(&new).unwrap(),
    );
    let swapped = text.replace(
        &format!(r#""object":{n},"oldObject":{o}"#),
        &format!(r#""oldObject":{o},"object":{n}"#),
    );
    assert_ne!(swapped, text, "the keys were swapped");
    for body in [sorted, swapped.into_bytes()] {
        let a = snap.review(Mode::Validate, &body).unwrap();
        assert!(!a.outcome.verdict.allowed);
        assert_eq!(
            a.outcome.verdict.message,
            "denied by fluxadmit: chart-pinned/same-chart: chart changed from podinfo to nginx"
        );
    }
    let same = snap
        .review(Mode::Validate, &review("UPDATE", &new, Some(&new), false))
        .unwrap();
    assert!(
        same.outcome.verdict.allowed,
        "{}",
        same.outcome.verdict.message
    );
}
