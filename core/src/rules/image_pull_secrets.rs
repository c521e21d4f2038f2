//! `imagePullSecrets`: pods pulling from private registries get the registry's pull secret
//! (mutation, never duplicated), and every pull secret a pod or a HelmRelease's values name
//! must exist in the namespace with a docker config type (validation).

use super::Rule;
use super::{Ctx, Finding};
use crate::cluster::{ClusterView, FluxKind};
use crate::mutate::journal::{Journal, Seg};
use crate::policy::FieldError;
use crate::policy::model::ImagePullSecretsSpec;
use crate::policy::reach::{HELM_RELEASE, POD_KINDS};
use crate::workload::{containers, join, pod_template};
use globset::{Glob, GlobMatcher};
use serde_json::{Value, json};

const PULL_TYPES: [&str; 2] = ["kubernetes.io/dockerconfigjson", "kubernetes.io/dockercfg"];

#[derive(Debug)]
pub struct ImagePullSecrets {
    registries: Vec<Registry>,
    validate: bool,
    values_paths: Vec<Vec<String>>,
}

#[derive(Debug)]
struct Registry {
    /// Matches the whole image reference when the pattern has a `/`, else the registry host.
    whole_ref: bool,
    glob: GlobMatcher,
    secret: String,
}

impl ImagePullSecrets {
    pub fn compile(
        spec: &ImagePullSecretsSpec,
        field: &str,
    ) -> Result<ImagePullSecrets, FieldError> {
        let mut registries = Vec::new();
        for (i, r) in spec.registries.iter().enumerate() {
            let glob = Glob::new(&r.pattern)
                .map_err(|e| {
                    FieldError::new(
                        format!("{field}.registries[{i}].pattern"),
                        format!("bad glob {:?}: {e}", r.pattern),
                    )
                })?
                .compile_matcher();
            if r.secret.is_empty() {
                return Err(FieldError::new(
                    format!("{field}.registries[{i}].secret"),
                    "required",
                ));
            }
            registries.push(Registry {
                whole_ref: r.pattern.contains('/'),
                glob,
                secret: r.secret.clone(),
            });
        }
        let values_paths = spec
            .values_paths
            .iter()
            .map(|p| p.split('.').map(str::to_owned).collect())
            .collect();
        Ok(ImagePullSecrets {
            registries,
            validate: spec.validate,
            values_paths,
        })
    }

    pub fn mutates(&self) -> bool {
        !self.registries.is_empty()
    }

    /// The secrets the pod's images need, in configuration order, without repeats.
    fn needed<'a>(&'a self, spec: &Value) -> Vec<&'a str> {
        let mut out: Vec<&str> = Vec::new();
        for (_, _, c) in containers(spec) {
            let Some(image) = c.get("image").and_then(Value::as_str) else {
                continue;
            };
            let host = registry_host(image);
            for r in &self.registries {
                let hit = if r.whole_ref {
                    r.glob.is_match(image)
                } else {
                    r.glob.is_match(host)
                };
                if hit && !out.contains(&r.secret.as_str()) {
                    out.push(&r.secret);
                }
            }
        }
        out.sort_by_key(|s| self.registries.iter().position(|r| r.secret == *s));
        out
    }
}

impl Rule for ImagePullSecrets {
    fn acts_on(&self) -> Option<Vec<(&'static str, &'static str)>> {
        let mut kinds = POD_KINDS.to_vec();
        if !self.values_paths.is_empty() {
            kinds.push(HELM_RELEASE);
        }
        Some(kinds)
    }

