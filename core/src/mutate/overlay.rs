//! Mutation overlays written in Kyverno's `patchStrategicMerge` anchor syntax.
//!
//! An [`Overlay`] is compiled once (anchors parsed, condition patterns pre-parsed) and then
//! applied in place to `serde_json::Value` targets. The semantics follow Kyverno's
//! `pkg/engine/mutate/patch/strategicPreprocessing.go` and `pkg/engine/pattern`:
//!
//! * `key: value` sets the key. Scalars and lists replace; maps merge recursively; a map replaces
//!   a non-map value. `key: null` removes the key (strategic-merge delete).
//! * `+(key): value` adds `key` only when the target map has no such key. A key that is present
//!   with *any* value — a different one, `null`, or a map lacking sub-keys — is left untouched
//!   together with everything below it: nested `+()` anchors are **not** merged into an existing
//!   map (Kyverno drops the whole `+()` entry from the patch when the field exists). When the key
//!   is absent the whole value is added, with its own anchors resolved against "absent".
//! * `(key): pattern` is a condition on the enclosing map. A failing condition (or a missing key)
//!   stops processing of the nearest enclosing list element for that target element; outside of
//!   any list it skips the whole overlay (Kyverno "skips the rule"). Conditions never write.
//!   Special case kept from Kyverno: `(key): {+(a): v, ...}` means "if `key` exists, apply this
//!   map (which adds `a` if absent) to it" — when it is a map; another value is left alone.
//! * `<(key): pattern` is a global condition: if it fails, the whole overlay is skipped. A list
//!   element holding a `<()` anchor is a *gate*: the overlay applies only if at least one target
//!   element satisfies it; the gate element itself writes nothing (as in Kyverno).
//! * Lists of maps: an element with condition anchors is applied to **every** target element
//!   that satisfies them (a plain `name` key in such an element is ignored, as Kyverno overwrites
//!   it with the matched element's name). An element without condition anchors merges into the
//!   first target element with the same `name`, or is appended; an element with neither
//!   conditions nor `name` is appended unless an equal element is already there. If the target
//!   list is absent and only conditional elements exist, nothing (not even `[]`) is created.
//!   Elements are applied in overlay order, each seeing the previous elements' result; an
//!   element appended by a later element also gets the earlier conditional elements (container
//!   defaults reach an injected sidecar in the same pass), the appended element's own fields
//!   winning over theirs when it is keyed by `name`, so a second application changes nothing.
//! * Patterns: `*`/`?` wildcards, `|` (or), `&` (and), `>`, `<`, `>=`, `<=`, `!`, ranges `a-b`
//!   and `a!-b`; numeric operands compare as Go durations first, then as Kubernetes quantities.
//!   Map patterns check each key (`=(k)`: only if present, `X(k)`: must be absent, value `"*"`:
//!   present and non-null); a list pattern `[ {map} ]` must match every element. Wildcards see
//!   numbers in their JSON spelling (Kyverno formats floats as `1E+03`).
//! * Rejected at compile time, with the path: malformed anchors (`+(`, `()`, `+()`, `ab(c)`,
//!   nested parentheses — no Kubernetes key contains a parenthesis), unknown prefixes, the
//!   validate-only anchors `=()`, `X()`, `^()` outside patterns, `+(name)` on a list element
//!   (`name` is the merge key), `k` together with `+(k)`, `+(k): null`, lists mixing maps with
//!   other values, and empty list patterns.
//!
//! Anchor keys never reach the output. Applying is deterministic and idempotent, never panics,
//! and writes only where the value actually changes.

mod apply;
mod compile;
mod pattern;
mod units;

#[cfg(test)]
mod compile_tests;
#[cfg(test)]
mod pattern_tests;
#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;

use crate::mutate::journal::Journal;
use serde_json::Value;

/// An overlay parsed and compiled once at policy load; applying it does no parsing of anchors.
#[derive(Clone, Debug)]
pub struct Overlay {
    root: compile::MapNode,
    /// Whether a failing condition can abort the whole overlay (needs a rollback copy).
    may_halt: bool,
}

/// A malformed overlay, located by a path such as `spec.containers[0].(image)`.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("{path}: {message}")]
pub struct OverlayError {
    pub path: String,
    pub message: String,
}

impl OverlayError {
    fn new(path: &str, message: impl Into<String>) -> Self {
        let path = if path.is_empty() { "$" } else { path };
        OverlayError {
            path: path.to_string(),
            message: message.into(),
        }
    }
}

impl Overlay {
    /// Compiles an overlay (the body of a Kyverno `patchStrategicMerge`). The root must be a map.
    pub fn compile(overlay: &Value) -> Result<Overlay, OverlayError> {
        let (root, may_halt) = compile::compile_root(overlay)?;
        Ok(Overlay { root, may_halt })
    }

    /// Applies the overlay in place. Returns true when `target` changed.
    pub fn apply(&self, target: &mut Value) -> bool {
        self.apply_logged(target, &mut Journal::new())
    }

    /// Applies the overlay in place, logging every write in `journal` (whose location must be
    /// where `target` is).
    pub fn apply_logged<'a>(&'a self, target: &mut Value, journal: &mut Journal<'a>) -> bool {
        apply::apply_root(&self.root, self.may_halt, target, journal)
    }

    /// Returns the RFC 6902 patch that turns `target` into the overlaid object, or `None` when
    /// the overlay changes nothing (what an admission response carries).
    pub fn json_patch(&self, target: &Value) -> Option<json_patch::Patch> {
        let mut patched = target.clone();
        let mut journal = Journal::new();
        if self.apply_logged(&mut patched, &mut journal) {
            Some(json_patch::Patch(journal.patch(&patched)))
        } else {
            None
        }
    }
}
