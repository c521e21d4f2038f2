//! Compilation of an overlay document into an anchor-free plan.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::OverlayError;
use super::pattern::{self, Pattern};

/// Overlays nested deeper than this are rejected (keeps every recursion bounded).
pub(super) const MAX_DEPTH: usize = 64;

/// What an overlay value does to the target slot it is merged into.
#[derive(Clone, Debug)]
pub(super) enum Node {
    /// Scalars and lists without maps: replace.
    Literal(Value),
    /// `key: null`: remove the key.
    Delete,
    Map(MapNode),
    List(ListNode),
}

#[derive(Clone, Debug)]
pub(super) struct Entry {
    pub key: String,
    /// `+(key)`: only when the target has no such key.
    pub add_if_absent: bool,
    pub node: Node,
}

#[derive(Clone, Debug, Default)]
pub(super) struct MapNode {
    /// `<(key): pattern`
    pub globals: Vec<(String, Pattern)>,
    /// `(key): pattern`
    pub conditions: Vec<(String, Pattern)>,
    /// `(key): {+(..): ..}`: `key` must exist, then this map is merged into it if it is a map
    /// (a value of another type is left as it is).
    pub guarded: Vec<(String, MapNode)>,
    pub entries: Vec<Entry>,
    /// The overlay wrote `{}`: an empty map is created where none exists.
    pub literal_empty: bool,
    /// Some condition (not global) anchor in this map or below it (not crossing lists).
    pub has_cond: bool,
    /// Some global anchor in this map or below it (not crossing lists).
    pub has_global: bool,
    /// Some condition or global anchor strictly below this map (not crossing lists): applying
    /// it can fail part-way, so a list element needs a copy to roll back to.
    pub deep_cond: bool,
}

#[derive(Clone, Debug)]
pub(super) struct ListNode {
    pub elems: Vec<Elem>,
}

#[derive(Clone, Debug)]
pub(super) enum Elem {
    /// Holds a `<()` anchor: some target element must satisfy it, else the overlay is skipped.
    Gate(MapNode),
    /// Applied to every target element satisfying its conditions.
    Conditional(MapNode),
    /// Merged into the target element with this `name`, else appended.
    Keyed { name: Value, body: MapNode },
    /// Appended unless an equal element already exists.
    Unkeyed(MapNode),
}

/// A parsed map key.
pub(super) enum Key<'a> {
    Plain(&'a str),
    /// Prefix (`None` for `(key)`) and the inner key.
    Anchor(Option<char>, String),
}

/// Parses `(key)`, `+(key)`, `<(key)`, `=(key)`, ... Any other key containing a parenthesis is
/// rejected: Kubernetes keys never contain one, so it is a typo of an anchor.
pub(super) fn parse_key(raw: &str) -> Result<Key<'_>, String> {
    if !raw.contains(['(', ')']) {
        return Ok(Key::Plain(raw));
    }
    let t = raw.trim();
    let (prefix, rest) = if t.starts_with('(') {
        (None, t)
    } else {
        let mut chars = t.chars();
        let first = chars.next();
        let rest = chars.as_str();
        match first {
            Some(c) if rest.starts_with('(') => (Some(c), rest),
            _ => {
                return Err(format!(
                    "malformed anchor `{raw}`: an anchor is `(key)`, `+(key)` or `<(key)`"
                ));
            }
        }
    };
    let inner = rest
        .strip_prefix('(')
        .and_then(|r| r.strip_suffix(')'))
        .ok_or_else(|| format!("unterminated anchor `{raw}`: missing `)`"))?;
    if inner.trim().is_empty() {
        return Err(format!(
            "empty anchor `{raw}`: no key inside the parentheses"
        ));
    }
    if inner.contains(['(', ')']) {
        return Err(format!("malformed anchor `{raw}`: nested parentheses"));
    }
    Ok(Key::Anchor(prefix, inner.to_string()))
}

