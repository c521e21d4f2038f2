//! Rule kinds. Each module compiles its spec once at load and evaluates as a pure function of
//! the request, the object and the cluster view. Rules return findings; the response is built
//! from findings in one place (`engine`).

pub mod depends_on;
pub mod expression;
pub mod image_pull_secrets;
pub mod mutate;
pub mod pod_security;
pub mod referenced_secrets;
pub mod required_labels;
pub mod required_secrets;

use crate::admission::Request;
use crate::cluster::{ClusterView, FluxKind};
use crate::mutate::journal::Journal;
use crate::policy::FieldError;
use crate::policy::model::RuleSpec;
use serde_json::Value;

/// `field[i]`: a list entry's path, without the formatting machinery (paths are built for every
/// entry a rule looks at).
pub(crate) fn indexed(field: &str, i: usize) -> String {
    let mut digits = itoa::Buffer::new();
    [field, "[", digits.format(i), "]"].concat()
}

/// How serious a finding is before the policy's action applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Error,
    Warning,
}

/// What a finding rests on. Flux applies sets of objects, dry-runs all of them before it
/// writes any, and its controllers create some objects later (ExternalSecrets, Helm charts):
/// a finding about another object's state can be untrue a moment later, so it is judged
/// differently from one about the object alone (see `engine::judge`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Basis {
    /// The object under review alone: its own fields.
    #[default]
    Own,
    /// Another object's existence or state: a Secret, its keys or type, a dependency, a cycle
    /// through other objects.
    Other,
}

/// One violation: where in the object, and what is wrong, written for the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub level: Level,
    pub path: String,
    pub message: String,
    pub basis: Basis,
}

impl Finding {
    pub fn error(path: impl Into<String>, message: impl Into<String>) -> Finding {
        Finding {
            level: Level::Error,
            path: path.into(),
            message: message.into(),
            basis: Basis::Own,
        }
    }

    pub fn warning(path: impl Into<String>, message: impl Into<String>) -> Finding {
        Finding {
            level: Level::Warning,
            path: path.into(),
            message: message.into(),
            basis: Basis::Own,
        }
    }

    /// Marks the finding as resting on another object's state.
    pub fn on_other(mut self) -> Finding {
        self.basis = Basis::Other;
        self
    }
}

/// What a rule sees.
pub struct Ctx<'a> {
    pub req: &'a Request,
    /// The object under review (the old object on DELETE).
    pub object: &'a Value,
    pub view: &'a ClusterView,
    /// Objects confirmed by a live read after a cache miss (normally none).
    pub extra: Option<&'a ClusterView>,
    pub flux_kind: Option<FluxKind>,
}

impl<'a> Ctx<'a> {
    /// A Flux object from the view, else from the live-read extras.
    pub fn flux_object(
        &self,
        kind: FluxKind,
        namespace: &str,
        name: &str,
    ) -> Option<&'a crate::cluster::FluxObject> {
        self.view
            .flux(kind)
            .get(namespace, name)
            .or_else(|| self.extra?.flux(kind).get(namespace, name))
    }

    /// The object's namespace ("" for cluster-scoped objects).
    pub fn namespace(&self) -> &str {
        &self.req.namespace
    }

    pub fn name(&self) -> &str {
        &self.req.name
    }
}

/// A rule kind, compiled from its spec at load. Every method has a default that does nothing,
/// so a kind implements what it does: `validate` reports findings; a kind that changes objects
/// says where it writes (`mutation_root`) and writes there (`mutate`).
///
/// Adding a kind: a module here with its compiled type implementing `Rule`, its spec type and
/// field in `policy::model::RuleSpec` (which also makes the CRD's schema), and one line in
/// [`KINDS`].
pub trait Rule: std::fmt::Debug + Send + Sync {
    /// The (group, kind) pairs this rule can act on, or `None` for any object. A policy whose
    /// `match` selects none of them is refused at load (`policy::reach`).
    fn acts_on(&self) -> Option<Vec<(&'static str, &'static str)>> {
        None
    }

