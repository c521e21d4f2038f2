//! Compiling (parse, bounds, type check) and evaluating expressions.

use std::sync::Arc;

use ::cel::common::types::CelNull;
use ::cel::{Context, Env, IdedExpr, ParseErrors, Program, Value};
use serde_json::Value as JsonValue;

use super::CelError;
use super::check::{self, Ty};
use super::env::{self, Dialect};
use super::json;
use super::limits::{self, INLINE_EVAL_DEPTH, MAX_AST_DEPTH};
use super::runtime;

/// The variables of a Flux readyExpr.
const READY_VARS: &[&str] = &["self", "dep"];

/// Compiles a Flux `dependsOn[].readyExpr` as Flux would: variables `self`
/// and `dep` (dynamic maps), the strings / sets / encoders / optionals
/// extensions, and a type check requiring the output type to be `bool`
/// (`dep.status.ready` fails, `dep.status.ready == true` passes).
pub fn compile_ready_expr(src: &str) -> Result<Program, CelError> {
    let env = env::env(Dialect::Flux).map_err(CelError::at_start)?;
    compile(src, &env, Dialect::Flux, READY_VARS, true).map(|(program, ..)| program)
}

/// Evaluates a readyExpr compiled by [`compile_ready_expr`] with `self` and
/// `dep` given as JSON, as Flux does to decide whether `dep` is ready.
#[cfg(test)]
pub fn eval_ready_expr(
    program: &Program,
    self_obj: &JsonValue,
    dep: &JsonValue,
) -> Result<bool, String> {
    let env = env::env(Dialect::Flux)?;
    let depth = limits::ast_depth(program.expression());
    if depth > MAX_AST_DEPTH {
        return Err(format!(
            "expression nested too deeply: {depth} levels, at most {MAX_AST_DEPTH}"
        ));
    }
    let vars = [("self", self_obj), ("dep", dep)];
    let run = Run {
        env: &env,
        expr: program.expression(),
        depth,
        budget: None,
        shapes: &[],
    };
    run.evaluate(READY_VARS, &vars, as_bool)
}

/// A policy expression (like a ValidatingAdmissionPolicy's), compiled once at
/// policy load and evaluated per request.
pub struct Expression {
    source: String,
    /// The program's AST with its loops metered (`cel::runtime`): what is evaluated.
    metered: IdedExpr,
    /// The AST as parsed, to check the metered one gives the same answers.
    #[cfg(test)]
    plain: IdedExpr,
    env: Arc<Env>,
    vars: Vec<String>,
    /// What the expression reads of each of `vars`.
    shapes: Vec<json::Shape>,
    depth: usize,
    cost: f64,
}

impl std::fmt::Debug for Expression {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Expression")
            .field("source", &self.source)
            .field("vars", &self.vars)
            .finish_non_exhaustive()
    }
}

impl Expression {
    /// Parses `src` and checks it: only `vars` (and comprehension variables)
    /// may be referenced, and the output type must be `bool` when `want_bool`.
    /// The standard library plus the strings, sets, encoders, lists and math
    /// extensions and optionals are available.
    pub fn compile(src: &str, vars: &[&str], want_bool: bool) -> Result<Expression, CelError> {
        Self::compile_under(src, vars, want_bool, super::cost::limit())
    }

