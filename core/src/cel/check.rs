//! Static type inference over the `cel` crate's AST, standing in for cel-go's
//! checker: every variable is `dyn` (Flux declares `self` and `dep` as
//! `google.protobuf.Struct`, Kubernetes' objects are dynamic too), and types
//! are only as precise as needed to tell whether an expression is `bool`.
//!
//! Rejected, as cel-go would: undeclared identifiers and functions, field
//! selection on a non-map, `&&` / `||` / `!` / `?:` conditions and operators
//! on operands of known, mismatching types, a comprehension over a scalar,
//! and (when asked) an output type other than `bool`. Anything typed `dyn` is
//! accepted wherever a value is needed, as cel-go does.

use ::cel::common::ast::{
    CallExpr, ComprehensionExpr, EntryExpr, Expr, IdedExpr, LiteralValue, operators,
};

use super::env::Dialect;

/// The static type of an expression.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Ty {
    Bool,
    Int,
    Uint,
    Double,
    String,
    Bytes,
    Null,
    List,
    Map,
    Type,
    Optional,
    Duration,
    Timestamp,
    Dyn,
}

impl Ty {
    pub(super) fn name(self) -> &'static str {
        match self {
            Ty::Bool => "bool",
            Ty::Int => "int",
            Ty::Uint => "uint",
            Ty::Double => "double",
            Ty::String => "string",
            Ty::Bytes => "bytes",
            Ty::Null => "null_type",
            Ty::List => "list",
            Ty::Map => "map",
            Ty::Type => "type",
            Ty::Optional => "optional_type",
            Ty::Duration => "google.protobuf.Duration",
            Ty::Timestamp => "google.protobuf.Timestamp",
            Ty::Dyn => "dyn",
        }
    }
}

/// A type error at the node `id`.
#[derive(Debug)]
pub(super) struct TypeError {
    pub(super) id: u64,
    pub(super) message: String,
}

fn error(id: u64, message: impl Into<String>) -> TypeError {
    TypeError {
        id,
        message: message.into(),
    }
}

/// Identifiers that name types (`type(x) == string`).
const TYPE_NAMES: &[&str] = &[
    "bool",
    "int",
    "uint",
    "double",
    "string",
    "bytes",
    "list",
    "map",
    "null_type",
    "type",
];

/// Infers the type of `expr`, where `vars` are the declared (dyn) variables.
/// The caller bounds the AST's depth: this recurses.
pub(super) fn infer(expr: &IdedExpr, dialect: Dialect, vars: &[&str]) -> Result<Ty, TypeError> {
    Checker {
        dialect,
        vars,
        scopes: Vec::new(),
    }
    .infer(expr)
}

struct Checker<'v, 'e> {
    dialect: Dialect,
    vars: &'v [&'v str],
    /// Comprehension variables in scope, innermost last.
    scopes: Vec<(&'e str, Ty)>,
}

