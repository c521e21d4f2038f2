//! `expression`: a CEL expression over `object`, `oldObject` and `request` that must be true.
//! Compiled once at policy load; a policy whose expression does not compile does not load.

use super::Rule;
use super::{Ctx, Finding};
use crate::cel::Expression;
use crate::policy::FieldError;
use crate::policy::model::ExpressionSpec;
use serde_json::{Value, json};

const VARS: &[&str] = &["object", "oldObject", "request"];

#[derive(Debug)]
pub struct ExpressionRule {
    expr: Expression,
    message: String,
    message_expr: Option<Expression>,
}

impl ExpressionRule {
    pub fn compile(spec: &ExpressionSpec, field: &str) -> Result<ExpressionRule, FieldError> {
        let expr = Expression::compile(&spec.expression, VARS, true).map_err(|e| {
            FieldError::new(
                format!("{field}.expression"),
                format!("CEL error at {}:{}: {}", e.line, e.column, e.message),
            )
        })?;
        let message_expr = spec
            .message_expression
            .as_deref()
            .map(|m| {
                Expression::compile(m, VARS, false).map_err(|e| {
                    FieldError::new(
                        format!("{field}.messageExpression"),
                        format!("CEL error at {}:{}: {}", e.line, e.column, e.message),
                    )
                })
            })
            .transpose()?;
        if spec.message.is_empty() {
            return Err(FieldError::new(format!("{field}.message"), "required"));
        }
        Ok(ExpressionRule {
            expr,
            message: spec.message.clone(),
            message_expr,
        })
    }
}

impl Rule for ExpressionRule {
    fn estimated_cost(&self) -> f64 {
        self.expr.estimated_cost()
            + self
                .message_expr
                .as_ref()
                .map_or(0.0, |m| m.estimated_cost())
    }

    fn validate(&self, ctx: &Ctx<'_>, out: &mut Vec<Finding>) {
        let req = ctx.req;
        let uses = |name: &str| {
            self.expr.uses(name) || self.message_expr.as_ref().is_some_and(|m| m.uses(name))
        };
        // Only what the expressions refer to is built: the request map, and the old object
        // (which an UPDATE's review keeps unparsed until asked for).
        let request = if uses("request") {
            json!({
                "operation": format!("{:?}", req.operation).to_uppercase(),
                "dryRun": req.dry_run,
                "userInfo": req.user_info(),
                "namespace": req.namespace,
                "name": req.name,
                "kind": {"group": req.group, "version": req.version, "kind": req.kind},
            })
        } else {
            Value::Null
        };
        let old = if uses("oldObject") {
            req.old_object()
        } else {
            &Value::Null
        };
        let vars: [(&str, &Value); 3] = [
            ("object", ctx.object),
            ("oldObject", old),
            ("request", &request),
        ];
        match self.expr.eval_bool(&vars) {
            Ok(true) => {}
            Ok(false) => {
                let message = self
                    .message_expr
                    .as_ref()
                    .and_then(|m| m.eval_string(&vars).ok())
                    .filter(|m| !m.is_empty())
                    .unwrap_or_else(|| self.message.clone());
                out.push(Finding::error("", message));
            }
            Err(e) => out.push(Finding::error(
                "",
                format!(
                    "{} (expression {:?} could not be evaluated: {e})",
                    self.message,
                    self.expr.source()
                ),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::admission::parse_review;
    use crate::engine::{Mode, evaluate};
    use serde_json::json;

    fn policy(expression: &str) -> crate::policy::PolicySet {
        let doc = json!({
            "apiVersion": "fluxadmit.io/v1alpha1", "kind": "DeploymentPolicy",
            "metadata": {"name": "p"},
            "spec": {
                "match": {"resources": [{"apiGroups": ["apps"], "kinds": ["Deployment"]}]},
                "rules": [{"name": "r", "expression": {"expression": expression, "message": "no"}}]
            }
        });
        crate::policy::load::compile_yaml("p.yaml", &doc.to_string()).unwrap()
    }

    /// An UPDATE's old object is parsed only for a rule that refers to it.
    #[test]
    fn the_old_object_is_read_only_when_referred_to() {
        let body = json!({
            "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {
                "uid": "u", "operation": "UPDATE", "userInfo": {"username": "a"},
                "kind": {"group": "apps", "version": "v1", "kind": "Deployment"},
                "resource": {"group": "apps", "version": "v1", "resource": "deployments"},
                "namespace": "apps",
                "object": {"metadata": {"name": "web", "labels": {"v": "2"}}},
                "oldObject": {"metadata": {"name": "web", "labels": {"v": "1"}}}
            }
        })
        .to_string();
        let view = Default::default();
        let mut req = parse_review(body.as_bytes()).unwrap();
        let out = evaluate(
            Mode::Validate,
            &mut req,
            &policy("object.metadata.name == 'web'"),
            &view,
        );
        assert!(out.verdict.allowed);
        assert!(!req.old.parsed(), "not parsed");
        let same = "object.metadata.labels.v == oldObject.metadata.labels.v";
        let out = evaluate(Mode::Validate, &mut req, &policy(same), &view);
        assert!(!out.verdict.allowed);
        assert!(req.old.parsed(), "parsed when referred to");
    }
}
