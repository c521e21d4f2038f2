//! Metadata that Flux and Kubernetes manage on an object, as opposed to what its author wrote.
//! An UPDATE that changes only these (a finalizer removed, `flux reconcile`'s annotation, the
//! API server's bookkeeping) is not the author changing the object and is never denied.

use serde_json::{Map, Value};

/// `metadata` fields the API server and controllers set.
const MANAGED_FIELDS: [&str; 9] = [
    "finalizers",
    "managedFields",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "uid",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "ownerReferences",
];

/// Label and annotation keys (by prefix) that controllers write.
const MANAGED_ANNOTATIONS: [&str; 7] = [
    "reconcile.fluxcd.io/",
    "kustomize.toolkit.fluxcd.io/",
    "helm.toolkit.fluxcd.io/",
    "meta.helm.sh/",
    "deployment.kubernetes.io/",
    "kubectl.kubernetes.io/last-applied-configuration",
    "fluxcd.controlplane.io/",
];

const MANAGED_LABELS: [&str; 2] = ["kustomize.toolkit.fluxcd.io/", "helm.toolkit.fluxcd.io/"];

/// Whether `old` and `new` differ only in managed metadata and `status`.
pub fn same_but_managed(old: &Value, new: &Value) -> bool {
    let (Some(old), Some(new)) = (old.as_object(), new.as_object()) else {
        return false;
    };
    let top = |k: &str| k == "status" || k == "metadata";
    if !same_except(old, new, top) {
        return false;
    }
    let empty = Map::new();
    let om = old
        .get("metadata")
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    let nm = new
        .get("metadata")
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    let skip = |k: &str| MANAGED_FIELDS.contains(&k) || k == "labels" || k == "annotations";
    if !same_except(om, nm, skip) {
        return false;
    }
    same_keys(om.get("labels"), nm.get("labels"), &MANAGED_LABELS)
        && same_keys(
            om.get("annotations"),
            nm.get("annotations"),
            &MANAGED_ANNOTATIONS,
        )
}

/// Equal maps, not counting keys for which `skip` is true.
fn same_except(
    a: &Map<String, Value>,
    b: &Map<String, Value>,
    skip: impl Fn(&str) -> bool,
) -> bool {
    let counted = |m: &Map<String, Value>| m.keys().filter(|k| !skip(k)).count();
    counted(a) == counted(b)
        && a.iter()
            .filter(|(k, _)| !skip(k))
            .all(|(k, v)| b.get(k) == Some(v))
}

/// Equal label/annotation maps (absent = empty), not counting keys with a managed prefix.
fn same_keys(a: Option<&Value>, b: Option<&Value>, managed: &[&str]) -> bool {
    let empty = Map::new();
    let a = a.and_then(Value::as_object).unwrap_or(&empty);
    let b = b.and_then(Value::as_object).unwrap_or(&empty);
    same_except(a, b, |k| managed.iter().any(|p| k.starts_with(p)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn hr() -> Value {
        json!({
            "apiVersion": "helm.toolkit.fluxcd.io/v2", "kind": "HelmRelease",
            "metadata": {"name": "a", "namespace": "apps", "resourceVersion": "1",
                         "labels": {"team": "x", "kustomize.toolkit.fluxcd.io/name": "apps"},
                         "finalizers": ["finalizers.fluxcd.io"]},
            "spec": {"interval": "5m", "valuesFrom": [{"kind": "Secret", "name": "v"}]},
            "status": {"observedGeneration": 1}
        })
    }

    #[test]
    fn reconcile_request_finalizer_removal_and_status_are_managed() {
        let old = hr();
        let mut new = hr();
        new["metadata"]["annotations"] =
            json!({"reconcile.fluxcd.io/requestedAt": "2026-11-30T05:00:00Z"});
        new["metadata"]["resourceVersion"] = json!("2");
        assert!(same_but_managed(&old, &new));
        new["metadata"]["finalizers"] = json!([]);
        new["metadata"]["deletionTimestamp"] = json!("2026-11-30T05:00:00Z");
        new["status"] = json!({"observedGeneration": 2});
        assert!(same_but_managed(&old, &new));
        new["metadata"]["labels"]["kustomize.toolkit.fluxcd.io/name"] = json!("other");
        assert!(same_but_managed(&old, &new));
    }

    #[test]
    fn the_authors_changes_are_not() {
        let old = hr();
        let mut spec = hr();
        spec["spec"]["interval"] = json!("1m");
        assert!(!same_but_managed(&old, &spec));
        let mut label = hr();
        label["metadata"]["labels"]["team"] = json!("y");
        assert!(!same_but_managed(&old, &label));
        let mut added = hr();
        added["metadata"]["annotations"] = json!({"note": "x"});
        assert!(!same_but_managed(&old, &added));
        let mut gone = hr();
        gone.as_object_mut().unwrap().remove("spec");
        assert!(!same_but_managed(&old, &gone));
        assert!(!same_but_managed(&old, &Value::Null));
    }
}
