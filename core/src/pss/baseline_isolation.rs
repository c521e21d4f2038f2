//! Baseline checks on kernel isolation settings: `/proc` mount type, SELinux, seccomp, sysctls
//! and Windows HostProcess.

use serde_json::Value;

use super::Violation;
use super::model::{
    Ctx, List, Scalar, bool_at, get, list_at, profile_type, quote, str_at, text, violation,
};

const SECCOMP_POD_ANNOTATION: &str = "seccomp.security.alpha.kubernetes.io/pod";
const SECCOMP_CONTAINER_ANNOTATION_PREFIX: &str = "container.seccomp.security.alpha.kubernetes.io/";

/// Safe sysctls and the policy minor version from which each one is allowed.
const SAFE_SYSCTLS: &[(&str, u32)] = &[
    ("kernel.shm_rmid_forced", 0),
    ("net.ipv4.ip_local_port_range", 0),
    ("net.ipv4.tcp_syncookies", 0),
    ("net.ipv4.ping_group_range", 0),
    ("net.ipv4.ip_unprivileged_port_start", 0),
    ("net.ipv4.ip_local_reserved_ports", 27),
    ("net.ipv4.tcp_keepalive_time", 29),
    ("net.ipv4.tcp_fin_timeout", 29),
    ("net.ipv4.tcp_keepalive_intvl", 29),
    ("net.ipv4.tcp_keepalive_probes", 29),
    ("net.ipv4.tcp_rmem", 32),
    ("net.ipv4.tcp_wmem", 32),
    ("net.ipv4.tcp_slow_start_after_idle", 37),
    ("net.ipv4.tcp_notsent_lowat", 37),
];

/// Allowed SELinux types and the policy minor version from which each one is allowed.
const SELINUX_TYPES: &[(&str, u32)] = &[
    ("", 0),
    ("container_t", 0),
    ("container_init_t", 0),
    ("container_kvm_t", 0),
    ("container_engine_t", 31),
];

/// `procMount`: `securityContext.procMount` must be unset or `Default`; from v1.35 any value is
/// allowed for pods in a user namespace (`hostUsers: false`).
pub(super) fn proc_mount(ctx: &Ctx<'_>) -> Vec<Violation> {
    if ctx.minor >= 35 && ctx.in_user_namespace() {
        return Vec::new();
    }
    proc_mount_findings(ctx, "procMount")
}

/// The unconditional `/proc` mount check, reported under `check`.
pub(super) fn proc_mount_findings(ctx: &Ctx<'_>, check: &'static str) -> Vec<Violation> {
    let mut out = Vec::new();
    for c in ctx.active() {
        let value = match str_at(c.sc(), "procMount") {
            Scalar::Unset | Scalar::Set("Default") => continue,
            Scalar::Set(v) => v.to_string(),
            Scalar::Malformed(v) => text(v),
        };
        let detail = format!(
            "{} must not set securityContext.procMount to {}",
            c.setter(),
            quote(&value)
        );
        out.push(violation(
            check,
            c.at("securityContext.procMount"),
            "procMount",
            &detail,
        ));
    }
    out
}

/// `seLinuxOptions`: `type` must be one of the allowed container types (`container_engine_t`
/// from v1.31); `user` and `role` must not be set.
pub(super) fn se_linux_options(ctx: &Ctx<'_>) -> Vec<Violation> {
    let mut out = Vec::new();
    if !ctx.pod_exempt
        && let Some(opts) = get(ctx.pod_sc(), "seLinuxOptions")
    {
        se_linux_findings(
            ctx,
            opts,
            "pod",
            &ctx.spec_at("securityContext.seLinuxOptions"),
            &mut out,
        );
    }
    for c in ctx.active() {
        if let Some(opts) = get(c.sc(), "seLinuxOptions") {
            se_linux_findings(
                ctx,
                opts,
                &c.setter(),
                &c.at("securityContext.seLinuxOptions"),
                &mut out,
            );
        }
    }
    out
}

fn se_linux_findings(
    ctx: &Ctx<'_>,
    opts: &Value,
    setter: &str,
    base: &str,
    out: &mut Vec<Violation>,
) {
    let mut report = |field: &str, what: String| {
        let path = if field.is_empty() {
            base.to_string()
        } else {
            format!("{base}.{field}")
        };
        let detail = format!("{setter} set forbidden securityContext.seLinuxOptions: {what}");
        out.push(violation("seLinuxOptions", path, "seLinuxOptions", &detail));
    };
    if !opts.is_object() {
        report("", format!("type {}", quote(&text(opts))));
        return;
    }
    let allowed = |t: &str| {
        SELINUX_TYPES
            .iter()
            .any(|(name, since)| *name == t && *since <= ctx.minor)
    };
    match str_at(Some(opts), "type") {
        Scalar::Set(t) if !allowed(t) => report("type", format!("type {}", quote(t))),
        Scalar::Malformed(v) => report("type", format!("type {}", quote(&text(v)))),
        Scalar::Unset | Scalar::Set(_) => {}
    }
    for field in ["user", "role"] {
        if !matches!(str_at(Some(opts), field), Scalar::Unset | Scalar::Set("")) {
            report(field, format!("{field} may not be set"));
        }
    }
}

