//! The runtime cost limit: what one evaluation of a policy expression may spend, counted as
//! it runs, the way Kubernetes counts the cost of its own CEL at runtime.
//!
//! The `cel` crate has no hook into its evaluator, so the count is put into the program: at
//! compile time every comprehension's range `r` becomes `@cost(n, r)`, where `n` is the
//! number of AST nodes in the loop's condition and step. `@cost` charges `n` × the range's
//! size against the evaluation's budget before the loop starts, and fails the evaluation
//! once the budget is spent. A loop inside a loop is charged each time the inner range is
//! evaluated, so a quadratic expression stops after a bounded number of outer iterations.
//!
//! Units are those of [`super::cost`]: one per node evaluated (~80 ns). What is not a loop
//! is bounded by the size of the expression itself, and native walks (`size`, `sets.*`,
//! `lists.range` building its list) by the estimate at load; only loops grow with the data.
//!
//! `@` cannot be written in CEL source, so no expression can call `@cost` itself.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};

use ::cel::ExecutionError;
use ::cel::IdedExpr;
use ::cel::common::ast::{CallExpr, EntryExpr, Expr, LiteralValue};
use ::cel::common::types::{CelInt, DYN_TYPE, INT_TYPE};
use ::cel::common::value::CowVal;
use ::cel::{DeclarationError, Env};

use super::limits::for_each_child;

/// The function each comprehension's range is wrapped in.
const COST_FN: &str = "@cost";

/// What one evaluation may spend by default: ~0.8 s of interpreter time, a tenth of the
/// default review budget; 10 million, the budget Kubernetes gives a ValidatingAdmissionPolicy.
pub const MAX_RUNTIME_COST: f64 = 1e7;

static LIMIT: AtomicU64 = AtomicU64::new(MAX_RUNTIME_COST as u64);

static TRIPS: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// What the evaluation running on this thread may still spend.
    static REMAINING: Cell<u64> = const { Cell::new(u64::MAX) };
    /// Whether that evaluation ran out.
    static TRIPPED: Cell<bool> = const { Cell::new(false) };
}

/// The limit of one evaluation (`serve --max-cel-runtime-cost`).
pub fn limit() -> u64 {
    LIMIT.load(Ordering::Relaxed)
}

/// Sets the limit for every evaluation from now on.
pub fn set_limit(cost: u64) {
    LIMIT.store(cost, Ordering::Relaxed);
}

/// Evaluations stopped by the limit since the process started.
pub fn trips() -> u64 {
    TRIPS.load(Ordering::Relaxed)
}

/// Declares `@cost(int, dyn)` in `env`.
pub(super) fn declare(env: &mut Env) -> Result<(), DeclarationError> {
    env.add_overload(COST_FN, "fluxadmit_cost", vec![INT_TYPE, DYN_TYPE], charge)
}

/// Runs `f` with a budget of `limit` on this thread. `Err` names the limit when `f` ran out,
/// whatever error the interpreter made of it.
pub(super) fn metered<T>(limit: u64, f: impl FnOnce() -> Result<T, String>) -> Result<T, String> {
    REMAINING.with(|r| r.set(limit));
    TRIPPED.with(|t| t.set(false));
    let out = f();
    REMAINING.with(|r| r.set(u64::MAX));
    if TRIPPED.with(|t| t.replace(false)) {
        TRIPS.fetch_add(1, Ordering::Relaxed);
        return Err(format!(
            "runtime cost limit exceeded: its loops would evaluate more than {:.1e} nodes \
             (--max-cel-runtime-cost)",
            limit as f64
        ));
    }
    out
}

/// `@cost(n, range)`: charges `n` per element of `range` and gives `range` back.
fn charge<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
    let mut args = args.into_iter();
    let (Some(per), Some(range)) = (args.next(), args.next()) else {
        return Err(ExecutionError::function_error(
            COST_FN,
            "expected two arguments",
        ));
    };
    let per = per
        .downcast_ref::<CelInt>()
        .map_or(1, |n| (*n.inner()).max(1) as u64);
    let elements = range
        .as_sizer()
        .map_or(1, |s| (*s.size().inner()).max(1) as u64);
    let cost = per.saturating_mul(elements);
    let left = REMAINING.with(|r| r.get());
    if cost > left {
        REMAINING.with(|r| r.set(0));
        TRIPPED.with(|t| t.set(true));
        return Err(ExecutionError::function_error(
            COST_FN,
            "runtime cost limit exceeded",
        ));
    }
    REMAINING.with(|r| r.set(left - cost));
    Ok(range)
}

/// `expr` with every comprehension's range wrapped in `@cost`.
pub(super) fn instrument(expr: &IdedExpr) -> IdedExpr {
    let mut out = expr.clone();
    let mut next_id = max_id(expr) + 1;
    wrap(&mut out, &mut next_id);
    out
}

fn wrap(expr: &mut IdedExpr, next_id: &mut u64) {
    match &mut expr.expr {
        Expr::Comprehension(c) => {
            for child in [
                &mut c.iter_range,
                &mut c.accu_init,
                &mut c.loop_cond,
                &mut c.loop_step,
                &mut c.result,
            ] {
                wrap(child, next_id);
            }
            let per = nodes(&c.loop_cond) + nodes(&c.loop_step);
            let range = std::mem::take(&mut c.iter_range);
            let mut id = || {
                *next_id += 1;
                *next_id
            };
            c.iter_range = IdedExpr {
                id: id(),
                expr: Expr::Call(CallExpr {
                    func_name: COST_FN.to_string(),
                    target: None,
                    args: vec![
                        IdedExpr {
                            id: id(),
                            expr: Expr::Literal(LiteralValue::Int(CelInt::from(
                                i64::try_from(per).unwrap_or(i64::MAX),
                            ))),
                        },
                        range,
                    ],
                }),
            };
        }
        Expr::Call(call) => {
            if let Some(target) = &mut call.target {
                wrap(target, next_id);
            }
            for arg in &mut call.args {
                wrap(arg, next_id);
            }
        }
        Expr::List(list) => {
            for e in &mut list.elements {
                wrap(e, next_id);
            }
        }
        Expr::Map(map) => {
            for entry in &mut map.entries {
                if let EntryExpr::MapEntry(e) = &mut entry.expr {
                    wrap(&mut e.key, next_id);
                    wrap(&mut e.value, next_id);
                }
            }
        }
        Expr::Struct(s) => {
            for entry in &mut s.entries {
                match &mut entry.expr {
                    EntryExpr::StructField(f) => wrap(&mut f.value, next_id),
                    EntryExpr::MapEntry(e) => {
                        wrap(&mut e.key, next_id);
                        wrap(&mut e.value, next_id);
                    }
                }
            }
        }
        Expr::Select(select) => wrap(&mut select.operand, next_id),
        Expr::Ident(_) | Expr::Literal(_) | Expr::Unspecified => {}
    }
}

/// Nodes in `expr`, itself included.
fn nodes(expr: &IdedExpr) -> u64 {
    let mut n = 0;
    let mut stack = vec![expr];
    while let Some(e) = stack.pop() {
        n += 1;
        for_each_child(e, |c| stack.push(c));
    }
    n
}

fn max_id(expr: &IdedExpr) -> u64 {
    let mut max = 0;
    let mut stack = vec![expr];
    while let Some(e) = stack.pop() {
        max = max.max(e.id);
        for_each_child(e, |c| stack.push(c));
    }
    max
}
