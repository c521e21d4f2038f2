//! Baseline checks on host access, privileges and AppArmor (`check_*.go` with
//! `api.LevelBaseline` upstream); the remaining baseline checks are in `baseline_isolation`.

use serde_json::Value;

use super::Violation;
use super::model::{
    Container, Ctx, List, Scalar, bool_at, get, int_at, items, list_at, profile_type, quote,
    str_at, text, violation,
};

const APPARMOR_ANNOTATION_PREFIX: &str = "container.apparmor.security.beta.kubernetes.io/";

/// Capabilities a baseline container may add (the container runtime default set).
const BASELINE_CAPABILITIES: &[&str] = &[
    "AUDIT_WRITE",
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "KILL",
    "MKNOD",
    "NET_BIND_SERVICE",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYS_CHROOT",
];

/// `appArmorProfile`: the `appArmorProfile.type` fields (pod and containers) must be
/// `RuntimeDefault` or `Localhost`; the beta annotations must be empty, `runtime/default` or
/// `localhost/*`.
pub(super) fn app_armor_profile(ctx: &Ctx<'_>) -> Vec<Violation> {
    const ID: &str = "appArmorProfile";
    const REASON: &str = "forbidden AppArmor profile";
    let allowed = |t: &str| t == "RuntimeDefault" || t == "Localhost";
    let detail = |setter: &str, value: &str| {
        format!(
            "{setter} must not set AppArmor profile type to {}",
            quote(value)
        )
    };
    let mut out = Vec::new();
    if !ctx.pod_exempt
        && let Some(t) = profile_type(ctx.pod_sc(), "appArmorProfile").filter(|t| !allowed(t))
    {
        let path = ctx.spec_at("securityContext.appArmorProfile.type");
        out.push(violation(ID, path, REASON, &detail("pod", &t)));
    }
    for c in ctx.active() {
        if let Some(t) = profile_type(c.sc(), "appArmorProfile").filter(|t| !allowed(t)) {
            let path = c.at("securityContext.appArmorProfile.type");
            out.push(violation(ID, path, REASON, &detail(&c.setter(), &t)));
        }
    }
    for (key, value) in ctx.annotations() {
        let Some(name) = key.strip_prefix(APPARMOR_ANNOTATION_PREFIX) else {
            continue;
        };
        let value = text(value);
        let ok = value.is_empty() || value == "runtime/default" || value.starts_with("localhost/");
        if ok || ctx.annotation_exempt(name) {
            continue;
        }
        let shown = format!("{key}={value:?}");
        out.push(violation(
            ID,
            ctx.annotation_path(key),
            REASON,
            &detail("annotation", &shown),
        ));
    }
    out
}

/// `capabilities_baseline`: `capabilities.add` may only contain the runtime default set.
pub(super) fn capabilities_baseline(ctx: &Ctx<'_>) -> Vec<Violation> {
    let mut out = Vec::new();
    for c in ctx.active() {
        let caps = get(c.sc(), "capabilities");
        for_each_added_capability(
            c,
            caps,
            |cap| BASELINE_CAPABILITIES.contains(&cap),
            |path, cap| {
                let detail = format!(
                    "{} must not include {} in securityContext.capabilities.add",
                    c.setter(),
                    quote(cap)
                );
                out.push(violation(
                    "capabilities_baseline",
                    path,
                    "non-default capabilities",
                    &detail,
                ));
            },
        );
    }
    out
}

/// Calls `report(path, capability)` for every entry of `capabilities.add` that `allowed`
/// rejects; non-string entries and a non-list `add` are always rejected.
pub(super) fn for_each_added_capability(
    c: &Container<'_>,
    caps: Option<&Value>,
    allowed: impl Fn(&str) -> bool,
    mut report: impl FnMut(String, &str),
) {
    match list_at(caps, "add") {
        List::Unset => {}
        List::Malformed(v) => report(c.at("securityContext.capabilities.add"), &text(v)),
        List::Items(list) => {
            for (i, item) in list.iter().enumerate() {
                match item {
                    Value::String(cap) if allowed(cap) => {}
                    other => report(
                        c.at(&format!("securityContext.capabilities.add[{i}]")),
                        &text(other),
                    ),
                }
            }
        }
    }
}