/// `seccompProfile_baseline`: if set, the seccomp profile must be `RuntimeDefault` or
/// `Localhost` (before v1.19: the alpha annotations must be `runtime/default`,
/// `docker/default` or `localhost/*`).
pub(super) fn seccomp_profile_baseline(ctx: &Ctx<'_>) -> Vec<Violation> {
    const ID: &str = "seccompProfile_baseline";
    if ctx.minor < 19 {
        return seccomp_annotations(ctx);
    }
    let mut out = Vec::new();
    if !ctx.pod_exempt
        && let Some(t) = profile_type(ctx.pod_sc(), "seccompProfile").filter(|t| !valid_seccomp(t))
    {
        out.push(seccomp_explicit(
            ID,
            ctx.spec_at("securityContext.seccompProfile.type"),
            "pod",
            &t,
        ));
    }
    for c in ctx.active() {
        if let Some(t) = profile_type(c.sc(), "seccompProfile").filter(|t| !valid_seccomp(t)) {
            out.push(seccomp_explicit(
                ID,
                c.at("securityContext.seccompProfile.type"),
                &c.setter(),
                &t,
            ));
        }
    }
    out
}

pub(super) fn valid_seccomp(t: &str) -> bool {
    t == "RuntimeDefault" || t == "Localhost"
}

/// A seccomp profile explicitly set to a forbidden type (wording shared by both levels).
pub(super) fn seccomp_explicit(
    check: &'static str,
    path: String,
    setter: &str,
    value: &str,
) -> Violation {
    let detail = format!(
        "{setter} must not set securityContext.seccompProfile.type to {}",
        quote(value)
    );
    violation(check, path, "seccompProfile", &detail)
}

fn seccomp_annotations(ctx: &Ctx<'_>) -> Vec<Violation> {
    let annotations = ctx.annotations();
    // `annotations` is sorted by key.
    let lookup = |key: &str| {
        annotations
            .binary_search_by(|(k, _)| (*k).cmp(key))
            .ok()
            .map(|i| annotations[i].1)
    };
    let report = |key: &str, value: &Value, out: &mut Vec<Violation>| {
        let value = text(value);
        let ok = value == "runtime/default"
            || value == "docker/default"
            || value.starts_with("localhost/");
        if !ok {
            let detail = format!("forbidden annotation {key}={value:?}");
            out.push(violation(
                "seccompProfile_baseline",
                ctx.annotation_path(key),
                "seccompProfile",
                &detail,
            ));
        }
    };
    let mut out = Vec::new();
    if !ctx.pod_exempt
        && let Some(v) = lookup(SECCOMP_POD_ANNOTATION)
    {
        report(SECCOMP_POD_ANNOTATION, v, &mut out);
    }
    for c in ctx.active() {
        let key = format!("{SECCOMP_CONTAINER_ANNOTATION_PREFIX}{}", c.name);
        if let Some(v) = lookup(&key) {
            report(&key, v, &mut out);
        }
    }
    out
}

/// `sysctls`: only the safe set (which grew in v1.27, v1.29, v1.32 and v1.37).
pub(super) fn sysctls(ctx: &Ctx<'_>) -> Vec<Violation> {
    if ctx.pod_exempt {
        return Vec::new();
    }
    let report = |path: String, name: &str| violation("sysctls", path, "forbidden sysctls", name);
    match list_at(ctx.pod_sc(), "sysctls") {
        List::Unset => Vec::new(),
        List::Malformed(v) => vec![report(ctx.spec_at("securityContext.sysctls"), &text(v))],
        List::Items(list) => {
            let safe = |n: &str| {
                SAFE_SYSCTLS
                    .iter()
                    .any(|(name, since)| *name == n && *since <= ctx.minor)
            };
            let mut out = Vec::new();
            for (i, item) in list.iter().enumerate() {
                let name = match str_at(Some(item), "name") {
                    Scalar::Set(n) if safe(n) => continue,
                    Scalar::Set(n) => n.to_string(),
                    Scalar::Unset => String::new(),
                    Scalar::Malformed(v) => text(v),
                };
                out.push(report(
                    ctx.spec_at(&format!("securityContext.sysctls[{i}].name")),
                    &name,
                ));
            }
            out
        }
    }
}

/// `windowsHostProcess`: `securityContext.windowsOptions.hostProcess` must be unset or false.
pub(super) fn windows_host_process(ctx: &Ctx<'_>) -> Vec<Violation> {
    const REL: &str = "securityContext.windowsOptions.hostProcess";
    let bad = |sc: Option<&Value>| {
        !matches!(
            bool_at(get(sc, "windowsOptions"), "hostProcess"),
            Scalar::Unset | Scalar::Set(false)
        )
    };
    let report = |path: String, setter: &str| {
        let detail = format!("{setter} must not set {REL}=true");
        violation("windowsHostProcess", path, "hostProcess", &detail)
    };
    let mut out = Vec::new();
    if !ctx.pod_exempt && bad(ctx.pod_sc()) {
        out.push(report(ctx.spec_at(REL), "pod"));
    }
    for c in ctx.active().filter(|c| bad(c.sc())) {
        out.push(report(c.at(REL), &c.setter()));
    }
    out
}
