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
    // Every write is logged and rolled-back ones leave the log: the target changed exactly
    // when writes since `mark` remain.
    let mark = j.mark();
    if merge_value(root, target, j).is_err() && may_halt {
        // A failure anywhere must leave the target untouched. (Where nothing can halt at this
        // scope, conditional list elements roll back on their own.)
        j.rollback(mark, target);
    }
    // Writes can cancel out (two list elements for one name setting a field back and forth).
    j.mark() > mark && j.changed_since(mark, target)
}

/// Merges `m` into `slot`. A slot that is not a map counts as absent (Kyverno treats it as a nil
/// resource): it is replaced by a new map only when the overlay produces something.
fn merge_value<'a>(m: &'a MapNode, slot: &mut Value, j: &mut Journal<'a>) -> Step {
    if let Value::Object(obj) = slot {
        return merge_map(m, obj, j);
    }
    // Built apart and attached whole: one write.
    let mut fresh = Map::new();
    merge_map(m, &mut fresh, &mut Journal::new())?;
    if !fresh.is_empty() || m.literal_empty {
        let old = std::mem::replace(slot, Value::Object(fresh));
        j.wrote(None, Some(old));
    }
    Ok(())
}

fn merge_map<'a>(m: &'a MapNode, obj: &mut Map<String, Value>, j: &mut Journal<'a>) -> Step {
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
    // Only into a map: the value a condition tests is never replaced (a `(name): {+(a): ..}`
    // would otherwise turn a container's name into a map, and a later `name`-keyed element
    // would append again on every application).
    for (k, sub) in &m.guarded {
        if let Some(v @ Value::Object(_)) = obj.get_mut(k) {
            j.scoped(Seg::Key(k), |j| merge_value(sub, v, j))?;
        }
    }
    for e in &m.entries {
        apply_entry(e, obj, j)?;
    }
    Ok(())
}

fn apply_entry<'a>(e: &'a Entry, obj: &mut Map<String, Value>, j: &mut Journal<'a>) -> Step {
    if e.add_if_absent && obj.contains_key(&e.key) {
        return Ok(());
    }
    match &e.node {
        Node::Delete => {
            if let Some(old) = obj.remove(&e.key) {
                j.wrote(Some(Seg::Key(&e.key)), Some(old));
            }
        }
        Node::Literal(v) => {
            if obj.get(&e.key) != Some(v) {
                let old = obj.insert(e.key.clone(), v.clone());
                j.wrote(Some(Seg::Key(&e.key)), old);
            }
        }
        Node::Map(m) => with_slot(obj, &e.key, j, |slot, j| merge_value(m, slot, j))?,
        Node::List(l) => with_slot(obj, &e.key, j, |slot, j| merge_list_value(l, slot, j))?,
    }
    Ok(())
}

/// Runs `f` on the value at `key`, or on a placeholder `null` that is inserted only if `f`
/// turned it into something (built apart, so the insert is the one write logged).
fn with_slot<'a>(
    obj: &mut Map<String, Value>,
    key: &'a str,
    j: &mut Journal<'a>,
    f: impl FnOnce(&mut Value, &mut Journal<'a>) -> Step,
) -> Step {
    if let Some(slot) = obj.get_mut(key) {
        return j.scoped(Seg::Key(key), |j| f(slot, j));
    }
    // Built apart: `f` wrote into the placeholder exactly when it made something of it.
    let mut slot = Value::Null;
    let mut apart = Journal::new();
    f(&mut slot, &mut apart)?;
    if apart.mark() > 0 {
        obj.insert(key.to_string(), slot);
        j.wrote(Some(Seg::Key(key)), None);
    }
    Ok(())
}

/// A slot that is not a list counts as absent; it becomes a list only if elements get added.
fn merge_list_value<'a>(l: &'a ListNode, slot: &mut Value, j: &mut Journal<'a>) -> Step {
    if let Value::Array(arr) = slot {
        return merge_list(l, arr, j);
    }
    let mut fresh = Vec::new();
    merge_list(l, &mut fresh, &mut Journal::new())?;
    if !fresh.is_empty() {
        let old = std::mem::replace(slot, Value::Array(fresh));
        j.wrote(None, Some(old));
    }
    Ok(())
}

fn merge_list<'a>(l: &'a ListNode, arr: &mut Vec<Value>, j: &mut Journal<'a>) -> Step {
    for (at, elem) in l.elems.iter().enumerate() {
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
                        match merge_value(m, t, j) {
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
                    Some(i) => j.scoped(Seg::Index(i), |j| merge_value(body, &mut arr[i], j))?,
                    None => append(body, &l.elems[..at], true, arr, j)?,
                }
            }
            Elem::Unkeyed(body) => append(body, &l.elems[..at], false, arr, j)?,
        }
    }
    Ok(())
}

/// Appends the element the overlay describes, as the next application would leave it: the
/// conditional elements before this one (`before`) apply to it as they did to the elements
/// already there (defaults for every container reach an injected sidecar in the same pass).
/// A keyed element (`keyed`) is merged again after them, so its own fields win, as they do
/// when it merges into an existing element; an unkeyed one is appended as they leave it,
/// unless the list already holds it (as written or as they leave it). So applying twice gives
/// what applying once gives.
fn append<'a>(
    body: &'a MapNode,
    before: &'a [Elem],
    keyed: bool,
    arr: &mut Vec<Value>,
    j: &mut Journal<'a>,
) -> Step {
    let mut v = Value::Object(Map::new());
    merge_value(body, &mut v, &mut Journal::new())?;
    // An unkeyed element already in the list as written is not appended again.
    let as_written = (!keyed).then(|| v.clone());
    let mut touched = false;
    for elem in before {
        let Elem::Conditional(m) = elem else { continue };
        if !satisfies_here(m, &v) {
            continue;
        }
        let mut apart = Journal::new();
        match merge_value(m, &mut v, &mut apart) {
            Ok(()) => touched |= apart.mark() > 0,
            // As on an element already there: a failing condition below undoes this
            // element's writes, a failing global condition skips the whole overlay.
            Err(Halt::Cond) => apart.rollback(0, &mut v),
            Err(h) => return Err(h),
        }
    }
    if touched && keyed {
        merge_value(body, &mut v, &mut Journal::new())?;
    }
    if !arr.contains(&v) && as_written.is_none_or(|w| !arr.contains(&w)) {
        j.wrote(Some(Seg::Index(arr.len())), None);
        arr.push(v);
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
