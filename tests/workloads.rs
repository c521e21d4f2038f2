//! Workload mutation and validation through the same code path `serve` uses
//! (`Snapshot::review` on AdmissionReview v1 bytes): the restricted security-context overlay,
//! pull secret injection and validation, Pod Security Standards, and properties of the
//! mutating webhook over generated workloads of every kind.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use base64::Engine as _;
use fluxadmit_core::admission::parse_review;
use fluxadmit_core::cluster::load_dir;
use fluxadmit_core::engine::{Mode, evaluate};
use fluxadmit_core::policy::load::{compile_yaml, load_paths};
use fluxadmit_core::state::Snapshot;
use proptest::prelude::*;
use serde_json::{Map, Value, json};
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::OnceLock;

const TENANT: &str = "team-a";
const PLAIN: &str = "plain";
const UID: &str = "5f0c7a1e-workloads";
const FLUX_SA: &str = "system:serviceaccount:flux-system:kustomize-controller";
const PERSON: &str = "alice@example.com";

const KINDS: [&str; 6] = [
    "Pod",
    "Deployment",
    "StatefulSet",
    "DaemonSet",
    "Job",
    "CronJob",
];

// ---------------------------------------------------------------------------------------------
// Snapshots, reviews, patches.

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The default policies (`policies/`, examples excluded) plus the named example files, over the
/// fixture state (namespaces `team-a` (tenant) and `plain`, pull secrets in `team-a`).
fn load_snapshot(examples: &[&str]) -> Snapshot {
    let mut paths = vec![root().join("policies")];
    paths.extend(
        examples
            .iter()
            .map(|e| root().join("policies/examples").join(e)),
    );
    Snapshot {
        policies: load_paths(&paths).unwrap(),
        view: load_dir(&[root().join("tests/fixtures/workloads/state")]).unwrap(),
    }
}

/// Default policies + the image-pull-secrets example: the mutating set the properties run on.
fn mutating() -> &'static Snapshot {
    static SNAP: OnceLock<Snapshot> = OnceLock::new();
    SNAP.get_or_init(|| load_snapshot(&["image-pull-secrets.yaml"]))
}

/// The same policies and state, loaded a second time, independently.
fn mutating_again() -> &'static Snapshot {
    static SNAP: OnceLock<Snapshot> = OnceLock::new();
    SNAP.get_or_init(|| load_snapshot(&["image-pull-secrets.yaml"]))
}

fn baseline() -> &'static Snapshot {
    static SNAP: OnceLock<Snapshot> = OnceLock::new();
    SNAP.get_or_init(|| load_snapshot(&["pod-security-baseline.yaml"]))
}

fn restricted() -> &'static Snapshot {
    static SNAP: OnceLock<Snapshot> = OnceLock::new();
    SNAP.get_or_init(|| load_snapshot(&["pod-security-restricted.yaml"]))
}

fn user_info(user: &str) -> Value {
    if user.starts_with("system:serviceaccount:") {
        json!({
            "username": user,
            "uid": "8d0c4c5e-3f5a-4c0e-9a57-0d5e0f1d2a11",
            "groups": ["system:serviceaccounts", "system:serviceaccounts:flux-system", "system:authenticated"]
        })
    } else {
        json!({"username": user, "groups": ["team-a-admins", "system:authenticated"]})
    }
}

/// An AdmissionReview v1 body for CREATE of `obj`.
fn review_body(obj: &Value, user: &str, dry_run: bool) -> Vec<u8> {
    review_body_op(obj, None, user, dry_run)
}

/// An AdmissionReview v1 body: UPDATE from `old` when given, else CREATE.
fn review_body_op(obj: &Value, old: Option<&Value>, user: &str, dry_run: bool) -> Vec<u8> {
    let api_version = obj["apiVersion"].as_str().unwrap();
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    let kind = obj["kind"].as_str().unwrap();
    serde_json::to_vec(&json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": UID,
            "kind": {"group": group, "version": version, "kind": kind},
            "resource": {"group": group, "version": version, "resource": format!("{}s", kind.to_lowercase())},
            // Empty for a CREATE with only generateName, as the API server sends it.
            "name": obj["metadata"]["name"].as_str().unwrap_or_default(),
            "namespace": obj["metadata"]["namespace"],
            "operation": if old.is_some() { "UPDATE" } else { "CREATE" },
            "userInfo": user_info(user),
            "object": obj,
            "oldObject": old,
            "dryRun": dry_run
        }
    }))
    .unwrap()
}

#[derive(Debug)]
struct Reply {
    allowed: bool,
    message: String,
    /// The decoded JSON patch (an array of operations), when the response carries one.
    patch: Option<Value>,
    raw: Vec<u8>,
}

fn review_raw(snap: &Snapshot, mode: Mode, body: &[u8]) -> Reply {
    let answer = snap.review(mode, body).unwrap();
    let v: Value = serde_json::from_slice(&answer.body).unwrap();
    let r = &v["response"];
    assert_eq!(r["uid"], UID, "the response echoes the request uid");
    let patch = r.get("patch").map(|p| {
        assert_eq!(r["patchType"], "JSONPatch");
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(p.as_str().expect("patch is a base64 string"))
            .expect("patch is valid base64");
        let ops: Value = serde_json::from_slice(&bytes).expect("patch is JSON");
        assert!(ops.is_array(), "a JSON patch is an array: {ops}");
        ops
    });
    if mode == Mode::Validate {
        assert!(patch.is_none(), "the validating webhook never patches");
    }
    Reply {
        allowed: r["allowed"].as_bool().unwrap(),
        message: r["status"]["message"].as_str().unwrap_or("").to_owned(),
        patch,
        raw: answer.body,
    }
}

