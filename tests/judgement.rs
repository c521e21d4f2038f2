//! How a finding becomes an answer across the requests Flux and people send: a dry run, a real
//! write by Flux or by a person, a deletion through finalizers, `flux reconcile`, an update of
//! an object that already broke a rule, and an `Audit` policy on the mutating webhook. Every
//! review goes through `Snapshot::review`, the code path `serve` uses.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use base64::Engine as _;
use fluxadmit_core::cluster::ClusterView;
use fluxadmit_core::engine::Mode;
use fluxadmit_core::policy::load::{compile_yaml, load_paths};
use fluxadmit_core::state::Snapshot;
use serde_json::{Value, json};
use std::path::PathBuf;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

const KUSTOMIZE: &str = "system:serviceaccount:flux-system:kustomize-controller";
const PERSON: &str = "jane@example.com";

struct Req<'a> {
    user: &'a str,
    op: &'a str,
    object: Value,
    old: Option<Value>,
    dry_run: bool,
}

fn body(r: &Req<'_>) -> Vec<u8> {
    let o = if r.object.is_null() {
        r.old.as_ref().unwrap()
    } else {
        &r.object
    };
    let (group, version) = o["apiVersion"]
        .as_str()
        .unwrap()
        .rsplit_once('/')
        .unwrap_or(("", "v1"));
    let kind = o["kind"].as_str().unwrap();
    serde_json::to_vec(&json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": "judgement-1",
            "kind": {"group": group, "version": version, "kind": kind},
            "resource": {"group": group, "version": version, "resource": format!("{}s", kind.to_lowercase())},
            "name": o["metadata"]["name"], "namespace": o["metadata"]["namespace"],
            "operation": r.op, "userInfo": {"username": r.user},
            "object": r.object, "oldObject": r.old, "dryRun": r.dry_run
        }
    }))
    .unwrap()
}

struct Answer {
    allowed: bool,
    message: String,
    warnings: Vec<String>,
    patch: Option<Value>,
}

fn ask(snap: &Snapshot, mode: Mode, r: &Req<'_>) -> Answer {
    let a = snap.review(mode, &body(r)).unwrap();
    let v: Value = serde_json::from_slice(&a.body).unwrap();
    let resp = &v["response"];
    Answer {
        allowed: resp["allowed"].as_bool().unwrap(),
        message: resp["status"]["message"].as_str().unwrap_or("").to_owned(),
        warnings: resp["warnings"]
            .as_array()
            .map(|w| w.iter().map(|s| s.as_str().unwrap().to_owned()).collect())
            .unwrap_or_default(),
        patch: resp["patch"].as_str().map(|p| {
            serde_json::from_slice(&base64::engine::general_purpose::STANDARD.decode(p).unwrap())
                .unwrap()
        }),
    }
}

fn view(objects: &[Value]) -> ClusterView {
    let mut v = ClusterView::default();
    for o in objects {
        v.add_manifest(o);
    }
    v
}

fn defaults(objects: &[Value]) -> Snapshot {
    Snapshot {
        policies: load_paths(&[root().join("policies")]).unwrap(),
        view: view(objects),
    }
}

fn flux_labels() -> Value {
    json!({"kustomize.toolkit.fluxcd.io/name": "apps", "kustomize.toolkit.fluxcd.io/namespace": "flux-system"})
}

fn podinfo(labels: Value) -> Value {
    json!({
        "apiVersion": "helm.toolkit.fluxcd.io/v2", "kind": "HelmRelease",
        "metadata": {"name": "podinfo", "namespace": "apps", "labels": labels},
        "spec": {"interval": "10m",
                 "chart": {"spec": {"chart": "podinfo", "sourceRef": {"kind": "HelmRepository", "name": "podinfo"}}},
                 "valuesFrom": [{"kind": "Secret", "name": "podinfo-values"}]}
    })
}

fn namespace(name: &str, labels: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}})
}

