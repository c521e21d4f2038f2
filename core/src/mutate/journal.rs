//! A record of the writes a mutation makes in place.
//!
//! Mutations change a few leaves of a large object. Instead of copying the object, mutating the
//! copy and comparing the two, the rules write into the request's own object and log each write
//! here: where it happened and what was there before. From the log come the JSON Patch (the
//! final value read at each written place), a rollback when an overlay condition fails half
//! way, and the undo that gives the request back unchanged.

use json_patch::jsonptr::PointerBuf;
use json_patch::{AddOperation, PatchOperation, RemoveOperation, ReplaceOperation};
use serde_json::Value;

/// One step of a path: a map key or a list index.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Seg<'a> {
    Key(&'a str),
    Index(usize),
}

#[derive(Debug)]
struct Write<'a> {
    path: Vec<Seg<'a>>,
    /// What was at `path` before the write; `None`: nothing (a key added, an element pushed).
    old: Option<Value>,
}

/// The writes made so far, and the location the writer is at (a stack the writer pushes to as
/// it descends). Paths are relative to the value the journal was started on.
#[derive(Debug, Default)]
pub struct Journal<'a> {
    at: Vec<Seg<'a>>,
    writes: Vec<Write<'a>>,
}

impl<'a> Journal<'a> {
    pub fn new() -> Journal<'a> {
        Journal::default()
    }

    /// Runs `f` one level down, at `seg`.
    pub fn scoped<R>(&mut self, seg: Seg<'a>, f: impl FnOnce(&mut Journal<'a>) -> R) -> R {
        self.at.push(seg);
        let r = f(self);
        self.at.pop();
        r
    }

    /// Moves the location to a JSON pointer from the start (tokens of `pointer` must not need
    /// unescaping: they are the crate's own constants).
    pub fn enter(&mut self, pointer: &'a str) {
        self.at.clear();
        self.at.extend(
            pointer
                .split('/')
                .skip(1)
                .filter(|t| !t.is_empty())
                .map(Seg::Key),
        );
    }

    /// Logs a write at the current location (`last: None`) or at its child `last`; `old` is
    /// what was there before.
    pub fn wrote(&mut self, last: Option<Seg<'a>>, old: Option<Value>) {
        let mut path = Vec::with_capacity(self.at.len() + 1);
        path.extend_from_slice(&self.at);
        path.extend(last);
        self.writes.push(Write { path, old });
    }

    /// How many writes are logged (rolled-back ones are not): a point to roll back to.
    pub fn mark(&self) -> usize {
        self.writes.len()
    }

    /// Undoes the writes made since `mark`, newest first. `here` is the value at the current
    /// location, where those writes were made (at or below it).
    pub fn rollback(&mut self, mark: usize, here: &mut Value) {
        let depth = self.at.len();
        while self.writes.len() > mark {
            let Some(w) = self.writes.pop() else { break };
            if w.path.len() >= depth {
                restore(here, &w.path[depth..], w.old);
            }
        }
    }

    /// Undoes every write; `root` is the value the journal was started on.
    pub fn undo(&mut self, root: &mut Value) {
        self.at.clear();
        self.rollback(0, root);
    }

    /// Whether some write was at or above a path accepted by `hit` (given the write's path).
    pub fn any_write(&self, hit: impl Fn(&[Seg<'a>]) -> bool) -> bool {
        self.writes.iter().any(|w| hit(&w.path))
    }

    /// The RFC 6902 operations that turn the object as it was before the writes into `root` as
    /// it is now. One operation per outermost written place, in path order (so elements
    /// appended to a list come in index order); a place whose value ends as it began gets none.
    pub fn patch(&self, root: &Value) -> Vec<PatchOperation> {
        let mut ops = Vec::new();
        self.net_changes(0, 0, root, |path, change| {
            let path = pointer(path);
            ops.push(match change {
                Net::Replace(now) => PatchOperation::Replace(ReplaceOperation {
                    path,
                    value: now.clone(),
                }),
                Net::Remove => PatchOperation::Remove(RemoveOperation { path }),
                Net::Add(now) => PatchOperation::Add(AddOperation {
                    path,
                    value: now.clone(),
                }),
            });
            true
        });
        ops
    }

    /// Whether the writes made since `mark` changed anything: false when they cancel out (a
    /// value written and written back). `here` is the value at the current location, where
    /// those writes were made.
    pub fn changed_since(&self, mark: usize, here: &Value) -> bool {
        let mut changed = false;
        self.net_changes(mark, self.at.len(), here, |_, _| {
            changed = true;
            false
        });
        changed
    }

    /// Calls `f` with each outermost place written by the writes from `from` on (paths taken
    /// below their first `depth` segments, `base` the value there) whose value did not end as
    /// it began, in path order, until `f` returns false.
    fn net_changes(
        &self,
        from: usize,
        depth: usize,
        base: &Value,
        mut f: impl FnMut(&[Seg<'a>], Net<'_>) -> bool,
    ) {
        let writes = &self.writes[from.min(self.writes.len())..];
        let rel = |k: usize| &writes[k].path[depth.min(writes[k].path.len())..];
        let mut order: Vec<usize> = (0..writes.len()).collect();
        // Stable: writes to the same place stay in the order they happened.
        order.sort_by(|&a, &b| rel(a).cmp(rel(b)));
        let mut i = 0;
        while i < order.len() {
            let start = i;
            let top = rel(order[start]);
            // Every write at or below `top` (they sort right after it); the earliest of them
            // tells what was there at first.
            let mut first = order[start];
            let mut k = start + 1;
            while k < order.len() && rel(order[k]).starts_with(top) {
                first = first.min(order[k]);
                k += 1;
            }
            i = k;
            let w = &writes[first];
            let at_top = rel(first).len() == top.len();
            // A write below `top` means something was there to write into.
            let existed = !at_top || w.old.is_some();
            let change = match (existed, get(base, top)) {
                (false, None) => continue,
                (false, Some(now)) => Net::Add(now),
                (true, None) => Net::Remove,
                (true, Some(now)) => {
                    let began_so = if at_top {
                        w.old.as_ref() == Some(now)
                    } else {
                        // First written below: what was there is `now` with the writes undone.
                        let mut group = order[start..i].to_vec();
                        group.sort_unstable_by(|a, b| b.cmp(a));
                        let mut was = now.clone();
                        for g in group {
                            restore(&mut was, &rel(g)[top.len()..], writes[g].old.clone());
                        }
                        was == *now
                    };
                    if began_so {
                        continue;
                    }
                    Net::Replace(now)
                }
            };
            if !f(top, change) {
                return;
            }
        }
    }
}

/// How an outermost written place ended, against how it began.
enum Net<'v> {
    Replace(&'v Value),
    Remove,
    Add(&'v Value),
}

fn pointer(path: &[Seg<'_>]) -> PointerBuf {
    use std::fmt::Write as _;
    let mut text = String::with_capacity(64);
    for s in path {
        text.push('/');
        match *s {
            Seg::Key(k) if k.contains(['~', '/']) => {
                text.push_str(&k.replace('~', "~0").replace('/', "~1"));
            }
            Seg::Key(k) => text.push_str(k),
            Seg::Index(i) => {
                let _ = write!(text, "{i}");
            }
        }
    }
    // Always a valid pointer: every token starts with '/' and is escaped.
    PointerBuf::parse(text).unwrap_or_default()
}

fn get<'v>(mut v: &'v Value, path: &[Seg<'_>]) -> Option<&'v Value> {
    for s in path {
        v = match (*s, v) {
            (Seg::Key(k), Value::Object(m)) => m.get(k)?,
            (Seg::Index(i), Value::Array(a)) => a.get(i)?,
            _ => return None,
        };
    }
    Some(v)
}

fn get_mut<'v>(mut v: &'v mut Value, path: &[Seg<'_>]) -> Option<&'v mut Value> {
    for s in path {
        v = match (*s, v) {
            (Seg::Key(k), Value::Object(m)) => m.get_mut(k)?,
            (Seg::Index(i), Value::Array(a)) => a.get_mut(i)?,
            _ => return None,
        };
    }
    Some(v)
}

/// Puts `old` back at `path` below `base` (`None`: removes what the write added).
fn restore(base: &mut Value, path: &[Seg<'_>], old: Option<Value>) {
    let Some((last, parent)) = path.split_last() else {
        *base = old.unwrap_or(Value::Null);
        return;
    };
    match (*last, get_mut(base, parent)) {
        (Seg::Key(k), Some(Value::Object(m))) => match old {
            Some(v) => {
                m.insert(k.to_owned(), v);
            }
            None => {
                m.remove(k);
            }
        },
        (Seg::Index(i), Some(Value::Array(a))) => match old {
            Some(v) => {
                if let Some(slot) = a.get_mut(i) {
                    *slot = v;
                }
            }
            None => {
                if i < a.len() {
                    a.remove(i);
                }
            }
        },
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn patch_and_undo_from_logged_writes() {
        let original = json!({"spec": {"a": 1, "l": [{"name": "x"}], "gone": true, "x/~y": 0}});
        let mut v = original.clone();
        let mut j = Journal::new();
        j.enter("/spec");
        let spec = v.get_mut("spec").and_then(Value::as_object_mut).unwrap();
        let old = spec.insert("a".into(), json!(2));
        j.wrote(Some(Seg::Key("a")), old);
        let old = spec.insert("b".into(), json!({"c": 1}));
        j.wrote(Some(Seg::Key("b")), old);
        let old = spec.remove("gone");
        j.wrote(Some(Seg::Key("gone")), old);
        let old = spec.insert("x/~y".into(), json!(1));
        j.wrote(Some(Seg::Key("x/~y")), old);
        // A write inside something added earlier is covered by the add.
        j.scoped(Seg::Key("b"), |j| {
            spec["b"]["d"] = json!(2);
            j.wrote(Some(Seg::Key("d")), None);
        });
        j.scoped(Seg::Key("l"), |j| {
            let l = spec["l"].as_array_mut().unwrap();
            l.push(json!({"name": "y"}));
            j.wrote(Some(Seg::Index(1)), None);
            l.push(json!({"name": "z"}));
            j.wrote(Some(Seg::Index(2)), None);
        });
        let ops = serde_json::to_value(j.patch(&v)).unwrap();
        assert_eq!(
            ops,
            json!([
                {"op": "replace", "path": "/spec/a", "value": 2},
                {"op": "add", "path": "/spec/b", "value": {"c": 1, "d": 2}},
                {"op": "remove", "path": "/spec/gone"},
                {"op": "add", "path": "/spec/l/1", "value": {"name": "y"}},
                {"op": "add", "path": "/spec/l/2", "value": {"name": "z"}},
                {"op": "replace", "path": "/spec/x~1~0y", "value": 1},
            ])
        );
        let mut patched = original.clone();
        json_patch::patch(&mut patched, &json_patch::Patch(j.patch(&v))).unwrap();
        assert_eq!(patched, v);
        j.undo(&mut v);
        assert_eq!(v, original);
    }

    #[test]
    fn a_write_undone_by_a_later_one_leaves_no_operation() {
        let original = json!({"a": 1});
        let mut v = original.clone();
        let mut j = Journal::new();
        let old = v.as_object_mut().unwrap().insert("a".into(), json!(5));
        j.wrote(Some(Seg::Key("a")), old);
        let old = v.as_object_mut().unwrap().insert("a".into(), json!(1));
        j.wrote(Some(Seg::Key("a")), old);
        let old = v.as_object_mut().unwrap().insert("b".into(), json!(1));
        j.wrote(Some(Seg::Key("b")), old);
        let old = v.as_object_mut().unwrap().remove("b");
        j.wrote(Some(Seg::Key("b")), old);
        assert!(j.patch(&v).is_empty());
        j.undo(&mut v);
        assert_eq!(v, original);
    }
}
