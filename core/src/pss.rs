//! Kubernetes Pod Security Standards (`baseline` and `restricted`) evaluated over a pod spec in
//! `serde_json::Value` form.
//!
//! Semantics, check ids, check order, version ranges and message wording follow the
//! `k8s.io/pod-security-admission/policy` package (Pod Security Admission, "PSA") as of
//! Kubernetes v1.37, the newest policy version ([`LATEST_POLICY_VERSION`]). Pinned versions
//! (`v1.0` ... `v1.37`) reproduce the standard as it was at that version; anything newer than
//! v1.37 is evaluated as v1.37, exactly as PSA clamps to its newest registered version.
//!
//! # Differences in presentation from PSA
//! PSA reports one aggregated result per check (`privileged (containers "a", "b" must ...)`).
//! Here every finding is its own [`Violation`] with the exact field path, worded as PSA would
//! word that single finding (`privileged (container "a" must ...)`). [`summarize`] joins the
//! messages with `", "`, so for a single offending field it is identical to PSA's message.
//! The summary is bounded whatever the pod: at most [`MAX_MESSAGES_PER_CHECK`] messages per
//! check, then a count of the rest (see [`summarize`]).
//! Containers are visited in PSA's order: `initContainers`, `containers`, `ephemeralContainers`.
//!
//! # Malformed input
//! The function never panics. JSON `null` and a missing field both mean "not set". A value of the
//! wrong type (which the API server would have rejected) is treated as the check's *failing*
//! value (fail closed): e.g. `privileged: "yes"` or `hostNetwork: 1` is a violation,
//! `runAsNonRoot: "true"` counts as not `true`, `runAsUser: "0"` counts as root, a non-string
//! capability, sysctl name or profile type is forbidden; it is shown as its JSON text in the
//! message. Lists of the wrong type (`containers: {}`) are treated as empty, except lists that
//! are themselves restricted (`capabilities.add`, `sysctls`), which are reported. A volume that
//! is not an object is an "unknown" restricted volume type. A volume with no source at all is
//! allowed (the API server defaults it to `emptyDir`); a volume with any non-allowed source key
//! is restricted even if it also has an allowed one.
//!
//! # Exempt images
//! `exempt_image(image)` returning true exempts that container from every container-level
//! finding. Pod-level findings (host namespaces, volumes, sysctls, pod `securityContext`,
//! pod-wide annotations) are skipped only when every container (containers, initContainers,
//! ephemeralContainers; at least one) is exempt. A per-container annotation
//! (`container.apparmor.security.beta.kubernetes.io/<name>`, and the pre-v1.19 seccomp
//! annotation) belongs to the container it names. Containers without a string `image` are never
//! exempt.

mod baseline;
mod baseline_isolation;
mod model;
mod restricted;
#[cfg(test)]
mod test_support;
#[cfg(test)]
mod tests_baseline;
#[cfg(test)]
mod tests_general;
#[cfg(test)]
mod tests_huge;
#[cfg(test)]
mod tests_restricted;
#[cfg(test)]
mod tests_robustness;
#[cfg(test)]
mod tests_versions;

use std::fmt;
use std::str::FromStr;

use self::model::Ctx;

/// Pod Security Standards level.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    serde::Serialize,
    serde::Deserialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Privileged,
    Baseline,
    Restricted,
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Level::Privileged => "privileged",
            Level::Baseline => "baseline",
            Level::Restricted => "restricted",
        })
    }
}

impl FromStr for Level {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "privileged" => Ok(Level::Privileged),
            "baseline" => Ok(Level::Baseline),
            "restricted" => Ok(Level::Restricted),
            _ => Err(ParseError(format!(
                "invalid level {s:?}: must be \"privileged\", \"baseline\" or \"restricted\""
            ))),
        }
    }
}

/// "latest" or a Kubernetes minor version like "v1.29"; checks follow the standard as it was at
/// that version.
///
/// Versions newer than [`LATEST_POLICY_VERSION`] (including any major version above 1) behave
/// like `Latest`; a major version of 0 behaves like v1.0.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    Latest,
    V(u32 /*major*/, u32 /*minor*/),
}

/// The newest policy version whose checks differ from the previous one; `Latest` evaluates this
/// version (Kubernetes v1.37: `net.ipv4.tcp_slow_start_after_idle` and
/// `net.ipv4.tcp_notsent_lowat` became safe sysctls).
pub const LATEST_POLICY_VERSION: (u32, u32) = (1, 37);

impl Version {
    /// The policy minor version (of major version 1) this version evaluates as.
    pub fn effective_minor(self) -> u32 {
        let max = LATEST_POLICY_VERSION.1;
        match self {
            Version::Latest => max,
            Version::V(0, _) => 0,
            Version::V(1, minor) => minor.min(max),
            Version::V(_, _) => max,
        }
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Version::Latest => f.write_str("latest"),
            Version::V(major, minor) => write!(f, "v{major}.{minor}"),
        }
    }
}

