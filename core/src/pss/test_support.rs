//! Helpers shared by the test modules.

use serde_json::{Value, json};

use super::{Level, Version, check_pod};

/// A finding as `(check, path, message)`.
pub(super) type Finding = (String, String, String);

pub(super) fn findings(want: &[(&str, &str, &str)]) -> Vec<Finding> {
    want.iter()
        .map(|(c, p, m)| (c.to_string(), p.to_string(), m.to_string()))
        .collect()
}

/// A Pod document (`{"metadata": ..., "spec": ...}`) with one unprivileged container.
pub(super) fn baseline_pod() -> Value {
    json!({"metadata": {}, "spec": {"containers": [{"name": "app", "image": "nginx"}]}})
}

/// A Pod document that satisfies the restricted level at every version.
pub(super) fn restricted_pod() -> Value {
    json!({
        "metadata": {},
        "spec": {
            "securityContext": {"runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{
                "name": "app",
                "image": "nginx",
                "securityContext": {"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}}
            }]
        }
    })
}

/// A container that satisfies the restricted level on its own.
pub(super) fn restricted_container(name: &str, image: &str) -> Value {
    json!({
        "name": name,
        "image": image,
        "securityContext": {"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}}
    })
}

/// Sets `value` at a JSON pointer, creating objects and array slots along the way.
pub(super) fn set(doc: &mut Value, pointer: &str, value: Value) {
    let parts: Vec<String> = pointer
        .split('/')
        .skip(1)
        .map(|p| p.replace("~1", "/").replace("~0", "~"))
        .collect();
    set_at(doc, &parts, value);
}

fn set_at(cur: &mut Value, parts: &[String], value: Value) {
    let Some((first, rest)) = parts.split_first() else {
        *cur = value;
        return;
    };
    if let (Value::Array(arr), Ok(i)) = (&mut *cur, first.parse::<usize>()) {
        while arr.len() <= i {
            arr.push(json!({}));
        }
        return set_at(&mut arr[i], rest, value);
    }
    if !cur.is_object() {
        *cur = json!({});
    }
    let obj = cur.as_object_mut().expect("just made an object");
    let next_is_index = rest.first().is_some_and(|p| p.parse::<usize>().is_ok());
    let slot = obj.entry(first.clone()).or_insert(if next_is_index {
        json!([])
    } else {
        Value::Null
    });
    set_at(slot, rest, value);
}

/// Applies `(pointer, json text)` edits to a copy of `doc`.
pub(super) fn tweak(doc: &Value, edits: &[(&str, &str)]) -> Value {
    let mut doc = doc.clone();
    for (pointer, text) in edits {
        let value = serde_json::from_str(text).unwrap_or_else(|e| panic!("bad JSON {text}: {e}"));
        set(&mut doc, pointer, value);
    }
    doc
}

pub(super) fn eval(level: Level, version: Version, doc: &Value) -> Vec<Finding> {
    eval_with(level, version, doc, "", &|_| false)
}

pub(super) fn eval_with(
    level: Level,
    version: Version,
    doc: &Value,
    prefix: &str,
    exempt: &dyn Fn(&str) -> bool,
) -> Vec<Finding> {
    check_pod(
        level,
        version,
        doc.get("metadata"),
        &doc["spec"],
        prefix,
        exempt,
    )
    .into_iter()
    .map(|v| (v.check.to_string(), v.path, v.message))
    .collect()
}

/// Asserts that `doc` yields exactly `want` at `level`/`version`.
#[track_caller]
pub(super) fn assert_findings(
    level: Level,
    version: Version,
    doc: &Value,
    want: &[(&str, &str, &str)],
) {
    assert_eq!(
        eval(level, version, doc),
        findings(want),
        "{level}:{version} for {doc}"
    );
}
