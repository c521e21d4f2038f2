//! A worst-case cost for a policy expression, estimated once at load, in the spirit of the
//! estimated-cost check Kubernetes applies to its own CEL: an expression whose cost on the
//! largest review the API server can send exceeds [`MAX_ESTIMATED_COST`] does not load.
//!
//! Units: one per AST node evaluated (~80 ns), a tenth per list element or string byte a
//! function walks natively.
//! Sizes are upper bounds. Nothing is known of the review's shape, so a list or string read
//! from a variable may hold [`UNBOUNDED`] elements: every element of a JSON list takes at least
//! two bytes and a review body is at most 3 MiB.
//!
//! Nested loops over unrelated lists multiply (`xs.all(x, xs.exists_one(y, ...))` is
//! quadratic and refused), but a loop over a part of the outer loop's element
//! (`containers.all(c, c.ports.all(p, ...))`) is charged once for all outer iterations: the
//! parts are disjoint pieces of one bounded body, so their sizes add up to at most
//! [`UNBOUNDED`]. Without that, every ordinary two-level rule would be refused.

use std::sync::atomic::{AtomicU64, Ordering};

use ::cel::IdedExpr;
use ::cel::common::ast::{EntryExpr, Expr, LiteralValue};

/// Elements a list read from the review may hold (3 MiB, two bytes an element).
pub const UNBOUNDED: f64 = (3 * 1024 * 1024 / 2) as f64;

/// The most an expression may cost by default. A single pass over the largest review with a
/// body of a few dozen nodes fits; a loop inside a loop over two unrelated review lists does
/// not. Measured, a unit is ~80 ns of interpreter time: 1e8 is the 8 s review budget.
pub const MAX_ESTIMATED_COST: f64 = 1e8;

/// What a function walking a string or a list natively (`size`, `contains`, `matches`,
/// comparisons, `sets.*`) costs per byte or element, in units of one interpreted node: a
/// native loop step takes nanoseconds, an interpreted one tens.
const NATIVE_STEP: f64 = 0.1;

/// What one element of a `lists.range()` past its first thousand costs: its evaluation and its
/// memory. With the default limit a range holds at most about a million elements (~32 MiB).
const RANGE_ELEMENT_COST: f64 = 100.0;

static LIMIT: AtomicU64 = AtomicU64::new(MAX_ESTIMATED_COST.to_bits());

/// The limit policies load under: [`MAX_ESTIMATED_COST`] unless [`set_limit`] changed it.
pub fn limit() -> f64 {
    f64::from_bits(LIMIT.load(Ordering::Relaxed))
}

/// Sets the limit for every policy compiled from now on (`serve --max-cel-cost`).
pub fn set_limit(cost: f64) {
    LIMIT.store(cost.to_bits(), Ordering::Relaxed);
}

/// The estimate of one subexpression.
#[derive(Clone, Copy, Debug)]
struct Est {
    /// Cost of one evaluation, beyond what is amortized.
    cost: f64,
    /// Cost summed over every iteration of the loop whose variable is `amort_var` (not per
    /// iteration).
    amort: f64,
    amort_var: Option<usize>,
    /// Elements (or bytes) of the value, 1 for scalars.
    size: f64,
    /// Size of each element.
    elem: f64,
    /// The loop variable this value is a part of (a field or element of it).
    origin: Option<usize>,
}

impl Est {
    fn scalar(cost: f64) -> Est {
        Est {
            cost,
            amort: 0.0,
            amort_var: None,
            size: 1.0,
            elem: 1.0,
            origin: None,
        }
    }

    fn unknown(cost: f64, origin: Option<usize>) -> Est {
        Est {
            size: UNBOUNDED,
            elem: UNBOUNDED,
            origin,
            ..Est::scalar(cost)
        }
    }

    /// Adds the cost of `other` (evaluated once alongside this one).
    fn add(&mut self, other: &Est) {
        self.cost += other.cost;
        self.add_amortized(other.amort, other.amort_var);
    }

