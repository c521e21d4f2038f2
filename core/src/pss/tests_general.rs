//! Exemptions, container kinds, paths, versions, ordering, summaries, parsing and robustness.

use serde_json::json;

use super::test_support::{
    assert_findings, baseline_pod, eval, eval_with, findings, restricted_container, restricted_pod,
    set, tweak,
};
use super::{Level, Version, Violation, check_ids, check_pod, summarize};

const PRIV_MSG: &str = "must not set securityContext.privileged=true)";

#[test]
fn privileged_level_reports_nothing() {
    let pod = tweak(
        &baseline_pod(),
        &[
            ("/spec/hostNetwork", "true"),
            ("/spec/containers/0/securityContext/privileged", "true"),
        ],
    );
    assert_findings(Level::Privileged, Version::Latest, &pod, &[]);
    assert!(check_ids(Level::Privileged, Version::Latest).is_empty());
}

#[test]
fn init_and_ephemeral_containers_are_checked_in_psa_order() {
    let mut pod = baseline_pod();
    set(
        &mut pod,
        "/spec/ephemeralContainers/0",
        json!({"name": "debug", "image": "busybox", "securityContext": {"privileged": true}}),
    );
    set(
        &mut pod,
        "/spec/containers/0/securityContext/privileged",
        json!(true),
    );
    set(
        &mut pod,
        "/spec/initContainers/0",
        json!({"name": "init", "image": "busybox", "securityContext": {"privileged": true}}),
    );
    let got: Vec<(String, String)> = eval(Level::Baseline, Version::Latest, &pod)
        .into_iter()
        .map(|f| (f.1, f.2))
        .collect();
    assert_eq!(
        got,
        [
            (
                "spec.initContainers[0].securityContext.privileged".to_string(),
                format!("privileged (container \"init\" {PRIV_MSG}")
            ),
            (
                "spec.containers[0].securityContext.privileged".to_string(),
                format!("privileged (container \"app\" {PRIV_MSG}")
            ),
            (
                "spec.ephemeralContainers[0].securityContext.privileged".to_string(),
                format!("privileged (container \"debug\" {PRIV_MSG}")
            ),
        ]
    );
}

#[test]
fn paths_use_the_template_prefix() {
    let pod = tweak(
        &baseline_pod(),
        &[
            ("/spec/containers/0/securityContext/privileged", "true"),
            (
                "/metadata/annotations/container.apparmor.security.beta.kubernetes.io~1app",
                r#""unconfined""#,
            ),
        ],
    );
    let paths = |prefix: &str| -> Vec<String> {
        eval_with(Level::Baseline, Version::Latest, &pod, prefix, &|_| false)
            .into_iter()
            .map(|f| f.1)
            .collect()
    };
    assert_eq!(
        paths("spec.template"),
        [
            "spec.template.metadata.annotations[container.apparmor.security.beta.kubernetes.io/app]",
            "spec.template.spec.containers[0].securityContext.privileged",
        ]
    );
    assert_eq!(
        paths("spec.jobTemplate.spec.template")[1],
        "spec.jobTemplate.spec.template.spec.containers[0].securityContext.privileged"
    );
    assert_eq!(
        paths("")[1],
        "spec.containers[0].securityContext.privileged"
    );
}

#[test]
fn an_exempt_container_skips_container_checks_but_not_pod_checks() {
    let mut pod = tweak(&restricted_pod(), &[("/spec/hostNetwork", "true")]);
    set(
        &mut pod,
        "/spec/containers/1",
        json!({"name": "agent", "image": "vendor/agent:1", "securityContext": {"privileged": true}}),
    );
    set(
        &mut pod,
        "/metadata/annotations/container.apparmor.security.beta.kubernetes.io~1agent",
        json!("unconfined"),
    );
    let exempt = |image: &str| image.starts_with("vendor/");
    let got = eval_with(Level::Restricted, Version::Latest, &pod, "", &exempt);
    assert_eq!(
        got,
        findings(&[(
            "hostNamespaces",
            "spec.hostNetwork",
            "host namespaces (hostNetwork=true)"
        )])
    );
    // Without the exemption the agent container is reported.
    let ids: Vec<String> = eval(Level::Restricted, Version::Latest, &pod)
        .into_iter()
        .map(|f| f.0)
        .collect();
    assert_eq!(
        ids,
        [
            "appArmorProfile",
            "hostNamespaces",
            "privileged",
            "allowPrivilegeEscalation",
            "capabilities_restricted"
        ]
    );
}

#[test]
fn all_containers_exempt_skips_pod_level_checks() {
    let mut pod = tweak(
        &baseline_pod(),
        &[
            ("/spec/hostPID", "true"),
            (
                "/spec/volumes",
                r#"[{"name":"root","hostPath":{"path":"/"}}]"#,
            ),
            (
                "/spec/securityContext/sysctls",
                r#"[{"name":"kernel.msgmax","value":"1"}]"#,
            ),
            ("/spec/securityContext/runAsUser", "0"),
        ],
    );
    set(
        &mut pod,
        "/spec/initContainers/0",
        json!({"name": "init", "image": "vendor/init", "securityContext": {"privileged": true}}),
    );
    set(&mut pod, "/spec/containers/0/image", json!("vendor/app"));
    let all = |image: &str| image.starts_with("vendor/");
    assert_eq!(
        eval_with(Level::Restricted, Version::Latest, &pod, "", &all),
        vec![]
    );
    // One non-exempt container brings the pod-level checks back.
    set(
        &mut pod,
        "/spec/ephemeralContainers/0",
        restricted_container("debug", "busybox"),
    );
    let ids: Vec<String> = eval_with(Level::Restricted, Version::Latest, &pod, "", &all)
        .into_iter()
        .map(|f| f.0)
        .collect();
    assert_eq!(
        ids,
        [
            "hostNamespaces",
            "sysctls",
            "restrictedVolumes",
            "runAsNonRoot",
            "runAsUser",
            "seccompProfile_restricted"
        ]
    );
}

