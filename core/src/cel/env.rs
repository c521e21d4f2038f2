//! The two CEL environments, built once, and the `sets` extension the `cel`
//! crate lacks.

use std::sync::{Arc, OnceLock};

use ::cel::common::types::{CelBool, LIST_TYPE};
use ::cel::common::value::{CowVal, Val};
use ::cel::{DeclarationError, Env, ExecutionError, extensions};

/// Which functions an expression may call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Dialect {
    /// Flux's readyExpr: standard library, strings, sets, encoders, optionals.
    Flux,
    /// Policy expressions: all of Flux's, plus the lists and math extensions.
    Policy,
}

impl Dialect {
    /// Namespaces of global functions, called as `ns.f(..)`.
    pub(super) fn has_namespace(self, name: &str) -> bool {
        match name {
            "optional" | "base64" | "strings" | "sets" => true,
            "lists" | "math" => self == Dialect::Policy,
            _ => false,
        }
    }
}

/// The environment of `dialect`, built on first use.
pub(super) fn env(dialect: Dialect) -> Result<Arc<Env>, String> {
    static FLUX: OnceLock<Result<Arc<Env>, String>> = OnceLock::new();
    static POLICY: OnceLock<Result<Arc<Env>, String>> = OnceLock::new();
    let cell = match dialect {
        Dialect::Flux => &FLUX,
        Dialect::Policy => &POLICY,
    };
    cell.get_or_init(|| {
        build(dialect)
            .map(Arc::new)
            .map_err(|e| format!("CEL environment: {e}"))
    })
    .clone()
}

fn build(dialect: Dialect) -> Result<Env, DeclarationError> {
    let mut env = Env::stdlib();
    env.add_extension(extensions::strings)?;
    env.add_extension(extensions::encoders)?;
    env.add_extension(sets)?;
    if dialect == Dialect::Policy {
        env.add_extension(extensions::lists)?;
        env.add_extension(extensions::math)?;
        super::runtime::declare(&mut env)?;
    }
    Ok(env)
}

/// cel-go's `ext.Sets()`: `sets.contains`, `sets.equivalent`, `sets.intersects`.
fn sets(env: &mut Env) -> Result<(), DeclarationError> {
    let lists = || vec![LIST_TYPE, LIST_TYPE];
    env.add_overload(
        "sets.contains",
        "list_sets_contains_list",
        lists(),
        sets_contains,
    )?;
    env.add_overload(
        "sets.equivalent",
        "list_sets_equivalent_list",
        lists(),
        sets_equivalent,
    )?;
    env.add_overload(
        "sets.intersects",
        "list_sets_intersects_list",
        lists(),
        sets_intersects,
    )?;
    Ok(())
}

/// The elements of both list arguments of `function`.
fn two_lists<'x, 'v>(
    function: &str,
    args: &'x [CowVal<'_, 'v>],
) -> Result<[Vec<&'x (dyn Val + 'v)>; 2], ExecutionError> {
    let elements = |arg: Option<&'x CowVal<'_, 'v>>| {
        let iterable = arg
            .and_then(|a| a.as_iterable())
            .ok_or_else(|| ExecutionError::function_error(function, "expected two lists"))?;
        let mut iter = iterable.iter();
        let mut out = Vec::new();
        while let Some(item) = iter.next() {
            out.push(item);
        }
        Ok::<_, ExecutionError>(out)
    };
    Ok([elements(args.first())?, elements(args.get(1))?])
}

fn contains_all(a: &[&(dyn Val + '_)], b: &[&(dyn Val + '_)]) -> bool {
    b.iter().all(|y| a.iter().any(|x| x.equals(*y)))
}

fn sets_contains<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
    let [a, b] = two_lists("sets.contains", &args)?;
    Ok(CowVal::owned(CelBool::from(contains_all(&a, &b))))
}

fn sets_equivalent<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
    let [a, b] = two_lists("sets.equivalent", &args)?;
    Ok(CowVal::owned(CelBool::from(
        contains_all(&a, &b) && contains_all(&b, &a),
    )))
}

fn sets_intersects<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
    let [a, b] = two_lists("sets.intersects", &args)?;
    Ok(CowVal::owned(CelBool::from(
        b.iter().any(|y| a.iter().any(|x| x.equals(*y))),
    )))
}