#[test]
fn a_missing_secret_denies_only_a_persons_real_write() {
    let snap = defaults(&[namespace("apps", json!({}))]);
    let missing = "Secret apps/podinfo-values not found";

    // Flux's dry run of the whole apply: the Secret is in the same apply, not written yet.
    let dry = ask(
        &snap,
        Mode::Validate,
        &Req {
            user: KUSTOMIZE,
            op: "CREATE",
            object: podinfo(flux_labels()),
            old: None,
            dry_run: true,
        },
    );
    assert!(dry.allowed, "{}", dry.message);
    assert!(
        dry.warnings
            .iter()
            .any(|w| w.contains(missing) && w.contains("admitted: a dry run")),
        "{:?}",
        dry.warnings
    );

    // Flux's real write: the Secret may come from another Kustomization or an ExternalSecret.
    let flux = ask(
        &snap,
        Mode::Validate,
        &Req {
            user: KUSTOMIZE,
            op: "CREATE",
            object: podinfo(flux_labels()),
            old: None,
            dry_run: false,
        },
    );
    assert!(flux.allowed, "{}", flux.message);
    assert!(
        flux.warnings
            .iter()
            .any(|w| w.contains(missing) && w.contains("Flux applies this object")),
        "{:?}",
        flux.warnings
    );

    // A person's kubectl apply: kubectl writes every object whatever happens to the others, so
    // the denial blocks nothing else and says at once what is missing.
    let person = ask(
        &snap,
        Mode::Validate,
        &Req {
            user: PERSON,
            op: "CREATE",
            object: podinfo(json!({})),
            old: None,
            dry_run: false,
        },
    );
    assert!(!person.allowed);
    assert!(person.message.contains(missing), "{}", person.message);

    // Either sign of Flux is enough: its controller's service account without the labels, or
    // the labels (a person re-applying what Flux applied).
    for (user, labels) in [(KUSTOMIZE, json!({})), (PERSON, flux_labels())] {
        let a = ask(
            &snap,
            Mode::Validate,
            &Req {
                user,
                op: "CREATE",
                object: podinfo(labels),
                old: None,
                dry_run: false,
            },
        );
        assert!(a.allowed, "{user}: {}", a.message);
        assert!(
            a.warnings.iter().any(|w| w.contains(missing)),
            "{:?}",
            a.warnings
        );
    }

    // Once the Secret exists, every one of them is admitted without a word.
    let secret = json!({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
        "metadata": {"name": "podinfo-values", "namespace": "apps"}, "data": {"values.yaml": "e30="}});
    let snap = defaults(&[namespace("apps", json!({})), secret]);
    for (labels, dry_run) in [
        (flux_labels(), true),
        (flux_labels(), false),
        (json!({}), false),
    ] {
        let a = ask(
            &snap,
            Mode::Validate,
            &Req {
                user: PERSON,
                op: "CREATE",
                object: podinfo(labels),
                old: None,
                dry_run,
            },
        );
        assert!(
            a.allowed && a.warnings.is_empty(),
            "{} {:?}",
            a.message,
            a.warnings
        );
    }
}

#[test]
fn a_fault_of_the_object_itself_is_denied_on_every_request() {
    let snap = defaults(&[]);
    let mut hr = podinfo(flux_labels());
    hr["spec"]["valuesFrom"] = json!([]);
    hr["spec"]["dependsOn"] = json!([{"name": "podinfo"}]);
    for dry_run in [true, false] {
        let a = ask(
            &snap,
            Mode::Validate,
            &Req {
                user: PERSON,
                op: "CREATE",
                object: hr.clone(),
                old: None,
                dry_run,
            },
        );
        assert!(!a.allowed, "dry run {dry_run}");
        assert!(a.message.contains("depends on itself"), "{}", a.message);
    }
}

