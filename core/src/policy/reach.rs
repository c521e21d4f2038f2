//! What a policy can reach, judged at load: a rule whose kind of object the policy's `match`
//! can never select is an error (a `podSecurity` rule matched only to HelmReleases would
//! silently never run), and a kind no known API group serves is a warning (`HelmReleases`,
//! a misspelt apiGroup): it may be a custom resource, so it still loads.

use super::model::DeploymentPolicySpec;
use crate::policy::FieldError;
use crate::rules::CompiledRule;

/// Kinds that hold a pod spec (the `podSecurity`, pod-template `mutate` and `imagePullSecrets`
/// targets).
pub(crate) const POD_KINDS: [(&str, &str); 7] = [
    ("", "Pod"),
    ("apps", "Deployment"),
    ("apps", "StatefulSet"),
    ("apps", "DaemonSet"),
    ("apps", "ReplicaSet"),
    ("batch", "Job"),
    ("batch", "CronJob"),
];
pub(crate) const HELM_RELEASE: (&str, &str) = ("helm.toolkit.fluxcd.io", "HelmRelease");
pub(crate) const KUSTOMIZATION: (&str, &str) = ("kustomize.toolkit.fluxcd.io", "Kustomization");

/// Kinds served by Kubernetes itself and by Flux, by API group: enough to catch a plural or a
/// misspelt group, never used to refuse a policy.
const KNOWN: &[(&str, &[&str])] = &[
    (
        "",
        &[
            "Pod",
            "Service",
            "ConfigMap",
            "Secret",
            "Namespace",
            "ServiceAccount",
            "PersistentVolumeClaim",
            "PersistentVolume",
            "Endpoints",
            "LimitRange",
            "ResourceQuota",
            "ReplicationController",
            "Node",
            "Event",
        ],
    ),
    (
        "apps",
        &[
            "Deployment",
            "StatefulSet",
            "DaemonSet",
            "ReplicaSet",
            "ControllerRevision",
        ],
    ),
    ("batch", &["Job", "CronJob"]),
    (
        "networking.k8s.io",
        &["Ingress", "IngressClass", "NetworkPolicy"],
    ),
    ("policy", &["PodDisruptionBudget"]),
    (
        "rbac.authorization.k8s.io",
        &["Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding"],
    ),
    ("autoscaling", &["HorizontalPodAutoscaler"]),
    ("storage.k8s.io", &["StorageClass"]),
    ("scheduling.k8s.io", &["PriorityClass"]),
    ("apiextensions.k8s.io", &["CustomResourceDefinition"]),
    (
        "admissionregistration.k8s.io",
        &[
            "MutatingWebhookConfiguration",
            "ValidatingWebhookConfiguration",
        ],
    ),
    ("helm.toolkit.fluxcd.io", &["HelmRelease"]),
    ("kustomize.toolkit.fluxcd.io", &["Kustomization"]),
    (
        "source.toolkit.fluxcd.io",
        &[
            "GitRepository",
            "OCIRepository",
            "HelmRepository",
            "HelmChart",
            "Bucket",
        ],
    ),
    (
        "notification.toolkit.fluxcd.io",
        &["Alert", "Provider", "Receiver"],
    ),
    (
        "image.toolkit.fluxcd.io",
        &["ImageRepository", "ImagePolicy", "ImageUpdateAutomation"],
    ),
    ("fluxadmit.io", &["DeploymentPolicy"]),
];

/// Whether the policy's `match` can select an object of this group and kind.
fn selects(spec: &DeploymentPolicySpec, group: &str, kind: &str) -> bool {
    let m = &spec.matches;
    if !m.charts.is_empty() && (group, kind) != HELM_RELEASE {
        return false;
    }
    m.resources.is_empty()
        || m.resources.iter().any(|r| {
            let any = |list: &[String], v: &str| {
                list.is_empty() || list.iter().any(|x| x == "*" || x == v)
            };
            any(&r.api_groups, group) && any(&r.kinds, kind)
        })
}

/// An error (field, reason) for a rule the policy can never apply; `compiled` are the spec's
/// rules as compiled, in order (they name their kind).
pub fn check_rules(
    spec: &DeploymentPolicySpec,
    compiled: &[CompiledRule],
) -> Result<(), FieldError> {
    for (i, c) in compiled.iter().enumerate() {
        let Some(kinds) = c.acts_on() else {
            continue;
        };
        if kinds.iter().any(|(g, k)| selects(spec, g, k)) {
            continue;
        }
        let names: Vec<&str> = kinds.iter().map(|(_, k)| *k).collect();
        let mut reason = format!(
            "this rule acts on {}, and spec.match selects none of them: it would never run",
            names.join(", ")
        );
        for (field, text) in unknown_resources(spec) {
            reason.push_str(&format!(" ({field}: {text})"));
        }
        return Err(FieldError::new(
            format!("spec.rules[{i}].{}", c.kind_name()),
            reason,
        ));
    }
    Ok(())
}

/// Whether no cluster can serve this API group: Kubernetes' own groups without a dot are all
/// known here (a custom resource's group always has one), and so are Flux's toolkit groups.
fn impossible_group(group: &str) -> bool {
    !KNOWN.iter().any(|(g, _)| *g == group)
        && (!group.contains('.') || group.ends_with(".toolkit.fluxcd.io"))
}

