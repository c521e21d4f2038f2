//! HelmReleases that name their chart through `spec.chartRef` (an OCIRepository or a HelmChart)
//! match `match.charts` and get their `requiredSecrets` checked, as the classic
//! `spec.chart.spec.chart` form does: through `Snapshot::review` and through `fluxadmit check`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use fluxadmit_core::cluster::ClusterView;
use fluxadmit_core::engine::Mode;
use fluxadmit_core::policy::load::compile_yaml;
use fluxadmit_core::state::Snapshot;
use serde_json::{Value, json};
use std::path::PathBuf;
use std::process::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

const POLICY: &str = "tests/fixtures/chartref/policy.yaml";

fn oci_repository(ns: &str, name: &str, url: &str) -> Value {
    json!({"apiVersion": "source.toolkit.fluxcd.io/v1", "kind": "OCIRepository",
           "metadata": {"name": name, "namespace": ns},
           "spec": {"interval": "15m", "url": url, "ref": {"tag": "4.1.2"},
                    "layerSelector": {"mediaType": "application/vnd.cncf.helm.chart.content.v1.tar+gzip", "operation": "copy"}}})
}

fn helm_chart(ns: &str, name: &str, chart: &str) -> Value {
    json!({"apiVersion": "source.toolkit.fluxcd.io/v1", "kind": "HelmChart",
           "metadata": {"name": name, "namespace": ns},
           "spec": {"chart": chart, "version": "4.x", "interval": "1h",
                    "sourceRef": {"kind": "HelmRepository", "name": "bjw-s"}}})
}

fn secret(ns: &str, name: &str, keys: &[&str]) -> Value {
    let data: serde_json::Map<String, Value> = keys
        .iter()
        .map(|k| ((*k).to_owned(), json!("dg==")))
        .collect();
    json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": ns},
           "type": "Opaque", "data": data})
}

/// The policy of the fixture, over a view holding:
/// - apps: OCIRepository app-template (app-template), OCIRepository podinfo (podinfo),
///   HelmChart app-template-chart (app-template); no Secret.
/// - media: OCIRepository app-template, and the Secret app-token with its key.
/// - flux-system: OCIRepository shared-app-template (app-template).
fn snapshot() -> Snapshot {
    let text = std::fs::read_to_string(root().join(POLICY)).unwrap();
    let policies = compile_yaml(POLICY, &text).unwrap();
    let mut view = ClusterView::default();
    for obj in [
        oci_repository(
            "apps",
            "app-template",
            "oci://ghcr.io/bjw-s-labs/helm/app-template",
        ),
        oci_repository(
            "apps",
            "podinfo",
            "oci://ghcr.io/stefanprodan/charts/podinfo",
        ),
        helm_chart("apps", "app-template-chart", "app-template"),
        oci_repository(
            "media",
            "app-template",
            "oci://ghcr.io/bjw-s-labs/helm/app-template",
        ),
        secret("media", "app-token", &["token"]),
        oci_repository(
            "flux-system",
            "shared-app-template",
            "oci://ghcr.io/bjw-s-labs/helm/app-template/",
        ),
    ] {
        assert!(view.add_manifest(&obj), "{obj}");
    }
    Snapshot { policies, view }
}

/// A HelmRelease in `ns` with `spec.chartRef`, and no Flux ownership labels.
fn release(ns: &str, name: &str, chart_ref: Value) -> Value {
    json!({"apiVersion": "helm.toolkit.fluxcd.io/v2", "kind": "HelmRelease",
           "metadata": {"name": name, "namespace": ns, "labels": {"app.kubernetes.io/name": name}},
           "spec": {"interval": "1h", "chartRef": chart_ref,
                    "values": {"controllers": {name: {"containers": {"app": {"image": {"repository": "ghcr.io/x/y", "tag": "1"}}}}}}}})
}

/// A real write (dryRun false) by a person, not by a Flux controller.
fn review_body(obj: &Value) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": "c4a1f0de-chartref",
            "kind": {"group": "helm.toolkit.fluxcd.io", "version": "v2", "kind": "HelmRelease"},
            "resource": {"group": "helm.toolkit.fluxcd.io", "version": "v2", "resource": "helmreleases"},
            "name": obj["metadata"]["name"], "namespace": obj["metadata"]["namespace"],
            "operation": "CREATE", "userInfo": {"username": "alice@example.com"},
            "object": obj, "dryRun": false
        }
    }))
    .unwrap()
}

struct Reviewed {
    allowed: bool,
    message: String,
    matched: usize,
    findings: Vec<String>,
}

fn validate(snap: &Snapshot, obj: &Value) -> Reviewed {
    let a = snap.review(Mode::Validate, &review_body(obj)).unwrap();
    let v: Value = serde_json::from_slice(&a.body).unwrap();
    assert_eq!(v["response"]["uid"], "c4a1f0de-chartref");
    Reviewed {
        allowed: v["response"]["allowed"].as_bool().unwrap(),
        message: v["response"]["status"]["message"]
            .as_str()
            .unwrap_or("")
            .to_owned(),
        matched: a.outcome.matched,
        findings: a.outcome.findings.iter().map(ToString::to_string).collect(),
    }
}