impl<'e> Checker<'_, 'e> {
    fn infer(&mut self, expr: &'e IdedExpr) -> Result<Ty, TypeError> {
        match &expr.expr {
            Expr::Unspecified => Err(error(expr.id, "invalid expression")),
            Expr::Literal(literal) => Ok(match literal {
                LiteralValue::Boolean(_) => Ty::Bool,
                LiteralValue::Bytes(_) => Ty::Bytes,
                LiteralValue::Double(_) => Ty::Double,
                LiteralValue::Int(_) => Ty::Int,
                LiteralValue::Null => Ty::Null,
                LiteralValue::String(_) => Ty::String,
                LiteralValue::UInt(_) => Ty::Uint,
            }),
            Expr::Ident(name) => self.ident(expr.id, name),
            Expr::Select(select) => match self.infer(&select.operand)? {
                Ty::Dyn | Ty::Map if select.test => Ok(Ty::Bool),
                Ty::Dyn | Ty::Map => Ok(Ty::Dyn),
                Ty::Optional if !select.test => Ok(Ty::Optional),
                other => Err(error(
                    expr.id,
                    format!("type '{}' does not support field selection", other.name()),
                )),
            },
            Expr::List(list) => {
                for element in &list.elements {
                    self.infer(element)?;
                }
                Ok(Ty::List)
            }
            Expr::Map(map) => {
                for entry in &map.entries {
                    if let EntryExpr::MapEntry(e) = &entry.expr {
                        self.infer(&e.key)?;
                        self.infer(&e.value)?;
                    }
                }
                Ok(Ty::Map)
            }
            Expr::Struct(s) => {
                if !s
                    .type_name
                    .trim_start_matches('.')
                    .starts_with("google.protobuf.")
                {
                    return Err(error(
                        expr.id,
                        format!("undeclared reference to message type '{}'", s.type_name),
                    ));
                }
                for entry in &s.entries {
                    if let EntryExpr::StructField(field) = &entry.expr {
                        self.infer(&field.value)?;
                    }
                }
                Ok(Ty::Dyn)
            }
            Expr::Call(call) => self.call(expr.id, call),
            Expr::Comprehension(c) => self.comprehension(c),
        }
    }

    fn is_bound(&self, name: &str) -> bool {
        self.scopes.iter().any(|(n, _)| *n == name) || self.vars.contains(&name)
    }

    fn ident(&self, id: u64, name: &str) -> Result<Ty, TypeError> {
        if let Some((_, ty)) = self.scopes.iter().rev().find(|(n, _)| *n == name) {
            return Ok(*ty);
        }
        if self.vars.contains(&name) {
            return Ok(Ty::Dyn);
        }
        if TYPE_NAMES.contains(&name) {
            return Ok(Ty::Type);
        }
        Err(error(id, format!("undeclared reference to '{name}'")))
    }

    fn call(&mut self, id: u64, call: &'e CallExpr) -> Result<Ty, TypeError> {
        // `ns.f(..)`: a namespaced global function, unless `ns` is a variable.
        if let Some(Expr::Ident(namespace)) = call.target.as_deref().map(|t| &t.expr)
            && !self.is_bound(namespace)
            && self.dialect.has_namespace(namespace)
        {
            let name = format!("{namespace}.{}", call.func_name);
            let args = self.infer_all(&call.args)?;
            return function(self.dialect, &name, None, &args).map_err(|m| error(id, m));
        }
        let target = match &call.target {
            Some(target) => Some(self.infer(target)?),
            None => None,
        };
        let args = self.infer_all(&call.args)?;
        function(self.dialect, &call.func_name, target, &args).map_err(|m| error(id, m))
    }

    fn infer_all(&mut self, exprs: &'e [IdedExpr]) -> Result<Vec<Ty>, TypeError> {
        exprs.iter().map(|e| self.infer(e)).collect()
    }

    /// A comprehension's type is its result's, with the accumulator typed as
    /// its initial value: `all` / `exists` / `exists_one` are `bool`, `map` /
    /// `filter` lists, and the bindings the optional macros make are typed as
    /// what they bind.
    fn comprehension(&mut self, c: &'e ComprehensionExpr) -> Result<Ty, TypeError> {
        let range = self.infer(&c.iter_range)?;
        if !matches!(range, Ty::List | Ty::Map | Ty::Dyn) {
            return Err(error(
                c.iter_range.id,
                format!(
                    "expression of type '{}' cannot be the range of a comprehension \
                     (must be list, map, or dynamic)",
                    range.name()
                ),
            ));
        }
        let accu = self.infer(&c.accu_init)?;
        let outer = self.scopes.len();
        self.scopes.push((c.accu_var.as_str(), accu));
        let with_accu = self.scopes.len();
        self.scopes.push((c.iter_var.as_str(), Ty::Dyn));
        if let Some(var) = &c.iter_var2 {
            self.scopes.push((var.as_str(), Ty::Dyn));
        }
        let body = self
            .infer(&c.loop_cond)
            .and_then(|_| self.infer(&c.loop_step));
        self.scopes.truncate(with_accu);
        let result = body.and_then(|_| self.infer(&c.result));
        self.scopes.truncate(outer);
        result
    }
}