#[test]
fn deletion_through_finalizers_is_never_denied() {
    // The values Secret was pruned in the same sync; the HelmRelease is being deleted and
    // helm-controller removes its finalizer.
    let snap = defaults(&[]);
    let mut old = podinfo(json!({}));
    old["metadata"]["finalizers"] = json!(["finalizers.fluxcd.io"]);
    old["metadata"]["deletionTimestamp"] = json!("2026-11-30T05:00:00Z");
    let mut new = old.clone();
    new["metadata"]["finalizers"] = json!([]);
    let a = ask(
        &snap,
        Mode::Validate,
        &Req {
            user: PERSON,
            op: "UPDATE",
            object: new,
            old: Some(old),
            dry_run: false,
        },
    );
    assert!(a.allowed, "{}", a.message);
    assert!(a.warnings.is_empty(), "{:?}", a.warnings);

    // A privileged Deployment losing its finalizer under the restricted pod security policy,
    // in a tenant namespace where the default mutation applies: admitted, nothing patched.
    let snap = Snapshot {
        policies: load_paths(&[
            root().join("policies"),
            root().join("policies/examples/pod-security-restricted.yaml"),
        ])
        .unwrap(),
        view: view(&[namespace(
            "team-a",
            json!({"toolkit.fluxcd.io/tenant": "team-a"}),
        )]),
    };
    let mut old = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "agent", "namespace": "team-a", "finalizers": ["example.com/drain"],
                     "deletionTimestamp": "2026-11-30T05:00:00Z"},
        "spec": {"selector": {"matchLabels": {"app": "agent"}},
                 "template": {"metadata": {"labels": {"app": "agent"}},
                              "spec": {"containers": [{"name": "agent", "image": "agent:1",
                                        "securityContext": {"privileged": true}}]}}}
    });
    let mut new = old.clone();
    new["metadata"]["finalizers"] = json!([]);
    for mode in [Mode::Mutate, Mode::Validate] {
        let a = ask(
            &snap,
            mode,
            &Req {
                user: PERSON,
                op: "UPDATE",
                object: new.clone(),
                old: Some(old.clone()),
                dry_run: false,
            },
        );
        assert!(a.allowed, "{}", a.message);
        assert!(
            a.patch.as_ref().is_none_or(|p| p == &json!([])),
            "{:?}",
            a.patch
        );
    }
    // The same Deployment created: denied, so the exemption is about deletion, not the object.
    old["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("deletionTimestamp");
    let a = ask(
        &snap,
        Mode::Validate,
        &Req {
            user: PERSON,
            op: "CREATE",
            object: old,
            old: None,
            dry_run: false,
        },
    );
    assert!(
        !a.allowed && a.message.contains("privileged"),
        "{}",
        a.message
    );
}

/// A HelmRelease that already breaks a rule the object alone decides (here a self-dependency
/// under a policy that came later).
fn broken_release() -> Value {
    let mut hr = podinfo(json!({}));
    hr["spec"]["valuesFrom"] = json!([]);
    hr["spec"]["dependsOn"] = json!([{"name": "podinfo"}]);
    hr
}

#[test]
fn flux_reconcile_on_a_broken_object_is_admitted() {
    let snap = defaults(&[]);
    let old = broken_release();
    let mut new = old.clone();
    new["metadata"]["annotations"] =
        json!({"reconcile.fluxcd.io/requestedAt": "2026-11-30T05:10:00.000000000Z"});
    let a = ask(
        &snap,
        Mode::Validate,
        &Req {
            user: PERSON,
            op: "UPDATE",
            object: new,
            old: Some(old),
            dry_run: false,
        },
    );
    assert!(a.allowed, "{}", a.message);
    assert!(
        a.warnings.iter().any(|w| w.contains("depends on itself")
            && w.contains("changes only metadata that Flux and Kubernetes manage")),
        "{:?}",
        a.warnings
    );
}

