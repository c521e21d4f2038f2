//! Restricted checks (`check_*.go` with `api.LevelRestricted` upstream).

use serde_json::Value;

use super::Violation;
use super::baseline::for_each_added_capability;
use super::baseline_isolation::{proc_mount_findings, seccomp_explicit, valid_seccomp};
use super::model::{Ctx, Scalar, bool_at, get, int_at, items, profile_type, quote, violation};

/// Inline volume sources the restricted level allows (`image` since v1.33, applied by upstream
/// to every policy version).
const ALLOWED_VOLUME_SOURCES: &[&str] = &[
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "image",
    "persistentVolumeClaim",
    "projected",
    "secret",
];

/// Restricted volume sources in the order PSA tests them.
const RESTRICTED_VOLUME_SOURCES: &[&str] = &[
    "hostPath",
    "gcePersistentDisk",
    "awsElasticBlockStore",
    "gitRepo",
    "nfs",
    "iscsi",
    "glusterfs",
    "rbd",
    "flexVolume",
    "cinder",
    "cephfs",
    "flocker",
    "fc",
    "azureFile",
    "vsphereVolume",
    "quobyte",
    "azureDisk",
    "photonPersistentDisk",
    "portworxVolume",
    "scaleIO",
    "storageos",
];

/// Windows pods are exempt from the Linux-only restricted checks from v1.25.
fn linux_only_skip(ctx: &Ctx<'_>) -> bool {
    ctx.minor >= 25 && ctx.is_windows()
}

/// `allowPrivilegeEscalation` (v1.8+): every container must set
/// `allowPrivilegeEscalation: false` (not checked for Windows pods from v1.25).
pub(super) fn allow_privilege_escalation(ctx: &Ctx<'_>) -> Vec<Violation> {
    if linux_only_skip(ctx) {
        return Vec::new();
    }
    ctx.active()
        .filter(|c| bool_at(c.sc(), "allowPrivilegeEscalation") != Scalar::Set(false))
        .map(|c| {
            let detail = format!(
                "{} must set securityContext.allowPrivilegeEscalation=false",
                c.setter()
            );
            let path = c.at("securityContext.allowPrivilegeEscalation");
            violation(
                "allowPrivilegeEscalation",
                path,
                "allowPrivilegeEscalation != false",
                &detail,
            )
        })
        .collect()
}

/// `capabilities_restricted` (v1.22+): every container must drop `ALL` and may add only
/// `NET_BIND_SERVICE` (not checked for Windows pods from v1.25).
pub(super) fn capabilities_restricted(ctx: &Ctx<'_>) -> Vec<Violation> {
    const ID: &str = "capabilities_restricted";
    const REASON: &str = "unrestricted capabilities";
    if linux_only_skip(ctx) {
        return Vec::new();
    }
    let mut out = Vec::new();
    for c in ctx.active() {
        let caps = get(c.sc(), "capabilities");
        let drops_all = items(caps, "drop")
            .iter()
            .any(|d| d.as_str() == Some("ALL"));
        if !drops_all {
            let detail = format!(
                "{} must set securityContext.capabilities.drop=[\"ALL\"]",
                c.setter()
            );
            out.push(violation(
                ID,
                c.at("securityContext.capabilities.drop"),
                REASON,
                &detail,
            ));
        }
        for_each_added_capability(
            c,
            caps,
            |cap| cap == "NET_BIND_SERVICE",
            |path, cap| {
                let detail = format!(
                    "{} must not include {} in securityContext.capabilities.add",
                    c.setter(),
                    quote(cap)
                );
                out.push(violation(ID, path, REASON, &detail));
            },
        );
    }
    out
}

/// `procMount_restricted` (v1.35+): `procMount` must be unset or `Default`, also for pods in a
/// user namespace (replaces the relaxed baseline `procMount` check).
pub(super) fn proc_mount_restricted(ctx: &Ctx<'_>) -> Vec<Violation> {
    proc_mount_findings(ctx, "procMount_restricted")
}

