//! `expression`: a CEL expression over `object`, `oldObject` and `request` that must be true.
//! Compiled once at policy load; a policy whose expression does not compile does not load.

use super::{Ctx, Finding};
use crate::cel::Expression;
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
    pub fn compile(spec: &ExpressionSpec, field: &str) -> Result<ExpressionRule, (String, String)> {
        let expr = Expression::compile(&spec.expression, VARS, true).map_err(|e| {
            (
                format!("{field}.expression"),
                format!("CEL error at {}:{}: {}", e.line, e.column, e.message),
            )
        })?;
        let message_expr = spec
            .message_expression
            .as_deref()
            .map(|m| {
                Expression::compile(m, VARS, false).map_err(|e| {
                    (
                        format!("{field}.messageExpression"),
                        format!("CEL error at {}:{}: {}", e.line, e.column, e.message),
                    )
                })
            })
            .transpose()?;
        if spec.message.is_empty() {
            return Err((format!("{field}.message"), "required".into()));
        }
        Ok(ExpressionRule {
            expr,
            message: spec.message.clone(),
            message_expr,
        })
    }

    pub fn validate(&self, ctx: &Ctx<'_>, out: &mut Vec<Finding>) {
        let req = ctx.req;
        let request = json!({
            "operation": format!("{:?}", req.operation).to_uppercase(),
            "dryRun": req.dry_run,
            "userInfo": req.user_info,
            "namespace": req.namespace,
            "name": req.name,
            "kind": {"group": req.group, "version": req.version, "kind": req.kind},
        });
        let vars: [(&str, &Value); 3] = [
            ("object", ctx.object),
            ("oldObject", req.old_object()),
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