#[test]
fn containers_without_image_are_not_exempt() {
    let pod = tweak(
        &baseline_pod(),
        &[
            ("/spec/containers/0/image", "null"),
            ("/spec/containers/0/securityContext/privileged", "true"),
        ],
    );
    assert_eq!(
        eval_with(Level::Baseline, Version::Latest, &pod, "", &|_| true).len(),
        1
    );
}

#[test]
fn checks_are_reported_in_psa_order() {
    assert_eq!(
        check_ids(Level::Restricted, Version::Latest),
        [
            "appArmorProfile",
            "hostNamespaces",
            "hostPorts",
            "hostProbesAndHostLifecycle",
            "privileged",
            "seLinuxOptions",
            "sysctls",
            "windowsHostProcess",
            "allowPrivilegeEscalation",
            "capabilities_restricted",
            "procMount_restricted",
            "restrictedVolumes",
            "runAsNonRoot",
            "runAsUser",
            "seccompProfile_restricted",
        ]
    );
    assert_eq!(
        check_ids(Level::Baseline, Version::Latest),
        super::BASELINE_CHECK_IDS
    );
    let mut sorted = super::BASELINE_CHECK_IDS.to_vec();
    sorted.sort();
    assert_eq!(
        sorted,
        super::BASELINE_CHECK_IDS,
        "PSA sorts check ids bytewise"
    );
    let pod = json!({"spec": {"hostNetwork": true, "containers": [{"name": "c", "image": "i", "securityContext": {"privileged": true}}]}});
    let ids: Vec<&str> = check_pod(
        Level::Restricted,
        Version::Latest,
        None,
        &pod["spec"],
        "",
        &|_| false,
    )
    .iter()
    .map(|v| v.check)
    .collect();
    assert_eq!(
        ids,
        [
            "hostNamespaces",
            "privileged",
            "allowPrivilegeEscalation",
            "capabilities_restricted",
            "runAsNonRoot",
            "seccompProfile_restricted"
        ]
    );
}

#[test]
fn summary_is_worded_like_psa() {
    let v = |check: &'static str, message: &str| Violation {
        check,
        path: String::new(),
        message: message.into(),
    };
    let msg = r#"privileged (container "app" must not set securityContext.privileged=true)"#;
    assert_eq!(
        summarize(Level::Baseline, Version::Latest, &[v("privileged", msg)]),
        format!("violates PodSecurity \"baseline:latest\": {msg}")
    );
    let both = [
        v("hostNamespaces", "host namespaces (hostPID=true)"),
        v("privileged", msg),
        v("privileged", msg),
    ];
    assert_eq!(
        summarize(Level::Restricted, Version::V(1, 29), &both),
        format!("violates PodSecurity \"restricted:v1.29\": host namespaces (hostPID=true), {msg}")
    );
    assert_eq!(summarize(Level::Restricted, Version::Latest, &[]), "");
}

#[test]
fn versions_and_levels_parse_like_psa_labels() {
    assert_eq!("latest".parse(), Ok(Version::Latest));
    assert_eq!("v1.30".parse(), Ok(Version::V(1, 30)));
    assert_eq!("v1.0".parse(), Ok(Version::V(1, 0)));
    for bad in [
        "",
        "1.30",
        "v2.1",
        "v1.",
        "v1.01",
        "v1.3x",
        "V1.30",
        "v1.99999999999",
    ] {
        let err = bad.parse::<Version>().expect_err(bad);
        assert!(
            err.to_string().contains("\"latest\" or \"v1.<minor>\""),
            "{err}"
        );
    }
    assert_eq!(Version::V(1, 29).to_string(), "v1.29");
    assert_eq!("restricted".parse(), Ok(Level::Restricted));
    assert!("Restricted".parse::<Level>().is_err());
    assert_eq!(
        serde_json::to_string(&Level::Baseline).ok().as_deref(),
        Some("\"baseline\"")
    );
    assert_eq!(
        serde_json::from_str::<Level>("\"privileged\"").ok(),
        Some(Level::Privileged)
    );
}

#[test]
fn host_namespaces_are_reported_in_psa_order() {
    let pod = tweak(
        &baseline_pod(),
        &[("/spec/hostIPC", "true"), ("/spec/hostNetwork", "true")],
    );
    assert_findings(
        Level::Baseline,
        Version::Latest,
        &pod,
        &[
            (
                "hostNamespaces",
                "spec.hostNetwork",
                "host namespaces (hostNetwork=true)",
            ),
            (
                "hostNamespaces",
                "spec.hostIPC",
                "host namespaces (hostIPC=true)",
            ),
        ],
    );
}