fn review(snap: &Snapshot, mode: Mode, obj: &Value) -> Reply {
    review_raw(snap, mode, &review_body(obj, FLUX_SA, false))
}

/// A person's `kubectl apply`: a missing or wrong pull Secret (another object) denies it; from
/// Flux it is a warning (tests/judgement.rs).
fn review_by_person(snap: &Snapshot, mode: Mode, obj: &Value) -> Reply {
    review_raw(snap, mode, &review_body(obj, PERSON, false))
}

fn apply(obj: &Value, patch: &Value) -> Value {
    let p: json_patch::Patch = serde_json::from_value(patch.clone()).unwrap();
    let mut out = obj.clone();
    json_patch::patch(&mut out, &p.0)
        .unwrap_or_else(|e| panic!("patch does not apply: {e}\npatch: {patch}\nto: {obj}"));
    out
}

/// The object as the API server stores it after the mutating webhook.
fn mutate(snap: &Snapshot, obj: &Value) -> Value {
    let r = review(snap, Mode::Mutate, obj);
    assert!(r.allowed, "mutate must not deny: {}", r.message);
    match &r.patch {
        Some(p) => apply(obj, p),
        None => obj.clone(),
    }
}

/// The `path` and `from` of every operation.
fn op_paths(patch: &Value) -> Vec<String> {
    patch
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|op| ["path", "from"].map(|k| op.get(k).and_then(Value::as_str)))
        .flatten()
        .map(str::to_owned)
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Workloads.

/// Where the pod template lives (the object itself for a Pod).
fn template_pointer(kind: &str) -> &'static str {
    match kind {
        "Pod" => "",
        "CronJob" => "/spec/jobTemplate/spec/template",
        _ => "/spec/template",
    }
}

fn pod_spec_pointer(kind: &str) -> String {
    format!("{}/spec", template_pointer(kind))
}

/// A workload of `kind` around `pod_spec`, with `meta` as its metadata.
fn workload_with_meta(kind: &str, meta: Value, pod_spec: Value) -> Value {
    let app = meta
        .get("name")
        .or_else(|| meta.get("generateName"))
        .cloned()
        .unwrap_or_default();
    let labels = json!({"app.kubernetes.io/name": app});
    let template = json!({"metadata": {"labels": labels}, "spec": pod_spec});
    match kind {
        "Pod" => json!({"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": pod_spec}),
        "Deployment" | "DaemonSet" => json!({
            "apiVersion": "apps/v1", "kind": kind, "metadata": meta,
            "spec": {"selector": {"matchLabels": labels}, "template": template}
        }),
        "StatefulSet" => json!({
            "apiVersion": "apps/v1", "kind": kind, "metadata": meta,
            "spec": {"serviceName": app, "selector": {"matchLabels": labels}, "template": template}
        }),
        "Job" => json!({
            "apiVersion": "batch/v1", "kind": "Job", "metadata": meta,
            "spec": {"backoffLimit": 2, "template": template}
        }),
        "CronJob" => json!({
            "apiVersion": "batch/v1", "kind": "CronJob", "metadata": meta,
            "spec": {"schedule": "17 3 * * *", "jobTemplate": {"spec": {"template": template}}}
        }),
        other => panic!("no such workload kind {other}"),
    }
}

fn workload(kind: &str, name: &str, namespace: &str, pod_spec: Value) -> Value {
    workload_with_meta(
        kind,
        json!({"name": name, "namespace": namespace, "labels": {"app.kubernetes.io/name": name}}),
        pod_spec,
    )
}

fn pod_spec(containers: Value) -> Value {
    json!({"restartPolicy": "Never", "containers": containers})
}

