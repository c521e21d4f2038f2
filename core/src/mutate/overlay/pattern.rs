//! Kyverno value patterns (`pkg/engine/pattern`), pre-parsed at compile time.

use serde_json::Value;

use super::OverlayError;
use super::compile::{Key, MAX_DEPTH, child_path, parse_key};
use super::units::{parse_duration, parse_quantity, wildcard};

#[derive(Clone, Debug)]
pub(super) enum Pattern {
    /// Matches null, and (as in Kyverno) `0`, `""` and `false`.
    Null,
    Bool(bool),
    Int(i128),
    Float(f64),
    Str(StrPattern),
    Map(Vec<(String, KeyMode, Pattern)>),
    /// `[ {map} ]`: every element must match.
    EachMap(Box<Pattern>),
    /// `[a, b]`: the list has at least as many elements, matching pairwise.
    Elements(Vec<Pattern>),
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) enum KeyMode {
    /// Plain key: must match (a missing key matches only a `null` pattern).
    Required,
    /// `=(key)`: must match when present.
    IfPresent,
    /// `X(key)`: must be absent.
    Absent,
}

#[derive(Clone, Debug)]
pub(super) struct StrPattern {
    raw: String,
    /// `|`-separated alternatives of `&`-separated atoms.
    alternatives: Vec<Vec<Atom>>,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Op {
    Eq,
    Ne,
    Gt,
    Lt,
    Ge,
    Le,
}

#[derive(Clone, Debug)]
enum Atom {
    Cmp(Cmp),
    /// `a-b` (within) or `a!-b` (outside), both ends inclusive for "within".
    Range {
        outside: bool,
        lo: Cmp,
        hi: Cmp,
    },
}

#[derive(Clone, Debug)]
struct Cmp {
    op: Op,
    operand: String,
    duration: Option<f64>,
    quantity: Option<f64>,
}

pub(super) fn compile(val: &Value, path: &str, depth: usize) -> Result<Pattern, OverlayError> {
    if depth > MAX_DEPTH {
        return Err(OverlayError::new(path, "pattern nested too deeply"));
    }
    Ok(match val {
        Value::Null => Pattern::Null,
        Value::Bool(b) => Pattern::Bool(*b),
        Value::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
            (Some(i), _, _) => Pattern::Int(i128::from(i)),
            (_, Some(u), _) => Pattern::Int(i128::from(u)),
            (_, _, Some(f)) => Pattern::Float(f),
            _ => return Err(OverlayError::new(path, "unsupported number")),
        },
        Value::String(s) => Pattern::Str(StrPattern::compile(s)),
        Value::Object(obj) => {
            let mut out = Vec::with_capacity(obj.len());
            for (raw, v) in obj {
                let p = child_path(path, raw);
                let (key, mode) = match parse_key(raw).map_err(|m| OverlayError::new(&p, m))? {
                    Key::Plain(k) => (k.to_string(), KeyMode::Required),
                    Key::Anchor(Some('='), k) => (k, KeyMode::IfPresent),
                    Key::Anchor(Some('X'), k) => (k, KeyMode::Absent),
                    Key::Anchor(..) => {
                        return Err(OverlayError::new(
                            &p,
                            "inside a condition pattern only plain keys, `=(key)` and `X(key)` are supported",
                        ));
                    }
                };
                out.push((key, mode, compile(v, &p, depth + 1)?));
            }
            Pattern::Map(out)
        }
        Value::Array(arr) => match arr.as_slice() {
            [] => {
                return Err(OverlayError::new(
                    path,
                    "an empty list pattern never matches",
                ));
            }
            [single @ Value::Object(_)] => {
                Pattern::EachMap(Box::new(compile(single, &format!("{path}[0]"), depth + 1)?))
            }
            items if items.iter().any(Value::is_object) => {
                return Err(OverlayError::new(
                    path,
                    "a list pattern holds either exactly one map (matched by every element) or no map",
                ));
            }
            items => {
                let mut out = Vec::with_capacity(items.len());
                for (i, v) in items.iter().enumerate() {
                    out.push(compile(v, &format!("{path}[{i}]"), depth + 1)?);
                }
                Pattern::Elements(out)
            }
        },
    })
}

