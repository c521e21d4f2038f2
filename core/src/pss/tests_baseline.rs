//! Every baseline check, evaluated at the baseline and the restricted level: a passing and a
//! failing pod each.

use super::test_support::{assert_findings, baseline_pod, restricted_pod, tweak};
use super::{Level, Version};

type Edits = &'static [(&'static str, &'static str)];
type Want = (&'static str, &'static str, &'static str);

struct Row {
    name: &'static str,
    pass: Edits,
    fail: Edits,
    /// The finding at the baseline level.
    baseline: Want,
    /// The finding at the restricted level (differs where a restricted check overrides).
    restricted: Want,
}

const C: &str = "/spec/containers/0";

const fn same(want: Want) -> (Want, Want) {
    (want, want)
}

const ROWS: &[Row] = &{
    const fn row(name: &'static str, pass: Edits, fail: Edits, want: (Want, Want)) -> Row {
        Row {
            name,
            pass,
            fail,
            baseline: want.0,
            restricted: want.1,
        }
    }
    [
        row(
            "appArmorProfile container field",
            &[(
                "/spec/containers/0/securityContext/appArmorProfile",
                r#"{"type":"RuntimeDefault"}"#,
            )],
            &[(
                "/spec/containers/0/securityContext/appArmorProfile",
                r#"{"type":"Unconfined"}"#,
            )],
            same((
                "appArmorProfile",
                "spec.containers[0].securityContext.appArmorProfile.type",
                r#"forbidden AppArmor profile (container "app" must not set AppArmor profile type to "Unconfined")"#,
            )),
        ),
        row(
            "appArmorProfile pod field",
            &[(
                "/spec/securityContext/appArmorProfile",
                r#"{"type":"Localhost","localhostProfile":"k8s-nginx"}"#,
            )],
            &[(
                "/spec/securityContext/appArmorProfile",
                r#"{"type":"Unconfined"}"#,
            )],
            same((
                "appArmorProfile",
                "spec.securityContext.appArmorProfile.type",
                r#"forbidden AppArmor profile (pod must not set AppArmor profile type to "Unconfined")"#,
            )),
        ),
        row(
            "appArmorProfile annotation",
            &[(
                "/metadata/annotations/container.apparmor.security.beta.kubernetes.io~1app",
                r#""localhost/k8s-nginx""#,
            )],
            &[(
                "/metadata/annotations/container.apparmor.security.beta.kubernetes.io~1app",
                r#""unconfined""#,
            )],
            same((
                "appArmorProfile",
                "metadata.annotations[container.apparmor.security.beta.kubernetes.io/app]",
                r#"forbidden AppArmor profile (annotation must not set AppArmor profile type to "container.apparmor.security.beta.kubernetes.io/app="unconfined"")"#,
            )),
        ),
        row(
            "capabilities_baseline",
            &[(
                "/spec/containers/0/securityContext/capabilities/add",
                r#"["NET_BIND_SERVICE"]"#,
            )],
            &[(
                "/spec/containers/0/securityContext/capabilities/add",
                r#"["NET_RAW"]"#,
            )],
            (
                (
                    "capabilities_baseline",
                    "spec.containers[0].securityContext.capabilities.add[0]",
                    r#"non-default capabilities (container "app" must not include "NET_RAW" in securityContext.capabilities.add)"#,
                ),
                (
                    "capabilities_restricted",
                    "spec.containers[0].securityContext.capabilities.add[0]",
                    r#"unrestricted capabilities (container "app" must not include "NET_RAW" in securityContext.capabilities.add)"#,
                ),
            ),
        ),
        row(
            "hostNamespaces",
            &[
                ("/spec/hostNetwork", "false"),
                ("/spec/hostPID", "false"),
                ("/spec/hostIPC", "false"),
            ],
            &[("/spec/hostPID", "true")],
            same((
                "hostNamespaces",
                "spec.hostPID",
                "host namespaces (hostPID=true)",
            )),
        ),
        row(
            "hostPathVolumes",
            &[(
                "/spec/volumes",
                r#"[{"name":"cfg","configMap":{"name":"cfg"}}]"#,
            )],
            &[(
                "/spec/volumes",
                r#"[{"name":"data","hostPath":{"path":"/var/lib"}}]"#,
            )],
            (
                (
                    "hostPathVolumes",
                    "spec.volumes[0].hostPath",
                    r#"hostPath volumes (volume "data")"#,
                ),
                (
                    "restrictedVolumes",
                    "spec.volumes[0].hostPath",
                    r#"restricted volume types (volume "data" uses restricted volume type "hostPath")"#,
                ),
            ),
        ),
        row(
            "hostPorts",
            &[(
                "/spec/containers/0/ports",
                r#"[{"containerPort":80},{"containerPort":81,"hostPort":0}]"#,
            )],
            &[(
                "/spec/containers/0/ports",
                r#"[{"containerPort":80},{"containerPort":81,"hostPort":8081}]"#,
            )],
            same((
                "hostPorts",
                "spec.containers[0].ports[1].hostPort",
                r#"hostPort (container "app" uses hostPort 8081)"#,
            )),
        ),
        row(
            "hostProbesAndHostLifecycle",
            &[(
                "/spec/containers/0/livenessProbe",
                r#"{"httpGet":{"path":"/","port":80,"host":""}}"#,
            )],
            &[(
                "/spec/containers/0/readinessProbe",
                r#"{"tcpSocket":{"port":80,"host":"10.0.0.1"}}"#,
            )],
            same((
                "hostProbesAndHostLifecycle",
                "spec.containers[0].readinessProbe.tcpSocket.host",
                r#"probe or lifecycle host (container "app" uses probe or lifecycle host "10.0.0.1")"#,
            )),
        ),
        row(
            "privileged",
            &[("/spec/containers/0/securityContext/privileged", "false")],
            &[("/spec/containers/0/securityContext/privileged", "true")],
            same((
                "privileged",
                "spec.containers[0].securityContext.privileged",
                r#"privileged (container "app" must not set securityContext.privileged=true)"#,
            )),
        ),
        row(
            "procMount",
            &[(
                "/spec/containers/0/securityContext/procMount",
                r#""Default""#,
            )],
            &[(
                "/spec/containers/0/securityContext/procMount",
                r#""Unmasked""#,
            )],
            (
                (
                    "procMount",
                    "spec.containers[0].securityContext.procMount",
                    r#"procMount (container "app" must not set securityContext.procMount to "Unmasked")"#,
                ),
                (
                    "procMount_restricted",
                    "spec.containers[0].securityContext.procMount",
                    r#"procMount (container "app" must not set securityContext.procMount to "Unmasked")"#,
                ),
            ),
        ),
        row(
            "seLinuxOptions",
            &[(
                "/spec/containers/0/securityContext/seLinuxOptions",
                r#"{"type":"container_init_t","level":"s0:c1,c2"}"#,
            )],
            &[(
                "/spec/containers/0/securityContext/seLinuxOptions",
                r#"{"type":"spc_t"}"#,
            )],
            same((
                "seLinuxOptions",
                "spec.containers[0].securityContext.seLinuxOptions.type",
                r#"seLinuxOptions (container "app" set forbidden securityContext.seLinuxOptions: type "spc_t")"#,
            )),
        ),
        row(
            "seLinuxOptions pod user",
            &[(
                "/spec/securityContext/seLinuxOptions",
                r#"{"user":"","role":""}"#,
            )],
            &[(
                "/spec/securityContext/seLinuxOptions",
                r#"{"user":"system_u"}"#,
            )],
            same((
                "seLinuxOptions",
                "spec.securityContext.seLinuxOptions.user",
                "seLinuxOptions (pod set forbidden securityContext.seLinuxOptions: user may not be set)",
            )),
        ),
        row(
            "seccompProfile_baseline",
            &[(
                "/spec/containers/0/securityContext/seccompProfile",
                r#"{"type":"Localhost","localhostProfile":"p.json"}"#,
            )],
            &[(
                "/spec/containers/0/securityContext/seccompProfile",
                r#"{"type":"Unconfined"}"#,
            )],
            (
                (
                    "seccompProfile_baseline",
                    "spec.containers[0].securityContext.seccompProfile.type",
                    r#"seccompProfile (container "app" must not set securityContext.seccompProfile.type to "Unconfined")"#,
                ),
                (
                    "seccompProfile_restricted",
                    "spec.containers[0].securityContext.seccompProfile.type",
                    r#"seccompProfile (container "app" must not set securityContext.seccompProfile.type to "Unconfined")"#,
                ),
            ),
        ),
        row(
            "sysctls",
            &[(
                "/spec/securityContext/sysctls",
                r#"[{"name":"net.ipv4.tcp_keepalive_time","value":"600"}]"#,
            )],
            &[(
                "/spec/securityContext/sysctls",
                r#"[{"name":"net.ipv4.ping_group_range","value":"0 1"},{"name":"kernel.msgmax","value":"65536"}]"#,
            )],
            same((
                "sysctls",
                "spec.securityContext.sysctls[1].name",
                "forbidden sysctls (kernel.msgmax)",
            )),
        ),
        row(
            "windowsHostProcess",
            &[(
                "/spec/containers/0/securityContext/windowsOptions",
                r#"{"hostProcess":false}"#,
            )],
            &[(
                "/spec/securityContext/windowsOptions",
                r#"{"hostProcess":true}"#,
            )],
            same((
                "windowsHostProcess",
                "spec.securityContext.windowsOptions.hostProcess",
                "hostProcess (pod must not set securityContext.windowsOptions.hostProcess=true)",
            )),
        ),
    ]
};

#[test]
fn every_baseline_check_passes_and_fails_at_both_levels() {
    for level in [Level::Baseline, Level::Restricted] {
        let base = if level == Level::Baseline {
            baseline_pod()
        } else {
            restricted_pod()
        };
        assert_findings(level, Version::Latest, &base, &[]);
        for row in ROWS {
            let want = if level == Level::Baseline {
                row.baseline
            } else {
                row.restricted
            };
            assert_eq!(
                super::test_support::eval(level, Version::Latest, &tweak(&base, row.pass)),
                vec![],
                "{}: passing pod at {level}",
                row.name
            );
            assert_findings(level, Version::Latest, &tweak(&base, row.fail), &[want]);
        }
    }
}

#[test]
fn table_covers_every_baseline_check() {
    for id in super::BASELINE_CHECK_IDS {
        assert!(ROWS.iter().any(|r| r.baseline.0 == *id), "no row for {id}");
    }
}

#[test]
fn baseline_allows_default_capabilities_that_restricted_forbids() {
    let pod = tweak(
        &restricted_pod(),
        &[(
            &format!("{C}/securityContext/capabilities/add"),
            r#"["CHOWN"]"#,
        )],
    );
    assert_findings(Level::Baseline, Version::Latest, &pod, &[]);
    assert_findings(
        Level::Restricted,
        Version::Latest,
        &pod,
        &[(
            "capabilities_restricted",
            "spec.containers[0].securityContext.capabilities.add[0]",
            r#"unrestricted capabilities (container "app" must not include "CHOWN" in securityContext.capabilities.add)"#,
        )],
    );
}

#[test]
fn lifecycle_hook_hosts_are_reported_per_field() {
    let pod = tweak(
        &baseline_pod(),
        &[(
            &format!("{C}/lifecycle"),
            r#"{"postStart":{"httpGet":{"port":80,"host":"example.com"}},"preStop":{"tcpSocket":{"port":80,"host":"example.com"}}}"#,
        )],
    );
    let msg =
        r#"probe or lifecycle host (container "app" uses probe or lifecycle host "example.com")"#;
    assert_findings(
        Level::Baseline,
        Version::Latest,
        &pod,
        &[
            (
                "hostProbesAndHostLifecycle",
                "spec.containers[0].lifecycle.postStart.httpGet.host",
                msg,
            ),
            (
                "hostProbesAndHostLifecycle",
                "spec.containers[0].lifecycle.preStop.tcpSocket.host",
                msg,
            ),
        ],
    );
    // The check exists from policy v1.34 only.
    assert_findings(Level::Baseline, Version::V(1, 33), &pod, &[]);
}