/// The result type of calling `name` (on `target`, if a member call).
fn function(dialect: Dialect, name: &str, target: Option<Ty>, args: &[Ty]) -> Result<Ty, String> {
    use Ty::*;
    let operands: Vec<Ty> = target.into_iter().chain(args.iter().copied()).collect();
    let no_overload = || {
        let types: Vec<&str> = operands.iter().map(|t| t.name()).collect();
        format!(
            "found no matching overload for '{name}' applied to '({})'",
            types.join(", ")
        )
    };
    let policy = dialect == Dialect::Policy;
    let ty = match name {
        operators::LOGICAL_AND | operators::LOGICAL_OR | operators::LOGICAL_NOT => {
            if !operands.iter().all(|t| matches!(t, Bool | Dyn)) {
                return Err(no_overload());
            }
            Bool
        }
        operators::CONDITIONAL => match operands.as_slice() {
            [Bool | Dyn, a, b] if a == b => *a,
            [Bool | Dyn, _, _] => Dyn,
            _ => return Err(no_overload()),
        },
        operators::NOT_STRICTLY_FALSE
        | operators::EQUALS
        | operators::NOT_EQUALS
        | operators::LESS
        | operators::LESS_EQUALS
        | operators::GREATER
        | operators::GREATER_EQUALS
        | operators::IN => Bool,
        operators::ADD
        | operators::SUBSTRACT
        | operators::MULTIPLY
        | operators::DIVIDE
        | operators::MODULO => match operands.as_slice() {
            [a, b] => arithmetic(name, *a, *b).ok_or_else(no_overload)?,
            _ => return Err(no_overload()),
        },
        operators::NEGATE => match operands.as_slice() {
            [t @ (Int | Double | Dyn)] => *t,
            _ => return Err(no_overload()),
        },
        operators::INDEX => match operands.first() {
            Some(List | Map | Dyn) => Dyn,
            Some(Optional) => Optional,
            _ => return Err(no_overload()),
        },
        operators::OPT_INDEX | operators::OPT_SELECT => Optional,
        "size" | "indexOf" | "lastIndexOf" | "getDate" | "getDayOfMonth" | "getDayOfWeek"
        | "getDayOfYear" | "getFullYear" | "getHours" | "getMilliseconds" | "getMinutes"
        | "getMonth" | "getSeconds" | "int" => Int,
        "uint" => Uint,
        "double" => Double,
        "bool" | "contains" | "startsWith" | "endsWith" | "matches" | "hasValue"
        | "sets.contains" | "sets.equivalent" | "sets.intersects" => Bool,
        "string" | "lowerAscii" | "upperAscii" | "trim" | "replace" | "substring" | "charAt"
        | "format" | "join" | "strings.quote" | "base64.encode" => String,
        "bytes" | "base64.decode" => Bytes,
        "split" => List,
        "reverse" => match target {
            Some(String) => String,
            Some(List) => List,
            _ => Dyn,
        },
        "type" => Type,
        "duration" => Duration,
        "timestamp" => Timestamp,
        "dyn" | "value" | "orValue" => Dyn,
        "optional.of" | "optional.none" | "optional.ofNonZeroValue" | "or" => Optional,
        "flatten" | "distinct" | "sort" | "slice" | "lists.range" | "@sortByAssociatedKeys"
            if policy =>
        {
            List
        }
        "math.isInf" | "math.isNaN" | "math.isFinite" if policy => Bool,
        "math.ceil" | "math.floor" | "math.round" | "math.trunc" | "math.abs" | "math.sign"
        | "math.bitAnd" | "math.bitOr" | "math.bitXor" | "math.bitNot" | "math.bitShiftLeft"
        | "math.bitShiftRight" | "math.sqrt" | "math.@max" | "math.@min"
            if policy =>
        {
            Dyn
        }
        _ => return Err(format!("undeclared reference to '{name}'")),
    };
    Ok(ty)
}

/// `a op b` for the arithmetic operators, `None` if no overload fits.
fn arithmetic(op: &str, a: Ty, b: Ty) -> Option<Ty> {
    use Ty::*;
    if a == Dyn || b == Dyn {
        return Some(Dyn);
    }
    let numeric = a == b && matches!(a, Int | Uint | Double);
    match op {
        operators::ADD => match (a, b) {
            _ if numeric => Some(a),
            (String, String) | (Bytes, Bytes) | (List, List) | (Duration, Duration) => Some(a),
            (Timestamp, Duration) | (Duration, Timestamp) => Some(Timestamp),
            _ => None,
        },
        operators::SUBSTRACT => match (a, b) {
            _ if numeric => Some(a),
            (Timestamp, Timestamp) | (Duration, Duration) => Some(Duration),
            (Timestamp, Duration) => Some(Timestamp),
            _ => None,
        },
        operators::MODULO => (a == b && matches!(a, Int | Uint)).then_some(a),
        _ => numeric.then_some(a),
    }
}
