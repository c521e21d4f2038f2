//! Pinned policy versions follow the standard as it was at that version.

use serde_json::Value;

use super::test_support::{assert_findings, baseline_pod, eval, restricted_pod, tweak};
use super::{Level, Version};

#[test]
fn pinned_versions_follow_the_standard_at_that_version() {
    let sysctl = |name: &str| {
        tweak(
            &baseline_pod(),
            &[(
                "/spec/securityContext/sysctls",
                &format!(r#"[{{"name":"{name}","value":"1"}}]"#),
            )],
        )
    };
    let allowed = |v: Version, name: &str| eval(Level::Baseline, v, &sysctl(name)).is_empty();
    assert!(!allowed(
        Version::V(1, 26),
        "net.ipv4.ip_local_reserved_ports"
    ));
    assert!(allowed(
        Version::V(1, 27),
        "net.ipv4.ip_local_reserved_ports"
    ));
    assert!(!allowed(Version::V(1, 28), "net.ipv4.tcp_fin_timeout"));
    assert!(allowed(Version::V(1, 29), "net.ipv4.tcp_fin_timeout"));
    assert!(!allowed(Version::V(1, 31), "net.ipv4.tcp_rmem"));
    assert!(allowed(Version::V(1, 32), "net.ipv4.tcp_wmem"));
    assert!(!allowed(Version::V(1, 36), "net.ipv4.tcp_notsent_lowat"));
    assert!(allowed(
        Version::V(1, 37),
        "net.ipv4.tcp_slow_start_after_idle"
    ));
    assert!(allowed(Version::Latest, "net.ipv4.tcp_notsent_lowat"));
    assert!(
        allowed(Version::V(1, 99), "net.ipv4.tcp_notsent_lowat"),
        "future versions clamp to latest"
    );

    let selinux = tweak(
        &baseline_pod(),
        &[(
            "/spec/securityContext/seLinuxOptions",
            r#"{"type":"container_engine_t"}"#,
        )],
    );
    assert_eq!(eval(Level::Baseline, Version::V(1, 30), &selinux).len(), 1);
    assert_findings(Level::Baseline, Version::V(1, 31), &selinux, &[]);

    // Restricted checks appear at their minimum versions; before that the baseline check runs.
    let caps = tweak(
        &restricted_pod(),
        &[(
            "/spec/containers/0/securityContext/capabilities/add",
            r#"["SYS_ADMIN"]"#,
        )],
    );
    let ids = |v: Version, doc: &Value| -> Vec<String> {
        eval(Level::Restricted, v, doc)
            .into_iter()
            .map(|f| f.0)
            .collect()
    };
    assert_eq!(ids(Version::V(1, 21), &caps), ["capabilities_baseline"]);
    assert_eq!(ids(Version::V(1, 22), &caps), ["capabilities_restricted"]);
    let root = tweak(
        &restricted_pod(),
        &[("/spec/securityContext/runAsUser", "0")],
    );
    assert!(ids(Version::V(1, 22), &root).is_empty());
    assert_eq!(ids(Version::V(1, 23), &root), ["runAsUser"]);
    let escalate = tweak(
        &restricted_pod(),
        &[(
            "/spec/containers/0/securityContext/allowPrivilegeEscalation",
            "true",
        )],
    );
    assert!(ids(Version::V(1, 7), &escalate).is_empty());
    assert_eq!(
        ids(Version::V(1, 8), &escalate),
        ["allowPrivilegeEscalation"]
    );
}

#[test]
fn seccomp_annotations_are_checked_before_v1_19() {
    let pod = tweak(
        &baseline_pod(),
        &[
            (
                "/metadata/annotations/seccomp.security.alpha.kubernetes.io~1pod",
                r#""unconfined""#,
            ),
            (
                "/metadata/annotations/container.seccomp.security.alpha.kubernetes.io~1app",
                r#""docker/default""#,
            ),
            (
                "/spec/securityContext/seccompProfile",
                r#"{"type":"Unconfined"}"#,
            ),
        ],
    );
    assert_findings(
        Level::Baseline,
        Version::V(1, 18),
        &pod,
        &[(
            "seccompProfile_baseline",
            "metadata.annotations[seccomp.security.alpha.kubernetes.io/pod]",
            r#"seccompProfile (forbidden annotation seccomp.security.alpha.kubernetes.io/pod="unconfined")"#,
        )],
    );
    // From v1.19 the fields are checked instead of the annotations.
    assert_findings(
        Level::Baseline,
        Version::V(1, 19),
        &pod,
        &[(
            "seccompProfile_baseline",
            "spec.securityContext.seccompProfile.type",
            r#"seccompProfile (pod must not set securityContext.seccompProfile.type to "Unconfined")"#,
        )],
    );
}
