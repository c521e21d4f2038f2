//! The real binary: `serve` with generated certificates, a review over TLS, JSON debug logs
//! that never carry a secret value, and SIGTERM ending in exit code 0.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use serde_json::json;
use std::time::Duration;

const CANARY: &str = "CANARY-c0ffee-9d2b-never-log-me";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_logs_no_secret_and_exits_zero_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    std::fs::write(
        state.join("secrets.yaml"),
        format!(
            "apiVersion: v1\nkind: Secret\nmetadata: {{name: grafana-values, namespace: monitoring}}\n\
             type: Opaque\nstringData: {{values.yaml: \"adminPassword: {CANARY}\"}}\n"
        ),
    )
    .unwrap();
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let (policies, state) = (root.join("policies"), state.to_str().unwrap().to_owned());
    let served = common::serve_child(
        dir.path(),
        &[
            "--log-format",
            "json",
            "--log-level",
            "debug",
            "--drain",
            "300ms",
            "--policies",
            policies.to_str().unwrap(),
            "--state",
            &state,
        ],
    )
    .await;
    let mut child = served.child;
    let mut client = common::connect(served.addr, &served.ca, &[b"http/1.1"])
        .await
        .unwrap();

    // A release whose valuesFrom names a key the Secret lacks: the denial names the keys only.
    // A second valuesFrom names a Secret that does not exist.
    let hr = json!({"apiVersion": "helm.toolkit.fluxcd.io/v2", "kind": "HelmRelease",
        "metadata": {"name": "grafana", "namespace": "monitoring", "annotations": {"note": "plain"}},
        "spec": {"interval": "1h", "chart": {"spec": {"chart": "grafana", "sourceRef": {"kind": "HelmRepository", "name": "grafana"}}},
                 "valuesFrom": [{"kind": "Secret", "name": "grafana-values", "valuesKey": "prod.yaml"},
                                {"kind": "Secret", "name": "grafana-smtp"}]}});
    let resp = client
        .sender
        .review(
            "/validate",
            &common::review_json("uid-canary", "CREATE", &hr),
        )
        .await;
    let v = resp.json();
    assert_eq!(v["response"]["allowed"], false);
    let msg = v["response"]["status"]["message"].as_str().unwrap();
    assert!(
        msg.contains(
            "Secret monitoring/grafana-values has no key \"prod.yaml\" (keys: values.yaml)"
        ),
        "{msg}"
    );
    assert!(!resp.text().contains(CANARY));
    let ok = client.sender.review("/validate", &common::review_json("uid-ok", "CREATE", &json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "namespace": "monitoring"}}))).await;
    assert_eq!(ok.json()["response"]["allowed"], true);
    drop(client);

    let (status, logs) = common::terminate(&mut child.0, Duration::from_secs(15)).await;
    assert_eq!(status.code(), Some(0), "{logs}");
    assert!(!logs.contains(CANARY), "a secret value reached the logs");
    // One JSON line per admission (info if denied or warned, debug otherwise) with the
    // request's facts and every finding, as JSON.
    assert!(
        logs.lines()
            .all(|l| serde_json::from_str::<serde_json::Value>(l).is_ok()),
        "a log line is not JSON: {logs}"
    );
    let lines: Vec<serde_json::Value> = logs
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    assert!(!lines.is_empty(), "{logs}");
    let denied: Vec<&serde_json::Value> =
        lines.iter().filter(|l| l["uid"] == "uid-canary").collect();
    assert_eq!(denied.len(), 1, "one line per decision: {logs}");
    let denial = denied[0];
    assert_eq!(denial["message"], "admission");
    assert_eq!(denial["level"], "INFO");
    assert_eq!(denial["decision"], "denied");
    assert_eq!(denial["webhook"], "validate");
    assert_eq!(denial["kind"], "HelmRelease");
    assert_eq!(denial["namespace"], "monitoring");
    assert_eq!(denial["name"], "grafana");
    assert_eq!(denial["operation"], "Create");
    assert_eq!(denial["dry_run"], false);
    assert!(denial["latency_us"].is_u64());
    let findings = denial["findings"]
        .as_array()
        .expect("findings as a JSON array");
    assert_eq!(findings.len(), 2, "{denial}");
    for f in findings {
        assert_eq!(f["policy"], "flux-referenced-secrets", "{f}");
        assert_eq!(f["rule"], "referenced-secrets", "{f}");
        assert_eq!(f["level"], "error", "{f}");
        assert!(
            f["path"].as_str().unwrap().starts_with("spec.valuesFrom["),
            "{f}"
        );
    }
    assert!(
        findings[0]["message"]
            .as_str()
            .unwrap()
            .contains("no key \"prod.yaml\""),
        "{denial}"
    );
    assert!(
        findings[1]["message"]
            .as_str()
            .unwrap()
            .contains("grafana-smtp"),
        "{denial}"
    );
    assert!(lines.iter().any(|l| l["message"] == "admission"
        && l["uid"] == "uid-ok"
        && l["level"] == "DEBUG"
        && l["decision"] == "allowed"
        && l["findings"] == json!([])));
    // The last line before exit made it out of the non-blocking writer.
    assert!(lines.iter().any(|l| l["message"] == "shutdown complete"));
}

