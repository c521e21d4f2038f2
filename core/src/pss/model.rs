//! Panic-free JSON accessors and the evaluation context shared by the check modules.

use std::cell::OnceCell;
use std::collections::HashMap;

use serde_json::Value;

use super::Violation;

/// A scalar field read from JSON: not set (missing or `null`), set with the expected type, or
/// set with a wrong type (which callers treat as the check's failing value).
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) enum Scalar<'a, T> {
    Unset,
    Set(T),
    Malformed(&'a Value),
}

/// A list field read from JSON.
#[derive(Clone, Copy, Debug)]
pub(super) enum List<'a> {
    Unset,
    Items(&'a [Value]),
    Malformed(&'a Value),
}

/// `obj[key]` if `obj` is an object and the value is not `null`.
pub(super) fn get<'a>(obj: Option<&'a Value>, key: &str) -> Option<&'a Value> {
    match obj? {
        Value::Object(map) => map.get(key).filter(|v| !v.is_null()),
        _ => None,
    }
}

pub(super) fn bool_at<'a>(obj: Option<&'a Value>, key: &str) -> Scalar<'a, bool> {
    match get(obj, key) {
        None => Scalar::Unset,
        Some(Value::Bool(b)) => Scalar::Set(*b),
        Some(other) => Scalar::Malformed(other),
    }
}

pub(super) fn str_at<'a>(obj: Option<&'a Value>, key: &str) -> Scalar<'a, &'a str> {
    match get(obj, key) {
        None => Scalar::Unset,
        Some(Value::String(s)) => Scalar::Set(s),
        Some(other) => Scalar::Malformed(other),
    }
}

/// Integers that fit `i64`; floats and out-of-range numbers are malformed.
pub(super) fn int_at<'a>(obj: Option<&'a Value>, key: &str) -> Scalar<'a, i64> {
    match get(obj, key) {
        None => Scalar::Unset,
        Some(v) => v.as_i64().map_or(Scalar::Malformed(v), Scalar::Set),
    }
}

pub(super) fn list_at<'a>(obj: Option<&'a Value>, key: &str) -> List<'a> {
    match get(obj, key) {
        None => List::Unset,
        Some(Value::Array(items)) => List::Items(items),
        Some(other) => List::Malformed(other),
    }
}

/// Items of a list field; a missing or wrongly typed list yields nothing.
pub(super) fn items<'a>(obj: Option<&'a Value>, key: &str) -> &'a [Value] {
    match list_at(obj, key) {
        List::Items(items) => items,
        List::Unset | List::Malformed(_) => &[],
    }
}

/// A string value for messages: strings as-is, anything else as its JSON text.
pub(super) fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The `type` of a profile object (`seccompProfile`, `appArmorProfile`) if the profile is set.
/// An object without `type` yields `""`; anything malformed yields its JSON text, which never
/// equals an allowed type.
pub(super) fn profile_type(sc: Option<&Value>, key: &str) -> Option<String> {
    let profile = get(sc, key)?;
    if !profile.is_object() {
        return Some(profile.to_string());
    }
    Some(match str_at(Some(profile), "type") {
        Scalar::Unset => String::new(),
        Scalar::Set(t) => t.to_string(),
        Scalar::Malformed(v) => v.to_string(),
    })
}

/// Go's `joinQuote` for a single item: wraps in double quotes without escaping.
pub(super) fn quote(s: &str) -> String {
    format!("\"{s}\"")
}

/// `"<reason> (<detail>)"`, PSA's per-check message format (just `<reason>` when the detail
/// is empty).
pub(super) fn violation(
    check: &'static str,
    path: String,
    reason: &str,
    detail: &str,
) -> Violation {
    let message = if detail.is_empty() {
        reason.to_string()
    } else {
        format!("{reason} ({detail})")
    };
    Violation {
        check,
        path,
        message,
    }
}

/// One container (of any kind) of the pod.
pub(super) struct Container<'a> {
    pub(super) name: &'a str,
    pub(super) value: &'a Value,
    /// Full path of the container, e.g. `spec.template.spec.initContainers[1]`.
    pub(super) path: String,
    pub(super) exempt: bool,
}

impl<'a> Container<'a> {
    pub(super) fn sc(&self) -> Option<&'a Value> {
        get(Some(self.value), "securityContext")
    }

    /// `"container \"<name>\""`, the setter wording PSA uses.
    pub(super) fn setter(&self) -> String {
        format!("container {}", quote(self.name))
    }

    /// Path of a field below this container.
    pub(super) fn at(&self, rel: &str) -> String {
        format!("{}.{rel}", self.path)
    }
}