    /// Charges `cost` for all iterations of loop `var` together (or once, without a loop).
    fn add_amortized(&mut self, cost: f64, var: Option<usize>) {
        if cost == 0.0 {
            return;
        }
        match (var, self.amort_var) {
            (None, _) => self.cost += cost,
            (Some(v), None) => {
                self.amort_var = Some(v);
                self.amort = cost;
            }
            (Some(v), Some(w)) if v == w => self.amort += cost,
            // Two different loops: keep the innermost amortized; the other is charged per
            // evaluation, which is never less than its share.
            (Some(v), Some(w)) => {
                if v > w {
                    self.cost += self.amort;
                    self.amort = cost;
                    self.amort_var = Some(v);
                } else {
                    self.cost += cost;
                }
            }
        }
    }

    /// Charges work proportional to `of`'s size: amortized over its loop when it is a part of
    /// a loop element.
    fn charge_size(&mut self, of: &Est) {
        self.add_amortized(of.size * NATIVE_STEP, of.origin);
    }
}

/// The estimated worst-case cost of evaluating `root`.
pub(super) fn estimate(root: &IdedExpr) -> f64 {
    let mut e = Estimator { scopes: Vec::new() };
    let est = e.est(root);
    est.cost + est.amort
}

/// A variable bound by a comprehension: its name, the size of its value, and the index of
/// the loop whose element it is (for an iteration variable).
struct Scope<'e> {
    name: &'e str,
    size: f64,
    elem: f64,
    origin: Option<usize>,
}

struct Estimator<'e> {
    scopes: Vec<Scope<'e>>,
}

impl<'e> Estimator<'e> {
    fn est(&mut self, expr: &'e IdedExpr) -> Est {
        match &expr.expr {
            Expr::Unspecified => Est::scalar(1.0),
            Expr::Literal(lit) => {
                let mut est = Est::scalar(1.0);
                match lit {
                    LiteralValue::String(s) => est.size = s.inner().len().max(1) as f64,
                    LiteralValue::Bytes(b) => est.size = b.inner().len().max(1) as f64,
                    _ => {}
                }
                est
            }
            Expr::Ident(name) => match self.scopes.iter().rev().find(|s| s.name == name) {
                Some(s) => Est {
                    size: s.size,
                    elem: s.elem,
                    origin: s.origin,
                    ..Est::scalar(1.0)
                },
                None => Est::unknown(1.0, None),
            },
            Expr::Select(select) => {
                let operand = self.est(&select.operand);
                if select.test {
                    let mut est = Est::scalar(1.0);
                    est.add(&operand);
                    return est;
                }
                let mut est = Est::unknown(1.0, operand.origin);
                est.add(&operand);
                est
            }
            Expr::List(list) => {
                let mut est = Est::scalar(1.0);
                let mut elem: f64 = 1.0;
                for e in &list.elements {
                    let x = self.est(e);
                    elem = elem.max(x.size);
                    est.add(&x);
                }
                est.size = (list.elements.len() as f64).max(1.0);
                est.elem = elem;
                est
            }
            Expr::Map(map) => {
                let mut est = Est::scalar(1.0);
                for entry in &map.entries {
                    if let EntryExpr::MapEntry(e) = &entry.expr {
                        let k = self.est(&e.key);
                        let v = self.est(&e.value);
                        est.add(&k);
                        est.add(&v);
                        est.elem = est.elem.max(v.size);
                    }
                }
                est.size = (map.entries.len() as f64).max(1.0);
                est
            }
            Expr::Struct(s) => {
                let mut est = Est::scalar(1.0);
                for entry in &s.entries {
                    match &entry.expr {
                        EntryExpr::StructField(f) => {
                            let v = self.est(&f.value);
                            est.add(&v);
                        }
                        EntryExpr::MapEntry(e) => {
                            let k = self.est(&e.key);
                            let v = self.est(&e.value);
                            est.add(&k);
                            est.add(&v);
                        }
                    }
                }
                est
            }
            Expr::Call(call) => {
                let target = call.target.as_deref().map(|t| self.est(t));
                let args: Vec<Est> = call.args.iter().map(|a| self.est(a)).collect();
                let namespaced = match call.target.as_deref().map(|t| &t.expr) {
                    Some(Expr::Ident(ns)) if !self.scopes.iter().any(|s| s.name == ns) => {
                        Some(ns.as_str())
                    }
                    _ => None,
                };
                let literal_int = |i: usize| match call.args.get(i).map(|a| &a.expr) {
                    Some(Expr::Literal(LiteralValue::Int(n))) => Some((*n.inner()).max(0) as f64),
                    Some(Expr::Literal(LiteralValue::UInt(n))) => Some(*n.inner() as f64),
                    _ => None,
                };
                self.call(namespaced, &call.func_name, target, args, literal_int(0))
            }
            Expr::Comprehension(c) => {
                let range = self.est(&c.iter_range);
                let init = self.est(&c.accu_init);
                let k = self.scopes.len();
                self.scopes.push(Scope {
                    name: &c.iter_var,
                    size: range.elem,
                    elem: UNBOUNDED,
                    origin: Some(k),
                });
                let accu_size = init.size.max(range.size);
                // In the loop the accumulator is only folded into (`@result && x`, or
                // `@result + [x]`, which the interpreter appends in place): unit cost.
                self.scopes.push(Scope {
                    name: &c.accu_var,
                    size: 1.0,
                    elem: UNBOUNDED,
                    origin: None,
                });
                let cond = self.est(&c.loop_cond);
                let step = self.est(&c.loop_step);
                self.scopes.pop();
                self.scopes.pop();
                let k2 = self.scopes.len();
                self.scopes.push(Scope {
                    name: &c.accu_var,
                    size: accu_size,
                    elem: UNBOUNDED,
                    origin: None,
                });
                let result = self.est(&c.result);
                self.scopes.pop();
                debug_assert_eq!(k, k2);

                let n = range.size;
                let mut body = cond;
                body.add(&step);
                // The body's cost per iteration, times the iterations; what the body charges
                // to this loop's element is already a total.
                let mut loop_cost = n * body.cost;
                let mut out = Est::scalar(1.0);
                match body.amort_var {
                    Some(v) if v == k => loop_cost += body.amort,
                    // Amortized over an outer loop, per iteration of this one.
                    Some(v) => out.add_amortized(n * body.amort, Some(v)),
                    None => loop_cost += body.amort,
                }
                out.add(&range);
                out.add(&init);
                out.add(&result);
                // A loop over a part of an outer loop's element: its iterations, summed over
                // that outer loop, are bounded by the outer list's size.
                out.add_amortized(loop_cost, range.origin);
                out.size = accu_size;
                out.elem = step.size.max(range.elem);
                out
            }
        }
    }