#[test]
fn existing_violations_warn_unless_the_policy_is_strict() {
    let old = broken_release();
    let mut new = old.clone();
    new["spec"]["interval"] = json!("5m");
    let req = Req {
        user: PERSON,
        op: "UPDATE",
        object: new.clone(),
        old: Some(old.clone()),
        dry_run: false,
    };
    let a = ask(&defaults(&[]), Mode::Validate, &req);
    assert!(a.allowed, "{}", a.message);
    assert!(
        a.warnings
            .iter()
            .any(|w| w.contains("depends on itself") && w.contains("already had this violation")),
        "{:?}",
        a.warnings
    );

    // Introduced by this update: denied.
    let mut clean = old.clone();
    clean["spec"]["dependsOn"] = json!([]);
    let fresh = Req {
        user: PERSON,
        op: "UPDATE",
        object: new.clone(),
        old: Some(clean),
        dry_run: false,
    };
    let a = ask(&defaults(&[]), Mode::Validate, &fresh);
    assert!(!a.allowed && a.message.contains("depends on itself"));

    // allowExistingViolations: false denies it on every update.
    let strict = compile_yaml(
        "strict.yaml",
        r#"
apiVersion: fluxadmit.io/v1alpha1
kind: DeploymentPolicy
metadata: {name: strict-dependencies}
spec:
  allowExistingViolations: false
  match:
    resources: [{apiGroups: ["helm.toolkit.fluxcd.io"], kinds: ["HelmRelease"]}]
  rules: [{name: depends-on, dependsOn: {}}]
"#,
    )
    .unwrap();
    let snap = Snapshot {
        policies: strict,
        view: ClusterView::default(),
    };
    let a = ask(&snap, Mode::Validate, &req);
    assert!(
        !a.allowed && a.message.contains("depends on itself"),
        "{}",
        a.message
    );
}

#[test]
fn audit_never_patches_and_says_what_it_would_patch() {
    let audit = r#"
apiVersion: fluxadmit.io/v1alpha1
kind: DeploymentPolicy
metadata: {name: run-as-non-root}
spec:
  action: Audit
  match:
    resources: [{apiGroups: ["apps"], kinds: ["Deployment"]}]
  rules:
    - name: non-root
      mutate:
        target: PodTemplate
        overlay:
          spec:
            securityContext:
              +(runAsNonRoot): true
"#;
    let deployment = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "apps"},
        "spec": {"selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}},
                              "spec": {"containers": [{"name": "web", "image": "web:1"}]}}}
    });
    let req = Req {
        user: PERSON,
        op: "CREATE",
        object: deployment,
        old: None,
        dry_run: false,
    };
    let snap = Snapshot {
        policies: compile_yaml("audit.yaml", audit).unwrap(),
        view: ClusterView::default(),
    };
    let a = ask(&snap, Mode::Mutate, &req);
    assert!(a.allowed);
    assert!(
        a.patch.as_ref().is_none_or(|p| p == &json!([])),
        "{:?}",
        a.patch
    );
    assert!(
        a.warnings
            .iter()
            .any(|w| w.contains("run-as-non-root/non-root")
                && w.contains("add /spec/template/spec/securityContext")),
        "{:?}",
        a.warnings
    );

    // The same policy under Enforce patches exactly that.
    let snap = Snapshot {
        policies: compile_yaml("enforce.yaml", &audit.replace("Audit", "Enforce")).unwrap(),
        view: ClusterView::default(),
    };
    let a = ask(&snap, Mode::Mutate, &req);
    assert!(a.warnings.is_empty(), "{:?}", a.warnings);
    let patch = a.patch.unwrap();
    assert_eq!(
        patch,
        json!([{"op": "add", "path": "/spec/template/spec/securityContext", "value": {"runAsNonRoot": true}}])
    );
}

#[test]
fn the_default_mutation_is_enforced_only_in_tenant_namespaces() {
    let snap = defaults(&[
        namespace("team-a", json!({"toolkit.fluxcd.io/tenant": "team-a"})),
        namespace("infra", json!({})),
    ]);
    let pod = |ns: &str| Req {
        user: PERSON,
        op: "CREATE",
        object: json!({"apiVersion": "v1", "kind": "Pod",
                       "metadata": {"name": "p", "namespace": ns},
                       "spec": {"containers": [{"name": "c", "image": "c:1"}]}}),
        old: None,
        dry_run: true,
    };
    let tenant = ask(&snap, Mode::Mutate, &pod("team-a"));
    let ops = tenant.patch.expect("patched in a tenant namespace");
    assert!(ops.to_string().contains("runAsNonRoot"), "{ops}");
    let infra = ask(&snap, Mode::Mutate, &pod("infra"));
    assert!(
        infra.patch.as_ref().is_none_or(|p| p == &json!([])),
        "{:?}",
        infra.patch
    );
}
