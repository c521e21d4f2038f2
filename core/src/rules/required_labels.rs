//! `requiredLabels`: labels and annotations the object must carry.

use super::Rule;
use super::{Ctx, Finding};
use crate::policy::FieldError;
use crate::policy::model::RequiredLabelsSpec;
use serde_json::Value;

#[derive(Debug)]
pub struct RequiredLabels {
    labels: Vec<String>,
    annotations: Vec<String>,
}

impl RequiredLabels {
    pub fn compile(spec: &RequiredLabelsSpec, _field: &str) -> Result<RequiredLabels, FieldError> {
        Ok(RequiredLabels {
            labels: spec.labels.clone(),
            annotations: spec.annotations.clone(),
        })
    }
}

impl Rule for RequiredLabels {
    fn validate(&self, ctx: &Ctx<'_>, out: &mut Vec<Finding>) {
        let check = |field: &str, keys: &[String], out: &mut Vec<Finding>| {
            let present = ctx
                .object
                .get("metadata")
                .and_then(|m| m.get(field))
                .and_then(Value::as_object);
            for k in keys {
                let ok = present
                    .and_then(|m| m.get(k))
                    .and_then(Value::as_str)
                    .is_some_and(|v| !v.is_empty());
                if !ok {
                    out.push(Finding::error(
                        format!("metadata.{field}"),
                        format!("missing required {} {k:?}", &field[..field.len() - 1]),
                    ));
                }
            }
        };
        check("labels", &self.labels, out);
        check("annotations", &self.annotations, out);
    }
}