    /// A call of `name` (with `namespace` for `lists.range` and the like).
    fn call(
        &mut self,
        namespace: Option<&str>,
        name: &str,
        target: Option<Est>,
        args: Vec<Est>,
        first_literal: Option<f64>,
    ) -> Est {
        let mut est = Est::scalar(1.0);
        let receiver = if namespace.is_some() { None } else { target };
        if let Some(t) = &receiver {
            est.add(t);
        }
        for a in &args {
            est.add(a);
        }
        let first = receiver.or_else(|| args.first().copied());
        let second = if receiver.is_some() {
            args.first().copied()
        } else {
            args.get(1).copied()
        };
        let qualified = match namespace {
            Some(ns) => format!("{ns}.{name}"),
            None => name.to_string(),
        };
        match qualified.as_str() {
            // A list of n integers, built whole: charged for its memory too (tens of bytes
            // an element), so no range can take more than a few tens of MiB.
            "lists.range" => {
                let n = first_literal.unwrap_or(UNBOUNDED);
                est.cost += n + (n - 1000.0).max(0.0) * (RANGE_ELEMENT_COST - 1.0);
                est.size = n.max(1.0);
                est.elem = 1.0;
            }
            // Quadratic in this implementation (each element compared with each).
            "sets.contains" | "sets.equivalent" | "sets.intersects" => {
                if let (Some(a), Some(b)) = (first, second) {
                    est.cost += a.size * b.size * NATIVE_STEP;
                }
            }
            "distinct" => {
                if let Some(a) = first {
                    est.cost += a.size * a.size * NATIVE_STEP;
                    est.size = a.size;
                    est.elem = a.elem;
                }
            }
            // Results as long as their input, walked once.
            "sort" | "reverse" | "flatten" | "slice" | "split" | "lowerAscii" | "upperAscii"
            | "trim" | "replace" | "substring" | "join" | "keys" | "values" | "base64.encode"
            | "base64.decode" | "strings.quote" => {
                if let Some(a) = first {
                    est.charge_size(&a);
                    est.size = a.size;
                    est.elem = a.elem;
                    est.origin = a.origin;
                    if name == "sort" {
                        est.cost += a.size * 20.0 * NATIVE_STEP;
                    }
                }
            }
            // Concatenation: as long as both.
            "_+_" => {
                if let (Some(a), Some(b)) = (first, second) {
                    est.charge_size(&a);
                    est.charge_size(&b);
                    // Nothing built from the review outgrows it; lists.range is charged
                    // where it is built.
                    est.size = (a.size + b.size).min(UNBOUNDED.max(a.size).max(b.size));
                    est.elem = a.elem.max(b.elem);
                }
            }
            // Index and field access: a part of the operand.
            "_[_]" | "_[?_]" => {
                if let Some(a) = first {
                    est.size = a.elem;
                    est.elem = UNBOUNDED;
                    est.origin = a.origin;
                }
            }
            // A comparison stops at the end of the shorter operand: charge the one that is
            // part of a loop element when there is one (amortized), else the shorter.
            "_==_" | "_!=_" | "_<_" | "_<=_" | "_>_" | "_>=_" | "startsWith" | "endsWith" => {
                if let (Some(a), Some(b)) = (first, second) {
                    let shorter = match (a.origin, b.origin) {
                        (Some(_), _) if a.size <= b.size || b.origin.is_none() => a,
                        (_, Some(_)) => b,
                        _ if a.size <= b.size => a,
                        _ => b,
                    };
                    if shorter.size > 1.0 {
                        est.charge_size(&shorter);
                    }
                }
            }
            // Walks its operands (a search, a conversion).
            "size" | "@in" | "contains" | "matches" | "indexOf" | "lastIndexOf" | "charAt"
            | "string" | "bytes" => {
                for a in [first, second].into_iter().flatten() {
                    if a.size > 1.0 {
                        est.charge_size(&a);
                    }
                }
            }
            _ => {}
        }
        est
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cost(src: &str) -> f64 {
        let env = super::super::env::env(super::super::env::Dialect::Policy).unwrap();
        let program = env.compile(src).unwrap();
        estimate(program.expression())
    }

    #[test]
    fn a_single_pass_over_the_review_is_within_the_limit() {
        for src in [
            "object.spec.template.spec.containers.all(c, c.securityContext.privileged == false)",
            "object.spec.template.spec.containers.all(c, c.image.startsWith('registry.example.com/'))",
            "object.spec.template.spec.containers.all(c, c.ports.all(p, p.containerPort > 1024))",
            "object.spec.template.spec.containers.map(c, c.name).exists(n, n == 'app')",
            "size(object.metadata.name) < 64 && object.metadata.name.matches('^[a-z-]+$')",
            "object.spec.template.spec.containers.all(c, lists.range(3).all(i, c.name != string(i)))",
        ] {
            let c = cost(src);
            assert!(c <= MAX_ESTIMATED_COST, "{src}: {c:e}");
        }
    }

    #[test]
    fn nested_loops_over_unrelated_review_lists_are_over_the_limit() {
        for src in [
            "object.spec.template.spec.containers.all(c, object.spec.template.spec.containers.exists_one(d, d.name == c.name))",
            "lists.range(1000000).all(i, lists.range(1000000).all(j, i != j))",
            "lists.range(100000000).size() > 0",
            "lists.range(5000000).size() > 0",
            "sets.intersects(object.spec.a, object.spec.b)",
            "object.spec.a.all(x, object.spec.b.all(y, x != y))",
        ] {
            let c = cost(src);
            assert!(c > MAX_ESTIMATED_COST, "{src}: {c:e}");
        }
    }

    #[test]
    fn loops_over_parts_of_an_element_add_up_instead_of_multiplying() {
        let nested = cost(
            "object.spec.template.spec.containers.all(c, c.ports.all(p, c.env.all(e, e.name != p.name)))",
        );
        // c.env inside c.ports: both parts of c, but env is walked once per port: that one
        // multiplies, and is refused.
        assert!(nested > MAX_ESTIMATED_COST, "{nested:e}");
        let two = cost(
            "object.spec.template.spec.containers.all(c, c.ports.all(p, p.containerPort > 0) && c.env.all(e, e.name != ''))",
        );
        assert!(two <= MAX_ESTIMATED_COST, "{two:e}");
    }
}
