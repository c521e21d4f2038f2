//! Wrongly typed and arbitrary JSON: fail closed, never panic.

use proptest::prelude::*;
use serde_json::{Value, json};

use super::test_support::{baseline_pod, eval, restricted_pod, tweak};
use super::{Level, Version, check_pod, summarize};

#[test]
fn wrong_types_fail_closed() {
    let pod = tweak(
        &baseline_pod(),
        &[
            ("/spec/hostNetwork", r#""yes""#),
            ("/spec/containers/0/securityContext/privileged", "1"),
            ("/spec/containers/0/ports", r#"[{"hostPort":"80"}]"#),
            (
                "/spec/containers/0/securityContext/capabilities/add",
                r#"[7]"#,
            ),
        ],
    );
    let got: Vec<String> = eval(Level::Baseline, Version::Latest, &pod)
        .into_iter()
        .map(|f| f.2)
        .collect();
    assert_eq!(
        got,
        [
            r#"non-default capabilities (container "app" must not include "7" in securityContext.capabilities.add)"#,
            "host namespaces (hostNetwork=true)",
            r#"hostPort (container "app" uses hostPort 80)"#,
            r#"privileged (container "app" must not set securityContext.privileged=true)"#,
        ]
    );
    let unnamed = tweak(
        &baseline_pod(),
        &[("/spec/securityContext/sysctls", r#"[{"value":"1"}]"#)],
    );
    let got: Vec<String> = eval(Level::Baseline, Version::Latest, &unnamed)
        .into_iter()
        .map(|f| f.2)
        .collect();
    assert_eq!(
        got,
        ["forbidden sysctls"],
        "an empty detail is omitted, as in PSA"
    );
    let lax = tweak(
        &restricted_pod(),
        &[("/spec/securityContext/runAsNonRoot", r#""true""#)],
    );
    assert_eq!(eval(Level::Restricted, Version::Latest, &lax).len(), 1);
}

const MALFORMED: &[&str] = &[
    "null",
    "1",
    "\"x\"",
    "[]",
    "{}",
    r#"{"containers": 5}"#,
    r#"{"containers": [1, "a", null, []]}"#,
    r#"{"containers": [{"securityContext": 3, "ports": {}}], "volumes": [1, {"name": 2, "x": 1}]}"#,
    r#"{"securityContext": [], "hostUsers": "no", "os": 1, "initContainers": {"a": 1}}"#,
    r#"{"securityContext": {"sysctls": {"name": 1}, "seLinuxOptions": "x", "seccompProfile": 7,
        "windowsOptions": [], "appArmorProfile": {"type": []}, "runAsUser": 1.5}}"#,
    r#"{"containers": [{"name": [], "image": {}, "livenessProbe": {"httpGet": {"host": 1}},
        "lifecycle": "x", "securityContext": {"capabilities": {"add": "ALL", "drop": "ALL"},
        "seLinuxOptions": {"type": 1, "user": 2}, "procMount": 1, "runAsNonRoot": null}}]}"#,
];

#[test]
fn malformed_specs_do_not_panic() {
    let meta = json!({"annotations": {"container.apparmor.security.beta.kubernetes.io/x": 5,
                                      "seccomp.security.alpha.kubernetes.io/pod": null}});
    for text in MALFORMED {
        let spec: Value = serde_json::from_str(text).expect(text);
        for version in [
            Version::Latest,
            Version::V(1, 0),
            Version::V(1, 18),
            Version::V(1, 24),
            Version::V(0, 5),
            Version::V(3, 0),
        ] {
            for meta in [None, Some(&meta), Some(&spec)] {
                let v = check_pod(Level::Restricted, version, meta, &spec, "x", &|i| {
                    i.is_empty()
                });
                let _ = summarize(Level::Restricted, version, &v);
            }
        }
    }
}

/// Arbitrary JSON whose object keys come from the fields the checks read, so that garbage
/// reaches deep into the evaluation.
fn arb_json() -> impl Strategy<Value = Value> {
    const KEYS: &[&str] = &[
        "containers",
        "initContainers",
        "ephemeralContainers",
        "securityContext",
        "name",
        "image",
        "ports",
        "hostPort",
        "capabilities",
        "add",
        "drop",
        "privileged",
        "procMount",
        "seLinuxOptions",
        "type",
        "user",
        "role",
        "seccompProfile",
        "appArmorProfile",
        "runAsNonRoot",
        "runAsUser",
        "allowPrivilegeEscalation",
        "windowsOptions",
        "hostProcess",
        "sysctls",
        "volumes",
        "hostPath",
        "nfs",
        "hostNetwork",
        "hostUsers",
        "os",
        "livenessProbe",
        "lifecycle",
        "preStop",
        "httpGet",
        "tcpSocket",
        "host",
        "annotations",
    ];
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        prop::sample::select(vec![
            "",
            "ALL",
            "windows",
            "Unmasked",
            "RuntimeDefault",
            "x",
            "kernel.x"
        ])
        .prop_map(Value::from),
    ];
    leaf.prop_recursive(5, 64, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(
                prop::sample::select(KEYS.to_vec()).prop_map(String::from),
                inner,
                0..5
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #[test]
    fn garbage_never_panics(spec in arb_json(), meta in arb_json(), minor in 0u32..40, latest in any::<bool>()) {
        let version = if latest { Version::Latest } else { Version::V(1, minor) };
        for level in [Level::Baseline, Level::Restricted] {
            let v = check_pod(level, version, Some(&meta), &spec, "spec.template", &|i| i == "x");
            prop_assert!(v.iter().all(|v| v.path.starts_with("spec.template.")));
            let _ = summarize(level, version, &v);
        }
    }
}
