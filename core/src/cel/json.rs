//! JSON values as CEL values, converted directly (no JSON text round trip)
//! and borrowing every string, key included, from the JSON.

use std::collections::HashMap;

use ::cel::IdedExpr;
use ::cel::common::ast::Expr;
use ::cel::common::types::{
    CelBool, CelDouble, CelInt, CelList, CelMap, CelMapKey, CelNull, CelString, CelUInt,
};
use ::cel::common::value::Val;
use serde_json::Value as JsonValue;

use super::limits::for_each_child;

/// Deepest JSON accepted; serde_json's parser stops at 128 anyway.
const MAX_JSON_DEPTH: usize = 128;

/// `value` as a CEL value: objects are maps with string keys, integers `int`
/// (or `uint` above `i64::MAX`), other numbers `double`.
pub(super) fn to_val(value: &JsonValue) -> Result<Box<dyn Val + '_>, String> {
    convert(value, 0)
}

fn convert(value: &JsonValue, depth: usize) -> Result<Box<dyn Val + '_>, String> {
    Ok(match value {
        JsonValue::Null => Box::new(CelNull),
        JsonValue::Bool(b) => Box::new(CelBool::from(*b)),
        JsonValue::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => Box::new(CelInt::from(i)),
            (None, Some(u)) => Box::new(CelUInt::from(u)),
            (None, None) => Box::new(CelDouble::from(n.as_f64().unwrap_or(f64::NAN))),
        },
        JsonValue::String(s) => Box::new(CelString::from(s.as_str())),
        JsonValue::Array(items) => {
            check_depth(depth)?;
            let items = items
                .iter()
                .map(|item| convert(item, depth + 1))
                .collect::<Result<Vec<_>, _>>()?;
            Box::new(CelList::from(items))
        }
        JsonValue::Object(fields) => {
            check_depth(depth)?;
            let mut map = HashMap::with_capacity(fields.len());
            for (key, field) in fields {
                map.insert(CelMapKey::from(key.as_str()), convert(field, depth + 1)?);
            }
            Box::new(CelMap::from(map))
        }
    })
}

fn check_depth(depth: usize) -> Result<(), String> {
    if depth >= MAX_JSON_DEPTH {
        return Err(format!(
            "JSON value nested deeper than {MAX_JSON_DEPTH} levels"
        ));
    }
    Ok(())
}

/// The parts of a variable an expression reads, found at compile time: the fields it selects
/// (`object.spec.replicas` reads `spec.replicas`), as a tree. Only those parts are converted
/// per evaluation, so a rule that reads two fields of a large object does not copy all of it.
///
/// A use of the variable other than a chain of field selections (`object == x`,
/// `object['spec']`, `object.?spec`) reads it whole, and so does a chain that ends at a value
/// used as a whole. An intermediate map of a pruned value is only ever selected into, where it
/// answers as the full one would: the field is there, or it is missing in both (`has()`
/// included).
///
/// A chain that is the range of a one-variable macro (`object.spec.containers.all(c, …)`)
/// reads the list's elements as the macro's body reads its variable: `c.image` and
/// `c.securityContext.privileged` read those fields of each container, a bare `c` all of it.
/// Only a list is converted element by element; a map (whose keys a macro ranges over) is
/// converted whole.
#[derive(Debug, Default, Clone, PartialEq)]
pub(super) struct Shape {
    /// Converted as it is, all of it.
    whole: bool,
    fields: Vec<(String, Shape)>,
    /// What is read of each element when the value is a list a macro ranges over.
    elements: Option<Box<Shape>>,
}

impl Shape {
    /// What the expression `root` reads of the variable `var`. Every identifier named `var` is
    /// taken for it, a comprehension variable of that name included: that can only read more.
    pub(super) fn of(root: &IdedExpr, var: &str) -> Shape {
        let mut shape = Shape::default();
        let mut stack = vec![root];
        while let Some(expr) = stack.pop() {
            if let Some(path) = selected_path(expr, var) {
                shape.read(&path);
                continue;
            }
            if let Expr::Comprehension(c) = &expr.expr
                && c.iter_var2.is_none()
                && let Some(path) = selected_path(&c.iter_range, var)
            {
                // The range's elements, as the loop reads its variable; the rest of the
                // comprehension may still read `var` itself.
                let mut each = Shape::of(&c.loop_cond, &c.iter_var);
                each.merge(Shape::of(&c.loop_step, &c.iter_var));
                shape.read_elements(&path, each);
                for part in [&c.accu_init, &c.loop_cond, &c.loop_step, &c.result] {
                    stack.push(part);
                }
                continue;
            }
            for_each_child(expr, |child| stack.push(child));
        }
        shape
    }

