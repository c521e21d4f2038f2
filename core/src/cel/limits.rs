//! Bounds that keep the `cel` crate's recursion within the stack, and the
//! big-stack thread it runs on when it might not.

use std::panic::{AssertUnwindSafe, catch_unwind};

use ::cel::IdedExpr;
use ::cel::common::ast::{EntryExpr, Expr};

use super::CelError;

/// Longest source accepted, in bytes.
pub const MAX_SOURCE_BYTES: usize = 16 * 1024;
/// Most tokens (identifier or number words, and operator / bracket
/// characters, counted conservatively) accepted: each AST nesting level needs
/// at least one, so this bounds the parser's recursion.
pub const MAX_TOKENS: usize = 2_000;
/// Deepest AST accepted, which bounds the evaluator's recursion.
pub const MAX_AST_DEPTH: usize = 500;
/// Stack of the thread compiling, and evaluating deep programs. Only
/// reserved: pages are committed as they are touched.
const BIG_STACK: usize = 128 << 20;
/// Programs up to this depth are evaluated on the caller's thread: a few KiB
/// of stack a level in release builds, ~40 KiB in debug ones, well within a
/// 2 MiB tokio worker either way.
pub(super) const INLINE_EVAL_DEPTH: usize = if cfg!(debug_assertions) { 16 } else { 128 };

/// Rejects sources too long or with too many tokens, before parsing.
pub(super) fn check_source(source: &str) -> Result<(), CelError> {
    if source.len() > MAX_SOURCE_BYTES {
        return Err(CelError::at_start(format!(
            "expression is too long: {} bytes, at most {MAX_SOURCE_BYTES}",
            source.len()
        )));
    }
    let mut tokens = 0;
    let mut in_word = false;
    for (offset, c) in source.char_indices() {
        let word = c.is_ascii_alphanumeric() || c == '_';
        let operator = c.is_ascii_punctuation()
            && !matches!(c, '_' | '\'' | '"' | '`' | ',' | ')' | ']' | '}');
        if (word && !in_word) || operator {
            tokens += 1;
            if tokens > MAX_TOKENS {
                return Err(CelError::at_offset(
                    source,
                    offset,
                    format!("expression is too complex: more than {MAX_TOKENS} tokens"),
                ));
            }
        }
        in_word = word;
    }
    Ok(())
}

/// Calls `f` on each direct child of `expr`.
pub(super) fn for_each_child<'e>(expr: &'e IdedExpr, mut f: impl FnMut(&'e IdedExpr)) {
    match &expr.expr {
        Expr::Call(call) => {
            if let Some(target) = &call.target {
                f(target);
            }
            call.args.iter().for_each(f);
        }
        Expr::Comprehension(c) => {
            for child in [
                &c.iter_range,
                &c.accu_init,
                &c.loop_cond,
                &c.loop_step,
                &c.result,
            ] {
                f(child);
            }
        }
        Expr::List(list) => list.elements.iter().for_each(f),
        Expr::Map(map) => {
            for entry in &map.entries {
                if let EntryExpr::MapEntry(e) = &entry.expr {
                    f(&e.key);
                    f(&e.value);
                }
            }
        }
        Expr::Struct(s) => {
            for entry in &s.entries {
                match &entry.expr {
                    EntryExpr::StructField(field) => f(&field.value),
                    EntryExpr::MapEntry(e) => {
                        f(&e.key);
                        f(&e.value);
                    }
                }
            }
        }
        Expr::Select(select) => f(&select.operand),
        Expr::Ident(_) | Expr::Literal(_) | Expr::Unspecified => {}
    }
}

/// Depth of the AST (a leaf is 1), iteratively.
pub(super) fn ast_depth(root: &IdedExpr) -> usize {
    let mut deepest = 0;
    let mut stack = vec![(root, 1usize)];
    while let Some((expr, depth)) = stack.pop() {
        deepest = deepest.max(depth);
        for_each_child(expr, |child| stack.push((child, depth + 1)));
    }
    deepest
}

/// Runs `f` on a fresh thread with a big stack; a panic becomes an error.
pub(super) fn on_big_stack<R: Send>(f: impl FnOnce() -> R + Send) -> Result<R, String> {
    std::thread::scope(|scope| {
        let handle = std::thread::Builder::new()
            .name("fluxadmit-cel".to_string())
            .stack_size(BIG_STACK)
            .spawn_scoped(scope, f)
            .map_err(|e| format!("cannot start the CEL thread: {e}"))?;
        handle
            .join()
            .map_err(|_| "the CEL interpreter panicked".to_string())
    })
}

/// Runs `f` here; a panic becomes an error.
pub(super) fn here<R>(f: impl FnOnce() -> R) -> Result<R, String> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|_| "the CEL interpreter panicked".to_string())
}
