//! Bounded policy evaluation (hardening): an expression whose worst case is quadratic in the
//! review does not load; one loaded anyway (a raised `--max-cel-cost`) runs off the async
//! workers with the review's deadline, so the review is answered per the failure mode in time,
//! `/healthz` keeps answering meanwhile, and SIGTERM stops the process while it still runs.
//! Under the runtime cost limit the same expression stops on its own, long before the
//! deadline, and its rule denies naming the limit.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use serde_json::json;
use std::process::Command;
use std::time::{Duration, Instant};

/// Every container compared with every other: 8,000 containers make 64 million comparisons
/// (41 s in a release build before evaluation had a deadline).
const QUADRATIC: &str = "object.spec.template.spec.containers.all(c, \
     object.spec.template.spec.containers.exists_one(d, d.name == c.name))";

/// A Deployment of 8,000 uniquely named containers.
fn wide_review() -> serde_json::Value {
    let containers: Vec<_> = (0..8000)
        .map(|i| json!({"name": format!("c{i}"), "image": "registry.example.com/app:1"}))
        .collect();
    let deployment = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "wide", "namespace": "apps"},
        "spec": {"template": {"spec": {"containers": containers}}}
    });
    common::review_json("u-wide", "CREATE", &deployment)
}

/// `serve` with the quadratic policy, loaded past the estimate, under the review budget
/// `timeout` and the runtime cost limit `runtime_cost`.
async fn serve_quadratic(
    dir: &tempfile::TempDir,
    timeout: &str,
    runtime_cost: &str,
) -> common::Served {
    let file = dir.path().join("unique.yaml");
    std::fs::write(&file, policy(QUADRATIC)).unwrap();
    let file = file.to_str().unwrap();
    common::serve_child(
        dir.path(),
        &[
            "--timeout",
            timeout,
            "--drain",
            "0s",
            "--max-cel-cost",
            "1e15",
            "--max-cel-runtime-cost",
            runtime_cost,
            "--policies",
            file,
        ],
    )
    .await
}

fn policy(expression: &str) -> String {
    format!(
        "apiVersion: fluxadmit.io/v1alpha1\nkind: DeploymentPolicy\nmetadata: {{name: unique-names}}\n\
         spec:\n  match: {{resources: [{{apiGroups: [apps], kinds: [Deployment]}}]}}\n  rules:\n  \
         - name: unique\n    expression:\n      expression: \"{expression}\"\n      message: container names must be unique\n"
    )
}