    /// Compiles as [`Expression::compile`] does, refusing an estimated cost over `limit`.
    pub(super) fn compile_under(
        src: &str,
        vars: &[&str],
        want_bool: bool,
        limit: f64,
    ) -> Result<Expression, CelError> {
        let env = env::env(Dialect::Policy).map_err(CelError::at_start)?;
        let (program, _, metered) = compile(src, &env, Dialect::Policy, vars, want_bool)?;
        let metered = metered.unwrap_or_else(|| program.expression().clone());
        // Each loop's range sits one level deeper in the metered AST.
        let depth = limits::ast_depth(&metered);
        let cost = super::cost::estimate(program.expression());
        if cost > limit {
            return Err(CelError::at_start(format!(
                "estimated worst-case cost {cost:.1e} is over the limit of {limit:.1e}: on the \
                 largest review (3 MiB) a loop inside a loop over lists of the object, or a very \
                 long lists.range(), could run for minutes; compare within one element's parts, \
                 or bound the inner list (e.g. a literal list)"
            )));
        }
        // Only the variables the expression refers to are converted and bound per evaluation.
        let refs = program.references();
        let vars: Vec<String> = vars
            .iter()
            .filter(|v| refs.has_variable(v))
            .map(|v| v.to_string())
            .collect();
        // And of each, only the parts it reads.
        let shapes = vars
            .iter()
            .map(|v| json::Shape::of(program.expression(), v))
            .collect();
        Ok(Expression {
            source: src.to_string(),
            #[cfg(test)]
            plain: program.expression().clone(),
            metered,
            env,
            vars,
            shapes,
            depth,
            cost,
        })
    }

    /// Whether the expression refers to the variable `name` (one not referred to need not be
    /// given: it is neither converted nor bound).
    pub fn uses(&self, name: &str) -> bool {
        self.vars.iter().any(|v| v == name)
    }

    /// The estimated worst-case cost (`cel::cost`), at most the limit it was compiled under.
    pub fn estimated_cost(&self) -> f64 {
        self.cost
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    /// Evaluates to a `bool`. `vars` binds variables to JSON values; a
    /// variable declared at compile time but not given is `null` (e.g.
    /// `oldObject` on CREATE). A missing field (`object.spec.x` when absent)
    /// is an error: guard it with `has()`.
    pub fn eval_bool(&self, vars: &[(&str, &JsonValue)]) -> Result<bool, String> {
        self.run().evaluate(&self.vars, vars, as_bool)
    }

    /// Evaluates as [`Expression::eval_bool`] does, under a runtime cost limit of `budget`.
    #[cfg(test)]
    pub(super) fn eval_bool_within(
        &self,
        budget: u64,
        vars: &[(&str, &JsonValue)],
    ) -> Result<bool, String> {
        let run = Run {
            budget: Some(budget),
            ..self.run()
        };
        run.evaluate(&self.vars, vars, as_bool)
    }

    /// Evaluates the AST as parsed, without metering, every variable converted whole.
    #[cfg(test)]
    pub(super) fn eval_bool_unmetered(&self, vars: &[(&str, &JsonValue)]) -> Result<bool, String> {
        let run = Run {
            expr: &self.plain,
            budget: None,
            shapes: &[],
            ..self.run()
        };
        run.evaluate(&self.vars, vars, as_bool)
    }

    fn run(&self) -> Run<'_> {
        Run {
            env: &self.env,
            expr: &self.metered,
            depth: self.depth,
            budget: Some(runtime::limit()),
            shapes: &self.shapes,
        }
    }

    /// Evaluates to a `string` (e.g. a message expression), as
    /// [`Expression::eval_bool`] does.
    pub fn eval_string(&self, vars: &[(&str, &JsonValue)]) -> Result<String, String> {
        self.run().evaluate(&self.vars, vars, |value| match value {
            Value::String(s) => Ok(s.to_string()),
            other => Err(format!("expected a string result, got {}", other.type_of())),
        })
    }
}

fn as_bool(value: Value) -> Result<bool, String> {
    match value {
        Value::Bool(b) => Ok(b),
        other => Err(format!("expected a bool result, got {}", other.type_of())),
    }
}

