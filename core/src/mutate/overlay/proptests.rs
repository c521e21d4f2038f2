use proptest::prelude::*;
use serde_json::{Map, Value, json};

use super::Overlay;
use super::tests::{compile, restricted};
use crate::mutate::journal::Journal;

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        (-3i64..70000).prop_map(Value::from),
        "[a-z]{0,6}".prop_map(Value::String),
    ]
}

fn junk() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(3, 12, 3, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..3).prop_map(Value::Array),
            prop::collection::btree_map("[a-z]{1,4}", inner, 0..3)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A map built from optional fields: `None` leaves the key out.
fn object(fields: Vec<(&'static str, Option<Value>)>, extra: Vec<(String, Value)>) -> Value {
    let mut m: Map<String, Value> = extra.into_iter().collect();
    for (k, v) in fields {
        if let Some(v) = v {
            m.insert(k.to_string(), v);
        }
    }
    Value::Object(m)
}

fn extra_fields() -> impl Strategy<Value = Vec<(String, Value)>> {
    prop::collection::vec(("x-[a-z]{1,3}", junk()), 0..3)
}

fn seccomp() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        Just(json!({})),
        Just(json!({ "type": "Unconfined" })),
        Just(json!({ "type": "Localhost", "localhostProfile": "p.json" })),
    ]
}

fn container_sc() -> impl Strategy<Value = Option<Value>> {
    let caps = prop_oneof![
        Just(Value::Null),
        Just(json!({})),
        Just(json!({ "drop": ["NET_RAW"] })),
        Just(json!({ "add": ["NET_ADMIN"] })),
    ];
    let fields = (
        prop::option::of(prop_oneof![
            any::<bool>().prop_map(Value::Bool),
            Just(Value::Null)
        ]),
        prop::option::of(caps),
        prop::option::of(any::<bool>().prop_map(Value::Bool)),
        prop::option::of(any::<bool>().prop_map(Value::Bool)),
        prop::option::of(seccomp()),
        prop::option::of((0i64..2000).prop_map(Value::from)),
        prop::option::of(any::<bool>().prop_map(Value::Bool)),
        extra_fields(),
    )
        .prop_map(|(ape, caps, rorf, ranr, sp, user, privileged, extra)| {
            object(
                vec![
                    ("allowPrivilegeEscalation", ape),
                    ("capabilities", caps),
                    ("readOnlyRootFilesystem", rorf),
                    ("runAsNonRoot", ranr),
                    ("seccompProfile", sp),
                    ("runAsUser", user),
                    ("privileged", privileged),
                ],
                extra,
            )
        });
    prop::option::of(prop_oneof![1 => Just(Value::Null), 6 => fields])
}

fn container() -> impl Strategy<Value = Value> {
    (
        prop::option::of(prop_oneof![
            "(web|db|proxy|init)".prop_map(Value::String),
            Just(Value::Null)
        ]),
        prop::option::of(
            "[a-z]{1,5}\\.azurecr\\.io/[a-z]{1,4}:1|docker\\.io/[a-z]{1,4}".prop_map(Value::String),
        ),
        container_sc(),
        extra_fields(),
    )
        .prop_map(|(name, image, sc, extra)| {
            object(
                vec![("name", name), ("image", image), ("securityContext", sc)],
                extra,
            )
        })
}

fn containers() -> impl Strategy<Value = Option<Value>> {
    prop::option::of(prop_oneof![
        1 => Just(Value::Null),
        8 => prop::collection::vec(container(), 0..4).prop_map(Value::Array),
    ])
}