    /// Where this rule writes for the request: the pod template, if the kind has one.
    fn mutation_root(&self, ctx: &Ctx<'_>) -> Option<&'static str> {
        if !self.mutates() {
            return None;
        }
        pod_template(&ctx.req.group, &ctx.req.kind).map(|(pointer, _)| pointer)
    }

    /// Adds the needed pull secrets to the pod template `template`, logging the writes.
    fn mutate<'a>(&'a self, template: &mut Value, journal: &mut Journal<'a>) {
        let Some(spec) = template.get_mut("spec").filter(|s| s.is_object()) else {
            return;
        };
        let needed = self.needed(spec);
        if needed.is_empty() {
            return;
        }
        let Some(map) = spec.as_object_mut() else {
            return;
        };
        journal.scoped(Seg::Key("spec"), |journal| {
            let list = map.entry("imagePullSecrets").or_insert_with(|| {
                journal.wrote(Some(Seg::Key("imagePullSecrets")), None);
                Value::Array(Vec::new())
            });
            let Value::Array(items) = list else {
                return; // malformed: validation reports it, mutation does not guess
            };
            journal.scoped(Seg::Key("imagePullSecrets"), |journal| {
                for s in needed {
                    if !items
                        .iter()
                        .any(|i| i.get("name").and_then(Value::as_str) == Some(s))
                    {
                        journal.wrote(Some(Seg::Index(items.len())), None);
                        items.push(json!({ "name": s }));
                    }
                }
            });
        });
    }

    fn validate(&self, ctx: &Ctx<'_>, out: &mut Vec<Finding>) {
        if !self.validate {
            return;
        }
        let ns = ctx.namespace();
        if let Some((pointer, path)) = pod_template(&ctx.req.group, &ctx.req.kind) {
            let Some(spec) = crate::json::at(ctx.object, pointer).and_then(|t| t.get("spec"))
            else {
                return;
            };
            let spec_path = join(path, "spec");
            for (i, item) in spec
                .get("imagePullSecrets")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .enumerate()
            {
                let Some(name) = item.get("name").and_then(Value::as_str) else {
                    continue;
                };
                check_pull_secret(
                    ctx.view,
                    ns,
                    name,
                    &format!("{spec_path}.imagePullSecrets[{i}]"),
                    out,
                );
            }
            return;
        }
        if ctx.flux_kind == Some(FluxKind::HelmRelease) && !self.values_paths.is_empty() {
            let target = super::str_at(ctx.object, "/spec/targetNamespace")
                .filter(|s| !s.is_empty())
                .unwrap_or(ns);
            let Some(values) = crate::json::at(ctx.object, "/spec/values") else {
                return;
            };
            for path in &self.values_paths {
                let Some(v) = path.iter().try_fold(values, |v, k| v.get(k)) else {
                    continue;
                };
                let dotted = format!("spec.values.{}", path.join("."));
                for (i, item) in v.as_array().into_iter().flatten().enumerate() {
                    let name = item
                        .as_str()
                        .or_else(|| item.get("name").and_then(Value::as_str));
                    if let Some(name) = name {
                        check_pull_secret(ctx.view, target, name, &format!("{dotted}[{i}]"), out);
                    }
                }
            }
        }
    }
}

fn check_pull_secret(view: &ClusterView, ns: &str, name: &str, path: &str, out: &mut Vec<Finding>) {
    match view.secrets.get(ns, name) {
        None => out.push(Finding::error(
            path,
            format!("image pull Secret {ns}/{name} not found; pods in {ns:?} cannot pull their images"),
        ).on_other()),
        // An empty type is unknown (a Secret assumed with --assume-secret): not judged.
        Some(s) if !s.type_.is_empty() && !PULL_TYPES.contains(&s.type_.as_str()) => out.push(Finding::error(
            path,
            format!("image pull Secret {ns}/{name} has type {:?}; expected kubernetes.io/dockerconfigjson", s.type_),
        ).on_other()),
        Some(_) => {}
    }
}

/// The registry host of an image reference (`docker.io` when the first part is not a host).
pub fn registry_host(image: &str) -> &str {
    match image.split_once('/') {
        Some((first, _)) if first.contains('.') || first.contains(':') || first == "localhost" => {
            first
        }
        _ => "docker.io",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_hosts() {
        assert_eq!(registry_host("acme.azurecr.io/web:1"), "acme.azurecr.io");
        assert_eq!(registry_host("localhost:5000/x"), "localhost:5000");
        assert_eq!(registry_host("nginx:1.27"), "docker.io");
        assert_eq!(registry_host("library/nginx"), "docker.io");
    }
}
