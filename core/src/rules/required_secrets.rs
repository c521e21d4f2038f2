//! `requiredSecrets`: Secrets a matching HelmRelease needs before it can install, e.g. an API
//! token for a chart's pre-install job. Without it the job fails and no pod is ever created.

use super::Rule;
use super::{Ctx, Finding};
use crate::policy::FieldError;
use crate::policy::model::{RequiredSecret, RequiredSecretsSpec};
use crate::policy::reach::HELM_RELEASE;

#[derive(Debug)]
pub struct RequiredSecrets {
    secrets: Vec<RequiredSecret>,
}

impl RequiredSecrets {
    pub fn compile(spec: &RequiredSecretsSpec, field: &str) -> Result<RequiredSecrets, FieldError> {
        if spec.secrets.is_empty() {
            return Err(FieldError::new(
                format!("{field}.secrets"),
                "list at least one Secret",
            ));
        }
        for (i, s) in spec.secrets.iter().enumerate() {
            if s.name.is_empty() {
                return Err(FieldError::new(
                    format!("{field}.secrets[{i}].name"),
                    "required",
                ));
            }
        }
        Ok(RequiredSecrets {
            secrets: spec.secrets.clone(),
        })
    }
}

impl Rule for RequiredSecrets {
    fn acts_on(&self) -> Option<Vec<(&'static str, &'static str)>> {
        Some(vec![HELM_RELEASE])
    }

    fn validate(&self, ctx: &Ctx<'_>, out: &mut Vec<Finding>) {
        let target_ns = super::str_at(ctx.object, "/spec/targetNamespace")
            .filter(|s| !s.is_empty())
            .unwrap_or(ctx.namespace());
        let chart = ctx.view.release_chart(ctx.namespace(), ctx.object);
        let who = match chart {
            Some(c) => format!("chart {c:?}"),
            None => format!("{}/{}", ctx.namespace(), ctx.name()),
        };
        for s in &self.secrets {
            let ns = s.namespace.as_deref().unwrap_or(target_ns);
            let Some(found) = ctx.view.secrets.get(ns, &s.name) else {
                out.push(Finding::error(
                    "",
                    format!("Secret {ns}/{} required by {who} not found; create it before the release installs", s.name),
                ).on_other());
                continue;
            };
            // An empty type is one not known (an assumed Secret): nothing to compare.
            if let Some(t) = &s.type_
                && !found.type_.is_empty()
                && *t != found.type_
            {
                out.push(
                    Finding::error(
                        "",
                        format!(
                            "Secret {ns}/{} required by {who} has type {:?}, expected {t:?}",
                            s.name, found.type_
                        ),
                    )
                    .on_other(),
                );
            }
            let missing: Vec<&str> = s
                .keys
                .iter()
                .map(String::as_str)
                // Open keys: the names are not known offline, so every key counts as present.
                .filter(|k| !found.open_keys && !found.keys.contains(*k))
                .collect();
            if !missing.is_empty() {
                out.push(
                    Finding::error(
                        "",
                        format!(
                            "Secret {ns}/{} required by {who} is missing key{} {}",
                            s.name,
                            if missing.len() > 1 { "s" } else { "" },
                            missing
                                .iter()
                                .map(|k| format!("{k:?}"))
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    )
                    .on_other(),
                );
            }
        }
    }
}
