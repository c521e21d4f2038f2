//! Where the pod template lives in each workload kind.

use serde_json::Value;

/// JSON pointer and dotted path of the pod template (an object with `metadata` and `spec`)
/// for workload kinds; the empty pointer for a Pod (the object itself).
pub fn pod_template(group: &str, kind: &str) -> Option<(&'static str, &'static str)> {
    match (group, kind) {
        ("", "Pod") => Some(("", "")),
        ("apps", "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet") => {
            Some(("/spec/template", "spec.template"))
        }
        ("", "ReplicationController") => Some(("/spec/template", "spec.template")),
        ("batch", "Job") => Some(("/spec/template", "spec.template")),
        ("batch", "CronJob") => Some((
            "/spec/jobTemplate/spec/template",
            "spec.jobTemplate.spec.template",
        )),
        _ => None,
    }
}

/// The container lists of a pod spec, with their field names.
pub const CONTAINER_FIELDS: [&str; 3] = ["initContainers", "containers", "ephemeralContainers"];

/// Every container of a pod spec, as (field, index, container).
pub fn containers(spec: &Value) -> impl Iterator<Item = (&'static str, usize, &Value)> {
    CONTAINER_FIELDS.into_iter().flat_map(move |f| {
        spec.get(f)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
            .map(move |(i, c)| (f, i, c))
    })
}

/// Joins a dotted path prefix and a suffix.
pub fn join(prefix: &str, suffix: &str) -> String {
    if prefix.is_empty() {
        suffix.to_owned()
    } else {
        format!("{prefix}.{suffix}")
    }
}