impl FromStr for Version {
    type Err = ParseError;
    /// Accepts exactly what PSA accepts: `latest` or `v1.<minor>` (no leading zeros).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "latest" {
            return Ok(Version::Latest);
        }
        let bad = || {
            ParseError(format!(
                "invalid version {s:?}: must be \"latest\" or \"v1.<minor>\", e.g. \"v1.30\""
            ))
        };
        let minor = s.strip_prefix("v1.").ok_or_else(bad)?;
        let digits_ok = !minor.is_empty()
            && minor.bytes().all(|b| b.is_ascii_digit())
            && (minor == "0" || !minor.starts_with('0'));
        if !digits_ok {
            return Err(bad());
        }
        minor.parse().map(|m| Version::V(1, m)).map_err(|_| bad())
    }
}

/// Error returned when parsing a [`Level`] or [`Version`] fails; the message says what is
/// accepted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseError(pub String);

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ParseError {}

/// One finding of one check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// Stable check id, identical to PSA's check ids (e.g. `privileged`, `hostPathVolumes`,
    /// `runAsNonRoot`); see [`BASELINE_CHECK_IDS`] and [`RESTRICTED_CHECK_IDS`].
    pub check: &'static str,
    /// Field path in the whole object, e.g.
    /// `spec.template.spec.containers[0].securityContext.privileged`.
    pub path: String,
    /// The finding worded as PSA words it, e.g.
    /// `privileged (container "nginx" must not set securityContext.privileged=true)`.
    pub message: String,
}

type CheckFn = fn(&Ctx<'_>) -> Vec<Violation>;

#[derive(Debug)]
struct CheckDef {
    id: &'static str,
    /// First policy minor version (of v1) the check applies to.
    since: u32,
    /// Baseline check this restricted check replaces at the restricted level.
    overrides: Option<&'static str>,
    run: CheckFn,
}

const fn def(
    id: &'static str,
    since: u32,
    overrides: Option<&'static str>,
    run: CheckFn,
) -> CheckDef {
    CheckDef {
        id,
        since,
        overrides,
        run,
    }
}

/// Baseline checks, sorted by id (byte order), which is the order PSA reports them in.
const BASELINE: &[CheckDef] = &[
    def("appArmorProfile", 0, None, baseline::app_armor_profile),
    def(
        "capabilities_baseline",
        0,
        None,
        baseline::capabilities_baseline,
    ),
    def("hostNamespaces", 0, None, baseline::host_namespaces),
    def("hostPathVolumes", 0, None, baseline::host_path_volumes),
    def("hostPorts", 0, None, baseline::host_ports),
    def(
        "hostProbesAndHostLifecycle",
        34,
        None,
        baseline::host_probes_and_lifecycle,
    ),
    def("privileged", 0, None, baseline::privileged),
    def("procMount", 0, None, baseline_isolation::proc_mount),
    def(
        "seLinuxOptions",
        0,
        None,
        baseline_isolation::se_linux_options,
    ),
    def(
        "seccompProfile_baseline",
        0,
        None,
        baseline_isolation::seccomp_profile_baseline,
    ),
    def("sysctls", 0, None, baseline_isolation::sysctls),
    def(
        "windowsHostProcess",
        0,
        None,
        baseline_isolation::windows_host_process,
    ),
];

/// Restricted checks, sorted by id (byte order); PSA reports them after the baseline checks.
const RESTRICTED: &[CheckDef] = &[
    def(
        "allowPrivilegeEscalation",
        8,
        None,
        restricted::allow_privilege_escalation,
    ),
    def(
        "capabilities_restricted",
        22,
        Some("capabilities_baseline"),
        restricted::capabilities_restricted,
    ),
    def(
        "procMount_restricted",
        35,
        Some("procMount"),
        restricted::proc_mount_restricted,
    ),
    def(
        "restrictedVolumes",
        0,
        Some("hostPathVolumes"),
        restricted::restricted_volumes,
    ),
    def("runAsNonRoot", 0, None, restricted::run_as_non_root),
    def("runAsUser", 23, None, restricted::run_as_user),
    def(
        "seccompProfile_restricted",
        19,
        Some("seccompProfile_baseline"),
        restricted::seccomp_profile_restricted,
    ),
];

#[cfg(test)]
/// Ids of all baseline checks (some apply only from a certain version).
pub const BASELINE_CHECK_IDS: &[&str] = &[
    "appArmorProfile",
    "capabilities_baseline",
    "hostNamespaces",
    "hostPathVolumes",
    "hostPorts",
    "hostProbesAndHostLifecycle",
    "privileged",
    "procMount",
    "seLinuxOptions",
    "seccompProfile_baseline",
    "sysctls",
    "windowsHostProcess",
];

#[cfg(test)]
/// Ids of all restricted-only checks (some apply only from a certain version).
pub const RESTRICTED_CHECK_IDS: &[&str] = &[
    "allowPrivilegeEscalation",
    "capabilities_restricted",
    "procMount_restricted",
    "restrictedVolumes",
    "runAsNonRoot",
    "runAsUser",
    "seccompProfile_restricted",
];

/// The checks evaluated for `level` at `version`, in evaluation (= reporting) order.
fn active_checks(level: Level, version: Version) -> Vec<&'static CheckDef> {
    let minor = version.effective_minor();
    let applies = |c: &&CheckDef| c.since <= minor;
    let restricted: Vec<&CheckDef> = match level {
        Level::Privileged => return Vec::new(),
        Level::Baseline => Vec::new(),
        Level::Restricted => RESTRICTED.iter().filter(applies).collect(),
    };
    let overridden = |id: &str| restricted.iter().any(|r| r.overrides == Some(id));
    let mut checks: Vec<&CheckDef> = BASELINE
        .iter()
        .filter(applies)
        .filter(|c| !overridden(c.id))
        .collect();
    checks.extend(restricted);
    checks
}

