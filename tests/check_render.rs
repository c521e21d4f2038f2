//! `fluxadmit check` and `graph` on repositories laid out as Flux users lay them out: kustomize
//! overlays built with a real kustomize, Flux Kustomizations followed with their patches,
//! target namespace and post-build substitution, one world per cluster.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{baseline_policy, kustomize, run_in, write};
use std::path::Path;

const DEPLOYMENT: &str = "apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
        - name: web
          image: ghcr.io/example/web:1.0.0
";

/// A base and a production overlay whose patch makes the container privileged.
fn overlay_repo(root: &Path) {
    write(
        root,
        "apps/base/kustomization.yaml",
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nnamespace: web\nresources: [deployment.yaml]\n",
    );
    write(root, "apps/base/deployment.yaml", DEPLOYMENT);
    write(
        root,
        "apps/production/kustomization.yaml",
        "apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources: [../base]
patches:
  - target: {kind: Deployment, name: web}
    patch: |
      - op: add
        path: /spec/template/spec/containers/0/securityContext
        value: {privileged: true}
",
    );
}

#[test]
fn a_privileged_container_made_by_an_overlay_patch_is_caught_through_the_overlay() {
    let Some(_) = kustomize() else { return };
    let tmp = tempfile::tempdir().unwrap();
    overlay_repo(tmp.path());
    let pol = baseline_policy();
    let args = |p: &'static str| {
        ["check", "--policies", "builtin", "--policies", &pol, p].map(String::from)
    };
    let out = run_in(
        tmp.path(),
        &args("apps/production").each_ref().map(String::as_str),
        None,
        &[],
    );
    assert_eq!(out.code, Some(1), "{}{}", out.stdout, out.stderr);
    assert!(
        out.stdout
            .contains("Deployment web/web error: pod-security-baseline/baseline"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("privileged"), "{}", out.stdout);
    // The base alone, built the same way, is clean.
    let out = run_in(
        tmp.path(),
        &args("apps/base").each_ref().map(String::as_str),
        None,
        &[],
    );
    assert_eq!(out.code, Some(0), "{}{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains("checked 1 object: 0 errors"),
        "{}",
        out.stdout
    );
}

