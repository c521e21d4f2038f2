//! CEL for Flux `dependsOn[].readyExpr` and for policy expressions.
//!
//! The `cel` crate parses and evaluates but has no type checker, so
//! [`check`] adds a small static type inference over its AST: enough to
//! reject what Flux's cel-go type check rejects (undeclared identifiers, a
//! non-`bool` output type, obvious operator mismatches), to be sure a readyExpr
//! accepted here will compile in Flux.
//!
//! Safety: the `cel` crate's parser and evaluator recurse deeply (tens of KiB
//! of stack per nesting level in debug builds), so an untrusted expression
//! could overflow a 2 MiB tokio worker stack and abort the process. Sources are
//! bounded ([`limits`]), compiling always runs on a dedicated thread with a
//! large stack, and evaluation does too once the AST is deeper than a small
//! threshold; a panic inside the crate becomes an error.

mod check;
mod cost;
mod env;
mod eval;
mod json;
mod limits;
mod runtime;

#[cfg(test)]
mod tests;

pub use self::cost::{MAX_ESTIMATED_COST, set_limit as set_cost_limit};
pub use self::eval::{Expression, compile_ready_expr};
pub use self::runtime::{
    MAX_RUNTIME_COST, set_limit as set_runtime_cost_limit, trips as runtime_cost_trips,
};
#[cfg(test)]
use self::{eval::eval_ready_expr, limits::MAX_SOURCE_BYTES};

/// A compile error, at a 1-based line and column (in characters) of the source.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{line}:{column}: {message}")]
pub struct CelError {
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl CelError {
    fn at_start(message: impl Into<String>) -> CelError {
        CelError {
            line: 1,
            column: 1,
            message: message.into(),
        }
    }

    /// An error at byte `offset` of `source` (clamped to the source, and down
    /// to a character boundary).
    fn at_offset(source: &str, offset: usize, message: impl Into<String>) -> CelError {
        let mut end = offset.min(source.len());
        while end > 0 && !source.is_char_boundary(end) {
            end -= 1;
        }
        let before = source.get(..end).unwrap_or("");
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        CelError {
            line: before.matches('\n').count() + 1,
            column: before.get(line_start..).unwrap_or("").chars().count() + 1,
            message: message.into(),
        }
    }
}

/// Whether a readyExpr compiles as Flux would compile it, remembered per thread: compiling
/// costs tens of microseconds (it runs on a large-stack thread), and the same few expressions
/// come back on every reconcile. The answer is a pure function of the source, so the cache
/// never changes a verdict.
pub fn check_ready_expr(src: &str) -> Result<(), CelError> {
    use std::cell::RefCell;
    use std::collections::HashMap;
    const CAPACITY: usize = 256;
    thread_local! {
        static CHECKED: RefCell<HashMap<String, Result<(), CelError>>> = RefCell::new(HashMap::new());
    }
    if let Some(hit) = CHECKED.with(|c| c.borrow().get(src).cloned()) {
        return hit;
    }
    let res = compile_ready_expr(src).map(|_| ());
    CHECKED.with(|c| {
        let mut c = c.borrow_mut();
        if c.len() >= CAPACITY {
            c.clear();
        }
        c.insert(src.to_owned(), res.clone());
    });
    res
}
