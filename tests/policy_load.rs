//! Policy loading errors: each names the file, the policy and the field, and `serve` refuses
//! to start with exit code 2.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use fluxadmit_core::policy::PolicyError;
use fluxadmit_core::policy::load::load_paths;
use std::path::{Path, PathBuf};

const GOOD: &str = "apiVersion: fluxadmit.io/v1alpha1
kind: DeploymentPolicy
metadata:
  name: deps
spec:
  match:
    resources: [{apiGroups: [helm.toolkit.fluxcd.io], kinds: [HelmRelease]}]
  rules:
    - name: depends-on
      dependsOn: {missing: Warn}
";

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

fn load_err(text: &str) -> (PolicyError, String) {
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "policy.yaml", text);
    let err = load_paths(&[dir.path().to_path_buf()]).unwrap_err();
    (err, p.display().to_string())
}

#[test]
fn good_policy_loads() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "p.yaml", GOOD);
    let set = load_paths(&[dir.path().to_path_buf()]).unwrap();
    assert_eq!(set.len(), 1);
    assert_eq!(set.rule_count(), 1);
}

#[test]
fn the_shipped_policies_load() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let defaults = load_paths(&[root.join("policies")]).unwrap();
    let names: Vec<_> = defaults.policies.iter().map(|p| &*p.name).collect();
    assert_eq!(
        names,
        [
            "flux-dependencies",
            "flux-referenced-secrets",
            "restricted-security-context"
        ]
    );
    let examples = load_paths(&[root.join("policies/examples")]).unwrap();
    assert!(examples.len() >= 6, "{}", examples.len());
}

#[test]
fn errors_name_file_policy_and_field() {
    let cases: &[(&str, &str, &str, &str)] = &[
        (
            "unknown field in a rule",
            "      dependsOn: {missing: Warn}\n",
            "      dependsOn: {missing: Warn, mising: Deny}\n",
            "spec.rules[0].dependsOn.mising",
        ),
        (
            "bad enum value",
            "{missing: Warn}",
            "{missing: Maybe}",
            "spec.rules[0].dependsOn.missing",
        ),
        (
            "unknown top-level spec field",
            "  match:\n",
            "  matchh: {}\n  match:\n",
            "spec.matchh",
        ),
        (
            "bad action",
            "spec:\n",
            "spec:\n  action: Block\n",
            "spec.action",
        ),
        (
            "wrong apiVersion",
            "fluxadmit.io/v1alpha1",
            "fluxadmit.io/v1",
            "apiVersion",
        ),
        (
            "no rule kind",
            "      dependsOn: {missing: Warn}\n",
            "",
            "spec.rules[0]",
        ),
        (
            "two rule kinds",
            "      dependsOn: {missing: Warn}\n",
            "      dependsOn: {missing: Warn}\n      referencedSecrets: {}\n",
            "spec.rules[0]",
        ),
        (
            "bad selector operator",
            "  rules:\n",
            "    namespaceSelector: {matchExpressions: [{key: a, operator: Has}]}\n  rules:\n",
            "spec.match.namespaceSelector.matchExpressions[0].operator",
        ),
        (
            "bad glob",
            "  rules:\n",
            "    namespaces: [\"team-[\"]\n  rules:\n",
            "spec.match.namespaces[0]",
        ),
        (
            "CEL that does not compile",
            "      dependsOn: {missing: Warn}\n",
            "      expression: {expression: \"object.spec.replicas >\", message: m}\n",
            "spec.rules[0].expression.expression",
        ),
        (
            "CEL that is not a bool",
            "      dependsOn: {missing: Warn}\n",
            "      expression: {expression: \"object.spec.replicas\", message: m}\n",
            "spec.rules[0].expression.expression",
        ),
        (
            "bad pod security level",
            "      dependsOn: {missing: Warn}\n",
            "      podSecurity: {level: strict}\n",
            "spec.rules[0].podSecurity.level",
        ),
        (
            "bad overlay anchor",
            "      dependsOn: {missing: Warn}\n",
            "      mutate: {overlay: {spec: {\"+(\": 1}}}\n",
            "spec.rules[0].mutate.overlay.spec.+(",
        ),
    ];
    for (case, from, to, field) in cases {
        assert!(GOOD.contains(from), "{case}: fixture");
        let (err, file) = load_err(&GOOD.replacen(from, to, 1));
        assert_eq!(err.file, file, "{case}");
        assert_eq!(err.field, *field, "{case}: {err}");
        let text = err.to_string();
        assert!(text.starts_with(&format!("{file}: ")), "{case}: {text}");
        if *field != "apiVersion" {
            assert_eq!(err.policy.as_deref(), Some("deps"), "{case}: {text}");
        }
        assert!(!err.reason.is_empty(), "{case}");
    }
}

#[test]
fn cel_errors_give_a_position() {
    let (err, _) = load_err(&GOOD.replace(
        "      dependsOn: {missing: Warn}\n",
        "      expression: {expression: \"object.spec.replicas >\", message: m}\n",
    ));
    assert!(err.reason.contains("CEL error at 1:"), "{err}");
}

#[test]
fn duplicate_policy_names_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let a = write(dir.path(), "a.yaml", GOOD);
    let b = write(dir.path(), "b.yaml", GOOD);
    let err = load_paths(&[dir.path().to_path_buf()]).unwrap_err();
    assert_eq!(err.file, b.display().to_string());
    assert_eq!(err.field, "metadata.name");
    assert!(err.reason.contains(&a.display().to_string()), "{err}");
}

