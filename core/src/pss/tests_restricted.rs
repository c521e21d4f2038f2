//! Every restricted check: a passing and a failing pod at the restricted level (and the failing
//! pod passing at the baseline level), plus override semantics and Windows relaxations.

use super::test_support::{assert_findings, eval, restricted_container, restricted_pod, tweak};
use super::{Level, Version};

type Edits = &'static [(&'static str, &'static str)];

struct Row {
    check: &'static str,
    pass: Edits,
    fail: Edits,
    path: &'static str,
    message: &'static str,
}

const ROWS: &[Row] = &[
    Row {
        check: "allowPrivilegeEscalation",
        pass: &[(
            "/spec/containers/0/securityContext/allowPrivilegeEscalation",
            "false",
        )],
        fail: &[(
            "/spec/containers/0/securityContext/allowPrivilegeEscalation",
            "true",
        )],
        path: "spec.containers[0].securityContext.allowPrivilegeEscalation",
        message: r#"allowPrivilegeEscalation != false (container "app" must set securityContext.allowPrivilegeEscalation=false)"#,
    },
    Row {
        check: "capabilities_restricted",
        pass: &[(
            "/spec/containers/0/securityContext/capabilities",
            r#"{"drop":["ALL"],"add":["NET_BIND_SERVICE"]}"#,
        )],
        fail: &[(
            "/spec/containers/0/securityContext/capabilities",
            r#"{"drop":["NET_RAW"]}"#,
        )],
        path: "spec.containers[0].securityContext.capabilities.drop",
        message: r#"unrestricted capabilities (container "app" must set securityContext.capabilities.drop=["ALL"])"#,
    },
    Row {
        check: "procMount_restricted",
        pass: &[
            ("/spec/hostUsers", "false"),
            (
                "/spec/containers/0/securityContext/procMount",
                r#""Default""#,
            ),
        ],
        fail: &[
            ("/spec/hostUsers", "false"),
            (
                "/spec/containers/0/securityContext/procMount",
                r#""Unmasked""#,
            ),
        ],
        path: "spec.containers[0].securityContext.procMount",
        message: r#"procMount (container "app" must not set securityContext.procMount to "Unmasked")"#,
    },
    Row {
        check: "restrictedVolumes",
        pass: &[(
            "/spec/volumes",
            r#"[{"name":"a","configMap":{"name":"a"}},{"name":"b","csi":{"driver":"d"}},{"name":"c","downwardAPI":{}},
                {"name":"d","emptyDir":{}},{"name":"e","ephemeral":{}},{"name":"f","image":{"reference":"x"}},
                {"name":"g","persistentVolumeClaim":{"claimName":"g"}},{"name":"h","projected":{}},
                {"name":"i","secret":{"secretName":"i"}}]"#,
        )],
        fail: &[(
            "/spec/volumes",
            r#"[{"name":"cfg","configMap":{"name":"cfg"}},{"name":"share","nfs":{"server":"s","path":"/"}}]"#,
        )],
        path: "spec.volumes[1].nfs",
        message: r#"restricted volume types (volume "share" uses restricted volume type "nfs")"#,
    },
    Row {
        check: "runAsNonRoot",
        pass: &[
            ("/spec/securityContext/runAsNonRoot", "null"),
            ("/spec/containers/0/securityContext/runAsNonRoot", "true"),
        ],
        fail: &[("/spec/securityContext/runAsNonRoot", "false")],
        path: "spec.securityContext.runAsNonRoot",
        message: "runAsNonRoot != true (pod must not set securityContext.runAsNonRoot=false)",
    },
    Row {
        check: "runAsUser",
        pass: &[("/spec/securityContext/runAsUser", "1000")],
        fail: &[("/spec/containers/0/securityContext/runAsUser", "0")],
        path: "spec.containers[0].securityContext.runAsUser",
        message: r#"runAsUser=0 (container "app" must not set runAsUser=0)"#,
    },
    Row {
        check: "seccompProfile_restricted",
        pass: &[
            ("/spec/securityContext/seccompProfile", "null"),
            (
                "/spec/containers/0/securityContext/seccompProfile",
                r#"{"type":"Localhost","localhostProfile":"p.json"}"#,
            ),
        ],
        fail: &[("/spec/securityContext/seccompProfile", "null")],
        path: "spec.containers[0].securityContext.seccompProfile.type",
        message: r#"seccompProfile (pod or container "app" must set securityContext.seccompProfile.type to "RuntimeDefault" or "Localhost")"#,
    },
];