#[test]
fn a_quadratic_expression_does_not_load() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("unique.yaml");
    std::fs::write(&file, policy(QUADRATIC)).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_fluxadmit"))
        .args(["policies", "--policies"])
        .arg(&file)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("unique.yaml"), "{err}");
    assert!(err.contains("spec.rules[0].expression.expression"), "{err}");
    assert!(err.contains("estimated worst-case cost"), "{err}");

    // One pass over the containers loads.
    let single = "object.spec.template.spec.containers.all(c, c.name != '')";
    std::fs::write(&file, policy(single)).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_fluxadmit"))
        .args(["policies", "--policies"])
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evaluation_past_the_budget_is_answered_per_the_failure_mode() {
    let dir = tempfile::tempdir().unwrap();
    // Only the deadline stops it.
    let served = serve_quadratic(&dir, "1s", "1e15").await;
    let (addr, ca) = (served.addr, served.ca.clone());
    let mut child = served.child;
    let review = wide_review();

    // Two such reviews at once (as many as this machine has cores, or more), and health
    // checks on their own connection meanwhile.
    let mut heavy = Vec::new();
    for _ in 0..2 {
        let mut c = common::connect(addr, &ca, &[b"http/1.1"]).await.unwrap();
        let review = review.clone();
        heavy.push(tokio::spawn(async move {
            let sent = Instant::now();
            let resp = c.sender.review("/validate", &review).await;
            (sent.elapsed(), resp)
        }));
    }
    let mut health = common::connect(addr, &ca, &[b"http/1.1"]).await.unwrap();
    let mut slowest = Duration::ZERO;
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let sent = Instant::now();
        let resp = common::within(
            "/healthz during evaluation",
            Duration::from_secs(5),
            health.sender.get("/healthz"),
        )
        .await
        .unwrap();
        assert_eq!(resp.status, 200);
        slowest = slowest.max(sent.elapsed());
    }
    assert!(
        slowest < Duration::from_millis(500),
        "/healthz took {slowest:?} while reviews were evaluated"
    );
    for h in heavy {
        let (took, resp) = common::within("the review's answer", Duration::from_secs(10), h)
            .await
            .unwrap();
        let v = common::review_response(&resp, "u-wide");
        assert_eq!(v["allowed"], false, "{v}");
        let msg = v["status"]["message"].as_str().unwrap();
        assert!(
            msg.contains("ran past the review's budget") || msg.contains("no free evaluation slot"),
            "{msg}"
        );
        // The budget is 1 s; the answer comes with it, not with the evaluation.
        assert!(took < Duration::from_secs(3), "answered after {took:?}");
    }
    let metrics = common::get_plain(served.metrics_addr, "/metrics")
        .await
        .text();
    let tripped: f64 = ["evaluation_deadline", "evaluation_busy"]
        .iter()
        .filter_map(|l| common::metric(&metrics, "fluxadmit_limits_tripped_total", &[("limit", l)]))
        .sum();
    assert_eq!(tripped, 2.0, "{metrics}");

    // The evaluations are still running on their threads: SIGTERM stops the process anyway.
    let (status, _logs) = common::terminate(&mut child.0, Duration::from_secs(5)).await;
    assert!(status.success(), "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_runtime_cost_limit_stops_an_evaluation_before_the_deadline() {
    let dir = tempfile::tempdir().unwrap();
    // A low runtime limit, so that a debug build is as quick as a release one at the default.
    let served = serve_quadratic(&dir, "8s", "1e6").await;
    let mut c = common::connect(served.addr, &served.ca, &[b"http/1.1"])
        .await
        .unwrap();
    let review = wide_review();
    for round in 0..2 {
        let sent = Instant::now();
        let resp = common::within(
            "the review's answer",
            Duration::from_secs(20),
            c.sender.review("/validate", &review),
        )
        .await;
        let took = sent.elapsed();
        let v = common::review_response(&resp, "u-wide");
        assert_eq!(v["allowed"], false, "{v}");
        let msg = v["status"]["message"].as_str().unwrap();
        assert!(msg.contains("container names must be unique"), "{msg}");
        assert!(msg.contains("runtime cost limit exceeded"), "{msg}");
        assert!(msg.contains("--max-cel-runtime-cost"), "{msg}");
        // Stopped by the limit, not by the 8 s budget.
        assert!(
            !msg.contains("ran past the review's budget"),
            "round {round}: {msg}"
        );
        assert!(
            took < Duration::from_secs(6),
            "round {round}: answered after {took:?}"
        );
    }
    let metrics = common::get_plain(served.metrics_addr, "/metrics")
        .await
        .text();
    let count = |limit: &str| {
        common::metric(
            &metrics,
            "fluxadmit_limits_tripped_total",
            &[("limit", limit)],
        )
    };
    assert_eq!(count("cel_runtime_cost"), Some(2.0), "{metrics}");
    assert_eq!(count("evaluation_deadline"), Some(0.0), "{metrics}");

    // Names as distinct as before, but few: the same expression runs to its answer.
    let mut small = wide_review();
    let containers = small["request"]["object"]["spec"]["template"]["spec"]["containers"]
        .as_array_mut()
        .unwrap();
    containers.truncate(20);
    let resp = c.sender.review("/validate", &small).await;
    let v = common::review_response(&resp, "u-wide");
    assert_eq!(v["allowed"], true, "{v}");
}