#[test]
fn duplicate_rule_names_are_refused() {
    let text = GOOD.replace(
        "      dependsOn: {missing: Warn}\n",
        "      dependsOn: {missing: Warn}\n    - name: depends-on\n      referencedSecrets: {}\n",
    );
    let (err, _) = load_err(&text);
    assert_eq!(err.field, "spec.rules[1].name");
}

#[test]
fn malformed_yaml_names_the_file() {
    let (err, file) = load_err("apiVersion: [\n");
    assert_eq!(err.file, file);
}

#[test]
fn serve_refuses_to_start_with_exit_code_2() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(
        dir.path(),
        "bad.yaml",
        &GOOD.replace("{missing: Warn}", "{missing: Maybe}"),
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_fluxadmit"))
        .args([
            "serve",
            "--addr",
            "127.0.0.1:0",
            "--metrics-addr",
            "127.0.0.1:0",
            "--cert-dir",
        ])
        .arg(dir.path().join("certs"))
        .arg("--policies")
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&p.display().to_string()), "{stderr}");
    assert!(
        stderr.contains("spec.rules[0].dependsOn.missing"),
        "{stderr}"
    );
    assert!(stderr.contains("unknown variant `Maybe`"), "{stderr}");
}

#[test]
fn a_deployment_policy_resource_that_does_not_compile_is_denied_at_admission() {
    use fluxadmit_core::engine::Mode;
    use fluxadmit_core::state::Snapshot;
    let review = |spec: serde_json::Value| {
        serde_json::to_vec(&serde_json::json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
            "uid": "u-pol", "kind": {"group": "fluxadmit.io", "version": "v1alpha1", "kind": "DeploymentPolicy"},
            "resource": {"group": "fluxadmit.io", "version": "v1alpha1", "resource": "deploymentpolicies"},
            "name": "team", "operation": "CREATE", "userInfo": {},
            "object": {"apiVersion": "fluxadmit.io/v1alpha1", "kind": "DeploymentPolicy", "metadata": {"name": "team"}, "spec": spec}}}))
        .unwrap()
    };
    let snap = Snapshot::default();
    let bad = snap
        .review(Mode::Validate, &review(serde_json::json!({"match": {}, "rules": [{"name": "r", "podSecurity": {"level": "strict"}}]})))
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&bad.body).unwrap();
    assert_eq!(v["response"]["allowed"], false);
    let msg = v["response"]["status"]["message"].as_str().unwrap();
    assert!(
        msg.contains("spec.rules[0].podSecurity.level: unknown variant `strict`, expected one of `privileged`, `baseline`, `restricted`"),
        "{msg}"
    );

    let good = snap
        .review(Mode::Validate, &review(serde_json::json!({"match": {}, "rules": [{"name": "r", "podSecurity": {"level": "baseline"}}]})))
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&good.body).unwrap();
    assert_eq!(v["response"]["allowed"], true, "{v}");
}

#[test]
fn a_missing_path_names_itself_and_the_working_directory() {
    let err = load_paths(&[PathBuf::from("./no-such-policies")]).unwrap_err();
    let cwd = std::env::current_dir().unwrap();
    assert_eq!(err.file, "./no-such-policies");
    assert_eq!(err.field, "");
    assert_eq!(
        err.to_string(),
        format!(
            "./no-such-policies: no such file or directory (working directory {})",
            cwd.display()
        )
    );
    let err = load_paths(&[PathBuf::new()]).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("\"\" (an empty path): no such file"),
        "{err}"
    );
}

#[test]
fn errors_without_a_field_have_no_empty_part() {
    let (err, file) = load_err("apiVersion: [\n");
    assert_eq!(err.field, "");
    let text = err.to_string();
    assert!(text.starts_with(&format!("{file}: document 1: ")), "{text}");
    assert!(!text.contains(": :"), "{text}");
    let e = PolicyError {
        file: "f.yaml".into(),
        policy: Some("p".into()),
        field: String::new(),
        reason: "r".into(),
    };
    assert_eq!(e.to_string(), "f.yaml: policy \"p\": r");
}

#[test]
fn builtin_names_the_builtin_set_beside_files() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "p.yaml", GOOD);
    let set = load_paths(&[PathBuf::from("builtin"), dir.path().to_path_buf()]).unwrap();
    let got: Vec<_> = set
        .policies
        .iter()
        .map(|p| (&*p.name, p.source.clone()))
        .collect();
    assert_eq!(
        got,
        [
            ("deps", dir.path().join("p.yaml").display().to_string()),
            (
                "flux-dependencies",
                "builtin:flux-dependencies.yaml".to_owned()
            ),
            (
                "flux-referenced-secrets",
                "builtin:flux-referenced-secrets.yaml".to_owned()
            ),
            (
                "restricted-security-context",
                "builtin:restricted-security-context.yaml".to_owned()
            ),
        ]
    );
    // Named twice, loaded once; a path without `builtin` replaces the set.
    let twice = load_paths(&[PathBuf::from("builtin"), PathBuf::from("builtin")]).unwrap();
    assert_eq!(twice.len(), 3);
    let alone = load_paths(&[dir.path().to_path_buf()]).unwrap();
    assert_eq!(alone.len(), 1);
}