/// Pod-like objects: `{metadata, spec: {securityContext, containers, initContainers, ...}}`.
fn pod() -> impl Strategy<Value = Value> {
    let pod_sc = prop::option::of(prop_oneof![
        1 => Just(Value::Null),
        5 => (
            prop::option::of(any::<bool>().prop_map(Value::Bool)),
            prop::option::of(seccomp()),
            prop::option::of((0i64..3000).prop_map(Value::from)),
        )
            .prop_map(|(ranr, sp, fs)| {
                object(vec![("runAsNonRoot", ranr), ("seccompProfile", sp), ("fsGroup", fs)], vec![])
            }),
    ]);
    let spec =
        (pod_sc, containers(), containers(), extra_fields()).prop_map(|(sc, c, ic, extra)| {
            object(
                vec![
                    ("securityContext", sc),
                    ("containers", c),
                    ("initContainers", ic),
                ],
                extra,
            )
        });
    (
        prop::option::of(prop_oneof![1 => Just(Value::Null), 9 => spec]),
        extra_fields(),
    )
        .prop_map(|(spec, extra)| object(vec![("spec", spec)], extra))
}

fn applied(ov: &Overlay, x: &Value) -> Value {
    let mut v = x.clone();
    ov.apply(&mut v);
    v
}

#[derive(Clone, Debug)]
enum Seg {
    Key(String),
    Index(usize),
}

fn get<'a>(v: &'a Value, path: &[Seg]) -> Option<&'a Value> {
    path.iter().try_fold(v, |cur, seg| match seg {
        Seg::Key(k) => cur.as_object()?.get(k),
        Seg::Index(i) => cur.as_array()?.get(*i),
    })
}

/// Leaves (non-map values and empty maps) of `after` that `before` does not have.
fn added_leaves(before: &Value, after: &Value, path: &mut Vec<Seg>, out: &mut Vec<Vec<Seg>>) {
    match after {
        Value::Object(m) if !m.is_empty() => {
            for (k, v) in m {
                path.push(Seg::Key(k.clone()));
                added_leaves(before, v, path, out);
                path.pop();
            }
        }
        Value::Array(a) if get(before, path).is_some_and(Value::is_array) => {
            for (i, v) in a.iter().enumerate() {
                path.push(Seg::Index(i));
                added_leaves(before, v, path, out);
                path.pop();
            }
        }
        _ if get(before, path).is_none() => out.push(path.clone()),
        _ => {}
    }
}

/// Removes the map entry at `path`, then every map left empty that `keep` has no map at.
fn remove_and_prune(v: &mut Value, path: &[Seg], keep: &Value) {
    let Some((Seg::Key(last), parent)) = path.split_last() else {
        return;
    };
    let mut parent_val = v.clone();
    let mut cur = &mut parent_val;
    for seg in parent {
        let next = match seg {
            Seg::Key(k) => cur.as_object_mut().and_then(|m| m.get_mut(k)),
            Seg::Index(i) => cur.as_array_mut().and_then(|a| a.get_mut(*i)),
        };
        let Some(next) = next else { return };
        cur = next;
    }
    let now_empty = cur.as_object_mut().is_some_and(|m| {
        m.remove(last);
        m.is_empty()
    });
    *v = parent_val;
    if now_empty && !get(keep, parent).is_some_and(Value::is_object) && !parent.is_empty() {
        remove_and_prune(v, parent, keep);
    }
}