/// Warnings (field, text) for API groups no cluster serves and for kinds no known API group
/// serves under the groups given. A custom resource's group is left alone.
pub fn unknown_resources(spec: &DeploymentPolicySpec) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (i, r) in spec.matches.resources.iter().enumerate() {
        for (j, g) in r.api_groups.iter().enumerate() {
            if g != "*" && impossible_group(g) {
                out.push((
                    format!("spec.match.resources[{i}].apiGroups[{j}]"),
                    format!("no API server serves the group {g:?}: this entry matches nothing"),
                ));
            }
        }
        let groups: Vec<&str> = if r.api_groups.is_empty() || r.api_groups.iter().any(|g| g == "*")
        {
            KNOWN.iter().map(|(g, _)| *g).collect()
        } else {
            r.api_groups.iter().map(String::as_str).collect()
        };
        // Only where every group is one we know the kinds of.
        if !groups.iter().all(|g| KNOWN.iter().any(|(k, _)| k == g)) {
            continue;
        }
        for (j, kind) in r.kinds.iter().enumerate() {
            if kind == "*"
                || groups.iter().any(|g| {
                    KNOWN
                        .iter()
                        .any(|(k, kinds)| k == g && kinds.contains(&kind.as_str()))
                })
            {
                continue;
            }
            let singular = kind.strip_suffix('s').unwrap_or(kind);
            let hint = KNOWN
                .iter()
                .find_map(|(g, kinds)| {
                    kinds
                        .iter()
                        .find(|k| k.eq_ignore_ascii_case(kind) || k.eq_ignore_ascii_case(singular))
                        .map(|k| format!("; did you mean {k:?} (apiGroup {g:?})?"))
                })
                .unwrap_or_default();
            out.push((
                format!("spec.match.resources[{i}].kinds[{j}]"),
                format!(
                    "no known API group serves the kind {kind:?} here: it matches nothing{hint}"
                ),
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(yaml: &str) -> DeploymentPolicySpec {
        serde_saphyr::from_str(yaml).unwrap()
    }

    fn check(s: &DeploymentPolicySpec) -> Result<(), FieldError> {
        let compiled: Vec<CompiledRule> = s
            .rules
            .iter()
            .map(|r| CompiledRule::compile(r, "spec.rules[]").unwrap())
            .collect();
        check_rules(s, &compiled)
    }

    #[test]
    fn a_pod_rule_matched_only_to_helm_releases_is_an_error() {
        let s = spec(
            "match: {resources: [{apiGroups: [helm.toolkit.fluxcd.io], kinds: [HelmRelease]}]}\n\
             rules: [{name: pss, podSecurity: {level: restricted}}]",
        );
        let FieldError { field, reason } = check(&s).unwrap_err();
        assert_eq!(field, "spec.rules[0].podSecurity");
        assert!(
            reason.contains("Deployment") && reason.contains("never run"),
            "{reason}"
        );
        let ok = spec(
            "match: {resources: [{apiGroups: [apps], kinds: [Deployment]}]}\n\
             rules: [{name: pss, podSecurity: {level: restricted}}]",
        );
        assert!(check(&ok).is_ok());
        let any = spec("match: {}\nrules: [{name: pss, podSecurity: {level: restricted}}]");
        assert!(check(&any).is_ok());
        let charts = spec(
            "match: {charts: [app-template]}\nrules: [{name: d, dependsOn: {}}, {name: p, podSecurity: {level: baseline}}]",
        );
        assert_eq!(
            check(&charts).unwrap_err().field,
            "spec.rules[1].podSecurity"
        );
    }

    #[test]
    fn plural_kinds_and_misspelt_groups_warn() {
        let s = spec(
            "match: {resources: [{apiGroups: [helm.toolkit.fluxcd.io], kinds: [HelmReleases]}, {apiGroups: [app], kinds: [Deployment]}, {apiGroups: [example.com], kinds: [Widget]}]}\n\
             rules: [{name: l, requiredLabels: {labels: [team]}}]",
        );
        let w = unknown_resources(&s);
        assert_eq!(w.len(), 2, "{w:?}");
        assert_eq!(w[0].0, "spec.match.resources[0].kinds[0]");
        assert!(
            w[0].1.contains("did you mean \"HelmRelease\""),
            "{}",
            w[0].1
        );
        // `app` has no dot, so it is no custom resource's group, and no built-in one.
        assert_eq!(w[1].0, "spec.match.resources[1].apiGroups[0]");
        // example.com/Widget: a custom resource, nothing to say.
        let s = spec(
            "match: {resources: [{kinds: [Deploymnet]}]}\nrules: [{name: l, requiredLabels: {labels: [team]}}]",
        );
        assert_eq!(unknown_resources(&s).len(), 1);
        let s = spec(
            "match: {resources: [{apiGroups: [helmm.toolkit.fluxcd.io, widgets.example.com], kinds: [HelmRelease]}]}\nrules: [{name: l, requiredLabels: {labels: [team]}}]",
        );
        let w = unknown_resources(&s);
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(w[0].1.contains("helmm.toolkit.fluxcd.io"));
    }
}