    /// The node at `path`, made on the way; None where a node on the way is read whole.
    fn node_at(&mut self, path: &[&str]) -> Option<&mut Shape> {
        let mut node = self;
        for field in path {
            if node.whole {
                return None;
            }
            let at = match node.fields.iter().position(|(f, _)| f == field) {
                Some(at) => at,
                None => {
                    node.fields.push(((*field).to_string(), Shape::default()));
                    node.fields.len() - 1
                }
            };
            node = &mut node.fields[at].1;
        }
        (!node.whole).then_some(node)
    }

    /// Marks the value at `path` as a list whose elements are read as `each` says.
    fn read_elements(&mut self, path: &[&str], each: Shape) {
        if let Some(node) = self.node_at(path) {
            match &mut node.elements {
                Some(e) => e.merge(each),
                None => node.elements = Some(Box::new(each)),
            }
        }
    }

    /// Adds what `other` reads.
    fn merge(&mut self, other: Shape) {
        if self.whole {
            return;
        }
        if other.whole {
            *self = Shape {
                whole: true,
                ..Shape::default()
            };
            return;
        }
        for (name, part) in other.fields {
            match self.fields.iter_mut().find(|(f, _)| *f == name) {
                Some((_, mine)) => mine.merge(part),
                None => self.fields.push((name, part)),
            }
        }
        if let Some(each) = other.elements {
            match &mut self.elements {
                Some(e) => e.merge(*each),
                None => self.elements = Some(each),
            }
        }
    }

    /// Marks the value at `path` as read whole.
    fn read(&mut self, path: &[&str]) {
        if let Some(node) = self.node_at(path) {
            *node = Shape {
                whole: true,
                ..Shape::default()
            };
        }
    }
}

/// The fields selected from the variable `var` when `expr` is a chain of plain selections
/// rooted at it (`var.a.b`, or `has(var.a.b)`); `None` otherwise.
fn selected_path<'e>(expr: &'e IdedExpr, var: &str) -> Option<Vec<&'e str>> {
    let mut path = Vec::new();
    let mut at = expr;
    loop {
        match &at.expr {
            Expr::Ident(name) if name == var => {
                path.reverse();
                return Some(path);
            }
            Expr::Select(select) => {
                path.push(select.field.as_str());
                at = &select.operand;
            }
            _ => return None,
        }
    }
}

/// The parts of `value` that `shape` reads, as a CEL value.
pub(super) fn to_val_shaped<'v>(
    value: &'v JsonValue,
    shape: &Shape,
) -> Result<Box<dyn Val + 'v>, String> {
    shaped(value, shape, 0)
}

fn shaped<'v>(
    value: &'v JsonValue,
    shape: &Shape,
    depth: usize,
) -> Result<Box<dyn Val + 'v>, String> {
    match value {
        // A map a macro ranges over is iterated by its keys: all of them, so all of it.
        JsonValue::Object(fields) if !shape.whole && shape.elements.is_none() => {
            check_depth(depth)?;
            let mut map = HashMap::with_capacity(shape.fields.len());
            for (name, part) in &shape.fields {
                if let Some((key, field)) = fields.get_key_value(name) {
                    map.insert(
                        CelMapKey::from(key.as_str()),
                        shaped(field, part, depth + 1)?,
                    );
                }
            }
            Ok(Box::new(CelMap::from(map)))
        }
        JsonValue::Array(items) if !shape.whole => match &shape.elements {
            Some(each) => {
                check_depth(depth)?;
                let items = items
                    .iter()
                    .map(|item| shaped(item, each, depth + 1))
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(Box::new(CelList::from(items)))
            }
            None => convert(value, depth),
        },
        _ => convert(value, depth),
    }
}
