//! `requiredSecrets`: Secrets a matching HelmRelease needs before it can install, e.g. an API
//! token for a chart's pre-install job. Without it the job fails and no pod is ever created.

use super::{Ctx, Finding};
use crate::policy::model::{RequiredSecret, RequiredSecretsSpec};

#[derive(Debug)]
pub struct RequiredSecrets {
    secrets: Vec<RequiredSecret>,
}

impl RequiredSecrets {
    pub fn compile(
        spec: &RequiredSecretsSpec,
        field: &str,
    ) -> Result<RequiredSecrets, (String, String)> {
        if spec.secrets.is_empty() {
            return Err((
                format!("{field}.secrets"),
                "list at least one Secret".into(),
            ));
        }
        for (i, s) in spec.secrets.iter().enumerate() {
            if s.name.is_empty() {
                return Err((format!("{field}.secrets[{i}].name"), "required".into()));
            }
        }
        Ok(RequiredSecrets {
            secrets: spec.secrets.clone(),
        })
    }

    pub fn validate(&self, ctx: &Ctx<'_>, out: &mut Vec<Finding>) {
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
            if let Some(t) = &s.type_
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
                .filter(|k| !found.keys.contains(*k))
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
