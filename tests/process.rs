//! The real binary: `serve` with generated certificates, a review over TLS, JSON debug logs
//! that never carry a secret value, and SIGTERM ending in exit code 0.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use serde_json::json;
use std::io::Read as _;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const CANARY: &str = "CANARY-c0ffee-9d2b-never-log-me";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

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
    let (port, mport) = (free_port(), free_port());
    let mut child = Command::new(env!("CARGO_BIN_EXE_fluxadmit"))
        .args([
            "serve",
            "--log-format",
            "json",
            "--log-level",
            "debug",
            "--drain",
            "300ms",
        ])
        .args([
            "--addr",
            &format!("127.0.0.1:{port}"),
            "--metrics-addr",
            &format!("127.0.0.1:{mport}"),
        ])
        .arg("--cert-dir")
        .arg(dir.path().join("certs"))
        .arg("--policies")
        .arg(root.join("policies"))
        .arg("--state")
        .arg(&state)
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();

    // Wait for the generated CA and the listener.
    let ca_path = dir.path().join("certs/ca.crt");
    let deadline = Instant::now() + Duration::from_secs(20);
    let client = loop {
        if let Ok(ca) = std::fs::read_to_string(&ca_path)
            && let Ok(c) = common::connect(
                format!("127.0.0.1:{port}").parse().unwrap(),
                &ca,
                &[b"http/1.1"],
            )
            .await
        {
            break c;
        }
        assert!(Instant::now() < deadline, "server did not come up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let mut client = client;

    // A release whose valuesFrom names a key the Secret lacks: the denial names the keys only.
    let hr = json!({"apiVersion": "helm.toolkit.fluxcd.io/v2", "kind": "HelmRelease",
        "metadata": {"name": "grafana", "namespace": "monitoring", "annotations": {"note": "plain"}},
        "spec": {"interval": "1h", "chart": {"spec": {"chart": "grafana", "sourceRef": {"kind": "HelmRepository", "name": "grafana"}}},
                 "valuesFrom": [{"kind": "Secret", "name": "grafana-values", "valuesKey": "prod.yaml"}]}});
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

    let kill = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "server did not exit after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let mut logs = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut logs)
        .unwrap();
    assert_eq!(status.code(), Some(0), "{logs}");
    assert!(!logs.contains(CANARY), "a secret value reached the logs");
    // One JSON line per admission (debug) and per violation (info), with the request's facts.
    let lines: Vec<serde_json::Value> = logs
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    assert!(!lines.is_empty(), "{logs}");
    let violation = lines
        .iter()
        .find(|l| l["message"] == "violation")
        .expect("violation line");
    assert_eq!(violation["uid"], "uid-canary");
    assert_eq!(violation["namespace"], "monitoring");
    assert_eq!(violation["name"], "grafana");
    assert_eq!(violation["dry_run"], false);
    assert!(violation["latency_us"].is_u64());
    assert!(lines.iter().any(|l| l["message"] == "admission"
        && l["uid"] == "uid-ok"
        && l["decision"] == "allowed"));
    assert!(lines.iter().any(|l| l["message"] == "shutdown complete"));
}