/// Bounds, parses and type-checks `src`; the program, its AST depth, and for a policy
/// expression its AST with the loops metered (made here, on the big stack).
fn compile(
    src: &str,
    env: &Env,
    dialect: Dialect,
    vars: &[&str],
    want_bool: bool,
) -> Result<(Program, usize, Option<IdedExpr>), CelError> {
    limits::check_source(src)?;
    limits::on_big_stack(|| {
        let program = env.compile(src).map_err(|e| parse_error(src, &e))?;
        let root = program.expression();
        let at = |id: u64, message: String| {
            let offset = program
                .source_info()
                .offset_for(id)
                .map_or(0, |(start, _)| start);
            CelError::at_offset(src, offset as usize, message)
        };
        let depth = limits::ast_depth(root);
        if depth > MAX_AST_DEPTH {
            return Err(CelError::at_start(format!(
                "expression nested too deeply: {depth} levels, at most {MAX_AST_DEPTH}"
            )));
        }
        let ty = check::infer(root, dialect, vars).map_err(|e| at(e.id, e.message))?;
        if want_bool && ty != Ty::Bool {
            let offset = leftmost_offset(&program, root);
            return Err(CelError::at_offset(
                src,
                offset,
                format!("output type mismatch: expected bool, got {}", ty.name()),
            ));
        }
        let metered = (dialect == Dialect::Policy).then(|| runtime::instrument(root));
        Ok((program, depth, metered))
    })
    .map_err(CelError::at_start)?
}

/// Where the expression starts: the smallest offset in its AST.
fn leftmost_offset(program: &Program, root: &IdedExpr) -> usize {
    let mut leftmost = u32::MAX;
    let mut stack = vec![root];
    while let Some(expr) = stack.pop() {
        if let Some((start, _)) = program.source_info().offset_for(expr.id) {
            leftmost = leftmost.min(start);
        }
        limits::for_each_child(expr, |child| stack.push(child));
    }
    if leftmost == u32::MAX {
        0
    } else {
        leftmost as usize
    }
}

fn parse_error(src: &str, errors: &ParseErrors) -> CelError {
    let Some(first) = errors.errors.first() else {
        return CelError::at_start("syntax error");
    };
    let mut message = first.msg.clone();
    if errors.errors.len() > 1 {
        message.push_str(&format!(" (and {} more errors)", errors.errors.len() - 1));
    }
    let (line, column) = first.pos;
    if line >= 1 && column >= 1 {
        return CelError {
            line: line as usize,
            column: column as usize,
            message,
        };
    }
    let offset = first
        .source_info
        .as_ref()
        .and_then(|info| info.offset_for(first.expr_id))
        .map_or(0, |(start, _)| start as usize);
    CelError::at_offset(src, offset, message)
}

/// What is evaluated: an AST in its environment.
struct Run<'a> {
    env: &'a Arc<Env>,
    expr: &'a IdedExpr,
    depth: usize,
    /// The runtime cost limit, for an `expr` whose loops are metered.
    budget: Option<u64>,
    /// What `expr` reads of each declared variable, in order; a variable past the end is
    /// converted whole.
    shapes: &'a [json::Shape],
}

impl Run<'_> {
    /// Evaluates with `vars` bound (declared but missing ones `null`), then `convert`s the
    /// result: on this thread if the AST is shallow, else on a big-stack thread.
    fn evaluate<T: Send>(
        &self,
        declared: &[impl AsRef<str> + Sync],
        vars: &[(&str, &JsonValue)],
        convert: fn(Value) -> Result<T, String>,
    ) -> Result<T, String> {
        let run = || {
            let mut context = Context::with_env(Arc::clone(self.env));
            for name in declared {
                let name = name.as_ref();
                if !vars.iter().any(|(given, _)| *given == name) {
                    context.add_variable_as_val(name, Box::new(CelNull));
                }
            }
            for (name, value) in vars {
                if let Some(at) = declared.iter().position(|d| d.as_ref() == *name) {
                    let val = match self.shapes.get(at) {
                        Some(shape) => json::to_val_shaped(value, shape)?,
                        None => json::to_val(value)?,
                    };
                    context.add_variable_as_val(*name, val);
                }
            }
            let resolve = || context.resolve(self.expr).map_err(|e| e.to_string());
            let value = match self.budget {
                Some(budget) => runtime::metered(budget, resolve)?,
                None => resolve()?,
            };
            convert(value)
        };
        if self.depth <= INLINE_EVAL_DEPTH {
            limits::here(run)?
        } else {
            limits::on_big_stack(run)?
        }
    }
}
