use serde_json::{Value, json};

use super::Overlay;

/// The "restricted security context" overlay, at pod-spec level.
pub(super) fn restricted() -> Value {
    json!({
        "spec": {
            "securityContext": {
                "+(runAsNonRoot)": true,
                "+(seccompProfile)": { "+(type)": "RuntimeDefault" }
            },
            "containers": [{
                "(name)": "*",
                "securityContext": {
                    "+(allowPrivilegeEscalation)": false,
                    "+(capabilities)": { "+(drop)": ["ALL"] },
                    "+(readOnlyRootFilesystem)": true,
                    "+(runAsNonRoot)": true,
                    "+(seccompProfile)": { "+(type)": "RuntimeDefault" }
                }
            }]
        }
    })
}

fn restricted_with_init() -> Value {
    let mut o = restricted();
    let containers = o["spec"]["containers"].clone();
    o["spec"]["initContainers"] = containers;
    o
}

fn expected_container_sc() -> Value {
    json!({
        "allowPrivilegeEscalation": false,
        "capabilities": { "drop": ["ALL"] },
        "readOnlyRootFilesystem": true,
        "runAsNonRoot": true,
        "seccompProfile": { "type": "RuntimeDefault" }
    })
}

fn deployment() -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": { "name": "web", "namespace": "shop" },
        "spec": {
            "replicas": 2,
            "selector": { "matchLabels": { "app": "web" } },
            "template": {
                "metadata": { "labels": { "app": "web" } },
                "spec": {
                    "initContainers": [{ "name": "migrate", "image": "ghcr.io/acme/migrate:1" }],
                    "containers": [
                        { "name": "web", "image": "ghcr.io/acme/web:1.2", "ports": [{ "containerPort": 8080 }] },
                        { "name": "sidecar", "image": "envoyproxy/envoy:v1.30" }
                    ]
                }
            }
        }
    })
}

pub(super) fn compile(v: Value) -> Overlay {
    match Overlay::compile(&v) {
        Ok(o) => o,
        Err(e) => panic!("compile failed: {e}"),
    }
}

pub(super) fn applied(overlay: &Value, target: &Value) -> (Value, bool) {
    let mut t = target.clone();
    let changed = compile(overlay.clone()).apply(&mut t);
    (t, changed)
}

fn assert_no_anchor_keys(v: &Value) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                assert!(
                    !k.contains('(') && !k.contains(')'),
                    "anchor key {k} leaked"
                );
                assert_no_anchor_keys(v);
            }
        }
        Value::Array(a) => a.iter().for_each(assert_no_anchor_keys),
        _ => {}
    }
}

#[test]
fn restricted_overlay_on_deployment_template() {
    let mut d = deployment();
    let ov = compile(restricted());
    assert!(ov.apply(&mut d["spec"]["template"]));
    let spec = &d["spec"]["template"]["spec"];
    assert_eq!(
        spec["securityContext"],
        json!({ "runAsNonRoot": true, "seccompProfile": { "type": "RuntimeDefault" } })
    );
    for c in spec["containers"].as_array().into_iter().flatten() {
        assert_eq!(
            c["securityContext"],
            expected_container_sc(),
            "container {}",
            c["name"]
        );
    }
    // Untouched: the overlay does not list initContainers; other fields stay as they were.
    assert_eq!(
        spec["initContainers"],
        deployment()["spec"]["template"]["spec"]["initContainers"]
    );
    assert_eq!(
        spec["containers"][0]["ports"],
        json!([{ "containerPort": 8080 }])
    );
    assert_eq!(spec["containers"].as_array().map(Vec::len), Some(2));
    assert_no_anchor_keys(&d);
    // Idempotent.
    assert!(!ov.apply(&mut d["spec"]["template"]));
}

#[test]
fn restricted_overlay_covers_init_containers_when_listed() {
    let mut d = deployment();
    compile(restricted_with_init()).apply(&mut d["spec"]["template"]);
    let spec = &d["spec"]["template"]["spec"];
    assert_eq!(
        spec["initContainers"][0]["securityContext"],
        expected_container_sc()
    );
    assert_eq!(
        spec["containers"][1]["securityContext"],
        expected_container_sc()
    );
}

#[test]
fn init_containers_absent_are_not_created() {
    let target = json!({ "spec": { "containers": [{ "name": "a" }] } });
    let (out, _) = applied(&restricted_with_init(), &target);
    assert!(out["spec"].get("initContainers").is_none());
}