/// Everything a check needs: the pod, paths, version and exemptions.
pub(super) struct Ctx<'a> {
    /// Policy minor version (of v1) being evaluated.
    pub(super) minor: u32,
    pub(super) meta: Option<&'a Value>,
    pub(super) spec: &'a Value,
    spec_path: String,
    meta_path: String,
    /// All containers in PSA visiting order: init, regular, ephemeral.
    pub(super) containers: Vec<Container<'a>>,
    /// Every container is exempt, so pod-level findings are skipped.
    pub(super) pod_exempt: bool,
    /// Per container name: whether every container of that name is exempt.
    exempt_by_name: OnceCell<HashMap<&'a str, bool>>,
}

impl<'a> Ctx<'a> {
    pub(super) fn new(
        minor: u32,
        meta: Option<&'a Value>,
        spec: &'a Value,
        prefix: &str,
        exempt_image: &dyn Fn(&str) -> bool,
    ) -> Self {
        let join = |rel: &str| {
            if prefix.is_empty() {
                rel.to_string()
            } else {
                format!("{prefix}.{rel}")
            }
        };
        let spec_path = join("spec");
        let mut containers = Vec::new();
        for kind in ["initContainers", "containers", "ephemeralContainers"] {
            for (i, value) in items(Some(spec), kind).iter().enumerate() {
                let image = str_at(Some(value), "image");
                containers.push(Container {
                    name: get(Some(value), "name")
                        .and_then(Value::as_str)
                        .unwrap_or(""),
                    value,
                    path: format!("{spec_path}.{kind}[{i}]"),
                    exempt: matches!(image, Scalar::Set(img) if exempt_image(img)),
                });
            }
        }
        let pod_exempt = !containers.is_empty() && containers.iter().all(|c| c.exempt);
        Ctx {
            minor,
            meta,
            spec,
            spec_path,
            meta_path: join("metadata"),
            containers,
            pod_exempt,
            exempt_by_name: OnceCell::new(),
        }
    }

    /// Containers that are not exempt.
    pub(super) fn active(&self) -> impl Iterator<Item = &Container<'a>> {
        self.containers.iter().filter(|c| !c.exempt)
    }

    /// The pod-level `securityContext`.
    pub(super) fn pod_sc(&self) -> Option<&'a Value> {
        get(Some(self.spec), "securityContext")
    }

    /// Path of a field below the pod spec, e.g. `spec.hostNetwork`.
    pub(super) fn spec_at(&self, rel: &str) -> String {
        format!("{}.{rel}", self.spec_path)
    }

    /// Path of an annotation of the pod (template) metadata.
    pub(super) fn annotation_path(&self, key: &str) -> String {
        format!("{}.annotations[{key}]", self.meta_path)
    }

    /// Sorted `(key, value)` pairs of the pod (template) annotations; `null` values are unset.
    pub(super) fn annotations(&self) -> Vec<(&'a str, &'a Value)> {
        let mut pairs: Vec<(&str, &Value)> = match get(self.meta, "annotations") {
            Some(Value::Object(map)) => map
                .iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k.as_str(), v))
                .collect(),
            _ => Vec::new(),
        };
        pairs.sort_by(|a, b| a.0.cmp(b.0));
        pairs
    }

    /// Whether a finding tied to the container named `name` (via an annotation) is skipped:
    /// the named container is exempt, or no container has that name and the pod is exempt.
    pub(super) fn annotation_exempt(&self, name: &str) -> bool {
        // Built on first use: one lookup per annotation, not a scan of every container.
        let by_name = self.exempt_by_name.get_or_init(|| {
            let mut map: HashMap<&'a str, bool> = HashMap::new();
            for c in &self.containers {
                *map.entry(c.name).or_insert(true) &= c.exempt;
            }
            map
        });
        by_name.get(name).copied().unwrap_or(self.pod_exempt)
    }

    /// `spec.os.name == "windows"`.
    pub(super) fn is_windows(&self) -> bool {
        str_at(get(Some(self.spec), "os"), "name") == Scalar::Set("windows")
    }

    /// `spec.hostUsers == false` (the pod runs in a user namespace).
    pub(super) fn in_user_namespace(&self) -> bool {
        bool_at(Some(self.spec), "hostUsers") == Scalar::Set(false)
    }
}
