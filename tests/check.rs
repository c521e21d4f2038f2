//! `fluxadmit check` and `fluxadmit graph` over a repository directory.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::process::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn run(args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_fluxadmit"))
        .current_dir(root())
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn check_reports_cycles_missing_secrets_and_missing_dependencies() {
    let (code, out) = run(&["check", "--policies", "policies", "tests/fixtures/repo"]);
    assert_eq!(code, Some(1), "{out}");
    // One header line per file, in path order; its findings below it, by line.
    assert!(
        out.starts_with(
            "tests/fixtures/repo/apps/releases.yaml\n\
             \x20 1: HelmRelease apps/api error: flux-dependencies/depends-on: spec.dependsOn[0]: dependency cycle: apps/api → apps/worker → apps/api"
        ),
        "{out}"
    );
    assert!(out.contains("\n  9: HelmRelease apps/worker error: flux-referenced-secrets/referenced-secrets: spec.valuesFrom[0]: Secret apps/worker-values not found"), "{out}");
    assert!(out.contains("\ntests/fixtures/repo/apps/web.yaml\n  1: HelmRelease apps/web warning: flux-dependencies/depends-on: spec.dependsOn[0]: HelmRelease apps/cdn not found"), "{out}");
    let headers: Vec<&str> = out.lines().filter(|l| l.ends_with(".yaml")).collect();
    assert_eq!(
        headers,
        [
            "tests/fixtures/repo/apps/releases.yaml",
            "tests/fixtures/repo/apps/web.yaml"
        ],
        "{out}"
    );
    assert!(
        out.ends_with("checked 4 objects: 3 errors, 1 warning\n"),
        "{out}"
    );
    // Piped, not a terminal: no colour.
    assert!(!out.contains('\x1b'), "{out}");
}

#[test]
fn check_passes_a_clean_repository() {
    let (code, out) = run(&["check", "--policies", "policies", "examples/state"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("0 errors, 0 warnings"), "{out}");
}

#[test]
fn graph_prints_install_waves_or_the_cycle() {
    let (code, out) = run(&["graph", "examples/state"]);
    assert_eq!(code, Some(0));
    assert_eq!(
        out,
        "wave 1: apps/database, flux-system/kyverno, monitoring/kube-prometheus-stack\nwave 2: apps/cache\nwave 3: apps/api\nwave 4: apps/frontend\n"
    );
    let (_, out) = run(&["graph", "tests/fixtures/repo"]);
    assert!(
        out.contains("cycle: apps/api → apps/worker → apps/api"),
        "{out}"
    );
    let (_, out) = run(&[
        "graph",
        "--kind",
        "kustomization",
        "--format",
        "dot",
        "examples/state",
    ]);
    assert!(out.starts_with("digraph"), "{out}");
    assert!(out.contains("flux-system/infra-controllers"), "{out}");
}
