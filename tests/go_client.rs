//! The early answers and the drain, with a client built on Go's net/http (`tests/go/client.go`),
//! which is what the Kubernetes API server calls webhooks with. Needs `go` (Debian package
//! golang-go; `.ci/run` installs it): under CI a missing `go` fails these tests.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::Setup;
use serde_json::json;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use common::REQUIRE_TEAM as POLICIES;

/// The Go client, built once per test binary (None when `go` is missing outside CI).
fn go_client() -> Option<PathBuf> {
    static BUILT: std::sync::OnceLock<Option<PathBuf>> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            let go = common::tool_on_path(&["go"])?;
            let tmp = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
            let out = tmp.join("fluxadmit-go-client");
            let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/go/client.go");
            let status = Command::new(go)
                .args(["build", "-o"])
                .arg(&out)
                .arg(&src)
                .env("GOCACHE", tmp.join("go-cache"))
                .env("GO111MODULE", "off")
                .env("GOFLAGS", "")
                .status()
                .unwrap();
            assert!(status.success(), "go build {}", src.display());
            Some(out)
        })
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn early_answers_reach_a_go_client() {
    let Some(client) = go_client() else { return };
    let srv = Setup::new(POLICIES).start().await;
    let base = format!("https://localhost:{}", srv.addr.port());
    let ca = srv.certs.path().join("ca.crt");
    for proto in ["h2", "h1"] {
        let mut cmd = Command::new(&client);
        cmd.args(["early", &base]).arg(&ca).args(["30", proto]);
        let out = tokio::task::spawn_blocking(move || cmd.output())
            .await
            .unwrap()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{proto}: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        for want in ["413 30/30", "404 30/30", "405 30/30"] {
            assert!(text.contains(want), "{proto}: {text}");
        }
    }
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_loses_no_request_of_a_go_client() {
    let Some(client) = go_client() else { return };
    let srv = Setup::new(POLICIES)
        .drain(Duration::from_millis(1500))
        .start()
        .await;
    let dir = tempfile::tempdir().unwrap();
    let body = dir.path().join("review.json");
    let d = common::deployment("web", "apps", json!({"team": "a"}), &["nginx:1"]);
    std::fs::write(
        &body,
        serde_json::to_vec(&common::review_json("u-1", "CREATE", &d)).unwrap(),
    )
    .unwrap();
    let mut cmd = Command::new(&client);
    cmd.args(["drain", &format!("https://localhost:{}", srv.addr.port())])
        .arg(srv.certs.path().join("ca.crt"))
        .arg(&body);
    let run = tokio::task::spawn_blocking(move || cmd.output());
    tokio::time::sleep(Duration::from_millis(500)).await;
    srv.running.begin_shutdown();
    common::within("drain", Duration::from_secs(15), srv.running.wait())
        .await
        .unwrap();
    let out = common::within("the Go client", Duration::from_secs(15), run)
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    let answered: usize = text
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(answered > 100, "{text}");
    assert!(text.contains(" lost 0"), "{text}");
}