#[cfg(test)]
/// Ids of the checks evaluated for `level` at `version`, in reporting order.
pub fn check_ids(level: Level, version: Version) -> Vec<&'static str> {
    active_checks(level, version)
        .into_iter()
        .map(|c| c.id)
        .collect()
}

#[cfg(test)]
/// Evaluates the pod spec against `level` at `version`.
///
/// `pod_meta` is the pod (template) metadata object if any (for AppArmor annotations),
/// `pod_spec` is the PodSpec. `path_prefix` is where the pod template lives in the whole object,
/// e.g. "spec.template" for a Deployment, "spec.jobTemplate.spec.template" for a CronJob, "" for
/// a Pod; violation paths are built from it. `exempt_image(image)` → true exempts that container
/// (see the module docs for what that skips). Violations come out in PSA's check order, then
/// pod before containers, then container order.
pub fn check_pod(
    level: Level,
    version: Version,
    pod_meta: Option<&serde_json::Value>,
    pod_spec: &serde_json::Value,
    path_prefix: &str,
    exempt_image: &dyn Fn(&str) -> bool,
) -> Vec<Violation> {
    Checks::new(level, version).check_pod(pod_meta, pod_spec, path_prefix, exempt_image)
}

/// The checks of one level at one version, chosen once (when a policy is compiled).
#[derive(Debug, Clone)]
pub struct Checks {
    version: Version,
    list: Vec<&'static CheckDef>,
}

impl Checks {
    pub fn new(level: Level, version: Version) -> Checks {
        Checks {
            version,
            list: active_checks(level, version),
        }
    }

    /// As [`check_pod`], with the checks already chosen.
    pub fn check_pod(
        &self,
        pod_meta: Option<&serde_json::Value>,
        pod_spec: &serde_json::Value,
        path_prefix: &str,
        exempt_image: &dyn Fn(&str) -> bool,
    ) -> Vec<Violation> {
        if self.list.is_empty() {
            return Vec::new();
        }
        let ctx = Ctx::new(
            self.version.effective_minor(),
            pod_meta,
            pod_spec,
            path_prefix,
            exempt_image,
        );
        self.list.iter().flat_map(|c| (c.run)(&ctx)).collect()
    }
}

/// The most distinct messages [`summarize`] lists for one check; the rest are counted
/// (`and 59990 more "privileged" findings`).
pub const MAX_MESSAGES_PER_CHECK: usize = 10;

/// The longest one finding's message is in a summary, in bytes (a message quotes values from
/// the object, which can be long).
pub const MAX_FINDING_BYTES: usize = 512;

/// The longest summary, in bytes.
pub const MAX_SUMMARY_BYTES: usize = 8 * 1024;

/// PSA-style one-line summary:
/// `violates PodSecurity "restricted:latest": <check messages joined by ", ">`.
/// Identical messages (e.g. the same host used by two probes of one container) are listed once.
/// Returns an empty string when there are no violations.
///
/// Bounded, whatever the pod: per check the first [`MAX_MESSAGES_PER_CHECK`] distinct
/// messages are listed, each cut to [`MAX_FINDING_BYTES`], then `and N more "<check>"
/// findings`; the whole is cut to [`MAX_SUMMARY_BYTES`]. Linear in the number of violations.
pub fn summarize(level: Level, version: Version, violations: &[Violation]) -> String {
    use std::fmt::Write as _;
    if violations.is_empty() {
        return String::new();
    }
    let mut out = format!("violates PodSecurity \"{level}:{version}\": ");
    let start = out.len();
    let mut seen: std::collections::HashSet<&str> =
        std::collections::HashSet::with_capacity(violations.len().min(1024));
    // Violations come grouped by check, in check order.
    for group in violations.chunk_by(|a, b| a.check == b.check) {
        let mut listed = 0usize;
        let mut more = 0usize;
        for v in group {
            if !seen.insert(v.message.as_str()) {
                continue;
            }
            if listed == MAX_MESSAGES_PER_CHECK {
                more += 1;
                continue;
            }
            listed += 1;
            if out.len() > start {
                out.push_str(", ");
            }
            if v.message.len() > MAX_FINDING_BYTES {
                let mut cut = v.message.clone();
                crate::admission::truncate_text(&mut cut, MAX_FINDING_BYTES);
                out.push_str(&cut);
            } else {
                out.push_str(&v.message);
            }
        }
        if more > 0 {
            let _ = write!(out, ", and {more} more {:?} findings", group[0].check);
        }
    }
    crate::admission::truncate_text(&mut out, MAX_SUMMARY_BYTES);
    out
}
