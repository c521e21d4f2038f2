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
use crate::policy::model::RuleSpec;
use serde_json::Value;

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

/// A compiled rule.
#[derive(Debug)]
pub struct CompiledRule {
    pub name: std::sync::Arc<str>,
    pub kind: RuleKind,
}

#[derive(Debug)]
pub enum RuleKind {
    RequiredLabels(required_labels::RequiredLabels),
    DependsOn(depends_on::DependsOn),
    ReferencedSecrets(referenced_secrets::ReferencedSecrets),
    RequiredSecrets(required_secrets::RequiredSecrets),
    Expression(Box<expression::ExpressionRule>),
    PodSecurity(Box<pod_security::PodSecurityRule>),
    Mutate(Box<mutate::MutateRule>),
    ImagePullSecrets(Box<image_pull_secrets::ImagePullSecrets>),
}

impl CompiledRule {
    /// Compiles one rule spec; `field` is its path in the policy (`spec.rules[2]`).
    pub fn compile(r: &RuleSpec, field: &str) -> Result<CompiledRule, (String, String)> {
        let mut kinds = Vec::new();
        if let Some(s) = &r.required_labels {
            kinds.push(RuleKind::RequiredLabels(
                required_labels::RequiredLabels::compile(s),
            ));
        }
        if let Some(s) = &r.depends_on {
            kinds.push(RuleKind::DependsOn(depends_on::DependsOn::compile(s)));
        }
        if let Some(s) = &r.referenced_secrets {
            kinds.push(RuleKind::ReferencedSecrets(
                referenced_secrets::ReferencedSecrets::compile(s),
            ));
        }
        if let Some(s) = &r.required_secrets {
            let f = format!("{field}.requiredSecrets");
            kinds.push(RuleKind::RequiredSecrets(
                required_secrets::RequiredSecrets::compile(s, &f)?,
            ));
        }
        if let Some(s) = &r.expression {
            let f = format!("{field}.expression");
            kinds.push(RuleKind::Expression(Box::new(
                expression::ExpressionRule::compile(s, &f)?,
            )));
        }
        if let Some(s) = &r.pod_security {
            let f = format!("{field}.podSecurity");
            kinds.push(RuleKind::PodSecurity(Box::new(
                pod_security::PodSecurityRule::compile(s, &f)?,
            )));
        }
        if let Some(s) = &r.mutate {
            let f = format!("{field}.mutate");
            kinds.push(RuleKind::Mutate(Box::new(mutate::MutateRule::compile(
                s, &f,
            )?)));
        }
        if let Some(s) = &r.image_pull_secrets {
            let f = format!("{field}.imagePullSecrets");
            kinds.push(RuleKind::ImagePullSecrets(Box::new(
                image_pull_secrets::ImagePullSecrets::compile(s, &f)?,
            )));
        }
        let n = kinds.len();
        let Some(kind) = kinds.pop() else {
            return Err((
                field.to_owned(),
                "a rule needs one rule kind: requiredLabels, dependsOn, referencedSecrets, \
                 requiredSecrets, expression, podSecurity, mutate or imagePullSecrets"
                    .into(),
            ));
        };
        if n > 1 {
            return Err((
                field.to_owned(),
                "a rule has exactly one rule kind; split it into several rules".into(),
            ));
        }
        Ok(CompiledRule {
            name: r.name.as_str().into(),
            kind,
        })
    }

    /// Validation findings for this request.
    pub fn validate(&self, ctx: &Ctx<'_>, out: &mut Vec<Finding>) {
        match &self.kind {
            RuleKind::RequiredLabels(r) => r.validate(ctx, out),
            RuleKind::DependsOn(r) => r.validate(ctx, out),
            RuleKind::ReferencedSecrets(r) => r.validate(ctx, out),
            RuleKind::RequiredSecrets(r) => r.validate(ctx, out),
            RuleKind::Expression(r) => r.validate(ctx, out),
            RuleKind::PodSecurity(r) => r.validate(ctx, out),
            RuleKind::ImagePullSecrets(r) => r.validate(ctx, out),
            RuleKind::Mutate(_) => {}
        }
    }

    /// Whether the rule mutates at all (so validation-only requests skip the copy).
    pub fn mutates(&self) -> bool {
        match &self.kind {
            RuleKind::Mutate(_) => true,
            RuleKind::ImagePullSecrets(r) => r.mutates(),
            _ => false,
        }
    }

    /// Where in the object this rule writes for this request (a JSON pointer; "" is the whole
    /// object), or None when it has nothing to write here.
    pub fn mutation_root(&self, ctx: &Ctx<'_>) -> Option<&'static str> {
        match &self.kind {
            RuleKind::Mutate(r) => r.root(ctx),
            RuleKind::ImagePullSecrets(r) if r.mutates() => r.root(ctx),
            _ => None,
        }
    }

    /// Applies this rule's mutation to the value at its root, in place, logging every write in
    /// `journal` (located at the root).
    pub fn mutate<'a>(
        &'a self,
        at_root: &mut Value,
        journal: &mut crate::mutate::journal::Journal<'a>,
    ) {
        match &self.kind {
            RuleKind::Mutate(r) => r.mutate(at_root, journal),
            RuleKind::ImagePullSecrets(r) => r.mutate(at_root, journal),
            _ => {}
        }
    }
}

pub use crate::json::str_at;
