//! `fluxadmit check --format json|sarif` and `--strict`: what scripts and GitHub code scanning
//! read, and the exit codes CI relies on.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::Out;
use serde_json::Value;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn run(args: &[&str]) -> Out {
    common::output(
        common::fluxadmit(&root())
            .env_remove("FLUXADMIT_POLICIES")
            .env_remove("FLUXADMIT_STATE")
            .arg("check")
            .args(["--policies", "policies"])
            .args(args),
        None,
    )
}

fn parse(out: &Out) -> Value {
    serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}):\n{}{}", out.stdout, out.stderr))
}

const RELEASES: &str = "tests/fixtures/repo/apps/releases.yaml";
const CYCLE: &str = "dependency cycle: apps/api → apps/worker → apps/api";

#[test]
fn json_lists_the_findings_with_file_and_line() {
    let out = run(&["--format", "json", "tests/fixtures/repo"]);
    assert_eq!(out.code, Some(1), "{}{}", out.stdout, out.stderr);
    let v = parse(&out);
    assert_eq!(v["objects"], 4, "{v}");
    assert_eq!(v["errors"], 3, "{v}");
    assert_eq!(v["warnings"], 1, "{v}");
    let findings = v["findings"].as_array().unwrap();
    assert_eq!(findings.len(), 4, "{v}");
    let cycle = findings
        .iter()
        .find(|f| f["object"] == "HelmRelease apps/api")
        .unwrap_or_else(|| panic!("no finding on apps/api: {v}"));
    assert_eq!(cycle["file"], RELEASES, "{cycle}");
    assert_eq!(cycle["line"], 1, "{cycle}");
    assert_eq!(cycle["level"], "error", "{cycle}");
    assert_eq!(cycle["policy"], "flux-dependencies", "{cycle}");
    assert_eq!(cycle["rule"], "depends-on", "{cycle}");
    assert!(
        cycle["message"].as_str().unwrap().contains(CYCLE),
        "{cycle}"
    );
    let worker_lines: Vec<&Value> = findings
        .iter()
        .filter(|f| f["object"] == "HelmRelease apps/worker")
        .map(|f| &f["line"])
        .collect();
    assert_eq!(worker_lines, [9, 9], "{v}");
    assert!(v["notes"].is_array(), "{v}");
}

#[test]
fn sarif_is_what_github_code_scanning_reads() {
    let out = run(&["--format", "sarif", "tests/fixtures/repo"]);
    assert_eq!(out.code, Some(1), "{}{}", out.stdout, out.stderr);
    let v = parse(&out);
    assert_eq!(v["version"], "2.1.0", "{v}");
    assert!(
        v["$schema"].as_str().unwrap().contains("sarif-2.1.0"),
        "{v}"
    );
    let run = &v["runs"][0];
    assert_eq!(run["tool"]["driver"]["name"], "fluxadmit", "{v}");
    let rules = run["tool"]["driver"]["rules"].as_array().unwrap();
    let results = run["results"].as_array().unwrap();
    assert_eq!(results.len(), 4, "{v}");
    for r in results {
        assert!(r["ruleId"].is_string(), "{r}");
        assert!(r["level"] == "error" || r["level"] == "warning", "{r}");
        assert!(r["message"]["text"].is_string(), "{r}");
        let i = r["ruleIndex"].as_u64().unwrap() as usize;
        assert_eq!(rules[i]["id"], r["ruleId"], "{r}");
        let loc = &r["locations"][0]["physicalLocation"];
        assert!(
            loc["artifactLocation"]["uri"]
                .as_str()
                .unwrap()
                .starts_with("tests/fixtures/repo/apps/"),
            "{r}"
        );
        assert!(loc["region"]["startLine"].as_u64().unwrap() >= 1, "{r}");
    }
    let cycle = results
        .iter()
        .find(|r| {
            r["properties"]["object"] == "HelmRelease apps/api"
                && r["ruleId"] == "flux-dependencies/depends-on"
        })
        .unwrap_or_else(|| panic!("no cycle result: {v}"));
    assert_eq!(cycle["level"], "error", "{cycle}");
    assert!(
        cycle["message"]["text"].as_str().unwrap().contains(CYCLE),
        "{cycle}"
    );
    let loc = &cycle["locations"][0]["physicalLocation"];
    assert_eq!(loc["artifactLocation"]["uri"], RELEASES, "{cycle}");
    assert_eq!(loc["region"]["startLine"], 1, "{cycle}");
}

#[test]
fn errors_fail_and_a_clean_repository_passes_in_every_format() {
    for format in ["text", "json", "sarif"] {
        let out = run(&["--format", format, "tests/fixtures/repo"]);
        assert_eq!(out.code, Some(1), "{format}: {}{}", out.stdout, out.stderr);
        let out = run(&["--format", format, "--strict", "examples/state"]);
        assert_eq!(out.code, Some(0), "{format}: {}{}", out.stdout, out.stderr);
    }
    let out = run(&["examples/state"]);
    assert_eq!(out.code, Some(0), "{}{}", out.stdout, out.stderr);
}

/// A repository whose only finding is a warning: a HelmRelease waiting on one not in it.
fn warning_only(dir: &Path) {
    std::fs::write(
        dir.join("web.yaml"),
        "apiVersion: helm.toolkit.fluxcd.io/v2\n\
         kind: HelmRelease\n\
         metadata: {name: web, namespace: apps}\n\
         spec:\n  interval: 10m\n  \
         chart: {spec: {chart: web, sourceRef: {kind: HelmRepository, name: charts, namespace: flux-system}}}\n  \
         dependsOn: [{name: cdn}]\n",
    )
    .unwrap();
}

#[test]
fn warnings_fail_only_with_strict() {
    let tmp = tempfile::tempdir().unwrap();
    warning_only(tmp.path());
    let repo = tmp.path().to_str().unwrap();
    let out = run(&[repo]);
    assert_eq!(out.code, Some(0), "{}{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains("checked 1 object: 0 errors, 1 warning"),
        "{}",
        out.stdout
    );
    let out = run(&["--strict", repo]);
    assert_eq!(out.code, Some(1), "{}{}", out.stdout, out.stderr);
    let out = run(&["--strict", "--format", "json", repo]);
    assert_eq!(out.code, Some(1), "{}{}", out.stdout, out.stderr);
    assert_eq!(parse(&out)["warnings"], 1);
}
