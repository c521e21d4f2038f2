//! Application of a compiled overlay to a target value, in place.

use serde_json::{Map, Value};

use super::compile::{Elem, Entry, ListNode, MapNode, Node};

/// Why processing of a scope stopped.
#[derive(Debug, PartialEq)]
enum Halt {
    /// A `(key)` condition failed: skip the nearest list element (or the whole overlay).
    Cond,
    /// A `<(key)` condition failed: skip the whole overlay.
    Global,
}

type Step = Result<(), Halt>;

pub(super) fn apply_root(root: &MapNode, may_halt: bool, target: &mut Value) -> bool {
    let mut changed = false;
    if may_halt {
        // A failure anywhere must leave the target untouched: work on a copy.
        let mut work = target.clone();
        if merge_value(root, &mut work, &mut changed).is_ok() && changed {
            *target = work;
            return true;
        }
        false
    } else {
        // Nothing can halt at this scope; conditional list elements roll back on their own.
        let _ = merge_value(root, target, &mut changed);
        changed
    }
}

/// Merges `m` into `slot`. A slot that is not a map counts as absent (Kyverno treats it as a nil
/// resource): it is replaced by a new map only when the overlay produces something.
fn merge_value(m: &MapNode, slot: &mut Value, changed: &mut bool) -> Step {
    if let Value::Object(obj) = slot {
        return merge_map(m, obj, changed);
    }
    let mut fresh = Map::new();
    merge_map(m, &mut fresh, &mut false)?;
    if !fresh.is_empty() || m.literal_empty {
        *slot = Value::Object(fresh);
        *changed = true;
    }
    Ok(())
}

fn merge_map(m: &MapNode, obj: &mut Map<String, Value>, changed: &mut bool) -> Step {
    if !m
        .globals
        .iter()
        .all(|(k, p)| obj.get(k).is_some_and(|v| p.matches(v)))
    {
        return Err(Halt::Global);
    }
    if !m
        .conditions
        .iter()
        .all(|(k, p)| obj.get(k).is_some_and(|v| p.matches(v)))
        || !m.guarded.iter().all(|(k, _)| obj.contains_key(k))
    {
        return Err(Halt::Cond);
    }
    for (k, sub) in &m.guarded {
        if let Some(v) = obj.get_mut(k) {
            merge_value(sub, v, changed)?;
        }
    }
    for e in &m.entries {
        apply_entry(e, obj, changed)?;
    }
    Ok(())
}

fn apply_entry(e: &Entry, obj: &mut Map<String, Value>, changed: &mut bool) -> Step {
    if e.add_if_absent && obj.contains_key(&e.key) {
        return Ok(());
    }
    match &e.node {
        Node::Delete => {
            if obj.remove(&e.key).is_some() {
                *changed = true;
            }
        }
        Node::Literal(v) => {
            if obj.get(&e.key) != Some(v) {
                obj.insert(e.key.clone(), v.clone());
                *changed = true;
            }
        }
        Node::Map(m) => with_slot(obj, &e.key, changed, |slot, ch| merge_value(m, slot, ch))?,
        Node::List(l) => with_slot(obj, &e.key, changed, |slot, ch| {
            merge_list_value(l, slot, ch)
        })?,
    }
    Ok(())
}

/// Runs `f` on the value at `key`, or on a placeholder `null` that is inserted only if `f`
/// turned it into something.
fn with_slot(
    obj: &mut Map<String, Value>,
    key: &str,
    changed: &mut bool,
    f: impl FnOnce(&mut Value, &mut bool) -> Step,
) -> Step {
    if let Some(slot) = obj.get_mut(key) {
        return f(slot, changed);
    }
    let mut slot = Value::Null;
    let mut made = false;
    f(&mut slot, &mut made)?;
    if made {
        obj.insert(key.to_string(), slot);
        *changed = true;
    }
    Ok(())
}

/// A slot that is not a list counts as absent; it becomes a list only if elements get added.
fn merge_list_value(l: &ListNode, slot: &mut Value, changed: &mut bool) -> Step {
    if let Value::Array(arr) = slot {
        return merge_list(l, arr, changed);
    }
    let mut fresh = Vec::new();
    merge_list(l, &mut fresh, &mut false)?;
    if !fresh.is_empty() {
        *slot = Value::Array(fresh);
        *changed = true;
    }
    Ok(())
}

fn merge_list(l: &ListNode, arr: &mut Vec<Value>, changed: &mut bool) -> Step {
    for elem in &l.elems {
        match elem {
            Elem::Gate(m) => {
                if !arr.iter().any(|t| satisfies(m, Some(t))) {
                    return Err(Halt::Global);
                }
            }
            Elem::Conditional(m) => {
                for t in arr.iter_mut() {
                    if !satisfies_here(m, t) {
                        continue;
                    }
                    if !m.deep_cond && m.globals.is_empty() {
                        // Nothing below can fail: apply in place.
                        merge_value(m, t, changed)?;
                        continue;
                    }
                    // Conditions deeper down may still fail: apply to a copy, keep it on success.
                    let mut work = t.clone();
                    let mut c = false;
                    match merge_value(m, &mut work, &mut c) {
                        Ok(()) if c => {
                            *t = work;
                            *changed = true;
                        }
                        Ok(()) | Err(Halt::Cond) => {}
                        Err(Halt::Global) => return Err(Halt::Global),
                    }
                }
            }
            Elem::Keyed { name, body } => {
                let found = arr.iter_mut().find(|t| t.get("name") == Some(name));
                match found {
                    Some(t) => merge_value(body, t, changed)?,
                    None => append(body, arr, changed)?,
                }
            }
            Elem::Unkeyed(body) => append(body, arr, changed)?,
        }
    }
    Ok(())
}

/// Appends the element the overlay describes, unless an equal one is already there.
fn append(body: &MapNode, arr: &mut Vec<Value>, changed: &mut bool) -> Step {
    let mut v = Value::Object(Map::new());
    merge_value(body, &mut v, &mut false)?;
    if !arr.contains(&v) {
        arr.push(v);
        *changed = true;
    }
    Ok(())
}

/// The conditions of `m` itself (not below it) hold on `t`: a cheap pre-check before copying.
fn satisfies_here(m: &MapNode, t: &Value) -> bool {
    let obj = t.as_object();
    let get = |k: &String| obj.and_then(|o| o.get(k));
    m.conditions
        .iter()
        .all(|(k, p)| get(k).is_some_and(|v| p.matches(v)))
        && m.guarded.iter().all(|(k, _)| get(k).is_some())
}

/// All condition and global anchors of `m` and the maps below it (not crossing lists) hold.
fn satisfies(m: &MapNode, t: Option<&Value>) -> bool {
    let obj = t.and_then(Value::as_object);
    let get = |k: &String| obj.and_then(|o| o.get(k));
    m.globals
        .iter()
        .chain(&m.conditions)
        .all(|(k, p)| get(k).is_some_and(|v| p.matches(v)))
        && m.guarded.iter().all(|(k, _)| get(k).is_some())
        && m.entries.iter().all(|e| match &e.node {
            Node::Map(sub) if sub.has_cond || sub.has_global => {
                (e.add_if_absent && get(&e.key).is_some()) || satisfies(sub, get(&e.key))
            }
            _ => true,
        })
}