/// `serve` as a user runs it (text logs, default level) with stderr piped: one line per
/// denial holding every finding, nothing for an allowed review (debug), no ANSI colour codes
/// (not a terminal), and the last lines flushed before exit 0 on SIGTERM.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_text_logs_one_line_per_decision_without_colour() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    std::fs::write(
        state.join("apps.yaml"),
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: apps}\n---\n\
         apiVersion: helm.toolkit.fluxcd.io/v2\nkind: HelmRelease\nmetadata: {name: database, namespace: apps}\n\
         spec: {interval: 1h, chart: {spec: {chart: pg, sourceRef: {kind: HelmRepository, name: charts}}}}\n",
    )
    .unwrap();
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let (policies, state) = (root.join("policies"), state.to_str().unwrap().to_owned());
    // Text logs at the default level, as a user starts it.
    let served = common::serve_child(
        dir.path(),
        &[
            "--drain",
            "200ms",
            "--policies",
            policies.to_str().unwrap(),
            "--state",
            &state,
        ],
    )
    .await;
    let mut child = served.child;
    let mut client = common::connect(served.addr, &served.ca, &[b"http/1.1"])
        .await
        .unwrap();

    // A person's write of a release with a missing dependency and three missing Secrets.
    let missing = ["shop-values-prod", "shop-db-credentials", "shop-smtp-relay"];
    let hr = json!({"apiVersion": "helm.toolkit.fluxcd.io/v2", "kind": "HelmRelease",
        "metadata": {"name": "shop", "namespace": "apps"},
        "spec": {"interval": "1h", "chart": {"spec": {"chart": "shop", "sourceRef": {"kind": "HelmRepository", "name": "charts"}}},
                 "dependsOn": [{"name": "database"}, {"name": "payments-gone"}],
                 "valuesFrom": missing.iter().map(|n| json!({"kind": "Secret", "name": n})).collect::<Vec<_>>()}});
    let resp = client
        .sender
        .review("/validate", &common::review_json("uid-deny", "CREATE", &hr))
        .await;
    assert_eq!(resp.json()["response"]["allowed"], false, "{}", resp.text());
    let ok = client.sender.review("/validate", &common::review_json("uid-ok", "CREATE", &json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "namespace": "apps"}}))).await;
    assert_eq!(ok.json()["response"]["allowed"], true);
    drop(client);

    let (status, logs) = common::terminate(&mut child.0, Duration::from_secs(15)).await;
    assert_eq!(status.code(), Some(0), "{logs}");
    assert!(
        !logs.contains('\u{1b}'),
        "ANSI codes in a piped log: {logs:?}"
    );

    let denial: Vec<&str> = logs.lines().filter(|l| l.contains("uid-deny")).collect();
    assert_eq!(denial.len(), 1, "one line per decision: {logs}");
    let line = denial[0];
    assert!(line.contains(" INFO "), "{line}");
    for part in [
        "admission",
        "kind=HelmRelease",
        "namespace=apps",
        "name=shop",
        "operation=Create",
        "dry_run=false",
        "webhook=validate",
        "decision=denied",
        "latency_us=",
    ] {
        assert!(line.contains(part), "{part}: {line}");
    }
    // `findings` is the last field: a compact JSON array.
    let (_, json) = line.split_once(" findings=").expect("findings field");
    let findings: Vec<serde_json::Value> = serde_json::from_str(json).unwrap();
    assert_eq!(findings.len(), 4, "{line}");
    let dep: Vec<_> = findings
        .iter()
        .filter(|f| f["rule"] == "depends-on")
        .collect();
    assert_eq!(dep.len(), 1, "{line}");
    assert_eq!(dep[0]["level"], "warning");
    assert_eq!(dep[0]["path"], "spec.dependsOn[1]");
    assert!(
        dep[0]["message"]
            .as_str()
            .unwrap()
            .contains("payments-gone")
    );
    for name in missing {
        assert!(
            findings
                .iter()
                .any(|f| f["policy"] == "flux-referenced-secrets"
                    && f["level"] == "error"
                    && f["message"].as_str().unwrap().contains(name)),
            "{name}: {line}"
        );
    }
    assert!(
        !logs.contains("uid-ok"),
        "an allowed review logged at info: {logs}"
    );
    assert!(
        logs.lines().any(|l| l.contains("shutdown complete")),
        "{logs}"
    );
}