impl Pattern {
    pub(super) fn matches(&self, v: &Value) -> bool {
        match self {
            Pattern::Null => match v {
                Value::Null => true,
                Value::Bool(b) => !b,
                Value::String(s) => s.is_empty(),
                Value::Number(n) => n.as_f64() == Some(0.0),
                _ => false,
            },
            Pattern::Bool(b) => v.as_bool() == Some(*b),
            Pattern::Int(p) => match v {
                Value::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
                    (Some(i), _, _) => i128::from(i) == *p,
                    (_, Some(u), _) => i128::from(u) == *p,
                    (_, _, Some(f)) => f.fract() == 0.0 && f == *p as f64,
                    _ => false,
                },
                Value::String(s) => s.parse::<i64>().is_ok_and(|i| i128::from(i) == *p),
                _ => false,
            },
            Pattern::Float(p) => match v {
                Value::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
                    (Some(i), _, _) => p.fract() == 0.0 && *p == i as f64,
                    (_, Some(u), _) => p.fract() == 0.0 && *p == u as f64,
                    (_, _, Some(f)) => f == *p,
                    _ => false,
                },
                Value::String(s) => s.parse::<f64>().is_ok_and(|f| f == *p),
                _ => false,
            },
            Pattern::Str(s) => s.matches(v),
            Pattern::Map(entries) => {
                let Value::Object(obj) = v else { return false };
                entries.iter().all(|(k, mode, p)| match (mode, obj.get(k)) {
                    (KeyMode::Absent, found) => found.is_none(),
                    (KeyMode::IfPresent, None) => true,
                    (KeyMode::Required, None) => matches!(p, Pattern::Null),
                    // Kyverno: a plain `"*"` means "present and not null", whatever the type.
                    (_, Some(found)) if p.is_star() => !found.is_null(),
                    (_, Some(found)) => p.matches(found),
                })
            }
            Pattern::EachMap(p) => v.as_array().is_some_and(|a| a.iter().all(|e| p.matches(e))),
            Pattern::Elements(ps) => v.as_array().is_some_and(|a| {
                a.len() >= ps.len() && ps.iter().zip(a).all(|(p, e)| p.matches(e))
            }),
        }
    }

    fn is_star(&self) -> bool {
        matches!(self, Pattern::Str(s) if s.raw == "*")
    }
}

impl StrPattern {
    fn compile(raw: &str) -> StrPattern {
        let alternatives = raw
            .split('|')
            .map(|alt| {
                alt.trim()
                    .split('&')
                    .map(|a| Atom::compile(a.trim()))
                    .collect()
            })
            .collect();
        StrPattern {
            raw: raw.to_string(),
            alternatives,
        }
    }

    fn matches(&self, v: &Value) -> bool {
        if v.as_str() == Some(self.raw.as_str()) {
            return true;
        }
        self.alternatives
            .iter()
            .any(|all| all.iter().all(|atom| atom.matches(v)))
    }
}

impl Atom {
    fn compile(s: &str) -> Atom {
        if s.len() >= 2 {
            for (prefix, op) in [
                (">=", Op::Ge),
                ("<=", Op::Le),
                (">", Op::Gt),
                ("<", Op::Lt),
                ("!", Op::Ne),
            ] {
                if let Some(rest) = s.strip_prefix(prefix) {
                    return Atom::Cmp(Cmp::new(op, rest));
                }
            }
            if let Some((l, r)) = s
                .split_once("!-")
                .filter(|(l, r)| is_bound(l) && is_bound(r))
            {
                return Atom::Range {
                    outside: true,
                    lo: Cmp::new(Op::Lt, l),
                    hi: Cmp::new(Op::Gt, r),
                };
            }
            if let Some((l, r)) = s
                .split_once('-')
                .filter(|(l, r)| is_bound(l) && is_bound(r))
            {
                return Atom::Range {
                    outside: false,
                    lo: Cmp::new(Op::Ge, l),
                    hi: Cmp::new(Op::Le, r),
                };
            }
        }
        Atom::Cmp(Cmp::new(Op::Eq, s))
    }

    fn matches(&self, v: &Value) -> bool {
        match self {
            Atom::Cmp(c) => c.matches(v),
            Atom::Range {
                outside: false,
                lo,
                hi,
            } => lo.matches(v) && hi.matches(v),
            Atom::Range {
                outside: true,
                lo,
                hi,
            } => lo.matches(v) || hi.matches(v),
        }
    }
}

/// A range bound as Kyverno's regex `\d+(\.\d+)?[^-]*` accepts it: a digit first, no `-`.
fn is_bound(s: &str) -> bool {
    s.bytes().next().is_some_and(|b| b.is_ascii_digit()) && !s.contains('-')
}

impl Cmp {
    fn new(op: Op, operand: &str) -> Cmp {
        let operand = operand.trim();
        Cmp {
            op,
            operand: operand.to_string(),
            duration: parse_duration(operand),
            quantity: parse_quantity(operand),
        }
    }

    fn matches(&self, v: &Value) -> bool {
        if let Some(p) = self.duration {
            let value = match v {
                Value::String(s) => parse_duration(s),
                Value::Null => Some(0.0),
                _ => None,
            };
            if let Some(value) = value {
                return compare(self.op, value, p);
            }
        }
        if let Some(p) = self.quantity {
            let value = match v {
                Value::String(s) => parse_quantity(s),
                Value::Number(n) => n.as_f64(),
                Value::Null => Some(0.0),
                _ => None,
            };
            if let Some(value) = value {
                return compare(self.op, value, p);
            }
        }
        let text = match v {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            Value::Bool(b) => b.to_string(),
            _ => return false,
        };
        match self.op {
            Op::Eq => wildcard(&self.operand, &text),
            Op::Ne => !wildcard(&self.operand, &text),
            _ => false,
        }
    }
}

fn compare(op: Op, value: f64, pattern: f64) -> bool {
    match op {
        Op::Eq => value == pattern,
        Op::Ne => value != pattern,
        Op::Gt => value > pattern,
        Op::Lt => value < pattern,
        Op::Ge => value >= pattern,
        Op::Le => value <= pattern,
    }
}