#[test]
fn explicit_user_values_are_kept() {
    let target = json!({ "spec": {
        "securityContext": { "runAsNonRoot": false },
        "containers": [{ "name": "a", "securityContext": { "readOnlyRootFilesystem": false, "runAsUser": 0 } }]
    }});
    let (out, changed) = applied(&restricted(), &target);
    assert!(changed);
    assert_eq!(
        out["spec"]["securityContext"],
        json!({ "runAsNonRoot": false, "seccompProfile": { "type": "RuntimeDefault" } })
    );
    let sc = &out["spec"]["containers"][0]["securityContext"];
    assert_eq!(sc["readOnlyRootFilesystem"], json!(false));
    assert_eq!(sc["runAsUser"], json!(0));
    assert_eq!(sc["allowPrivilegeEscalation"], json!(false));
}

#[test]
fn add_anchor_never_merges_into_an_existing_value() {
    // Kyverno drops a `+(key)` entry whole when the key exists, whatever its value.
    let target = json!({ "spec": { "containers": [{ "name": "a", "securityContext": {
        "capabilities": { "add": ["NET_ADMIN"] },
        "seccompProfile": null
    }}]}});
    let (out, _) = applied(&restricted(), &target);
    let sc = &out["spec"]["containers"][0]["securityContext"];
    assert_eq!(sc["capabilities"], json!({ "add": ["NET_ADMIN"] }));
    assert_eq!(sc["seccompProfile"], Value::Null);
    assert_eq!(sc["runAsNonRoot"], json!(true));
}

#[test]
fn plain_keys_set_and_merge() {
    let ov = json!({ "metadata": { "labels": { "team": "a" } }, "spec": { "replicas": 3, "args": ["x"] } });
    let target = json!({ "metadata": { "labels": { "app": "w", "team": "b" } }, "spec": { "replicas": 1, "args": ["y", "z"] } });
    let (out, changed) = applied(&ov, &target);
    assert!(changed);
    assert_eq!(
        out,
        json!({ "metadata": { "labels": { "app": "w", "team": "a" } }, "spec": { "replicas": 3, "args": ["x"] } })
    );
}

#[test]
fn map_replaces_non_map_and_null_deletes() {
    let ov = json!({ "a": { "b": 1 }, "gone": null, "missing": null });
    let (out, _) = applied(&ov, &json!({ "a": "scalar", "gone": 5, "keep": 1 }));
    assert_eq!(out, json!({ "a": { "b": 1 }, "keep": 1 }));
}

#[test]
fn empty_map_literal_creates_but_only_anchors_do_not() {
    let (out, _) = applied(&json!({ "emptyDir": {} }), &json!({}));
    assert_eq!(out, json!({ "emptyDir": {} }));
    let ov = json!({ "spec": { "containers": [{ "(name)": "*", "image": "x" }] } });
    let (out, changed) = applied(&ov, &json!({ "metadata": {} }));
    assert!(!changed);
    assert_eq!(out, json!({ "metadata": {} }));
}

#[test]
fn condition_on_image_pattern() {
    let ov = json!({ "spec": { "containers": [{
        "(image)": "*.azurecr.io/*",
        "imagePullPolicy": "Always",
        "name": "renamed?"
    }]}});
    let target = json!({ "spec": { "containers": [
        { "name": "a", "image": "acme.azurecr.io/web:1" },
        { "name": "b", "image": "docker.io/library/nginx" },
        { "name": "c" },
        { "name": "d", "image": "other.azurecr.io/x:2", "imagePullPolicy": "IfNotPresent" }
    ]}});
    let (out, changed) = applied(&ov, &target);
    assert!(changed);
    let c = &out["spec"]["containers"];
    assert_eq!(
        c[0],
        json!({ "name": "a", "image": "acme.azurecr.io/web:1", "imagePullPolicy": "Always" })
    );
    assert_eq!(c[1], target["spec"]["containers"][1]);
    assert_eq!(c[2], target["spec"]["containers"][2]);
    assert_eq!(c[3]["imagePullPolicy"], json!("Always"));
    assert_eq!(
        c[3]["name"],
        json!("d"),
        "a plain `name` in a conditional element never renames"
    );
}

#[test]
fn nested_condition_skips_only_that_element() {
    let ov = json!({ "spec": { "containers": [{
        "(name)": "*",
        "securityContext": { "(privileged)": true, "+(runAsUser)": 1000 },
        "image": "patched"
    }]}});
    let target = json!({ "spec": { "containers": [
        { "name": "a", "image": "x", "securityContext": { "privileged": true } },
        { "name": "b", "image": "y", "securityContext": { "privileged": false } },
        { "name": "c", "image": "z" }
    ]}});
    let (out, _) = applied(&ov, &target);
    let c = &out["spec"]["containers"];
    assert_eq!(
        c[0],
        json!({ "name": "a", "image": "patched", "securityContext": { "privileged": true, "runAsUser": 1000 } })
    );
    assert_eq!(c[1], target["spec"]["containers"][1]);
    assert_eq!(c[2], target["spec"]["containers"][2]);
}

