//! `fluxadmit check` evaluates as the cluster does: the mutating webhook first, then the
//! validating webhook on the mutated object.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Kyverno-style defaults (`+()`: only where absent) that make a plain pod template meet the
/// restricted Pod Security Standard. Enforce, every namespace.
const MUTATE: &str = r#"apiVersion: fluxadmit.io/v1alpha1
kind: DeploymentPolicy
metadata:
  name: security-context-defaults
spec:
  action: Enforce
  match:
    resources:
      - apiGroups: ["apps"]
        kinds: ["Deployment"]
  rules:
    - name: defaults
      mutate:
        target: PodTemplate
        overlay:
          spec:
            securityContext:
              +(runAsNonRoot): true
              +(seccompProfile):
                +(type): RuntimeDefault
            containers:
              - (name): "*"
                securityContext:
                  +(allowPrivilegeEscalation): false
                  +(capabilities):
                    +(drop): ["ALL"]
                  +(runAsNonRoot): true
"#;

/// Compliant only once the defaults are added: no securityContext at all.
const PLAIN: &str = r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: apps
spec:
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
        - name: nginx
          image: nginxinc/nginx-unprivileged:1.27
"#;

/// Still non-compliant after the defaults: privileged is set, and `+()` never overwrites.
const PRIVILEGED: &str = r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: agent
  namespace: apps
spec:
  selector:
    matchLabels: {app: agent}
  template:
    metadata:
      labels: {app: agent}
    spec:
      containers:
        - name: agent
          image: ghcr.io/example/agent:2.0
          securityContext:
            privileged: true
"#;

struct Setup {
    _dir: tempfile::TempDir,
    mutate: PathBuf,
    restricted: PathBuf,
    repo: PathBuf,
}

fn setup(deployments: &[(&str, &str)]) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let mutate = dir.path().join("security-context-defaults.yaml");
    std::fs::write(&mutate, MUTATE).unwrap();
    let restricted = dir.path().join("pod-security-restricted.yaml");
    std::fs::copy(
        root().join("policies/examples/pod-security-restricted.yaml"),
        &restricted,
    )
    .unwrap();
    let repo = dir.path().join("repo");
    std::fs::create_dir(&repo).unwrap();
    for (file, text) in deployments {
        std::fs::write(repo.join(file), text).unwrap();
    }
    Setup {
        _dir: dir,
        mutate,
        restricted,
        repo,
    }
}

fn check(policies: &[&Path], repo: &Path) -> (Option<i32>, String) {
    let policies: Vec<String> = policies.iter().map(|p| p.display().to_string()).collect();
    let out = Command::new(env!("CARGO_BIN_EXE_fluxadmit"))
        .env_remove("FLUXADMIT_POLICIES")
        .env_remove("FLUXADMIT_STATE")
        .arg("check")
        .arg("--policies")
        .arg(policies.join(","))
        .arg(repo)
        .output()
        .unwrap();
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.code(), text)
}

#[test]
fn a_deployment_compliant_after_mutation_passes() {
    let s = setup(&[("web.yaml", PLAIN)]);
    let (code, out) = check(&[&s.mutate, &s.restricted], &s.repo);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("checked 1 object: 0 errors, 0 warnings"),
        "{out}"
    );

    // Without the mutating policy the same Deployment fails: the pass above is the mutation's.
    let (code, out) = check(&[&s.restricted], &s.repo);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("Deployment apps/web error: pod-security-restricted/restricted:"),
        "{out}"
    );
    assert!(out.contains("runAsNonRoot"), "{out}");
}

#[test]
fn a_deployment_still_non_compliant_after_mutation_is_an_error() {
    let s = setup(&[("agent.yaml", PRIVILEGED), ("web.yaml", PLAIN)]);
    let (code, out) = check(&[&s.mutate, &s.restricted], &s.repo);
    assert_eq!(code, Some(1), "{out}");
    let agent: Vec<&str> = out
        .lines()
        .filter(|l| l.contains("Deployment apps/agent"))
        .collect();
    assert_eq!(agent.len(), 1, "one finding, reported once: {out}");
    assert!(
        agent[0].contains("error: pod-security-restricted/restricted:")
            && agent[0].contains("privileged"),
        "{out}"
    );
    // What the mutation fixed is not reported: only privileged is left.
    assert!(!agent[0].contains("runAsNonRoot"), "{out}");
    assert!(!agent[0].contains("seccompProfile"), "{out}");
    assert!(!out.contains("Deployment apps/web"), "{out}");
    assert!(
        out.contains("checked 2 objects: 1 error, 0 warnings"),
        "{out}"
    );
}
