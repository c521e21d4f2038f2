//! `fluxadmit review` on a plain manifest, as a new user tries it: YAML wrapped as a person's
//! CREATE, `--operation update --old`, `--dry-run`, and the exit code of each answer.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::{Command, Output};

fn review(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fluxadmit"))
        .current_dir(dir)
        .arg("review")
        .args(args)
        .output()
        .unwrap()
}

fn answer(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)))
}

const RELEASE: &str = "apiVersion: helm.toolkit.fluxcd.io/v2
kind: HelmRelease
metadata: {name: podinfo, namespace: apps}
spec:
  interval: 10m
  chart: {spec: {chart: podinfo, sourceRef: {kind: HelmRepository, name: podinfo}}}
  valuesFrom: [{kind: Secret, name: podinfo-values}]
";

#[test]
fn a_plain_manifest_is_reviewed_as_a_persons_create() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("hr.yaml"), RELEASE).unwrap();
    let out = review(dir.path(), &["hr.yaml"]);
    assert_eq!(out.status.code(), Some(1), "a denial exits 1");
    let v = answer(&out);
    assert_eq!(v["response"]["allowed"], false);
    assert!(
        v["response"]["status"]["message"]
            .as_str()
            .unwrap()
            .contains("Secret apps/podinfo-values not found"),
        "{v}"
    );
    // The same as a dry run: a warning, exit 0.
    let out = review(dir.path(), &["--dry-run", "hr.yaml"]);
    assert_eq!(out.status.code(), Some(0));
    let v = answer(&out);
    assert_eq!(v["response"]["allowed"], true);
    assert!(
        v["response"]["warnings"][0]
            .as_str()
            .unwrap()
            .contains("a dry run"),
        "{v}"
    );
}

#[test]
fn an_update_needs_the_old_object_and_spares_what_it_already_had() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("old.yaml"), RELEASE).unwrap();
    std::fs::write(dir.path().join("new.yaml"), RELEASE.replace("10m", "5m")).unwrap();
    let out = review(dir.path(), &["--operation", "update", "new.yaml"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--old"));
    let out = review(
        dir.path(),
        &["--operation", "update", "--old", "old.yaml", "new.yaml"],
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let v = answer(&out);
    assert!(
        v["response"]["warnings"][0]
            .as_str()
            .unwrap()
            .contains("already had this violation"),
        "{v}"
    );
}

#[test]
fn unreadable_input_exits_2_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("notes.yaml"), "just: [a, list\n").unwrap();
    let out = review(dir.path(), &["notes.yaml"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("notes.yaml"));
    std::fs::write(
        dir.path().join("two.yaml"),
        format!("{RELEASE}---\n{RELEASE}"),
    )
    .unwrap();
    let out = review(dir.path(), &["two.yaml"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("2 objects"));
    let out = review(dir.path(), &["missing.yaml"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("reading missing.yaml"));
}

#[test]
fn a_policy_that_can_never_match_says_so_at_load() {
    let dir = tempfile::tempdir().unwrap();
    // A plural kind: loads (it could be a custom resource's), with a warning naming the field.
    std::fs::write(
        dir.path().join("labels.yaml"),
        "apiVersion: fluxadmit.io/v1alpha1\nkind: DeploymentPolicy\nmetadata: {name: labels}\n\
         spec:\n  match: {resources: [{apiGroups: [apps], kinds: [Deployments]}]}\n\
         \x20 rules: [{name: team, requiredLabels: {labels: [team]}}]\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_fluxadmit"))
        .current_dir(dir.path())
        .args(["policies", "--policies", "labels.yaml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("warning: labels.yaml: policy \"labels\": spec.match.resources[0].kinds[0]")
            && err.contains("did you mean \"Deployment\""),
        "{err}"
    );
    // A pod security rule matched only to HelmReleases: refused, naming the rule.
    std::fs::write(
        dir.path().join("pss.yaml"),
        "apiVersion: fluxadmit.io/v1alpha1\nkind: DeploymentPolicy\nmetadata: {name: pss}\n\
         spec:\n  match: {resources: [{apiGroups: [helm.toolkit.fluxcd.io], kinds: [HelmRelease]}]}\n\
         \x20 rules: [{name: r, podSecurity: {level: restricted}}]\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_fluxadmit"))
        .current_dir(dir.path())
        .args(["check", "--policies", "pss.yaml", "."])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("pss.yaml: policy \"pss\": spec.rules[0].podSecurity")
            && err.contains("never run"),
        "{err}"
    );
}