fn pod_sc_defaults() -> Value {
    json!({"runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}})
}

fn container_sc_defaults() -> Value {
    json!({
        "allowPrivilegeEscalation": false,
        "capabilities": {"drop": ["ALL"]},
        "readOnlyRootFilesystem": true,
        "runAsNonRoot": true,
        "seccompProfile": {"type": "RuntimeDefault"}
    })
}

/// `obj` with the restricted defaults written in by hand: pod `securityContext` and every
/// (init) container's `securityContext`, none of which `obj` may set.
fn with_restricted_defaults(kind: &str, obj: &Value) -> Value {
    let mut out = obj.clone();
    let spec = out.pointer_mut(&pod_spec_pointer(kind)).unwrap();
    assert!(spec.get("securityContext").is_none());
    spec["securityContext"] = pod_sc_defaults();
    for list in ["initContainers", "containers"] {
        for c in spec
            .get_mut(list)
            .and_then(Value::as_array_mut)
            .into_iter()
            .flatten()
        {
            assert!(c.get("securityContext").is_none());
            c["securityContext"] = container_sc_defaults();
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// 1. The restricted overlay on a Deployment.

#[test]
fn restricted_overlay_sets_exact_security_contexts_on_a_tenant_deployment() {
    let mut snap = load_snapshot(&[]);
    assert!(snap.view.add_manifest(&json!({
        "apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": "tenant-b", "labels": {"toolkit.fluxcd.io/tenant": "tenant-b"}}
    })));
    let deploy = workload(
        "Deployment",
        "web",
        "tenant-b",
        json!({"containers": [{"name": "web", "image": "nginx:1.27", "ports": [{"containerPort": 8080}]}]}),
    );
    let r = review(&snap, Mode::Mutate, &deploy);
    assert!(r.allowed, "{}", r.message);
    let out = apply(&deploy, r.patch.as_ref().expect("the overlay patches"));

    let spec = &out["spec"]["template"]["spec"];
    assert_eq!(
        spec["securityContext"],
        json!({"runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}})
    );
    assert_eq!(
        spec["containers"][0]["securityContext"],
        json!({
            "allowPrivilegeEscalation": false,
            "capabilities": {"drop": ["ALL"]},
            "readOnlyRootFilesystem": true,
            "runAsNonRoot": true,
            "seccompProfile": {"type": "RuntimeDefault"}
        })
    );
    // Nothing else changed.
    assert_eq!(out, with_restricted_defaults("Deployment", &deploy));
}

#[test]
fn restricted_overlay_keeps_an_explicit_read_only_root_filesystem_false() {
    let deploy = workload(
        "Deployment",
        "cache",
        TENANT,
        json!({"containers": [
            {"name": "cache", "image": "redis:7", "securityContext": {"readOnlyRootFilesystem": false}}
        ]}),
    );
    let out = mutate(mutating(), &deploy);
    assert_eq!(
        out["spec"]["template"]["spec"]["containers"][0]["securityContext"],
        json!({
            "allowPrivilegeEscalation": false,
            "capabilities": {"drop": ["ALL"]},
            "readOnlyRootFilesystem": false,
            "runAsNonRoot": true,
            "seccompProfile": {"type": "RuntimeDefault"}
        })
    );
    assert_eq!(
        out["spec"]["template"]["spec"]["securityContext"],
        pod_sc_defaults()
    );
}

#[test]
fn restricted_overlay_leaves_non_tenant_namespaces_alone() {
    for ns in [PLAIN, "not-in-the-view"] {
        let deploy = workload(
            "Deployment",
            "web",
            ns,
            json!({"containers": [{"name": "web", "image": "acme.azurecr.io/web:1"}]}),
        );
        let r = review(mutating(), Mode::Mutate, &deploy);
        assert!(r.allowed, "{}", r.message);
        assert_eq!(r.patch, None, "namespace {ns}: no patch expected");
    }
}

// ---------------------------------------------------------------------------------------------
// 2. Pod template paths per kind.

fn assert_mutated_at_template(kind: &str, pod_spec: Value) {
    let obj = workload(kind, "w", TENANT, pod_spec);
    let r = review(mutating(), Mode::Mutate, &obj);
    assert!(r.allowed, "{}", r.message);
    let patch = r.patch.expect("a patch");
    let prefix = pod_spec_pointer(kind);
    for p in op_paths(&patch) {
        assert!(
            p.starts_with(&format!("{prefix}/")),
            "{kind}: operation at {p} is outside the pod spec {prefix}"
        );
    }
    assert_eq!(
        apply(&obj, &patch),
        with_restricted_defaults(kind, &obj),
        "{kind}"
    );
}

#[test]
fn job_template_is_mutated_at_spec_template_spec() {
    assert_mutated_at_template(
        "Job",
        pod_spec(json!([{"name": "migrate", "image": "busybox:1.36"}])),
    );
}

#[test]
fn cronjob_template_is_mutated_at_spec_job_template_spec_template_spec() {
    assert_mutated_at_template(
        "CronJob",
        pod_spec(json!([{"name": "backup", "image": "busybox:1.36"}])),
    );
}

#[test]
fn bare_pod_is_mutated_at_spec() {
    assert_mutated_at_template(
        "Pod",
        pod_spec(json!([{"name": "shell", "image": "busybox:1.36"}])),
    );
}

#[test]
fn init_containers_get_the_container_defaults_in_every_kind() {
    for kind in KINDS {
        assert_mutated_at_template(
            kind,
            json!({
                "initContainers": [
                    {"name": "wait", "image": "busybox:1.36"},
                    {"name": "schema", "image": "busybox:1.36"}
                ],
                "containers": [
                    {"name": "app", "image": "nginx:1.27"},
                    {"name": "sidecar", "image": "nginx:1.27"}
                ]
            }),
        );
    }
}

// ---------------------------------------------------------------------------------------------
// 3. Pull secrets.

fn pull_secrets_after_mutation(kind: &str, images: &[&str], existing: Option<Value>) -> Value {
    let containers: Vec<Value> = images
        .iter()
        .enumerate()
        .map(|(i, im)| json!({"name": format!("c{i}"), "image": im}))
        .collect();
    let mut spec = json!({"containers": containers});
    if let Some(e) = existing {
        spec["imagePullSecrets"] = e;
    }
    let obj = workload(kind, "app", TENANT, spec);
    let out = mutate(mutating(), &obj);
    out.pointer(&format!("{}/imagePullSecrets", pod_spec_pointer(kind)))
        .cloned()
        .unwrap_or(Value::Null)
}

#[test]
fn azurecr_image_gets_acr_pull_secret() {
    for kind in KINDS {
        assert_eq!(
            pull_secrets_after_mutation(kind, &["acme.azurecr.io/shop/web:1.4.2"], None),
            json!([{"name": "acr-pull"}]),
            "{kind}"
        );
    }
}

#[test]
fn ghcr_acme_image_gets_ghcr_acme_secret() {
    assert_eq!(
        pull_secrets_after_mutation("Deployment", &["ghcr.io/acme/app:2.0.1"], None),
        json!([{"name": "ghcr-acme"}])
    );
    // Another owner on ghcr.io is not acme's registry.
    assert_eq!(
        pull_secrets_after_mutation("Deployment", &["ghcr.io/other/app:1"], None),
        Value::Null
    );
}

#[test]
fn docker_hub_image_gets_no_pull_secret() {
    for image in [
        "docker.io/library/nginx:1.27",
        "nginx:1.27",
        "bitnami/redis:7",
    ] {
        assert_eq!(
            pull_secrets_after_mutation("Deployment", &[image], None),
            Value::Null,
            "{image}"
        );
    }
}

#[test]
fn existing_pull_secret_is_never_duplicated() {
    assert_eq!(
        pull_secrets_after_mutation(
            "Deployment",
            &["acme.azurecr.io/web:1", "other.azurecr.io/worker:1"],
            Some(json!([{"name": "acr-pull"}]))
        ),
        json!([{"name": "acr-pull"}])
    );
    assert_eq!(
        pull_secrets_after_mutation(
            "StatefulSet",
            &["acme.azurecr.io/web:1", "ghcr.io/acme/app:2", "nginx:1.27"],
            Some(json!([{"name": "regcred"}, {"name": "ghcr-acme"}]))
        ),
        json!([{"name": "regcred"}, {"name": "ghcr-acme"}, {"name": "acr-pull"}])
    );
    // Two images on the same registry need the secret once.
    assert_eq!(
        pull_secrets_after_mutation(
            "Job",
            &["a.azurecr.io/x:1", "b.azurecr.io/y:1", "ghcr.io/acme/z:1"],
            None
        ),
        json!([{"name": "acr-pull"}, {"name": "ghcr-acme"}])
    );
}

#[test]
fn pod_naming_a_missing_pull_secret_is_denied() {
    let pod = workload(
        "Pod",
        "p",
        TENANT,
        json!({"containers": [{"name": "c", "image": "acme.azurecr.io/web:1"}],
               "imagePullSecrets": [{"name": "acr-pull"}, {"name": "nope-pull"}]}),
    );
    let r = review_by_person(mutating(), Mode::Validate, &pod);
    assert!(!r.allowed);
    assert!(r.message.contains("team-a/nope-pull"), "{}", r.message);
    assert!(r.message.contains("not found"), "{}", r.message);
    assert!(
        r.message.contains("spec.imagePullSecrets[1]"),
        "{}",
        r.message
    );
    assert!(!r.message.contains("acr-pull"), "{}", r.message);
}

#[test]
fn pull_secret_of_type_opaque_is_denied() {
    let deploy = workload(
        "Deployment",
        "d",
        TENANT,
        json!({"containers": [{"name": "c", "image": "nginx:1.27"}],
               "imagePullSecrets": [{"name": "app-config"}]}),
    );
    let r = review_by_person(mutating(), Mode::Validate, &deploy);
    assert!(!r.allowed);
    assert!(r.message.contains("team-a/app-config"), "{}", r.message);
    assert!(r.message.contains("Opaque"), "{}", r.message);
    assert!(
        r.message.contains("spec.template.spec.imagePullSecrets[0]"),
        "{}",
        r.message
    );
}

#[test]
fn existing_docker_config_pull_secrets_are_allowed() {
    let deploy = workload(
        "Deployment",
        "d",
        TENANT,
        json!({"containers": [{"name": "c", "image": "nginx:1.27"}],
               "imagePullSecrets": [{"name": "acr-pull"}, {"name": "regcred"}]}),
    );
    let r = review(mutating(), Mode::Validate, &deploy);
    assert!(r.allowed, "{}", r.message);
}

fn helm_release(values: Value) -> Value {
    json!({
        "apiVersion": "helm.toolkit.fluxcd.io/v2",
        "kind": "HelmRelease",
        "metadata": {"name": "shop", "namespace": TENANT},
        "spec": {
            "interval": "10m",
            "chart": {"spec": {"chart": "shop", "version": "1.x",
                               "sourceRef": {"kind": "HelmRepository", "name": "acme"}}},
            "values": values
        }
    })
}

#[test]
fn helm_release_values_naming_a_missing_pull_secret_are_denied() {
    let r = review_by_person(
        mutating(),
        Mode::Validate,
        &helm_release(json!({"global": {"imagePullSecrets": [{"name": "acr-pul"}]}})),
    );
    assert!(!r.allowed);
    assert!(r.message.contains("team-a/acr-pul"), "{}", r.message);
    assert!(
        r.message.contains("spec.values.global.imagePullSecrets[0]"),
        "{}",
        r.message
    );
    // Plain strings are names too.
    let r = review_by_person(
        mutating(),
        Mode::Validate,
        &helm_release(json!({"global": {"imagePullSecrets": ["acr-pull", "gone"]}})),
    );
    assert!(!r.allowed);
    assert!(r.message.contains("team-a/gone"), "{}", r.message);
    // Top-level `imagePullSecrets` values too.
    let r = review_by_person(
        mutating(),
        Mode::Validate,
        &helm_release(json!({"imagePullSecrets": [{"name": "app-config"}]})),
    );
    assert!(!r.allowed);
    assert!(r.message.contains("team-a/app-config"), "{}", r.message);
    assert!(
        r.message.contains("spec.values.imagePullSecrets[0]"),
        "{}",
        r.message
    );
    // The same release naming an existing pull secret passes.
    let r = review_by_person(
        mutating(),
        Mode::Validate,
        &helm_release(json!({"global": {"imagePullSecrets": [{"name": "acr-pull"}]}})),
    );
    assert!(r.allowed, "{}", r.message);
}

// ---------------------------------------------------------------------------------------------
// 4. Pod Security Standards through the engine.

#[test]
fn privileged_container_is_denied_at_baseline_naming_container_and_field() {
    let pod = workload(
        "Pod",
        "debug",
        PLAIN,
        json!({"containers": [
            {"name": "ok", "image": "nginx:1.27"},
            {"name": "debugger", "image": "busybox:1.36", "securityContext": {"privileged": true}}
        ]}),
    );
    let r = review(baseline(), Mode::Validate, &pod);
    assert!(!r.allowed);
    assert!(r.message.contains("pod-security-baseline"), "{}", r.message);
    assert!(
        r.message.contains("container \"debugger\""),
        "{}",
        r.message
    );
    assert!(
        r.message.contains("securityContext.privileged"),
        "{}",
        r.message
    );
    assert!(!r.message.contains("\"ok\""), "{}", r.message);
}

fn restricted_pod_spec() -> Value {
    json!({
        "securityContext": {"runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [{
            "name": "app", "image": "acme.azurecr.io/web:1",
            "securityContext": {"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}}
        }],
        "volumes": [{"name": "tmp", "emptyDir": {}}]
    })
}

#[test]
fn compliant_pod_is_allowed_at_restricted() {
    let pod = workload("Pod", "app", PLAIN, restricted_pod_spec());
    let r = review(restricted(), Mode::Validate, &pod);
    assert!(r.allowed, "{}", r.message);
    // ...and the same pod without its security contexts is not.
    let bare = workload(
        "Pod",
        "app",
        PLAIN,
        json!({"containers": [{"name": "app", "image": "acme.azurecr.io/web:1"}]}),
    );
    let r = review(restricted(), Mode::Validate, &bare);
    assert!(!r.allowed);
    assert!(r.message.contains("restricted:latest"), "{}", r.message);
}

#[test]
fn cronjob_is_checked_at_its_job_template() {
    let good = workload("CronJob", "nightly", PLAIN, restricted_pod_spec());
    let r = review(baseline(), Mode::Validate, &good);
    assert!(r.allowed, "{}", r.message);

    let mut bad_spec = restricted_pod_spec();
    bad_spec["hostNetwork"] = json!(true);
    bad_spec["containers"][0]["securityContext"]["privileged"] = json!(true);
    let bad = workload("CronJob", "nightly", PLAIN, bad_spec);
    let r = review(baseline(), Mode::Validate, &bad);
    assert!(!r.allowed);
    assert!(
        r.message.contains("spec.jobTemplate.spec.template.spec"),
        "{}",
        r.message
    );
    assert!(r.message.contains("container \"app\""), "{}", r.message);
    assert!(r.message.contains("hostNetwork"), "{}", r.message);
}

#[test]
fn overlay_output_passes_restricted_in_a_tenant_namespace() {
    for kind in KINDS {
        let obj = workload(
            kind,
            "w",
            TENANT,
            json!({"initContainers": [{"name": "init", "image": "busybox:1.36"}],
                   "containers": [{"name": "app", "image": "nginx:1.27"}]}),
        );
        assert!(
            !review(restricted(), Mode::Validate, &obj).allowed,
            "{kind}"
        );
        let mutated = mutate(restricted(), &obj);
        let r = review(restricted(), Mode::Validate, &mutated);
        assert!(r.allowed, "{kind}: {}", r.message);
    }
}

// ---------------------------------------------------------------------------------------------
// Protected metadata, through `engine::evaluate`, with policies that try to write it.

fn metadata_policy(overlay: &str) -> String {
    format!(
        r#"apiVersion: fluxadmit.io/v1alpha1
kind: DeploymentPolicy
metadata:
  name: touches-metadata
spec:
  action: Enforce
  match:
    resources:
      - apiGroups: [""]
        kinds: ["Pod"]
  rules:
    - name: stamp
      mutate:
        overlay:
{overlay}"#
    )
}

fn pod_with_server_metadata() -> Value {
    let mut pod = workload(
        "Pod",
        "p",
        PLAIN,
        json!({"containers": [{"name": "c", "image": "nginx:1.27"}]}),
    );
    let meta = pod["metadata"].as_object_mut().unwrap();
    meta.insert("resourceVersion".into(), json!("42"));
    meta.insert("creationTimestamp".into(), json!("2024-05-01T10:00:00Z"));
    meta.insert(
        "managedFields".into(),
        json!([{"manager": "kubectl", "operation": "Update", "apiVersion": "v1",
                "time": "2024-05-01T10:00:00Z", "fieldsType": "FieldsV1", "fieldsV1": {}}]),
    );
    pod
}

/// The engine's patch for `obj` under one inline policy, as JSON.
fn engine_patch(policy_yaml: &str, obj: &Value) -> Value {
    let policies = compile_yaml("inline.yaml", policy_yaml).unwrap();
    let view = load_dir(&[root().join("tests/fixtures/workloads/state")]).unwrap();
    let mut req = parse_review(&review_body(obj, PERSON, false)).unwrap();
    let out = evaluate(Mode::Mutate, &mut req, &policies, &view);
    assert_eq!(&req.object, obj, "the request comes back unchanged");
    assert!(out.verdict.allowed, "{}", out.verdict.message);
    serde_json::to_value(out.verdict.patch.expect("the overlay ran")).unwrap()
}

#[test]
fn overlay_writing_protected_metadata_only_patches_the_rest() {
    let policy = metadata_policy(
        r#"          metadata:
            labels:
              +(fluxadmit.io/mutated): "true"
            managedFields: []
            creationTimestamp: null
            resourceVersion: "1"
            +(generateName): "evil-"
"#,
    );
    let pod = pod_with_server_metadata();
    let patch = engine_patch(&policy, &pod);
    assert_eq!(
        patch,
        json!([{"op": "add", "path": "/metadata/labels/fluxadmit.io~1mutated", "value": "true"}])
    );
}

#[test]
fn overlay_removing_metadata_never_removes_protected_fields() {
    let pod = pod_with_server_metadata();
    let patch = engine_patch(&metadata_policy("          metadata: null\n"), &pod);
    let mutated = apply(&pod, &patch);
    for f in PROTECTED {
        assert_eq!(mutated.pointer(f), pod.pointer(f), "{f}: patch {patch}");
    }
}

// ---------------------------------------------------------------------------------------------
// 5. Properties of the mutating webhook over generated workloads.

fn arb_image() -> impl Strategy<Value = String> {
    prop_oneof![
        ("[a-z]{1,8}", 0u8..20).prop_map(|(r, v)| format!("{r}.azurecr.io/shop/web:1.{v}")),
        (0u8..20).prop_map(|v| format!("ghcr.io/acme/app:2.{v}")),
        Just("ghcr.io/acme/tools/cli@sha256:0f3b".to_owned()),
        Just("ghcr.io/other/app:1".to_owned()),
        Just("docker.io/library/nginx:1.27".to_owned()),
        Just("nginx:1.27".to_owned()),
        Just("bitnami/redis:7".to_owned()),
    ]
}

fn arb_seccomp() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(json!({})),
        Just(json!({"type": "RuntimeDefault"})),
        Just(json!({"type": "Unconfined"})),
        Just(json!({"type": "Localhost", "localhostProfile": "profiles/app.json"})),
    ]
}

fn arb_capabilities() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(json!({})),
        Just(json!({"drop": ["ALL"]})),
        Just(json!({"drop": []})),
        Just(json!({"add": ["NET_BIND_SERVICE"]})),
        Just(json!({"drop": ["NET_RAW"], "add": ["CHOWN"]})),
    ]
}

/// Inserts the `Some` fields into a map.
fn map_of(fields: Vec<(&str, Option<Value>)>) -> Value {
    Value::Object(
        fields
            .into_iter()
            .filter_map(|(k, v)| Some((k.to_owned(), v?)))
            .collect(),
    )
}

fn arb_container_sc() -> impl Strategy<Value = Option<Value>> {
    proptest::option::of(
        (
            proptest::option::of(any::<bool>()),
            proptest::option::of(any::<bool>()),
            proptest::option::of(any::<bool>()),
            proptest::option::of(0u32..70000),
            proptest::option::of(any::<bool>()),
            proptest::option::of(arb_capabilities()),
            proptest::option::of(arb_seccomp()),
        )
            .prop_map(|(ape, rorf, ranr, user, privileged, caps, seccomp)| {
                map_of(vec![
                    ("allowPrivilegeEscalation", ape.map(Value::from)),
                    ("readOnlyRootFilesystem", rorf.map(Value::from)),
                    ("runAsNonRoot", ranr.map(Value::from)),
                    ("runAsUser", user.map(Value::from)),
                    ("privileged", privileged.map(Value::from)),
                    ("capabilities", caps),
                    ("seccompProfile", seccomp),
                ])
            }),
    )
}

fn arb_pod_sc() -> impl Strategy<Value = Option<Value>> {
    proptest::option::of(
        (
            proptest::option::of(any::<bool>()),
            proptest::option::of(0u32..70000),
            proptest::option::of(0u32..70000),
            proptest::option::of(arb_seccomp()),
        )
            .prop_map(|(ranr, user, fs_group, seccomp)| {
                map_of(vec![
                    ("runAsNonRoot", ranr.map(Value::from)),
                    ("runAsUser", user.map(Value::from)),
                    ("fsGroup", fs_group.map(Value::from)),
                    ("seccompProfile", seccomp),
                ])
            }),
    )
}

fn arb_containers(
    prefix: &'static str,
    len: std::ops::RangeInclusive<usize>,
) -> impl Strategy<Value = Vec<Value>> {
    proptest::collection::vec((arb_image(), arb_container_sc()), len).prop_map(move |cs| {
        cs.into_iter()
            .enumerate()
            .map(|(i, (image, sc))| {
                let mut c = json!({"name": format!("{prefix}{i}"), "image": image});
                if let Some(sc) = sc {
                    c["securityContext"] = sc;
                }
                c
            })
            .collect()
    })
}

fn arb_pod_spec() -> impl Strategy<Value = Value> {
    (
        arb_containers("app", 1..=3),
        proptest::option::of(arb_containers("init", 0..=2)),
        arb_pod_sc(),
        proptest::option::of(
            proptest::sample::subsequence(vec!["regcred", "acr-pull", "ghcr-acme"], 0..=3)
                .prop_shuffle(),
        ),
    )
        .prop_map(|(containers, init, sc, pulls)| {
            let mut spec = json!({"containers": containers});
            if let Some(init) = init {
                spec["initContainers"] = Value::from(init);
            }
            if let Some(sc) = sc {
                spec["securityContext"] = sc;
            }
            if let Some(pulls) = pulls {
                spec["imagePullSecrets"] = pulls.into_iter().map(|n| json!({"name": n})).collect();
            }
            spec
        })
}

/// Metadata with the fields the webhook must never touch.
fn arb_metadata() -> impl Strategy<Value = Value> {
    (
        "[a-z]{1,10}",
        prop_oneof![4 => Just(TENANT), 1 => Just(PLAIN)],
        0u8..3,
        1u32..1_000_000,
        1u8..28,
    )
        .prop_map(|(name, ns, generate, rv, day)| {
            let mut meta = json!({
                "name": format!("w-{name}"),
                "namespace": ns,
                "labels": {"app.kubernetes.io/name": name, "toolkit.fluxcd.io/tenant": ns},
                "annotations": {"kustomize.toolkit.fluxcd.io/reconcile": "enabled"},
                "resourceVersion": rv.to_string(),
                "uid": "0b1e7f4e-2d6c-4d8e-9e55-6f7c3c1a9b20",
                "creationTimestamp": format!("2024-05-{day:02}T10:00:00Z"),
                "managedFields": [{
                    "manager": "kustomize-controller",
                    "operation": "Apply",
                    "apiVersion": "v1",
                    "time": format!("2024-05-{day:02}T10:00:01Z"),
                    "fieldsType": "FieldsV1",
                    "fieldsV1": {"f:metadata": {"f:labels": {"f:app.kubernetes.io/name": {}}}}
                }]
            });
            // 0: name only; 1: name and generateName; 2: generateName only (name assigned later).
            if generate > 0 {
                meta["generateName"] = json!("w-");
            }
            if generate == 2 {
                meta.as_object_mut().unwrap().remove("name");
            }
            meta
        })
}

fn arb_workload() -> impl Strategy<Value = Value> {
    (
        proptest::sample::select(KINDS.to_vec()),
        arb_metadata(),
        arb_pod_spec(),
    )
        .prop_map(|(kind, meta, spec)| workload_with_meta(kind, meta, spec))
}

fn escape(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

/// Every leaf (scalar or empty container) of `v` as (JSON pointer, value).
fn leaves(v: &Value, path: &str, out: &mut Vec<(String, Value)>) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, c) in m {
                leaves(c, &format!("{path}/{}", escape(k)), out);
            }
        }
        Value::Array(a) if !a.is_empty() => {
            for (i, c) in a.iter().enumerate() {
                leaves(c, &format!("{path}/{i}"), out);
            }
        }
        _ => out.push((path.to_owned(), v.clone())),
    }
}

