//! No input panics the engine: arbitrary bytes, and arbitrary JSON where the object, the
//! old object and the well-known fields are, through the full policy set in both modes.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use fluxadmit_core::cluster::load_dir;
use fluxadmit_core::engine::Mode;
use fluxadmit_core::policy::load::load_paths;
use fluxadmit_core::state::Snapshot;
use proptest::prelude::*;
use serde_json::{Value, json};
use std::path::PathBuf;
use std::sync::OnceLock;

fn snapshot() -> &'static Snapshot {
    static SNAP: OnceLock<Snapshot> = OnceLock::new();
    SNAP.get_or_init(|| {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        Snapshot {
            policies: load_paths(&[root.join("policies"), root.join("policies/examples")]).unwrap(),
            view: load_dir(&[root.join("tests/fixtures/flux-state")]).unwrap(),
        }
    })
}

fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        "[a-zA-Z0-9*.(+)<>/_-]{0,8}".prop_map(Value::from),
    ];
    leaf.prop_recursive(5, 64, 6, |inner| {
        let keys = prop_oneof![
            Just("spec".to_owned()),
            Just("metadata".to_owned()),
            Just("containers".to_owned()),
            Just("initContainers".to_owned()),
            Just("securityContext".to_owned()),
            Just("template".to_owned()),
            Just("dependsOn".to_owned()),
            Just("valuesFrom".to_owned()),
            Just("name".to_owned()),
            Just("namespace".to_owned()),
            Just("image".to_owned()),
            Just("values".to_owned()),
            Just("labels".to_owned()),
            Just("volumes".to_owned()),
            Just("readyExpr".to_owned()),
            Just("jobTemplate".to_owned()),
            Just("imagePullSecrets".to_owned()),
            "[a-z]{1,6}",
        ];
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            proptest::collection::btree_map(keys, inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn kind() -> impl Strategy<Value = (&'static str, &'static str, &'static str)> {
    prop_oneof![
        Just(("", "v1", "Pod")),
        Just(("apps", "v1", "Deployment")),
        Just(("batch", "v1", "CronJob")),
        Just(("helm.toolkit.fluxcd.io", "v2", "HelmRelease")),
        Just(("kustomize.toolkit.fluxcd.io", "v1", "Kustomization")),
        Just(("fluxadmit.io", "v1alpha1", "DeploymentPolicy")),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_are_a_clean_error_or_an_answer(body in proptest::collection::vec(any::<u8>(), 0..256)) {
        for mode in [Mode::Validate, Mode::Mutate] {
            let _ = snapshot().review(mode, &body);
        }
    }

    #[test]
    fn arbitrary_objects_get_an_answer(
        (group, version, kind) in kind(),
        mut object in any_json(),
        old in any_json(),
        ns in "[a-z]{0,6}",
        op in prop_oneof![Just("CREATE"), Just("UPDATE"), Just("DELETE")],
    ) {
        let api_version = if group.is_empty() { version.to_owned() } else { format!("{group}/{version}") };
        if let Some(o) = object.as_object_mut() {
            o.insert("apiVersion".into(), json!(api_version));
            o.insert("kind".into(), json!(kind));
        }
        let body = serde_json::to_vec(&json!({
            "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {"uid": "u", "kind": {"group": group, "version": version, "kind": kind},
                "resource": {"group": group, "version": version, "resource": "x"},
                "name": "n", "namespace": ns, "operation": op, "userInfo": {},
                "object": object, "oldObject": old}
        })).unwrap();
        for mode in [Mode::Validate, Mode::Mutate] {
            if let Ok(answer) = snapshot().review(mode, &body) {
                let v: Value = serde_json::from_slice(&answer.body).unwrap();
                prop_assert_eq!(&v["response"]["uid"], "u");
            }
        }
    }
}