#[test]
fn every_restricted_check_passes_and_fails() {
    let base = restricted_pod();
    for row in ROWS {
        let pass = tweak(&base, row.pass);
        assert_eq!(
            eval(Level::Restricted, Version::Latest, &pass),
            vec![],
            "{}: passing pod",
            row.check
        );
        let fail = tweak(&base, row.fail);
        assert_findings(
            Level::Restricted,
            Version::Latest,
            &fail,
            &[(row.check, row.path, row.message)],
        );
        // Restricted-only checks do not apply at the baseline level.
        assert_findings(Level::Baseline, Version::Latest, &fail, &[]);
    }
}

#[test]
fn table_covers_every_restricted_check() {
    for id in super::RESTRICTED_CHECK_IDS {
        assert!(ROWS.iter().any(|r| r.check == *id), "no row for {id}");
    }
}

const NON_ROOT: &str = "securityContext.runAsNonRoot";

#[test]
fn run_as_non_root_container_overrides_pod() {
    let base = restricted_pod();
    let c0 = "/spec/containers/0/securityContext/runAsNonRoot";
    // Pod true, container unset: inherited.
    assert_findings(Level::Restricted, Version::Latest, &base, &[]);
    // Pod true, container false: the container value wins.
    assert_findings(
        Level::Restricted,
        Version::Latest,
        &tweak(&base, &[(c0, "false")]),
        &[(
            "runAsNonRoot",
            "spec.containers[0].securityContext.runAsNonRoot",
            r#"runAsNonRoot != true (container "app" must not set securityContext.runAsNonRoot=false)"#,
        )],
    );
    // Pod unset: every container must set it; only the one that does not is reported.
    let two = tweak(
        &base,
        &[("/spec/securityContext/runAsNonRoot", "null"), (c0, "true")],
    );
    let mut two = two;
    super::test_support::set(
        &mut two,
        "/spec/initContainers/0",
        restricted_container("init", "busybox"),
    );
    assert_findings(
        Level::Restricted,
        Version::Latest,
        &two,
        &[(
            "runAsNonRoot",
            "spec.initContainers[0].securityContext.runAsNonRoot",
            r#"runAsNonRoot != true (pod or container "init" must set securityContext.runAsNonRoot=true)"#,
        )],
    );
    // Pod false cannot be repaired by containers setting true, and (as in PSA) explicit
    // `false` findings replace the "must set" ones.
    let pod_false = tweak(&two, &[("/spec/securityContext/runAsNonRoot", "false")]);
    assert_findings(
        Level::Restricted,
        Version::Latest,
        &pod_false,
        &[(
            "runAsNonRoot",
            &format!("spec.{NON_ROOT}"),
            "runAsNonRoot != true (pod must not set securityContext.runAsNonRoot=false)",
        )],
    );
}

