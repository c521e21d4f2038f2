//! The JSON Patch from an object to its mutated form. Mutations change a few leaves of a large
//! object, so maps (and lists of unchanged length) are walked here, skipping every subtree that
//! compares equal before any pointer is built; what differs below is handed to
//! `json_patch::diff`. On a 6 KB Deployment this is several times faster than diffing it whole.

use json_patch::jsonptr::{Pointer, PointerBuf};
use json_patch::{AddOperation, Patch, PatchOperation, RemoveOperation};
use serde_json::Value;

/// An RFC 6902 patch that turns `from` into `to`.
pub fn diff(from: &Value, to: &Value) -> Patch {
    let mut ops = Vec::new();
    if from != to {
        walk(from, to, &mut PointerBuf::new(), &mut ops);
    }
    Patch(ops)
}

/// `from` and `to` differ.
fn walk(from: &Value, to: &Value, path: &mut PointerBuf, ops: &mut Vec<PatchOperation>) {
    match (from, to) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, va) in a {
                match b.get(k) {
                    None => {
                        path.push_back(k);
                        ops.push(PatchOperation::Remove(RemoveOperation {
                            path: path.clone(),
                        }));
                        path.pop_back();
                    }
                    Some(vb) if va != vb => {
                        path.push_back(k);
                        walk(va, vb, path, ops);
                        path.pop_back();
                    }
                    Some(_) => {}
                }
            }
            for (k, vb) in b {
                if !a.contains_key(k) {
                    path.push_back(k);
                    ops.push(PatchOperation::Add(AddOperation {
                        path: path.clone(),
                        value: vb.clone(),
                    }));
                    path.pop_back();
                }
            }
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => {
            for (i, (va, vb)) in a.iter().zip(b).enumerate() {
                if va != vb {
                    path.push_back(i);
                    walk(va, vb, path, ops);
                    path.pop_back();
                }
            }
        }
        _ => ops.extend(prefixed(json_patch::diff(from, to), path)),
    }
}

/// The patch's operations with every path (and `from`) moved under `prefix`.
pub fn prefixed(mut patch: Patch, prefix: &Pointer) -> Vec<PatchOperation> {
    if prefix.is_root() {
        return patch.0;
    }
    for op in &mut patch.0 {
        match op {
            PatchOperation::Add(o) => o.path = prefix.concat(&o.path),
            PatchOperation::Remove(o) => o.path = prefix.concat(&o.path),
            PatchOperation::Replace(o) => o.path = prefix.concat(&o.path),
            PatchOperation::Test(o) => o.path = prefix.concat(&o.path),
            PatchOperation::Move(o) => {
                o.path = prefix.concat(&o.path);
                o.from = prefix.concat(&o.from);
            }
            PatchOperation::Copy(o) => {
                o.path = prefix.concat(&o.path);
                o.from = prefix.concat(&o.from);
            }
        }
    }
    patch.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            (-3i64..3).prop_map(Value::from),
            "[a-c~/]{0,3}".prop_map(Value::from),
        ];
        leaf.prop_recursive(4, 40, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
                proptest::collection::btree_map("[a-c~/]{1,2}", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn patch_turns_from_into_to(from in json_value(), to in json_value()) {
            let p = diff(&from, &to);
            let mut got = from.clone();
            json_patch::patch(&mut got, &p).unwrap();
            prop_assert_eq!(got, to);
            prop_assert_eq!(diff(&from, &from).0.len(), 0);
        }
    }

    #[test]
    fn only_what_changed_and_escaped_paths() {
        let from =
            json!({"metadata": {"name": "w"}, "spec": {"containers": [{"name": "a"}], "x/y": 1}});
        let to = json!({"metadata": {"name": "w"}, "spec": {"containers": [{"name": "a", "securityContext": {"runAsNonRoot": true}}], "x/y": 2}});
        let p = serde_json::to_value(diff(&from, &to)).unwrap();
        assert_eq!(
            p,
            json!([
                {"op": "add", "path": "/spec/containers/0/securityContext", "value": {"runAsNonRoot": true}},
                {"op": "replace", "path": "/spec/x~1y", "value": 2}
            ])
        );
    }
}