/// `hostNamespaces`: `hostNetwork`, `hostPID` and `hostIPC` must be unset or false.
pub(super) fn host_namespaces(ctx: &Ctx<'_>) -> Vec<Violation> {
    if ctx.pod_exempt {
        return Vec::new();
    }
    ["hostNetwork", "hostPID", "hostIPC"]
        .into_iter()
        .filter(|key| {
            !matches!(
                bool_at(Some(ctx.spec), key),
                Scalar::Unset | Scalar::Set(false)
            )
        })
        .map(|key| {
            violation(
                "hostNamespaces",
                ctx.spec_at(key),
                "host namespaces",
                &format!("{key}=true"),
            )
        })
        .collect()
}

/// `hostPathVolumes`: no `hostPath` volumes.
pub(super) fn host_path_volumes(ctx: &Ctx<'_>) -> Vec<Violation> {
    if ctx.pod_exempt {
        return Vec::new();
    }
    let mut out = Vec::new();
    for (i, volume) in items(Some(ctx.spec), "volumes").iter().enumerate() {
        if get(Some(volume), "hostPath").is_some() {
            let name = get(Some(volume), "name")
                .and_then(Value::as_str)
                .unwrap_or("");
            let path = ctx.spec_at(&format!("volumes[{i}].hostPath"));
            out.push(violation(
                "hostPathVolumes",
                path,
                "hostPath volumes",
                &format!("volume {}", quote(name)),
            ));
        }
    }
    out
}

/// `hostPorts`: `ports[*].hostPort` must be unset or 0.
pub(super) fn host_ports(ctx: &Ctx<'_>) -> Vec<Violation> {
    let mut out = Vec::new();
    for c in ctx.active() {
        for (i, port) in items(Some(c.value), "ports").iter().enumerate() {
            let shown = match int_at(Some(port), "hostPort") {
                Scalar::Unset | Scalar::Set(0) => continue,
                Scalar::Set(n) => n.to_string(),
                Scalar::Malformed(v) => text(v),
            };
            let detail = format!("{} uses hostPort {shown}", c.setter());
            out.push(violation(
                "hostPorts",
                c.at(&format!("ports[{i}].hostPort")),
                "hostPort",
                &detail,
            ));
        }
    }
    out
}

/// `hostProbesAndHostLifecycle` (v1.34+): probes and lifecycle handlers must not set `host`.
pub(super) fn host_probes_and_lifecycle(ctx: &Ctx<'_>) -> Vec<Violation> {
    const HANDLERS: &[(&str, &str)] = &[
        ("livenessProbe", ""),
        ("readinessProbe", ""),
        ("startupProbe", ""),
        ("lifecycle", "postStart"),
        ("lifecycle", "preStop"),
    ];
    let mut out = Vec::new();
    for c in ctx.active() {
        for (outer, inner) in HANDLERS {
            let mut handler = get(Some(c.value), outer);
            if handler.is_none() {
                continue;
            }
            if !inner.is_empty() {
                handler = get(handler, inner);
            }
            for action in ["httpGet", "tcpSocket"] {
                let host = match str_at(get(handler, action), "host") {
                    Scalar::Unset | Scalar::Set("") => continue,
                    Scalar::Set(h) => h.to_string(),
                    Scalar::Malformed(v) => text(v),
                };
                let detail = format!(
                    "{} uses probe or lifecycle host {}",
                    c.setter(),
                    quote(&host)
                );
                let path = if inner.is_empty() {
                    c.at(&format!("{outer}.{action}.host"))
                } else {
                    c.at(&format!("{outer}.{inner}.{action}.host"))
                };
                out.push(violation(
                    "hostProbesAndHostLifecycle",
                    path,
                    "probe or lifecycle host",
                    &detail,
                ));
            }
        }
    }
    out
}

/// `privileged`: `securityContext.privileged` must be unset or false.
pub(super) fn privileged(ctx: &Ctx<'_>) -> Vec<Violation> {
    ctx.active()
        .filter(|c| {
            !matches!(
                bool_at(c.sc(), "privileged"),
                Scalar::Unset | Scalar::Set(false)
            )
        })
        .map(|c| {
            let detail = format!(
                "{} must not set securityContext.privileged=true",
                c.setter()
            );
            violation(
                "privileged",
                c.at("securityContext.privileged"),
                "privileged",
                &detail,
            )
        })
        .collect()
}