/// `restrictedVolumes`: only configMap, csi, downwardAPI, emptyDir, ephemeral, image,
/// persistentVolumeClaim, projected and secret volumes (replaces `hostPathVolumes`).
pub(super) fn restricted_volumes(ctx: &Ctx<'_>) -> Vec<Violation> {
    if ctx.pod_exempt {
        return Vec::new();
    }
    let mut out = Vec::new();
    for (i, volume) in items(Some(ctx.spec), "volumes").iter().enumerate() {
        let Some((rel, kind)) = restricted_source(volume) else {
            continue;
        };
        let name = get(Some(volume), "name")
            .and_then(Value::as_str)
            .unwrap_or("");
        let detail = format!(
            "volume {} uses restricted volume type {}",
            quote(name),
            quote(kind)
        );
        let path = ctx.spec_at(&format!("volumes[{i}]{rel}"));
        out.push(violation(
            "restrictedVolumes",
            path,
            "restricted volume types",
            &detail,
        ));
    }
    out
}

/// The restricted source of a volume as (path suffix, type name), if any. Unknown source keys
/// and non-object volumes are reported as type `unknown`.
fn restricted_source(volume: &Value) -> Option<(String, &'static str)> {
    let Value::Object(map) = volume else {
        return Some((String::new(), "unknown"));
    };
    let set = |key: &str| map.get(key).is_some_and(|v| !v.is_null());
    if let Some(kind) = RESTRICTED_VOLUME_SOURCES.iter().find(|k| set(k)) {
        return Some((format!(".{kind}"), kind));
    }
    map.iter()
        .find(|(k, v)| {
            !v.is_null() && k.as_str() != "name" && !ALLOWED_VOLUME_SOURCES.contains(&k.as_str())
        })
        .map(|(k, _)| (format!(".{k}"), "unknown"))
}

/// Relaxation from v1.35: `runAsNonRoot` and `runAsUser` are not checked for pods in a user
/// namespace (`hostUsers: false`).
fn user_namespace_relaxed(ctx: &Ctx<'_>) -> bool {
    ctx.minor >= 35 && ctx.in_user_namespace()
}

/// `runAsNonRoot`: the pod must set `runAsNonRoot: true` or every container must; a container
/// value overrides the pod value, and an explicit `false` anywhere is forbidden. As in PSA,
/// when anything explicitly sets `false` only those explicit findings are reported.
pub(super) fn run_as_non_root(ctx: &Ctx<'_>) -> Vec<Violation> {
    const ID: &str = "runAsNonRoot";
    const REASON: &str = "runAsNonRoot != true";
    const REL: &str = "securityContext.runAsNonRoot";
    if user_namespace_relaxed(ctx) {
        return Vec::new();
    }
    let explicit_detail = |setter: &str| format!("{setter} must not set {REL}=false");
    let mut explicit = Vec::new();
    let pod_value = bool_at(ctx.pod_sc(), "runAsNonRoot");
    let pod_ok = pod_value == Scalar::Set(true);
    if !ctx.pod_exempt && !matches!(pod_value, Scalar::Unset | Scalar::Set(true)) {
        explicit.push(violation(
            ID,
            ctx.spec_at(REL),
            REASON,
            &explicit_detail("pod"),
        ));
    }
    let mut implicit = Vec::new();
    for c in ctx.active() {
        match bool_at(c.sc(), "runAsNonRoot") {
            Scalar::Set(true) => {}
            Scalar::Unset if pod_ok => {}
            Scalar::Unset => {
                let detail = format!("pod or {} must set {REL}=true", c.setter());
                implicit.push(violation(ID, c.at(REL), REASON, &detail));
            }
            Scalar::Set(false) | Scalar::Malformed(_) => {
                explicit.push(violation(
                    ID,
                    c.at(REL),
                    REASON,
                    &explicit_detail(&c.setter()),
                ));
            }
        }
    }
    if explicit.is_empty() {
        implicit
    } else {
        explicit
    }
}