/// `m` without the leaves in `remove`, dropping maps and lists that became empty and are not
/// in `x` (the object before mutation). `None` when `m` itself goes.
fn prune(x: Option<&Value>, m: &Value, path: &str, remove: &BTreeSet<String>) -> Option<Value> {
    match m {
        Value::Object(map) if !map.is_empty() => {
            let mut out = Map::new();
            for (k, v) in map {
                let p = format!("{path}/{}", escape(k));
                if let Some(v) = prune(x.and_then(|x| x.get(k)), v, &p, remove) {
                    out.insert(k.clone(), v);
                }
            }
            (!out.is_empty() || x.is_some()).then_some(Value::Object(out))
        }
        Value::Array(items) if !items.is_empty() => {
            let mut out = Vec::new();
            for (i, v) in items.iter().enumerate() {
                let p = format!("{path}/{i}");
                if let Some(v) = prune(x.and_then(|x| x.get(i)), v, &p, remove) {
                    out.push(v);
                }
            }
            (!out.is_empty() || x.is_some()).then_some(Value::Array(out))
        }
        _ => (!remove.contains(path)).then(|| m.clone()),
    }
}

/// `obj` with its pod spec's `imagePullSecrets` sorted by name. Kubernetes merges that list by
/// `name`, so its order carries no meaning; and it cannot be kept: once `acr-pull` (added first)
/// is removed from `[acr-pull, ghcr-acme]`, the object is indistinguishable from one naming
/// `ghcr-acme` in Git, where `acr-pull` must be appended, not inserted before an explicit entry.
fn pull_secrets_as_set(obj: &Value) -> Value {
    let mut out = obj.clone();
    let kind = obj["kind"].as_str().unwrap_or_default();
    let pointer = format!("{}/imagePullSecrets", pod_spec_pointer(kind));
    if let Some(list) = out.pointer_mut(&pointer).and_then(Value::as_array_mut) {
        list.sort_by_key(Value::to_string);
    }
    out
}