    /// Validation findings for this request.
    fn validate(&self, _ctx: &Ctx<'_>, _out: &mut Vec<Finding>) {}

    /// The estimated worst-case cost of user-written expressions in the rule (`cel::cost`);
    /// 0 for the built-in rules, which are linear in the object.
    fn estimated_cost(&self) -> f64 {
        0.0
    }

    /// Where in the object this rule writes for this request (a JSON pointer; "" is the whole
    /// object), or None when it has nothing to write here.
    fn mutation_root(&self, _ctx: &Ctx<'_>) -> Option<&'static str> {
        None
    }

    /// Applies the mutation to the value at its root, in place, logging every write in
    /// `journal` (located at the root).
    fn mutate<'a>(&'a self, _at_root: &mut Value, _journal: &mut Journal<'a>) {}
}

/// Compiles a rule kind's field of a rule spec, if the spec has it; the `&str` is the rule's
/// path in the policy.
type CompileKind = fn(&RuleSpec, &str) -> Option<Result<Box<dyn Rule>, FieldError>>;

/// One rule kind: its field in a policy's rule, and how to compile that field when present.
struct Kind {
    field: &'static str,
    compile: CompileKind,
}

/// Registers a rule kind: the field's name in a policy, the `RuleSpec` member that holds it,
/// and the compiled type (`fn compile(&Spec, field: &str) -> Result<Self, FieldError>`).
macro_rules! kind {
    ($field:literal, $member:ident, $rule:ty) => {
        Kind {
            field: $field,
            compile: |spec, at| {
                let s = spec.$member.as_ref()?;
                let at = format!("{at}.{}", $field);
                Some(<$rule>::compile(s, &at).map(|r| Box::new(r) as Box<dyn Rule>))
            },
        }
    };
}

/// Every rule kind, in the order a policy's documentation lists them.
const KINDS: &[Kind] = &[
    kind!(
        "requiredLabels",
        required_labels,
        required_labels::RequiredLabels
    ),
    kind!("dependsOn", depends_on, depends_on::DependsOn),
    kind!(
        "referencedSecrets",
        referenced_secrets,
        referenced_secrets::ReferencedSecrets
    ),
    kind!(
        "requiredSecrets",
        required_secrets,
        required_secrets::RequiredSecrets
    ),
    kind!("expression", expression, expression::ExpressionRule),
    kind!("podSecurity", pod_security, pod_security::PodSecurityRule),
    kind!("mutate", mutate, mutate::MutateRule),
    kind!(
        "imagePullSecrets",
        image_pull_secrets,
        image_pull_secrets::ImagePullSecrets
    ),
];

/// A compiled rule: its name, its kind's field name, and the compiled kind.
#[derive(Debug)]
pub struct CompiledRule {
    pub name: std::sync::Arc<str>,
    kind: &'static str,
    rule: Box<dyn Rule>,
}

impl CompiledRule {
    /// Compiles one rule spec; `field` is its path in the policy (`spec.rules[2]`). A rule has
    /// exactly one kind.
    pub fn compile(r: &RuleSpec, field: &str) -> Result<CompiledRule, FieldError> {
        let mut compiled = None;
        for k in KINDS {
            let Some(rule) = (k.compile)(r, field) else {
                continue;
            };
            if compiled.is_some() {
                return Err(FieldError::new(
                    field,
                    "a rule has exactly one rule kind; split it into several rules",
                ));
            }
            compiled = Some((k.field, rule?));
        }
        let Some((kind, rule)) = compiled else {
            let names: Vec<&str> = KINDS.iter().map(|k| k.field).collect();
            return Err(FieldError::new(
                field,
                format!("a rule needs one rule kind: {}", names.join(", ")),
            ));
        };
        Ok(CompiledRule {
            name: r.name.as_str().into(),
            kind,
            rule,
        })
    }

    /// A rule of a kind this crate does not define, for a program that embeds the engine
    /// (and for tests of how the server copes with a misbehaving rule).
    pub fn custom(name: &str, kind: &'static str, rule: Box<dyn Rule>) -> CompiledRule {
        CompiledRule {
            name: name.into(),
            kind,
            rule,
        }
    }

    /// The rule kind's name as written in a policy (`dependsOn`, `mutate`, …).
    pub fn kind_name(&self) -> &'static str {
        self.kind
    }

    /// See [`Rule::estimated_cost`].
    pub fn estimated_cost(&self) -> f64 {
        self.rule.estimated_cost()
    }

    /// The (group, kind) pairs the rule can act on; `None` for any object.
    pub fn acts_on(&self) -> Option<Vec<(&'static str, &'static str)>> {
        self.rule.acts_on()
    }

    /// Validation findings for this request.
    pub fn validate(&self, ctx: &Ctx<'_>, out: &mut Vec<Finding>) {
        self.rule.validate(ctx, out)
    }

    /// See [`Rule::mutation_root`].
    pub fn mutation_root(&self, ctx: &Ctx<'_>) -> Option<&'static str> {
        self.rule.mutation_root(ctx)
    }

    /// See [`Rule::mutate`].
    pub fn mutate<'a>(&'a self, at_root: &mut Value, journal: &mut Journal<'a>) {
        self.rule.mutate(at_root, journal)
    }
}

pub use crate::json::str_at;