/// A repository with one cluster: flux-system's Kustomization points at the cluster
/// directory, which holds Kustomizations for apps with substitution and patches.
fn cluster_repo(root: &Path, cluster: &str, apps_path: &str, extra_ks: &str) {
    write(root, ".git/HEAD", "ref: refs/heads/main\n");
    write(
        root,
        &format!("clusters/{cluster}/flux-system/gotk-sync.yaml"),
        &format!(
            "apiVersion: source.toolkit.fluxcd.io/v1
kind: GitRepository
metadata: {{name: flux-system, namespace: flux-system}}
spec: {{interval: 1m, url: https://example.com/fleet.git, ref: {{branch: main}}}}
---
apiVersion: kustomize.toolkit.fluxcd.io/v1
kind: Kustomization
metadata: {{name: flux-system, namespace: flux-system}}
spec:
  interval: 10m
  path: ./clusters/{cluster}
  prune: true
  sourceRef: {{kind: GitRepository, name: flux-system}}
"
        ),
    );
    write(
        root,
        &format!("clusters/{cluster}/flux-system/kustomization.yaml"),
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources: [gotk-sync.yaml]\n",
    );
    write(
        root,
        &format!("clusters/{cluster}/apps.yaml"),
        &format!(
            "apiVersion: kustomize.toolkit.fluxcd.io/v1
kind: Kustomization
metadata: {{name: apps, namespace: flux-system}}
spec:
  interval: 10m
  path: {apps_path}
  prune: true
  sourceRef: {{kind: GitRepository, name: flux-system}}
  targetNamespace: apps
  postBuild:
    substitute: {{APP: api, CLUSTER: {cluster}}}
{extra_ks}"
        ),
    );
}

const RELEASES: &str = "apiVersion: helm.toolkit.fluxcd.io/v2
kind: HelmRelease
metadata:
  name: ${APP}
spec:
  interval: 10m
  chart:
    spec: {chart: api, sourceRef: {kind: HelmRepository, name: charts, namespace: flux-system}}
  dependsOn:
    - name: ${DATABASE:=postgres}
---
apiVersion: helm.toolkit.fluxcd.io/v2
kind: HelmRelease
metadata:
  name: postgres
spec:
  interval: 10m
  chart:
    spec: {chart: postgres, sourceRef: {kind: HelmRepository, name: charts, namespace: flux-system}}
";

#[test]
fn kustomizations_are_followed_with_target_namespace_and_substitution() {
    let Some(_) = kustomize() else { return };
    let tmp = tempfile::tempdir().unwrap();
    cluster_repo(tmp.path(), "production", "./apps", "");
    write(tmp.path(), "apps/releases.yaml", RELEASES);
    let out = run_in(tmp.path(), &["check", "."], None, &[]);
    // `${APP}` became `api` and `${DATABASE:=postgres}` its default, both in namespace
    // `apps`: the dependency is found, nothing is reported.
    assert_eq!(out.code, Some(0), "{}{}", out.stdout, out.stderr);
    assert!(!out.stdout.contains("not found"), "{}", out.stdout);
    assert!(!out.stdout.contains("${"), "{}", out.stdout);

    // The default names a release that does not exist: reported on the substituted object,
    // with the Kustomization that applies it.
    write(
        tmp.path(),
        "apps/releases.yaml",
        &RELEASES.replace("${DATABASE:=postgres}", "${DATABASE:=mysql}"),
    );
    let out = run_in(tmp.path(), &["check", "."], None, &[]);
    assert!(
        out.stdout.contains("HelmRelease apps/api warning: flux-dependencies/depends-on: spec.dependsOn[0]: HelmRelease apps/mysql not found"),
        "{}{}",
        out.stdout,
        out.stderr
    );
    assert!(
        out.stdout.contains("Kustomization flux-system/apps"),
        "{}",
        out.stdout
    );

    // graph draws what Flux would see: the substituted names in the target namespace.
    let out = run_in(tmp.path(), &["graph", "."], None, &[]);
    assert!(
        out.stdout.contains("apps/api"),
        "{}{}",
        out.stdout,
        out.stderr
    );
}

#[test]
fn two_clusters_are_two_worlds() {
    let Some(_) = kustomize() else { return };
    let tmp = tempfile::tempdir().unwrap();
    // The same Kustomization names in both clusters; a cycle only in staging.
    cluster_repo(tmp.path(), "production", "./apps/production", "");
    cluster_repo(tmp.path(), "staging", "./apps/staging", "");
    write(tmp.path(), "apps/production/releases.yaml", RELEASES);
    write(
        tmp.path(),
        "apps/staging/releases.yaml",
        &format!("{RELEASES}  dependsOn:\n    - name: api\n"),
    );
    let out = run_in(tmp.path(), &["check", "."], None, &[]);
    assert_eq!(out.code, Some(1), "{}{}", out.stdout, out.stderr);
    let cycles: Vec<&str> = out
        .stdout
        .lines()
        .filter(|l| l.contains("dependency cycle"))
        .collect();
    assert!(!cycles.is_empty(), "{}", out.stdout);
    assert!(out.stdout.contains("clusters/staging"), "{}", out.stdout);
    assert!(!out.stdout.contains("duplicate"), "{}", out.stdout);
    // Each world alone.
    let out = run_in(
        tmp.path(),
        &["check", "--cluster", "clusters/production"],
        None,
        &[],
    );
    assert_eq!(out.code, Some(0), "{}{}", out.stdout, out.stderr);
    let out = run_in(
        tmp.path(),
        &["check", "--cluster", "clusters/staging"],
        None,
        &[],
    );
    assert_eq!(out.code, Some(1), "{}{}", out.stdout, out.stderr);
    // graph: one section per cluster.
    let out = run_in(tmp.path(), &["graph", "."], None, &[]);
    assert!(
        out.stdout.contains("# clusters/production"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("# clusters/staging"), "{}", out.stdout);
    assert!(
        out.stdout
            .contains("cycle: apps/api → apps/postgres → apps/api"),
        "{}",
        out.stdout
    );
    // The diagrams mark the cycle, in staging's section only.
    let out = run_in(
        tmp.path(),
        &["graph", ".", "--format", "mermaid"],
        None,
        &[],
    );
    let (production, staging) = out
        .stdout
        .split_once("%% clusters/staging")
        .expect("a staging section after production's");
    assert!(!production.contains("cycle"), "{}", out.stdout);
    assert!(
        staging.contains("%% cycle: apps/api → apps/postgres → apps/api")
            && staging.contains("class ")
            && staging.contains(" cycle\n")
            && staging.contains("linkStyle "),
        "{}",
        out.stdout
    );
    let out = run_in(tmp.path(), &["graph", ".", "--format", "dot"], None, &[]);
    assert!(
        out.stdout
            .contains("\"apps/api\" -> \"apps/postgres\" [color=red, penwidth=2];"),
        "{}",
        out.stdout
    );
}

#[test]
fn files_that_are_not_kubernetes_objects_are_skipped() {
    let tmp = tempfile::tempdir().unwrap();
    write(tmp.path(), "apps/deployment.yaml", DEPLOYMENT);
    write(
        tmp.path(),
        "apps/config.yml",
        "sonarr:\n  api_key: !env_var SONARR_API_KEY\n",
    );
    write(
        tmp.path(),
        "apps/values.yaml",
        "replicaCount: 2\nimage:\n  tag: 1.0.0\n",
    );
    write(tmp.path(), "apps/broken.yaml", "a: [1, 2\n");
    write(
        tmp.path(),
        ".sops.yaml",
        "creation_rules:\n  - path_regex: .*.yaml\n    age: age1xyz\n",
    );
    let out = run_in(tmp.path(), &["check", "-v", "."], None, &[("PATH", "")]);
    assert_eq!(out.code, Some(0), "{}{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("checked 1 object"), "{}", out.stdout);
    // -v lists what was skipped and why.
    assert!(
        out.stderr
            .contains("apps/values.yaml: not a Kubernetes manifest"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("apps/broken.yaml"), "{}", out.stderr);
    assert!(!out.stderr.contains(".sops.yaml"), "{}", out.stderr);
}

#[test]
fn a_cycle_across_files_and_stdin() {
    let tmp = tempfile::tempdir().unwrap();
    let release = |name: &str, dep: &str| {
        format!(
            "apiVersion: helm.toolkit.fluxcd.io/v2\nkind: HelmRelease\nmetadata: {{name: {name}, namespace: apps}}\nspec:\n  chart: {{spec: {{chart: x, sourceRef: {{kind: HelmRepository, name: r}}}}}}\n  dependsOn: [{{name: {dep}}}]\n"
        )
    };
    write(tmp.path(), "a/one.yaml", &release("one", "two"));
    write(tmp.path(), "b/two.yaml", &release("two", "one"));
    let out = run_in(tmp.path(), &["check", "."], None, &[]);
    assert_eq!(out.code, Some(1), "{}{}", out.stdout, out.stderr);
    assert!(
        out.stdout
            .contains("dependency cycle: apps/one → apps/two → apps/one"),
        "{}",
        out.stdout
    );
    // The same objects as one stream on stdin.
    let stream = format!("{}---\n{}", release("one", "two"), release("two", "one"));
    let out = run_in(tmp.path(), &["check", "-"], Some(&stream), &[]);
    assert_eq!(out.code, Some(1), "{}{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("<stdin>"), "{}", out.stdout);
    assert!(out.stdout.contains("dependency cycle"), "{}", out.stdout);
    let out = run_in(tmp.path(), &["check", "-"], Some("a: [\n"), &[]);
    assert_eq!(out.code, Some(2), "{}{}", out.stdout, out.stderr);
}

#[test]
fn without_kustomize_check_reads_raw_files_and_says_so_once() {
    let tmp = tempfile::tempdir().unwrap();
    overlay_repo(tmp.path());
    let out = run_in(tmp.path(), &["check", "apps"], None, &[("PATH", "")]);
    assert_eq!(out.code, Some(0), "{}{}", out.stdout, out.stderr);
    let notes: Vec<&str> = out
        .stdout
        .lines()
        .filter(|l| l.contains("no kustomize"))
        .collect();
    assert_eq!(notes.len(), 1, "{}", out.stdout);
    assert!(notes[0].contains("2 directories"), "{}", out.stdout);
}

#[test]
fn kustomizations_from_other_sources_are_noted_not_followed() {
    let tmp = tempfile::tempdir().unwrap();
    write(
        tmp.path(),
        "clusters/prod/infra.yaml",
        "apiVersion: kustomize.toolkit.fluxcd.io/v1\nkind: Kustomization\nmetadata: {name: infra, namespace: flux-system}\nspec:\n  path: ./deploy\n  sourceRef: {kind: OCIRepository, name: platform}\n",
    );
    let out = run_in(tmp.path(), &["check", "clusters"], None, &[]);
    assert_eq!(out.code, Some(0), "{}{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains("Kustomization flux-system/infra not followed: source OCIRepository flux-system/platform is not this repository"),
        "{}",
        out.stdout
    );
}