/// `runAsUser` (v1.23+): neither the pod nor any container may set `runAsUser: 0`.
pub(super) fn run_as_user(ctx: &Ctx<'_>) -> Vec<Violation> {
    const REL: &str = "securityContext.runAsUser";
    if user_namespace_relaxed(ctx) {
        return Vec::new();
    }
    let is_root = |sc: Option<&Value>| {
        matches!(
            int_at(sc, "runAsUser"),
            Scalar::Set(0) | Scalar::Malformed(_)
        )
    };
    let report = |path: String, setter: &str| {
        violation(
            "runAsUser",
            path,
            "runAsUser=0",
            &format!("{setter} must not set runAsUser=0"),
        )
    };
    let mut out = Vec::new();
    if !ctx.pod_exempt && is_root(ctx.pod_sc()) {
        out.push(report(ctx.spec_at(REL), "pod"));
    }
    for c in ctx.active().filter(|c| is_root(c.sc())) {
        out.push(report(c.at(REL), &c.setter()));
    }
    out
}

/// `seccompProfile_restricted` (v1.19+): the pod or every container must set the seccomp
/// profile to `RuntimeDefault` or `Localhost`; a container value overrides the pod value (not
/// checked for Windows pods from v1.25; replaces `seccompProfile_baseline`). As in PSA, when
/// anything explicitly sets a forbidden type only those explicit findings are reported.
pub(super) fn seccomp_profile_restricted(ctx: &Ctx<'_>) -> Vec<Violation> {
    const ID: &str = "seccompProfile_restricted";
    const REL: &str = "securityContext.seccompProfile.type";
    if linux_only_skip(ctx) {
        return Vec::new();
    }
    let mut explicit = Vec::new();
    let pod_type = profile_type(ctx.pod_sc(), "seccompProfile");
    let pod_ok = pod_type.as_deref().is_some_and(valid_seccomp);
    if let Some(t) = pod_type.filter(|t| !valid_seccomp(t) && !ctx.pod_exempt) {
        explicit.push(seccomp_explicit(ID, ctx.spec_at(REL), "pod", &t));
    }
    let mut implicit = Vec::new();
    for c in ctx.active() {
        match profile_type(c.sc(), "seccompProfile") {
            Some(t) if valid_seccomp(&t) => {}
            Some(t) => explicit.push(seccomp_explicit(ID, c.at(REL), &c.setter(), &t)),
            None if pod_ok => {}
            None => {
                let detail = format!(
                    "pod or {} must set {REL} to \"RuntimeDefault\" or \"Localhost\"",
                    c.setter()
                );
                implicit.push(violation(ID, c.at(REL), "seccompProfile", &detail));
            }
        }
    }
    if explicit.is_empty() {
        implicit
    } else {
        explicit
    }
}

#[cfg(test)]
mod unit {
    use super::restricted_source;
    use serde_json::json;

    #[test]
    fn volume_sources() {
        assert_eq!(restricted_source(&json!({"name": "a", "secret": {}})), None);
        assert_eq!(
            restricted_source(&json!({"name": "a"})),
            None,
            "no source: defaulted to emptyDir"
        );
        assert_eq!(
            restricted_source(&json!({"name": "a", "nfs": {}})),
            Some((".nfs".into(), "nfs"))
        );
        assert_eq!(
            restricted_source(&json!({"name": "a", "emptyDir": {}, "hostPath": {}})),
            Some((".hostPath".into(), "hostPath")),
            "an allowed source does not hide a restricted one"
        );
        assert_eq!(
            restricted_source(&json!({"name": "a", "newThing": {}})),
            Some((".newThing".into(), "unknown"))
        );
        assert_eq!(restricted_source(&json!({"name": "a", "nfs": null})), None);
        assert_eq!(
            restricted_source(&json!("x")),
            Some((String::new(), "unknown"))
        );
    }
}