#[test]
fn condition_outside_lists_gates_the_whole_overlay() {
    let ov = json!({ "metadata": { "labels": { "(app)": "web|api", "+(tier)": "front" } }, "spec": { "x": 1 } });
    let (out, changed) = applied(&ov, &json!({ "metadata": { "labels": { "app": "db" } } }));
    assert!(!changed);
    assert_eq!(out, json!({ "metadata": { "labels": { "app": "db" } } }));
    let (out, _) = applied(&ov, &json!({ "metadata": { "labels": { "app": "api" } } }));
    assert_eq!(
        out,
        json!({ "metadata": { "labels": { "app": "api", "tier": "front" } }, "spec": { "x": 1 } })
    );
    // A missing key fails the condition too.
    let (_, changed) = applied(&ov, &json!({ "metadata": {} }));
    assert!(!changed);
}

#[test]
fn global_anchor_in_list_gates_everything() {
    let ov = json!({ "spec": {
        "containers": [{ "name": "*", "<(image)": "corp.example.com/*" }],
        "imagePullSecrets": [{ "name": "corp-pull" }]
    }});
    let miss = json!({ "spec": { "containers": [{ "name": "a", "image": "docker.io/x" }] } });
    let (out, changed) = applied(&ov, &miss);
    assert!(!changed);
    assert_eq!(out, miss);
    let hit = json!({ "spec": { "containers": [
        { "name": "a", "image": "docker.io/x" },
        { "name": "b", "image": "corp.example.com/y" }
    ]}});
    let (out, changed) = applied(&ov, &hit);
    assert!(changed);
    assert_eq!(
        out["spec"]["imagePullSecrets"],
        json!([{ "name": "corp-pull" }])
    );
    assert_eq!(
        out["spec"]["containers"], hit["spec"]["containers"],
        "a gate element writes nothing"
    );
    // No containers at all: the gate fails.
    let (_, changed) = applied(&ov, &json!({ "spec": {} }));
    assert!(!changed);
}

#[test]
fn global_anchor_in_map_skips_and_rolls_back() {
    // `a` sorts before `z`, so `a` would be written first: the failure must undo it.
    let ov = json!({ "a": { "+(b)": 1 }, "z": { "<(env)": "prod" } });
    let (out, changed) = applied(&ov, &json!({ "z": { "env": "dev" } }));
    assert!(!changed);
    assert_eq!(out, json!({ "z": { "env": "dev" } }));
    let (out, _) = applied(&ov, &json!({ "z": { "env": "prod" } }));
    assert_eq!(out, json!({ "a": { "b": 1 }, "z": { "env": "prod" } }));
}

#[test]
fn list_elements_merge_by_name_or_append() {
    let ov = json!({ "spec": { "containers": [
        { "name": "web", "image": "web:2" },
        { "name": "proxy", "image": "envoy:1", "+(imagePullPolicy)": "IfNotPresent" }
    ]}});
    let target = json!({ "spec": { "containers": [
        { "name": "web", "image": "web:1", "ports": [] },
        { "name": "db", "image": "pg" }
    ]}});
    let (out, _) = applied(&ov, &target);
    assert_eq!(
        out["spec"]["containers"],
        json!([
            { "name": "web", "image": "web:2", "ports": [] },
            { "name": "db", "image": "pg" },
            { "name": "proxy", "image": "envoy:1", "imagePullPolicy": "IfNotPresent" }
        ])
    );
    let (again, changed) = applied(&ov, &out);
    assert!(!changed);
    assert_eq!(again, out);
    // Absent list: unconditional elements create it.
    let (out, _) = applied(&ov, &json!({}));
    assert_eq!(out["spec"]["containers"].as_array().map(Vec::len), Some(2));
}

#[test]
fn unkeyed_elements_are_appended_once() {
    let ov = json!({ "spec": { "tolerations": [{ "key": "gpu", "operator": "Exists" }] } });
    let target = json!({ "spec": { "tolerations": [{ "key": "a", "operator": "Exists" }] } });
    let (out, changed) = applied(&ov, &target);
    assert!(changed);
    assert_eq!(out["spec"]["tolerations"].as_array().map(Vec::len), Some(2));
    let (_, changed) = applied(&ov, &out);
    assert!(!changed);
}