#[test]
fn chart_ref_to_an_oci_repository_without_its_secret_is_denied() {
    let snap = snapshot();
    let hr = release(
        "apps",
        "echo",
        json!({"kind": "OCIRepository", "name": "app-template"}),
    );
    let r = validate(&snap, &hr);
    assert_eq!(
        r.matched, 1,
        "the policy matches chart app-template: {:?}",
        r.findings
    );
    assert!(!r.allowed, "expected a denial; findings {:?}", r.findings);
    assert!(r.message.contains("apps/app-token"), "{}", r.message);
    assert!(
        r.findings
            .iter()
            .any(|f| f.starts_with("app-template-secrets/app-token: ")
                && f.contains("apps/app-token")),
        "{:?}",
        r.findings
    );
}

#[test]
fn chart_ref_in_another_namespace_resolves_there() {
    // The source is in flux-system; the Secret is still looked for in the release's namespace.
    let snap = snapshot();
    let hr = release(
        "apps",
        "echo",
        json!({"kind": "OCIRepository", "name": "shared-app-template", "namespace": "flux-system"}),
    );
    let r = validate(&snap, &hr);
    assert_eq!(r.matched, 1, "{:?}", r.findings);
    assert!(!r.allowed, "{:?}", r.findings);
    assert!(r.message.contains("apps/app-token"), "{}", r.message);
}

#[test]
fn chart_ref_with_its_secret_present_is_allowed() {
    let snap = snapshot();
    let hr = release(
        "media",
        "jellyfin",
        json!({"kind": "OCIRepository", "name": "app-template"}),
    );
    let r = validate(&snap, &hr);
    assert_eq!(
        r.matched, 1,
        "the policy must match for this to say anything: {:?}",
        r.findings
    );
    assert!(r.allowed, "{}", r.message);
    assert!(r.findings.is_empty(), "{:?}", r.findings);
}

#[test]
fn chart_ref_to_another_chart_does_not_match() {
    let snap = snapshot();
    let hr = release(
        "apps",
        "podinfo",
        json!({"kind": "OCIRepository", "name": "podinfo"}),
    );
    let r = validate(&snap, &hr);
    assert_eq!(r.matched, 0, "{:?}", r.findings);
    assert!(r.allowed, "{}", r.message);
    assert!(r.findings.is_empty(), "{:?}", r.findings);
}

#[test]
fn chart_ref_to_a_source_the_view_lacks_does_not_match() {
    let snap = snapshot();
    for chart_ref in [
        json!({"kind": "OCIRepository", "name": "not-there"}),
        json!({"kind": "OCIRepository", "name": "app-template", "namespace": "elsewhere"}),
        json!({"kind": "GitRepository", "name": "app-template"}),
    ] {
        let hr = release("apps", "echo", chart_ref.clone());
        let r = validate(&snap, &hr);
        assert_eq!(r.matched, 0, "{chart_ref}: {:?}", r.findings);
        assert!(r.allowed, "{chart_ref}: {}", r.message);
    }
}

#[test]
fn chart_ref_to_a_helm_chart_is_checked_too() {
    let snap = snapshot();
    let hr = release(
        "apps",
        "echo",
        json!({"kind": "HelmChart", "name": "app-template-chart"}),
    );
    let r = validate(&snap, &hr);
    assert_eq!(r.matched, 1, "{:?}", r.findings);
    assert!(!r.allowed, "{:?}", r.findings);
    assert!(r.message.contains("apps/app-token"), "{}", r.message);
}

#[test]
fn the_classic_chart_form_still_matches() {
    let snap = snapshot();
    let hr = json!({"apiVersion": "helm.toolkit.fluxcd.io/v2", "kind": "HelmRelease",
        "metadata": {"name": "echo", "namespace": "apps"},
        "spec": {"interval": "1h", "chart": {"spec": {"chart": "app-template", "version": "4.1.2",
                 "sourceRef": {"kind": "HelmRepository", "name": "bjw-s", "namespace": "flux-system"}}}}});
    let r = validate(&snap, &hr);
    assert_eq!(r.matched, 1, "{:?}", r.findings);
    assert!(!r.allowed, "{:?}", r.findings);
    assert!(r.message.contains("apps/app-token"), "{}", r.message);
}

#[test]
fn check_resolves_chart_ref_through_the_repository() {
    let out = Command::new(env!("CARGO_BIN_EXE_fluxadmit"))
        .current_dir(root())
        .args([
            "check",
            "--policies",
            POLICY,
            "tests/fixtures/chartref/repo",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    let finding = stdout
        .lines()
        .find(|l| l.contains("HelmRelease apps/echo error: app-template-secrets/app-token: "))
        .unwrap_or_else(|| panic!("no finding on apps/echo:\n{stdout}"));
    assert!(
        stdout
            .lines()
            .any(|l| l == "tests/fixtures/chartref/repo/apps/echo/helmrelease.yaml"),
        "the finding is not under its file:\n{stdout}"
    );
    assert!(finding.contains("Secret apps/app-token"), "{finding}");
    // jellyfin has its Secret in the repository; podinfo is another chart.
    // (The summary's notes name charts it could not render; findings are the other lines.)
    let findings: Vec<&str> = stdout.lines().filter(|l| !l.starts_with("note:")).collect();
    assert!(!findings.iter().any(|l| l.contains("jellyfin")), "{stdout}");
    assert!(
        !findings
            .iter()
            .any(|l| l.contains("HelmRelease apps/podinfo")),
        "{stdout}"
    );
    assert!(
        stdout.contains("checked 7 objects: 1 error, 0 warnings"),
        "{stdout}"
    );
}