pub(super) fn child_path(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// Compiles the root map; also returns whether a failing anchor may abort the whole overlay.
pub(super) fn compile_root(overlay: &Value) -> Result<(MapNode, bool), OverlayError> {
    let Value::Object(obj) = overlay else {
        return Err(OverlayError::new("", "the overlay must be a map"));
    };
    let mut c = Compiler { any_global: false };
    let root = c.map(obj, "", 0)?;
    let may_halt = c.any_global || root.has_cond;
    Ok((root, may_halt))
}

struct Compiler {
    any_global: bool,
}

impl Compiler {
    fn map(
        &mut self,
        obj: &Map<String, Value>,
        path: &str,
        depth: usize,
    ) -> Result<MapNode, OverlayError> {
        if depth > MAX_DEPTH {
            return Err(OverlayError::new(path, "overlay nested too deeply"));
        }
        let mut node = MapNode {
            literal_empty: obj.is_empty(),
            ..MapNode::default()
        };
        // Written key -> raw spelling, to reject `k` together with `+(k)`.
        let mut written: BTreeMap<String, &str> = BTreeMap::new();
        for (raw, val) in obj {
            let p = child_path(path, raw);
            let key = parse_key(raw).map_err(|m| OverlayError::new(&p, m))?;
            let (key, add) = match key {
                Key::Plain(k) => (k.to_string(), false),
                Key::Anchor(Some('+'), k) => {
                    if val.is_null() {
                        return Err(OverlayError::new(&p, "`+(key): null` has no effect"));
                    }
                    (k, true)
                }
                Key::Anchor(None, k) => {
                    if let Some(obj) = guard_map(val) {
                        let sub = self.map(obj, &p, depth + 1)?;
                        node.deep_cond |= sub.has_cond || sub.has_global;
                        node.guarded.push((k, sub));
                    } else {
                        node.conditions
                            .push((k, pattern::compile(val, &p, depth + 1)?));
                    }
                    node.has_cond = true;
                    continue;
                }
                Key::Anchor(Some('<'), k) => {
                    node.globals
                        .push((k, pattern::compile(val, &p, depth + 1)?));
                    node.has_global = true;
                    self.any_global = true;
                    continue;
                }
                Key::Anchor(Some(c @ ('=' | 'X' | '^')), _) => {
                    return Err(OverlayError::new(
                        &p,
                        format!(
                            "`{c}(key)` is a validate-only anchor, not allowed in a mutate overlay"
                        ),
                    ));
                }
                Key::Anchor(Some(c), _) => {
                    return Err(OverlayError::new(
                        &p,
                        format!(
                            "unknown anchor prefix `{c}`: a mutate overlay accepts `(key)`, `+(key)` and `<(key)`"
                        ),
                    ));
                }
            };
            if let Some(other) = written.insert(key.clone(), raw) {
                return Err(OverlayError::new(
                    &p,
                    format!("key `{key}` is written twice (`{other}` and `{raw}`)"),
                ));
            }
            let child = self.value(val, &p, depth + 1)?;
            if let Node::Map(m) = &child {
                node.has_cond |= m.has_cond;
                node.has_global |= m.has_global;
                node.deep_cond |= m.has_cond || m.has_global;
            }
            node.entries.push(Entry {
                key,
                add_if_absent: add,
                node: child,
            });
        }
        Ok(node)
    }

    fn value(&mut self, val: &Value, path: &str, depth: usize) -> Result<Node, OverlayError> {
        Ok(match val {
            Value::Null => Node::Delete,
            Value::Object(obj) => Node::Map(self.map(obj, path, depth)?),
            Value::Array(arr) => self.list(arr, path, depth)?,
            scalar => Node::Literal(scalar.clone()),
        })
    }

    fn list(&mut self, arr: &[Value], path: &str, depth: usize) -> Result<Node, OverlayError> {
        if arr.is_empty() || !arr.iter().all(Value::is_object) {
            if let Some(bad) = find_map(arr, path, depth) {
                return Err(OverlayError::new(
                    &bad,
                    "a list holding maps must hold only maps (other lists are copied verbatim)",
                ));
            }
            return Ok(Node::Literal(Value::Array(arr.to_vec())));
        }
        let mut elems = Vec::with_capacity(arr.len());
        for (i, obj) in arr.iter().filter_map(Value::as_object).enumerate() {
            let p = format!("{path}[{i}]");
            for raw in obj.keys() {
                if let Ok(Key::Anchor(Some('+'), k)) = parse_key(raw)
                    && k == "name"
                {
                    return Err(OverlayError::new(
                        &child_path(&p, raw),
                        "`+(name)` on a list element: `name` is the merge key; write `name` to merge by name or `(name)` to match",
                    ));
                }
            }
            let mut body = self.map(obj, &p, depth + 1)?;
            elems.push(if body.has_global {
                Elem::Gate(body)
            } else if body.has_cond {
                // Kyverno overwrites `name` with the matched element's name: never rename.
                body.entries.retain(|e| e.key != "name");
                Elem::Conditional(body)
            } else {
                let name = body
                    .entries
                    .iter()
                    .find_map(|e| match (&e.node, e.add_if_absent) {
                        (Node::Literal(v), false) if e.key == "name" => Some(v.clone()),
                        _ => None,
                    });
                match name {
                    Some(name) => Elem::Keyed { name, body },
                    None => Elem::Unkeyed(body),
                }
            });
        }
        Ok(Node::List(ListNode { elems }))
    }
}

/// `(key): {...}` whose map holds a `+()` anchor: "if key exists, add these".
fn guard_map(val: &Value) -> Option<&Map<String, Value>> {
    val.as_object().filter(|m| {
        m.keys()
            .any(|k| matches!(parse_key(k), Ok(Key::Anchor(Some('+'), _))))
    })
}

/// Path of the first map inside a list copied verbatim (maps there would carry anchors or expect
/// merging, which a verbatim copy cannot do).
fn find_map(arr: &[Value], path: &str, depth: usize) -> Option<String> {
    for (i, v) in arr.iter().enumerate() {
        let p = format!("{path}[{i}]");
        match v {
            Value::Object(_) => return Some(p),
            Value::Array(inner) if depth < MAX_DEPTH => {
                if let Some(found) = find_map(inner, &p, depth + 1) {
                    return Some(found);
                }
            }
            Value::Array(_) => return Some(p),
            _ => {}
        }
    }
    None
}
