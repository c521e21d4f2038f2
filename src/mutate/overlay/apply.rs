//! Application of a compiled overlay to a target value, in place.

use serde_json::{Map, Value};

use super::compile::{Elem, Entry, ListNode, MapNode, Node};
use crate::mutate::journal::{Journal, Seg};

/// Why processing of a scope stopped.
#[derive(Debug, PartialEq)]
enum Halt {
    /// A `(key)` condition failed: skip the nearest list element (or the whole overlay).
    Cond,
    /// A `<(key)` condition failed: skip the whole overlay.
    Global,
}

type Step = Result<(), Halt>;

pub(super) fn apply_root<'a>(
    root: &'a MapNode,
    may_halt: bool,
    target: &mut Value,
    j: &mut Journal<'a>,
) -> bool {
    let mark = j.mark();
    let mut changed = false;
    match merge_value(root, target, j, &mut changed) {
        Ok(()) => changed,
        // A failure anywhere must leave the target untouched.
        Err(_) if may_halt => {
            j.rollback(mark, target);
            false
        }
        // Nothing can halt at this scope; conditional list elements roll back on their own.
        Err(_) => changed,
    }
}

/// Merges `m` into `slot`. A slot that is not a map counts as absent (Kyverno treats it as a nil
/// resource): it is replaced by a new map only when the overlay produces something.
fn merge_value<'a>(
    m: &'a MapNode,
    slot: &mut Value,
    j: &mut Journal<'a>,
    changed: &mut bool,
) -> Step {
    if let Value::Object(obj) = slot {
        return merge_map(m, obj, j, changed);
    }
    // Built apart and attached whole: one write.
    let mut fresh = Map::new();
    merge_map(m, &mut fresh, &mut Journal::new(), &mut false)?;
    if !fresh.is_empty() || m.literal_empty {
        let old = std::mem::replace(slot, Value::Object(fresh));
        j.wrote(None, Some(old));
        *changed = true;
    }
    Ok(())
}

fn merge_map<'a>(
    m: &'a MapNode,
    obj: &mut Map<String, Value>,
    j: &mut Journal<'a>,
    changed: &mut bool,
) -> Step {
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
            j.scoped(Seg::Key(k), |j| merge_value(sub, v, j, changed))?;
        }
    }
    for e in &m.entries {
        apply_entry(e, obj, j, changed)?;
    }
    Ok(())
}

fn apply_entry<'a>(
    e: &'a Entry,
    obj: &mut Map<String, Value>,
    j: &mut Journal<'a>,
    changed: &mut bool,
) -> Step {
    if e.add_if_absent && obj.contains_key(&e.key) {
        return Ok(());
    }
    match &e.node {
        Node::Delete => {
            if let Some(old) = obj.remove(&e.key) {
                j.wrote(Some(Seg::Key(&e.key)), Some(old));
                *changed = true;
            }
        }
        Node::Literal(v) => {
            if obj.get(&e.key) != Some(v) {
                let old = obj.insert(e.key.clone(), v.clone());
                j.wrote(Some(Seg::Key(&e.key)), old);
                *changed = true;
            }
        }
        Node::Map(m) => with_slot(obj, &e.key, j, changed, |slot, j, ch| {
            merge_value(m, slot, j, ch)
        })?,
        Node::List(l) => with_slot(obj, &e.key, j, changed, |slot, j, ch| {
            merge_list_value(l, slot, j, ch)
        })?,
    }
    Ok(())
}

/// Runs `f` on the value at `key`, or on a placeholder `null` that is inserted only if `f`
/// turned it into something (built apart, so the insert is the one write logged).
fn with_slot<'a>(
    obj: &mut Map<String, Value>,
    key: &'a str,
    j: &mut Journal<'a>,
    changed: &mut bool,
    f: impl FnOnce(&mut Value, &mut Journal<'a>, &mut bool) -> Step,
) -> Step {
    if let Some(slot) = obj.get_mut(key) {
        return j.scoped(Seg::Key(key), |j| f(slot, j, changed));
    }
    let mut slot = Value::Null;
    let mut made = false;
    f(&mut slot, &mut Journal::new(), &mut made)?;
    if made {
        obj.insert(key.to_string(), slot);
        j.wrote(Some(Seg::Key(key)), None);
        *changed = true;
    }
    Ok(())
}

/// A slot that is not a list counts as absent; it becomes a list only if elements get added.
fn merge_list_value<'a>(
    l: &'a ListNode,
    slot: &mut Value,
    j: &mut Journal<'a>,
    changed: &mut bool,
) -> Step {
    if let Value::Array(arr) = slot {
        return merge_list(l, arr, j, changed);
    }
    let mut fresh = Vec::new();
    merge_list(l, &mut fresh, &mut Journal::new(), &mut false)?;
    if !fresh.is_empty() {
        let old = std::mem::replace(slot, Value::Array(fresh));
        j.wrote(None, Some(old));
        *changed = true;
    }
    Ok(())
}

fn merge_list<'a>(
    l: &'a ListNode,
    arr: &mut Vec<Value>,
    j: &mut Journal<'a>,
    changed: &mut bool,
) -> Step {
    for elem in &l.elems {
        match elem {
            Elem::Gate(m) => {
                if !arr.iter().any(|t| satisfies(m, Some(t))) {
                    return Err(Halt::Global);
                }
            }
            Elem::Conditional(m) => {
                // Conditions deeper down may still fail: then this element's writes roll back.
                let may_fail = m.deep_cond || !m.globals.is_empty();
                for (i, t) in arr.iter_mut().enumerate() {
                    if !satisfies_here(m, t) {
                        continue;
                    }
                    j.scoped(Seg::Index(i), |j| {
                        let mark = j.mark();
                        match merge_value(m, t, j, changed) {
                            Ok(()) => Ok(()),
                            Err(h) if may_fail => {
                                j.rollback(mark, t);
                                if h == Halt::Global { Err(h) } else { Ok(()) }
                            }
                            Err(h) => Err(h),
                        }
                    })?;
                }
            }
            Elem::Keyed { name, body } => {
                match arr.iter().position(|t| t.get("name") == Some(name)) {
                    Some(i) => j.scoped(Seg::Index(i), |j| {
                        merge_value(body, &mut arr[i], j, changed)
                    })?,
                    None => append(body, arr, j, changed)?,
                }
            }
            Elem::Unkeyed(body) => append(body, arr, j, changed)?,
        }
    }
    Ok(())
}

/// Appends the element the overlay describes, unless an equal one is already there.
fn append<'a>(
    body: &'a MapNode,
    arr: &mut Vec<Value>,
    j: &mut Journal<'a>,
    changed: &mut bool,
) -> Step {
    let mut v = Value::Object(Map::new());
    merge_value(body, &mut v, &mut Journal::new(), &mut false)?;
    if !arr.contains(&v) {
        j.wrote(Some(Seg::Index(arr.len())), None);
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