#[test]
fn guarded_condition_adds_inside_existing_key() {
    let ov = json!({ "spec": { "containers": [{ "(name)": "*", "(resources)": { "+(limits)": { "memory": "256Mi" } } }] } });
    let target =
        json!({ "spec": { "containers": [{ "name": "a", "resources": {} }, { "name": "b" }] } });
    let (out, _) = applied(&ov, &target);
    assert_eq!(
        out["spec"]["containers"][0],
        json!({ "name": "a", "resources": { "limits": { "memory": "256Mi" } } })
    );
    assert_eq!(out["spec"]["containers"][1], json!({ "name": "b" }));
    // A value that is not a map is left alone: a condition never replaces what it tests.
    let ov = json!({ "spec": { "containers": [
        { "(name)": { "+(args)": "*" }, "imagePullPolicy": "Always" },
        { "name": "sidecar", "image": "envoy:v1" }
    ] } });
    let target = json!({ "spec": { "containers": [{ "name": "web", "image": "nginx:1.27" }] } });
    let (once, _) = applied(&ov, &target);
    assert_eq!(
        once["spec"]["containers"],
        json!([
            { "name": "web", "image": "nginx:1.27", "imagePullPolicy": "Always" },
            { "name": "sidecar", "image": "envoy:v1", "imagePullPolicy": "Always" }
        ])
    );
    let (twice, _) = applied(&ov, &once);
    assert_eq!(twice, once);
}

/// A list element whose deeper condition fails is rolled back whole, and then nothing changed:
/// `apply` says so and there is no patch.
#[test]
fn a_rolled_back_element_is_no_change() {
    let ov = compile(json!({"spec": {"containers": [
        {"(name)": "*", "a": 1, "b": {"(c)": "yes"}}
    ]}}));
    let before = json!({"spec": {"containers": [{"name": "x", "b": {"c": "no"}}]}});
    let mut t = before.clone();
    assert!(!ov.apply(&mut t));
    assert_eq!(t, before);
    assert!(ov.json_patch(&before).is_none());
}

/// Defaults for every container and an injected sidecar in one overlay: the sidecar gets the
/// defaults in the same pass (its own fields winning), so a second application is a no-op.
#[test]
fn container_defaults_reach_an_injected_sidecar_in_one_pass() {
    let ov = Overlay::compile(&json!({
        "spec": {"containers": [
            {"(name)": "*", "imagePullPolicy": "Always", "securityContext": {"+(runAsNonRoot)": true}},
            {"name": "proxy", "image": "envoy:v1", "imagePullPolicy": "IfNotPresent"}
        ]}
    }))
    .unwrap();
    let mut pod = json!({"spec": {"containers": [{"name": "web", "image": "nginx:1.27"}]}});
    assert!(ov.apply(&mut pod));
    assert_eq!(
        pod["spec"]["containers"],
        json!([
            {"name": "web", "image": "nginx:1.27", "imagePullPolicy": "Always",
             "securityContext": {"runAsNonRoot": true}},
            {"name": "proxy", "image": "envoy:v1", "imagePullPolicy": "IfNotPresent",
             "securityContext": {"runAsNonRoot": true}}
        ])
    );
    let once = pod.clone();
    assert!(!ov.apply(&mut pod), "second application changed {pod}");
    assert_eq!(pod, once);
}

/// An unkeyed element that a conditional element before it changes is appended once, as the
/// conditional element leaves it, and not again on the next application.
#[test]
fn unkeyed_element_changed_by_a_default_is_appended_once() {
    let ov = Overlay::compile(&json!({
        "spec": {"tolerations": [
            {"(key)": "*", "effect": "NoSchedule"},
            {"key": "dedicated", "operator": "Exists", "effect": "NoExecute"}
        ]}
    }))
    .unwrap();
    let mut pod = json!({"spec": {"tolerations": []}});
    assert!(ov.apply(&mut pod));
    assert_eq!(
        pod["spec"]["tolerations"],
        json!([{"key": "dedicated", "operator": "Exists", "effect": "NoSchedule"}])
    );
    let once = pod.clone();
    for _ in 0..3 {
        assert!(!ov.apply(&mut pod));
    }
    assert_eq!(pod, once);
}

/// Writes that cancel out are no change: `apply` says false and `json_patch` gives `None`.
#[test]
fn writes_that_cancel_out_are_no_change() {
    let ov = Overlay::compile(&json!({
        "spec": {"containers": [{"name": "web", "image": "a"}, {"name": "web", "image": "b"}]}
    }))
    .unwrap();
    let pod = json!({"spec": {"containers": [{"name": "web", "image": "b"}]}});
    let mut v = pod.clone();
    assert!(!ov.apply(&mut v));
    assert_eq!(v, pod);
    assert!(ov.json_patch(&pod).is_none());
    // From another image the net change is real.
    let other = json!({"spec": {"containers": [{"name": "web", "image": "c"}]}});
    let patch = ov.json_patch(&other).expect("a change");
    let mut patched = other.clone();
    json_patch::patch(&mut patched, &patch).unwrap();
    assert_eq!(patched["spec"]["containers"][0]["image"], "b");
}