/// The `+()` locations of the restricted overlay that hold a value in `x`.
fn add_anchor_paths(x: &Value) -> Vec<String> {
    let mut out = vec![
        "/spec/securityContext/runAsNonRoot".to_string(),
        "/spec/securityContext/seccompProfile".to_string(),
    ];
    let n = x
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .map_or(0, Vec::len);
    for i in 0..n {
        for f in [
            "allowPrivilegeEscalation",
            "capabilities",
            "readOnlyRootFilesystem",
            "runAsNonRoot",
            "seccompProfile",
        ] {
            out.push(format!("/spec/containers/{i}/securityContext/{f}"));
        }
    }
    out.retain(|p| x.pointer(p).is_some());
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn deterministic(x in pod()) {
        let a = applied(&compile(restricted()), &x);
        let b = applied(&compile(restricted()), &x);
        prop_assert_eq!(a, b);
    }

    #[test]
    fn idempotent(x in pod()) {
        let ov = compile(restricted());
        let once = applied(&ov, &x);
        let mut twice = once.clone();
        prop_assert!(!ov.apply(&mut twice));
        prop_assert_eq!(twice, once);
    }

    #[test]
    fn stable_under_removal_of_added_fields(x in pod(), mask in prop::collection::vec(any::<bool>(), 1..40)) {
        let ov = compile(restricted());
        let once = applied(&ov, &x);
        let mut leaves = Vec::new();
        added_leaves(&x, &once, &mut Vec::new(), &mut leaves);
        let mut damaged = once.clone();
        for (i, path) in leaves.iter().enumerate() {
            if mask.get(i % mask.len()).copied().unwrap_or(false) {
                remove_and_prune(&mut damaged, path, &x);
            }
        }
        prop_assert_eq!(applied(&ov, &damaged), once);
    }

    #[test]
    fn json_patch_diff_round_trips(x in pod()) {
        let ov = compile(restricted());
        let once = applied(&ov, &x);
        let mut patched = x.clone();
        prop_assert!(json_patch::patch(&mut patched, &json_patch::diff(&x, &once)).is_ok());
        prop_assert_eq!(&patched, &once);
        let mut via_api = x.clone();
        if let Some(p) = ov.json_patch(&x) {
            prop_assert!(json_patch::patch(&mut via_api, &p).is_ok());
        }
        prop_assert_eq!(via_api, once);
    }

    #[test]
    fn values_at_add_anchors_are_kept(x in pod()) {
        let once = applied(&compile(restricted()), &x);
        for p in add_anchor_paths(&x) {
            prop_assert_eq!(once.pointer(&p), x.pointer(&p), "{}", p);
        }
    }

    #[test]
    fn arbitrary_overlays_never_panic(ov in anchor_soup(), x in junk()) {
        if let Ok(ov) = Overlay::compile(&ov) {
            let once = applied(&ov, &x);
            let mut again = once.clone();
            ov.apply(&mut again);
        }
    }

    /// Any overlay, applied a second time, changes nothing: a reinvoked mutating webhook and
    /// Flux's dry-run of an object the webhook already mutated see no drift.
    #[test]
    fn arbitrary_overlays_are_idempotent(ov in anchor_soup(), x in junk(), y in pod()) {
        let Ok(ov) = Overlay::compile(&ov) else { return Ok(()) };
        for x in [x, y] {
            let once = applied(&ov, &x);
            let mut twice = once.clone();
            prop_assert!(!ov.apply(&mut twice), "second application reported a change");
            prop_assert_eq!(twice, once);
        }
    }

    /// The patch built from the logged writes turns the input into the output, is empty when
    /// nothing changed, and the undo gives the input back exactly (what the engine relies on
    /// when it mutates the request's own object).
    #[test]
    fn logged_writes_give_the_patch_and_the_undo(ov in anchor_soup(), x in junk(), y in pod()) {
        for (ov, x) in [(Overlay::compile(&ov), x), (Ok(compile(restricted())), y)] {
            let Ok(ov) = ov else { continue };
            let mut v = x.clone();
            let mut journal = Journal::new();
            let changed = ov.apply_logged(&mut v, &mut journal);
            prop_assert_eq!(changed, v != x);
            prop_assert_eq!(&v, &applied(&ov, &x));
            let ops = journal.patch(&v);
            prop_assert_eq!(ops.is_empty(), v == x);
            let mut patched = x.clone();
            prop_assert!(json_patch::patch(&mut patched, &json_patch::Patch(ops)).is_ok());
            prop_assert_eq!(&patched, &v);
            journal.undo(&mut v);
            prop_assert_eq!(v, x);
        }
    }
}

/// Random overlays mixing anchors, malformed anchors, patterns and lists.
fn anchor_soup() -> impl Strategy<Value = Value> {
    let key = prop_oneof![
        "[a-c]{1,2}",
        "\\((a|b|name)\\)",
        "\\+\\([a-c]\\)",
        "<\\([a-c]\\)",
        "[=X^!-]?\\(?[a-c]?\\)?",
    ];
    let scalar = prop_oneof![leaf(), "[*?|&!<>=0-9a-c-]{0,6}".prop_map(Value::String)];
    scalar.prop_recursive(4, 24, 4, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..3).prop_map(Value::Array),
            prop::collection::btree_map(key.clone(), inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}