#[test]
fn seccomp_container_overrides_pod() {
    let base = restricted_pod();
    let c0 = "/spec/containers/0/securityContext/seccompProfile";
    // Container Unconfined overrides pod RuntimeDefault.
    assert_findings(
        Level::Restricted,
        Version::Latest,
        &tweak(&base, &[(c0, r#"{"type":"Unconfined"}"#)]),
        &[(
            "seccompProfile_restricted",
            "spec.containers[0].securityContext.seccompProfile.type",
            r#"seccompProfile (container "app" must not set securityContext.seccompProfile.type to "Unconfined")"#,
        )],
    );
    // Pod Unconfined with a valid container profile: the pod value is still forbidden.
    let pod_bad = tweak(
        &base,
        &[
            (
                "/spec/securityContext/seccompProfile",
                r#"{"type":"Unconfined"}"#,
            ),
            (c0, r#"{"type":"RuntimeDefault"}"#),
        ],
    );
    let want = (
        "seccompProfile_restricted",
        "spec.securityContext.seccompProfile.type",
        r#"seccompProfile (pod must not set securityContext.seccompProfile.type to "Unconfined")"#,
    );
    assert_findings(Level::Restricted, Version::Latest, &pod_bad, &[want]);
    assert_findings(
        Level::Baseline,
        Version::Latest,
        &pod_bad,
        &[("seccompProfile_baseline", want.1, want.2)],
    );
    // Baseline allows an unset profile; restricted requires one.
    let unset = tweak(&base, &[("/spec/securityContext/seccompProfile", "null")]);
    assert_findings(Level::Baseline, Version::Latest, &unset, &[]);
    assert_eq!(eval(Level::Restricted, Version::Latest, &unset).len(), 1);
}

/// A Windows pod that sets neither allowPrivilegeEscalation, capabilities nor seccomp.
fn windows_pod() -> serde_json::Value {
    serde_json::json!({"metadata": {}, "spec": {
        "os": {"name": "windows"},
        "securityContext": {"runAsNonRoot": true},
        "containers": [{"name": "win", "image": "mcr.microsoft.com/windows/nanoserver"}]
    }})
}

#[test]
fn windows_pods_skip_linux_only_checks_from_v1_25() {
    let pod = windows_pod();
    assert_findings(Level::Restricted, Version::Latest, &pod, &[]);
    assert_findings(Level::Restricted, Version::V(1, 25), &pod, &[]);
    let before: Vec<String> = eval(Level::Restricted, Version::V(1, 24), &pod)
        .into_iter()
        .map(|f| f.0)
        .collect();
    assert_eq!(
        before,
        [
            "allowPrivilegeEscalation",
            "capabilities_restricted",
            "seccompProfile_restricted"
        ]
    );
    // Only those three are relaxed: runAsNonRoot and baseline checks still apply.
    let bad = tweak(
        &pod,
        &[
            ("/spec/securityContext/runAsNonRoot", "null"),
            (
                "/spec/securityContext/windowsOptions",
                r#"{"hostProcess":true}"#,
            ),
        ],
    );
    let ids: Vec<String> = eval(Level::Restricted, Version::Latest, &bad)
        .into_iter()
        .map(|f| f.0)
        .collect();
    assert_eq!(ids, ["windowsHostProcess", "runAsNonRoot"]);
    // A Linux pod with the same spec is not relaxed.
    let linux = tweak(&pod, &[("/spec/os/name", r#""linux""#)]);
    assert_eq!(eval(Level::Restricted, Version::Latest, &linux).len(), 3);
}

#[test]
fn user_namespace_pods_relax_run_as_checks_from_v1_35() {
    let pod = tweak(
        &restricted_pod(),
        &[
            ("/spec/hostUsers", "false"),
            ("/spec/securityContext/runAsNonRoot", "false"),
            ("/spec/securityContext/runAsUser", "0"),
        ],
    );
    assert_findings(Level::Restricted, Version::Latest, &pod, &[]);
    let ids: Vec<String> = eval(Level::Restricted, Version::V(1, 34), &pod)
        .into_iter()
        .map(|f| f.0)
        .collect();
    assert_eq!(ids, ["runAsNonRoot", "runAsUser"]);
    // Baseline procMount is relaxed for user-namespace pods, restricted is not.
    let unmasked = tweak(
        &pod,
        &[(
            "/spec/containers/0/securityContext/procMount",
            r#""Unmasked""#,
        )],
    );
    assert_findings(Level::Baseline, Version::Latest, &unmasked, &[]);
    let base_ids: Vec<String> = eval(Level::Baseline, Version::V(1, 34), &unmasked)
        .into_iter()
        .map(|f| f.0)
        .collect();
    assert_eq!(base_ids, ["procMount"]);
}