const PROTECTED: [&str; 4] = [
    "/metadata/managedFields",
    "/metadata/creationTimestamp",
    "/metadata/generateName",
    "/metadata/resourceVersion",
];

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 64,
        // Keep failures in the output only: this suite writes nothing into the source tree.
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn prop_same_body_gives_identical_bytes(x in arb_workload()) {
        let body = review_body(&x, FLUX_SA, false);
        let a = review_raw(mutating(), Mode::Mutate, &body).raw;
        let b = review_raw(mutating(), Mode::Mutate, &body).raw;
        let c = review_raw(mutating_again(), Mode::Mutate, &body).raw;
        prop_assert_eq!(&a, &b);
        prop_assert_eq!(&a, &c, "a separately loaded snapshot answers the same bytes");
    }

    #[test]
    fn prop_mutation_is_idempotent(x in arb_workload()) {
        let m = mutate(mutating(), &x);
        // Reviewed again as a CREATE, and as Flux's next apply (an UPDATE of the stored object).
        for old in [None, Some(&m)] {
            let again = review_raw(mutating(), Mode::Mutate, &review_body_op(&m, old, FLUX_SA, false));
            prop_assert!(again.allowed, "{}", again.message);
            prop_assert!(
                again.patch.as_ref().is_none_or(|p| p.as_array().is_some_and(Vec::is_empty)),
                "second pass (update: {}) patched: {:?}\nobject: {}", old.is_some(), again.patch, m
            );
        }
    }

    #[test]
    fn prop_stable_under_removal_of_added_fields(
        x in arb_workload(),
        mask in proptest::collection::vec(any::<bool>(), 48),
    ) {
        let m = mutate(mutating(), &x);
        let mut all = Vec::new();
        leaves(&m, "", &mut all);
        let added: Vec<String> = all
            .into_iter()
            .map(|(p, _)| p)
            .filter(|p| x.pointer(p).is_none())
            .collect();
        let remove: BTreeSet<String> = added
            .iter()
            .enumerate()
            .filter(|(i, _)| mask[i % mask.len()])
            .map(|(_, p)| p.clone())
            .collect();
        let partial = prune(Some(&x), &m, "", &remove).unwrap();
        let again = mutate(mutating(), &partial);
        prop_assert_eq!(
            pull_secrets_as_set(&again), pull_secrets_as_set(&m),
            "removed {:?}\npartial: {}", remove, partial
        );
    }

    #[test]
    fn prop_dry_run_answers_the_same_bytes(x in arb_workload()) {
        let wet = review_raw(mutating(), Mode::Mutate, &review_body(&x, FLUX_SA, false)).raw;
        let dry = review_raw(mutating(), Mode::Mutate, &review_body(&x, FLUX_SA, true)).raw;
        prop_assert_eq!(wet, dry);
    }

    #[test]
    fn prop_explicit_values_are_never_changed(x in arb_workload()) {
        let m = mutate(mutating(), &x);
        let mut explicit = Vec::new();
        leaves(&x, "", &mut explicit);
        for (p, v) in explicit {
            match &v {
                // An empty map or list may be filled in (a pull secret appended to `[]`), but
                // stays what it is.
                Value::Object(_) => prop_assert!(m.pointer(&p).is_some_and(Value::is_object), "{} changed", p),
                Value::Array(_) => prop_assert!(m.pointer(&p).is_some_and(Value::is_array), "{} changed", p),
                _ => prop_assert_eq!(m.pointer(&p), Some(&v), "{} changed", p),
            }
        }
    }

    #[test]
    fn prop_patch_ignores_the_requester_and_protected_metadata(x in arb_workload()) {
        let person = review_raw(mutating(), Mode::Mutate, &review_body(&x, PERSON, false));
        let flux = review_raw(mutating(), Mode::Mutate, &review_body(&x, FLUX_SA, false));
        prop_assert_eq!(&person.patch, &flux.patch);
        prop_assert_eq!(&person.raw, &flux.raw);
        for p in flux.patch.as_ref().map(op_paths).unwrap_or_default() {
            prop_assert!(
                !["", "/metadata"].contains(&p.as_str())
                    && !PROTECTED.iter().any(|f| p == *f || p.starts_with(&format!("{f}/"))),
                "patch touches {}", p
            );
        }
    }
}
